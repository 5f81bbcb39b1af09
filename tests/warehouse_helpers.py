"""Helpers for the cross-warehouse tests: the same tables and projects on DuckDB, PostgreSQL and Snowflake
(fakesnow), syncs against the fake TikTok, and request bodies in a comparable form.

Every warehouse gets a `Target`: its connector.yml `warehouse.url` (and `state` section), and a DB-API
connection for the test's own DDL and inserts (always written with `?` placeholders).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from connector.config import BASE_URL_ENV, load_project
from connector.demo import TEMPLATE_DIR
from connector.report import SyncReport
from connector.runner import RunOptions, run_sync
from connector.testing.fake_tiktok import FakeTikTok
from connector.warehouse import ResultStream, Warehouse, open_warehouse

UTC = dt.timezone.utc
NOW = dt.datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
TOKEN = "t"
SOURCE_ID = "7654321098765432109"
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
SNOWFLAKE_URL = "snowflake://me:${SNOWFLAKE_PASSWORD:-pw}@acct/DEMO/PUBLIC?warehouse=WH&role=R"
SNOWFLAKE_CONNECT = {"user": "me", "password": "pw", "account": "acct", "database": "DEMO", "schema": "PUBLIC"}
DIALECTS = ("duckdb", "postgresql", "snowflake")

# Column types by warehouse, for DDL written once: {tz} {ntz} {dec} {json} {bigint}.
TYPES = {
    "duckdb": {"tz": "timestamptz", "ntz": "timestamp", "dec": "decimal", "json": "json", "bigint": "bigint"},
    "postgresql": {"tz": "timestamptz", "ntz": "timestamp", "dec": "numeric", "json": "jsonb", "bigint": "bigint"},
    "snowflake": {"tz": "timestamp_tz", "ntz": "timestamp_ntz", "dec": "number", "json": "variant",
                  "bigint": "number(38, 0)"},
}
# A JSON text parameter into the warehouse's JSON type (Snowflake needs parse_json in a SELECT).
JSON_PARAM = {"duckdb": "cast(? as json)", "postgresql": "cast(? as jsonb)", "snowflake": "parse_json(?)"}

# The tables of connector/demo.py build_warehouse, for every warehouse.
DEMO_DDL = [
    """create table orders (order_id varchar(40), event_name varchar(40), ordered_at {tz}, updated_at {tz},
       email varchar(200), phone varchar(64), total {dec}(12, 2), currency varchar(8), store_id integer)""",
    """create table order_items (order_id varchar(40), line_no integer, sku varchar(40),
       product_name varchar(100), unit_price {dec}(10, 2), qty integer)""",
]


def ddl(dialect: str, statement: str) -> str:
    return statement.format(**TYPES[dialect])


class QmarkConnection:
    """A DB-API connection that takes `?` placeholders (what connector.demo.insert_orders writes)."""

    def __init__(self, con: Any, paramstyle: str) -> None:
        self._con, self._paramstyle = con, paramstyle

    def _sql(self, sql: str) -> str:
        return sql if self._paramstyle == "qmark" else sql.replace("%", "%%").replace("?", "%s")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        cursor = self._con.cursor()
        cursor.execute(self._sql(sql) if params else sql, tuple(params) if params else None)
        cursor.close()

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        cursor = self._con.cursor()
        cursor.executemany(self._sql(sql), [tuple(row) for row in rows])
        cursor.close()

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = self._con.cursor()
        cursor.execute(self._sql(sql) if params else sql, tuple(params) if params else None)
        rows = [tuple(row) for row in cursor.fetchall()]
        cursor.close()
        return rows


@dataclass
class Target:
    """One warehouse: what connector.yml needs to reach it, and a way for the test to write to it."""

    dialect: str
    url: str
    connect: Callable[[], Any]  # a fresh DB-API connection
    paramstyle: str
    state: dict[str, Any] | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @contextmanager
    def session(self) -> Iterator[QmarkConnection]:
        """A connection for setup and checks, committed and closed at the end (DuckDB files are locked
        while open, so close it before a sync)."""
        con = self.connect()
        try:
            yield QmarkConnection(con, self.paramstyle)
            con.commit()
        finally:
            con.close()

    def run(self, *statements: str) -> None:
        with self.session() as con:
            for statement in statements:
                con.execute(ddl(self.dialect, statement))

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.session() as con:
            return con.query(sql, params)


def duckdb_target(root: Path) -> Target:
    import duckdb
    root.mkdir(parents=True, exist_ok=True)

    def connect() -> Any:
        con = duckdb.connect(str(root / "warehouse.duckdb"))
        con.execute("set TimeZone = 'UTC'")
        return con

    return Target("duckdb", "duckdb:///warehouse.duckdb", connect, "qmark")


@functools.cache
def postgres_available() -> str | None:
    """None when PostgreSQL answers on 127.0.0.1:5432, else why not."""
    try:
        import psycopg2
        psycopg2.connect(PG_DSN, connect_timeout=3).close()
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return f"{exc.__class__.__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return None


def require_postgres() -> None:
    problem = postgres_available()
    if problem:
        pytest.skip(f"PostgreSQL is not reachable on 127.0.0.1:5432: {problem}")


@contextmanager
def postgres_target() -> Iterator[Target]:
    """A Target in a fresh schema (tables, state and search_path all there), dropped afterwards."""
    import psycopg2
    require_postgres()
    schema = f"tt_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(PG_DSN)
    admin.autocommit = True
    admin.cursor().execute(f"create schema {schema}")

    def connect() -> Any:
        con = psycopg2.connect(PG_DSN, options=f"-csearch_path={schema}")
        con.cursor().execute("set timezone = 'UTC'")
        return con

    url = f"{PG_DSN}?options=-csearch_path%3D{schema}"
    try:
        yield Target("postgresql", url, connect, "format", state={"schema": schema}, notes={"schema": schema})
    finally:
        admin.cursor().execute(f"drop schema if exists {schema} cascade")
        admin.close()


def snowflake_target() -> Target:
    """Only usable inside `fakesnow.patch()`."""
    import snowflake.connector

    def connect() -> Any:
        return snowflake.connector.connect(**SNOWFLAKE_CONNECT, session_parameters={"TIMEZONE": "UTC"})

    return Target("snowflake", SNOWFLAKE_URL, connect, "format")


@contextmanager
def target_for(dialect: str, root: Path) -> Iterator[Target]:
    """A fresh, empty warehouse of the given kind; for Snowflake, fakesnow's in-memory patch stays on for
    the whole block (run syncs inside it)."""
    if dialect == "duckdb":
        yield duckdb_target(root / "project")
    elif dialect == "postgresql":
        with postgres_target() as target:
            yield target
    else:
        import fakesnow
        with fakesnow.patch():
            yield snowflake_target()


# ---------------------------------------------------------------- projects

def write_yaml(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def write_project(root: Path, target: Target, syncs: dict[str, dict[str, Any]], *,
                  queries: dict[str, str] | None = None, mappings: dict[str, Any] | None = None,
                  state: dict[str, Any] | None = None, copy_demo: bool = False) -> Path:
    """connector.yml for `target`; queries/ and mappings/ identical whatever the warehouse."""
    root.mkdir(parents=True, exist_ok=True)
    if copy_demo:
        for folder in ("queries", "mappings"):
            shutil.copytree(TEMPLATE_DIR / folder, root / folder, dirs_exist_ok=True)
    for name, text in (queries or {}).items():
        path = root / "queries" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for name, mapping in (mappings or {}).items():
        write_yaml(root / "mappings" / name, mapping)
    config: dict[str, Any] = {
        "warehouse": {"url": target.url},
        "tiktok": {"access_token": "${TIKTOK_ACCESS_TOKEN}", "max_attempts": 3, "max_retry_seconds": 1,
                   "timeout_seconds": 10},
        "syncs": syncs,
    }
    state_section = state if state is not None else target.state
    if state_section:
        config["state"] = state_section
    write_yaml(root / "connector.yml", config)
    return root


@dataclass
class Outcome:
    """One sync run: its report and the bodies of the requests the fake server received during it."""

    report: SyncReport
    bodies: list[dict[str, Any]]
    raws: list[bytes]

    @property
    def events(self) -> list[dict[str, Any]]:
        return [event for body in self.bodies for event in body["data"]]

    def by_id(self) -> dict[str, dict[str, Any]]:
        return {event["event_id"]: event for event in self.events}


@contextmanager
def fake_tiktok_env() -> Iterator[FakeTikTok]:
    """A fake TikTok the connector reaches through TIKTOK_API_BASE_URL / TIKTOK_ACCESS_TOKEN."""
    with FakeTikTok(access_token=TOKEN) as server, pytest.MonkeyPatch.context() as mp:
        mp.setenv(BASE_URL_ENV, server.base_url)
        mp.setenv("TIKTOK_ACCESS_TOKEN", TOKEN)
        mp.delenv("TIKTOK_TEST_EVENT_CODE", raising=False)
        mp.delenv("SNOWFLAKE_PASSWORD", raising=False)
        yield server


def sync_runs(root: Path, sync: str, runs: int = 1, now: dt.datetime = NOW,
              warehouse: Warehouse | None = None, **options: Any) -> list[Outcome]:
    """Run `sync` `runs` times against one fresh fake TikTok; each outcome has that run's requests."""
    outcomes = []
    with fake_tiktok_env() as server:
        seen = 0
        for _ in range(runs):
            project = load_project(root)
            report = run_sync(project, project.syncs[sync], RunOptions(now=now, **options), warehouse=warehouse)
            requests = server.requests()[seen:]
            seen += len(requests)
            outcomes.append(Outcome(report, [r.body for r in requests], [r.raw for r in requests]))
    return outcomes


def canonical(bodies: list[dict[str, Any]]) -> str:
    """Request bodies as one comparable text: events sorted by event_id, keys sorted.

    Batch boundaries are not part of it (they follow the order rows came in), but everything else in the
    request envelope is, per event."""
    events = []
    for body in bodies:
        envelope = {k: v for k, v in body.items() if k != "data"}
        for event in body["data"]:
            events.append({"envelope": envelope, "event": event})
    events.sort(key=lambda item: item["event"]["event_id"])
    return json.dumps(events, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# ---------------------------------------------------------------- looking at what the connector reads

class RecordingWarehouse:
    """Wraps a connector Warehouse: keeps every SQL text it streams and every row Python receives."""

    def __init__(self, inner: Warehouse) -> None:
        self.inner = inner
        self.dialect = inner.dialect
        self.sql: list[str] = []
        self.rows: list[tuple[Any, ...]] = []
        self.columns: list[list[str]] = []

    def stream(self, sql: str, params: dict[str, Any], chunk_size: int) -> ResultStream:
        self.sql.append(sql)
        result = self.inner.stream(sql, params, chunk_size)
        self.columns.append(result.columns)

        def chunks() -> Iterator[list[tuple[Any, ...]]]:
            for chunk in result.chunks:
                self.rows.extend(chunk)
                yield chunk

        return dataclasses.replace(result, chunks=chunks())

    def connect(self) -> Any:
        return self.inner.connect()

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:  # anything else the runner may ask of a warehouse
        return getattr(self.inner, name)


def open_recording(root: Path) -> RecordingWarehouse:
    project = load_project(root)
    return RecordingWarehouse(open_warehouse(project.warehouse_url, project.warehouse_options))


def duckdb_rendering(warehouse: Warehouse, mapping: Any, default_source: str | None, now: dt.datetime,
                     region: str | None = None) -> tuple[Any, Any, Any]:
    """Table `t` of a DuckDB warehouse planned as the runner plans an offline sync of it (cursor updated_at):
    the select plan, the Python builder over its rows, and the plan with what DuckDB renders."""
    from connector import query as sqlq
    from connector.dialects import Dialect
    from connector.events import EventBuilder
    from connector.mapping import compile_mapping, find_column
    from connector.sql_events import rendered_select
    from connector.timeutil import attribution_window

    with warehouse.stream("select * from t where 1 = 0", {}, 1) as probe:
        columns, kinds, struct_lists = list(probe.columns), probe.kinds, probe.struct_lists
    compiled = compile_mapping(mapping, columns, "offline")
    cursor_index = find_column(columns, "updated_at")
    dialect = Dialect("duckdb")
    plan = sqlq.plan_select(compiled, columns, kinds, cursor_index, dialect)
    window = attribution_window(now, 28, 300)
    builder = EventBuilder(plan.mapping, "offline", default_source, window, plan.cursor_index, region)
    fast = rendered_select(compiled, columns, kinds, cursor_index, "offline", default_source, window, builder,
                           dialect, struct_lists)
    assert fast is not None, "DuckDB renders none of these events"
    return plan, builder, plan.rendering(fast.items, fast.params, fast.prepared)


def rendered_rows(warehouse: Warehouse, rendering: Any) -> Iterator[tuple[Any, ...]]:
    """Every row of table `t` as the rendered read gives it (cursor order), its source columns kept: production
    SQL sends NULL for those of rendered rows, and the equivalence tests build every row with Python too."""
    from connector import query as sqlq

    sql, params = sqlq.incremental_sql("select * from t", dataclasses.replace(rendering, rendered_from=None),
                                       "updated_at", sqlq.ReadWindow(), None)
    with warehouse.stream(sql, params, 1000) as stream:
        for chunk in stream.chunks:
            yield from chunk
