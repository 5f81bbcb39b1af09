"""The README stays true to the code: reason codes, commands, config keys and the quick start."""

from __future__ import annotations

import re
from pathlib import Path

from connector import cli, config_keys
from connector.reasons import REASONS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_every_reason_code_is_documented() -> None:
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", README, flags=re.M))
    assert set(REASONS) <= documented, sorted(set(REASONS) - documented)


def test_every_command_is_documented() -> None:
    parser = cli._parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in commands:
        assert f"tiktok-connector {name}" in README, name


def test_every_sync_and_tiktok_key_is_in_the_reference() -> None:
    for key in config_keys.SYNC:
        assert f"`syncs.NAME.{key}`" in README, key
    for key in config_keys.TIKTOK:
        assert f"tiktok.{key}" in README or f"`{key}`" in README or f" {key}" in README, key


def test_quick_start_has_the_demo_then_the_tests() -> None:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    assert "tiktok-connector demo" in blocks[0] and "pip install" in blocks[0]
    assert blocks[1].strip() == "python -m pytest"
