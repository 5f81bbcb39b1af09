"""The demo warehouse: generated in DuckDB SQL (a large one in seconds) with the shapes of `insert_orders`,
and `tiktok-connector demo` through the real CLI at a size the old row-by-row build took minutes for.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import duckdb
from hypothesis import given, settings
from hypothesis import strategies as st

import requests

from connector.audience_spec import CREATE_PATH
from connector.config import load_project
from connector.demo import (
    DEMO_AUDIENCE, DEMO_AUDIENCE_TOKEN, DEMO_TOKEN, build_warehouse, demo_server, insert_orders, write_project,
)

UTC = dt.timezone.utc
# Columns that do not depend on the random numbers: they must be the same whichever way the rows are made.
FIXED_ORDER_COLUMNS = "order_id, event_name, email, phone, total, currency, store_id"
ITEM_COLUMNS = "order_id, line_no, sku, product_name, unit_price, qty"


def _query(path: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        con.execute("set TimeZone = 'UTC'")
        return con.execute(sql).fetchall()
    finally:
        con.close()


class _Collect:
    """Stands in for a DB-API connection: keeps what insert_orders would insert, as the warehouse returns it."""

    def __init__(self) -> None:
        self.tables: dict[str, list[tuple]] = {}

    def executemany(self, sql: str, rows: list[tuple]) -> None:
        table = sql.split()[2]
        self.tables.setdefault(table, []).extend(
            tuple(Decimal(v) if isinstance(v, str) and re.fullmatch(r"\d+\.\d\d", v) else v for v in row)
            for row in rows)


def _python_reference(orders: int, now: dt.datetime) -> dict[str, list[tuple]]:
    """The rows insert_orders makes (what the cross-warehouse tests load), without their random times."""
    collect = _Collect()
    insert_orders(collect, range(1, orders + 1), now, random.Random(1))
    return {"orders": sorted(row[:2] + row[4:] for row in collect.tables["orders"]),
            "order_items": sorted(collect.tables["order_items"])}


@settings(max_examples=25, deadline=None)
@given(orders=st.integers(min_value=1, max_value=800), seed=st.integers(min_value=0, max_value=2**31),
       now=st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2090, 1, 1), timezones=st.just(UTC)))
def test_sql_warehouse_has_the_shapes_of_insert_orders(tmp_path_factory, orders: int, seed: int,
                                                       now: dt.datetime) -> None:
    folder = tmp_path_factory.mktemp("demo")
    generated = folder / "sql.duckdb"
    build_warehouse(generated, orders, now, seed=seed)
    reference = _python_reference(orders, now)
    for table, columns in (("orders", FIXED_ORDER_COLUMNS), ("order_items", ITEM_COLUMNS)):
        assert _query(generated, f"select {columns} from {table} order by all") == reference[table], table
    # The random parts stay inside the same bounds: ordered up to 35 days (and 59 s) before `now`, at
    # least 0.01 day before it; updated 1-90 whole minutes after the order, or 5 minutes before `now`.
    rows = _query(generated, "select ordered_at, updated_at from orders")
    assert len(rows) == orders
    for ordered_at, updated_at in rows:
        assert now - dt.timedelta(days=35, seconds=60) <= ordered_at <= now - dt.timedelta(days=0.01)
        clamp = now - dt.timedelta(minutes=5)
        minutes = (updated_at - ordered_at) / dt.timedelta(minutes=1)
        assert updated_at == clamp or (updated_at < clamp and minutes in range(1, 91)), (ordered_at, updated_at)


def test_same_seed_same_warehouse_other_seed_other_times(tmp_path: Path) -> None:
    now = dt.datetime(2026, 12, 1, 12, tzinfo=UTC)
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        build_warehouse(tmp_path / f"{name}.duckdb", 3000, now, seed=seed)
    sql = "select * from orders order by order_id"
    a, b, c = (_query(tmp_path / f"{name}.duckdb", sql) for name in "abc")
    assert a == b
    assert sum(x[2] != y[2] for x, y in zip(a, c)) > 2900  # ordered_at differs almost everywhere


def test_ages_spread_evenly_over_35_days(tmp_path: Path) -> None:
    """A fifth of the orders are older than the 28-day window (the demo's event_too_old), as before."""
    now = dt.datetime(2026, 12, 1, 12, tzinfo=UTC)
    build_warehouse(tmp_path / "w.duckdb", 100_000, now)
    [(old, week1, total)] = _query(
        tmp_path / "w.duckdb",
        f"select count(*) filter (where ordered_at < timestamptz '{now.isoformat()}' - interval 28 day), "
        f"count(*) filter (where ordered_at >= timestamptz '{now.isoformat()}' - interval 7 day), count(*) "
        "from orders")
    assert total == 100_000
    assert 0.19 < old / total < 0.21 and 0.19 < week1 / total < 0.21  # 7 of 35 days each


def test_demo_with_50000_orders_through_the_cli(tmp_path: Path) -> None:
    orders = 50_000
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIKTOK_")}
    done = subprocess.run([sys.executable, "-m", "connector", "demo", "--json", "--orders", str(orders),
                           "--project", str(tmp_path / "demo")], capture_output=True, text=True, timeout=300,
                          env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    # The progress line: the warehouse in well under the 2 minutes the row-by-row build took for 50,000.
    [seconds] = re.findall(rf"sample warehouse: {orders:,} of {orders:,} orders generated \((\d+\.\d)s\)",
                           done.stderr)
    assert float(seconds) < 20
    first, second, third, audience, audience_run = (json.loads(line) for line in done.stdout.splitlines()
                                                     if line.startswith("{"))
    assert first["status"] == second["status"] == third["status"] == "success"
    # One row per item: 1 + n % 3 items for order n.
    assert first["rows_read"] == sum(1 + n % 3 for n in range(1, orders + 1))
    rejected = first["rejected_by_reason"]
    assert first["events_sent"] + sum(rejected.values()) == orders
    assert set(rejected) == {"event_too_old", "invalid_currency", "no_match_keys"}
    assert 0.19 < rejected["event_too_old"] / orders < 0.21
    # Every 97th order has currency XYZ and every 36th no email or phone, about 4/5 of them in the window.
    assert 0.7 * (orders // 97) < rejected["invalid_currency"] <= orders // 97
    assert 0.7 * (orders // 36) < rejected["no_match_keys"] <= orders // 36
    assert second["events_sent"] == 0
    # 25 late orders, 50,001-50,025: 50,004 has no match key; the rest are sent, the tie one exactly once.
    assert third["events_sent"] == 24 and third["rejected_by_reason"] == {"no_match_keys": 1}
    # The audience: customers (one per two orders) with a lifetime value of at least 300 of 0-600.
    customers = orders // 2
    assert audience["audience"] == "vip_buyers" and 0.45 < audience["rows_read"] / customers < 0.55
    assert audience["members_added"] + audience["rejected_by_reason"]["no_match_keys"] == audience["rows_read"]
    # ... and its first run adds those the preview said it would
    assert audience_run["status"] == "success" and audience_run["audience_id"]
    assert (audience_run["members_added"], audience_run["rejected_by_reason"]) == \
        (audience["members_added"], audience["rejected_by_reason"])


def test_the_demo_fake_serves_the_demo_audience(tmp_path: Path, monkeypatch) -> None:
    """The audience in the demo's connector.yml is one the demo's fake accepts: its token and advertiser."""
    monkeypatch.setenv("TIKTOK_AUDIENCE_ACCESS_TOKEN", DEMO_AUDIENCE_TOKEN)
    write_project(tmp_path)
    project = load_project(tmp_path)
    audience = project.audiences[DEMO_AUDIENCE]
    with demo_server() as server:
        answer = requests.post(server.base_url + CREATE_PATH, timeout=5,
                               headers={"Access-Token": project.tiktok.audience_access_token},
                               json={"advertiser_id": audience.advertiser_id, "action": "create",
                                     "custom_audience_name": audience.audience_name}).json()
        assert answer["code"] == 0, answer
        refused = requests.post(server.base_url + CREATE_PATH, timeout=5, headers={"Access-Token": DEMO_TOKEN},
                                json={"advertiser_id": audience.advertiser_id, "action": "create",
                                      "custom_audience_name": "x"}).json()
        assert refused["code"] != 0  # the Events API token is not the audience one


def test_customers_one_per_two_orders_with_the_shapes_of_the_orders(tmp_path: Path) -> None:
    build_warehouse(tmp_path / "w.duckdb", 720, dt.datetime(2026, 12, 1, 12, tzinfo=UTC))
    rows = _query(tmp_path / "w.duckdb", "select customer_id, email, phone, lifetime_value from customers order by 1")
    assert len(rows) == 360 and len({r[0] for r in rows}) == 360
    assert sum(r[1] is None and r[2] is None for r in rows) == 360 // 36
    assert all(0 <= r[3] < 600 for r in rows)
    orders = dict(_query(tmp_path / "w.duckdb", "select order_id, email from orders"))
    assert all(orders[f"ORD-{int(r[0][4:]):06d}"] == r[1] for r in rows)  # customer n placed order n
