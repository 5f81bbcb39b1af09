"""Configuration mistakes through the real CLI: exit code 2, one line on stderr naming file and key, no traceback."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from connector.cli import main


def config_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run the CLI, check the config-error contract and return the one stderr line."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert out == ""
    return lines[0]


def sync_cli(project) -> list[str]:
    return ["sync", "--project", str(project.root)]


def edit_config(project, edit) -> None:
    path = project.root / "connector.yml"
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def test_missing_connector_yml(tmp_path: Path, capsys) -> None:
    line = config_error(capsys, "sync", "--project", str(tmp_path))
    assert str(tmp_path.resolve() / "connector.yml") in line
    assert "not found" in line
    assert "--project" in line  # what to do next


def test_bad_yaml_names_file_and_line(make_project, capsys) -> None:
    project = make_project()
    (project.root / "connector.yml").write_text("warehouse:\n  url: duckdb:///w.duckdb\nsyncs:\n  orders: [\n")
    line = config_error(capsys, *sync_cli(project))
    assert f"{project.root.resolve() / 'connector.yml'}:" in line
    assert "not valid YAML" in line


def test_unknown_sync_key_suggests_the_right_one(make_project, fake_tiktok, capsys) -> None:
    project = make_project(sync_overrides={"cursr": "updated_at"})
    line = config_error(capsys, *sync_cli(project))
    assert str(project.root.resolve() / "connector.yml") in line
    assert "syncs.orders.cursr" in line
    assert "unknown key" in line
    assert "did you mean 'cursor'?" in line


@pytest.mark.parametrize("key, value", [("threads", 1), ("memory_limit", "128MB")])
def test_duckdb_settings_on_another_warehouse_are_refused(make_project, fake_tiktok, capsys, key, value) -> None:
    project = make_project()
    edit_config(project, lambda data: data["warehouse"].update({"url": "postgresql://postgres@127.0.0.1/test",
                                                                 key: value}))
    line = config_error(capsys, *sync_cli(project))
    assert f"connector.yml: warehouse.{key}: applies to DuckDB only" in line


def test_unknown_top_level_key_suggests_the_right_one(make_project, fake_tiktok, capsys) -> None:
    project = make_project()
    edit_config(project, lambda data: data.update(warehose=data["warehouse"]))
    line = config_error(capsys, *sync_cli(project))
    assert "connector.yml: warehose" in line
    assert "did you mean 'warehouse'?" in line


def test_unknown_tiktok_key(make_project, fake_tiktok, capsys) -> None:
    project = make_project(tiktok={"acces_token": "x"})
    line = config_error(capsys, *sync_cli(project))
    assert "tiktok.acces_token" in line
    assert "did you mean 'access_token'?" in line


def test_missing_cursor(make_project, fake_tiktok, capsys) -> None:
    project = make_project(sync_overrides={"cursor": None})
    line = config_error(capsys, *sync_cli(project))
    assert str(project.root.resolve() / "connector.yml") in line
    assert "syncs.orders.cursor: missing" in line


def test_cursor_column_not_in_query(make_project, fake_tiktok, capsys) -> None:
    project = make_project(sync_overrides={"cursor": "changed_at"})
    line = config_error(capsys, *sync_cli(project))
    assert "syncs.orders.cursor" in line
    assert "'changed_at'" in line
    assert "updated_at" in line  # the columns the query does return


def test_mapping_column_not_in_query(make_project, fake_tiktok, default_mapping, capsys) -> None:
    default_mapping["fields"]["user.email"] = "emial"
    project = make_project([], mapping=default_mapping)
    line = config_error(capsys, *sync_cli(project))
    assert str(project.root.resolve() / "mappings" / "orders.yml") in line
    assert "fields.user.email" in line
    assert "'emial'" in line
    for column in ("order_id", "event_name", "ordered_at", "updated_at", "email", "phone", "total", "currency"):
        assert column in line.split("emial", 1)[1]
    assert fake_tiktok.stats["requests"] == 0


def test_mapping_field_that_tiktok_does_not_have(make_project, fake_tiktok, capsys) -> None:
    project = make_project(mapping={"fields": {"event": "event_name", "event_id": "order_id",
                                               "event_time": "ordered_at", "user.emial": "email"}})
    line = config_error(capsys, *sync_cli(project))
    assert "mappings/orders.yml: fields.user.emial" in line
    assert "did you mean 'user.email'?" in line


def test_missing_mapping_file(make_project, fake_tiktok, capsys) -> None:
    project = make_project(sync_overrides={"mapping": "nope.yml"})
    line = config_error(capsys, *sync_cli(project))
    assert str(project.root.resolve() / "mappings" / "nope.yml") in line
    assert "mapping file not found" in line
    assert "amperity.yml" in line  # the built-in choice


def test_missing_query_file(make_project, fake_tiktok, capsys) -> None:
    project = make_project(sync_overrides={"query": "nope.sql"})
    line = config_error(capsys, *sync_cli(project))
    assert str(project.root.resolve() / "queries" / "nope.sql") in line
    assert "query file not found" in line


def test_jinja_undefined_variable(make_project, fake_tiktok, capsys) -> None:
    project = make_project(query="select * from orders where total >= {{ vars.min_total }}\n")
    line = config_error(capsys, *sync_cli(project))
    assert str(project.root.resolve() / "queries" / "orders.sql") in line
    assert "min_total" in line
    assert "vars:" in line


def test_jinja_variable_defined_under_vars_renders(make_project, fake_tiktok, order, capsys) -> None:
    now = dt.datetime.now(dt.timezone.utc)  # the CLI runs on the real clock
    project = make_project([order(1, now=now), order(2, now=now, total=5)],
                           query="select * from orders where total >= {{ vars.min_total }}\n",
                           sync_overrides={"vars": {"min_total": 10}})
    assert main([*sync_cli(project), "--json"]) == 0
    assert fake_tiktok.accepted_event_ids() == ["ORD-00001"]


def test_missing_access_token_names_the_env_var(make_project, fake_tiktok, order, monkeypatch, capsys) -> None:
    monkeypatch.delenv("TIKTOK_ACCESS_TOKEN")
    project = make_project([order(1)])
    line = config_error(capsys, *sync_cli(project))
    assert "connector.yml: tiktok.access_token" in line
    assert "TIKTOK_ACCESS_TOKEN" in line
    assert fake_tiktok.stats["requests"] == 0
    # A dry run needs no token.
    assert main([*sync_cli(project), "--dry-run"]) == 0


def test_unknown_sync_name(make_project, fake_tiktok, capsys) -> None:
    project = make_project()
    line = config_error(capsys, *sync_cli(project), "ordrs")
    assert str(project.root.resolve() / "connector.yml") in line
    assert "no sync or audience named 'ordrs'" in line
    assert "did you mean 'orders'?" in line


def test_bad_event_source(make_project, fake_tiktok, capsys) -> None:
    project = make_project(sync_overrides={"event_source": "offlne"})
    line = config_error(capsys, *sync_cli(project))
    assert "syncs.orders.event_source" in line
    assert "'offlne'" in line
    for source in ("app", "crm", "offline", "web"):
        assert source in line


def test_out_of_range_number(make_project, fake_tiktok, capsys) -> None:
    project = make_project(sync_overrides={"attribution_window_days": 90})
    line = config_error(capsys, *sync_cli(project))
    assert "syncs.orders.attribution_window_days" in line
    assert "out of range" in line


def test_config_error_through_python_dash_m(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "connector", "sync", "--project", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "connector.yml" in done.stderr
