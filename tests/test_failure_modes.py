"""How runs fail and what reading commands leave behind (issue 16, classes 5, 6, 10 and 11).

- A run whose warehouse connection is killed mid-run ends recorded `failed`, with one JSON report, no
  traceback and no SQL parameters on stderr, and the next run sends nothing twice; a killed process's run is
  marked `abandoned`.
- Values a warehouse error quotes never reach stdout, the runs table or the webhook (only `-v` shows them).
- The lease is renewed while a long query runs; `reset` refuses a sync a live run holds.
- `check`, `preview`, `status`, `history`, `rejects` and dry runs create and write nothing.

DuckDB and PostgreSQL (skipped when it is down), the fake TikTok, the real CLI or the Python API.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, example, given, settings, strategies as st

from cli_helpers import cli, json_lines
from connector.config import load_project
from connector.errors import SyncLocked, WarehouseError
from connector.runner import RunOptions, run_sync
from connector.state import StateStore
from connector.warehouse import open_warehouse
from delivery_helpers import MAPPING, PYTHON, REPO, cli_env
from warehouse_helpers import PG_DSN, SOURCE_ID, Target, fake_tiktok_env, postgres_target, write_project

UTC = dt.timezone.utc
SYNC = "orders"
PG_ORDERS = """create table orders (order_id varchar(40), event_name varchar(40), ordered_at timestamptz,
    updated_at timestamptz, email varchar(200), phone varchar(200), total numeric(12, 2), currency varchar(8))"""


def set_config(root: Path, change: Any) -> None:
    path = root / "connector.yml"
    config = yaml.safe_load(path.read_text())
    change(config)
    path.write_text(yaml.safe_dump(config, sort_keys=False))




@contextmanager
def pg_project(tmp_path: Path, rows: int, now: dt.datetime, query: str = "select * from orders\n",
               **sync: Any) -> Iterator[tuple[Path, Target, str]]:
    """A PostgreSQL project in a fresh schema; its connections carry a unique application_name."""
    with postgres_target() as target:
        target.run(PG_ORDERS)
        with target.session() as con:  # orders ORD-00000…, a tenth of a second apart, the last an hour ago
            con.execute("insert into orders select 'ORD-' || lpad(n::text, 5, '0'), 'purchase', "
                        "cast(? as timestamptz) - interval '1 day', "
                        "cast(? as timestamptz) - interval '1 hour' - (? - n) * interval '100 milliseconds', "
                        "'customer' || n || '@example.com', null, 19.99, 'USD' from generate_series(0, ?) as n",
                        [now, now, rows - 1, rows - 1])
        app = f"tt_{uuid.uuid4().hex[:10]}"
        target = dataclasses.replace(target, url=f"{target.url}&application_name={app}")
        root = write_project(tmp_path / "pg", target, {SYNC: {
            "query": "orders.sql", "mapping": "orders.yml", "event_source": "offline", "event_source_id": SOURCE_ID,
            "cursor": "updated_at", **sync}}, queries={"orders.sql": query}, mappings={"orders.yml": MAPPING})
        yield root, target, app


def pg_tables(target: Target) -> list[str]:
    return [r[0] for r in target.query("select table_name from information_schema.tables where table_schema = ?",
                                       [target.notes["schema"]])]


def duckdb_tables(project: Any) -> list[str]:
    return [r[0] for r in project.query("select table_name from duckdb_tables() where table_name like 'tiktok%'")]


def run_rows(query: Any) -> list[dict[str, Any]]:
    names = ("run_id", "status", "error", "finished_at", "owner")
    return [dict(zip(names, row)) for row in query(f"select {', '.join(names)} from tiktok_runs order by started_at")]


# ---------------------------------------------------------------- class 5: failed runs end recorded


def test_postgres_connections_killed_mid_run_end_recorded_and_nothing_is_sent_twice(tmp_path, capsys) -> None:
    now = dt.datetime.now(UTC)
    rows = 100_000  # more than a window of rows read ahead (runner.PAGE_ROWS // 2 and the chunks fetched
    # ahead of it): the read is still streaming when the connections are killed
    with pg_project(tmp_path, rows, now, batch_size=500) as (root, target, app), fake_tiktok_env() as server:
        set_config(root, lambda c: c["tiktok"].update(max_in_flight=1))
        server.latency = 0.1

        def kill_when_sending() -> None:
            deadline = time.monotonic() + 30
            while len(server.requests()) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            import psycopg2
            admin = psycopg2.connect(PG_DSN)
            admin.autocommit = True
            try:
                cur = admin.cursor()
                cur.execute("select pg_terminate_backend(pid) from pg_stat_activity where application_name = %s",
                            (app,))
                killed.extend(row[0] for row in cur.fetchall())
            finally:
                admin.close()

        killed: list[bool] = []
        killer = threading.Thread(target=kill_when_sending)
        killer.start()
        code, out, err = cli(capsys, "sync", "--project", str(root), "--json")
        killer.join()
        assert killed and all(killed)  # the run's connections (query and state) were terminated
        assert code == 1, out + err
        [report] = json_lines(out)
        assert report["status"] == "failed" and "OperationalError" in report["error"]
        assert "Traceback" not in err and "parameters" not in err.lower() and "ORD-" not in err, err
        [run] = run_rows(target.query)
        assert run["status"] == "failed" and run["error"] == report["error"] and run["finished_at"] is not None
        assert target.query("select count(*) from tiktok_leases") == [(0,)]
        first_run = Counter(server.accepted_event_ids())
        assert 0 < sum(first_run.values()) < rows

        server.latency = 0
        code, out, err = cli(capsys, "sync", "--project", str(root), "--json")
        assert code == 0, out + err
        accepted = Counter(server.accepted_event_ids())
        assert len(accepted) == rows and set(accepted.values()) == {1}  # every event, each sent once
        assert [r["status"] for r in run_rows(target.query)] == ["failed", "success"]


class DyingConnection:
    """A real state connection that stops working once `die` is set, as one the server closed."""

    def __init__(self, inner: Any, die: threading.Event) -> None:
        self.inner, self.die = inner, die

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if not callable(attribute) or name in ("in_values",):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.die.is_set():
                raise WarehouseError("DuckDB: Connection Error: connection closed")
            return attribute(*args, **kwargs)
        return call


class FirstConnectionDies:
    """A DuckDB warehouse whose first state connection dies when the fake server gets its first request."""

    def __init__(self, inner: Any, die: threading.Event) -> None:
        self.inner, self.die, self.dialect, self.connections = inner, die, inner.dialect, 0

    def connect(self) -> Any:
        self.connections += 1
        connection = self.inner.connect()
        return DyingConnection(connection, self.die) if self.connections == 1 else connection

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_run_whose_state_connection_died_is_recorded_on_a_new_one(make_project, fake_tiktok, order, now) -> None:
    project = make_project([order(n, now=now) for n in range(1, 6)], sync_overrides={"batch_size": 2})
    die = threading.Event()
    fake_tiktok.latency = 0.05
    config = load_project(project.root)
    warehouse = FirstConnectionDies(open_warehouse(config.warehouse_url), die)
    threading.Thread(target=lambda: (fake_tiktok_wait(fake_tiktok, 1), die.set()), daemon=True).start()
    try:
        report = run_sync(config, config.syncs[SYNC], RunOptions(), warehouse=warehouse)
    finally:
        warehouse.close()
    assert report.status == "failed" and "connection closed" in report.error
    assert warehouse.connections >= 2  # the lease keeper's and the one the outcome was recorded on
    [run] = run_rows(project.query)
    assert (run["status"], run["error"]) == ("failed", report.error)
    assert project.count("tiktok_leases") == 0


def fake_tiktok_wait(server: Any, requests: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(server.requests()) < requests and time.monotonic() < deadline:
        time.sleep(0.005)


def test_a_killed_run_is_shown_and_then_marked_abandoned(make_project, fake_tiktok, order, now, capsys) -> None:
    project = make_project([order(n, now=now) for n in range(1, 41)], sync_overrides={"batch_size": 2},
                           tiktok={"max_in_flight": 1})
    fake_tiktok.latency = 0.2
    proc = subprocess.Popen([PYTHON, "-m", "connector", "sync", "--project", str(project.root), "--json"],
                            env=cli_env(fake_tiktok.base_url), cwd=str(REPO), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        fake_tiktok_wait(fake_tiktok, 2)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    [killed] = run_rows(project.query)
    assert killed["status"] == "running" and killed["owner"].startswith(f"{socket.gethostname()}:{proc.pid}:")

    # Reading commands see that its process is gone, and write nothing.
    [shown] = json_lines(cli(capsys, "history", SYNC, "--project", str(project.root), "--json")[1])
    assert shown["status"] == "abandoned"
    [status] = json_lines(cli(capsys, "status", "--project", str(project.root), "--json")[1])
    assert status["health"] == "abandoned"
    assert run_rows(project.query)[0]["status"] == "running"

    fake_tiktok.latency = 0
    code, out, err = cli(capsys, "sync", "--project", str(project.root), "--json")
    assert code == 0, out + err
    [report] = json_lines(out)
    assert any("abandoned" in note for note in report["notes"])
    killed, finished = run_rows(project.query)
    assert killed["status"] == "abandoned" and killed["finished_at"] is not None and "abandoned" in killed["error"]
    assert finished["status"] == "success"
    code, out, _ = cli(capsys, "history", SYNC, "--project", str(project.root))
    assert code == 0 and "abandoned" in out and "running" not in out
    assert sorted(set(fake_tiktok.accepted_event_ids())) == [f"ORD-{n:05d}" for n in range(1, 41)]


def test_runs_from_before_owners_are_abandoned_once_older_than_a_lease(tmp_path) -> None:
    store = StateStore(open_warehouse(f"duckdb:///{tmp_path / 'state.duckdb'}").connect())
    store.ensure_tables()
    at = dt.datetime(2026, 11, 22, 12, 0)
    for run_id, started in (("old", at - dt.timedelta(hours=1)), ("recent", at - dt.timedelta(seconds=30))):
        store.conn.execute("insert into tiktok_runs (run_id, sync_name, mode, status, started_at) "
                           "values (:r, 'orders', 'sync', 'running', :t)", {"r": run_id, "t": started})
    store.conn.execute("insert into tiktok_runs (run_id, sync_name, mode, status, started_at, owner) "
                       "values ('owned', 'orders', 'sync', 'running', :t, 'otherhost:1:owned')", {"t": at})
    assert store.abandon_runs("orders", "thishost:2:me", at.replace(tzinfo=UTC), 600) == 2
    statuses = dict(store.conn.query("select run_id, status from tiktok_runs"))
    assert statuses == {"old": "abandoned", "recent": "running", "owned": "abandoned"}


# ---------------------------------------------------------------- class 6: quoted values in warehouse errors


class Webhook:
    def __init__(self) -> None:
        self.posts: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.posts.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


PHONES = st.builds(lambda cc, area, a, b: f"+{cc} ({area}) {a}-{b}", st.integers(1, 99), st.integers(100, 999),
                   st.integers(100, 999), st.integers(1000, 9999))
EMAILS = st.emails().map(lambda e: f"pii.{e}")
# Any text, between markers that no error message has and that keep it from casting to anything.
TEXTS = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1,
                max_size=40).map(lambda t: f"Zq{t}qZ")
CASTS = {"duckdb": ["integer", "date", "timestamptz", "decimal(10, 2)", "boolean", "uuid", "json"],
         "postgresql": ["integer", "date", "timestamptz", "numeric", "boolean", "uuid", "json"]}


def leaked(value: str, text: str) -> bool:
    """The value, or for marked texts either marker, is in `text`."""
    if value.startswith("Zq"):
        return "Zq" in text or "qZ" in text
    return value in text or value.lower() in text.lower()


def check_masked(root: Path, value: str, cast: str, set_value: Any, query_state: Any, clear_runs: Any,
                 webhook: Webhook, capsys: Any) -> None:
    (root / "queries" / "orders.sql").write_text(f"select * from orders\nwhere cast(phone as {cast}) is not null\n")
    set_value(value)
    clear_runs()  # so every failing run is a change of health, and alerts
    webhook.posts.clear()
    code, out, err = cli(capsys, "sync", "--project", str(root), "--json")
    assert code == 1, out + err
    [report] = json_lines(out)
    error = report["error"]
    # The query file, and the line of it the warehouse points at (line 2 holds the cast) when it points at one.
    assert report["status"] == "failed" and error.startswith(("queries/orders.sql: ", "queries/orders.sql line 2: "))
    assert "Error" in error  # the error class is kept
    # PostgreSQL names a bad JSON value in its DETAIL line only, which is not kept; every other error quotes it.
    assert "***" in error or error.endswith("invalid input syntax for type json"), error
    [(stored,)] = query_state("select error from tiktok_runs")
    assert stored == error
    [post] = webhook.posts
    for where, text in (("stdout", out), ("stderr", err), ("tiktok_runs.error", stored), ("webhook", post)):
        assert not leaked(value, text), f"{value!r} reached {where}: {text!r}"


def masking_property(root: Path, dialect: str, set_value: Any, query_state: Any, clear_runs: Any,
                     webhook: Webhook, capsys: Any) -> None:
    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(value=st.one_of(PHONES, EMAILS, TEXTS), cast=st.sampled_from(CASTS[dialect]))
    @example(value='Zq0000000\x80\x80\x80\x80\x80\x80\x80\x80𐀀𐀀𐀀𐀂\U00076540\U000f8ba5qZ', cast="json")
    @example(value="+1 (415) 555-0100", cast="integer")
    @example(value="Zqit's \"quoted\"\nLINE 1: select 1\n ^qZ", cast="date")
    @example(value="Zq'a'b'qZ", cast="json")
    def masked(value: str, cast: str) -> None:
        check_masked(root, value, cast, set_value, query_state, clear_runs, webhook, capsys)

    masked()


def test_values_quoted_by_duckdb_errors_reach_no_output_table_or_webhook(make_project, fake_tiktok, order, now,
                                                                         capsys) -> None:
    project = make_project([order(1, now=now)])
    webhook = Webhook()
    try:
        set_config(project.root, lambda c: c["syncs"][SYNC].update(alert_webhook_url=webhook.url))
        masking_property(project.root, "duckdb",
                         lambda value: project.query("update orders set phone = ?", [value]), project.query,
                         lambda: project.count("tiktok_runs") and project.query("delete from tiktok_runs"),
                         webhook, capsys)
        # -v shows the warehouse's own text on the terminal, and only there.
        project.query("update orders set phone = ?", ["+1 (415) 555-0100"])
        (project.root / "queries" / "orders.sql").write_text("select * from orders where cast(phone as integer) > 0\n")
        code, out, err = cli(capsys, "sync", "--project", str(project.root), "--json", "-v")
        assert code == 1 and "555-0100" not in out and "the warehouse's full error text (-v)" in err
        assert "Could not convert string '+1 (415) 555-0100'" in err
        assert "555-0100" not in project.table_text("tiktok_runs")
    finally:
        webhook.close()


def test_values_quoted_by_postgres_errors_reach_no_output_table_or_webhook(tmp_path, capsys) -> None:
    now = dt.datetime.now(UTC)
    webhook = Webhook()
    try:
        with pg_project(tmp_path, 1, now) as (root, target, _), fake_tiktok_env():
            set_config(root, lambda c: c["syncs"][SYNC].update(alert_webhook_url=webhook.url))
            masking_property(root, "postgresql", lambda value: update_pg(target, value), target.query,
                             lambda: "tiktok_runs" in pg_tables(target) and target.run("delete from tiktok_runs"),
                             webhook, capsys)
    finally:
        webhook.close()


def update_pg(target: Target, value: str) -> None:
    with target.session() as con:
        con.execute("update orders set phone = ?", [value])


# ---------------------------------------------------------------- class 10: leases


class SlowQueries:
    """A DuckDB warehouse whose queries take `seconds` longer: a long query, without burning the CPU."""

    def __init__(self, inner: Any, seconds: float) -> None:
        self.inner, self.seconds, self.dialect = inner, seconds, inner.dialect

    def stream(self, sql: str, params: dict[str, Any], chunk_size: int) -> Any:
        time.sleep(self.seconds)
        return self.inner.stream(sql, params, chunk_size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def second_run_during_the_first(start_first: Any, start_second: Any, after: float) -> tuple[Any, BaseException]:
    """Start the first run, then the second `after` seconds later; returns the first's report and what the
    second raised (or returned)."""
    first: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: first.update(report=start_first()))
    thread.start()
    time.sleep(after)
    try:
        second: Any = start_second()
    except SyncLocked as exc:
        second = exc
    thread.join(timeout=60)
    return first["report"], second


def test_the_lease_is_renewed_while_a_long_duckdb_query_runs(make_project, fake_tiktok, order, now) -> None:
    project = make_project([order(n, now=now) for n in range(1, 4)])
    config = load_project(project.root)
    ttl = 1.2
    slow = SlowQueries(open_warehouse(config.warehouse_url), 1.2)  # probe, page boundary and page: 3.6 s
    try:
        report, second = second_run_during_the_first(
            lambda: run_sync(config, config.syncs[SYNC], RunOptions(lease_ttl_seconds=ttl), warehouse=slow),
            lambda: run_sync(config, config.syncs[SYNC], RunOptions(lease_ttl_seconds=ttl)), after=2 * ttl)
    finally:
        slow.close()
    assert isinstance(second, SyncLocked), second  # the lease outlived its first TTL: it was renewed
    assert report.ok and report.events_sent == 3, report.error
    assert project.count("tiktok_leases") == 0 and len(project.runs()) == 1


def test_the_lease_is_renewed_while_a_long_postgres_query_runs(tmp_path) -> None:
    now = dt.datetime.now(UTC)
    query = "select o.* from orders o cross join (select pg_sleep(3)) as slow\n"
    with pg_project(tmp_path, 3, now, query=query) as (root, target, _), fake_tiktok_env():
        config = load_project(root)
        options = RunOptions(lease_ttl_seconds=1.0)
        report, second = second_run_during_the_first(lambda: run_sync(config, config.syncs[SYNC], options),
                                                      lambda: run_sync(config, config.syncs[SYNC], options), 2.0)
        assert isinstance(second, SyncLocked), second
        assert report.ok and report.events_sent == 3, report.error
        assert [r["status"] for r in run_rows(target.query)] == ["success"]


def add_lease(project: Any, owner: str, expires_in: float) -> None:
    at = dt.datetime.now(UTC).replace(tzinfo=None)
    project.query("insert into tiktok_leases values (?, ?, ?, ?)",
                  [SYNC, owner, at, at + dt.timedelta(seconds=expires_in)])


def test_reset_refuses_a_sync_a_live_run_holds(make_project, fake_tiktok, order, now, capsys) -> None:
    project = make_project([order(1, now=now)])
    root = str(project.root)
    assert cli(capsys, "sync", "--project", root)[0] == 0
    watermark = project.watermark()
    add_lease(project, "otherhost:4242:run1", 600)
    # While that run holds the lease, status shows a row of it as running, not abandoned.
    project.query("insert into tiktok_runs (run_id, sync_name, mode, status, started_at, owner) "
                  "values ('run1', ?, 'sync', 'running', now(), 'otherhost:4242:run1')", [SYNC])
    [status] = json_lines(cli(capsys, "status", "--project", root, "--json")[1])
    assert status["health"] == "running"

    code, out, err = cli(capsys, "reset", SYNC, "--yes", "--project", root)
    assert code == 1 and "otherhost:4242:run1" in err and "--force" in err and "Traceback" not in err
    assert project.watermark() == watermark and project.count("tiktok_leases") == 1
    code, out, err = cli(capsys, "reset", SYNC, "--yes", "--force", "--project", root)
    assert code == 0, err
    assert project.watermark() is None and project.count("tiktok_leases") == 0

    for owner, expires_in in (("otherhost:4242:run2", -1), (f"{socket.gethostname()}:{dead_pid()}:run3", 600)):
        add_lease(project, owner, expires_in)  # expired, or held by a process of this host that is gone
        code, _, err = cli(capsys, "reset", SYNC, "--yes", "--project", root)
        assert code == 0, err
        assert project.count("tiktok_leases") == 0


def dead_pid() -> int:
    proc = subprocess.Popen([PYTHON, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---------------------------------------------------------------- class 11: reading commands write nothing


def snapshot(root: Path) -> dict[str, str]:
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()}


READING = (("check",), ("preview", SYNC), ("status",), ("history", SYNC), ("rejects", SYNC), ("sync", "--dry-run"),
           ("sync", "--test-event-code", "TEST1"))


def test_reading_commands_create_and_write_nothing_on_duckdb(make_project, fake_tiktok, order, now, capsys) -> None:
    project = make_project([order(1, now=now), order(2, now=now, currency="XYZ")])
    root = str(project.root)
    for state in ("fresh", "synced"):
        before = snapshot(project.root)
        for argv in READING:
            code, out, err = cli(capsys, *argv, "--project", root)
            assert code in (0, 3), (argv, out, err)
        assert snapshot(project.root) == before, state  # no file added, none changed (not even the DuckDB file)
        if state == "fresh":
            assert duckdb_tables(project) == []
            assert "never run" in cli(capsys, "status", "--project", root)[1]
            assert cli(capsys, "sync", "--project", root)[0] == 3  # one of two rows rejected
    assert sorted(duckdb_tables(project)) == ["tiktok_audience_deletes", "tiktok_audience_members", "tiktok_audiences",
                                              "tiktok_leases", "tiktok_ledger", "tiktok_rejects", "tiktok_runs",
                                              "tiktok_state_version", "tiktok_watermarks"]
    [rejects] = json_lines(cli(capsys, "rejects", SYNC, "--project", root, "--json")[1])
    assert rejects["by_reason"] == {"invalid_currency": 1}


def test_a_mistyped_duckdb_path_creates_no_file(make_project, fake_tiktok, order, now, capsys) -> None:
    project = make_project([order(1, now=now)])
    set_config(project.root, lambda c: c["warehouse"].update(url="duckdb:///warehuose.duckdb"))
    before = snapshot(project.root)
    code, out, err = cli(capsys, "check", "--project", str(project.root))
    assert code == 2 and "warehuose.duckdb does not exist" in out and "warehouse.url" in out, out + err
    code, out, err = cli(capsys, "preview", SYNC, "--project", str(project.root))
    assert code == 2 and "does not exist" in err
    code, out, _ = cli(capsys, "status", "--project", str(project.root))
    assert code == 0 and "never run" in out
    for argv in (("history", SYNC), ("rejects", SYNC), ("sync", "--dry-run")):
        assert cli(capsys, *argv, "--project", str(project.root))[0] in (0, 2)
    assert snapshot(project.root) == before and not (project.root / "warehuose.duckdb").exists()


def test_reading_a_duckdb_file_another_process_writes_says_so(make_project, fake_tiktok, order, now, capsys) -> None:
    project = make_project([order(1, now=now)])
    holder = subprocess.Popen([PYTHON, "-c", "import duckdb, sys, time\n"
                               f"con = duckdb.connect({str(project.db)!r})\nprint('open', flush=True)\n"
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        code, out, err = cli(capsys, "status", "--project", str(project.root))
        assert code == 1 and "open for writing in another process" in err and "Traceback" not in err
        assert f"PID {holder.pid}" in err
    finally:
        holder.kill()
        holder.wait()


def test_reading_commands_create_nothing_on_postgres(tmp_path, capsys) -> None:
    now = dt.datetime.now(UTC)
    with pg_project(tmp_path, 2, now) as (root, target, _), fake_tiktok_env():
        for argv in READING:
            code, out, err = cli(capsys, *argv, "--project", str(root))
            assert code == 0, (argv, out, err)
        assert pg_tables(target) == ["orders"]
        assert "never run" in cli(capsys, "status", "--project", str(root))[1]
        assert cli(capsys, "sync", "--project", str(root))[0] == 0
        assert "tiktok_runs" in pg_tables(target)
        [status] = json_lines(cli(capsys, "status", "--project", str(root), "--json")[1])
        assert status["health"] == "ok" and status["ledger_size"] == 2
