"""Benchmarks: end-to-end sync throughput, memory, latency-bound sending, no-op runs and state cost.

    python bench/run.py                 # 100k and 1M rows (about 2 minutes)
    python bench/run.py --sizes 100000,1000000,5000000 --latency   # the full table (longer)
    python bench/run.py --real-data --sizes 1000000   # clean vs messy rows, orders with vs without items

Each scenario runs the real CLI in a subprocess against a fresh fake TikTok server process on
127.0.0.1, on a DuckDB file generated here; peak RSS is the connector process's own (from its report),
CPU seconds are the connector's (wait4) and the fake's (/proc), which share the machine's cores.
"state writes off" runs the CLI through bench/no_state_writes.py to measure what the ledger, rejects
and watermark writes add; --state-pairs more runs with and without them, alternating, give the median
of that cost. "connector alone" runs against bench/instant_server.py, which answers OK without reading
the events, so the connector has both cores; "fake TikTok alone" posts pre-built bodies to the fake, which
then has a core to itself: together they show what the machine allows. Prints a table and writes
bench/results/latest.md and latest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent
# Throughput is measured for a token TikTok allows 1,000 requests a second (the higher published reading): at the
# connector's default of 16 requests/s a sync sends at most 16,000 events/s, whatever else it could do.
THROUGHPUT_RATE = 1000
TOKEN = "bench-token"


@dataclass
class Result:
    scenario: str
    rows: int
    events_sent: int
    seconds: float
    events_per_second: float
    peak_rss_mb: float | None
    requests: int
    state_seconds: float | None = None
    connector_cpu: float | None = None  # seconds of CPU the connector process used (user + system)
    fake_cpu: float | None = None  # ...and the fake TikTok, on the same cores
    note: str = ""


def generate(path: Path, rows: int, random_ids: bool = False, ties: bool = False, description: bool = False) -> None:
    """`rows` valid offline events, cursor strictly increasing, event times within the last 20 days. Event ids
    follow the cursor (E000000001, …), or with `random_ids` are 32 hex digits in no order, like order UUIDs:
    then no ledger lookup can skip blocks of the ledger by their min/max id. With `ties` every row has the
    same cursor value (one page of ties). `description`: the messy table's columns, clean (an ASCII customer
    name in the description), so that clean and messy rows send the same fields."""
    path.unlink(missing_ok=True)
    event_id = "md5(cast(i as varchar))" if random_ids else "'E' || lpad(cast(i as varchar), 9, '0')"
    step = "0" if ties else "cast(i as bigint) * 1000"
    con = duckdb.connect(str(path))
    con.execute(f"""
        create table events as select
            {event_id} as event_id,
            'Purchase' as event,
            now() - to_seconds(cast(i % 1700000 as bigint)) as timestamp,
            timestamptz '2026-01-01 00:00:00+00' + to_microseconds({step}) as updated_at,
            'User' || cast(i as varchar) || '@Example.com' as email,
            '+1415' || lpad(cast(i % 10000000 as varchar), 7, '0') as phone,
            cast((i % 10000) / 100.0 as decimal(12, 2)) as value,
            'USD' as currency,
            'O' || cast(i as varchar) as order_id{CLEAN_DESCRIPTION if description else ""}
        from range({rows}) t(i)""")
    con.close()


# Phones as CRM tables hold them (proportions out of 20; a tenth NULL): E.164 with punctuation, '00' prefixes,
# "(0)" trunk prefixes, and US national numbers (the sync's default_phone_region is US).
MESSY_PHONES = ("null", "null",
                "'+1 (' || area || ') ' || exch || '-' || line", "'+1 (' || area || ') ' || exch || '-' || line",
                "'+1 (' || area || ') ' || exch || '-' || line", "'(+1) ' || area || '.' || exch || '.' || line",
                "'+1' || area || exch || line", "'+1' || area || exch || line",
                "'+44 20 7946 ' || line", "'+44 (0)20 7946 ' || line", "'0044 20 7946 ' || line",
                "'+44 7700 9' || lpad(cast(i % 100000 as varchar), 5, '0')", "'+49 30 ' || exch || line",
                "'0049 (0)30 ' || exch || ' ' || line", "'+33 1 42 ' || exch || ' ' || line",
                "'(' || area || ') ' || exch || '-' || line", "'(' || area || ') ' || exch || '-' || line",
                "area || '.' || exch || '.' || line", "'1-' || area || '-' || exch || '-' || line",
                "' +1 ' || area || ' ' || exch || ' ' || line || chr(160)")
MESSY_NAMES = ("Zoë Müller", "José Álvarez", "Łukasz Wójcik", "山田 太郎", "Søren Kierkegård", "Ana María Núñez",
               "Дмитрий Иванов", "François Lefèvre", "Mary O'Brien", "Nguyễn Văn An")


CLEAN_DESCRIPTION = (",\n            'Order for ' || list_extract(['Mary Smith', 'John Doe', 'Ana Lopez', 'Lee Wong'], "
                     "cast(i % 4 as integer) + 1) as description")

LIST_SCENARIO = "items (a LIST column, one row per order)"
# The built-in mapping's fields for the columns the generated tables have; the messy table adds the description
# (non-ASCII customer names), the LIST column scenario its items.
_BENCH_FIELDS = """fields:
  event: event
  event_id: event_id
  event_time: timestamp
  user.email: email
  user.phone: phone
  properties.value: value
  properties.currency: currency
  properties.order_id: order_id
"""
LIST_MAPPING = _BENCH_FIELDS + "  properties.contents: contents\n"
MESSY_MAPPING = _BENCH_FIELDS + "  properties.description: description\n"


def generate_messy(path: Path, rows: int, short_ids: bool = False) -> None:
    """`rows` valid offline events that look like a real orders table: emails with surrounding whitespace
    (spaces, tabs, no-break spaces) and mixed case, phones in every way CRMs write them (MESSY_PHONES),
    non-ASCII customer names in the description, long Shopify-style order ids, currencies in any case.
    `short_ids`: event ids of the clean table's length (E000000001…), to tell what long ids cost."""
    path.unlink(missing_ok=True)
    phones = "case i % 20 " + " ".join(f"when {n} then {sql}" for n, sql in enumerate(MESSY_PHONES)) + " end"
    names = "list_extract([" + ", ".join("'" + n.replace("'", "''") + "'" for n in MESSY_NAMES) + "], cast(i % 10 as integer) + 1)"
    con = duckdb.connect(str(path))
    con.execute(f"""
        create table events as select
            {"'E' || lpad(cast(i as varchar), 9, '0')" if short_ids else
              "'gid://shopify/Order/' || cast(5200000000000 + i as varchar)"} as event_id,
            case i % 3 when 0 then 'Purchase' when 1 then ' purchase' else 'CompletePayment' end as event,
            now() - to_seconds(cast(i % 1700000 as bigint)) as timestamp,
            timestamptz '2026-01-01 00:00:00+00' + to_microseconds(cast(i as bigint) * 1000) as updated_at,
            case i % 4 when 0 then '  User' || cast(i as varchar) || '@Example.COM '
                       when 1 then chr(9) || 'user.' || cast(i as varchar) || '@gmail.com'
                       when 2 then chr(160) || 'First.Last' || cast(i as varchar) || '@Shop.co.uk' || chr(12288)
                       else 'u' || cast(i as varchar) || '@example.org' end as email,
            {phones} as phone,
            cast((i % 10000) / 100.0 as decimal(12, 2)) as value,
            case i % 3 when 0 then 'USD' when 1 then ' usd ' else 'Eur' end as currency,
            '#' || cast(1001 + i as varchar) || '-' || cast(5200000000000 + i as varchar) as order_id,
            'Bestellung für ' || {names} as description
        from (select i, cast(201 + (i * 7) % 798 as varchar) as area, cast(201 + (i * 13) % 798 as varchar) as exch,
                     lpad(cast(i % 10000 as varchar), 4, '0') as line from range({rows}) t(i))""")
    con.close()


def generate_items(path: Path, rows: int, orders: bool, as_list: bool = False) -> None:
    """`rows` item rows of multi-item orders (1 to 5 items each, in the query's order), or with `orders`
    False the same orders' rows without items (one row per order): the items scenario's baseline sends as
    many events as the orders. Content ids are strings (SKUs); names are non-ASCII. `as_list`: the same
    orders, one row each, with their items in a LIST of STRUCT column `contents` (in the rows' order)."""
    path.unlink(missing_ok=True)
    names = "list_extract([" + ", ".join("'" + n.replace("'", "''") + "'" for n in MESSY_NAMES) + "], cast(i % 10 as integer) + 1)"
    con = duckdb.connect(str(path))
    # order o has (o % 5) + 1 items: items of consecutive orders fill `rows` item rows
    con.execute(f"""
        create table items as
        with orders as (select o, (o % 5) + 1 as n from range({rows}) t(o)),
        numbered as (select o, n, sum(n) over (order by o) - n as first_row from orders)
        select o, item, first_row + item as i from numbered, range(n) r(item) where first_row + item < {rows}""")
    item_columns = (", 'SKU-' || lpad(cast((i * 31) % 50000 as varchar), 6, '0') as content_id, "
                    f"'Artikel ' || {names} as content_name, cast(((i * 7) % 5000) / 100.0 as decimal(12, 2)) as price, "
                    "cast(1 + i % 3 as integer) as quantity") if orders else ""
    where = "" if orders else " where item = 0"
    con.execute(f"""
        create table events as select
            'E' || lpad(cast(o as varchar), 9, '0') as event_id,
            'Purchase' as event,
            now() - to_seconds(cast(o % 1700000 as bigint)) as timestamp,
            timestamptz '2026-01-01 00:00:00+00' + to_microseconds(cast(o as bigint) * 1000) as updated_at,
            'User' || cast(o as varchar) || '@Example.com' as email,
            '+1415' || lpad(cast(o % 10000000 as varchar), 7, '0') as phone,
            cast((o % 10000) / 100.0 as decimal(12, 2)) as value,
            'USD' as currency,
            'O' || cast(o as varchar) as order_id{item_columns}
        from items{where} order by i""")
    con.execute("drop table items")
    if as_list:
        con.execute("""
            create table orders as select event_id, any_value(event) as event, any_value(timestamp) as timestamp,
                max(updated_at) as updated_at, any_value(email) as email, any_value(phone) as phone,
                any_value(value) as value, any_value(currency) as currency, any_value(order_id) as order_id,
                list({'content_id': content_id, 'content_name': content_name, 'price': price,
                      'quantity': quantity} order by rowid) as contents
            from events group by event_id order by min(rowid)""")
        con.execute("drop table events")
        con.execute("alter table orders rename to events")
    con.close()


def write_project(root: Path, warehouse: Path, *, hash_in_warehouse: bool, max_in_flight: int | None = None,
                  memory_limit: str | None = None, threads: int | None = None, region: str | None = None,
                  mapping_text: str | None = None) -> None:
    """A project syncing `warehouse`; `max_in_flight` None keeps the connector's default. `mapping_text`: the
    sync's mapping (MESSY_MAPPING, LIST_MAPPING), else the built-in one."""
    (root / "queries").mkdir(parents=True, exist_ok=True)
    mapping = ""
    if mapping_text:
        (root / "mappings").mkdir(exist_ok=True)
        (root / "mappings" / "bench.yml").write_text(mapping_text)
        mapping = "\n    mapping: bench.yml"
    (root / "queries" / "events.sql").write_text("select * from events\n")
    limit = f"\n  memory_limit: {memory_limit}" if memory_limit else ""
    limit += f"\n  threads: {threads}" if threads else ""
    in_flight = f"\n  max_in_flight: {max_in_flight}" if max_in_flight else ""
    (root / "connector.yml").write_text(f"""
warehouse:
  url: duckdb:///{warehouse}{limit}
tiktok:
  access_token: {TOKEN}
  max_requests_per_second: {THROUGHPUT_RATE}{in_flight}
syncs:
  events:
    query: events.sql
    event_source_id: "7654321098765432109"
    cursor: updated_at
    safety_margin_seconds: 0
    hash_in_warehouse: {str(hash_in_warehouse).lower()}{f"{chr(10)}    default_phone_region: {region}" if region else ""}{mapping}
""")


class FakeServer:
    def __init__(self, latency: float = 0.0, instant: bool = False) -> None:
        # `instant`: bench/instant_server.py, which answers OK without reading the events (the connector alone)
        command = [str(ROOT / "instant_server.py")] if instant else [
            "-m", "connector.testing.fake_tiktok", "--port", "0", "--token", TOKEN, "--latency", str(latency)]
        self.process = subprocess.Popen([sys.executable, *command], stdout=subprocess.PIPE, text=True)
        line = self.process.stdout.readline().strip()  # type: ignore[union-attr]
        self.base_url = line.rsplit(" ", 1)[-1]

    def cpu_seconds(self) -> float | None:
        """CPU the fake used so far (Linux), to tell its share of the machine from the connector's."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def cpu_since(self, before: float | None) -> float | None:
        after = self.cpu_seconds()
        return None if before is None or after is None else round(after - before, 2)

    def stats(self) -> dict:
        import requests
        return requests.get(self.base_url.replace("/open_api", "") + "/_fake/stats", timeout=30).json()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def run_measured(command: list[str], env: dict[str, str]) -> tuple[str, float, float]:
    """stdout, wall seconds and CPU seconds of one child process."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if process.returncode not in (0, 3):
            raise SystemExit(f"{' '.join(command)} failed ({process.returncode}): {err.read()[-2000:]}")
        return out.read(), seconds, round(usage.ru_utime + usage.ru_stime, 2)


def sync(project: Path, server: FakeServer, scenario: str, rows: int, *, instrument: str | None = None) -> Result:
    """One CLI sync; `instrument` runs it through a bench script that changes how state is written
    (NO_STATE_WRITES, bench/bare_id_ledger.py): an instrument, never a way to sync."""
    env = {**os.environ, "TIKTOK_API_BASE_URL": server.base_url}
    before, fake_before = server.stats()["requests"], server.cpu_seconds()
    program = [str(ROOT / instrument)] if instrument else ["-m", "connector"]
    out, seconds, cpu = run_measured([sys.executable, *program, "sync", "--json", "--quiet",
                                      "--project", str(project)], env)
    report = json.loads(out.strip().splitlines()[-1])
    requests, fake_cpu = server.stats()["requests"] - before, server.cpu_since(fake_before)
    sent = report["events_sent"]
    return Result(scenario, rows, sent, round(seconds, 2), round(sent / seconds) if sent else 0,
                  report["peak_rss_mb"], requests, report["state_seconds"], cpu, fake_cpu)


def naive(warehouse: Path, server: FakeServer, rows: int) -> Result:
    fake_before = server.cpu_seconds()
    out, seconds, cpu = run_measured([sys.executable, str(ROOT / "naive.py"), str(warehouse), server.base_url,
                                      TOKEN], dict(os.environ))
    fake_cpu = server.cpu_since(fake_before)
    report = json.loads(out)
    sent = report["events_sent"]
    return Result("naive baseline", rows, sent, round(seconds, 2), round(sent / seconds), report["peak_rss_mb"],
                  -(-sent // 1000), None, cpu, fake_cpu)


def scenario(work: Path, warehouse: Path, rows: int, name: str, *, latency: float = 0.0,
             hash_in_warehouse: bool = False, max_in_flight: int | None = None, noop: bool = False,
             memory_limit: str | None = None, threads: int | None = None,
             instrument: str | None = None, instant: bool = False, region: str | None = None,
             mapping_text: str | None = None) -> list[Result]:
    project = work / "".join(c if c.isalnum() else "_" for c in name)
    write_project(project, warehouse, hash_in_warehouse=hash_in_warehouse, max_in_flight=max_in_flight,
                  memory_limit=memory_limit, threads=threads, region=region, mapping_text=mapping_text)
    server = FakeServer(latency, instant)
    try:
        first = sync(project, server, name, rows, instrument=instrument)
        results = [first]
        if noop:
            again = sync(project, server, "no-op incremental run", rows)
            results.append(again)
        return results
    finally:
        server.stop()


def fake_alone(count: int = 300, items: bool = False) -> Result:
    """The fake TikTok's own ceiling: pre-built, valid 1,000-event bodies posted one after another from this
    process, so the fake has a core to itself. No connector sync can be faster than this on one machine.
    `items`: each event with the items scenario's contents (1 to 5 items, 3 on average, non-ASCII names)."""
    import hashlib
    import http.client
    from urllib.parse import urlsplit

    def properties(n: int, i: int) -> dict:
        fields = {"value": i % 10000 / 100, "currency": "USD", "order_id": f"O{n}-{i}"}
        if items:
            contents = [{"content_id": f"SKU-{(i * 31 + k) % 50000:06d}", "content_name": f"Artikel {MESSY_NAMES[k]}",
                         "price": (i * 7 + k) % 5000 / 100, "quantity": 1 + k % 3} for k in range(i % 5 + 1)]
            fields.update(contents=contents, content_type="product", content_ids=[c["content_id"] for c in contents],
                          num_items=sum(c["quantity"] for c in contents))
        return fields

    now = int(time.time())
    bodies = [json.dumps({"event_source": "offline", "event_source_id": "7654321098765432109", "data": [
        {"event": "Purchase", "event_time": now - 3600, "event_id": f"F{n:06d}{i:04d}",
         "user": {"email": hashlib.sha256(f"user{i}@example.com".encode()).hexdigest(),
                  "phone": hashlib.sha256(f"+1415555{i:04d}".encode()).hexdigest()},
         "properties": properties(n, i)}
        for i in range(1000)]}, ensure_ascii=False).encode() for n in range(count)]
    server = FakeServer()
    try:
        url = urlsplit(server.base_url)
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        headers = {"Access-Token": TOKEN, "Content-Type": "application/json"}
        fake_before, started = server.cpu_seconds(), time.perf_counter()
        for body in bodies:
            connection.request("POST", url.path + "/v1.3/event/track/", body, headers)
            answer = json.loads(connection.getresponse().read())
            if answer["code"] != 0:
                raise SystemExit(f"fake alone: the fake answered {answer}")
        seconds = time.perf_counter() - started
        fake_cpu = server.cpu_since(fake_before)
        connection.close()
    finally:
        server.stop()
    sent = 1000 * count
    what = "item bodies" if items else "pre-built bodies"
    return Result(f"fake TikTok alone ({what}, bench only)", sent, sent, round(seconds, 2),
                  round(sent / seconds), None, count, None, None, fake_cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--latency", action="store_true", help="also run with the fake answering after 150 ms")
    parser.add_argument("--state-pairs", type=int, default=3,
                        help="alternating runs with and without state writes, for what state costs (up to 1M rows)")
    parser.add_argument("--real-data", action="store_true",
                        help="only the clean, messy, no-items and items scenarios (bench/results/real_data.md)")
    args = parser.parse_args()
    if args.real_data:
        real_data([int(size) for size in args.sizes.split(",")])
        return
    results: list[Result] = []
    pairs: dict[int, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="tiktok-bench-") as tmp:
        work = Path(tmp)
        for rows in (int(size) for size in args.sizes.split(",")):
            warehouse = work / f"events_{rows}.duckdb"
            generate(warehouse, rows)
            fresh = lambda: _reset_state(warehouse)  # noqa: E731
            results += scenario(work, warehouse, rows, "sync, python hashing", noop=True)
            fresh()
            random_ids = work / f"events_{rows}_random_ids.duckdb"
            generate(random_ids, rows, random_ids=True)
            results += scenario(work, random_ids, rows, "sync, random event ids")
            random_ids.unlink()
            if rows <= 1_000_000:  # what the ledger, rejects and watermark writes cost, measured by leaving them out
                results += scenario(work, warehouse, rows, "sync, state writes off (bench only)",
                                    instrument=NO_STATE_WRITES)
                fresh()
                pairs[rows] = state_pairs(work, warehouse, rows, args.state_pairs)
                # The connector alone: an instant server leaves both cores to the connector.
                results += scenario(work, warehouse, rows, INSTANT, instant=True)
                fresh()
                results += scenario(work, warehouse, rows, INSTANT_NO_STATE, instant=True,
                                    instrument=NO_STATE_WRITES)
                fresh()
            results += scenario(work, warehouse, rows, "sync, hash in warehouse", hash_in_warehouse=True)
            fresh()
            # The connector's defaults are memory_limit 64MB, threads 1; DuckDB's own, on this machine, are these:
            results += scenario(work, warehouse, rows, "sync, memory_limit 16GB, threads 2 (about DuckDB's own)",
                                memory_limit="16GB", threads=2)
            fresh()
            if rows <= 1_000_000:
                server = FakeServer()
                try:
                    results.append(naive(warehouse, server, rows))
                finally:
                    server.stop()
            if args.latency and rows <= 1_000_000:
                if rows <= 100_000:  # one batch at a time is 0.15 s per 1000 events: slow on purpose
                    results += scenario(work, warehouse, rows, "latency 150 ms, 1 in flight", latency=0.15,
                                        max_in_flight=1)
                    fresh()
                for in_flight in (8, 16):
                    results += scenario(work, warehouse, rows, f"latency 150 ms, {in_flight} in flight",
                                        latency=0.15, max_in_flight=in_flight)
                    fresh()
            print("\n".join(_row(r) for r in results if r.rows == rows), flush=True)
        results.append(fake_alone())
        print(_row(results[-1]), flush=True)
    _write(results, pairs)


def real_data(sizes: list[int]) -> None:
    """Clean rows against rows as real tables hold them, and orders with their items against the same orders
    without: each pair from one run, side by side, so the ratio is not the machine's drift."""
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="tiktok-bench-") as tmp:
        work = Path(tmp)
        for rows in sizes:
            for name, make, region in (
                    ("clean", lambda path, n: generate(path, n, description=True), None),
                    ("messy", generate_messy, "US"),
                    ("messy, clean-length event ids (bench only)",
                     lambda path, n: generate_messy(path, n, short_ids=True), "US"),
                    ("orders without items", lambda path, n: generate_items(path, n, orders=False), None),
                    ("items (one row per item)", lambda path, n: generate_items(path, n, orders=True), None),
                    (LIST_SCENARIO, lambda path, n: generate_items(path, n, orders=True, as_list=True), None)):
                warehouse = work / f"{name.split()[0]}_{rows}.duckdb"
                make(warehouse, rows)
                mapping_text = (MESSY_MAPPING if name.startswith(("clean", "messy")) else
                                LIST_MAPPING if name == LIST_SCENARIO else None)
                with duckdb.connect(str(warehouse)) as con:
                    expected = con.execute("select count(distinct event_id) from events").fetchone()[0]
                # Orders with and without items also against bench/instant_server.py: the connector's own ratio
                for instant in (False, True) if "items" in name else (False,):
                    label = f"{name}, connector alone (bench only)" if instant else name
                    result = scenario(work, warehouse, rows, label, region=region, mapping_text=mapping_text,
                                      instant=instant)[0]
                    if result.events_sent != expected:
                        raise SystemExit(f"{label}: {result.events_sent:,} events sent of {expected:,}")
                    results.append(result)
                    print(_row(result), flush=True)
                    _reset_state(warehouse)
                warehouse.unlink()
    ceilings = [fake_alone(), fake_alone(items=True)]
    for result in ceilings:
        print(_row(result), flush=True)
    results += ceilings
    rate = {(r.rows, r.scenario): r.events_per_second for r in results}
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)] + ["| " + _row(r) + " |" for r in results]
    lines.append("")
    for rows in sizes:
        short = rate[rows, "messy, clean-length event ids (bench only)"] / rate[rows, "clean"]
        lines.append(f"- {rows:,} rows: messy/clean {rate[rows, 'messy'] / rate[rows, 'clean']:.2f} ({short:.2f} with "
                     f"event ids of the clean table's length), items/no items "
                     f"{rate[rows, 'items (one row per item)'] / rate[rows, 'orders without items']:.2f} "
                     f"(items/clean {rate[rows, 'items (one row per item)'] / rate[rows, 'clean']:.2f}), "
                     f"items in a LIST column/no items {rate[rows, LIST_SCENARIO] / rate[rows, 'orders without items']:.2f}")
        alone = {name: rate[rows, f"{name}, connector alone (bench only)"]
                 for name in ("orders without items", "items (one row per item)", LIST_SCENARIO)}
        lines.append(f"- connector alone (an instant server, both cores to the connector): item rows/no items "
                     f"{alone['items (one row per item)'] / alone['orders without items']:.2f}, LIST column/no items "
                     f"{alone[LIST_SCENARIO] / alone['orders without items']:.2f}")
    plain, with_items = (r.events_per_second for r in ceilings)
    lines.append(f"- the fake TikTok alone, on a core of its own: {plain:,} events/s with the no-items bodies, "
                 f"{with_items:,} with item bodies (a ceiling for the items scenario; {with_items / plain:.2f} of the first)")
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    lines.append(f"- load average when the run ended: {' '.join(load)} ({os.cpu_count()} cores, shared)")
    text = "\n".join(lines) + "\n"
    out = ROOT / "results"
    out.mkdir(exist_ok=True)
    (out / "real_data.md").write_text(text)
    (out / "real_data.json").write_text(json.dumps({"results": [asdict(r) for r in results]}, indent=2))
    print(text)


def state_pairs(work: Path, warehouse: Path, rows: int, count: int) -> list[tuple[float, float]]:
    """Seconds of a sync with and without the state writes, run alternately: the machine's speed drifts by
    ±20 % over minutes, which one pair of runs cannot tell from the cost of state."""
    rounds = alternating(work, warehouse, rows, count, {"state pair": None, "state pair off": NO_STATE_WRITES})
    return [(measured["state pair"].seconds, measured["state pair off"].seconds) for measured in rounds]


def alternating(work: Path, warehouse: Path, rows: int, count: int,
                instruments: dict[str, str | None]) -> list[dict[str, Result]]:
    """`count` rounds of one sync per named instrument (None: the plain CLI), in turn, each from fresh state."""
    rounds = []
    for _ in range(count):
        measured = {}
        for name, instrument in instruments.items():
            measured[name] = scenario(work, warehouse, rows, name, instrument=instrument)[0]
            _reset_state(warehouse)
        rounds.append(measured)
    return rounds


def _reset_state(warehouse: Path) -> None:
    con = duckdb.connect(str(warehouse))
    for table in ("watermarks", "ledger", "rejects", "runs", "leases", "state_version", "bench_bare_ids"):
        con.execute(f"drop table if exists tiktok_{table}")
    con.close()


NO_STATE_WRITES = "no_state_writes.py"
INSTANT = "connector alone: instant server (bench only)"
INSTANT_NO_STATE = "connector alone: instant server, state writes off (bench only)"
HEADER = ("scenario", "rows", "sent", "seconds", "events/s", "peak RSS MB", "requests", "state s",
          "connector CPU s", "fake CPU s")


def _row(r: Result) -> str:
    values = (r.scenario, f"{r.rows:,}", f"{r.events_sent:,}", r.seconds, f"{r.events_per_second:,}", r.peak_rss_mb,
              r.requests, r.state_seconds, r.connector_cpu, r.fake_cpu)
    return " | ".join("-" if value is None else str(value) for value in values)


def _budget(results: list[Result]) -> list[str]:
    """What two shared cores allow: the fake's own ceiling, the connector alone, and the CPU both need."""
    lines = []
    cores = os.cpu_count() or 1
    for r in results:
        if r.scenario.startswith("fake TikTok alone") and r.fake_cpu:
            per_request = r.fake_cpu / r.requests
            lines.append(f"- the fake TikTok alone answers {r.events_per_second:,} events/s with a core to itself; it "
                         f"uses {per_request * 1000:.1f} ms of CPU per 1,000-event request, so 100,000 events/s "
                         f"needs {per_request * 100:.2f} of a core for the fake alone")
        elif r.scenario == INSTANT and r.connector_cpu:
            lines.append(f"- the connector alone (instant server), {r.rows:,} rows: {r.events_per_second:,} events/s, "
                         f"{r.connector_cpu} CPU s ({r.connector_cpu / r.seconds:.2f} cores)")
        elif r.scenario == "sync, python hashing" and r.connector_cpu and r.fake_cpu:
            cpu = r.connector_cpu + r.fake_cpu
            lines.append(f"- sync, {r.rows:,} rows: connector + fake used {cpu:.1f} CPU s in {r.seconds} s "
                         f"({cpu / r.seconds:.2f} of {cores} cores); with every core busy all the time it could not "
                         f"beat {r.rows / (cpu / cores):,.0f} events/s")
    return lines


def _state_added(results: list[Result], with_writes: str, without: str, what: str) -> list[str]:
    """What state writes add, from one run of a scenario with them and one without, per size."""
    seconds = {r.rows: r.seconds for r in results if r.scenario == with_writes}
    return [f"- state writes add {seconds[r.rows] / r.seconds - 1:.0%} to {what.format(rows=f'{r.rows:,}')} "
            f"({seconds[r.rows]} s with them, {r.seconds} s without)"
            for r in results if r.scenario == without and r.rows in seconds]


def _write(results: list[Result], pairs: dict[int, list[tuple[float, float]]]) -> None:
    out = ROOT / "results"
    out.mkdir(exist_ok=True)
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + _row(r) + " |" for r in results]
    naive_rate = {r.rows: r.events_per_second for r in results if r.scenario == "naive baseline"}
    ratios = [f"- {r.scenario}, {r.rows:,} rows: {r.events_per_second / naive_rate[r.rows]:.1f}× the naive baseline"
              for r in results if r.rows in naive_rate and r.scenario.startswith("sync")]
    state_cost = (_state_added(results, "sync, python hashing", "sync, state writes off (bench only)",
                               "the sync at {rows} rows in the table above")
                  + _state_added(results, INSTANT, INSTANT_NO_STATE, "the connector alone at {rows} rows"))
    for rows, measured in pairs.items():
        added = sorted(with_writes / without - 1 for with_writes, without in measured)
        if added:
            state_cost.append(f"- state writes add {statistics.median(added):.0%} at {rows:,} rows, median of "
                              f"{len(added)} alternating pairs ({', '.join(f'{a:.0%}' for a in added)}; seconds "
                              f"with/without: {', '.join(f'{w}/{wo}' for w, wo in measured)})")
    text = "\n".join(lines + [""] + ratios + state_cost + _budget(results)) + "\n"
    (out / "latest.md").write_text(text)
    (out / "latest.json").write_text(json.dumps({"results": [asdict(r) for r in results],
                                                 "state_pairs": {str(k): v for k, v in pairs.items()}}, indent=2))
    print()
    print(text)


if __name__ == "__main__":
    main()
