"""What a platform team checks in a wheel: metadata, extras, license, typing marker, --version, and a clear
error for the Snowflake extra. Building and installing the wheel in a clean venv is `.ci/package-smoke`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
PACKAGE = REPO / "connector"
# Test runners, emulators and the Snowflake driver (with the AWS SDK it pulls in) are not runtime needs.
NOT_AT_RUNTIME = ("pytest", "hypothesis", "fakesnow", "snowflake-connector-python", "boto3", "botocore", "ruff",
                  "build")


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower()


def test_runtime_dependencies_hold_no_test_or_snowflake_packages() -> None:
    names = {_name(r) for r in PROJECT["dependencies"]}
    assert not names & set(NOT_AT_RUNTIME), names & set(NOT_AT_RUNTIME)
    assert {"duckdb", "sqlalchemy", "pytz", "python-dotenv"} <= names


def test_pytz_stays_with_the_reason_written_beside_it() -> None:
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    before = text[:text.index('"pytz')]
    assert "timestamptz" in before.rsplit("\n", 2)[-2].lower()


def test_extras() -> None:
    extras = PROJECT["optional-dependencies"]
    assert [_name(r) for r in extras["snowflake"]] == ["snowflake-connector-python"]
    assert [_name(r) for r in extras["postgres"]] == ["psycopg2-binary"]
    assert extras["all"] == ["tiktok-connector[postgres,snowflake]"]
    dev = {_name(r) for r in extras["dev"]}
    assert {"pytest", "hypothesis", "fakesnow", "ruff", "build"} <= dev
    assert "tiktok-connector[postgres,snowflake]" in extras["dev"]


def test_build_system_can_read_the_license_field() -> None:
    # A plain-string SPDX `license` and `license-files` need setuptools 77.
    requires = PYPROJECT["build-system"]["requires"]
    [setuptools] = [r for r in requires if _name(r) == "setuptools"]
    floor = tuple(int(p) for p in re.search(r">=\s*([\d.]+)", setuptools).group(1).split("."))
    assert floor >= (77,)
    assert PROJECT["license"] == "Apache-2.0" and PROJECT["license-files"] == ["LICENSE"]


def test_license_changelog_urls_classifiers_and_typing_marker() -> None:
    license_text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert f"## {PROJECT['version']}" in (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    assert {"Homepage", "Issues", "Changelog"} <= set(PROJECT["urls"])
    assert "Typing :: Typed" in PROJECT["classifiers"]
    assert (PACKAGE / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["connector"]


def test_every_packaged_data_file_matches_a_package_data_pattern() -> None:
    """Files the package reads at run time (demo project, mappings) must be in the wheel."""
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["connector"]
    data = [p for p in PACKAGE.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")
            and "__pycache__" not in p.parts]
    assert data
    for path in data:
        relative = path.relative_to(PACKAGE)
        assert any(relative.match(pattern) for pattern in patterns), relative


def test_installed_version_is_the_project_version() -> None:
    assert version("tiktok-connector") == PROJECT["version"], "stale install: pip install -e '.[dev]' again"


def test_ruff_is_configured_for_lint_and_format() -> None:
    ruff = PYPROJECT["tool"]["ruff"]
    assert ruff["line-length"] == 120 and ruff["target-version"] == "py311"
    assert set(ruff["lint"]["select"]) >= {"E", "F", "W"}
    assert "format" in ruff


def _child(code: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A fresh Python that cannot import Snowflake's driver (as after a plain `pip install tiktok-connector`)."""
    prelude = "import sys; sys.modules['snowflake'] = None; sys.modules['snowflake.connector'] = None\n"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TIKTOK_", "SNOWFLAKE_"))}
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env={**base, **(env or {})})


def test_a_snowflake_url_without_the_extra_names_the_extra(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "connector.yml").write_text(
        "warehouse:\n  url: snowflake://me:pw@acct/DB/SCHEMA?warehouse=WH\n"
        "tiktok:\n  access_token: t\n  base_url: fake\n"
        "syncs:\n  purchases:\n    query: purchases.sql\n    mapping: purchases.yml\n    event_source: offline\n"
        '    event_source_id: "7654321098765432109"\n    cursor: updated_at\n', encoding="utf-8")
    for folder, name in (("queries", "purchases.sql"), ("mappings", "purchases.yml")):
        (project / folder).mkdir()
        (project / folder / name).write_bytes((PACKAGE / "demo" / folder / name).read_bytes())
    done = _child(f"from connector.cli import main; sys.exit(main(['sync', '--project', {str(project)!r}]))", tmp_path)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "warehouse.url" in done.stderr
    assert "pip install 'tiktok-connector[snowflake]'" in done.stderr


def test_duckdb_needs_no_snowflake_driver(tmp_path: Path) -> None:
    """init + sync against the built-in fake, with Snowflake's driver unimportable."""
    code = ("from connector.cli import main\n"
            "assert main(['init', 'project']) == 0\n"
            "sys.exit(main(['sync', '--project', 'project', '--json']))\n")
    done = _child(code, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    [report] = [r for r in map(json.loads, filter(lambda line: line.startswith("{"), done.stdout.splitlines()))
                if r.get("sync") == "purchases"]  # beside it the project's audience
    assert report["events_sent"] > 0
    assert not any(name.startswith("snowflake") for name in _modules_after_sync(tmp_path))


def _modules_after_sync(tmp_path: Path) -> list[str]:
    code = ("from connector.cli import main\n"
            "main(['sync', '--project', 'project', '-q'])\n"
            "print('\\n'.join(name for name, m in sys.modules.items() if m is not None))\n")
    done = _child(code, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


def test_version_names_another_distribution_that_ships_connector(tmp_path: Path) -> None:
    """The import name is generic: --version says which other installed distribution claims it too."""
    other = tmp_path / "site" / "other_connector-1.0.dist-info"
    other.mkdir(parents=True)
    (other / "METADATA").write_text("Metadata-Version: 2.1\nName: other-connector\nVersion: 1.0\n")
    (other / "top_level.txt").write_text("connector\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(tmp_path / "site")])}
    done = subprocess.run([sys.executable, "-m", "connector", "--version"], capture_output=True, text=True,
                          timeout=60, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"tiktok-connector {PROJECT['version']} (distribution tiktok-connector, "
                                  f"package at {PACKAGE}")
    assert "other distributions with a top-level 'connector': other-connector" in done.stdout


def test_dockerfile_runs_the_cli_as_a_non_root_user_with_state_on_a_volume() -> None:
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim", text, flags=re.M)
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["tiktok-connector"\]', text, flags=re.M)
    assert re.search(r"^VOLUME ", text, flags=re.M)
