"""Helpers for the delivery-guarantee and chaos tests: real projects (connector.yml, SQL, mapping, a DuckDB
file in tmp_path), in-process runs with a fixed clock, and CLI runs as real subprocesses.

Self-contained on purpose: it does not depend on tests/conftest.py.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import yaml

from connector.config import BASE_URL_ENV, load_project
from connector.report import SyncReport
from connector.runner import RunOptions, run_sync
from connector.tiktok import RetryPolicy, TikTokClient

UTC = dt.timezone.utc
TOKEN = "test-token"
SOURCE_ID = "7654321098765432109"
SYNC = "orders"
PYTHON = sys.executable
REPO = Path(__file__).resolve().parents[1]

CURSOR_SQL_TYPES = {"timestamptz": "timestamptz", "timestamp": "timestamp", "int": "bigint"}

MAPPING: dict[str, Any] = {
    "fields": {
        "event": "event_name",
        "event_id": "order_id",
        "event_time": "ordered_at",
        "user.email": "email",
        "user.phone": "phone",
        "properties.value": "total",
        "properties.currency": "currency",
        "properties.order_id": "order_id",
    },
    "events": {"purchase": "Purchase"},
}


def utc_now() -> dt.datetime:
    """The real time, to the second: CLI runs use the real clock, so data is placed relative to it."""
    return dt.datetime.now(UTC).replace(microsecond=0)


def order(n: int, updated_at: Any, ordered_at: dt.datetime, **overrides: Any) -> dict[str, Any]:
    """A valid order row with id ORD-nnnnnn."""
    row = {
        "order_id": f"ORD-{n:06d}",
        "event_name": "purchase",
        "ordered_at": ordered_at,
        "updated_at": updated_at,
        "email": f"Customer{n}@Example.com",
        "phone": f"+1 (415) 555-{n % 10000:04d}",
        "total": Decimal("19.99"),
        "currency": "USD",
    }
    row.update(overrides)
    return row


def oid(n: int) -> str:
    return f"ORD-{n:06d}"


@dataclass
class Project:
    root: Path
    sync: str = SYNC
    cursor_type: str = "timestamptz"

    @property
    def db(self) -> Path:
        return self.root / "warehouse.duckdb"

    # warehouse
    def connect(self) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(str(self.db))
        con.execute("set TimeZone = 'UTC'")
        return con

    def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        con = self.connect()
        try:
            return con.execute(sql, params or []).fetchall()
        finally:
            con.close()

    def execute(self, sql: str, params: Any = None) -> None:
        con = self.connect()
        try:
            con.execute(sql, params or [])
        finally:
            con.close()

    def insert(self, rows: Iterable[Mapping[str, Any]]) -> None:
        rows = list(rows)
        if not rows:
            return
        con = self.connect()
        try:
            types = {name: kind for name, kind, *_ in con.execute("describe orders").fetchall()}
            columns = list(rows[0])
            params = {f"c{i}": [row.get(name) for row in rows] for i, name in enumerate(columns)}
            selects = ", ".join(f"unnest(cast($c{i} as {types[name]}[]))" for i, name in enumerate(columns))
            con.execute(f"insert into orders ({', '.join(columns)}) select {selects}", params)
        finally:
            con.close()

    # state
    def watermark(self) -> tuple[str, str] | None:
        rows = self.query("select watermark, watermark_type from tiktok_watermarks where sync_name = ?",
                          [self.sync])
        return (rows[0][0], rows[0][1]) if rows else None

    def watermark_rows(self) -> list[tuple[Any, ...]]:
        return self.query("select * from tiktok_watermarks order by sync_name")

    def ledger_ids(self) -> list[str]:
        return [r[0] for r in self.query("select event_id from tiktok_ledger where sync_name = ? order by 1",
                                         [self.sync])]

    def rejects(self) -> list[dict[str, Any]]:
        con = self.connect()
        try:
            cur = con.execute("select * from tiktok_rejects where sync_name = ? order by recorded_at, event_id",
                              [self.sync])
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]
        finally:
            con.close()

    def table_exists(self, name: str) -> bool:
        return bool(self.query("select 1 from information_schema.tables where table_name = ?", [name]))

    # runs
    def run(self, now: dt.datetime | None = None, client: TikTokClient | None = None,
            **options: Any) -> SyncReport:
        """One in-process run; `now` fixes the run's clock (safety margin, attribution window)."""
        project = load_project(self.root)
        return run_sync(project, project.syncs[self.sync], RunOptions(now=now, **options), client=client)

    def fast_client(self, max_attempts: int = 6, max_elapsed: float = 30.0) -> TikTokClient:
        """The connector's real client with short backoff delays, so tests with several faults stay fast."""
        project = load_project(self.root)
        return TikTokClient(project.tiktok.base_url, project.require_token(),
                            timeout=project.tiktok.timeout_seconds, seed=1,
                            retry=RetryPolicy(max_attempts=max_attempts, base_delay=0.02, max_delay=0.1,
                                              max_elapsed=max_elapsed))

    def cli_args(self, *args: str) -> list[str]:
        return [PYTHON, "-m", "connector", *args, "--project", str(self.root), "--json"]

    def cli(self, *args: str, env: Mapping[str, str], timeout: float = 60) -> CliResult:
        proc = subprocess.run(self.cli_args(*args), env=dict(env), cwd=str(REPO), capture_output=True,
                              text=True, timeout=timeout)
        return CliResult(proc.returncode, proc.stdout, proc.stderr)


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def reports(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.startswith("{")]

    @property
    def report(self) -> dict[str, Any]:
        reports = self.reports
        assert len(reports) == 1, f"expected one JSON report, got {self.stdout!r} / {self.stderr!r}"
        return reports[0]


def cli_env(base_url: str, token: str = TOKEN, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIKTOK_")}
    env.update({BASE_URL_ENV: base_url, "TIKTOK_ACCESS_TOKEN": token, "PYTHONUNBUFFERED": "1"})
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


def write_yaml(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def make_project(root: Path, rows: Iterable[Mapping[str, Any]] = (), *, cursor_type: str = "timestamptz",
                 sync: Mapping[str, Any] | None = None, tiktok: Mapping[str, Any] | None = None,
                 query: str = "select * from orders\n") -> Project:
    """A project dir with connector.yml, queries/orders.sql, mappings/orders.yml and warehouse.duckdb whose
    `orders.updated_at` (the cursor) has the given type: timestamptz, timestamp (naive) or int."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "queries").mkdir(exist_ok=True)
    (root / "queries" / "orders.sql").write_text(query, encoding="utf-8")
    write_yaml(root / "mappings" / "orders.yml", MAPPING)
    sync_section: dict[str, Any] = {
        "query": "orders.sql", "mapping": "orders.yml", "event_source": "offline",
        "event_source_id": SOURCE_ID, "cursor": "updated_at", "safety_margin_seconds": 0,
    }
    sync_section.update(sync or {})
    tiktok_section: dict[str, Any] = {"access_token": "${TIKTOK_ACCESS_TOKEN}", "max_attempts": 3,
                                      "max_retry_seconds": 5, "timeout_seconds": 5}
    tiktok_section.update(tiktok or {})
    write_yaml(root / "connector.yml", {"warehouse": {"url": "duckdb:///warehouse.duckdb"},
                                        "tiktok": tiktok_section, "syncs": {SYNC: sync_section}})
    con = duckdb.connect(str(root / "warehouse.duckdb"))
    try:
        con.execute(f"""create table orders (order_id varchar, event_name varchar, ordered_at timestamptz,
                        updated_at {CURSOR_SQL_TYPES[cursor_type]}, email varchar, phone varchar,
                        total decimal(12, 2), currency varchar)""")
    finally:
        con.close()
    project = Project(root, SYNC, cursor_type)
    project.insert(rows)
    return project


def sent_once(accepted: Iterable[str], expected: Iterable[str]) -> None:
    """Every expected id was accepted exactly once and nothing else was accepted."""
    got = Counter(accepted)
    expected = set(expected)
    twice = sorted(i for i, n in got.items() if n > 1)
    assert not twice, f"sent more than once: {twice[:10]}"
    assert set(got) == expected, (f"missing {sorted(expected - set(got))[:10]}, "
                                  f"unexpected {sorted(set(got) - expected)[:10]}")
