"""An audience through the real CLI: the first upload of N people, a run with nothing changed, and a run with
1 % churn (people leaving, people arriving, changed emails), against the fake TikTok in its own process
(request bodies not kept). Reports wall time, the connector's peak RSS, requests and the state tables' size.

    python bench/audiences.py --people 100000
    python bench/audiences.py --people 1000000 --hash-in-warehouse
    python bench/audiences.py --people 100000 --postgres   # 127.0.0.1:5432, db test, user postgres

Writes bench/results/audiences.md and audiences.json (one run: compare the ratios, not the seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import requests

ROOT = Path(__file__).resolve().parent
TOKEN = "bench-audience-token"
ADVERTISER = "7000000000000000001"
FAKE = f"""
import time
from connector.testing.fake_tiktok import FakeTikTok
fake = FakeTikTok(audience_access_token={TOKEN!r}).start()
fake.audiences.keep_bodies = False
print(fake.base_url, flush=True)
while True:
    time.sleep(60)
"""

PEOPLE_SQL = """
create {replace}table people as
select 'cust-' || lpad(i::varchar, 8, '0') as customer_id,
       case when i % 13 = 0 then null
            when i % 3 = 0 then ' Kunde.' || i || '+news@Exämple-' || (i % 97) || '.de '
            else 'Person' || i || '@Example.COM' end as email,
       case when i % 4 = 0 then null
            when i % 2 = 0 then '+1 (415) ' || (200 + i % 800) || '-' || lpad((i % 10000)::varchar, 4, '0')
            else '0' || (151 + i % 8) || ' ' || lpad((i % 10000000)::varchar, 8, '0') end as phone,
       case when i % 5 = 0 then {uuid}::varchar end as idfa,
       case when i % 7 = 0 then {uuid}::varchar end as gaid
from {numbers} t(i)
"""
# The same people in DuckDB and in PostgreSQL: only the names of a few functions differ.
DUCKDB_PEOPLE = {"replace": "or replace ", "uuid": "uuid()", "numbers": "range({n})"}
POSTGRES_PEOPLE = {"replace": "", "uuid": "gen_random_uuid()", "numbers": "generate_series(0, {n} - 1)"}
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def churn(root: Path, n: int, schema: str | None) -> None:
    """1 % of the audience: 0.4 % leave, 0.4 % arrive, 0.2 % change their email."""
    step = 250
    hashed = "abs(hashtext(customer_id))" if schema else "hash(customer_id)"
    statements = [f"delete from people where {hashed} % {step} = 0",
                  f"update people set email = 'moved' || customer_id || '@example.org' where {hashed} % {step * 2} = 1",
                  f"insert into people select 'new-' || i, 'new' || i || '@example.net', null, null, null "
                  f"from {'generate_series(0, ' + str(n // step - 1) + ')' if schema else f'range({n // step})'} t(i)"]
    run_sql(root, schema, statements)


def run_sql(root: Path, schema: str | None, statements: list[str]) -> None:
    if schema:
        import psycopg2
        con = psycopg2.connect(PG_DSN, options=f"-csearch_path={schema}")
        con.autocommit = True
        for statement in statements:
            con.cursor().execute(statement)
        con.close()
        return
    duck = duckdb.connect(str(root / "warehouse.duckdb"))
    for statement in statements:
        duck.execute(statement)
    duck.close()


def project(root: Path, people: int, hash_in_warehouse: bool, memory_limit: str, schema: str | None) -> None:
    (root / "queries").mkdir(parents=True)
    (root / "queries" / "people.sql").write_text("select * from people\n")
    warehouse = (f"url: {PG_DSN}?options=-csearch_path%3D{schema}" if schema else
                 f"url: duckdb:///warehouse.duckdb\n  memory_limit: {memory_limit}")
    (root / "connector.yml").write_text(f"""warehouse:
  {warehouse}
tiktok:
  audience_access_token: ${{TIKTOK_AUDIENCE_ACCESS_TOKEN}}
  audience_max_requests_per_second: 1000
audiences:
  everyone:
    query: people.sql
    advertiser_id: "{ADVERTISER}"
    audience_name: Everyone
    member_id: customer_id
    identifiers: {{email: email, phone: phone, idfa: idfa, gaid: gaid}}
    default_phone_region: DE
    hash_in_warehouse: {str(hash_in_warehouse).lower()}
    max_reject_rate: 1
""")
    dialect = POSTGRES_PEOPLE if schema else DUCKDB_PEOPLE
    run_sql(root, schema, [PEOPLE_SQL.format(**dialect).format(n=people)])


def run(root: Path, base_url: str, scenario: str) -> dict:
    env = {**os.environ, "TIKTOK_API_BASE_URL": base_url, "TIKTOK_AUDIENCE_ACCESS_TOKEN": TOKEN}
    before = requests.get(base_url.replace("/open_api", "") + "/_fake/audiences", timeout=30).json()["stats"]
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "connector", "sync", "--json", "--quiet", "--project", str(root)],
                          capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 3):
        raise SystemExit(f"{scenario}: exit {done.returncode}\n{done.stdout}\n{done.stderr}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    after = requests.get(base_url.replace("/open_api", "") + "/_fake/audiences", timeout=30).json()
    return {"scenario": scenario, "seconds": round(seconds, 2), "rows_read": report["rows_read"],
            "added": report["members_added"], "removed": report["members_removed"],
            "changed": report["members_changed"], "requests": after["stats"]["requests"] - before["requests"],
            "peak_rss_mb": report["peak_rss_mb"], "state_seconds": report["state_seconds"],
            "cover_num": after["audiences"][0]["cover_num"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--hash-in-warehouse", action="store_true")
    parser.add_argument("--memory-limit", default="64MB", help="warehouse.memory_limit (DuckDB)")
    parser.add_argument("--postgres", action="store_true", help="the people and the state in PostgreSQL "
                        f"({PG_DSN}, a schema made for the run): the diff runs in the warehouse")
    args = parser.parse_args()
    fake = subprocess.Popen([sys.executable, "-c", FAKE], stdout=subprocess.PIPE, text=True)
    base_url = fake.stdout.readline().strip()  # type: ignore[union-attr]
    results = []
    schema = f"bench_aud_{os.getpid()}" if args.postgres else None
    try:
        if schema:
            run_sql(Path(), "public", [f"create schema {schema}"])
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "project"
            project(root, args.people, args.hash_in_warehouse, args.memory_limit, schema)
            results.append(run(root, base_url, "first upload"))
            results.append(run(root, base_url, "no change"))
            churn(root, args.people, schema)
            results.append(run(root, base_url, "1% churn"))
            results.append(run(root, base_url, "no change after churn"))
    finally:
        fake.terminate()
        fake.wait(timeout=30)
        if schema:
            run_sql(Path(), "public", [f"drop schema {schema} cascade"])
    base = results[0]["seconds"]
    where = "PostgreSQL (state in the same database)" if schema else f"DuckDB memory_limit {args.memory_limit}"
    lines = [f"# Audience bench: {args.people:,} people, hashed in {'the warehouse' if args.hash_in_warehouse else 'Python'}, "
             f"{where}",
             "", "| run | seconds | × first upload | rows read | added | removed | changed | requests | peak RSS MB "
             "| state s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['scenario']} | {r['seconds']} | {r['seconds'] / base:.2f} | {r['rows_read']:,} | "
                     f"{r['added']:,} | {r['removed']:,} | {r['changed']:,} | {r['requests']} | {r['peak_rss_mb']} | "
                     f"{r['state_seconds']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    suffix = f"{args.people}{'-sql' if args.hash_in_warehouse else ''}{'-postgres' if schema else ''}"
    (ROOT / "results" / f"audiences-{suffix}.md").write_text(text)
    (ROOT / "results" / f"audiences-{suffix}.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
