"""Memory stays flat whatever the number of rows sharing one cursor value (a page of ties), measured as the
connector process's own peak RSS (its report's `peak_rss_mb`), through the real CLI in a subprocess, against a
fake TikTok in another process."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import requests
import yaml

from delivery_helpers import MAPPING, SOURCE_ID, TOKEN

UTC = dt.timezone.utc


def _tie_table(path: Path, rows: int) -> None:
    """`rows` valid orders, every one with the same `updated_at`."""
    now = dt.datetime.now(UTC).replace(microsecond=0)
    con = duckdb.connect(str(path))
    try:
        con.execute(f"""create table orders as select
            'ORD-' || lpad(cast(i as varchar), 7, '0') as order_id, 'purchase' as event_name,
            timestamptz '{(now - dt.timedelta(days=2)).isoformat()}' + to_seconds(i % 80000) as ordered_at,
            timestamptz '{(now - dt.timedelta(days=1)).isoformat()}' as updated_at,
            'Customer' || cast(i as varchar) || '@Example.com' as email,
            '+1415555' || lpad(cast(i % 10000 as varchar), 4, '0') as phone,
            cast(19.99 as decimal(12, 2)) as total, 'USD' as currency
        from range({rows}) t(i)""")
    finally:
        con.close()


def _project(root: Path, warehouse: Path, memory_limit: str | None = None) -> Path:
    (root / "queries").mkdir(parents=True)
    (root / "queries" / "orders.sql").write_text("select * from orders\n")
    (root / "mappings").mkdir()
    (root / "mappings" / "orders.yml").write_text(yaml.safe_dump(MAPPING))
    shutil.copyfile(warehouse, root / "warehouse.duckdb")
    config: dict[str, Any] = {
        "warehouse": {"url": "duckdb:///warehouse.duckdb", **({"memory_limit": memory_limit} if memory_limit else {})},
        "tiktok": {"access_token": "${TIKTOK_ACCESS_TOKEN}"},
        "syncs": {"orders": {"query": "orders.sql", "mapping": "orders.yml", "event_source_id": SOURCE_ID,
                             "cursor": "updated_at"}},
    }
    (root / "connector.yml").write_text(yaml.safe_dump(config))
    return root


class FakeProcess:
    """The fake TikTok in its own process: the events it keeps stay out of the measured ones."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "connector.testing.fake_tiktok", "--port", "0",
                                         "--token", TOKEN], stdout=subprocess.PIPE, text=True)
        self.base_url = self.process.stdout.readline().strip().rsplit(" ", 1)[-1]  # type: ignore[union-attr]

    def stats(self) -> dict[str, int]:
        return requests.get(self.base_url.replace("/open_api", "") + "/_fake/stats", timeout=30).json()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def _sync(project: Path) -> dict[str, Any]:
    """The CLI's report, with what a fresh fake TikTok accepted from it."""
    fake = FakeProcess()
    try:
        env = {**os.environ, "TIKTOK_API_BASE_URL": fake.base_url, "TIKTOK_ACCESS_TOKEN": TOKEN}
        env.pop("TIKTOK_TEST_EVENT_CODE", None)
        done = subprocess.run([sys.executable, "-m", "connector", "sync", "--json", "--quiet", "--project",
                               str(project)], env=env, capture_output=True, text=True, timeout=600)
        report = json.loads(done.stdout.strip().splitlines()[-1])
        stats = fake.stats()
    finally:
        fake.stop()
    return {**report, "accepted": stats["accepted_events"], "duplicates": stats["duplicates_within_48h"]}


def test_a_page_of_ties_keeps_memory_flat_within_a_small_memory_limit(tmp_path: Path) -> None:
    """300,000 rows sharing one cursor value (six pages' worth) against 100,000 (two), with `memory_limit: 64MB`
    (the default, written out): the same peak within a margin (measured: 1.0–1.1×), where a page of ties was
    sorted whole and held (1.4× without a limit, and out of memory with 64MB). Every row is sent once."""
    reports = {}
    for rows in (100_000, 300_000):
        warehouse = tmp_path / f"ties_{rows}.duckdb"
        _tie_table(warehouse, rows)
        report = reports[rows] = _sync(_project(tmp_path / f"p{rows}", warehouse, memory_limit="64MB"))
        assert report["status"] == "success", report["error"]
        assert report["events_sent"] == report["accepted"] == report["rows_read"] == rows
        assert report["duplicates"] == 0
    peaks = {rows: report["peak_rss_mb"] for rows, report in reports.items()}
    print(peaks)
    assert peaks[300_000] < 1.25 * peaks[100_000], peaks


def test_duckdb_defaults_to_a_small_memory_limit_one_thread_and_spills_beyond_it(tmp_path: Path) -> None:
    """Without settings DuckDB gets 64MB and one thread (its own defaults: 80 % of RAM, a thread per core).
    A sort larger than that spills to `<file>.tmp` next to the DuckDB file instead of failing."""
    from connector.warehouse import open_warehouse

    warehouse = open_warehouse(f"duckdb:///{tmp_path / 'warehouse.duckdb'}")
    try:
        connection = warehouse.connect()
        (threads, limit, temp), = connection.query(
            "select current_setting('threads'), current_setting('memory_limit'), current_setting('temp_directory')")
        assert threads == 1 and limit.startswith("61.0 MiB")  # 64MB as DuckDB prints it
        assert temp == str(tmp_path / "warehouse.duckdb.tmp")
        rows = 600_000  # about 100 MB of sorted rows
        with warehouse.stream(f"select i, repeat('x', 150) || i as s from range({rows}) t(i) order by s desc",
                              {}, 10_000) as stream:
            first = next(stream.chunks)
            spilled = connection.query("select coalesce(sum(size), 0) from duckdb_temporary_files()")[0][0]
            count = len(first) + sum(len(chunk) for chunk in stream.chunks)
    finally:
        warehouse.close()
    assert count == rows
    assert spilled > 8 * 2**20, spilled  # measured: 30 MB; nothing with DuckDB's own limit
