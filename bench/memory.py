"""Peak RSS when many rows share one cursor value (a page of ties), and of one-row-per-item syncs, each with
the connector's defaults (memory_limit 64MB, threads 1) and with `memory_limit: 64MB` and `threads: 2` (DuckDB's
own default thread count on the 2-core development machine).

    python bench/memory.py                          # ties: 100k, 1M and 2M rows (several minutes)
    python bench/memory.py --ties 100000,300000 --items 100000,1000000

Each run is the real CLI in a subprocess against a fresh fake TikTok server process, like bench/run.py;
peak RSS is the connector process's own high-water mark, from its report. Prints a table with each run's
peak as a ratio of the smallest run of its kind, and writes bench/results/memory.md and memory.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import asdict
from pathlib import Path

import duckdb

from run import HEADER, ROOT, FakeServer, Result, _row, generate, sync, write_project

ITEMS_MAPPING = """fields:
  event: event
  event_id: event_id
  event_time: timestamp
  user.email: email
  properties.contents[].content_id: sku
  properties.contents[].price: price
"""


def generate_items(path: Path, rows: int) -> None:
    """`rows` item rows, two per event (one event per order), every row with the same cursor value."""
    path.unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    con.execute(f"""
        create table events as select
            'E' || lpad(cast(i // 2 as varchar), 9, '0') as event_id,
            'Purchase' as event,
            now() - to_seconds(cast(i % 1700000 as bigint)) as timestamp,
            timestamptz '2026-01-01 00:00:00+00' as updated_at,
            'User' || cast(i // 2 as varchar) || '@Example.com' as email,
            'SKU-' || cast(i % 2 as varchar) as sku,
            9.5 as price
        from range({rows}) t(i)""")
    con.close()


def run_one(work: Path, warehouse: Path, rows: int, name: str, settings: tuple[str | None, int | None],
            items: bool) -> Result | str:
    project = work / "".join(c if c.isalnum() else "_" for c in name)
    write_project(project, warehouse, hash_in_warehouse=False, memory_limit=settings[0], threads=settings[1])
    if items:
        (project / "mappings").mkdir(exist_ok=True)
        (project / "mappings" / "items.yml").write_text(ITEMS_MAPPING)
        config = project / "connector.yml"
        config.write_text(config.read_text().replace("query: events.sql", "query: events.sql\n    mapping: items.yml"))
    server = FakeServer()
    try:
        return sync(project, server, name, rows)
    except SystemExit as failed:  # an out-of-memory error is a result here, not the end of the benchmark
        return f"{name}, {rows:,} rows: failed: {str(failed)[-300:]}"
    finally:
        server.stop()
        _reset_state(warehouse)


def _reset_state(warehouse: Path) -> None:
    con = duckdb.connect(str(warehouse))
    for table in ("watermarks", "ledger", "rejects", "runs", "leases", "state_version"):
        con.execute(f"drop table if exists tiktok_{table}")
    con.close()


SETTINGS: dict[str, tuple[str | None, int | None]] = {"defaults": (None, None),
                                                      "memory_limit 64MB, threads 2": ("64MB", 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ties", default="100000,1000000,2000000", help="sizes of the all-ties runs ('' for none)")
    parser.add_argument("--items", default="", help="sizes of the one-row-per-item runs, e.g. 100000,1000000")
    args = parser.parse_args()
    results: list[Result] = []
    failures: list[str] = []
    plan = [(kind, int(n)) for kind, sizes in (("ties", args.ties), ("items", args.items))
            for n in sizes.split(",") if n]
    with tempfile.TemporaryDirectory(prefix="tiktok-bench-memory-") as tmp:
        work = Path(tmp)
        for kind, rows in plan:
            warehouse = work / f"{kind}_{rows}.duckdb"
            generate_items(warehouse, rows) if kind == "items" else generate(warehouse, rows, ties=True)
            for label, settings in SETTINGS.items():
                name = f"{'items, two per event' if kind == 'items' else 'ties'}, one cursor value, {label}"
                outcome = run_one(work, warehouse, rows, name, settings, kind == "items")
                if isinstance(outcome, str):
                    failures.append(outcome)
                    print(outcome, flush=True)
                else:
                    results.append(outcome)
                    print(_row(outcome), flush=True)
            warehouse.unlink()
    _write(results, failures)


def _write(results: list[Result], failures: list[str]) -> None:
    smallest: dict[str, Result] = {}
    for r in results:
        if r.scenario not in smallest or r.rows < smallest[r.scenario].rows:
            smallest[r.scenario] = r
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + _row(r) + " |" for r in results]
    ratios = [f"- {r.scenario}, {r.rows:,} rows: peak RSS {r.peak_rss_mb} MB, {r.peak_rss_mb / base.peak_rss_mb:.2f}× "
              f"the {base.rows:,}-row run" for r in results
              if (base := smallest[r.scenario]) is not r and r.peak_rss_mb and base.peak_rss_mb]
    text = "\n".join(lines + [""] + ratios + [f"- {f}" for f in failures]) + "\n"
    out = ROOT / "results"
    out.mkdir(exist_ok=True)
    (out / "memory.md").write_text(text)
    (out / "memory.json").write_text(json.dumps({"results": [asdict(r) for r in results], "failures": failures},
                                                indent=2))
    print()
    print(text)


if __name__ == "__main__":
    main()
