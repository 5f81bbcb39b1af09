"""`tiktok-connector demo`: a sample DuckDB warehouse synced to a local fake TikTok server, end to end."""

from __future__ import annotations

import datetime as dt
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from .config import BASE_URL_ENV, load_project
from .config_schema import SCHEMA_FILE
from .output import MODE, emit_result
from .report import SyncReport
from .runner import RunOptions, run_sync
from .timeutil import utcnow

if TYPE_CHECKING:
    from .testing.fake_tiktok import FakeTikTok

TEMPLATE_DIR = Path(__file__).parent / "demo"
DEMO_TOKEN = "demo-token"
DEMO_AUDIENCE_TOKEN = "demo-audience-token"  # the fake's Marketing API token (audiences)
DEMO_ADVERTISER = "7000000000000000001"  # the advertiser of connector.yml's vip_buyers audience
DEMO_AUDIENCE = "vip_buyers"
PRODUCTS = [("SKU-TEE", "T-shirt", "19.99"), ("SKU-HOODIE", "Hoodie", "49.00"), ("SKU-CAP", "Cap", "15.50"),
            ("SKU-SOCKS", "Socks (3 pack)", "9.90"), ("SKU-MUG", "Mug", "12.00")]


# A copy of the installed schema, which connector.yml's first lines point editors at (they read it offline).
PROJECT_SCHEMA = Path(".tiktok-connector") / "connector.schema.json"


def write_project(root: Path) -> None:
    """Copy the demo project files into `root`, keeping any the user already has."""
    for source in TEMPLATE_DIR.rglob("*"):
        target = root / source.relative_to(TEMPLATE_DIR)
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    schema = root / PROJECT_SCHEMA
    if not schema.exists():
        schema.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SCHEMA_FILE, schema)


CHUNK_ORDERS = 250_000  # orders generated per statement: one progress step, bounded memory

# Deterministic pseudo-random numbers in SQL: murmur3's 32-bit finaliser over (order number, seed, salt),
# as a fraction in [0, 1). Plain integer arithmetic, so the same warehouse on every run and DuckDB version.
_MACROS = """
create or replace temp macro demo_xorshift(h, s) as xor(h, h >> s);
create or replace temp macro demo_fmix(h) as demo_xorshift(
    (demo_xorshift((demo_xorshift(h, 16) * 2246822507) % 4294967296, 13) * 3266489909) % 4294967296, 16);
create or replace temp macro demo_fraction(n, seed, salt) as
    demo_fmix((n::ubigint * 2654435761 + seed::ubigint * 97 + salt * 40503) % 4294967296) / 4294967296.0;
"""

# The same shapes as insert_orders: 1-3 items per order; no email for every 9th order, no phone for every
# 4th (so every 36th has no match key), currency XYZ for every 97th, ordered up to 35 days ago (a fifth
# outside the 28-day window), updated 1-90 minutes after the order but at least 5 minutes before `now`.
_ITEMS_SQL = """
insert into order_items
select printf('ORD-%06d', n), k + 1, p.sku, p.product_name, p.unit_price, 1 + (n + k + 1) % 2
from range($first, $stop) o(n)
join range(3) l(k) on k <= n % 3
join demo_products p on p.slot = (n + k) % 5
order by n, k
"""
_ORDERS_SQL = """
insert into orders
select order_id, 'purchase', ordered_at,
       least(ordered_at + to_minutes(1 + floor(demo_fraction(n, $seed, 3) * 90)::bigint),
             $now::timestamptz - interval 5 minute),
       email, phone, total, currency, store_id
from (
    select n, printf('ORD-%06d', n) as order_id,
           $now::timestamptz - to_microseconds(((0.01 + demo_fraction(n, $seed, 1) * 34.99) * 86400e6)::bigint)
                             - to_seconds(floor(demo_fraction(n, $seed, 2) * 60)::bigint) as ordered_at,
           case when n % 9 <> 0 then '  Customer' || n || '@Example.com ' end as email,
           case when n % 4 <> 0 then '+1 (415) 555-' || lpad((n % 10000)::varchar, 4, '0') end as phone,
           (select sum(p.unit_price * (1 + (n + k + 1) % 2)) from range(3) l(k)
            join demo_products p on p.slot = (n + k) % 5 where k <= n % 3)::decimal(12, 2) as total,
           case when n % 97 = 0 then 'XYZ' else 'USD' end as currency,
           100 + n % 7 as store_id
    from range($first, $stop) o(n)
)
order by n
"""


# One customer per two orders (customer n placed order n): the people of the demo's audience. Emails and
# phones as in the orders, a fifth of the phones national (no +1: default_phone_region), every 36th
# customer with neither; lifetime value spread evenly over 0-600.
_CUSTOMERS_SQL = """
create table customers as
select printf('CUS-%06d', n) as customer_id,
       case when n % 9 <> 0 then '  Customer' || n || '@Example.com ' end as email,
       case when n % 4 <> 0 then case when n % 5 = 0 then '(415) 555-' else '+1 (415) 555-' end
                                 || lpad((n % 10000)::varchar, 4, '0') end as phone,
       (demo_fraction(n, $seed, 4) * 600)::decimal(12, 2) as lifetime_value
from range(1, $stop) c(n)
order by n
"""


def build_warehouse(path: Path, orders: int, now: dt.datetime, seed: int = 7,
                    progress: Callable[[int, int], None] | None = None) -> None:
    """A fresh warehouse: `orders` and `order_items`, mostly valid, a few rows of each problem, and
    `customers` (one per two orders) for the audience.

    Generated inside DuckDB from `range()`, CHUNK_ORDERS at a time (a million orders take seconds);
    `progress(done, orders)` is called after each chunk."""
    import duckdb
    for suffix in ("", ".wal"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    try:
        con.execute("""create table orders (order_id varchar, event_name varchar, ordered_at timestamptz,
                       updated_at timestamptz, email varchar, phone varchar, total decimal(12, 2),
                       currency varchar, store_id integer)""")
        con.execute("create table order_items (order_id varchar, line_no integer, sku varchar, "
                    "product_name varchar, unit_price decimal(10, 2), qty integer)")
        con.execute("create temp table demo_products (slot integer, sku varchar, product_name varchar, "
                    "unit_price decimal(10, 2))")
        con.executemany("insert into demo_products values (?, ?, ?, ?)",
                        [(slot, *product) for slot, product in enumerate(PRODUCTS)])
        con.execute(_MACROS)
        for first in range(1, orders + 1, CHUNK_ORDERS):
            stop = min(first + CHUNK_ORDERS, orders + 1)
            con.execute("begin")
            con.execute(_ITEMS_SQL, {"first": first, "stop": stop})
            con.execute(_ORDERS_SQL, {"first": first, "stop": stop, "now": now, "seed": seed % 2**32})
            con.execute("commit")
            if progress:
                progress(stop - 1, orders)
        con.execute(_CUSTOMERS_SQL, {"seed": seed % 2**32, "stop": max(orders // 2, 1) + 1})
    finally:
        con.close()


def insert_orders(con: object, numbers: range, now: dt.datetime, rng: random.Random,
                  updated_at: dt.datetime | None = None, max_age_days: float = 35) -> None:
    """The orders `numbers`, row by row through any DB-API connection taking `?` (the cross-warehouse tests
    load every dialect with it; the demo adds its late orders with it). The shapes of build_warehouse."""
    order_rows, item_rows = [], []
    for n in numbers:
        order_id = f"ORD-{n:06d}"
        ordered_at = now - dt.timedelta(days=rng.uniform(0.01, max_age_days), seconds=rng.randint(0, 59))
        email = f"  Customer{n}@Example.com " if n % 9 else ""
        phone = f"+1 (415) 555-{n % 10000:04d}" if n % 4 else ""
        currency = "XYZ" if n % 97 == 0 else "USD"
        lines = [PRODUCTS[(n + k) % len(PRODUCTS)] for k in range(1 + n % 3)]
        total = 0.0
        for line_no, (sku, name, price) in enumerate(lines, start=1):
            qty = 1 + (n + line_no) % 2
            total += float(price) * qty
            item_rows.append((order_id, line_no, sku, name, price, qty))
        changed = updated_at or min(ordered_at + dt.timedelta(minutes=rng.randint(1, 90)),
                                    now - dt.timedelta(minutes=5))
        order_rows.append((order_id, "purchase", ordered_at, changed, email or None, phone or None,
                           f"{total:.2f}", currency, 100 + n % 7))
    con.executemany("insert into orders values (?, ?, ?, ?, ?, ?, ?, ?, ?)", order_rows)  # type: ignore[attr-defined]
    con.executemany("insert into order_items values (?, ?, ?, ?, ?, ?)", item_rows)  # type: ignore[attr-defined]


def run_demo(project_dir: str, orders: int = 2000, as_json: bool = False) -> int:
    root = Path(project_dir if project_dir != "." else "tiktok-demo").resolve()
    root.mkdir(parents=True, exist_ok=True)
    write_project(root)
    now = utcnow()
    warehouse_file = root / "warehouse.duckdb"
    say = (lambda text: None) if as_json else (lambda text: emit_result({"demo": text}, text))
    say(f"demo project: {root}\nsample warehouse: {warehouse_file} ({orders:,} orders, a few with problems)")
    sys.stdout.flush()
    build_warehouse(warehouse_file, orders, now, progress=None if MODE.log_json else _progress_line(sys.stderr))
    with demo_server() as server:
        # The demo talks to its own fake only: a real token the user exported is not used.
        os.environ[BASE_URL_ENV] = server.base_url
        os.environ["TIKTOK_ACCESS_TOKEN"] = DEMO_TOKEN
        os.environ["TIKTOK_AUDIENCE_ACCESS_TOKEN"] = DEMO_AUDIENCE_TOKEN
        say(f"fake TikTok Events API and audience endpoints: {server.base_url}\n")
        reports = [_sync(root, "1. first run: everything in the attribution window", as_json)]
        if reports[0].ok:
            reports.append(_sync(root, "2. second run, nothing new: sends nothing", as_json))
            _add_late_orders(warehouse_file, orders, now)
            reports.append(_sync(root, "3. 25 new orders, one with the same updated_at as the watermark", as_json))
        ids = server.accepted_event_ids()
        say(f"the fake server accepted {len(ids)} events, {len(ids) - len(set(ids))} of them twice\n")
        _audience_preview(root, "4. the audience vip_buyers: what its first run would send (preview, sends nothing)")
        reports.append(_audience_run(root, "5. the audience's first run: created in the fake TikTok, members added"))
    return 0 if all(r.ok for r in reports) else 1


def demo_server() -> FakeTikTok:
    """The demo's fake TikTok: the Events API with DEMO_TOKEN, the audience endpoints with
    DEMO_AUDIENCE_TOKEN for the advertiser of connector.yml's audience."""
    from .testing.fake_tiktok import FakeTikTok
    return FakeTikTok(access_token=DEMO_TOKEN, audience_access_token=DEMO_AUDIENCE_TOKEN,
                      advertiser_ids=[DEMO_ADVERTISER])


def _audience_preview(root: Path, title: str) -> None:
    from .audience_commands import plan_preview
    project = load_project(root)
    preview = plan_preview(project, project.audiences[DEMO_AUDIENCE], limit=1)
    c = preview.counts
    text = (f"{title}\n  rows read {c.rows}, members to add {c.adds}, to remove {c.removes}, not sent "
            + (", ".join(f"{k} {v}" for k, v in sorted(c.rejected.items())) or "0")
            + "".join(f"\n  note: {note}" for note in preview.notes)
            + f"\n  tiktok-connector preview {DEMO_AUDIENCE} --project {root} shows the SQL and the hashed requests\n")
    emit_result(preview.to_dict(), text)


def _audience_run(root: Path, title: str) -> SyncReport:
    from .audience_run import run_audience
    project = load_project(root)
    report = run_audience(project, project.audiences[DEMO_AUDIENCE], RunOptions())
    emit_result(report.to_dict(), f"{title}\n{report.to_text()}\n")
    return report


def _progress_line(stream: TextIO) -> Callable[[int, int], None]:
    """Orders generated so far: one line redrawn on a terminal, a line per step elsewhere."""
    started, tty = time.monotonic(), stream.isatty()

    def show(done: int, total: int) -> None:
        line = f"sample warehouse: {done:,} of {total:,} orders generated ({time.monotonic() - started:.1f}s)"
        stream.write(("\r\033[K" + line + ("\n" if done >= total else "")) if tty else line + "\n")
        stream.flush()
    return show


def _sync(root: Path, title: str, as_json: bool) -> SyncReport:
    project = load_project(root)
    report = run_sync(project, project.syncs["purchases"], RunOptions())
    emit_result(report.to_dict(), f"{title}\n{report.to_text()}\n")  # --json: the report; else its summary
    return report


def _add_late_orders(warehouse_file: Path, orders: int, now: dt.datetime) -> None:
    import duckdb
    con = duckdb.connect(str(warehouse_file))
    (watermark,) = con.execute("select watermark from tiktok_watermarks where sync_name = 'purchases'").fetchone()
    rng = random.Random(11)
    tie = dt.datetime.fromisoformat(watermark)
    insert_orders(con, range(orders + 1, orders + 2), now, rng, updated_at=tie, max_age_days=1)
    insert_orders(con, range(orders + 2, orders + 26), now, rng, updated_at=now - dt.timedelta(minutes=1),
                  max_age_days=1)
    con.close()
