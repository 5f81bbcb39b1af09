"""Alerts to a webhook, terminal output (logs, quiet, progress, colour) and the Python API, through the real CLI.

The webhook is a small http.server on 127.0.0.1 started per test; TikTok is the fake server; warehouses are
real DuckDB files.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import pty
import select
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

import connector
from connector import RunOptions, SyncReport, load_project, run_sync, sync
from connector.output import Progress
from cli_helpers import assert_no_plain_pii, cli, json_lines

TOKEN = "test-token"
COUNT_KEYS = ("status", "health", "rows_read", "events_sent", "events_rejected", "rejected_by_reason",
              "duplicates_skipped", "batches", "retries", "events_outside_window", "reject_rate", "watermark_before",
              "watermark")


# ---------------------------------------------------------------- a webhook receiver


class Receiver:
    def __init__(self) -> None:
        self.posts: list[dict] = []
        self.raw: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.status = 200
        self.lock = threading.Lock()
        self.url = ""

    def record(self, headers: dict[str, str], body: bytes) -> None:
        with self.lock:
            self.headers.append(headers)
            self.raw.append(body)
            self.posts.append(json.loads(body))


@pytest.fixture
def webhook():
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        timeout = 5

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path == "/hook":
                receiver.record(dict(self.headers), body)
            self.send_response(receiver.status if self.path == "/hook" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_no_pii(post: dict, *secrets: str) -> None:
    text = json.dumps(post).lower()
    assert_no_plain_pii(text)
    assert TOKEN not in text
    for secret in secrets:
        assert secret.lower() not in text


# ---------------------------------------------------------------- alerts


def test_alert_once_when_failing_nothing_while_still_failing_then_recovered(make_project, fake_tiktok, order, now,
                                                                          webhook, capsys) -> None:
    project = make_project([order(1, now=now)], sync_overrides={"alert_webhook_url": webhook.url})
    root = str(project.root)
    assert cli(capsys, "sync", "--project", root)[0] == 0
    assert webhook.posts == []  # healthy from the start: nothing to say

    project.insert([order(2, now=now)])
    fake_tiktok.fail_next(1000)
    code, out, _ = cli(capsys, "sync", "--project", root, "--json")
    assert code == 1
    [report] = json_lines(out)
    [alert] = webhook.posts
    assert alert["sync"] == "orders" and alert["health"] == "failing" and alert["previous_health"] == "ok"
    assert "orders" in alert["text"] and report["error"] in alert["text"]
    assert alert["events_sent"] == 0 and alert["events_rejected"] == 0 and alert["rejected_by_reason"] == {}
    assert alert["run_id"] == report["run_id"] and alert["watermark"] == report["watermark"]
    assert_no_pii(alert)
    assert not any("access-token" in k.lower() for k in webhook.headers[0])
    assert webhook.headers[0]["Content-Type"].startswith("application/json")

    project.insert([order(3, now=now)])
    assert cli(capsys, "sync", "--project", root)[0] == 1
    assert len(webhook.posts) == 1  # still failing: no second alert

    fake_tiktok.reset()
    assert cli(capsys, "sync", "--project", root)[0] == 0
    assert len(webhook.posts) == 2
    recovered = webhook.posts[1]
    assert recovered["health"] == "ok" and recovered["previous_health"] == "failing"
    assert "recovered" in recovered["text"]
    assert recovered["events_sent"] == 2
    assert_no_pii(recovered)

    assert cli(capsys, "sync", "--project", root)[0] == 0
    assert len(webhook.posts) == 2  # healthy again: quiet


def test_alert_when_rejecting_above_max_reject_rate(make_project, fake_tiktok, order, now, webhook, capsys) -> None:
    project = make_project([order(1, now=now), order(2, now=now), order(3, now=now, currency="XYZ"),
                            order(4, now=now, currency="XYZ")],
                           sync_overrides={"alert_webhook_url": webhook.url, "max_reject_rate": 0.2})
    root = str(project.root)
    code, out, _ = cli(capsys, "sync", "--project", root, "--json")
    assert code == 3
    [alert] = webhook.posts
    assert alert["health"] == "rejecting" and alert["previous_health"] is None
    assert alert["reject_rate"] == 0.5
    assert alert["events_sent"] == 2 and alert["events_rejected"] == 2
    assert alert["rejected_by_reason"] == {"invalid_currency": 2}
    assert "50.0%" in alert["text"]
    assert_no_pii(alert)

    project.insert([order(5, now=now), order(6, now=now, currency="XYZ")])
    assert cli(capsys, "sync", "--project", root)[0] == 3
    assert len(webhook.posts) == 1  # still rejecting

    project.insert([order(7, now=now)])
    assert cli(capsys, "sync", "--project", root)[0] == 0
    assert [p["health"] for p in webhook.posts] == ["rejecting", "ok"]


def test_alert_never_carries_the_access_token(make_project, fake_tiktok, order, now, webhook, monkeypatch,
                                              capsys) -> None:
    secret = "pr0d-S3CRET-token-value"
    monkeypatch.setenv("TIKTOK_ACCESS_TOKEN", secret)
    project = make_project([order(1, now=now)], sync_overrides={"alert_webhook_url": webhook.url})
    assert cli(capsys, "sync", "--project", str(project.root))[0] == 1
    [alert] = webhook.posts
    assert alert["health"] == "failing" and "40105" in alert["text"]
    assert_no_pii(alert, secret)
    assert secret not in repr(webhook.headers)


def test_alert_url_as_a_top_level_default(make_project, fake_tiktok, order, now, webhook, capsys) -> None:
    project = make_project([order(1, now=now), order(2, now=now, currency="XYZ")])
    path = project.root / "connector.yml"
    config = yaml.safe_load(path.read_text())
    config["alert_webhook_url"] = webhook.url
    path.write_text(yaml.safe_dump(config))
    assert cli(capsys, "sync", "--project", str(project.root))[0] == 3
    assert [p["health"] for p in webhook.posts] == ["rejecting"]


def test_dry_runs_and_test_events_never_alert(make_project, fake_tiktok, order, now, webhook, capsys) -> None:
    project = make_project([order(1, now=now), order(2, now=now, currency="XYZ")],
                           sync_overrides={"alert_webhook_url": webhook.url})
    root = str(project.root)
    assert cli(capsys, "sync", "--dry-run", "--project", root)[0] == 3
    fake_tiktok.fail_next(1000)
    assert cli(capsys, "sync", "--test-event-code", "TEST1", "--project", root)[0] == 1
    fake_tiktok.reset()
    assert cli(capsys, "check", "--project", root)[0] == 0
    assert cli(capsys, "preview", "orders", "--project", root)[0] == 0
    assert webhook.posts == []


def test_an_unreachable_webhook_never_fails_the_sync(make_project, fake_tiktok, order, now, capsys) -> None:
    url = f"http://127.0.0.1:{closed_port()}/hook"
    project = make_project([order(1, now=now), order(2, now=now, currency="XYZ")],
                           sync_overrides={"alert_webhook_url": url})
    started = time.monotonic()
    code, out, err = cli(capsys, "sync", "--project", str(project.root), "--json")
    assert code == 3  # the reject rate decides, not the webhook
    [report] = json_lines(out)
    assert report["status"] == "success" and report["events_sent"] == 1
    assert any("could not be reached" in note for note in report["notes"])
    assert project.watermark() is not None
    assert "Traceback" not in err

    project.insert([order(3, now=now)])
    fake_tiktok.fail_next(1000)
    code, out, err = cli(capsys, "sync", "--project", str(project.root), "--json")
    assert code == 1
    [report] = json_lines(out)
    assert report["status"] == "failed" and "Traceback" not in err
    assert time.monotonic() - started < 20


def test_a_webhook_answering_500_is_a_note(make_project, fake_tiktok, order, now, webhook, capsys) -> None:
    webhook.status = 500
    project = make_project([order(1, now=now), order(2, now=now, currency="XYZ")],
                           sync_overrides={"alert_webhook_url": webhook.url})
    code, out, _ = cli(capsys, "sync", "--project", str(project.root))
    assert code == 3
    assert "answered HTTP 500" in out
    assert len(webhook.posts) == 1


def test_a_run_skipped_by_the_lease_does_not_alert(make_project, fake_tiktok, order, now, webhook, capsys) -> None:
    project = make_project([order(1, now=now)], sync_overrides={"alert_webhook_url": webhook.url})
    root = str(project.root)
    assert cli(capsys, "sync", "--project", root)[0] == 0
    project.query("insert into tiktok_leases values ('orders', 'another-host:1:run', now(), now() + interval 1 hour)")
    code, _, err = cli(capsys, "sync", "--project", root)
    assert code == 0 and "skipped" in err
    assert webhook.posts == []


def test_a_configuration_error_does_not_alert_on_every_run(make_project, fake_tiktok, order, now, webhook,
                                                           default_mapping, capsys) -> None:
    project = make_project([order(1, now=now)], mapping=default_mapping,
                           sync_overrides={"alert_webhook_url": webhook.url})
    root = str(project.root)
    assert cli(capsys, "sync", "--project", root)[0] == 0
    default_mapping["fields"]["user.email"] = "email_address"
    (project.root / "mappings" / "orders.yml").write_text(yaml.safe_dump(default_mapping))
    assert cli(capsys, "sync", "--project", root)[0] == 2
    assert cli(capsys, "sync", "--project", root)[0] == 2
    assert len(webhook.posts) <= 1
    assert all("None" not in post["text"] for post in webhook.posts)


# ---------------------------------------------------------------- logs and quiet


def test_json_logs_on_stderr_and_the_report_on_stdout(make_project, fake_tiktok, order, now, capsys) -> None:
    project = make_project([order(1, now=now), order(2, now=now)])
    code, out, err = cli(capsys, "--log-format", "json", "-v", "sync", "--project", str(project.root))
    assert code == 0
    [summary] = json_lines(out)  # the human summary, as one JSON record (dbt's convention)
    assert summary["message"].startswith("orders: SUCCESS") and summary["data"]["events_sent"] == 2
    entries = [json.loads(line) for line in err.splitlines()]
    assert entries, "-v logs at INFO"
    assert all({"level", "message", "time", "logger"} <= set(e) for e in entries)
    for entry in [summary, *entries]:  # ISO 8601 with a date and the UTC offset
        assert dt.datetime.fromisoformat(entry["time"]).utcoffset() == dt.timedelta(0), entry["time"]
    assert any(e["level"] == "INFO" and "reading rows" in e["message"] for e in entries)
    assert any(e["level"] == "INFO" and "2 events sent" in e["message"] for e in entries)

    project.insert([order(3, now=now)])
    code, out, err = cli(capsys, "sync", "--project", str(project.root), "--json", "--log-format", "json", "-vv")
    assert code == 0
    [report] = json_lines(out)  # stdout: only the report
    assert report["events_sent"] == 1
    entries = [json.loads(line) for line in err.splitlines()]
    assert any(e["level"] == "DEBUG" for e in entries)


def test_json_logs_with_python_dash_m(make_project, fake_tiktok, order, now) -> None:
    project = make_project([order(1, now=now)])
    fake_tiktok.fail_next(1)  # one retry: a WARNING line
    done = subprocess.run([sys.executable, "-m", "connector", "--log-format", "json", "-v", "sync", "--project",
                           str(project.root)], capture_output=True, text=True, timeout=60, env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    [summary] = json_lines(done.stdout)
    assert summary["message"].startswith("orders: SUCCESS")
    entries = [json.loads(line) for line in done.stderr.splitlines()]
    assert {"WARNING", "INFO"} <= {e["level"] for e in entries}
    assert any("retrying" in e["message"] for e in entries if e["level"] == "WARNING")
    assert TOKEN not in done.stderr


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="VmHWM is Linux's")
def test_peak_rss_is_the_runs_own_not_the_larger_parents(make_project, fake_tiktok, order, now) -> None:
    """A scheduler's worker that starts the CLI may be far larger than the run: getrusage() in the child
    reports the parent's peak then, and the report must not."""
    project = make_project([order(1, now=now)])
    ballast = bytearray(400 * 1024 * 1024)
    for page in range(0, len(ballast), 4096):
        ballast[page] = 1  # resident, not just reserved
    done = subprocess.run([sys.executable, "-m", "connector", "--json", "sync", "--project", str(project.root)],
                          capture_output=True, text=True, timeout=60, env=os.environ.copy())
    del ballast
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["events_sent"] == 1
    assert 20 < report["peak_rss_mb"] < 350, report["peak_rss_mb"]


def test_quiet_prints_nothing_on_stderr_for_a_successful_run(make_project, fake_tiktok, order, now, capsys) -> None:
    project = make_project([order(1, now=now)])
    fake_tiktok.fail_next(1)
    code, out, err = cli(capsys, "sync", "--project", str(project.root))
    assert code == 0 and "retrying" in err  # without --quiet the retry is logged

    project.insert([order(2, now=now)])
    fake_tiktok.fail_next(1)
    code, out, err = cli(capsys, "sync", "--quiet", "--project", str(project.root))
    assert code == 0
    assert err == "" and out == ""  # -q: errors only, and a successful run has none

    project.insert([order(3, now=now)])
    fake_tiktok.fail_next(1)
    done = subprocess.run([sys.executable, "-m", "connector", "-q", "sync", "--project", str(project.root)],
                          capture_output=True, text=True, timeout=60, env=os.environ.copy())
    assert done.returncode == 0
    assert done.stderr == "" and done.stdout == ""
    assert sorted(fake_tiktok.accepted_event_ids()) == ["ORD-00001", "ORD-00002", "ORD-00003"]


# ---------------------------------------------------------------- progress


class TtyStream(io.StringIO):
    def isatty(self) -> bool:
        return True


def _report(rows: int, sent: int) -> SyncReport:
    return SyncReport(sync="orders", rows_read=rows, events_sent=sent)


def test_progress_on_a_plain_stream_writes_lines() -> None:
    stream = io.StringIO()
    progress = Progress(stream, interval=0)
    progress(_report(1000, 900))
    progress(_report(2500, 2400))
    progress.done()
    text = stream.getvalue()
    lines = text.splitlines()
    assert len(lines) == 2 and text.endswith("\n")
    assert "rows read 1,000" in lines[0] and "events sent 2,400" in lines[1]
    assert "\r" not in text and "\033[" not in text

    quiet = io.StringIO()
    default = Progress(quiet)  # not a terminal: a line every 10 s, none right away
    default(_report(1, 1))
    assert quiet.getvalue() == ""


def test_progress_on_a_terminal_redraws_one_line() -> None:
    stream = TtyStream()
    progress = Progress(stream, interval=0)
    progress(_report(1000, 900))
    progress(_report(2500, 2400))
    text = stream.getvalue()
    assert text.count("\r\033[K") == 2 and "\n" not in text
    assert text.rsplit("\r\033[K", 1)[1].startswith("orders: rows read 2,500")
    progress.done()
    assert stream.getvalue().endswith("\r\033[K")  # the line is cleared at the end

    first = TtyStream()
    Progress(first)(_report(5, 5))  # a terminal draws at once
    assert first.getvalue().startswith("\r\033[K")


# ---------------------------------------------------------------- colour


def test_no_colour_codes_when_stdout_is_not_a_tty(make_project, fake_tiktok, order, now, capsys, tmp_path) -> None:
    project = make_project([order(1, now=now), order(2, now=now, currency="XYZ")])
    root = str(project.root)
    outputs = [cli(capsys, *argv)[1] for argv in (
        ["check", "--project", root], ["preview", "orders", "--project", root], ["sync", "--project", root],
        ["status", "--project", root], ["history", "orders", "--project", root],
        ["rejects", "orders", "--project", root])]
    assert all(outputs)
    assert not any("\033[" in out for out in outputs)

    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"} | {"TERM": "xterm"}
    for argv in (["status"], ["sync"]):
        done = subprocess.run([sys.executable, "-m", "connector", *argv, "--project", root], capture_output=True,
                              text=True, timeout=60, env=env)
        assert done.returncode == 0, done.stderr
        assert done.stdout and "\033[" not in done.stdout and "\033[" not in done.stderr


def _run_on_a_tty(argv: list[str], env: dict[str, str], timeout: float = 30) -> tuple[int, str]:
    """Run argv with stdout on a pseudo-terminal; return the exit code and what the terminal showed."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(argv, stdout=slave, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env)
    finally:
        os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, b"".join(chunks).decode(errors="replace")


def test_colour_codes_on_a_terminal_unless_no_color(make_project, fake_tiktok, order, now) -> None:
    """The other side of the rule above, so the absence of colour means something."""
    project = make_project([order(1, now=now)])
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"} | {"TERM": "xterm"}
    argv = [sys.executable, "-m", "connector", "status", "--project", str(project.root)]
    code, shown = _run_on_a_tty(argv, env)
    assert code == 0 and "SYNC" in shown and "\033[1m" in shown
    code, shown = _run_on_a_tty(argv, env | {"NO_COLOR": "1"})
    assert code == 0 and "SYNC" in shown and "\033[" not in shown
    code, shown = _run_on_a_tty(argv, env | {"TERM": "dumb"})
    assert code == 0 and "\033[" not in shown


def test_no_colour_when_stdout_is_redirected_in_process(make_project, fake_tiktok, order, now, tmp_path) -> None:
    project = make_project([order(1, now=now)])
    result = tmp_path / "result.json"
    script = (
        "import contextlib, io, json, sys\n"
        "from connector.cli import main\n"
        "buffer = io.StringIO()\n"
        "with contextlib.redirect_stdout(buffer):\n"
        f"    code = main(['status', '--project', {str(project.root)!r}])\n"
        f"open({str(result)!r}, 'w').write(json.dumps({{'code': code, 'out': buffer.getvalue()}}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"} | {"TERM": "xterm"}
    code, _ = _run_on_a_tty([sys.executable, "-c", script], env)
    assert code == 0
    captured = json.loads(result.read_text())
    assert captured["code"] == 0 and "SYNC" in captured["out"]
    assert "\033[" not in captured["out"]


# ---------------------------------------------------------------- the Python API


def test_python_api_matches_the_cli_json(make_project, fake_tiktok, order, now, capsys) -> None:
    assert connector.sync is sync and callable(run_sync) and callable(load_project)
    rows = [order(1, now=now), order(2, now=now), order(3, now=now, currency="XYZ"),
            order(4, now=now, email=None, phone=None), order(5, now=now, ordered_at=now - dt.timedelta(days=40))]
    by_cli, by_api = make_project(rows), make_project(rows)

    code, out, _ = cli(capsys, "sync", "orders", "--project", str(by_cli.root), "--json")
    [cli_report] = json_lines(out)
    reports = sync(by_api.root, ["orders"])
    assert code == 3
    [report] = reports
    assert isinstance(report, SyncReport) and report.ok
    api_report = json.loads(json.dumps(report.to_dict(), default=str))
    assert set(api_report) == set(cli_report)
    for key in COUNT_KEYS:
        assert api_report[key] == cli_report[key], key
    assert cli_report["events_sent"] == 2
    assert cli_report["rejected_by_reason"] == {"event_too_old": 1, "invalid_currency": 1, "no_match_keys": 1}
    assert report.events_sent == 2 and report.events_rejected == 3 and report.health_label == "rejecting"
    assert by_api.watermark() == by_cli.watermark()

    # the same again: nothing new, through both
    code, out, _ = cli(capsys, "sync", "--project", str(by_cli.root), "--json")
    [again] = sync(str(by_api.root))
    assert json_lines(out)[0]["events_sent"] == again.events_sent == 0
    assert json_lines(out)[0]["duplicates_skipped"] == again.duplicates_skipped

    project = load_project(by_api.root)
    dry = run_sync(project, project.syncs["orders"], RunOptions(dry_run=True))
    assert dry.ok and dry.events_sent == 0 and dry.dry_run
    assert sorted(fake_tiktok.accepted_event_ids()) == ["ORD-00001", "ORD-00001", "ORD-00002", "ORD-00002"]


def test_python_api_failures(make_project, fake_tiktok, order, now) -> None:
    project = make_project([order(1, now=now)])
    with pytest.raises(connector.ConfigError) as exc:
        sync(project.root, ["nope"])
    assert "nope" in str(exc.value)
    fake_tiktok.fail_next(1000)
    [report] = sync(project.root)
    assert not report.ok and report.status == "failed" and report.error
    assert report.health_label == "failing"
    assert project.watermark() is None


def test_errors_raised_outside_a_command_print_neither_a_traceback_nor_their_text(capsys) -> None:
    """A driver that raises while it cleans up after a lost connection (psycopg2 printed the COPY row it was
    sending), a thread, a finalizer: while a command runs, such errors reach the debug log by class only."""
    import gc
    import threading

    from connector.output import redacted_output

    class Finalizer:
        def __del__(self) -> None:
            raise ValueError("ORD-00731 customer@example.com")

    def thread() -> None:
        raise RuntimeError("ORD-00732 customer@example.com")

    with redacted_output():
        worker = threading.Thread(target=thread)
        worker.start()
        worker.join()
        Finalizer()
        gc.collect()
        try:
            raise ConnectionError("ORD-00733")
        except ConnectionError:
            sys.excepthook(*sys.exc_info())  # what a C extension's PyErr_Print calls
    err = capsys.readouterr().err
    assert "ORD-" not in err and "Traceback" not in err and "example.com" not in err, err
