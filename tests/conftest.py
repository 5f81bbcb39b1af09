"""Shared fixtures: a started fake TikTok server and real projects (connector.yml, SQL, mapping, DuckDB file)."""

from __future__ import annotations

import copy
import datetime as dt
import logging
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from connector.config import BASE_URL_ENV, load_project
from connector.report import SyncReport
from connector.runner import RunOptions, run_sync
from connector.testing.fake_tiktok import FakeTikTok
from delivery_helpers import MAPPING

UTC = dt.timezone.utc
NOW = dt.datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
TOKEN = "test-token"
SOURCE_ID = "7654321098765432109"
SYNC = "orders"

ORDERS_DDL = """create table orders (
    order_id varchar, event_name varchar, ordered_at timestamptz, updated_at timestamptz,
    email varchar, phone varchar, total decimal(12, 2), currency varchar)"""

DEFAULT_QUERY = "select * from orders\n"

DEFAULT_MAPPING: dict[str, Any] = MAPPING  # offline purchases: the mapping most tests use

# Short, bounded retries: a failing server costs well under a second per batch.
FAST_RETRIES = {"max_attempts": 3, "max_retry_seconds": 0.6, "timeout_seconds": 5}


def make_order(n: int, now: dt.datetime = NOW, **overrides: Any) -> dict[str, Any]:
    """A valid order row, `n` seconds apart from its neighbours, changed one hour before `now`."""
    row = {
        "order_id": f"ORD-{n:05d}",
        "event_name": "purchase",
        "ordered_at": now - dt.timedelta(days=1) + dt.timedelta(seconds=n),
        "updated_at": now - dt.timedelta(hours=1) + dt.timedelta(seconds=n),
        "email": f"Customer{n}@Example.com",
        "phone": f"+1 (415) 555-{n % 10000:04d}",
        "total": Decimal("19.99"),
        "currency": "USD",
    }
    row.update(overrides)
    return row


@dataclass
class TestProject:
    """A project directory with its warehouse file; `run` syncs it in-process with a fixed clock."""

    __test__ = False  # not a test class, despite the name

    root: Path
    sync: str = SYNC

    @property
    def db(self) -> Path:
        return self.root / "warehouse.duckdb"

    def insert(self, rows: Iterable[Mapping[str, Any]], table: str = "orders") -> None:
        insert_rows(self.db, table, list(rows))

    def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        con = duckdb.connect(str(self.db))
        try:
            con.execute("set TimeZone = 'UTC'")
            return con.execute(sql, params or []).fetchall()
        finally:
            con.close()

    def run(self, now: dt.datetime | None = NOW, sync: str | None = None, **options: Any) -> SyncReport:
        project = load_project(self.root)
        return run_sync(project, project.syncs[sync or self.sync], RunOptions(now=now, **options))

    def watermark(self) -> str | None:
        """The stored watermark; None when there is none, or no state tables (runs that keep no state create none)."""
        if not self.query("select 1 from duckdb_tables() where table_name = 'tiktok_watermarks'"):
            return None
        rows = self.query("select watermark from tiktok_watermarks where sync_name = ?", [self.sync])
        return rows[0][0] if rows else None

    def count(self, table: str) -> int:
        """Rows in a state table; 0 when it does not exist (runs that keep no state create no tables)."""
        if not self.query("select 1 from duckdb_tables() where table_name = ?", [table]):
            return 0
        return self.query(f"select count(*) from {table}")[0][0]

    def rejects(self) -> list[tuple[Any, ...]]:
        """(reason, event_id, detail) of every stored reject, sorted."""
        return sorted(self.query("select reason, event_id, detail from tiktok_rejects"), key=repr)

    def runs(self) -> list[dict[str, Any]]:
        con = duckdb.connect(str(self.db))
        try:
            cur = con.execute("select * from tiktok_runs order by started_at, finished_at")
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]
        finally:
            con.close()

    def table_text(self, table: str) -> str:
        """Every value of a table as one string, to look for things that must not be there."""
        return "\n".join(repr(row) for row in self.query(f"select * from {table}"))


def insert_rows(db: Path, table: str, rows: list[Mapping[str, Any]]) -> None:
    """Insert dict rows in one statement (unnest of bound lists), cast to the table's column types."""
    if not rows:
        return
    con = duckdb.connect(str(db))
    try:
        types = {name: kind for name, kind, *_ in con.execute(f"describe {table}").fetchall()}
        columns = list(rows[0])
        params = {f"c{i}": [row.get(name) for row in rows] for i, name in enumerate(columns)}
        selects = ", ".join(f"unnest(cast($c{i} as {types[name]}[]))" for i, name in enumerate(columns))
        quoted = ", ".join(f'"{name}"' for name in columns)
        con.execute(f"insert into {table} ({quoted}) select {selects}", params)
    finally:
        con.close()


def write_yaml(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


@pytest.fixture
def fake_tiktok(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTikTok]:
    """A started fake TikTok accepting token 'test-token'; the connector finds it through the environment."""
    with FakeTikTok(access_token=TOKEN) as server:
        monkeypatch.setenv(BASE_URL_ENV, server.base_url)
        monkeypatch.setenv("TIKTOK_ACCESS_TOKEN", TOKEN)
        monkeypatch.delenv("TIKTOK_TEST_EVENT_CODE", raising=False)
        yield server


@pytest.fixture
def order() -> Callable[..., dict[str, Any]]:
    return make_order


@pytest.fixture
def default_mapping() -> dict[str, Any]:
    """A fresh copy of the mapping `make_project` writes by default, to edit in a test."""
    return copy.deepcopy(DEFAULT_MAPPING)


@pytest.fixture
def make_project(tmp_path: Path) -> Callable[..., TestProject]:
    """Write a project and its DuckDB warehouse; every call gets its own directory.

    rows: order rows for the `orders` table. mapping: a dict written to mappings/orders.yml, or None for no
    `mapping:` key (the built-in default). sync_overrides: keys merged into the sync (None removes a key).
    tiktok: keys merged into the tiktok section. query: the SQL of queries/orders.sql. ddl: extra
    statements run on the warehouse (more tables); tables: {table: rows} inserted after them.
    """
    counter = itertools.count(1)

    def make(rows: Iterable[Mapping[str, Any]] = (), *, mapping: dict[str, Any] | None = DEFAULT_MAPPING,
             sync_overrides: Mapping[str, Any] | None = None, tiktok: Mapping[str, Any] | None = None,
             query: str = DEFAULT_QUERY, ddl: Iterable[str] = (), tables: Mapping[str, list] | None = None,
             sync_name: str = SYNC) -> TestProject:
        root = tmp_path / f"project{next(counter)}"
        (root / "queries").mkdir(parents=True)
        sync: dict[str, Any] = {"query": "orders.sql", "mapping": "orders.yml", "event_source": "offline",
                                "event_source_id": SOURCE_ID, "cursor": "updated_at"}
        if mapping is None:
            del sync["mapping"]
        else:
            write_yaml(root / "mappings" / "orders.yml", mapping)
        for key, value in (sync_overrides or {}).items():
            if value is None:
                sync.pop(key, None)
            else:
                sync[key] = value
        tiktok_section = {"access_token": "${TIKTOK_ACCESS_TOKEN}", **FAST_RETRIES, **(tiktok or {})}
        write_yaml(root / "connector.yml", {
            "warehouse": {"url": "duckdb:///warehouse.duckdb"},
            "tiktok": tiktok_section,
            "syncs": {sync_name: sync},
        })
        (root / "queries" / "orders.sql").write_text(query, encoding="utf-8")
        con = duckdb.connect(str(root / "warehouse.duckdb"))
        try:
            con.execute(ORDERS_DDL)
            for statement in ddl:
                con.execute(statement)
        finally:
            con.close()
        project = TestProject(root, sync_name)
        project.insert(rows)
        for table, table_rows in (tables or {}).items():
            project.insert(table_rows, table)
        return project

    return make


@pytest.fixture
def now() -> dt.datetime:
    """The real clock: CLI runs use it, so rows are built relative to it."""
    return dt.datetime.now(UTC)


@pytest.fixture(autouse=True)
def _restore_connector_logging() -> Iterator[None]:
    """main() points the 'connector' logger at the current (captured) stderr: put it back afterwards."""
    logger = logging.getLogger("connector")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved
