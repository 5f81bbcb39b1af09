"""Issue 18: every outcome told the same way by the CLI and the Python API, in every output format.

Exit codes and report.exit_code, skipped and misconfigured runs as reports, `check` exiting 4 when it verified
nothing, --json (one object per job for every outcome), --log-format json (every line), -q, --output (the
run-results file), --target/--vars/--select on every command. Real DuckDB files, real HTTP to the fake TikTok.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import itertools
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

import connector
from cli_helpers import cli, json_lines
from conftest import TOKEN

OUTCOMES = {"ok": ("success", 0), "partial": ("success", 3), "failed": ("failed", 1), "error": ("error", 2),
            "skipped": ("skipped", 0)}


def _config(root: Path) -> dict:
    return yaml.safe_load((root / "connector.yml").read_text())


def _write_config(root: Path, config: dict) -> None:
    (root / "connector.yml").write_text(yaml.safe_dump(config, sort_keys=False))


def _add_sync(root: Path, name: str, **changes) -> None:
    config = _config(root)
    config["syncs"][name] = {**config["syncs"]["orders"], **changes}
    _write_config(root, config)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _lease(project, sync: str) -> None:
    """Another live run holds `sync` (a lease on another host, valid for an hour)."""
    project.query(f"insert into tiktok_leases values ('{sync}', 'another-host:1:run', now(), "
                  "now() + interval 1 hour)")


@pytest.fixture
def outcome_project(make_project, fake_tiktok, order, now):
    """One sync per outcome: ok, partial (a bad currency above max_reject_rate 0), failed (a missing table),
    error (a cursor the query lacks) and skipped (another run's lease); state tables exist."""
    project = make_project([order(1, now=now), order(2, now=now)],
                           ddl=["create table orders_bad as select * from orders where false"],
                           tables={"orders_bad": [order(3, now=now), order(4, now=now, currency="XYZ")]})
    root = project.root
    (root / "queries" / "bad.sql").write_text("select * from orders_bad\n")
    (root / "queries" / "missing.sql").write_text("select *\nfrom no_such_table\n")
    config = _config(root)
    base = config["syncs"].pop("orders")
    config["syncs"] = {"ok": dict(base), "partial": {**base, "query": "bad.sql", "max_reject_rate": 0.0},
                       "failed": {**base, "query": "missing.sql"}, "error": {**base, "cursor": "changed_at"},
                       "skipped": dict(base)}
    _write_config(root, config)
    [first] = connector.sync(root, ["ok"])  # the state tables exist; "ok" has nothing new from now on
    assert first.events_sent == 2
    _lease(project, "skipped")
    return project


# ---------------------------------------------------------------- one object per job, CLI and API alike


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.permutations(list(OUTCOMES)).flatmap(lambda order: st.integers(1, 5).map(lambda n: order[:n])),
       log_json=st.booleans())
def test_json_prints_one_object_per_job_for_every_outcome_and_the_api_returns_the_same(
        outcome_project, tmp_path_factory, capsys, names, log_json) -> None:
    copies = tmp_path_factory.mktemp("outcomes")
    by_cli, by_api = copies / "cli", copies / "api"
    shutil.copytree(outcome_project.root, by_cli)
    shutil.copytree(outcome_project.root, by_api)

    argv = ["sync", *names, "--json", "--project", str(by_cli)] + (["--log-format", "json"] if log_json else [])
    code, out, err = cli(capsys, *argv)
    objects = [json.loads(line) for line in out.splitlines()]  # every line of stdout is one JSON object
    assert [o["sync"] for o in objects] == names, out
    assert [(o["status"], o["exit_code"]) for o in objects] == [OUTCOMES[name] for name in names]
    expected = max((OUTCOMES[n][1] for n in names), key=lambda c: {2: 4, 1: 3, 3: 1}.get(c, 0))
    assert code == expected
    if log_json:
        assert all(isinstance(json.loads(line), dict) for line in err.splitlines())

    reports = connector.sync(by_api, names)
    assert [(r.sync, r.status, r.exit_code) for r in reports] == [(o["sync"], o["status"], o["exit_code"])
                                                                   for o in objects]
    for report, printed in zip(reports, objects):
        api = json.loads(json.dumps(report.to_dict(), default=str))
        assert set(api) == set(printed)
        assert api["limit_crossed"] == printed["limit_crossed"]
        assert (api["error"] or "").replace(str(by_api), "ROOT") == (printed["error"] or "").replace(str(by_cli), "ROOT")
        assert report.ok == (printed["status"] in ("success", "skipped"))


def test_partial_says_which_limit_was_crossed_in_the_cli_and_the_api(outcome_project, capsys) -> None:
    root = str(outcome_project.root)
    other = outcome_project.root.parent / "api"
    shutil.copytree(outcome_project.root, other)
    code, out, err = cli(capsys, "sync", "partial", "--project", root)
    assert code == 3, err
    headline, *lines = out.splitlines()
    assert headline.startswith("partial: PARTIAL (sync)") and "SUCCESS" not in out
    [reason] = [line for line in lines if "partial (exit 3)" in line]
    assert "max_reject_rate crossed: 1 of 2 rows were invalid (50.0%" in reason and "max_reject_rate 0" in reason

    [report] = connector.sync(other, ["partial"])
    assert report.exit_code == 3 and report.ok and report.status == "success"
    assert report.limit_crossed and report.limit_crossed in reason

    code, out, err = cli(capsys, "-q", "sync", "ok", "failed", "--project", root)
    assert code == 1 and out == ""
    # -q: only why the failed run failed (DuckDB's message, with the line of the query file it points at)
    assert err.startswith("failed: FAILED: queries/missing.sql line 2: ") and "LINE 2: from no_such_table" in err
    assert "ok:" not in err


def test_a_skipped_sync_does_not_stop_the_others_and_is_the_apis_report(outcome_project, capsys) -> None:
    root = str(outcome_project.root)
    code, out, err = cli(capsys, "sync", "skipped", "ok", "--project", root)
    assert code == 0
    assert err.startswith("skipped: sync 'skipped' is already running")
    assert out.startswith("ok: SUCCESS")
    [api] = connector.sync(root, ["skipped"])
    assert (api.status, api.exit_code, api.ok) == ("skipped", 0, True)
    code, out, _ = cli(capsys, "sync", "skipped", "--json", "--project", root)
    [printed] = json_lines(out)
    expected = json.loads(json.dumps(api.to_dict(), default=str))
    for volatile in ("peak_rss_mb",):
        printed.pop(volatile), expected.pop(volatile)
    assert printed == expected
    with pytest.raises(connector.SyncLocked):  # the lower-level run_sync still raises, as documented
        project = connector.load_project(root)
        connector.run_sync(project, project.syncs["skipped"])


def test_a_configuration_error_before_any_job_is_one_json_object(make_project, capsys) -> None:
    project = make_project()
    for argv in (["sync", "nope"], ["check", "--select", "tag:none"], ["status", "--target", "prod"],
                 ["sync", "--bogus"], ["rejects", "orders", "--reason", "nope"]):
        for fmt in ([], ["--log-format", "json"]):
            code, out, err = cli(capsys, *argv, "--json", *fmt, "--project", str(project.root))
            [obj] = json_lines(out)
            assert code == 2 and obj["status"] == "error" and obj["exit_code"] == 2 and obj["error"], argv
            if fmt:
                assert all(json.loads(line)["level"] == "ERROR" for line in err.splitlines()), err
            else:
                assert "error" in err and "Traceback" not in err


def test_log_format_json_makes_every_line_json(outcome_project, capsys) -> None:
    root = str(outcome_project.root)
    for argv in (["sync", "ok", "partial", "failed", "error", "skipped"], ["check", "ok"], ["status"],
                 ["history", "ok"], ["rejects", "partial"], ["preview", "ok"], ["sync", "nope"],
                 ["sync", "--bogus"], ["-v", "sync", "failed", "--dry-run"]):
        code, out, err = cli(capsys, "--log-format", "json", *argv, "--project", root)
        lines = out.splitlines() + err.splitlines()
        assert lines, argv
        for line in lines:
            record = json.loads(line)
            assert {"time", "level", "logger", "message"} <= set(record), (argv, line)
            assert dt.datetime.fromisoformat(record["time"]).utcoffset() == dt.timedelta(0)


def test_text_log_lines_carry_a_date_and_the_utc_offset(make_project, fake_tiktok, order, now, capsys) -> None:
    project = make_project([order(1, now=now)])
    code, _, err = cli(capsys, "-v", "sync", "--project", str(project.root))
    assert code == 0
    stamps = [line.split(" ", 1)[0] for line in err.splitlines() if " INFO " in line]
    assert stamps
    for stamp in stamps:
        assert dt.datetime.fromisoformat(stamp).utcoffset() == dt.timedelta(0), stamp


# ---------------------------------------------------------------- check: verified, failed, or nothing verified


def test_check_exits_4_when_tiktok_cannot_be_reached(make_project, fake_tiktok, order, now, monkeypatch,
                                                     capsys) -> None:
    project = make_project([order(1, now=now)])
    monkeypatch.setenv("TIKTOK_API_BASE_URL", f"http://127.0.0.1:{_free_port()}")
    code, out, _ = cli(capsys, "check", "--project", str(project.root))
    assert code == 4, out
    assert "????" in out and "not verified: could not reach TikTok" in out
    assert out.rstrip().splitlines()[-1] == "checked 1: 1 unverified (exit 4: not everything could be verified)"
    code, out, _ = cli(capsys, "check", "--json", "--project", str(project.root))
    [result] = json_lines(out)
    assert code == 4 and (result["status"], result["exit_code"]) == ("unverified", 4)
    assert [c["status"] for c in result["checks"]] == ["ok", "ok", "unverified"]


def test_check_exits_4_while_another_process_writes_the_duckdb_file(make_project, fake_tiktok, order, now,
                                                                    capsys) -> None:
    project = make_project([order(1, now=now)])
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys; con = duckdb.connect(sys.argv[1]); "
                               "print('ready', flush=True); sys.stdin.read()", str(project.db)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        code, out, _ = cli(capsys, "check", "--json", "--project", str(project.root))
        [result] = json_lines(out)
        assert code == 4 and result["status"] == "unverified"
        assert "open for writing in another process" in result["checks"][0]["message"]
        code, out, err = cli(capsys, "sync", "--json", "--project", str(project.root))
        [report] = json_lines(out)  # a run that finds the file taken is skipped: exit 0, one object
        assert code == 0 and report["status"] == "skipped" and report["exit_code"] == 0
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_check_select_exclude_and_exit_code_precedence(outcome_project, capsys) -> None:
    root = outcome_project.root
    config = _config(root)
    config["syncs"]["ok"]["tags"] = ["daily"]
    config["syncs"]["partial"]["tags"] = ["daily"]
    _write_config(root, config)
    code, out, _ = cli(capsys, "check", "--json", "--select", "tag:daily", "--exclude", "partial",
                       "--project", str(root))
    assert code == 0 and [r["sync"] for r in json_lines(out)] == ["ok"]
    code, out, _ = cli(capsys, "check", "--json", "--select", "ok", "failed", "error", "--project", str(root))
    assert code == 2  # a configuration error wins over a failed check
    assert [(r["sync"], r["status"]) for r in json_lines(out)] == [("ok", "ok"), ("failed", "failed"),
                                                                   ("error", "error")]
    code, out, _ = cli(capsys, "check", "ok", "failed", "--project", str(root))
    assert code == 1 and out.rstrip().splitlines()[-1] == "checked 2: 1 ok, 1 failed (exit 1: a check failed)"


# ---------------------------------------------------------------- --target and --vars on every command


def test_every_command_reads_the_target_and_vars(make_project, fake_tiktok, order, now, capsys) -> None:
    project = make_project([order(1, now=now), order(2, now=now)],
                           query="select * from orders where total >= {{ vars.min_total }}\n")
    root = project.root
    shutil.copy(project.db, root / "prod.duckdb")
    config = _config(root)
    config["vars"] = {"min_total": 0}
    config["targets"] = {"prod": {"warehouse": {"url": "duckdb:///prod.duckdb"}}}
    _write_config(root, config)
    assert cli(capsys, "sync", "--target", "prod", "--project", str(root))[0] == 0

    def on(*argv: str) -> tuple[int, str]:
        code, out, err = cli(capsys, *argv, "--project", str(root))
        return code, out + err

    # The default target never ran; prod did: status, history and rejects read the target's state.
    assert json_lines(on("status", "--json")[1])[0]["health"] == "never run"
    assert json_lines(on("status", "--json", "--target", "prod")[1])[0]["ledger_size"] == 2
    assert json_lines(on("history", "orders", "--json", "--target", "prod")[1])[0]["events_sent"] == 2
    assert on("history", "orders", "--json")[1] == ""
    # --vars reaches the templates of preview and check.
    preview = json_lines(on("preview", "orders", "--json", "--vars", '{"min_total": 1000}')[1])[0]
    assert preview["requests"] == [] and ">= 1000" in preview["sql"]
    assert len(json_lines(on("preview", "orders", "--json")[1])[0]["requests"][0]["data"]) == 2
    code, text = on("check", "--target", "nope")
    assert code == 2 and "nope" in text
    code, text = on("reset", "orders", "--yes", "--target", "prod")
    assert code == 0 and "ledger 2" in text
    assert json_lines(on("status", "--json", "--target", "prod")[1])[0]["ledger_size"] == 0


# ---------------------------------------------------------------- --output: the run-results file


def test_output_writes_the_invocations_results_without_secrets(outcome_project, tmp_path, capsys) -> None:
    root = str(outcome_project.root)
    target = tmp_path / "results" / "run_results.json"
    target.parent.mkdir()
    code, out, _ = cli(capsys, "sync", "ok", "partial", "failed", "--json", "--output", str(target),
                       "--vars", json.dumps({"note": TOKEN}), "--project", root)
    doc = json.loads(target.read_text())
    assert code == doc["exit_code"] == 1
    assert doc["command"] == "sync" and doc["metadata"]["tool"] == "tiktok-connector"
    assert doc["metadata"]["invocation_id"] and doc["args"]["names"] == ["ok", "partial", "failed"]
    started, finished = (dt.datetime.fromisoformat(doc[key]) for key in ("started_at", "finished_at"))
    assert started <= finished and started.utcoffset() == dt.timedelta(0)
    printed = json_lines(out)
    assert [r["sync"] for r in doc["results"]] == ["ok", "partial", "failed"]
    assert [(r["status"], r["exit_code"]) for r in doc["results"]] == [(p["status"], p["exit_code"])
                                                                         for p in printed]
    assert TOKEN not in target.read_text() and "***" in target.read_text()  # --vars held the token: masked

    code, _, _ = cli(capsys, "sync", "nope", "--output", str(target), "--project", root)
    doc = json.loads(target.read_text())
    assert code == 2 and doc["exit_code"] == 2 and doc["results"] == [] and "nope" in doc["error"]

    code, _, _ = cli(capsys, "check", "ok", "--output", str(target), "--project", root)
    doc = json.loads(target.read_text())
    assert code == 0 and doc["command"] == "check" and doc["results"][0]["status"] == "ok"

    code, _, err = cli(capsys, "sync", "--output", str(tmp_path / "no" / "dir.json"), "--project", root)
    assert code == 2 and "does not exist" in err
    assert sorted(p.name for p in target.parent.iterdir()) == ["run_results.json"]  # no temporary file left


# ---------------------------------------------------------------- commands that surprised


def test_init_honours_project_and_writes_the_schema_editors_read(tmp_path, monkeypatch, capsys) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "init", "--project", "shop")
    assert code == 0, err
    root = tmp_path / "shop"
    assert (root / "connector.yml").is_file() and not (tmp_path / "connector.yml").exists()
    assert "check --project shop" in out
    first = (root / "connector.yml").read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=.tiktok-connector/connector.schema.json"
    schema_path = root / first.split("$schema=")[1]  # relative to connector.yml, as editors resolve it
    schema = json.loads(schema_path.read_text())
    code, printed, _ = cli(capsys, "schema")
    assert code == 0 and json.loads(printed) == schema
    jsonschema.Draft7Validator(schema).validate(yaml.safe_load((root / "connector.yml").read_text()))
    code, out, _ = cli(capsys, "-q", "init", str(tmp_path / "quiet"))
    assert code == 0 and out == ""
    schema_path.write_text("{}")
    code, _, err = cli(capsys, "check", "--project", str(root))
    assert "tiktok-connector schema >" in err  # a stale copy is noticed


def test_retry_does_not_record_the_rejects_it_reads_again(make_project, fake_tiktok, order, now, capsys) -> None:
    project = make_project([order(1, now=now), order(2, now=now, currency="XYZ"),
                            order(3, now=now, email=None, phone=None)], sync_overrides={"max_reject_rate": 1})
    root = str(project.root)
    assert cli(capsys, "sync", "--project", root)[0] == 0
    before = json_lines(cli(capsys, "rejects", "orders", "--json", "--project", root)[1])[0]
    for _ in range(2):
        code, out, _ = cli(capsys, "retry", "orders", "--reason", "invalid_currency", "--reason", "no_match_keys",
                           "--json", "--project", root)
        [report] = json_lines(out)
        assert code == 0 and report["rejected_by_reason"] == {"invalid_currency": 1, "no_match_keys": 1}
    after = json_lines(cli(capsys, "rejects", "orders", "--json", "--project", root)[1])[0]
    assert after["by_reason"] == before["by_reason"] == {"invalid_currency": 1, "no_match_keys": 1}
    assert project.count("tiktok_rejects") == 2


def test_status_names_last_run_counts_and_times_carry_their_offset(make_project, fake_tiktok, order, now,
                                                                   capsys) -> None:
    project = make_project([order(1, now=now)])
    root = str(project.root)
    assert cli(capsys, "sync", "--project", root)[0] == 0
    project.insert([order(2, now=now)])
    assert cli(capsys, "sync", "--project", root)[0] == 0
    code, out, _ = cli(capsys, "status", "--project", root)
    header, row = out.splitlines()
    assert "LAST RUN SENT" in header and "LAST RUN REJECTED" in header and " SENT " not in header.replace(
        "LAST RUN SENT", "")
    [status] = json_lines(cli(capsys, "status", "--json", "--project", root)[1])
    assert status["last_events_sent"] == 1 and status["ledger_size"] == 2
    last_run = dt.datetime.fromisoformat(status["last_run_at"])
    watermark = dt.datetime.fromisoformat(status["watermark"])
    assert last_run.utcoffset() == watermark.utcoffset() == dt.timedelta(0)
    assert abs(last_run - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=5)
    runs = json_lines(cli(capsys, "history", "orders", "--json", "--project", root)[1])
    assert all(dt.datetime.fromisoformat(r["started_at"]).utcoffset() == dt.timedelta(0) for r in runs)


# ---------------------------------------------------------------- SQL errors at the line the user wrote


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=st.lists(st.sampled_from(["", "-- a comment", "  ", "-- {{ 'not jinja in a comment' }}"]),
                       max_size=6),
       after=st.lists(st.sampled_from(["", "-- more"]), max_size=3), value=st.integers(0, 10**6))
def test_a_query_error_names_the_template_file_and_its_line(make_project, fake_tiktok, capsys, before, after,
                                                            value) -> None:
    project = make_project(query="select 1\n")
    lines = [*before, "select *", "from orders", f"where no_such_column > {{{{ {value} }}}}", *after]
    (project.root / "queries" / "orders.sql").write_text("\n".join(lines) + "\n")
    wrong = len(before) + 3
    code, out, _ = cli(capsys, "sync", "--json", "--project", str(project.root))
    [report] = json_lines(out)
    assert code == 1
    assert report["error"].startswith(f"queries/orders.sql line {wrong}: "), report["error"]
    assert f"LINE {wrong}: where no_such_column" in report["error"]
    caret = report["error"].splitlines()[-1]
    shown = report["error"].splitlines()[-2]
    assert shown[caret.index("^"):].startswith("no_such_column")  # the caret still points at the column


def test_a_query_error_in_a_template_with_blocks_is_a_best_guess_that_says_so(make_project, fake_tiktok,
                                                                               capsys) -> None:
    project = make_project(query="select 1\n")
    (project.root / "queries" / "orders.sql").write_text(
        "{# header #}\nselect *\nfrom orders\n{% if true %}\nwhere no_such_column > {{ 1 }}\n{% endif %}\n")
    code, out, _ = cli(capsys, "sync", "--json", "--project", str(project.root))
    error = json_lines(out)[0]["error"]
    assert code == 1 and error.startswith("queries/orders.sql line 5 (about:"), error
    (project.root / "queries" / "duckdb").mkdir()
    (project.root / "queries" / "duckdb" / "orders.sql").write_text("select *\nfrom orders\nwhere nope = 1\n")
    error = json_lines(cli(capsys, "sync", "--json", "--project", str(project.root))[1])[0]["error"]
    assert error.startswith("queries/duckdb/orders.sql line 3: "), error


# ---------------------------------------------------------------- rejects: the table holds whatever a detail is


@pytest.fixture
def reject_table(make_project, fake_tiktok, order, now, capsys):
    project = make_project([order(1, now=now)])
    assert cli(capsys, "sync", "--project", str(project.root))[0] == 0
    return project


_DETAILS = st.text(st.characters(codec="utf-8"), max_size=300)
_counter = itertools.count()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(details=st.lists(_DETAILS, min_size=1, max_size=5), event_id=st.text(st.characters(codec="utf-8"), max_size=20),
       limit=st.integers(1, 6))
def test_reject_details_never_break_the_table_and_long_ones_are_marked(reject_table, capsys, details, event_id,
                                                                        limit) -> None:
    run = f"run-{next(_counter)}"
    reject_table.query("delete from tiktok_rejects")
    for n, detail in enumerate(details):
        reject_table.query("insert into tiktok_rejects (run_id, sync_name, event_id, reason, detail, recorded_at) "
                           "values (?, 'orders', ?, 'invalid_field', ?, now() - to_seconds(?))",
                           [run, event_id + str(n), detail, n])
    code, out, _ = cli(capsys, "rejects", "orders", "--limit", str(limit), "--project", str(reject_table.root))
    assert code == 0
    summary, table, footer = out.split("\n\n")
    header, *rows = table.splitlines()
    shown = min(limit, len(details))
    assert len(rows) == shown  # one line per reject, whatever its detail holds
    assert footer.startswith(f"{shown} of {len(details)} rejects shown")
    assert ("--limit N shows more" in footer) == (shown < len(details))
    from connector.commands import DETAIL_WIDTH, display_width
    column = display_width(header[:header.index("DETAIL")])
    newest_first = details[:shown]  # reject n was recorded n seconds ago
    for row, detail in zip(rows, newest_first):
        taken, width = "", 0  # the detail column starts where the header's does, in terminal columns
        for char in row:
            if width >= column:
                break
            taken += char
            width += display_width(char)
        cell = row[len(taken):]
        assert display_width(cell) <= DETAIL_WIDTH
        visible = detail.isprintable() and display_width(detail) <= DETAIL_WIDTH
        if visible:
            assert cell == detail.rstrip() or cell == detail
        if display_width(detail) > DETAIL_WIDTH:
            assert cell.endswith("…")
    code, out, _ = cli(capsys, "rejects", "orders", "--json", "--limit", str(limit), "--project",
                       str(reject_table.root))
    [doc] = json_lines(out)
    assert [r["detail"] for r in doc["rows"]] == newest_first  # whole, in JSON
    assert (doc["shown"], doc["total"]) == (shown, len(details))


def test_python_dash_m_runs_with_json_logs_and_output(outcome_project, tmp_path) -> None:
    target = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "connector", "--log-format", "json", "sync", "ok", "partial",
                           "--output", str(target), "--project", str(outcome_project.root)],
                          capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert done.returncode == 3, done.stderr
    records = [json.loads(line) for line in (done.stdout + done.stderr).splitlines()]
    assert [r["data"]["sync"] for r in records if "data" in r] == ["ok", "partial"]
    assert json.loads(target.read_text())["exit_code"] == 3


@pytest.mark.parametrize(("text", "expected"), [
    ("the query failed in postgresql: ProgrammingError: column \"***\" does not exist (line 4 of the SQL sent)",
     "queries/q.sql line 3: the query failed in postgresql: ProgrammingError: column \"***\" does not exist"),
    ("the query failed in Snowflake: SQL compilation error: error line 4 at position 6 invalid identifier",
     "queries/q.sql line 3: the query failed in Snowflake: SQL compilation error: error line 3 of the query file "
     "at position 6 invalid identifier"),
    ("the query failed in postgresql: ProgrammingError: syntax error (line 1 of the SQL sent)",
     "queries/q.sql: the query failed in postgresql: ProgrammingError: syntax error (line 1 of the SQL sent) (line 1 "
     "is in the SQL the connector wraps around the query: `tiktok-connector preview NAME` shows it)"),
])
def test_other_warehouses_line_numbers_are_mapped_too(text, expected) -> None:
    from connector.sql_lines import located
    source = "-- q\nselect *\nwhere nope > {{ 1 }}\n"
    rendered = "-- q\nselect *\nwhere nope > 1"
    sql = f"select * from (\n{rendered}\n) as probe where 1 = 0"
    assert located(text, sql, rendered, "queries/q.sql", source) == expected
