"""Running the real CLI entry point in-process, for tests."""

from __future__ import annotations

import json

from connector.cli import main


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    """`tiktok-connector ARGV` through connector.cli.main: (exit code, stdout, stderr)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


# The fixture phones are "+1 (415) 555-NNNN". Run ids, hashes and timestamps are digits too, so these
# match the shapes a phone takes (as written, E.164, digits only), never a bare "555".
PHONE_SHAPES = ("(415)", "555-", "+1415555", "1415555")


def assert_no_plain_pii(text: str) -> None:
    lowered = text.lower()
    assert "@" not in lowered and "example.com" not in lowered and "customer" not in lowered
    for shape in PHONE_SHAPES:
        assert shape not in lowered
