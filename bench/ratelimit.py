"""Benchmark: three syncs of one access token in one `sync --threads 3` invocation against a fake TikTok that
allows R requests per second per token (sliding one-second window, code 40100 beyond) and answers after
150 ms, with the connector configured `tiktok.max_requests_per_second: R`.

    python bench/ratelimit.py                   # R = 17 and R = 200
    python bench/ratelimit.py --rates 17 --seconds 4      # shorter

Target (issue 20, 4): together ≥ 90 % of R × 1,000 events/s, < 1 % of requests throttled. "Sustained" is
the events the fake accepted over the time from the first request's arrival to the last one's (what the
syncs keep up while sending); the whole invocation's events/s (process start, the first reads, state
tables and the last commit included) is printed beside it. Rows look like CRM/order tables: emails with spaces and mixed case,
phones in several national and international shapes (a tenth NULL), non-ASCII item names, a tenth of
the orders with two items. Writes bench/results/ratelimit.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import requests

ROOT = Path(__file__).resolve().parent
TOKEN = "bench-token"
SYNCS = 3
LATENCY = 0.15
RESULTS = ROOT / "results" / "ratelimit.txt"
# DuckDB's memory for each sync running at once (the default 64MB is too little for three syncs of these
# rows, with items, each sorting a page and reading the next one ahead)
MEMORY_LIMIT = "256MB"


def generate(path: Path, per_sync: int, clean: bool = False) -> None:
    """`per_sync` orders for each of the SYNCS syncs (column `part`), event time within the last 20 days.
    `clean`: no items, ASCII, emails and phones as the DuckDB-rendered path takes them (an instrument: how
    fast the limiter lets the syncs go when building the events costs little)."""
    path.unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    if clean:
        con.execute(f"""
            create table orders as select
                'E' || lpad(cast(i as varchar), 9, '0') as event_id, i % {SYNCS} as part, 'Purchase' as event,
                now() - to_seconds(cast(i % 1700000 as bigint)) as timestamp,
                timestamptz '2026-01-01 00:00:00+00' + to_microseconds(cast(i as bigint) * 1000) as updated_at,
                'user' || i || '@example.com' as email, '+1415' || lpad(cast(i % 10000000 as varchar), 7, '0') as phone,
                cast((i % 10000) / 100.0 + 1 as decimal(12, 2)) as value, 'USD' as currency, 'O' || i as order_id
            from range({per_sync * SYNCS}) t(i)""")
        con.close()
        return
    con.execute(f"""
        create table orders as
        with base as (select i, i % {SYNCS} as part from range({per_sync * SYNCS}) t(i))
        select
            'E' || lpad(cast(i as varchar), 9, '0') as event_id,
            part,
            'Purchase' as event,
            now() - to_seconds(cast(i % 1700000 as bigint)) as timestamp,
            timestamptz '2026-01-01 00:00:00+00' + to_microseconds(cast(i as bigint) * 1000) as updated_at,
            case i % 4 when 0 then '  User' || i || '@Example.COM ' when 1 then 'user' || i || '@example.com'
                 when 2 then 'Ünïcode.' || i || '@exämple.de' else upper('u' || i || '@mail.example.org') end
                as email,
            case when i % 10 = 0 then null
                 when i % 10 < 4 then '+1 (415) 555-' || lpad(cast(i % 10000 as varchar), 4, '0')
                 when i % 10 < 7 then '(+1) 212.555.' || lpad(cast(i % 10000 as varchar), 4, '0')
                 else '+44 20 7946 ' || lpad(cast(i % 10000 as varchar), 4, '0') end as phone,
            cast((i % 10000) / 100.0 + 1 as decimal(12, 2)) as value,
            'USD' as currency,
            'shopify-' || md5(cast(i as varchar)) as order_id,
            'SKU-' || (i % 977) as content_id,
            ['Café crème', 'Müsli 500 g', '日本茶 (緑)', 'Crème brûlée kit', 'Çay bardağı'][1 + i % 5] as content_name,
            1 + i % 3 as quantity,
            cast((i % 10000) / 100.0 + 1 as decimal(12, 2)) as price
        from base""")
    # A tenth of the orders have a second item: another row of the same event (same id and cursor).
    con.execute("""
        insert into orders select event_id, part, event, timestamp, updated_at, email, phone, value, currency,
            order_id, 'SKU-X' || content_id, 'Zubehör – ' || content_name, 1, price
        from orders where cast(substr(event_id, 2) as bigint) % 10 = 5""")
    con.close()


def write_project(root: Path, warehouse: Path, rate: float, batch_size: int) -> None:
    (root / "queries").mkdir(parents=True, exist_ok=True)
    (root / "queries" / "orders.sql").write_text(
        "select * exclude (part) from orders where part = {{ vars.part }}\n")
    syncs = "".join(f"""
  orders_{part}:
    query: orders.sql
    event_source_id: "7654321098765432109"
    cursor: updated_at
    safety_margin_seconds: 0
    default_phone_region: US
    batch_size: {batch_size}
    vars: {{part: {part}}}""" for part in range(SYNCS))
    (root / "connector.yml").write_text(f"""
warehouse:
  url: duckdb:///{warehouse}
  memory_limit: {MEMORY_LIMIT}
tiktok:
  access_token: {TOKEN}
  max_requests_per_second: {rate}
threads: {SYNCS}
syncs:{syncs}
""")


class Fake:
    def __init__(self, rate: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "connector.testing.fake_tiktok", "--port", "0", "--token", TOKEN,
             "--latency", str(LATENCY), "--rate-limit", str(rate)], stdout=subprocess.PIPE, text=True)
        self.base_url = self.process.stdout.readline().strip().rsplit(" ", 1)[-1]  # type: ignore[union-attr]

    def get(self, name: str) -> dict:
        return requests.get(self.base_url.replace("/open_api", "/_fake/") + name, timeout=60).json()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def measure(work: Path, rate: float, per_sync: int, batch_size: int, clean: bool = False) -> dict:
    warehouse = work / f"r{rate:g}_{batch_size}{'_clean' if clean else ''}.duckdb"
    generate(warehouse, per_sync, clean)
    project = work / f"project_r{rate:g}_{batch_size}{'_clean' if clean else ''}"
    write_project(project, warehouse, rate, batch_size)
    fake = Fake(rate)
    try:
        env = {**os.environ, "TIKTOK_API_BASE_URL": fake.base_url}
        started, usage = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run([sys.executable, "-m", "connector", "sync", "--json", "--quiet", "--project",
                               str(project)], env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
        if proc.returncode:
            raise SystemExit(f"sync failed ({proc.returncode}): {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        reports = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
        [traffic] = fake.get("rate")["tokens"].values()
        stats = fake.get("stats")
    finally:
        fake.stop()
    sent = sum(r["events_sent"] for r in reports)
    per_second = sent / seconds
    # Sustained: the events over the time from the first request's arrival to the last one's, plus the
    # slot the last one took (requests / window = the pace kept while sending).
    window = traffic["first_to_last_seconds"] + 1 / rate
    sustained = stats["accepted_events"] / window
    return {
        "rate": rate, "batch_size": batch_size, "rows": "clean (instrument)" if clean else "messy, items",
        "syncs": len(reports), "events_sent": sent, "accepted_by_fake": stats["accepted_events"],
        "seconds": round(seconds, 2), "events_per_second": round(per_second),
        "ratio_of_limit": round(per_second / (rate * batch_size), 3),
        "sending_seconds": round(window, 2), "sustained_events_per_second": round(sustained),
        "sustained_ratio_of_limit": round(sustained / (rate * batch_size), 3),
        "requests": traffic["requests"], "throttled": traffic["throttled"],
        "sustained_requests_per_second": round(traffic["requests"] / window, 1),
        "sustained_requests_ratio_of_limit": round(traffic["requests"] / window / rate, 3),
        "throttled_share": round(traffic["throttled"] / max(traffic["requests"], 1), 4),
        "most_requests_in_one_second": traffic["most_in_one_second"],
        "sync_seconds": [r["duration_seconds"] for r in reports],
        "connector_cpu_seconds": round(cpu, 2), "load_average_1min_after": round(os.getloadavg()[0], 2),
        "retries": sum(r["retries"] for r in reports),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="17,17c,200,200/50",
                        help="comma-separated R values, each optionally /BATCH_SIZE, and c for clean rows "
                             "(default 17,17c,200,200/50: R = 200 with 50-event requests shows the pacing where "
                             "1,000-event requests make the machine's CPU the limit; 17c the pacing when building "
                             "the events costs little)")
    parser.add_argument("--seconds", type=float, default=12.0,
                        help="seconds of sending at R×1,000 events/s the data is sized for (default 12)")
    args = parser.parse_args()
    lines = [f"# bench/ratelimit.py: {SYNCS} syncs of one token, sync --threads {SYNCS}, fake limited to R "
             f"requests/s per token (sliding 1-s window), {LATENCY * 1000:.0f} ms latency, "
             "max_requests_per_second = R, max_in_flight 16 (default), "
             f"warehouse.memory_limit {MEMORY_LIMIT} (each sync)",
             f"# machine: {platform.machine()}, {os.cpu_count()} cores shared with the fake (and other work), "
             f"Python {platform.python_version()}; one run each, figures are ratios of that run",
             "# target: events/s >= 90 % of R x 1,000, throttled < 1 % of requests"]
    with tempfile.TemporaryDirectory() as tmp:
        for item in args.rates.split(","):
            clean = item.endswith("c")
            rate_text, _, batch_text = item.removesuffix("c").partition("/")
            rate, batch_size = float(rate_text), int(batch_text or 1000)
            per_sync = int(rate * batch_size * args.seconds / SYNCS)
            result = measure(Path(tmp), rate, per_sync, batch_size, clean)
            line = (f"R={rate:g}, {batch_size}-event requests, {result['rows']} rows: "
                    f"{result['sustained_requests_per_second']} "
                    f"requests/s = {result['sustained_requests_ratio_of_limit']:.1%} of R; sustained {result['sustained_events_per_second']:,} events/s while sending "
                    f"({result['sending_seconds']} s) = {result['sustained_ratio_of_limit']:.1%} of R x {batch_size:,}; "
                    f"whole invocation {result['events_sent']:,} events in {result['seconds']} s = "
                    f"{result['events_per_second']:,}/s = {result['ratio_of_limit']:.1%}; "
                    f"{result['throttled']} of {result['requests']} requests throttled "
                    f"({result['throttled_share']:.2%}); at most {result['most_requests_in_one_second']} "
                    f"requests in one second; {json.dumps(result)}")
            print(line, flush=True)
            lines.append(line)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
