"""Syncs of one token running together in one `sync --threads N` invocation share one rate limiter, keep
under TikTok's limit, and adapt when TikTok throttles anyway: through the real CLI, against the fake
limited per token."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections import Counter

import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from cli_helpers import cli, json_lines
from connector.testing.fake_tiktok import token_key
from delivery_helpers import MAPPING

TOKEN = "test-token"
PER_SYNC = 1600
BATCH = 40  # 40 requests a sync


def two_syncs(make_project, order, now, per_sync=PER_SYNC, **top):
    """Syncs `even` and `odd` over one orders table, each `per_sync` rows, on one token."""
    project = make_project([order(n, now - dt.timedelta(hours=2)) for n in range(1, 2 * per_sync + 1)],
                           query="select * from orders where cast(substr(order_id, 5) as int) % 2 = "
                                 "{{ vars.parity }}\n")
    path = project.root / "connector.yml"
    config = yaml.safe_load(path.read_text())
    [sync] = config["syncs"].values()
    config["syncs"] = {name: {**sync, "batch_size": BATCH, "vars": {"parity": parity}}
                       for name, parity in (("even", 0), ("odd", 1))}
    config["tiktok"].update(max_attempts=8, max_retry_seconds=60, max_requests_per_second=20)
    config.update(top)
    path.write_text(yaml.safe_dump(config))
    return project


def test_two_syncs_share_the_token_limit_and_lose_or_repeat_nothing(make_project, order, now, fake_tiktok,
                                                                    capsys) -> None:
    fake_tiktok.set_rate_limit(20)
    fake_tiktok.latency = 0.05
    project = two_syncs(make_project, order, now)
    started = time.monotonic()
    code, out, err = cli(capsys, "sync", "--threads", "2", "--project", str(project.root), "--json")
    seconds = time.monotonic() - started
    reports = {r["sync"]: r for r in json_lines(out)}
    assert code == 0, out + err
    assert {name: r["events_sent"] for name, r in reports.items()} == {"even": PER_SYNC, "odd": PER_SYNC}, out

    ids = Counter(fake_tiktok.accepted_event_ids())
    assert set(ids) == {f"ORD-{n:05d}" for n in range(1, 2 * PER_SYNC + 1)}, "an event was lost"
    assert max(ids.values()) == 1, "an event was sent twice"

    rate = fake_tiktok.rate_stats()[token_key(TOKEN)]
    requests = rate["requests"]
    # One limiter for both: about 20 requests in a second at the fake (one more when a request arrives a
    # little late, in a process this busy), and the two syncs' 80 requests took the 4 s that 20/s allows;
    # two limiters of 20/s would have sent 40 a second, and the fake would have throttled half of them.
    assert rate["most_in_one_second"] <= 22, rate
    assert rate["throttled"] <= 0.05 * requests, rate
    assert requests >= 2 * PER_SYNC // BATCH
    assert seconds >= (requests - 20) / 20, f"{requests} requests in {seconds:.1f}s: faster than 20/s"


def test_throttling_halves_the_pace_and_it_comes_back(make_project, order, now, fake_tiktok, capsys) -> None:
    """The connector is told 20/s but TikTok allows 8: the syncs are throttled, slow down, and finish with
    every event sent once; most requests get through at first try."""
    fake_tiktok.set_rate_limit(8)
    fake_tiktok.latency = 0.05
    per_sync = PER_SYNC // 2  # 20 requests a sync: 5 s at 8/s
    project = two_syncs(make_project, order, now, per_sync, threads=2)  # connector.yml's threads:, no option
    code, out, err = cli(capsys, "sync", "--project", str(project.root), "--json")
    assert code == 0, err
    assert [r["status"] for r in json_lines(out)] == ["success", "success"]
    ids = Counter(fake_tiktok.accepted_event_ids())
    assert len(ids) == 2 * per_sync and max(ids.values()) == 1
    rate = fake_tiktok.rate_stats()[token_key(TOKEN)]
    print(f"\nconnector at 20/s, TikTok allows 8/s: {rate}")
    assert 0 < rate["throttled"] < 0.25 * rate["requests"], rate
    assert sum(r["retries"] for r in json_lines(out)) == rate["throttled"]


def _memory_limit(warehouse) -> str:
    """The DuckDB file's memory_limit as DuckDB reports it."""
    with warehouse.stream("select current_setting('memory_limit')", {}, 1) as result:
        return next(result.chunks)[0][0]


def _reported(size: int) -> str:
    """How DuckDB reports a memory_limit of `size` bytes (rounded to a tenth of MiB or GiB)."""
    import duckdb
    con = duckdb.connect()
    con.execute(f"set memory_limit = '{size}B'")
    return con.execute("select current_setting('memory_limit')").fetchone()[0]


def test_jobs_on_one_duckdb_file_each_hold_their_share_of_its_memory_limit(tmp_path) -> None:
    """DuckDB keeps one database per file in the process, with one memory_limit: each warehouse open on the file
    adds its share (64MB by default, 256MB once it sorts a whole result of item rows, what connector.yml says
    otherwise), and closing it takes its share back."""
    from connector.warehouse import DuckDBWarehouse

    path = str(tmp_path / "w.duckdb")
    first, second, third = (DuckDBWarehouse(path) for _ in range(3))
    assert _memory_limit(first) == _reported(3 * 64 * 10**6) == "183.1 MiB"
    second.sort_items()  # an item sync among three jobs: 256MB for it, 64MB for each other
    assert _memory_limit(first) == _reported((256 + 2 * 64) * 10**6)
    third.close()
    assert _memory_limit(second) == _reported((256 + 64) * 10**6)
    first.close()
    second.close()
    configured = [DuckDBWarehouse(path, memory_limit="1.5GB") for _ in range(2)]
    configured[0].sort_items()  # a limit connector.yml sets holds for item syncs too
    assert _memory_limit(configured[1]) == _reported(3 * 10**9)
    for warehouse in configured:
        warehouse.close()
    alone = DuckDBWarehouse(path)
    assert _memory_limit(alone) == _reported(64 * 10**6)
    alone.close()


def test_an_item_sync_running_with_others_gets_its_item_memory(make_project, order, now, fake_tiktok,
                                                               capsys) -> None:
    """Through the CLI, three syncs at once on one DuckDB file with memory_limit unset: the item sync's query
    runs with at least the 256MB a sort of item rows gets alone (each job's 64MB times three gave it 192MB)."""
    rows = [order(n, now - dt.timedelta(hours=2)) for n in range(1, 41)]
    items_mapping = {**MAPPING, "fields": {**MAPPING["fields"], "properties.description": "memory",
                                           "properties.contents[].content_id": "sku",
                                           "properties.contents[].quantity": "qty"}}
    project = make_project(rows, mapping=items_mapping,
                           query="select o.*, 'SKU-' || i as sku, i + 1 as qty, "
                                 "current_setting('memory_limit') as memory from orders o, range(2) r(i)\n")
    path = project.root / "connector.yml"
    config = yaml.safe_load(path.read_text())
    [(name, sync)] = config["syncs"].items()
    (project.root / "queries" / "plain.sql").write_text("select * from orders\n")
    (project.root / "mappings" / "plain.yml").write_text(yaml.safe_dump(MAPPING))
    plain = {**sync, "query": "plain.sql", "mapping": "plain.yml"}
    config["syncs"] = {"items": sync, "plain_a": plain, "plain_b": {**plain, "event_source_id": "7000000000000000002"}}
    path.write_text(yaml.safe_dump(config))
    code, out, err = cli(capsys, "sync", "--threads", "3", "--project", str(project.root), "--json")
    assert code == 0, out + err
    assert {r["sync"]: r["events_sent"] for r in json_lines(out)} == {"items": 40, "plain_a": 40, "plain_b": 40}
    limits = {e.event["properties"]["description"] for e in fake_tiktok.accepted()
              if "description" in e.event.get("properties", {})}
    assert limits and all(text.endswith("MiB") and float(text.split()[0]) >= 244.1 for text in limits), limits


def test_ctrl_c_stops_the_jobs_running_together(make_project, order, now, fake_tiktok, monkeypatch) -> None:
    """Ctrl-C reaches the main thread only: the jobs on worker threads stop at their next window of rows,
    each recorded as interrupted with what was acknowledged kept, and the next run sends the rest once."""
    import os
    import signal
    import threading

    from connector import runner
    from connector.config import load_project
    from connector.invocation import run_jobs
    from connector.runner import RunOptions

    monkeypatch.setattr(runner, "PAGE_ROWS", 400)  # a window of 200 rows: 5 requests
    fake_tiktok.latency = 0.05
    project_dir = two_syncs(make_project, order, now)
    loaded = load_project(project_dir.root)
    project = dataclasses.replace(loaded, tiktok=dataclasses.replace(
        loaded.tiktok, max_requests_per_second=10, max_in_flight=4))  # 80 requests: 8 s

    interrupted_at: list[float] = []
    requests_at_interrupt: list[int] = []

    def interrupt_after_a_few_requests() -> None:
        while fake_tiktok.stats["requests"] < 6:
            time.sleep(0.01)
        interrupted_at.append(time.monotonic())
        requests_at_interrupt.append(fake_tiktok.stats["requests"])
        os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does

    threading.Thread(target=interrupt_after_a_few_requests, daemon=True).start()
    try:
        reports = run_jobs(project, list(project.syncs.values()), RunOptions(), threads=2)
    except KeyboardInterrupt:
        pass
    else:  # seen once in a full suite run, not reproduced since: say how the jobs ended
        raise AssertionError(f"run_jobs did not raise KeyboardInterrupt; the fake saw {fake_tiktok.stats}; "
                             f"the jobs: {[(r.sync, r.status, r.events_sent, r.error) for r in reports]}")
    stopped_after = time.monotonic() - interrupted_at[0]
    # Each job ends its window of rows (5 requests) and sends what is in flight (4), as a run on the main
    # thread does: 18 requests at most, under 2 s at 10 requests/s; the whole run would take 8.
    assert fake_tiktok.stats["requests"] - requests_at_interrupt[0] <= 2 * (5 + 4) + 1
    assert stopped_after < 3.5, f"the jobs ran on for {stopped_after:.1f}s after Ctrl-C"
    runs = project_dir.query("select sync_name, status, error from tiktok_runs order by sync_name")
    assert runs == [("even", "failed", "interrupted"), ("odd", "failed", "interrupted")]
    sent_before = fake_tiktok.stats["accepted_events"]
    assert 0 < sent_before < 2 * PER_SYNC

    monkeypatch.setattr(runner, "PAGE_ROWS", 50_000)
    again = run_jobs(project, list(project.syncs.values()), RunOptions(), threads=2)
    assert [r.status for r in again] == ["success", "success"]
    ids = Counter(fake_tiktok.accepted_event_ids())
    assert len(ids) == 2 * PER_SYNC
    assert sum(ids.values()) - len(ids) <= 2 * 16 * BATCH, "more re-sent than the batches in flight"


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=st.one_of(st.integers(-3, 80), st.floats(allow_nan=False, allow_infinity=False, width=16),
                       st.text(max_size=4), st.booleans(), st.none()))
def test_any_threads_value_runs_or_exits_2_naming_the_key(make_project, order, now, capsys, value) -> None:
    """`threads:` in connector.yml through the real CLI (a dry run): whole numbers 1-64 run every job; anything
    else is a configuration error naming the key, before anything runs."""
    project = two_syncs(make_project, order, now, per_sync=5)
    path = project.root / "connector.yml"
    config = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**config, "threads": value}))
    code, out, err = cli(capsys, "sync", "--dry-run", "--project", str(project.root), "--json")
    valid = _whole_number_from_1_to_64(value)
    if valid:
        assert code == 0, out + err
        assert sorted(r["sync"] for r in json_lines(out)) == ["even", "odd"]
    else:
        assert code == 2, out + err
        [error] = json_lines(out)
        assert "threads" in error["error"] and "Traceback" not in err


def _whole_number_from_1_to_64(value: object) -> bool:
    """What connector.yml takes for a whole-number key (as every such key: `2`, `2.0` and `"2"` alike)."""
    if value is None or isinstance(value, bool):
        return False
    try:
        number = float(value)  # type: ignore[arg-type]
    except ValueError:
        return False
    return number.is_integer() and 1 <= number <= 64


def test_the_threads_option_takes_whole_numbers_from_1(make_project, order, now, capsys) -> None:
    project = two_syncs(make_project, order, now, per_sync=5)
    for bad in ("0", "-1", "two", "1.5"):
        code, out, _ = cli(capsys, "sync", "--threads", bad, "--dry-run", "--project", str(project.root), "--json")
        assert code == 2 and "--threads" in json_lines(out)[0]["error"]
