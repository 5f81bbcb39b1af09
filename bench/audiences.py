"""Benchmark: a Custom Audience of N people kept equal to a query, through the real CLI.

    python bench/audiences.py                  # 1,000,000 people
    python bench/audiences.py --people 100000

Runs, in order, on one DuckDB warehouse (the membership state in it) against a fake TikTok server process:
the first upload (every person an add), a run with nothing changed, and a run after 1 % churn (1 % of the
people leave, 1 % join, the email of 0.5 % changes). The people look like a CRM table: emails with
surrounding spaces and mixed case, phones in national and international spellings (a tenth NULL),
non-ASCII names, some people with a phone only. Prints, per run: seconds, people/s, the connector's peak
RSS (wait4's ru_maxrss of the CLI process), requests and people added/removed as the fake counted them,
and the members the fake holds at the end. Writes bench/results/audiences.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import requests

ROOT = Path(__file__).resolve().parent
TOKEN = "bench-token"
AUDIENCE_TOKEN = "bench-audience-token"
ADVERTISER = "7000000000000000001"


@dataclass
class Run:
    name: str
    seconds: float
    peak_rss_mb: float
    requests: int
    added: int
    removed: int
    report: dict

    def row(self, people: int) -> str:
        rate = f"{people / self.seconds:,.0f}" if self.seconds else "-"
        return (f"| {self.name} | {people:,} | {self.seconds:.2f} | {rate} | {self.peak_rss_mb:.0f} | "
                f"{self.requests:,} | {self.added:,} | {self.removed:,} |")


def generate(path: Path, people: int) -> None:
    """`people` rows, one per customer; ids C0000001… in no particular row order."""
    path.unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    con.execute(f"""
        create table customers as select
            'C' || lpad(cast(i as varchar), 8, '0') as customer_id,
            case i % 7 when 0 then 'Zoë Ærøskøbing' when 1 then '田中 太郎' else 'Customer ' || i end as name,
            case when i % 20 = 0 then null
                 when i % 3 = 0 then '  User' || i || '@Example.COM '
                 else 'user' || i || '@example.com' end as email,
            case when i % 10 = 0 then null
                 when i % 4 = 0 then '+1 (212) ' || lpad(cast(i % 1000 as varchar), 3, '0') || '-'
                                     || lpad(cast(i % 10000 as varchar), 4, '0')
                 when i % 4 = 1 then '(212) 55' || lpad(cast(i % 100000 as varchar), 5, '0')
                 when i % 4 = 2 then '+44 20 7' || lpad(cast(i % 10000000 as varchar), 7, '0')
                 else '0049 30 ' || lpad(cast(i % 100000000 as varchar), 8, '0') end as phone,
            true as active
        from range({people}) t(i)
        order by hash(i)""")
    con.close()


def churn(path: Path, people: int) -> None:
    """1 % leave, 1 % join (new ids), the email of 0.5 % changes."""
    con = duckdb.connect(str(path))
    step = 100
    con.execute(f"update customers set active = false where cast(substr(customer_id, 2) as bigint) % {step} = 1")
    con.execute(f"""update customers set email = 'changed' || customer_id || '@example.org'
                    where cast(substr(customer_id, 2) as bigint) % {step * 2} = 2""")
    con.execute(f"""insert into customers select 'N' || lpad(cast(i as varchar), 8, '0'), 'New ' || i,
                    'new' || i || '@example.net', null, true from range({people // step}) t(i)""")
    con.close()


def write_project(root: Path, warehouse: Path) -> None:
    (root / "queries").mkdir(parents=True, exist_ok=True)
    (root / "queries" / "vip.sql").write_text(
        "select customer_id, email, phone from customers where active\n")
    (root / "connector.yml").write_text(f"""\
warehouse:
  url: duckdb:///{warehouse}
tiktok:
  access_token: {TOKEN}
  audience_access_token: {AUDIENCE_TOKEN}
audiences:
  vip:
    query: vip.sql
    advertiser_id: "{ADVERTISER}"
    audience_name: VIP buyers
    member_id: customer_id
    identifiers:
      email: email
      phone: phone
    mode: mirror
    default_phone_region: US
""")


class FakeServer:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "connector.testing.fake_tiktok", "--port", "0", "--token", TOKEN,
             "--audience-token", AUDIENCE_TOKEN, "--no-bodies"], stdout=subprocess.PIPE, text=True)
        self.base_url = self.process.stdout.readline().strip().rsplit(" ", 1)[-1]  # type: ignore[union-attr]
        self.admin = self.base_url.replace("/open_api", "") + "/_fake/audiences"

    def stats(self) -> dict:
        return requests.get(self.admin, timeout=60).json()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def run(name: str, project: Path, server: FakeServer) -> Run:
    before = server.stats()["stats"]
    env = {**os.environ, "TIKTOK_API_BASE_URL": server.base_url}
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen([sys.executable, "-m", "connector", "sync", "--json", "--quiet",
                                    "--project", str(project)], stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{name}: sync failed: {out.read()[-2000:]} {err.read()[-2000:]}")
        report = json.loads(out.read().strip().splitlines()[-1])
    after = server.stats()["stats"]
    return Run(name, round(seconds, 2), usage.ru_maxrss / 1024, after["requests"] - before["requests"],
               after["ids_added"] - before["ids_added"], after["ids_deleted"] - before["ids_deleted"], report)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=1_000_000)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        warehouse = work / "warehouse.duckdb"
        generate(warehouse, args.people)
        write_project(work / "project", warehouse)
        server = FakeServer()
        try:
            runs = [run("first upload", work / "project", server), run("no change", work / "project", server)]
            churn(warehouse, args.people)
            runs.append(run("1 % churn", work / "project", server))
            runs.append(run("no change after churn", work / "project", server))
            held = server.stats()["audiences"]
        finally:
            server.stop()
    lines = ["| run | people | seconds | people/s | peak RSS MB | requests | ids added | ids deleted |",
             "|---|---|---|---|---|---|---|---|", *(r.row(args.people) for r in runs)]
    keys = ("status", "rows_read", "members_added", "members_removed", "members_unchanged", "rejected_by_reason")
    lines += ["", "Reports (the connector's counts):", ""]
    lines += [f"- {r.name}: " + ", ".join(f"{k} {r.report.get(k)}" for k in keys) for r in runs]
    lines += ["", "The fake's audience at the end: " + json.dumps(held), "",
              f"Machine load before the runs: {load:.1f} (2 cores); one run each, figures vary."]
    text = "\n".join(lines) + "\n"
    print(text)
    (ROOT / "results").mkdir(exist_ok=True)
    (ROOT / "results" / "audiences.md").write_text(f"# python bench/audiences.py --people {args.people}\n\n{text}")


if __name__ == "__main__":
    main()
