"""State writes on PostgreSQL and Snowflake, where each statement is a round trip: a checkpoint costs a
constant number of statements whatever the number of events it holds, and the batched writes store exactly
what row-by-row INSERTs store."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings, strategies as st
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from connector.config import load_project
from connector.runner import RunOptions, run_sync
from connector.snowflake_warehouse import SnowflakeWarehouse
from connector.state import StateStore
from connector.warehouse import SQLAlchemyConnection
from delivery_helpers import MAPPING
from warehouse_helpers import (NOW, PG_DSN, SOURCE_ID, fake_tiktok_env, postgres_target, snowflake_target,
                               sync_runs, write_project)

ORDERS_SQL = """create table {table} as select
    'ORD-{table}-' || {seq} as order_id, 'purchase' as event_name,
    {ordered_at} as ordered_at, {updated_at} as updated_at,
    'Customer' || {seq} || '@Example.com' as email, '+1415555' || lpad(cast({seq} % 10000 as varchar), 4, '0') as phone,
    19.99 as total, 'USD' as currency
from {rows}"""


class CountingCursor:
    """A driver cursor that counts the statements it is given, and otherwise is the cursor itself."""

    def __init__(self, cursor: Any, statements: list[str]) -> None:
        self._cursor, self._statements = cursor, statements

    def execute(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        self._statements.append(sql)
        return self._cursor.execute(sql, *args, **kwargs)

    def executemany(self, sql: str, seq: Any, *args: Any, **kwargs: Any) -> Any:
        self._statements.append(sql)  # the Snowflake connector sends one INSERT for all rows
        return self._cursor.executemany(sql, seq, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class CountingConnection:
    def __init__(self, con: Any, statements: list[str]) -> None:
        self._con, self._statements = con, statements

    def cursor(self, *args: Any, **kwargs: Any) -> CountingCursor:
        return CountingCursor(self._con.cursor(*args, **kwargs), self._statements)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


class CountingSnowflake(SnowflakeWarehouse):
    """The real Snowflake warehouse, on connections that count every statement sent through them."""

    def __init__(self, url: str, options: dict[str, Any], statements: list[str]) -> None:
        self.statements = statements
        super().__init__(url, options)

    def _connect(self) -> Any:
        return CountingConnection(super()._connect(), self.statements)


def _snowflake_orders(table: str, rows: int) -> str:
    seq = "seq4()"
    return ORDERS_SQL.format(
        table=table, seq=seq, rows=f"table(generator(rowcount => {rows}))",
        ordered_at=f"dateadd('second', {seq} % 80000, '{(NOW - dt.timedelta(days=2)).isoformat()}'::timestamp_tz)",
        updated_at=f"dateadd('millisecond', {seq}, '{(NOW - dt.timedelta(hours=3)).isoformat()}'::timestamp_tz)")


def test_snowflake_state_statements_per_thousand_events_are_a_small_constant(tmp_path: Path) -> None:
    fakesnow = pytest.importorskip("fakesnow")
    """Every Snowflake statement is a round trip to a remote warehouse. Counted on the connections the run
    uses (fakesnow cannot time them): what 5,000 more events cost in statements, per 1,000 events, one batch
    in flight at a time. With a commit per acknowledged batch (BEGIN, INSERT, COMMIT) it was 3."""
    sizes = {"warmup": 10, "small": 1_000, "large": 6_000}
    with fakesnow.patch():
        target = snowflake_target()
        target.run(*(_snowflake_orders(f"orders_{name}", rows) for name, rows in sizes.items()))
        syncs = {name: {"query": f"{name}.sql", "mapping": "orders.yml", "event_source": "offline",
                        "event_source_id": SOURCE_ID, "cursor": "updated_at"} for name in sizes}
        root = write_project(tmp_path / "project", target, syncs, mappings={"orders.yml": MAPPING},
                             queries={f"{name}.sql": f"select * from orders_{name}" for name in sizes},
                             state={"schema": "TIKTOK_STATE"})
        config = yaml.safe_load((root / "connector.yml").read_text())
        config["tiktok"]["max_in_flight"] = 1  # no batches acknowledged together: each one would commit alone
        (root / "connector.yml").write_text(yaml.safe_dump(config))
        counted: dict[str, int] = {}
        with fake_tiktok_env() as server:
            for name, rows in sizes.items():
                project = load_project(root)
                statements: list[str] = []
                warehouse = CountingSnowflake(project.warehouse_url, project.warehouse_options, statements)
                try:
                    report = run_sync(project, project.syncs[name], RunOptions(now=NOW), warehouse=warehouse)
                finally:
                    warehouse.close()
                assert report.ok and report.events_sent == rows, report.error
                counted[name] = len(statements)
            sent = server.accepted_event_ids()
        assert len(sent) == len(set(sent)) == sum(sizes.values())
        ledger = target.query("select count(*) from TIKTOK_STATE.tiktok_ledger")[0][0]
        assert ledger == sum(sizes.values())
    per_thousand = (counted["large"] - counted["small"]) / ((sizes["large"] - sizes["small"]) / 1000)
    assert per_thousand <= 1.0, (per_thousand, counted)


# ---------------------------------------------------------------- PostgreSQL

# Text as it may come from a warehouse: tabs, line breaks, backslashes, `\\N`, quotes, any Unicode but NUL
# (which PostgreSQL text cannot hold) and lone surrogates (which UTF-8 cannot).
TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=30)
VALUES = st.one_of(st.none(), TEXT, st.sampled_from(["\\N", "\\", "\t", "\n", "\r\n", "", "NULL", "a\\tb"]))
ROWS = st.lists(st.tuples(VALUES, st.one_of(st.none(), st.integers(-2**62, 2**62)), VALUES), max_size=40)


@settings(max_examples=40, deadline=None)
@given(rows=ROWS, constant=VALUES)
def test_postgres_batched_insert_stores_what_row_by_row_inserts_store(rows: list[tuple[Any, ...]],
                                                                      constant: Any) -> None:
    """insert_many (COPY on psycopg2) against a plain INSERT per row with bound parameters, into twin tables."""

    at = dt.datetime(2026, 1, 2, 3, 4, 5, 678901)
    with postgres_target() as target:
        schema = target.notes["schema"]
        target.run(*(f"create table {schema}.{table} (n serial, event_id text, event_time bigint, detail text, "
                     "run_id text, at timestamp)" for table in ("batched", "by_row")))
        with target.session() as con:
            con.executemany(f"insert into {schema}.by_row (event_id, event_time, detail, run_id, at) "
                            "values (?, ?, ?, ?, ?)", [(*row, constant, at) for row in rows])
        engine = create_engine(PG_DSN, poolclass=NullPool)
        connection = SQLAlchemyConnection(engine.connect())
        try:
            connection.insert_many(f"{schema}.batched", ("event_id", "event_time", "detail"), rows,
                                   {"run_id": constant, "at": at})
        finally:
            connection.close()
        stored = [target.query(f"select event_id, event_time, detail, run_id, at from {schema}.{table} order by n")
                  for table in ("batched", "by_row")]
    assert stored[0] == stored[1] == [(*row, constant, at) for row in rows]


class _CountingCursor:
    """psycopg2 cursors that count the statements they send: executemany sends one per parameter set."""

    statements: list[str] = []

    @classmethod
    def make(cls) -> type:
        import psycopg2.extensions

        class Counting(psycopg2.extensions.cursor):
            def execute(self, query: Any, vars: Any = None) -> Any:  # noqa: A002 - psycopg2's own name
                cls.statements.append(str(query))
                return super().execute(query, vars)

            def executemany(self, query: Any, vars_list: Any) -> Any:  # noqa: A002
                vars_list = list(vars_list)
                cls.statements.extend([str(query)] * len(vars_list))
                return super().executemany(query, vars_list)

            def copy_expert(self, sql: Any, file: Any, size: int = 8192) -> Any:
                cls.statements.append(str(sql))
                return super().copy_expert(sql, file, size)

        return Counting


def test_postgres_state_statements_per_checkpoint_are_constant(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Every psycopg2 statement of a sync counted (SQLAlchemy's and the COPY): each checkpoint, whatever the
    number of events it holds (1,000 here, and rejects), sends a fixed few statements. Row-by-row INSERTs
    sent one per ledger row, 0.3 s per checkpoint on a PostgreSQL over the network."""
    from sqlalchemy import event
    from sqlalchemy.pool import Pool

    counting = _CountingCursor.make()
    statements = _CountingCursor.statements = []

    def count_cursors(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.cursor_factory = counting

    per_checkpoint: list[tuple[int, int, int]] = []  # (statements, acknowledged events, rejects)
    commit = StateStore.checkpoint

    def observed(self: StateStore, checkpoint: Any, now: dt.datetime) -> None:
        before = len(statements)
        commit(self, checkpoint, now)
        per_checkpoint.append((len(statements) - before, len(checkpoint.acked), len(checkpoint.rejects)))

    monkeypatch.setattr(StateStore, "checkpoint", observed)
    rows = 5_000
    with postgres_target() as target:
        root = orders_project(tmp_path, target, rows, seconds_apart=0.001)
        event.listen(Pool, "connect", count_cursors)
        try:
            (outcome,) = sync_runs(root, "orders")
        finally:
            event.remove(Pool, "connect", count_cursors)
        report = outcome.report
        assert report.ok and report.events_sent == rows - 10, report.error
        assert report.rejected_by_reason == {"invalid_currency": 10}
        schema = target.notes["schema"]
        ledger = target.query(f"select event_id from {schema}.tiktok_ledger")
        rejects = target.query(f"select event_id, reason from {schema}.tiktok_rejects")
    assert sorted(i for (i,) in ledger) == sorted(e["event_id"] for e in outcome.events)
    assert sorted(rejects) == sorted((f"ORD-orders-{n}", "invalid_currency") for n in range(500, rows + 1, 500))
    assert sum(events for _, events, _ in per_checkpoint) == rows - 10
    assert max(events for _, events, _ in per_checkpoint) >= 1000
    # COPY ledger, COPY rejects, the watermark (an UPDATE; DELETE and INSERT the first time), the lease
    assert max(sent for sent, _, _ in per_checkpoint) <= 5, per_checkpoint


@settings(max_examples=25, deadline=None)
@given(rows=ROWS, constant=VALUES)
def test_other_sqlalchemy_drivers_insert_through_core_insert(rows: list[tuple[Any, ...]], constant: Any) -> None:
    """Drivers without COPY get SQLAlchemy's multi-row INSERT (insertmanyvalues): SQLite here, a real database."""

    engine = create_engine("sqlite://")
    try:
        connection = SQLAlchemyConnection(engine.connect())
        connection.execute("create table tiktok_rows (n integer primary key, event_id text, event_time integer, "
                           "detail text, run_id text)")
        connection.insert_many("tiktok_rows", ("event_id", "event_time", "detail"), rows, {"run_id": constant})
        stored = connection.query("select event_id, event_time, detail, run_id from tiktok_rows order by n")
        connection.close()
    finally:
        engine.dispose()
    assert stored == [(*row, constant) for row in rows]


def test_postgres_a_failed_background_commit_stops_later_ones_and_loses_nothing(tmp_path: Path) -> None:
    """State commits run on a helper thread for PostgreSQL. PostgreSQL itself refuses one checkpoint (a
    trigger on the ledger): the run fails, no later checkpoint is committed (its watermark would pass rows
    whose rejects were refused with it), and the next run sends and records what the failed one did not.
    (The run learns of the failure at its next commits: here its five batches were all sent by then.)"""
    rows = 5_000
    with postgres_target() as target:
        schema = target.notes["schema"]
        root = orders_project(tmp_path, target, rows, seconds_apart=1)
        config = yaml.safe_load((root / "connector.yml").read_text())
        config["tiktok"]["max_in_flight"] = 1
        (root / "connector.yml").write_text(yaml.safe_dump(config))
        with fake_tiktok_env() as server:
            project = load_project(root)
            engine = create_engine(PG_DSN, poolclass=NullPool)
            store = StateStore(SQLAlchemyConnection(engine.connect()), schema)
            try:
                store.ensure_tables()  # a dry run leaves no state behind any more
            finally:
                store.conn.close()
            target.run(f"""create function {schema}.refuse() returns trigger language plpgsql as $$
                           begin raise exception 'refused by the test'; end $$""",
                       f"""create trigger refuse before insert on {schema}.tiktok_ledger for each row
                           when (new.event_id = 'ORD-orders-2501') execute function {schema}.refuse()""")
            failed = run_sync(project, project.syncs["orders"], RunOptions(now=NOW))
            ledger = {i for (i,) in target.query(f"select event_id from {schema}.tiktok_ledger")}
            watermark = target.query(f"select watermark from {schema}.tiktok_watermarks")
            target.run(f"drop trigger refuse on {schema}.tiktok_ledger")
            second = run_sync(project, project.syncs["orders"], RunOptions(now=NOW))
            sent = server.accepted_event_ids()
        final_ledger = [i for (i,) in target.query(f"select event_id from {schema}.tiktok_ledger")]
        rejects = target.query(f"select event_id from {schema}.tiktok_rejects")
    assert failed.status == "failed" and "refused by the test" in (failed.error or ""), failed.error
    numbers = sorted(int(i.rsplit("-", 1)[1]) for i in ledger)
    assert numbers == [n for n in range(1, numbers[-1] + 1) if n % 500] and numbers[-1] < 2501  # batches before it
    assert not watermark or watermark[0][0] < (NOW - dt.timedelta(hours=3) + dt.timedelta(seconds=2501)).isoformat()
    assert second.ok, second.error
    assert sorted(final_ledger) == sorted({i for i in sent}) and len(final_ledger) == rows - 10
    assert not ledger & set(sent[len(sent) - second.events_sent:])  # the ledger kept what it had from being re-sent
    # every reject stored (those the failed run had stored, behind no written watermark, may be stored twice)
    assert {i for (i,) in rejects} == {f"ORD-orders-{n}" for n in range(500, rows + 1, 500)}


def orders_project(tmp_path: Path, target: Any, rows: int, seconds_apart: float) -> Path:
    """`rows` orders in the target's database (every 500th with a currency TikTok refuses), updated
    `seconds_apart` from each other three hours ago, and a project syncing them."""
    target.run(ORDERS_SQL.format(
        table="orders", seq="i", rows=f"generate_series(1, {rows}) as t(i)",
        ordered_at=f"timestamptz '{(NOW - dt.timedelta(days=2)).isoformat()}' + make_interval(secs => i)",
        updated_at=f"timestamptz '{(NOW - dt.timedelta(hours=3)).isoformat()}' "
                   f"+ make_interval(secs => i * {seconds_apart})")
        .replace("'USD' as currency", "case when i % 500 = 0 then 'XXX' else 'USD' end as currency"))
    return write_project(tmp_path / "project", target,
                         {"orders": {"query": "orders.sql", "mapping": "orders.yml", "event_source": "offline",
                                     "event_source_id": SOURCE_ID, "cursor": "updated_at"}},
                         mappings={"orders.yml": MAPPING}, queries={"orders.sql": "select * from orders"})
