"""A sync from PostgreSQL with its state there: the events table and the state tables in the local PostgreSQL
(127.0.0.1:5432, database `test`, user `postgres`, a fresh schema dropped afterwards), the real CLI in a
subprocess against a fresh fake TikTok server process, as bench/run.py does for DuckDB.

    python bench/postgres.py                  # 1M rows, 2 rounds (a few minutes)
    python bench/postgres.py --rows 300000 --rounds 3

Each round runs the sync twice, alternately: as it is, and with the state writes left out
(bench/no_state_writes.py, an instrument), each from fresh state; the machine's speed drifts over minutes.
Prints events/s, the seconds spent committing state (on the helper thread that commits them, in parallel
with the sync), what the state writes add to the run (median of the rounds), peak RSS and CPU, and writes
bench/results/postgres.md and postgres.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import uuid
from dataclasses import asdict
from pathlib import Path

from run import HEADER, NO_STATE_WRITES, ROOT, THROUGHPUT_RATE, TOKEN, FakeServer, Result, _row, sync

DSN = "postgresql://postgres@127.0.0.1:5432/test"


def generate(schema: str, rows: int) -> None:
    """`rows` valid offline events like bench/run.py's, cursor strictly increasing (and indexed, as a cursor
    column of a table synced incrementally usually is)."""
    import psycopg2
    con = psycopg2.connect(DSN)
    con.autocommit = True
    with con.cursor() as cursor:
        cursor.execute(f"create schema {schema}")
        cursor.execute(f"""
            create table {schema}.events as select
                'E' || lpad(i::text, 9, '0') as event_id,
                'Purchase' as event,
                now() - make_interval(secs => i % 1700000) as timestamp,
                timestamptz '2026-01-01 00:00:00+00' + make_interval(secs => i / 1000.0) as updated_at,
                'User' || i || '@Example.com' as email,
                '+1415' || lpad((i % 10000000)::text, 7, '0') as phone,
                ((i % 10000) / 100.0)::numeric(12, 2) as value,
                'USD' as currency,
                'O' || i as order_id
            from generate_series(0, {rows - 1}) as t(i)""")
        cursor.execute(f"create index on {schema}.events (updated_at)")
        cursor.execute(f"analyze {schema}.events")
    con.close()


def drop(schema: str) -> None:
    import psycopg2
    con = psycopg2.connect(DSN)
    con.autocommit = True
    with con.cursor() as cursor:
        cursor.execute(f"drop schema if exists {schema} cascade")
    con.close()


def write_project(root: Path, schema: str) -> None:
    (root / "queries").mkdir(parents=True, exist_ok=True)
    (root / "queries" / "events.sql").write_text("select * from events\n")
    (root / "connector.yml").write_text(f"""
warehouse:
  url: {DSN}?options=-csearch_path%3D{schema}
state:
  schema: {schema}
tiktok:
  access_token: {TOKEN}
  max_requests_per_second: {THROUGHPUT_RATE}
syncs:
  events:
    query: events.sql
    event_source_id: "7654321098765432109"
    cursor: updated_at
    safety_margin_seconds: 0
""")


def reset_state(schema: str) -> None:
    import psycopg2
    con = psycopg2.connect(DSN)
    con.autocommit = True
    with con.cursor() as cursor:
        for table in ("watermarks", "ledger", "rejects", "runs", "leases", "state_version"):
            cursor.execute(f"drop table if exists {schema}.tiktok_{table}")
    con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    results: list[Result] = []
    try:
        generate(schema, args.rows)
        with tempfile.TemporaryDirectory(prefix="tiktok-bench-pg-") as tmp:
            project = Path(tmp) / "project"
            write_project(project, schema)
            for _ in range(args.rounds):
                for name, instrument in (("postgresql: warehouse and state", None),
                                         ("postgresql: state writes off (bench only)", NO_STATE_WRITES)):
                    server = FakeServer()
                    try:
                        results.append(sync(project, server, name, args.rows, instrument=instrument))
                    finally:
                        server.stop()
                        reset_state(schema)
                    print(_row(results[-1]), flush=True)
    finally:
        drop(schema)
    _write(results)


def _write(results: list[Result]) -> None:
    synced = results[0::2]
    off = results[1::2]
    added = sorted(w.seconds / o.seconds - 1 for w, o in zip(synced, off))
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)] + ["| " + _row(r) + " |" for r in results]
    lines += ["", f"- sync: median {statistics.median(r.events_per_second for r in synced):,.0f} events/s over "
                  f"{len(synced)} runs",
              "- state commits took " + ", ".join(f"{r.state_seconds} s of {r.seconds} s "
                                                  f"({(r.state_seconds or 0) / r.seconds:.0%})" for r in synced)
              + ", on the helper thread that commits them while the sync goes on",
              f"- state writes add {statistics.median(added):.0%} to the run, median of {len(added)} alternating pairs "
              f"({', '.join(f'{a:.0%}' for a in added)}; seconds with/without: "
              f"{', '.join(f'{w.seconds}/{o.seconds}' for w, o in zip(synced, off))})"]
    text = "\n".join(lines) + "\n"
    out = ROOT / "results"
    out.mkdir(exist_ok=True)
    (out / "postgres.md").write_text(text)
    (out / "postgres.json").write_text(json.dumps({"results": [asdict(r) for r in results]}, indent=2))
    print()
    print(text)


if __name__ == "__main__":
    main()
