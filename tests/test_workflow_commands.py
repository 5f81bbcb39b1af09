"""The workflow commands through the real CLI: init, check, preview, status, history, rejects, reset, exit codes.

In-process `connector.cli.main([...])` with capsys, and `python -m connector` in a subprocess for a few;
real DuckDB files and real HTTP to the fake TikTok server on 127.0.0.1.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import yaml

from connector.cli import main
from cli_helpers import assert_no_plain_pii, cli, json_lines

HEX64 = re.compile(r"^[0-9a-f]{64}$")
REJECT_COLUMNS = ["recorded_at", "run_id", "event_id", "cursor_value", "event_time", "reason", "detail",
                  "resolved_at"]
SCAFFOLD = ["connector.yml", "queries/purchases.sql", "mappings/purchases.yml", "queries/vip_buyers.sql", ".env.example",
            "warehouse.duckdb"]


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected a one-line message, got: {err!r}"
    assert "Traceback" not in err
    return lines[0]


def add_sync(project, name: str, **changes) -> None:
    path = project.root / "connector.yml"
    config = yaml.safe_load(path.read_text())
    config["syncs"][name] = {**config["syncs"]["orders"], **changes}
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def no_tiktok_env(monkeypatch) -> None:
    for var in ("TIKTOK_API_BASE_URL", "TIKTOK_ACCESS_TOKEN", "TIKTOK_TEST_EVENT_CODE"):
        monkeypatch.delenv(var, raising=False)


def db_count(project, table: str) -> int:
    return project.count(table)


# ---------------------------------------------------------------- init


def test_init_scaffold_checks_previews_and_syncs_as_is(tmp_path, monkeypatch, capsys) -> None:
    no_tiktok_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "shop"
    code, out, err = cli(capsys, "init", str(target))
    assert code == 0, err
    for name in SCAFFOLD:
        assert (target / name).is_file(), name
        assert name.split("/")[-1] in out  # the message lists what it wrote
    config = yaml.safe_load((target / "connector.yml").read_text())
    assert config["tiktok"]["base_url"] == "fake"
    assert "purchases" in config["syncs"]
    assert config["audiences"]["vip_buyers"]["member_id"] == "customer_id"
    assert config["tiktok"]["audience_access_token"].startswith("${TIKTOK_AUDIENCE_ACCESS_TOKEN")
    assert "TIKTOK_ACCESS_TOKEN" in (target / ".env.example").read_text()
    assert "TIKTOK_AUDIENCE_ACCESS_TOKEN" in (target / ".env.example").read_text()
    assert not (target / ".env").exists()
    con = duckdb.connect(str(target / "warehouse.duckdb"), read_only=True)
    try:
        assert con.execute("select count(*) from orders").fetchone()[0] == 200
        assert con.execute("select count(*) from order_items").fetchone()[0] > 200
    finally:
        con.close()

    code, out, err = cli(capsys, "check", "--project", str(target))
    assert code == 0, out + err
    for check in ("configuration", "query", "tiktok"):
        assert re.search(rf"^\s+ok\s+{check}:", out, re.M), out
    assert "FAIL" not in out

    code, out, err = cli(capsys, "preview", "purchases", "--project", str(target), "--json")
    assert code == 0, err
    [preview] = json_lines(out)
    assert len([e for r in preview["requests"] for e in r["data"]]) == 3
    assert "@" not in out

    code, out, err = cli(capsys, "preview", "vip_buyers", "--project", str(target), "--json")
    assert code == 0, err
    [audience] = json_lines(out)
    assert audience["members_added"] > 30 and audience["requests"][0]["action"] == "add"
    assert "@" not in out

    code, out, err = cli(capsys, "sync", "--project", str(target), "--json")
    assert code == 0, out + err
    report, audience_run = json_lines(out)  # the sync, then the audience (on the built-in fake)
    assert audience_run["audience"] == "vip_buyers" and audience_run["exit_code"] == 0
    assert audience_run["members_added"] == audience["members_added"]  # what its preview said
    assert report["status"] == "success" and report["health"] == "ok"
    assert report["events_sent"] > 100  # most of the 200 sample orders are inside the attribution window
    assert report["watermark"] is not None
    assert any("fake" in note for note in report["notes"])

    code, out, _ = cli(capsys, "sync", "--project", str(target), "--json")
    assert code == 0
    assert json_lines(out)[0]["events_sent"] == 0  # incremental: nothing new the second time

    code, out, _ = cli(capsys, "status", "--project", str(target), "--json")
    status, audience = json_lines(out)
    assert status["health"] == "ok" and status["ledger_size"] == report["events_sent"]
    assert audience["audience"] == "vip_buyers" and audience["members"] == audience_run["members_added"]


def test_init_refuses_an_existing_project_and_keeps_it(tmp_path, make_project, monkeypatch, capsys) -> None:
    no_tiktok_env(monkeypatch)
    target = tmp_path / "shop"
    target.mkdir()
    (target / "connector.yml").write_text("# mine\n")

    code, out, err = cli(capsys, "init", str(target))
    assert code == 2
    line = one_line_error(err)
    assert "connector.yml" in line and "already exists" in line
    assert out == ""
    assert (target / "connector.yml").read_text() == "# mine\n"
    assert sorted(p.name for p in target.iterdir()) == ["connector.yml"]  # nothing else written

    project = make_project()  # any project: init never overwrites
    code, _, err = cli(capsys, "init", str(project.root))
    assert code == 2
    assert str(project.root / "connector.yml") in one_line_error(err)
    assert not (project.root / "queries" / "purchases.sql").exists()


def test_init_in_the_current_directory_then_sync_with_python_dash_m_and_no_environment(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIKTOK_")}
    target = tmp_path / "fresh"
    target.mkdir()

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "connector", *argv], capture_output=True, text=True,
                              timeout=60, env=env, cwd=target, stdin=subprocess.DEVNULL)

    done = run("init")  # DIR defaults to the current directory
    assert done.returncode == 0, done.stderr
    assert all((target / name).is_file() for name in SCAFFOLD)
    done = run("sync", "--json")  # --project defaults to the current directory too
    assert done.returncode == 0, done.stderr
    report, _ = json_lines(done.stdout)
    assert report["status"] == "success" and report["events_sent"] > 100
    done = run("init", ".")
    assert done.returncode == 2
    assert "already exists" in one_line_error(done.stderr)


# ---------------------------------------------------------------- check


def test_check_prints_ok_lines_and_sends_no_event(make_project, fake_tiktok, order, now, capsys) -> None:
    project = make_project([order(1, now=now), order(2, now=now)])
    code, out, err = cli(capsys, "check", "--project", str(project.root))
    assert code == 0, out + err
    assert out.splitlines()[0] == "orders"
    for check in ("configuration", "query", "tiktok"):
        assert re.search(rf"^  ok\s+{check}:", out, re.M), out
    assert "accepted" in out
    assert fake_tiktok.accepted() == [] and fake_tiktok.test_events() == []
    [probe] = fake_tiktok.requests()  # the token is verified with one empty probe
    assert probe.body["data"] == []
    assert project.query("select table_name from duckdb_tables() where table_name like 'tiktok%'") == []


def test_check_names_the_mapping_file_and_column(make_project, fake_tiktok, order, now, default_mapping,
                                                 capsys) -> None:
    default_mapping["fields"]["user.email"] = "email_address"
    project = make_project([order(1, now=now)], mapping=default_mapping)
    code, out, err = cli(capsys, "check", "--project", str(project.root))
    assert code == 2, out + err
    [line] = [line for line in out.splitlines() if "FAIL" in line]
    assert str(Path("mappings") / "orders.yml") in line
    assert "'email_address'" in line and "user.email" in line
    assert fake_tiktok.requests() == []

    code, out, _ = cli(capsys, "check", "--project", str(project.root), "--json")
    assert code == 2
    [result] = json_lines(out)
    [failed] = [c for c in result["checks"] if c["ok"] is False]
    assert failed["check"] == "configuration" and "email_address" in failed["message"]


def test_check_wrong_token_is_refused(make_project, fake_tiktok, order, now, monkeypatch, capsys) -> None:
    secret = "wrong-S3CRET-token"
    monkeypatch.setenv("TIKTOK_ACCESS_TOKEN", secret)
    project = make_project([order(1, now=now)])
    code, out, err = cli(capsys, "check", "--project", str(project.root))
    assert code == 1
    [line] = [line for line in out.splitlines() if "tiktok:" in line]
    assert "FAIL" in line and "refused" in line
    assert secret not in out + err


def test_check_permission_error(make_project, fake_tiktok, order, now, capsys) -> None:
    project = make_project([order(1, now=now)])
    fake_tiktok.set_auth_error(40001)
    code, out, err = cli(capsys, "check", "--project", str(project.root))
    assert code == 1, out + err
    [line] = [line for line in out.splitlines() if "tiktok:" in line]
    assert "FAIL" in line and "permission" in line and "7654321098765432109" in line


def test_check_without_a_token_fails_and_says_what_to_export(make_project, fake_tiktok, order, now, monkeypatch,
                                                            capsys) -> None:
    monkeypatch.delenv("TIKTOK_ACCESS_TOKEN")
    project = make_project([order(1, now=now)])
    code, out, _ = cli(capsys, "check", "--project", str(project.root))
    assert code != 0
    assert "TIKTOK_ACCESS_TOKEN" in out
    assert fake_tiktok.requests() == []


def test_check_json_one_object_per_sync(make_project, fake_tiktok, order, now, capsys) -> None:
    project = make_project([order(1, now=now)])
    add_sync(project, "orders_again")
    code, out, err = cli(capsys, "check", "--project", str(project.root), "--json")
    assert code == 0, err
    results = json_lines(out)
    assert [r["sync"] for r in results] == ["orders", "orders_again"]
    for result in results:
        assert isinstance(result["checks"], list)
        assert [c["check"] for c in result["checks"]] == ["configuration", "query", "tiktok"]
        assert all(c["ok"] is True and c["message"] for c in result["checks"])
    code, out, _ = cli(capsys, "check", "orders_again", "--project", str(project.root), "--json")
    assert code == 0 and [r["sync"] for r in json_lines(out)] == ["orders_again"]


def test_check_test_event_code_sends_exactly_one_test_event(make_project, fake_tiktok, order, now, capsys) -> None:
    project = make_project([order(1, now=now), order(2, now=now), order(3, now=now)])
    code, out, err = cli(capsys, "check", "--project", str(project.root), "--test-event-code", "TEST42")
    assert code == 0, out + err
    assert "TEST42" in out
    [event] = fake_tiktok.test_events()
    assert event.test_event_code == "TEST42"
    assert event.event["event_id"] == "ORD-00001"
    [request] = fake_tiktok.requests()
    assert request.body["test_event_code"] == "TEST42"
    assert all("test_event_code" not in e for e in request.body["data"])
    assert fake_tiktok.accepted() == []
    assert project.watermark() is None
    assert db_count(project, "tiktok_ledger") == 0


# ---------------------------------------------------------------- preview


def _bodies(text: str) -> list[dict]:
    """The JSON bodies `preview` prints after its SQL."""
    decoder, bodies, index = json.JSONDecoder(), [], text.index("-- the first")
    while (start := text.find("\n{", index)) != -1:
        body, index = decoder.raw_decode(text, start + 1)
        bodies.append(body)
    return bodies


def test_preview_shows_bound_sql_and_the_exact_bodies(make_project, fake_tiktok, order, now, capsys) -> None:
    project = make_project([order(n, now=now) for n in (1, 2, 3)])
    assert cli(capsys, "sync", "--project", str(project.root))[0] == 0
    watermark = project.watermark()
    assert watermark is not None
    project.insert([order(n, now=now) for n in range(4, 9)])
    requests_before, runs_before = len(fake_tiktok.requests()), project.runs()

    code, out, err = cli(capsys, "preview", "orders", "--project", str(project.root), "--limit", "2")
    assert code == 0, err
    sql = out[:out.index("-- the first")]
    assert re.search(r'where .*"updated_at" >= ', sql)
    assert re.search(r'order by .*"updated_at(__utc)?"', sql)
    stamp = dt.datetime.fromisoformat(watermark)
    for literal in (watermark, str(stamp), stamp.strftime("%Y-%m-%d %H:%M:%S"), stamp.strftime("%H:%M:%S")):
        assert literal not in sql  # values are bound parameters
    bodies = _bodies(out)
    events = [e for body in bodies for e in body["data"]]
    assert [e["event_id"] for e in events] == ["ORD-00004", "ORD-00005"]
    assert events[0]["user"]["email"] == sha("customer4@example.com")
    assert all(HEX64.match(e["user"]["email"]) and HEX64.match(e["user"]["phone"]) for e in events)
    assert_no_plain_pii(out[len(sql):])  # the SQL is ours: it may test for '@'
    assert "example.com" not in sql.lower() and "555-" not in sql

    # nothing sent, nothing recorded
    assert len(fake_tiktok.requests()) == requests_before
    assert project.watermark() == watermark
    assert project.runs() == runs_before
    assert db_count(project, "tiktok_ledger") == 3

    # "exactly as the body would be sent": the next sync sends the same JSON
    assert cli(capsys, "sync", "--project", str(project.root))[0] == 0
    sent = fake_tiktok.requests()[-1].body
    assert sent["data"][:2] == events
    assert {k: v for k, v in sent.items() if k != "data"} == {k: v for k, v in bodies[0].items() if k != "data"}


@pytest.mark.parametrize("limit", [1, 4])
def test_preview_json_limit(make_project, fake_tiktok, order, now, capsys, limit) -> None:
    project = make_project([order(n, now=now) for n in range(1, 7)])
    code, out, err = cli(capsys, "preview", "orders", "--limit", str(limit), "--json", "--project",
                         str(project.root))
    assert code == 0, err
    [preview] = json_lines(out)
    assert preview["sync"] == "orders"
    assert "order by" in preview["sql"] and "updated_at" in preview["sql"]
    events = [e for body in preview["requests"] for e in body["data"]]
    assert len(events) == limit
    for body in preview["requests"]:
        assert body["event_source"] == "offline" and body["event_source_id"] == "7654321098765432109"
    assert fake_tiktok.requests() == []
    assert project.watermark() is None
    assert db_count(project, "tiktok_runs") == 0


def test_preview_json_sql_has_no_watermark_literal(make_project, fake_tiktok, order, now, capsys) -> None:
    project = make_project([order(1, now=now)])
    assert cli(capsys, "sync", "--project", str(project.root))[0] == 0
    watermark = dt.datetime.fromisoformat(project.watermark())
    code, out, _ = cli(capsys, "preview", "orders", "--json", "--project", str(project.root))
    assert code == 0
    [preview] = json_lines(out)
    assert ">=" in preview["sql"]
    assert watermark.strftime("%Y-%m-%d") not in preview["sql"]
    assert preview["requests"] == []  # the one row at the watermark was sent already


def test_preview_limit_zero_shows_no_event(make_project, fake_tiktok, order, now, capsys) -> None:
    project = make_project([order(n, now=now) for n in range(1, 6)])
    code, out, _ = cli(capsys, "preview", "orders", "--limit", "0", "--json", "--project", str(project.root))
    assert code == 2 or [e for body in json_lines(out)[0]["requests"] for e in body["data"]] == []


# ---------------------------------------------------------------- status


def test_status_before_and_after_syncs(make_project, fake_tiktok, order, now, capsys) -> None:
    project = make_project([order(n, now=now) for n in (1, 2, 3)], sync_overrides={"max_reject_rate": 0.2})
    add_sync(project, "orders_again")
    root = str(project.root)

    code, out, err = cli(capsys, "status", "--project", root, "--json")
    assert code == 0, err
    rows = {r["sync"]: r for r in json_lines(out)}
    assert set(rows) == {"orders", "orders_again"}
    assert rows["orders"]["health"] == "never run"
    assert rows["orders"]["watermark"] is None
    assert rows["orders"]["ledger_size"] == 0 and rows["orders"]["unresolved_rejects"] == 0
    code, out, _ = cli(capsys, "status", "--project", root)
    assert code == 0
    header, *lines = out.splitlines()
    assert header.split()[:3] == ["SYNC", "HEALTH", "WATERMARK"]
    assert any(line.startswith("orders ") and "never run" in line for line in lines)

    code, out, _ = cli(capsys, "sync", "orders", "--project", root, "--json")
    assert code == 0
    [report] = json_lines(out)
    [row] = [r for r in json_lines(cli(capsys, "status", "--project", root, "--json")[1]) if r["sync"] == "orders"]
    assert row["health"] == "ok" and row["last_status"] == "success"
    assert dt.datetime.fromisoformat(row["watermark"]) == dt.datetime.fromisoformat(report["watermark"])
    assert row["ledger_size"] == 3 and row["unresolved_rejects"] == 0 and row["last_events_sent"] == 3

    # 1 valid + 2 bad currency: 2 of 3 rejected, above max_reject_rate 0.2
    project.insert([order(4, now=now), order(5, now=now, currency="XYZ"), order(6, now=now, currency="XYZ")])
    assert cli(capsys, "sync", "orders", "--project", root)[0] == 3
    rows = {r["sync"]: r for r in json_lines(cli(capsys, "status", "--project", root, "--json")[1])}
    assert rows["orders"]["health"] == "rejecting"
    assert rows["orders"]["ledger_size"] == 4 and rows["orders"]["unresolved_rejects"] == 2
    assert rows["orders"]["last_events_rejected"] == 2
    assert rows["orders_again"]["health"] == "never run"  # each sync has its own state
    watermark = rows["orders"]["watermark"]

    project.insert([order(7, now=now)])
    fake_tiktok.fail_next(1000)
    assert cli(capsys, "sync", "orders", "--project", root)[0] == 1
    code, out, _ = cli(capsys, "status", "--project", root)
    [line] = [line for line in out.splitlines() if line.startswith("orders ")]
    assert "failing" in line
    [row] = [r for r in json_lines(cli(capsys, "status", "--project", root, "--json")[1]) if r["sync"] == "orders"]
    assert row["health"] == "failing" and row["last_status"] == "failed"
    assert row["watermark"] == watermark and row["ledger_size"] == 4

    fake_tiktok.reset()
    assert cli(capsys, "sync", "orders", "--project", root)[0] == 0
    [row] = [r for r in json_lines(cli(capsys, "status", "--project", root, "--json")[1]) if r["sync"] == "orders"]
    assert row["health"] == "ok" and row["ledger_size"] == 5


def test_a_failing_query_shows_in_status_and_history(make_project, fake_tiktok, order, now, capsys) -> None:
    project = make_project([order(1, now=now)])
    root = str(project.root)
    assert cli(capsys, "sync", "--project", root)[0] == 0
    (project.root / "queries" / "orders.sql").write_text("select * from orders_renamed\n")
    code, out, _ = cli(capsys, "sync", "--project", root, "--json")
    assert code == 1
    assert json_lines(out)[0]["status"] == "failed"
    [row] = json_lines(cli(capsys, "status", "--project", root, "--json")[1])
    runs = json_lines(cli(capsys, "history", "orders", "--project", root, "--json")[1])
    assert row["health"] == "failing"
    assert runs[0]["status"] == "failed" and "orders_renamed" in runs[0]["error"]


# ---------------------------------------------------------------- history


def test_history_newest_first_with_modes_and_last_error(make_project, fake_tiktok, order, now, capsys) -> None:
    project = make_project([order(n, now=now) for n in (1, 2, 3)], sync_overrides={"max_reject_rate": 0.5})
    root = str(project.root)
    code, out, _ = cli(capsys, "history", "orders", "--project", root)
    assert code == 0 and "no runs yet" in out

    fake_tiktok.reject_event_ids(["ORD-00003"], message="Not a valid value for ORD-00003")
    assert cli(capsys, "sync", "--project", root)[0] == 0
    start = (now - dt.timedelta(days=3)).date().isoformat()
    end = (now + dt.timedelta(days=1)).date().isoformat()
    assert cli(capsys, "backfill", "orders", "--start", start, "--end", end, "--project", root)[0] == 0
    fake_tiktok.reset()
    assert cli(capsys, "retry", "orders", "--project", root)[0] == 0
    assert "ORD-00003" in fake_tiktok.accepted_event_ids()
    project.insert([order(4, now=now)])
    fake_tiktok.fail_next(1000)
    code, out, _ = cli(capsys, "sync", "--project", root, "--json")
    assert code == 1
    error = json_lines(out)[0]["error"]
    assert error

    code, out, err = cli(capsys, "history", "orders", "--project", root, "--json")
    assert code == 0, err
    runs = json_lines(out)
    assert [r["mode"] for r in runs] == ["sync", "retry", "backfill", "sync"]
    assert [r["status"] for r in runs] == ["failed", "success", "success", "success"]
    assert [r["started_at"] for r in runs] == sorted((r["started_at"] for r in runs), reverse=True)
    assert runs[0]["error"] == error and runs[0]["health"] == "failing"
    assert runs[3]["events_sent"] == 2 and runs[3]["events_rejected"] == 1
    assert runs[1]["events_sent"] == 1

    code, out, _ = cli(capsys, "history", "orders", "--project", root)
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split()[:4] == ["STARTED", "(UTC)", "MODE", "STATUS"]
    table = [line.split() for line in rows[:4]]
    assert [r[2] for r in table] == ["sync", "retry", "backfill", "sync"]
    assert [r[3] for r in table] == ["failed", "success", "success", "success"]
    [last_error] = [line for line in rows if line.startswith("last error")]
    assert error in last_error

    code, out, _ = cli(capsys, "history", "orders", "--limit", "2", "--project", root, "--json")
    assert [r["mode"] for r in json_lines(out)] == ["sync", "retry"]


# ---------------------------------------------------------------- rejects


@pytest.fixture
def rejected_project(make_project, fake_tiktok, order, now, capsys):
    """2 valid rows, 2 with a bad currency, 1 without email or phone, synced once."""
    project = make_project([order(1, now=now), order(2, now=now), order(3, now=now, currency="XYZ"),
                            order(4, now=now, currency="XYZ"), order(5, now=now, email=None, phone=None)],
                           sync_overrides={"max_reject_rate": 1.0})
    assert cli(capsys, "sync", "--project", str(project.root))[0] == 0
    return project


def _db_rejects(project) -> list[dict]:
    rows = project.query(f"select {', '.join(REJECT_COLUMNS)} from tiktok_rejects order by event_id")
    return [dict(zip(REJECT_COLUMNS, row)) for row in rows]


def test_rejects_summary_reason_and_limit(rejected_project, capsys) -> None:
    root = str(rejected_project.root)
    code, out, err = cli(capsys, "rejects", "orders", "--project", root)
    assert code == 0, err
    summary, detail, footer = out.split("\n\n")
    assert [line.split() for line in summary.splitlines()] == [
        ["REASON", "ROWS"], ["invalid_currency", "2"], ["no_match_keys", "1"]]
    detail_rows = detail.splitlines()[1:]
    assert footer.startswith("3 of 3 rejects shown") and "--limit N" not in footer
    assert sorted(re.search(r"ORD-\d+", line).group() for line in detail_rows) == ["ORD-00003", "ORD-00004",
                                                                                    "ORD-00005"]
    assert_no_plain_pii(out)

    code, out, _ = cli(capsys, "rejects", "orders", "--reason", "no_match_keys", "--project", root)
    assert code == 0
    detail_rows = out.split("\n\n")[1].splitlines()[1:]
    assert out.split("\n\n")[2].startswith("1 of 1 no_match_keys rejects shown")
    assert len(detail_rows) == 1 and "ORD-00005" in detail_rows[0] and "no_match_keys" in detail_rows[0]

    code, out, _ = cli(capsys, "rejects", "orders", "--limit", "1", "--project", root)
    assert len(out.split("\n\n")[1].splitlines()[1:]) == 1
    assert out.split("\n\n")[2].startswith("1 of 3 rejects shown") and "--limit N shows more" in out

    code, out, _ = cli(capsys, "rejects", "orders", "--json", "--reason", "invalid_currency", "--project", root)
    [doc] = json_lines(out)
    assert doc["by_reason"] == {"invalid_currency": 2, "no_match_keys": 1}
    assert sorted(r["event_id"] for r in doc["rows"]) == ["ORD-00003", "ORD-00004"]
    assert {r["reason"] for r in doc["rows"]} == {"invalid_currency"}
    assert (doc["shown"], doc["total"]) == (2, 2)
    assert all(dt.datetime.fromisoformat(r["recorded_at"]).utcoffset() == dt.timedelta(0) for r in doc["rows"])


def test_rejects_export_csv_and_json_match_the_table(rejected_project, tmp_path, capsys) -> None:
    root = str(rejected_project.root)
    expected = _db_rejects(rejected_project)
    assert len(expected) == 3

    csv_path = tmp_path / "out" / "rejects.csv"
    csv_path.parent.mkdir()
    code, out, err = cli(capsys, "rejects", "orders", "--export", str(csv_path), "--project", root)
    assert code == 0, err
    assert "3" in err and out == ""
    with csv_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == REJECT_COLUMNS
        got = sorted(reader, key=lambda r: r["event_id"])
    def utc(value):  # the state tables store UTC without an offset; exports say +00:00, in ISO 8601
        return value.replace(tzinfo=dt.timezone.utc).isoformat() if isinstance(value, dt.datetime) else value

    expected = [{k: utc(v) for k, v in row.items()} for row in expected]
    assert all(row["recorded_at"].endswith("+00:00") for row in expected)
    assert got == [{k: "" if v is None else str(v) for k, v in row.items()} for row in expected]

    json_path = tmp_path / "out" / "rejects.JSON"
    assert cli(capsys, "rejects", "orders", "--export", str(json_path), "--project", root)[0] == 0
    got = sorted(json.loads(json_path.read_text()), key=lambda r: r["event_id"])
    assert got == json.loads(json.dumps(expected, default=str))

    for path in (csv_path, json_path):
        text = path.read_text().lower()
        assert_no_plain_pii(text)

    filtered = tmp_path / "out" / "currency.json"
    assert cli(capsys, "rejects", "orders", "--reason", "invalid_currency", "--limit", "1", "--export",
               str(filtered), "--project", root)[0] == 0
    assert sorted(r["event_id"] for r in json.loads(filtered.read_text())) == ["ORD-00003", "ORD-00004"]


def test_rejects_export_unknown_extension(rejected_project, tmp_path, capsys) -> None:
    target = tmp_path / "rejects.xlsx"
    code, out, err = cli(capsys, "rejects", "orders", "--export", str(target), "--project",
                         str(rejected_project.root))
    assert code == 2
    line = one_line_error(err)
    assert ".csv" in line and ".json" in line
    assert not target.exists()


def test_rejects_none_and_bad_reason(make_project, fake_tiktok, order, now, capsys) -> None:
    project = make_project([order(1, now=now)])
    assert cli(capsys, "sync", "--project", str(project.root))[0] == 0
    code, out, _ = cli(capsys, "rejects", "orders", "--project", str(project.root))
    assert code == 0 and "no unresolved rejects" in out
    # a usage error: argparse's exit 2, returned by main() rather than raised
    assert main(["rejects", "orders", "--reason", "not_a_reason", "--project", str(project.root)]) == 2


# ---------------------------------------------------------------- reset


def test_reset_yes_clears_state_and_the_next_sync_resends(rejected_project, fake_tiktok, capsys) -> None:
    project, root = rejected_project, str(rejected_project.root)
    assert db_count(project, "tiktok_ledger") == 2 and db_count(project, "tiktok_rejects") == 3
    runs = len(project.runs())
    code, out, err = cli(capsys, "reset", "orders", "--yes", "--project", root)
    assert code == 0, err
    assert "watermarks 1" in out and "ledger 2" in out and "rejects 3" in out
    assert project.watermark() is None
    assert db_count(project, "tiktok_ledger") == 0 and db_count(project, "tiktok_rejects") == 0
    assert len(project.runs()) == runs  # history is kept
    [row] = json_lines(cli(capsys, "status", "--project", root, "--json")[1])
    assert row["watermark"] is None and row["ledger_size"] == 0 and row["unresolved_rejects"] == 0

    code, out, _ = cli(capsys, "sync", "--project", root, "--json")
    assert code == 0
    assert json_lines(out)[0]["events_sent"] == 2
    assert sorted(fake_tiktok.accepted_event_ids()) == ["ORD-00001", "ORD-00001", "ORD-00002", "ORD-00002"]


def test_reset_without_yes_and_without_a_tty(rejected_project, monkeypatch, capsys) -> None:
    project = rejected_project
    watermark = project.watermark()
    monkeypatch.setattr(sys, "stdin", io.StringIO("orders\n"))  # not a TTY: no prompt, even with input
    code, out, err = cli(capsys, "reset", "orders", "--project", str(project.root))
    assert code == 2
    assert "--yes" in one_line_error(err)
    assert project.watermark() == watermark and db_count(project, "tiktok_ledger") == 2

    done = subprocess.run([sys.executable, "-m", "connector", "reset", "orders", "--project", str(project.root)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--yes" in one_line_error(done.stderr)
    assert project.watermark() == watermark


class _TtyInput(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_reset_prompts_on_a_tty(rejected_project, monkeypatch, capsys) -> None:
    project = rejected_project
    watermark = project.watermark()
    monkeypatch.setattr(sys, "stdin", _TtyInput("nope\n"))
    code, out, err = cli(capsys, "reset", "orders", "--project", str(project.root))
    assert code == 1 and "not reset" in err
    assert "orders" in out  # the prompt names the sync
    assert project.watermark() == watermark

    monkeypatch.setattr(sys, "stdin", _TtyInput("orders\n"))
    code, out, _ = cli(capsys, "reset", "orders", "--project", str(project.root))
    assert code == 0 and "reset (" in out
    assert project.watermark() is None


# ---------------------------------------------------------------- unknown sync names


@pytest.mark.parametrize("argv", [
    ["check", "order"], ["preview", "order"], ["history", "order"], ["rejects", "order"],
    ["reset", "order", "--yes"], ["sync", "order"], ["retry", "order"],
    ["backfill", "order", "--start", "2024-01-01", "--end", "2024-01-02"],
], ids=lambda argv: argv[0])
def test_unknown_sync_name_exits_2(make_project, fake_tiktok, order, now, capsys, argv) -> None:
    project = make_project([order(1, now=now)])
    assert cli(capsys, "sync", "--project", str(project.root))[0] == 0
    watermark = project.watermark()
    code, out, err = cli(capsys, *argv, "--project", str(project.root))
    assert code == 2
    line = one_line_error(err)
    assert "'order'" in line and "did you mean 'orders'?" in line and "connector.yml" in line
    assert project.watermark() == watermark and db_count(project, "tiktok_ledger") == 1
    assert len(fake_tiktok.requests()) == 1


# ---------------------------------------------------------------- exit codes and option placement


def test_exit_codes_ok_partial_failed_config(make_project, fake_tiktok, order, now, capsys) -> None:
    # 2 of 4 rows rejected = 50%, above max_reject_rate 0.2: partial
    partial = make_project([order(1, now=now), order(2, now=now), order(3, now=now, currency="XYZ"),
                            order(4, now=now, currency="XYZ")], sync_overrides={"max_reject_rate": 0.2})
    code, out, _ = cli(capsys, "sync", "--project", str(partial.root), "--json")
    assert code == 3
    [report] = json_lines(out)
    assert report["status"] == "success" and report["health"] == "rejecting" and report["reject_rate"] == 0.5
    assert report["events_sent"] == 2 and partial.watermark() is not None

    # the same 50% under a laxer limit is a success; exactly at the limit is not "above" it
    lax = make_project([order(1, now=now), order(2, now=now, currency="XYZ")], sync_overrides={"max_reject_rate": 0.6})
    assert cli(capsys, "sync", "--project", str(lax.root))[0] == 0
    edge = make_project([order(n, now=now) for n in range(1, 5)] + [order(5, now=now, currency="XYZ")],
                        sync_overrides={"max_reject_rate": 0.2})
    assert cli(capsys, "sync", "--project", str(edge.root))[0] == 0

    failing = make_project([order(1, now=now)])
    fake_tiktok.fail_next(1000)
    code, out, err = cli(capsys, "sync", "--project", str(failing.root))
    assert code == 1
    assert "FAILED" in out and "Traceback" not in err
    fake_tiktok.reset()

    broken = make_project([order(1, now=now)], sync_overrides={"cursor": "changed_at"})
    code, out, err = cli(capsys, "sync", "--project", str(broken.root))
    assert code == 2
    assert "changed_at" in one_line_error(err)
    assert cli(capsys, "sync", "--project", str(broken.root / "missing"))[0] == 2


def test_a_failed_sync_wins_over_a_partial_one(make_project, fake_tiktok, order, now, capsys) -> None:
    project = make_project([order(1, now=now), order(2, now=now, currency="XYZ")])
    add_sync(project, "broken", query="broken.sql")
    (project.root / "queries" / "broken.sql").write_text("select * from no_such_table\n")
    code, out, _ = cli(capsys, "sync", "--project", str(project.root), "--json")
    assert code == 1
    assert [(r["sync"], r["health"]) for r in json_lines(out)] == [("orders", "rejecting"), ("broken", "failing")]


@pytest.mark.parametrize("argv", [
    ["--project", "{root}", "--json", "sync"],
    ["sync", "--project", "{root}", "--json"],
    ["--json", "sync", "--project", "{root}"],
    ["--project", "{root}", "sync", "orders", "--json"],
])
def test_options_before_or_after_the_command(make_project, fake_tiktok, order, now, tmp_path, monkeypatch, capsys,
                                             argv) -> None:
    project = make_project([order(1, now=now)])
    monkeypatch.chdir(tmp_path)  # no connector.yml here
    code, out, err = cli(capsys, *[a.format(root=project.root) for a in argv])
    assert code == 0, err
    [report] = json_lines(out)
    assert report["events_sent"] == 1

    for status_argv in (["--project", str(project.root), "status", "--json"],
                        ["status", "--json", "--project", str(project.root)]):
        code, out, _ = cli(capsys, *status_argv)
        assert code == 0
        assert json_lines(out)[0]["ledger_size"] == 1


def test_exit_codes_through_python_dash_m(make_project, fake_tiktok, order, now) -> None:
    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "connector", *argv], capture_output=True, text=True,
                              timeout=60, env=os.environ.copy(), stdin=subprocess.DEVNULL)

    partial = make_project([order(1, now=now), order(2, now=now, currency="XYZ")],
                           sync_overrides={"max_reject_rate": 0.2})
    done = run("--project", str(partial.root), "sync")
    assert done.returncode == 3, done.stderr
    assert "orders: PARTIAL" in done.stdout and "invalid_currency 1" in done.stdout
    assert "max_reject_rate crossed: 1 of 2 rows were invalid (50.0%" in done.stdout

    failing = make_project([order(1, now=now)])
    fake_tiktok.fail_next(1000)
    done = run("sync", "--project", str(failing.root), "--json")
    assert done.returncode == 1
    assert json_lines(done.stdout)[0]["status"] == "failed"
    assert "Traceback" not in done.stderr
    fake_tiktok.reset()

    done = run("status", "--project", str(failing.root / "nowhere"))
    assert done.returncode == 2
    assert "connector.yml" in one_line_error(done.stderr)
