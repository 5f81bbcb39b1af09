"""The real command line: in-process `connector.cli.main` with capsys, and `python -m connector` in a subprocess."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cli_helpers import cli

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "connector"
REPORT_KEYS = {"sync", "status", "rows_read", "events_sent", "events_rejected", "rejected_by_reason", "batches",
               "watermark"}


def json_reports(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def add_second_sync(project, name: str = "orders_again") -> None:
    path = project.root / "connector.yml"
    config = yaml.safe_load(path.read_text())
    config["syncs"][name] = dict(config["syncs"]["orders"])
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def test_sync_json_prints_one_object_per_sync(make_project, fake_tiktok, order, now, capsys) -> None:
    project = make_project([order(1, now=now), order(2, now=now), order(3, now=now, currency="XYZ")])
    add_second_sync(project)
    code, out, err = cli(capsys, "sync", "--project", str(project.root), "--json")
    assert code == 3, err  # partial: 1 of 3 rows rejected is above the default max_reject_rate (10%)
    reports = json_reports(out)
    assert [r["sync"] for r in reports] == ["orders", "orders_again"]
    assert {r["health"] for r in reports} == {"rejecting"}
    for report in reports:
        assert REPORT_KEYS <= set(report)
        assert report["status"] == "success"
        assert report["rows_read"] == 3
        assert report["events_sent"] == 2
        assert report["events_rejected"] == 1
        assert report["rejected_by_reason"] == {"invalid_currency": 1}
        assert report["batches"] == 1
        assert dt.datetime.fromisoformat(report["watermark"]) == order(3, now=now)["updated_at"]
    assert len(fake_tiktok.accepted()) == 4  # each sync keeps its own state

    code, out, _ = cli(capsys, "sync", "orders", "--project", str(project.root), "--json")
    assert code == 0
    [again] = json_reports(out)
    assert again["sync"] == "orders" and again["events_sent"] == 0


def test_sync_text_output(make_project, fake_tiktok, order, now, capsys) -> None:
    project = make_project([order(1, now=now)])
    code, out, err = cli(capsys, "sync", "--project", str(project.root))
    assert code == 0, err
    assert "orders: SUCCESS" in out
    assert fake_tiktok.accepted_event_ids() == ["ORD-00001"]


def test_failed_sync_exits_1_and_keeps_the_watermark(make_project, fake_tiktok, order, now, capsys) -> None:
    project = make_project([order(1, now=now)])
    assert cli(capsys, "sync", "--project", str(project.root))[0] == 0
    watermark = project.watermark()
    project.insert([order(2, now=now)])
    fake_tiktok.fail_next(n=1000)
    code, out, err = cli(capsys, "sync", "--project", str(project.root), "--json")
    assert code == 1
    [report] = json_reports(out)
    assert report["status"] == "failed"
    assert report["events_sent"] == 0
    assert report["watermark"] == watermark
    assert project.watermark() == watermark
    assert "Traceback" not in err

    fake_tiktok.reset()
    code, out, _ = cli(capsys, "sync", "--project", str(project.root), "--json")
    assert code == 0
    assert fake_tiktok.accepted_event_ids() == ["ORD-00002"]


def test_auth_error_is_clear_and_never_prints_the_token(make_project, fake_tiktok, order, now, monkeypatch,
                                                        capsys) -> None:
    secret = "s3cr3t-T0KEN-do-not-print"
    monkeypatch.setenv("TIKTOK_ACCESS_TOKEN", secret)
    project = make_project([order(1, now=now)])
    for flag in ([], ["--json"]):
        code, out, err = cli(capsys, "sync", "--project", str(project.root), *flag)
        assert code == 1
        assert "access token" in (out + err).lower()
        assert "40105" in out + err
        assert secret not in out + err
        assert "Traceback" not in err
    assert len(fake_tiktok.requests()) == 2  # one per run: no retries
    assert secret not in project.table_text("tiktok_runs")


def test_dry_run_sends_nothing_and_keeps_the_watermark(make_project, fake_tiktok, order, now, capsys) -> None:
    project = make_project([order(1, now=now), order(2, now=now)])
    code, out, _ = cli(capsys, "sync", "--project", str(project.root), "--dry-run", "--json")
    assert code == 0
    [report] = json_reports(out)
    assert report["status"] == "success"
    assert report["events_sent"] == 0
    assert report["events_to_send"] == 2
    assert fake_tiktok.stats["requests"] == 0
    assert project.watermark() is None

    assert cli(capsys, "sync", "--project", str(project.root))[0] == 0
    watermark = project.watermark()
    project.insert([order(3, now=now)])
    code, out, _ = cli(capsys, "sync", "--project", str(project.root), "--dry-run")
    assert code == 0
    assert "would send 1" in out
    assert len(fake_tiktok.requests()) == 1
    assert project.watermark() == watermark

    assert cli(capsys, "sync", "--project", str(project.root))[0] == 0
    assert sorted(fake_tiktok.accepted_event_ids()) == ["ORD-00001", "ORD-00002", "ORD-00003"]


def test_test_event_code_sends_test_events_and_leaves_state(make_project, fake_tiktok, order, now, capsys) -> None:
    project = make_project([order(1, now=now), order(2, now=now)])
    code, out, err = cli(capsys, "sync", "--project", str(project.root), "--test-event-code", "TEST123", "--json")
    assert code == 0, err
    [report] = json_reports(out)
    assert report["status"] == "success"
    assert report["events_sent"] == 2
    [request] = fake_tiktok.requests()
    assert request.body["test_event_code"] == "TEST123"
    assert all("test_event_code" not in event for event in request.body["data"])
    assert [e.test_event_code for e in fake_tiktok.test_events()] == ["TEST123", "TEST123"]
    assert fake_tiktok.accepted() == []
    assert project.watermark() is None
    assert project.count("tiktok_ledger") == 0

    # State was untouched, so the real sync sends everything.
    assert cli(capsys, "sync", "--project", str(project.root))[0] == 0
    assert sorted(fake_tiktok.accepted_event_ids()) == ["ORD-00001", "ORD-00002"]


def test_test_event_code_from_the_environment(make_project, fake_tiktok, order, now, monkeypatch, capsys) -> None:
    project = make_project([order(1, now=now)], tiktok={"test_event_code": "${TIKTOK_TEST_EVENT_CODE:-}"})
    monkeypatch.setenv("TIKTOK_TEST_EVENT_CODE", "TEST999")
    assert cli(capsys, "sync", "--project", str(project.root))[0] == 0
    assert [e.test_event_code for e in fake_tiktok.test_events()] == ["TEST999"]
    assert project.watermark() is None
    monkeypatch.delenv("TIKTOK_TEST_EVENT_CODE")
    assert cli(capsys, "sync", "--project", str(project.root))[0] == 0
    assert fake_tiktok.accepted_event_ids() == ["ORD-00001"]


def test_python_dash_m_help() -> None:
    done = subprocess.run([sys.executable, "-m", "connector", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert "usage: tiktok-connector" in done.stdout
    for command in ("sync", "demo"):
        assert command in done.stdout


def test_python_dash_m_sync(make_project, fake_tiktok, order, now) -> None:
    project = make_project([order(1, now=now), order(2, now=now)])
    done = subprocess.run([sys.executable, "-m", "connector", "sync", "--project", str(project.root), "--json"],
                          capture_output=True, text=True, timeout=60, env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    [report] = json_reports(done.stdout)
    assert report["status"] == "success" and report["events_sent"] == 2
    assert sorted(fake_tiktok.accepted_event_ids()) == ["ORD-00001", "ORD-00002"]


def test_demo_json(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIKTOK_")}
    done = subprocess.run([sys.executable, "-m", "connector", "demo", "--json", "--orders", "120",
                           "--project", str(tmp_path / "demo")], capture_output=True, text=True, timeout=120,
                          env=env)
    assert done.returncode == 0, done.stderr
    *reports, audience, audience_run = json_reports(done.stdout)
    assert len(reports) == 3
    assert audience["audience"] == "vip_buyers" and audience["members_added"] > 0  # its preview
    assert audience_run["audience"] == "vip_buyers" and audience_run["status"] == "success"
    assert audience_run["members_added"] == audience["members_added"]  # the run did what the preview said
    assert [r["status"] for r in reports] == ["success"] * 3
    assert reports[0]["events_sent"] > 0
    assert reports[1]["events_sent"] == 0  # nothing new
    assert reports[2]["events_sent"] > 0  # the late orders
    assert (tmp_path / "demo" / "connector.yml").is_file()


@pytest.mark.parametrize(("example", "packaged"), [
    ("connector.yml", "demo/connector.yml"),
    ("queries/purchases.sql", "demo/queries/purchases.sql"),
    ("queries/vip_buyers.sql", "demo/queries/vip_buyers.sql"),
    (".env.example", "demo/.env.example"),
    ("mappings/purchases.yml", "demo/mappings/purchases.yml"),
    ("mappings/amperity.yml", "mappings/amperity.yml"),
    (".tiktok-connector/connector.schema.json", "connector.schema.json"),  # what connector.yml points editors at
])
def test_example_project_matches_the_packaged_copy(example: str, packaged: str) -> None:
    assert (REPO / example).read_bytes() == (PACKAGE / packaged).read_bytes()


def test_options_before_the_command(make_project, fake_tiktok, order, now, tmp_path, monkeypatch, capsys) -> None:
    project = make_project([order(1, now=now)])
    monkeypatch.chdir(tmp_path)  # no connector.yml here
    code, out, err = cli(capsys, "--project", str(project.root), "--json", "sync")
    assert code == 0, err
    [report] = json_reports(out)
    assert report["events_sent"] == 1


def test_demo_works_when_a_real_token_is_exported(tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TIKTOK_")},
           "TIKTOK_ACCESS_TOKEN": "my-real-production-token"}
    done = subprocess.run([sys.executable, "-m", "connector", "demo", "--json", "--orders", "60",
                           "--project", str(tmp_path / "demo")], capture_output=True, text=True, timeout=120,
                          env=env)
    assert "Traceback" not in done.stderr
    assert done.returncode == 0
    assert [r["status"] for r in json_reports(done.stdout)[:3]] == ["success"] * 3


def test_version(capsys) -> None:
    code, out, _ = cli(capsys, "--version")
    assert code == 0 and out.startswith("tiktok-connector ") and out.strip() != "tiktok-connector unknown"
