"""Whole syncs on a DuckDB file against the fake TikTok: batching, incremental reads, state and failures."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter

import pytest

from connector.testing.fake_tiktok import FakeTikTok

UTC = dt.timezone.utc
NOW = dt.datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
SET_A, SET_B = "7000000000000000001", "7000000000000000002"


def cursor(text: str | None) -> dt.datetime | None:
    return None if text is None else dt.datetime.fromisoformat(text)


# ---------------------------------------------------------------- batching

@pytest.mark.parametrize(("count", "sizes"), [(999, [999]), (1000, [1000]), (1001, [1000, 1])])
def test_batches_of_at_most_1000(make_project, fake_tiktok, order, count, sizes) -> None:
    project = make_project([order(n) for n in range(1, count + 1)])
    report = project.run()
    assert report.ok, report.error
    # batches may be in flight together (tiktok.max_in_flight), so arrival order is not fixed
    assert sorted(r.event_count for r in fake_tiktok.requests()) == sorted(sizes)
    assert report.batches == len(sizes)
    assert report.events_sent == count
    ids = fake_tiktok.accepted_event_ids()
    assert len(ids) == len(set(ids)) == count


@pytest.mark.parametrize("batch_size", [1000, 2])
def test_event_source_ids_never_share_a_request(make_project, fake_tiktok, order, default_mapping,
                                                batch_size) -> None:
    default_mapping["fields"]["event_source_id"] = "source_id"
    rows = [order(n, source_id=SET_A if n % 3 else SET_B) for n in range(1, 12)]
    project = make_project(rows, mapping=default_mapping, sync_overrides={"batch_size": batch_size},
                           ddl=["alter table orders add column source_id varchar"])
    report = project.run()
    assert report.ok, report.error
    source_of = {row["order_id"]: row["source_id"] for row in rows}
    sent_with: dict[str, str] = {}
    for request in fake_tiktok.requests():
        body = request.body
        assert 1 <= len(body["data"]) <= batch_size
        for event in body["data"]:
            sent_with[event["event_id"]] = body["event_source_id"]
    assert sent_with == source_of
    assert len(fake_tiktok.requests()) == (2 if batch_size == 1000 else 4 + 2)  # A: 8 events, B: 3 events
    assert project.watermark() is not None and cursor(project.watermark()) == rows[-1]["updated_at"]


def test_sync_level_event_source_id_is_the_default(make_project, fake_tiktok, order, default_mapping) -> None:
    default_mapping["fields"]["event_source_id"] = "source_id"
    rows = [order(1, source_id=SET_A), order(2, source_id=None)]
    project = make_project(rows, mapping=default_mapping, ddl=["alter table orders add column source_id varchar"])
    project.run()
    assert {e.event["event_id"]: e.event_source_id for e in fake_tiktok.accepted()} == {
        "ORD-00001": SET_A, "ORD-00002": "7654321098765432109"}


# ---------------------------------------------------------------- incremental runs

def test_incremental_runs_send_each_event_once(make_project, fake_tiktok, order) -> None:
    tie_time = NOW - dt.timedelta(minutes=30, microseconds=-123_456)  # sub-second precision on purpose
    first_rows = [order(n) for n in range(1, 5)] + [order(5, updated_at=tie_time)]
    project = make_project(first_rows)

    first = project.run()
    assert first.ok and first.events_sent == 5
    assert cursor(project.watermark()) == tie_time
    assert first.watermark is not None and cursor(first.watermark) == tie_time

    second = project.run()
    assert second.ok, second.error
    assert second.events_sent == 0
    assert second.batches == 0
    assert len(fake_tiktok.requests()) == 1  # nothing new reached the server
    assert cursor(project.watermark()) == tie_time

    project.insert([
        order(6, updated_at=tie_time),  # the same cursor as the previous run's highest
        order(7, updated_at=tie_time + dt.timedelta(microseconds=1)),
        order(8, updated_at=NOW - dt.timedelta(minutes=5)),
    ])
    third = project.run()
    assert third.ok, third.error
    assert third.events_sent == 3
    counts = Counter(fake_tiktok.accepted_event_ids())
    assert counts == Counter({f"ORD-{n:05d}": 1 for n in range(1, 9)})
    assert cursor(project.watermark()) == NOW - dt.timedelta(minutes=5)

    runs = project.runs()
    assert [r["status"] for r in runs] == ["success"] * 3
    assert [r["events_sent"] for r in runs] == [5, 0, 3]
    assert [r["events_rejected"] for r in runs] == [0, 0, 0]
    assert [r["batches"] for r in runs] == [1, 0, 1]
    assert runs[0]["rows_read"] == 5
    assert runs[2]["rows_read"] >= 3
    assert cursor(runs[0]["watermark_before"]) is None
    assert cursor(runs[0]["watermark_after"]) == tie_time
    assert cursor(runs[2]["watermark_before"]) == tie_time
    assert cursor(runs[2]["watermark_after"]) == NOW - dt.timedelta(minutes=5)
    assert all(r["finished_at"] is not None for r in runs)


def test_empty_query_result(make_project, fake_tiktok) -> None:
    project = make_project([])
    report = project.run()
    assert report.ok, report.error
    assert (report.rows_read, report.events_sent, report.batches) == (0, 0, 0)
    assert fake_tiktok.stats["requests"] == 0
    assert project.watermark() is None
    assert [r["status"] for r in project.runs()] == ["success"]


def test_watermark_table_names_sync_and_cursor(make_project, fake_tiktok, order) -> None:
    project = make_project([order(1), order(2)])
    project.run()
    [(sync_name, cursor_column, watermark)] = project.query(
        "select sync_name, cursor_column, watermark from tiktok_watermarks")
    assert (sync_name, cursor_column) == ("orders", "updated_at")
    assert cursor(watermark) == order(2)["updated_at"]


def test_rejected_counts_in_runs_table(make_project, fake_tiktok, order) -> None:
    project = make_project([order(1), order(2, currency="XYZ"), order(3, email=None, phone=None)])
    report = project.run()
    [run] = project.runs()
    assert run["status"] == "success"
    assert run["events_sent"] == 1
    assert run["events_rejected"] == 2
    assert json.loads(run["rejected_by_reason"]) == {"invalid_currency": 1, "no_match_keys": 1}
    assert run["run_id"] == report.run_id


def test_integer_cursor(make_project, fake_tiktok, order) -> None:
    project = make_project([order(n, seq=n * 10) for n in range(1, 4)], sync_overrides={"cursor": "seq"},
                           ddl=["alter table orders add column seq bigint"])
    project.run()
    assert project.watermark() == "30"
    project.insert([order(4, seq=30), order(5, seq=31)])
    report = project.run()
    assert report.events_sent == 2
    assert sorted(fake_tiktok.accepted_event_ids()) == [f"ORD-{n:05d}" for n in range(1, 6)]


def test_event_id_repeated_across_batches_is_sent_once(make_project, fake_tiktok, order) -> None:
    # An orders table with a history of changes: the same order comes back with a later updated_at.
    rows = [order(1), order(2), order(3, order_id="ORD-00001")]
    project = make_project(rows, sync_overrides={"batch_size": 2})
    report = project.run()
    assert report.ok, report.error
    assert Counter(fake_tiktok.accepted_event_ids()) == Counter({"ORD-00001": 1, "ORD-00002": 1})


# ---------------------------------------------------------------- failures: state moves only for acknowledged events

def test_server_keeps_failing_state_stays(make_project, fake_tiktok, order) -> None:
    project = make_project([order(n) for n in range(1, 4)])
    assert project.run().ok
    watermark_before = project.watermark()
    project.insert([order(n) for n in range(4, 7)])

    fake_tiktok.fail_next(n=1000)
    failed = project.run()
    assert failed.status == "failed"
    assert "attempts" in failed.error
    attempts = len(fake_tiktok.requests()) - 1
    assert 2 <= attempts <= 3  # retried, within max_attempts: 3
    assert failed.retries == attempts - 1
    assert failed.events_sent == 0
    assert project.watermark() == watermark_before
    ledger = {row[0] for row in project.query("select event_id from tiktok_ledger")}
    assert ledger == {"ORD-00001", "ORD-00002", "ORD-00003"}
    runs = project.runs()
    assert [r["status"] for r in runs] == ["success", "failed"]
    assert runs[1]["error"] and "attempts" in runs[1]["error"]

    fake_tiktok.reset()  # healthy again (this also forgets what it received)
    healed = project.run()
    assert healed.ok, healed.error
    assert sorted(fake_tiktok.accepted_event_ids()) == ["ORD-00004", "ORD-00005", "ORD-00006"]
    assert cursor(project.watermark()) == order(6)["updated_at"]


def test_failure_mid_run_keeps_watermark_behind_unacknowledged_events(make_project, fake_tiktok, order,
                                                                     default_mapping, monkeypatch) -> None:
    default_mapping["fields"]["event_source_id"] = "source_id"
    # Cursor order: A A B A A. Batches of 2: [1, 2] and [4, 5] go out for A before B's batch is sent.
    sources = {1: SET_A, 2: SET_A, 3: SET_B, 4: SET_A, 5: SET_A}
    rows = [order(n, source_id=source) for n, source in sources.items()]
    project = make_project(rows, mapping=default_mapping, sync_overrides={"batch_size": 2},
                           ddl=["alter table orders add column source_id varchar"])
    with FakeTikTok(access_token="test-token", known_event_source_ids={SET_A}) as strict:
        monkeypatch.setenv("TIKTOK_API_BASE_URL", strict.base_url)
        failed = project.run()
        first_accepted = strict.accepted_event_ids()
    assert failed.status == "failed"
    assert "40001" in failed.error  # no permission for SET_B: stop, no retries
    assert cursor(project.watermark()) <= order(3)["updated_at"]
    ledger = {row[0] for row in project.query("select event_id from tiktok_ledger")}
    assert ledger == set(first_accepted)
    assert "ORD-00003" not in ledger

    monkeypatch.setenv("TIKTOK_API_BASE_URL", fake_tiktok.base_url)
    healed = project.run()
    assert healed.ok, healed.error
    assert "ORD-00003" in fake_tiktok.accepted_event_ids()
    assert Counter(first_accepted + fake_tiktok.accepted_event_ids()) == Counter(
        {f"ORD-{n:05d}": 1 for n in sources})
    assert cursor(project.watermark()) == order(5)["updated_at"]


def test_a_failing_run_writes_the_watermark_its_acknowledged_batches_earned(make_project, fake_tiktok, order,
                                                                           default_mapping, monkeypatch) -> None:
    """Within a run the watermark is written at most once a second (the ledger is committed per batch); a run
    that fails still writes it, up to the first row of the batch that failed."""
    default_mapping["fields"]["event_source_id"] = "source_id"
    # Batches of 2, one at a time: [1, 2] and [3, 4] for A are acknowledged; B's [5] fails (no permission).
    sources = {1: SET_A, 2: SET_A, 3: SET_A, 4: SET_A, 5: SET_B}
    rows = [order(n, source_id=source) for n, source in sources.items()]
    project = make_project(rows, mapping=default_mapping, sync_overrides={"batch_size": 2},
                           tiktok={"max_in_flight": 1}, ddl=["alter table orders add column source_id varchar"])
    with FakeTikTok(access_token="test-token", known_event_source_ids={SET_A}) as strict:
        monkeypatch.setenv("TIKTOK_API_BASE_URL", strict.base_url)
        failed = project.run()
    assert failed.status == "failed" and "40001" in failed.error
    assert cursor(project.watermark()) == order(5)["updated_at"], "the watermark stopped short of the failed batch"
    assert {row[0] for row in project.query("select event_id from tiktok_ledger")} == {
        f"ORD-{n:05d}" for n in range(1, 5)}


def test_throttling_and_server_errors_are_retried(make_project, fake_tiktok, order) -> None:
    project = make_project([order(1), order(2)], tiktok={"max_attempts": 4, "max_retry_seconds": 10})
    fake_tiktok.throttle_next(1)
    fake_tiktok.fail_next(1)
    report = project.run()
    assert report.ok, report.error
    assert report.retries == 2
    assert [r.code for r in fake_tiktok.requests()] == [40100, 50000, 0]
    assert fake_tiktok.accepted_event_ids() == ["ORD-00001", "ORD-00002"]


def test_timeouts_and_dropped_connections_are_retried(make_project, fake_tiktok, order) -> None:
    project = make_project([order(1)], tiktok={"max_attempts": 4, "max_retry_seconds": 10, "timeout_seconds": 0.3})
    fake_tiktok.stall_next(1, seconds=3)
    fake_tiktok.drop_next(1)
    report = project.run()
    assert report.ok, report.error
    assert report.retries == 2
    [accepted] = fake_tiktok.accepted()
    assert accepted.event["event_id"] == "ORD-00001"
    assert accepted.request_index == 2  # the third request to arrive


def test_naive_timestamp_cursor(make_project, fake_tiktok, order) -> None:
    rows = [order(n, changed_at=NOW.replace(tzinfo=None) - dt.timedelta(hours=2, seconds=-n)) for n in (1, 2)]
    project = make_project(rows, sync_overrides={"cursor": "changed_at"},
                           ddl=["alter table orders add column changed_at timestamp"])
    assert project.run().events_sent == 2
    assert cursor(project.watermark()) == rows[-1]["changed_at"]
    project.insert([order(3, changed_at=rows[-1]["changed_at"]),
                    order(4, changed_at=NOW.replace(tzinfo=None) - dt.timedelta(minutes=1))])
    report = project.run()
    assert report.events_sent == 2
    assert Counter(fake_tiktok.accepted_event_ids()) == Counter({f"ORD-{n:05d}": 1 for n in range(1, 5)})


@pytest.mark.parametrize("how", ["auth_error", "wrong_token"])
def test_auth_error_stops_without_retries(make_project, fake_tiktok, order, monkeypatch, how) -> None:
    secret = "s3cr3t-T0KEN-do-not-print"
    if how == "auth_error":
        fake_tiktok.set_auth_error(40105)
    else:
        monkeypatch.setenv("TIKTOK_ACCESS_TOKEN", secret)
    project = make_project([order(1), order(2)])
    report = project.run()
    assert report.status == "failed"
    assert "40105" in report.error and "access token" in report.error.lower()
    assert len(fake_tiktok.requests()) == 1  # no retries
    assert report.retries == 0
    assert project.watermark() is None
    everything = json.dumps(report.to_dict(), default=str) + report.to_text() + project.table_text("tiktok_runs")
    assert secret not in everything
    assert "test-token" not in everything


# ---------------------------------------------------------------- DuckDB reads page by page

@pytest.mark.parametrize("page_rows", [1, 3, 4, 1000])
def test_pages_send_every_row_once_in_cursor_order(make_project, fake_tiktok, order, monkeypatch,
                                                   page_rows) -> None:
    """Small pages, ties longer than a page and across page ends, NULL cursors, rejected rows: the result
    is the one a single query gives."""
    import connector.runner as runner
    monkeypatch.setattr(runner, "PAGE_ROWS", page_rows)
    base = NOW - dt.timedelta(hours=2)
    stamps = [0, 0, 0, 0, 0, 1, 2, 2, 3, 3, 3, 4, 5, 6, 6, 6, 6, 6, 6, 7]
    rows = [order(n, updated_at=base + dt.timedelta(seconds=s)) for n, s in enumerate(stamps, start=1)]
    rows[6]["currency"] = "XXX"  # rejected by Python, inside a tie
    rows[10]["phone"] = "+44 (0)20 7946 0958"  # built by Python (SQL does not render it)
    rows += [order(100, updated_at=None), order(101, updated_at=None)]
    project = make_project(list(reversed(rows)), sync_overrides={"batch_size": 4},
                           tiktok={"max_in_flight": 1})
    report = project.run()
    assert report.ok, report.error
    sent = fake_tiktok.accepted_event_ids()
    stamp = {r["order_id"]: r["updated_at"] for r in rows}
    assert sorted(sent) == [r["order_id"] for r in rows[:20] if r["currency"] == "USD"]
    assert [stamp[i] for i in sent] == sorted(stamp[i] for i in sent)  # one sender: cursor order
    assert report.rows_read == 22 and report.events_sent == 19
    assert sorted(reason for reason, _, _ in project.rejects()) == ["invalid_currency", "null_cursor",
                                                                     "null_cursor"]
    assert cursor(project.watermark()) == base + dt.timedelta(seconds=7)
    again = project.run()
    assert again.ok and again.events_sent == 0 and len(fake_tiktok.accepted_event_ids()) == 19


def test_duckdb_checkpoints_during_a_long_sync(make_project, fake_tiktok, order, monkeypatch) -> None:
    """Each page's read transaction ends once the page is fetched. While one stays open, DuckDB cannot
    clean up the state commits made after it began, so it never checkpoints: every ledger row stays in
    memory and in the WAL until the sync ends (about 75 MB per million events)."""
    import connector.runner as runner
    from connector.config import load_project
    from connector.runner import RunOptions, run_sync
    from connector.state import StateStore
    from connector.warehouse import open_warehouse

    monkeypatch.setattr(runner, "PAGE_ROWS", 10_000)
    base = NOW - dt.timedelta(days=1)
    project = make_project([order(n, updated_at=base + dt.timedelta(seconds=n)) for n in range(1, 30_001)])
    wal = project.db.with_name(project.db.name + ".wal")
    wal_sizes: list[int] = []
    commit = StateStore.checkpoint

    def observed(self: StateStore, checkpoint, now) -> None:  # noqa: ANN001
        commit(self, checkpoint, now)
        wal_sizes.append(wal.stat().st_size if wal.exists() else 0)

    monkeypatch.setattr(StateStore, "checkpoint", observed)
    loaded = load_project(project.root)
    warehouse = open_warehouse(loaded.warehouse_url)
    try:
        warehouse.connect().execute("set checkpoint_threshold = '256KB'")  # DuckDB's default: 16MB
        report = run_sync(loaded, loaded.syncs[project.sync], RunOptions(now=NOW), warehouse=warehouse)
    finally:
        warehouse.close()
    assert report.ok and report.events_sent == 30_000, report.error
    shrank = [i for i in range(1, len(wal_sizes)) if wal_sizes[i] < wal_sizes[i - 1]]
    assert len(shrank) >= 3, wal_sizes  # folded into the file several times during the run (measured: 6)
    assert max(wal_sizes) < 2**20, wal_sizes  # measured: 0.3 MB; 2.2 MB when pages keep reading


def test_duckdb_out_of_memory_names_the_setting(tmp_path) -> None:
    """DuckDB's advice is SQL (SET memory_limit); the user's lever is a key in connector.yml."""
    from connector.errors import ConfigError, WarehouseError
    from connector.warehouse import DuckDBWarehouse

    warehouse = DuckDBWarehouse(str(tmp_path / "small.duckdb"), memory_limit="8MB")
    try:
        with pytest.raises(WarehouseError, match=r"raise warehouse\.memory_limit in connector\.yml"):
            with warehouse.stream("select i, repeat('x', 200) || i as s from range(400000) t(i) order by s desc",
                                  {}, 1000) as stream:
                list(stream.chunks)
    finally:
        warehouse.close()
    with pytest.raises(ConfigError, match="memory_limit"):
        DuckDBWarehouse(str(tmp_path / "other.duckdb"), memory_limit="lots")
    assert not (tmp_path / "other.duckdb").exists()  # refused before DuckDB opened anything


def test_duckdb_threads_and_memory_limit_from_connector_yml_reach_duckdb(make_project, fake_tiktok, order) -> None:
    import yaml

    from connector.config import load_project
    from connector.runner import RunOptions, run_sync
    from connector.warehouse import open_warehouse

    project = make_project([order(1)])
    config = yaml.safe_load((project.root / "connector.yml").read_text())
    config["warehouse"].update(threads=1, memory_limit="200MB")
    (project.root / "connector.yml").write_text(yaml.safe_dump(config))
    loaded = load_project(project.root)
    warehouse = open_warehouse(loaded.warehouse_url, loaded.warehouse_options)
    try:
        settings = warehouse.connect().query("select current_setting('threads'), current_setting('memory_limit')")
    finally:
        warehouse.close()
    assert settings[0][0] == 1 and settings[0][1].startswith("190")  # DuckDB shows 200MB as 190.7 MiB
    report = run_sync(loaded, loaded.syncs[project.sync], RunOptions(now=NOW))  # opens DuckDB the same way
    assert report.ok and report.events_sent == 1, report.error


@pytest.mark.parametrize("threads", ["0", "-1", "two", "1.5", "1; drop table x"])
def test_duckdb_threads_must_be_a_positive_whole_number(tmp_path, threads: str) -> None:
    from connector.errors import ConfigError
    from connector.warehouse import DuckDBWarehouse

    with pytest.raises(ConfigError, match=r"warehouse\.threads.*e\.g\. threads: 1"):
        DuckDBWarehouse(str(tmp_path / "w.duckdb"), threads=threads)
    assert not (tmp_path / "w.duckdb").exists()  # refused before DuckDB opened anything
