"""The same project syncs identically on DuckDB, PostgreSQL and Snowflake (fakesnow).

One seeded dataset (the demo's orders and order_items, plus a few rows of each problem) is loaded into
each warehouse and the demo project (its queries/ and mappings/, untouched) is synced against the fake
TikTok with a fixed clock: the request bodies must match DuckDB's byte for byte once events are sorted,
and so must the reports. PostgreSQL tests skip when nothing listens on 127.0.0.1:5432.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import subprocess
import sys
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from connector import query as sqlq
from connector.config import load_project
from connector.demo import insert_orders
from connector.rows import READ_AHEAD_CHUNKS
from connector.runner import CHUNK_ROWS, PAGE_ROWS
from connector.warehouse import open_warehouse

from warehouse_helpers import (
    DEMO_DDL, DIALECTS, JSON_PARAM, NOW, SOURCE_ID, UTC, Outcome, Target, canonical, duckdb_target,
    fake_tiktok_env, postgres_target, snowflake_target, sync_runs, target_for, write_project,
)

fakesnow = pytest.importorskip("fakesnow")

SEED = 20240601
ORDERS = 240
DEMO_SYNC = "purchases"
VOLATILE_REPORT_KEYS = {"run_id", "peak_rss_mb"}  # and every timing: keys ending in _seconds, per_second


# ---------------------------------------------------------------- the demo dataset

def extra_rows() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Orders the demo generator does not make: one per problem, plus match-key edge cases."""
    hour = dt.timedelta(hours=1)
    base = NOW - dt.timedelta(days=2)
    prehashed = "A1B2C3D4E5F6" * 5 + "ABCD"  # 64 hex characters, upper case
    orders = [
        # order_id, event_name, ordered_at, updated_at, email, phone, total, currency, store_id
        ("ORD-X-NULLCUR", "purchase", base, None, "a@example.com", None, "10.00", "USD", 1),
        ("ORD-X-UNKNOWN", "refund_issued", base, NOW - 3 * hour, "b@example.com", None, "10.00", "USD", 1),
        ("ORD-X-FUTURE", "purchase", NOW + dt.timedelta(days=2), NOW - 3 * hour, "c@example.com", None,
         "10.00", "USD", 1),
        ("ORD-X-NEGATIVE", "purchase", base, NOW - 3 * hour, "d@example.com", None, "5.00", "USD", 1),
        ("ORD-X-CURRENCY", "purchase", base, NOW - 3 * hour, "f@example.com", None, "5.00", "XYZ", 1),
        ("ORD-X-PREHASHED", "purchase", base, NOW - 3 * hour, prehashed, None, "10.00", "EUR", 2),
        ("ORD-X-BLANKKEYS", "purchase", base, NOW - 3 * hour, "   ", "\t", "10.00", "USD", 2),
        ("ORD-X-PHONEONLY", "Purchase", base, NOW - 3 * hour, "not-an-email", "+44 20 7946 0958", "10.00",
         "GBP", 2),
        ("ORD-X-LATE", "purchase", base, NOW - dt.timedelta(seconds=10), "e@example.com", None, "10.00", "USD", 2),
    ]
    items = [(order[0], 1, "SKU-X", "Extra", "10.00", -1 if order[0] == "ORD-X-NEGATIVE" else 1)
             for order in orders]
    return orders, items


def load_demo_data(target: Target, orders: int = ORDERS, now: dt.datetime = NOW) -> None:
    target.run(*DEMO_DDL)
    with target.session() as con:
        insert_orders(con, range(1, orders + 1), now, random.Random(SEED))
        extra_orders, extra_items = extra_rows()
        con.executemany("insert into orders values (?, ?, ?, ?, ?, ?, ?, ?, ?)", extra_orders)
        con.executemany("insert into order_items values (?, ?, ?, ?, ?, ?)", extra_items)


def demo_project(root: Path, target: Target) -> Path:
    """The demo's own connector.yml sync, queries/ and mappings/, pointed at `target`."""
    sync = {"query": "purchases.sql", "mapping": "purchases.yml", "event_source": "offline",
            "event_source_id": SOURCE_ID, "cursor": "updated_at", "attribution_window_days": 28,
            "vars": {"min_total": 0}}
    return write_project(root, target, {DEMO_SYNC: sync}, copy_demo=True)


def report_dict(outcome: Outcome) -> dict[str, Any]:
    data = outcome.report.to_dict()
    return {k: v for k, v in data.items()
            if k not in VOLATILE_REPORT_KEYS and not k.endswith(("_seconds", "per_second"))}


@dataclass
class DemoResult:
    first: Outcome
    second: Outcome
    watermarks: list[tuple[Any, ...]]
    state_tables: set[str]


def run_demo_on(target: Target, root: Path) -> DemoResult:
    load_demo_data(target)
    project = demo_project(root, target)
    first, second = sync_runs(project, DEMO_SYNC, runs=2)
    watermarks = target.query("select sync_name, cursor_column, watermark, watermark_type from tiktok_watermarks")
    if target.dialect == "postgresql":
        tables = target.query("select table_name from information_schema.tables where table_schema = ?",
                              [target.notes["schema"]])
    elif target.dialect == "snowflake":
        tables = target.query("select table_name from information_schema.tables")
    else:
        tables = target.query("select table_name from duckdb_tables()")
    return DemoResult(first, second, watermarks, {str(t[0]).lower() for t in tables})


@pytest.fixture(scope="module")
def duckdb_reference(tmp_path_factory: pytest.TempPathFactory) -> DemoResult:
    root = tmp_path_factory.mktemp("reference")
    return run_demo_on(duckdb_target(root / "project"), root / "project")


def test_reference_run_on_duckdb_covers_items_rejects_and_ties(duckdb_reference: DemoResult) -> None:
    """The dataset is worth comparing: multi-item orders, every problem row, a deferred row."""
    first = duckdb_reference.first
    assert first.report.ok, first.report.error
    assert first.report.events_sent > 100
    reasons = first.report.rejected_by_reason
    for reason in ("null_cursor", "unknown_event", "event_in_future", "invalid_value", "no_match_keys",
                   "event_too_old", "invalid_currency"):
        assert reasons[reason] >= 1, (reason, dict(reasons))
    assert first.report.rows_deferred == 1  # ORD-X-LATE: changed within the safety margin
    events = first.by_id()
    assert max(len(e["properties"]["contents"]) for e in events.values()) == 3
    assert events["ORD-X-PREHASHED"]["user"]["email"] == ("A1B2C3D4E5F6" * 5 + "ABCD").lower()
    assert set(events["ORD-X-PHONEONLY"]["user"]) == {"phone"}
    assert "ORD-X-LATE" not in events


@pytest.mark.parametrize("dialect", DIALECTS)
def test_demo_project_syncs_identically(dialect: str, tmp_path: Path, duckdb_reference: DemoResult) -> None:
    """Same data, same queries/ and mapping → the same request bodies and reports as DuckDB; a second run
    sends nothing; the watermark is in the state tables as a timestamptz."""
    with target_for(dialect, tmp_path) as target:
        result = run_demo_on(target, tmp_path / "project")
    ref = duckdb_reference
    assert result.first.report.ok, result.first.report.error
    assert canonical(result.first.bodies) == canonical(ref.first.bodies)
    assert report_dict(result.first) == report_dict(ref.first)
    # Items keep the query's order (order by line_no) inside contents[] on every warehouse.
    assert {k: e["properties"]["contents"] for k, e in result.first.by_id().items()} == \
        {k: e["properties"]["contents"] for k, e in ref.first.by_id().items()}

    assert result.second.report.ok, result.second.report.error
    assert result.second.bodies == [] and result.second.report.events_sent == 0
    assert result.second.report.duplicates_skipped >= 1  # the rows tied at the watermark, re-read
    assert report_dict(result.second) == report_dict(ref.second)

    assert {"tiktok_watermarks", "tiktok_ledger", "tiktok_rejects", "tiktok_runs", "tiktok_leases",
            "tiktok_state_version"} <= result.state_tables
    [(sync_name, cursor_column, watermark, kind)] = result.watermarks
    assert (sync_name, cursor_column.lower(), kind) == (DEMO_SYNC, "updated_at", "timestamptz")
    stored = dt.datetime.fromisoformat(watermark)
    assert stored.utcoffset() == dt.timedelta(0)
    assert watermark == result.first.report.watermark == ref.first.report.watermark
    assert NOW - dt.timedelta(days=40) < stored < NOW


# ---------------------------------------------------------------- types, overrides, macros, state.url

TYPED_DDL = """create table typed (id {bigint}, event_name varchar(20), amount {dec}(12, 2), ordered_tz {tz},
    ordered_ntz {ntz}, updated_at {tz}, email varchar(100), items {json})"""
BIG_ID = 9007199254740993  # 2**53 + 1: a float cannot hold it
PLUS_TWO = dt.timezone(dt.timedelta(hours=2))
MINUS_FIVE = dt.timezone(dt.timedelta(hours=-5))
TYPED_ROWS = [
    # id, event_name, amount, ordered_tz, ordered_ntz, updated_at, email, items (JSON text)
    (BIG_ID, "purchase", "19.99", dt.datetime(2024, 5, 30, 10, 0, 0, tzinfo=PLUS_TWO),
     dt.datetime(2024, 5, 30, 10, 0, 0), NOW - dt.timedelta(hours=3), "big@example.com",
     '[{"content_id": "SKU-1", "price": 19.99, "quantity": 2}, {"content_id": 12345678901234567, '
     '"price": 100.00, "quantity": 1}]'),
    (2, "purchase", "100.00", dt.datetime(2024, 5, 30, 23, 30, 15, tzinfo=MINUS_FIVE),
     dt.datetime(2024, 5, 31, 4, 30, 15, 999999), NOW - dt.timedelta(hours=2), "two@example.com",
     '[{"content_id": "SKU-2", "price": 0.1, "quantity": 3}]'),
    (3, "purchase", "1234567.89", dt.datetime(2024, 5, 31, 0, 0, 0, tzinfo=UTC),
     dt.datetime(2024, 5, 31, 0, 0, 0), NOW - dt.timedelta(hours=1), "three@example.com", None),
]
# The same instants as Unix seconds (naive timestamps are UTC).
EXPECTED_TZ_SECONDS = {str(BIG_ID): 1717056000, "2": 1717129815, "3": 1717113600}
EXPECTED_NTZ_SECONDS = {str(BIG_ID): 1717063200, "2": 1717129815, "3": 1717113600}
EXPECTED_VALUE_TEXT = {str(BIG_ID): b'"value":19.99', "2": b'"value":100,', "3": b'"value":1234567.89'}
EXPECTED_CONTENTS = {
    str(BIG_ID): [{"content_id": "SKU-1", "price": 19.99, "quantity": 2},
                  {"content_id": "12345678901234567", "price": 100, "quantity": 1}],
    "2": [{"content_id": "SKU-2", "price": 0.1, "quantity": 3}],
    "3": None,
}
TYPED_MAPPING = {
    "fields": {"event": "event_name", "event_id": "id", "event_time": "ordered_tz", "user.email": "email",
               "properties.value": "amount", "properties.currency": {"value": "USD"},
               "properties.order_id": "id", "properties.contents": "items"},
}
SHA256_A = "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
MACRO_QUERY = """select
    {{ sha256("'a'") }} as sha_a,
    cast(cast({{ dateadd('day', -28, 'current_timestamp') }} as date) as varchar) as by_dateadd,
    cast(cast({{ days_ago(28) }} as date) as varchar) as by_days_ago,
    '{{ dialect }}' as dialect_name
"""
# The override pair: the Snowflake file must win on Snowflake only. Both use macros inside a sync.
WHICH_QUERY = """select id, event_name, ordered_tz, updated_at, email, '{src}' as src
from typed
where ordered_tz >= {{{{ days_ago(36500) }}}} and {{{{ sha256("'a'") }}}} = '""" + SHA256_A + "'\n"
WHICH_MAPPING = {"fields": {"event": "event_name", "event_id": "id", "event_time": "ordered_tz",
                            "user.email": "email", "properties.description": "src"}}


def load_typed(target: Target) -> None:
    target.run(TYPED_DDL)
    json_param = JSON_PARAM[target.dialect]
    values = f"?, ?, ?, ?, ?, ?, ?, {json_param}"
    sql = (f"insert into typed select {values}" if target.dialect == "snowflake"
           else f"insert into typed values ({values})")
    with target.session() as con:
        for row in TYPED_ROWS:
            con.execute(sql, row)


def features_project(root: Path, target: Target, state: dict[str, Any] | None = None) -> Path:
    common = {"event_source": "offline", "event_source_id": SOURCE_ID, "cursor": "updated_at",
              "attribution_window_days": 28}
    ntz_mapping = {"fields": {**TYPED_MAPPING["fields"], "event_time": "ordered_ntz"}}
    return write_project(
        root, target,
        {"typed_tz": {"query": "typed.sql", "mapping": "typed.yml", **common},
         "typed_ntz": {"query": "typed.sql", "mapping": "typed_ntz.yml", **common},
         "which": {"query": "which.sql", "mapping": "which.yml", **common}},
        queries={"typed.sql": "select * from typed\n", "which.sql": WHICH_QUERY.format(src="generic"),
                 "snowflake/which.sql": WHICH_QUERY.format(src="snowflake"), "macros.sql": MACRO_QUERY},
        mappings={"typed.yml": TYPED_MAPPING, "typed_ntz.yml": ntz_mapping, "which.yml": WHICH_MAPPING},
        state=state)


@dataclass
class Features:
    dialect: str
    outcomes: dict[str, Outcome]
    macro_row: dict[str, Any]


@pytest.fixture(scope="module", params=DIALECTS)
def features(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Features:
    """Per warehouse: the `typed` table and the typed_tz / typed_ntz / which syncs run once, plus the
    macros query rendered and run through the connector's own warehouse adapter."""
    dialect = request.param
    root = tmp_path_factory.mktemp(f"features-{dialect}")
    with target_for(dialect, root) as target:
        load_typed(target)
        project_dir = features_project(root / "project", target)
        outcomes = {name: sync_runs(project_dir, name)[0] for name in ("typed_tz", "typed_ntz", "which")}
        project = load_project(project_dir)
        warehouse = open_warehouse(project.warehouse_url, project.warehouse_options)
        try:
            sql = sqlq.render(project.queries_dir, "macros.sql", warehouse.dialect, {})
            stream = warehouse.stream(sql, {}, 10)
            rows = [row for chunk in stream.chunks for row in chunk]
        finally:
            warehouse.close()
    # Built and torn down here (fakesnow's patch must not outlive the block): the tests only read results.
    return Features(dialect, outcomes, dict(zip([c.lower() for c in stream.columns], rows[0])))


def test_decimals_are_json_numbers_without_float_noise(features: Features) -> None:
    outcome = features.outcomes["typed_tz"]
    assert outcome.report.ok, outcome.report.error
    assert outcome.report.events_sent == 3
    raw = b"\n".join(outcome.raws)
    for event_id, text in EXPECTED_VALUE_TEXT.items():
        assert text in raw, (event_id, text)
    values = {k: e["properties"]["value"] for k, e in outcome.by_id().items()}
    assert values == {str(BIG_ID): 19.99, "2": 100, "3": 1234567.89}
    assert type(values["2"]) is int  # 100.00 → 100


def test_big_integer_ids_are_exact_strings(features: Features) -> None:
    events = features.outcomes["typed_tz"].by_id()
    assert str(BIG_ID) in events
    assert events[str(BIG_ID)]["properties"]["order_id"] == "9007199254740993"
    assert b'"event_id":"9007199254740993"' in b"".join(features.outcomes["typed_tz"].raws)


def test_timezone_aware_and_naive_timestamps_become_the_right_unix_seconds(features: Features) -> None:
    aware = {k: e["event_time"] for k, e in features.outcomes["typed_tz"].by_id().items()}
    naive = {k: e["event_time"] for k, e in features.outcomes["typed_ntz"].by_id().items()}
    assert aware == EXPECTED_TZ_SECONDS
    assert naive == EXPECTED_NTZ_SECONDS  # naive = UTC, whatever the warehouse session says


def test_json_item_columns_become_contents(features: Features) -> None:
    events = features.outcomes["typed_tz"].by_id()
    contents = {k: e.get("properties", {}).get("contents") for k, e in events.items()}
    assert contents == EXPECTED_CONTENTS


def test_dialect_query_override_is_picked_on_snowflake_only(features: Features) -> None:
    outcome = features.outcomes["which"]
    assert outcome.report.ok, outcome.report.error
    sources = {e["properties"]["description"] for e in outcome.events}
    assert sources == {"snowflake" if features.dialect == "snowflake" else "generic"}
    assert outcome.report.events_sent == 3  # the macros in its WHERE ran and kept every row


def test_jinja_macros_render_and_run(features: Features) -> None:
    row = features.macro_row
    assert row["sha_a"] == SHA256_A
    assert row["dialect_name"] == features.dialect
    today = dt.datetime.now(UTC).date()
    allowed = {str(today - dt.timedelta(days=28 + shift)) for shift in (-1, 0, 1)}  # midnight, session zone
    assert str(row["by_dateadd"]) in allowed
    assert str(row["by_days_ago"]) in allowed


def test_all_three_warehouses_send_the_same_typed_events(features: Features,
                                                        tmp_path_factory: pytest.TempPathFactory) -> None:
    """The typed syncs' bodies are the same text everywhere (DuckDB is the yardstick)."""
    if features.dialect == "duckdb":
        pytest.skip("DuckDB is the reference")
    root = tmp_path_factory.mktemp("typed-reference")
    target = duckdb_target(root / "project")
    load_typed(target)
    project_dir = features_project(root / "project", target)
    for name in ("typed_tz", "typed_ntz"):
        [reference] = sync_runs(project_dir, name)
        assert canonical(features.outcomes[name].bodies) == canonical(reference.bodies), name


def test_state_url_keeps_state_in_duckdb_when_the_warehouse_is_postgres(tmp_path: Path) -> None:
    with postgres_target() as target:
        load_typed(target)
        project_dir = features_project(tmp_path / "project", target, state={"url": "duckdb:///state.duckdb"})
        first, second = sync_runs(project_dir, "typed_tz", runs=2)
        in_postgres = target.query(
            "select table_schema, table_name from information_schema.tables where table_name like 'tiktok%' "
            "and table_schema = ?", [target.notes["schema"]])
    assert first.report.ok, first.report.error
    assert first.report.events_sent == 3 and second.report.events_sent == 0
    assert in_postgres == []
    import duckdb
    con = duckdb.connect(str(tmp_path / "project" / "state.duckdb"), read_only=True)
    try:
        rows = con.execute("select sync_name, watermark, watermark_type from tiktok_watermarks").fetchall()
        ledger = con.execute("select count(*) from tiktok_ledger").fetchone()[0]
    finally:
        con.close()
    assert rows == [("typed_tz", first.report.watermark, "timestamptz")]
    assert ledger == 3


# ---------------------------------------------------------------- the CLI under fakesnow

def test_cli_sync_under_fakesnow_command(tmp_path: Path) -> None:
    """`fakesnow -d DIR -m connector sync --project P --json`: the real CLI process, Snowflake warehouse."""
    db_dir = tmp_path / "fakesnow"
    db_dir.mkdir()
    now = dt.datetime.now(UTC)
    with fakesnow.patch(db_path=str(db_dir)):
        target = snowflake_target()
        target.run(*DEMO_DDL)
        with target.session() as con:
            insert_orders(con, range(1, 31), now, random.Random(SEED), max_age_days=5)
        project_dir = demo_project(tmp_path / "project", target)
    fakesnow_bin = Path(sys.executable).with_name("fakesnow")
    with fake_tiktok_env() as server:
        env = {**os.environ}
        result = subprocess.run([str(fakesnow_bin), "-d", str(db_dir), "-m", "connector", "sync",
                                 "--project", str(project_dir), "--json"],
                                capture_output=True, text=True, timeout=120, env=env)
        received = [e for r in server.requests() for e in r.body["data"]]
    assert result.returncode == 0, result.stderr[-2000:]
    [line] = [line for line in result.stdout.splitlines() if line.startswith("{")]
    report = json.loads(line)
    assert report["status"] == "success" and report["sync"] == DEMO_SYNC
    # 30 orders: n % 36 == 0 has neither email nor phone (none here); n % 97 currency XYZ (none here).
    assert report["events_sent"] == len(received) == 30
    assert report["rows_read"] == sum(1 + n % 3 for n in range(1, 31))
    assert report["watermark"] is not None


# ---------------------------------------------------------------- streaming

STREAM_ROWS = 200_000
ITEMS_PER_ORDER = 20  # 10,000 events of 20 item rows: the rows are many, the events few (keeps it fast)
PAD = 1000
# Every row carries a wide column (a zero-padded text key), read as each item's name. (It was the cursor
# until text cursors were refused: the cursor is its number now.)
STREAM_QUERY = f"""select 'ORD-' || cast(i // {ITEMS_PER_ORDER} as varchar) as order_id,
    timestamp '2024-05-30 00:00:00' + to_seconds(i // {ITEMS_PER_ORDER}) as ordered_at,
    i as row_no, lpad(cast(i as varchar), {PAD}, '0') as row_key,
    'SKU-' || cast(i % {ITEMS_PER_ORDER} as varchar) as sku
from range({STREAM_ROWS}) as t(i)
"""
STREAM_MAPPING = {"fields": {"event": {"value": "Purchase"}, "event_id": "order_id", "event_time": "ordered_at",
                             "user.email": {"value": "ab" * 32}, "properties.contents[].content_id": "sku",
                             "properties.contents[].content_name": "row_key"}}


def test_a_large_duckdb_result_is_streamed_not_fetched_whole(tmp_path: Path) -> None:
    """200k rows of >1 kB each: a fetchall would hold >200 MB of Python strings at once; the sync's peak
    traced memory stays far below that (dry run: no HTTP, no state writes)."""
    target = duckdb_target(tmp_path / "project")
    target.query("select 1")  # creates the warehouse file: a dry run opens it read-only and creates none
    project_dir = write_project(
        tmp_path / "project", target,
        {"big": {"query": "big.sql", "mapping": "big.yml", "event_source": "offline",
                 "event_source_id": SOURCE_ID, "cursor": "row_no"}},
        queries={"big.sql": STREAM_QUERY}, mappings={"big.yml": STREAM_MAPPING})
    # One-row-per-item results are sorted whole by DuckDB, which needs more than its default 64MB to spill
    # rows of a kilobyte (README, warehouse.memory_limit).
    config = yaml.safe_load((project_dir / "connector.yml").read_text())
    config["warehouse"]["memory_limit"] = "256MB"
    (project_dir / "connector.yml").write_text(yaml.safe_dump(config))
    with fake_tiktok_env():
        project = load_project(project_dir)
    from connector.runner import RunOptions, run_sync
    tracemalloc.start()
    try:
        report = run_sync(project, project.syncs["big"], RunOptions(now=NOW, dry_run=True))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.ok, report.error
    assert report.rows_read == STREAM_ROWS
    assert report.events_built == STREAM_ROWS // ITEMS_PER_ORDER
    # At most a window of rows (one ledger lookup) and the chunks a helper thread fetched ahead of it are held
    held = (PAGE_ROWS // 2 + READ_AHEAD_CHUNKS * CHUNK_ROWS) * PAD
    whole_result = STREAM_ROWS * PAD
    assert held <= whole_result / 4
    assert peak < 1.5 * held, f"peak {peak / 1e6:.0f} MB vs {whole_result / 1e6:.0f} MB of rows"


LIMIT_QUERY = """select 'ORD-' || cast(i // 2 as varchar) as order_id,
    timestamp '2024-05-30 00:00:00' + to_seconds(i // 2) as ordered_at, i as row_no,
    'SKU-' || cast(i as varchar) as sku, current_setting('memory_limit') as memory_limit
from range(4) as t(i)
"""


@pytest.mark.parametrize(("configured", "expected"), [(None, "244.1 MiB"), ("64MB", "61.0 MiB")])  # 256MB, 64MB
def test_one_row_per_item_gives_duckdb_more_memory_unless_connector_yml_sets_it(
        tmp_path: Path, configured: str | None, expected: str) -> None:
    """An item sync sorts its whole result (at 64MB that ran out of memory between 2M and 3M item rows): without
    warehouse.memory_limit, DuckDB gets 256MB for it. The query itself reads the setting, into the events sent."""
    target = duckdb_target(tmp_path / "project")
    target.query("select 1")
    mapping = {"fields": {"event": {"value": "Purchase"}, "event_id": "order_id", "event_time": "ordered_at",
                          "user.email": {"value": "ab" * 32}, "properties.description": "memory_limit",
                          "properties.contents[].content_id": "sku"}}
    project_dir = write_project(
        tmp_path / "project", target,
        {"items": {"query": "items.sql", "mapping": "items.yml", "event_source": "offline",
                   "event_source_id": SOURCE_ID, "cursor": "row_no"}},
        queries={"items.sql": LIMIT_QUERY}, mappings={"items.yml": mapping})
    if configured:
        config = yaml.safe_load((project_dir / "connector.yml").read_text())
        config["warehouse"]["memory_limit"] = configured
        (project_dir / "connector.yml").write_text(yaml.safe_dump(config))
    with fake_tiktok_env():
        project = load_project(project_dir)
    from connector.runner import RunOptions, run_sync
    report = run_sync(project, project.syncs["items"], RunOptions(now=NOW, dry_run=True))
    assert report.ok, report.error
    events = report.sample_events
    assert len(events) == 2 and all(len(e["properties"]["contents"]) == 2 for e in events)
    assert {e["properties"]["description"] for e in events} == {expected}


REJECT_QUERY = """select 'OLD-' || cast(i as varchar) as order_id,
    timestamp '2024-01-01 00:00:00' + to_seconds(i) as updated_at
from range({rows}) as t(i)
"""


def _peak_of_all_rejected_sync(root: Path, rows: int) -> tuple[int, Any]:
    target = duckdb_target(root)
    project_dir = write_project(
        root, target,
        {"old": {"query": "old.sql", "mapping": "old.yml", "event_source": "offline",
                 "event_source_id": SOURCE_ID, "cursor": "updated_at"}},
        queries={"old.sql": REJECT_QUERY.format(rows=rows)},
        mappings={"old.yml": {"fields": {"event": {"value": "Purchase"}, "event_id": "order_id",
                                         "event_time": "updated_at", "user.email": {"value": "ab" * 32}}}})
    from connector.runner import RunOptions, run_sync
    with fake_tiktok_env():
        project = load_project(project_dir)
        tracemalloc.start()
        try:
            report = run_sync(project, project.syncs["old"], RunOptions(now=NOW))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    return peak, report


def test_memory_does_not_grow_with_rejected_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """README: results are streamed, "memory does not grow with the number of rows" — also when every row
    is rejected (event_too_old: a first sync of an old table), so rejects must not pile up until a batch
    is acknowledged: 3× the rows must not take ~3× the memory. DuckDB pages are fetched whole, ahead of
    use, so the pages here are smaller than either table."""
    import connector.runner as runner
    monkeypatch.setattr(runner, "PAGE_ROWS", 2000)
    small_peak, small = _peak_of_all_rejected_sync(tmp_path / "small", 6_000)
    large_peak, large = _peak_of_all_rejected_sync(tmp_path / "large", 18_000)
    assert small.ok and large.ok, (small.error, large.error)
    assert large.rejected_by_reason["event_too_old"] == 18_000
    assert large_peak < 1.5 * small_peak, f"{small_peak / 1e6:.1f} MB → {large_peak / 1e6:.1f} MB"


# ---------------------------------------------------------------- NULL cursors

def test_null_cursor_rows_are_recorded_even_when_a_row_is_deferred(tmp_path: Path) -> None:
    """A row past the safety-margin end must not hide the NULL-cursor rows: later runs cannot see them."""
    target = duckdb_target(tmp_path / "project")
    load_demo_data(target, orders=3)
    project = demo_project(tmp_path / "project", target)
    first, second = sync_runs(project, DEMO_SYNC, runs=2)
    assert first.report.ok, first.report.error
    assert first.report.rows_deferred >= 1  # ORD-X-LATE is within the safety margin
    assert first.report.rejected_by_reason["null_cursor"] + second.report.rejected_by_reason["null_cursor"] == 1
