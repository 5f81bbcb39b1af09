"""The docs stay true to the code: the README is a front page, docs/ is the reference (an MkDocs site that
builds with --strict), every reason code, command and config key is documented, and the code blocks work:
YAML parses (and validates against the schema, mappings load), commands parse with the real CLI parser,
Python compiles and uses attributes the report has, JSON parses, the state-table SQL runs on real state."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import duckdb
import jinja2
import pytest
import yaml

from connector import SyncReport, cli, config_keys, config_reference
from connector.config_schema import SCHEMA_FILE
from connector.mapping import load_mapping
from connector.reasons import REASONS
from cli_helpers import cli as run_cli

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = ROOT / "docs"
PAGES = {path.relative_to(DOCS).as_posix(): path.read_text(encoding="utf-8") for path in sorted(DOCS.rglob("*.md"))}
_FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\n(?P<body>.*?)^(?P=indent)```", re.M | re.S)


def blocks(lang: str) -> list[tuple[str, str]]:
    """(where, code) of every fenced block of `lang` in the README and docs/."""
    found = []
    for name, text in [("README.md", README), *((f"docs/{n}", t) for n, t in PAGES.items())]:
        for i, match in enumerate(_FENCE.finditer(text)):
            if match.group("lang") == lang:
                body = "\n".join(line[len(match.group("indent")):] for line in match.group("body").splitlines())
                found.append((f"{name} block {i}", body + "\n"))
    return found


def _ids(value: object) -> str:
    return value if isinstance(value, str) and " block " in value else ""


# ---------------------------------------------------------------- the README is a front page


def test_the_readme_is_a_front_page_that_stands_alone() -> None:
    assert len(README.splitlines()) < 200
    for heading in ("## Quick start", "## A project", "## Commands", "## Documentation"):
        assert heading in README
    assert "Performance" in README and "| scenario |" not in README  # benchmark internals live in docs/


def test_quick_start_has_the_demo_then_the_tests() -> None:
    (_, first), (_, second) = [block for block in blocks("bash") if block[0].startswith("README.md")][:2]
    assert "tiktok-connector demo" in first and "pip install" in first
    assert second.strip() == "python -m pytest"


@pytest.mark.parametrize("name", ["README.md", *(f"docs/{page}" for page in PAGES)])
def test_links_stay_inside_the_repository_and_resolve(name) -> None:
    path = ROOT / name
    text = path.read_text(encoding="utf-8")
    assert "../shared" not in text and "shared/docs" not in text
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://|mailto:|#", target):
            continue
        file = (path.parent / target.split("#")[0]).resolve()
        assert file.exists(), f"{name}: {target}"
        assert ROOT in file.parents or file == ROOT, f"{name}: {target} leaves the repository"


def test_every_page_is_in_the_site_navigation() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))

    def pages(entries: list) -> list[str]:
        out = []
        for entry in entries:
            for value in entry.values():
                out += pages(value) if isinstance(value, list) else [value]
        return out
    assert sorted(pages(config["nav"])) == sorted(PAGES)
    assert config["theme"]["name"] == "material" and config["strict"] is True


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs is in the [dev] extra")
def test_the_site_builds_with_strict(tmp_path) -> None:
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "configuration" / "index.html").is_file()


# ---------------------------------------------------------------- the reference covers the code


def test_every_reason_code_is_documented() -> None:
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", PAGES["mappings.md"], flags=re.M))
    assert set(REASONS) <= documented, sorted(set(REASONS) - documented)


def test_every_command_and_exit_code_is_documented() -> None:
    parser = cli._parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in commands:
        assert f"tiktok-connector {name}" in PAGES["commands.md"], name
        assert f"tiktok-connector {name}" in README, name
    for code in (0, 1, 2, 3, 4, 130):
        assert f"\n| {code} |" in PAGES["commands.md"], code
    for code in ("0", "1", "2", "3", "4"):
        assert code in cli.__doc__  # the CLI's docstring draws the same table


def test_the_configuration_reference_is_generated_from_the_key_definitions() -> None:
    page = PAGES["configuration.md"]
    assert config_reference.page_with_reference(page) == page, "run: python -m connector.config_reference"
    for prefix, section in (("warehouse.", config_keys.WAREHOUSE), ("state.", config_keys.STATE),
                            ("tiktok.", config_keys.TIKTOK), ("syncs.NAME.", config_keys.SYNC),
                            ("audiences.NAME.", config_keys.AUDIENCE), ("", config_keys.TOP)):
        for key in section:
            assert f"| `{prefix}{key}` |" in page, prefix + key


def test_the_contract_pages_cover_the_codes_the_client_handles() -> None:
    from connector import tiktok_spec as spec
    events = PAGES["contracts/events-api.md"]
    for code in [*spec.AUTH_CODES, *spec.PERMISSION_CODES, *spec.PARAMETER_ERROR_CODES, *spec.OK_CODES]:
        assert str(code) in events, code
    assert "/v1.3/event/track/" in events and "/v1.3/segment/mapping/" in PAGES["contracts/audiences-api.md"]


# ---------------------------------------------------------------- code blocks work


SCHEMA = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


@pytest.mark.parametrize(("where", "code"), blocks("yaml"), ids=_ids)
def test_yaml_blocks_parse_and_validate(where, code, tmp_path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    data = yaml.safe_load(code)
    assert isinstance(data, dict), where
    if "fields" in data:  # a mapping file
        (tmp_path / "m.yml").write_text(code, encoding="utf-8")
        assert load_mapping("m.yml", tmp_path)
    elif set(data) <= set(SCHEMA["properties"]):  # (part of) connector.yml
        jsonschema.Draft7Validator(SCHEMA).validate(data)
    else:
        pytest.fail(f"{where}: neither a mapping nor connector.yml: {sorted(data)}")


def _commands(code: str) -> list[list[str]]:
    found = []
    for line in code.splitlines():
        line = re.sub(r"\s+#.*$", "", line)
        for part in re.split(r"&&|\|\||;|\|", line):
            words = shlex.split(part.split(">")[0]) if "tiktok-connector" in part else []
            if words and words[0].endswith("tiktok-connector"):
                found.append(words[1:])
    return found


@pytest.mark.parametrize(("where", "code"), blocks("bash"), ids=_ids)
def test_bash_blocks_are_commands_the_cli_takes(where, code) -> None:
    parser = cli._parser()
    for argv in _commands(code):
        try:
            parser.parse_args(argv)
        except cli.UsageError as exc:
            pytest.fail(f"{where}: tiktok-connector {' '.join(argv)}: {exc}")


def test_the_commands_block_lists_every_command() -> None:
    parser = cli._parser()
    for where, code in blocks("text"):
        if where.startswith(("README.md", "docs/commands.md")) and "tiktok-connector init" in code:
            listed = {line.split()[1] for line in code.splitlines() if line.startswith("tiktok-connector ")}
            assert set(parser._subparsers._group_actions[0].choices) <= listed, where  # type: ignore[union-attr]


@pytest.mark.parametrize(("where", "code"), blocks("python"), ids=_ids)
def test_python_blocks_compile_and_use_what_a_report_has(where, code) -> None:
    compile(code, where, "exec")
    for attribute in re.findall(r"\breport\.(\w+)", code):
        assert hasattr(SyncReport, attribute) or attribute in SyncReport.__dataclass_fields__, (where, attribute)


@pytest.mark.parametrize(("where", "code"), blocks("json"), ids=_ids)
def test_json_blocks_parse(where, code) -> None:
    assert isinstance(json.loads(code), dict), where


@pytest.mark.parametrize(("where", "code"), blocks("sql"), ids=_ids)
def test_sql_blocks_are_templates_jinja_reads(where, code) -> None:
    jinja2.Environment().parse(code)


def test_the_state_table_queries_run_on_real_state(make_project, fake_tiktok, order, now, capsys) -> None:
    project = make_project([order(1, now=now), order(2, now=now, currency="XYZ")],
                           sync_overrides={"max_reject_rate": 1})
    assert run_cli(capsys, "sync", "--project", str(project.root))[0] == 0
    queries = [code for where, code in blocks("sql") if where.startswith("docs/state-tables.md")]
    assert len(queries) == 1
    con = duckdb.connect(str(project.db), read_only=True)
    try:
        statements = [statement for statement in queries[0].split(";") if "select" in statement]
        assert len(statements) >= 3
        results = [con.execute(statement).fetchall() for statement in statements]
    finally:
        con.close()
    assert results[0] and results[0][0][0] == "orders" and results[0][0][2:] == (1, 1)
    assert results[1] == [("orders", "invalid_currency", 1)]
