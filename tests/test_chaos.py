"""Chaos: a 20,000-event warehouse synced by `python -m connector sync` subprocesses that are SIGKILLed at
random moments, against a fake TikTok that fails, throttles, drops and stalls 15 % of the requests.

The fake's clock (used for TikTok's 48 h dedup window) moves 6 h forward per cycle, so runs are spread over
days. The guarantee under test (README, "Delivery guarantees"): nothing is lost, and only the batches in
flight when a process died are ever sent again, each by a later run, with the same event ids.

Every 6th run is left to finish, so a batch is never in flight through more than 5 kills in a row (30 h):
TikTok drops every legitimate resend (within 48 h of the first send), and a duplicate "after 48 h" can only
be an event re-sent after it was committed. (Without such a run, a sync that keeps dying for more than 48 h
with the same batches in flight duplicates them for real: TikTok's window counts from the first send. That
is inherent to at-least-once delivery; an earlier version of this test found it with 5 kills in a row.)

The fake runs in this process (it has no admin control for its clock) and is driven through its HTTP admin
surface (POST /_fake/faults, GET /_fake/stats) and, for the clock and the records, its Python API. A second,
smaller test runs the fake as its own process through its CLI.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

import requests

from connector.config import load_project
from connector.testing.fake_tiktok import FakeTikTok
from delivery_helpers import PYTHON, REPO, TOKEN, UTC, Project, cli_env, make_project, utc_now

SEED = 20261122
VALID = 20_000
CURSOR_VALUES = 2_000
BATCH = 250
CYCLES = 30
CLOCK_STEP = 6 * 3600  # fake seconds per kill cycle
EARLY_KILL = 0.2  # share of kill cycles killed during start-up (query, lease, state tables), before sending
FINISH_EVERY = 6  # every 6th run is left to finish: no batch stays in flight through more than 5 kills (30 h)
NEW_PER_CYCLE = 1000  # rows added to the warehouse between cycles: ties at the max cursor, late rows, new rows


class ShiftedClock:
    """time.time() plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def _row(order_id: str, updated_at: dt.datetime, ordered_at: dt.datetime, n: int, **overrides: object) -> dict:
    row = {"order_id": order_id, "event_name": "purchase", "ordered_at": ordered_at, "updated_at": updated_at,
           "email": f"Customer{n}@Example.com" if n % 5 else None,
           "phone": f"+1 (415) 555-{n % 10000:04d}" if n % 3 else None,
           "total": Decimal(f"{n % 500}.{n % 100:02d}"), "currency": "USD"}
    row.update(overrides)
    if row["email"] is None and row["phone"] is None and "email" not in overrides:
        row["email"] = f"fallback{n}@example.com"
    return row


INVALID_KINDS = {  # overrides → the reason the connector must store
    "invalid_currency": {"currency": "XYZ"},
    "no_match_keys": {"email": None, "phone": None},
    "unknown_event": {"event_name": "teleport"},
}


def build_warehouse(p: Project, rng: random.Random, now: dt.datetime, count: int = VALID,
                    cursor_values: int = CURSOR_VALUES, bad: int = 300) -> tuple[set[str], dict[str, str]]:
    """`count` events sharing `cursor_values` distinct updated_at values (10 rows per value by default: many
    ties), event times within the last 5 days, plus `bad` invalid rows spread among them. Returns (valid ids,
    {invalid id: reason})."""
    base = now - dt.timedelta(hours=50)
    cursors = [base + dt.timedelta(seconds=73 * k, microseconds=k) for k in range(cursor_values)]
    rows, valid, invalid = [], set(), {}
    for n in range(1, count + 1):
        order_id = f"ORD-{n:06d}"
        valid.add(order_id)
        rows.append(_row(order_id, cursors[rng.randrange(cursor_values)],
                         now - dt.timedelta(seconds=rng.randint(3600, 5 * 86400)), n))
    for n in range(1, bad + 1):
        reason = list(INVALID_KINDS)[n % len(INVALID_KINDS)]
        order_id = f"BAD-{n:04d}"
        invalid[order_id] = reason
        rows.append(_row(order_id, cursors[rng.randrange(cursor_values)],
                         now - dt.timedelta(seconds=rng.randint(3600, 5 * 86400)), n, **INVALID_KINDS[reason]))
    rng.shuffle(rows)
    p.insert(rows)
    return valid, invalid


def add_rows(p: Project, cycle: int, rng: random.Random, now: dt.datetime, valid: set[str],
             invalid: dict[str, str]) -> None:
    """Between cycles, like a live warehouse: rows tying the current max cursor, late rows 30 s behind it
    (inside the 1 min lookback), newer rows one second apart, and two invalid ones. The lookback is kept
    short on purpose: a long one re-reads (and so hides) batches a watermark moved too far would skip."""
    (top,) = p.query("select max(updated_at) from orders")[0]
    rows = []
    for i in range(NEW_PER_CYCLE):
        order_id = f"NEW-{cycle:02d}-{i:03d}"
        if i < 10:
            cursor = top
        elif i < 15:
            cursor = top - dt.timedelta(seconds=30)
        else:
            cursor = top + dt.timedelta(seconds=i - 14, microseconds=i)
        overrides = INVALID_KINDS["invalid_currency"] if i >= NEW_PER_CYCLE - 2 else {}
        if overrides:
            invalid[order_id] = "invalid_currency"
        else:
            valid.add(order_id)
        rows.append(_row(order_id, cursor, now - dt.timedelta(seconds=rng.randint(600, 86400)), 50_000 + i,
                         **overrides))
    p.insert(rows)


def _admin(fake: FakeTikTok, method: str, name: str, body: dict | None = None) -> dict:
    url = fake.base_url.replace("/open_api", "") + f"/_fake/{name}"
    response = requests.request(method, url, json=body, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def _answered(fake: FakeTikTok, count: int, proc: subprocess.Popen, cap: float) -> None:
    """Wait until the fake has answered `count` requests in all, the process exited, or `cap` seconds."""
    deadline = time.monotonic() + cap
    while fake.stats["requests"] < count and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)


def _quiet(fake: FakeTikTok, cap: float = 5.0) -> None:
    """Wait until the fake has no request handler running: every request has been answered and recorded."""
    deadline = time.monotonic() + cap
    while any("process_request_thread" in t.name for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)


def test_kill_chaos_loses_nothing_and_duplicates_only_in_flight_batches(tmp_path: Path) -> None:
    started = time.monotonic()
    rng = random.Random(SEED)
    now = utc_now()
    clock = ShiftedClock()
    with FakeTikTok(access_token=TOKEN, clock=clock) as fake:
        _admin(fake, "POST", "faults", {
            "chaos": {"rate": 0.15, "seed": SEED, "kinds": ["5xx", "throttle", "drop", "stall"],
                      "stall_seconds": 0.5},
            "latency": 0.2,
        })
        p = make_project(tmp_path / "p", sync={"batch_size": BATCH, "lookback": "1m", "safety_margin_seconds": 60},
                         tiktok={"timeout_seconds": 5, "max_attempts": 12, "max_retry_seconds": 120,
                                 "max_requests_per_second": 1000})  # pacing: tests/test_rate_limit_sync.py
        valid, invalid = build_warehouse(p, rng, now)
        in_flight = getattr(load_project(p.root).tiktok, "max_in_flight", 1)  # batches sent concurrently
        env = cli_env(fake.base_url)
        logs = tmp_path / "logs"
        logs.mkdir()

        cycle_of_request: list[int] = []  # request index → cycle
        killed: set[int] = set()
        outcomes: list[str] = []

        def run_once(cycle: int, kill_after: str | None) -> subprocess.CompletedProcess | None:
            before = fake.stats["requests"]
            t0 = time.monotonic()
            out, err = logs / f"{cycle:02d}.out", logs / f"{cycle:02d}.err"
            with open(out, "w") as stdout, open(err, "w") as stderr:
                proc = subprocess.Popen(p.cli_args("sync"), env=env, cwd=str(REPO), stdout=stdout, stderr=stderr)
                try:
                    if kill_after == "early":
                        time.sleep(rng.uniform(0.05, 0.8))
                    elif kill_after == "mid":
                        # after 1-3 answered requests of this run, then within about one request's latency:
                        # most kills land while batches are in flight (sent, maybe accepted, not committed)
                        _answered(fake, before + rng.randint(1, 3), proc, cap=8.0)
                        time.sleep(rng.uniform(0.0, 0.3))
                    if kill_after and proc.poll() is None:
                        proc.send_signal(signal.SIGKILL)
                        proc.wait(timeout=10)
                        killed.add(cycle)
                        outcomes.append(f"{cycle}:killed-{kill_after}")
                    else:
                        proc.wait(timeout=120)
                        outcomes.append(f"{cycle}:{kill_after or 'run'}-exit-{proc.returncode}")
                finally:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
            t1 = time.monotonic()
            _quiet(fake)  # the fake finishes (and may accept) a request the dead client left in flight
            outcomes[-1] += f"({t1 - t0:.1f}+{time.monotonic() - t1:.1f}s)"
            cycle_of_request.extend([cycle] * (fake.stats["requests"] - len(cycle_of_request)))
            if cycle in killed:
                return None
            return subprocess.CompletedProcess(proc.args, proc.returncode, out.read_text(), err.read_text())

        cycle = 0
        for cycle in range(CYCLES):
            if cycle % FINISH_EVERY == FINISH_EVERY - 1:
                kind = None  # let it finish
            else:
                kind = "early" if rng.random() < EARLY_KILL else "mid"
            done = run_once(cycle, kind)
            if done is not None:  # it finished before the kill: it must have succeeded
                assert done.returncode == 0, f"cycle {cycle}: {done.stderr}"
            add_rows(p, cycle, rng, now, valid, invalid)
            clock.offset += CLOCK_STEP

        # Now let runs finish until one succeeds, then one more must find nothing to send.
        final = None
        for attempt in range(5):
            cycle += 1
            final = run_once(cycle, None)
            assert final is not None
            report = json.loads(final.stdout.strip().splitlines()[-1])
            clock.offset += CLOCK_STEP
            if final.returncode == 0 and report["status"] == "success":
                break
        assert final is not None and final.returncode == 0, final.stderr
        cycle += 1
        last = run_once(cycle, None)
        assert last is not None and last.returncode == 0, last.stderr
        last_report = json.loads(last.stdout.strip().splitlines()[-1])
        assert (last_report["status"], last_report["events_sent"], last_report["rows_deferred"]) == ("success", 0, 0)

        stats = _admin(fake, "GET", "stats")
        accepted = fake.accepted()

    # ---- nothing lost, nothing unexpected
    accepted_ids = Counter(e.event["event_id"] for e in accepted)
    assert set(accepted_ids) == valid, (f"lost {sorted(valid - set(accepted_ids))[:10]}, "
                                        f"unexpected {sorted(set(accepted_ids) - valid)[:10]}")

    # ---- duplicates come only from the batches in flight when a process was killed. With N batches in
    # flight at once (tiktok.max_in_flight; 1 without concurrency), a killed run leaves at most N acknowledged
    # but uncommitted batches, each among the last 2N-1 requests the fake accepted in that cycle (checkpoints
    # are committed in batch order). With N = 1: exactly the last accepted batch.
    kills = len(killed)
    duplicates = sum(n - 1 for n in accepted_ids.values())
    accepted_requests: dict[int, list[int]] = defaultdict(list)  # cycle → indexes of accepted requests
    for index in sorted({e.request_index for e in accepted}):
        accepted_requests[cycle_of_request[index]].append(index)
    acceptances: dict[str, list[int]] = defaultdict(list)  # event id → request indexes that carried it
    for e in accepted:
        acceptances[e.event["event_id"]].append(e.request_index)
    resent_from: dict[int, set[int]] = defaultdict(set)  # killed cycle → requests whose events came back
    for event_id, indexes in acceptances.items():
        for origin in sorted(indexes)[:-1]:  # every acceptance but the last one was not committed
            c = cycle_of_request[origin]
            assert c in killed, f"{event_id} was sent again although cycle {c} (request {origin}) was not killed"
            window = accepted_requests[c][-(2 * in_flight - 1):]
            assert origin in window, (f"{event_id} was accepted in request {origin}, not among the batches "
                                      f"in flight when cycle {c} was killed ({window})")
            resent_from[c].add(origin)
    chains = {i: sorted(cycle_of_request[x] for x in idx) for i, idx in acceptances.items() if len(idx) > 1}
    longest = max(chains.values(), key=lambda cs: cs[-1] - cs[0], default=[])
    assert all(len(origins) <= in_flight for origins in resent_from.values()), dict(resent_from)
    assert duplicates == stats["duplicates_within_48h"] + stats["duplicates_after_48h"]
    assert duplicates <= kills * in_flight * BATCH
    assert stats["duplicates_after_48h"] == 0, f"re-sent days after the first send; cycles {longest}"

    # ---- state: ledger, rejects, watermark
    ledger = p.ledger_ids()
    assert len(ledger) == len(set(ledger)) and set(ledger) == valid
    rejects = {(r["event_id"], r["reason"]) for r in p.rejects()}
    assert rejects == set(invalid.items()), f"rejects differ: {sorted(rejects ^ set(invalid.items()))[:10]}"
    (top,) = p.query("select max(updated_at) from orders")[0]
    assert p.watermark() == (top.astimezone(UTC).isoformat(timespec="microseconds"), "timestamptz")
    assert p.query("select count(*) from tiktok_leases") == [(0,)]

    injected = stats["server_errors"] + stats["throttled"] + stats["dropped"]
    print(f"\nchaos: {kills} kills in {len(outcomes)} runs, {stats['requests']} requests, {injected} faults "
          f"injected (5xx/stall {stats['server_errors']}, throttled {stats['throttled']}, dropped "
          f"{stats['dropped']}), {len(valid)} events + {len(invalid)} invalid rows, duplicates within 48 h "
          f"{stats['duplicates_within_48h']} (from {sum(map(len, resent_from.values()))} batches in flight at "
          f"{len(resent_from)} kills, up to {in_flight} in flight), after 48 h "
          f"{stats['duplicates_after_48h']}, fake clock +{clock.offset / 3600:.0f} h, "
          f"{time.monotonic() - started:.1f}s")
    print("runs: " + " ".join(outcomes))
    assert kills >= 15


# ------------------------------------------------------------------ the fake as a separate process

def _http(base: str, method: str, name: str, body: dict | None = None) -> dict:
    response = requests.request(method, f"{base}/_fake/{name}", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_kill_chaos_against_the_fake_server_process(tmp_path: Path) -> None:
    """The same kill loop, smaller, against `python -m connector.testing.fake_tiktok --port 0` in its own
    process, configured and read only over HTTP (POST /_fake/faults, GET /_fake/stats, GET /_fake/accepted).
    Its clock cannot be moved, so every resend here is within 48 h by construction."""
    rng = random.Random(SEED + 1)
    now = utc_now()
    batch, cycles = 100, 10
    server = subprocess.Popen([PYTHON, "-m", "connector.testing.fake_tiktok", "--port", "0", "--token", TOKEN],
                              cwd=str(REPO), env=cli_env("unused"), stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:"), line
        api = line.removeprefix("listening on ")
        base = api.removesuffix("/open_api")
        _http(base, "POST", "faults", {
            "chaos": {"rate": 0.15, "seed": SEED + 1, "kinds": ["5xx", "throttle", "drop", "stall"],
                      "stall_seconds": 0.3},
            "latency": 0.1,
        })
        p = make_project(tmp_path / "p", sync={"batch_size": batch, "lookback": "1m", "safety_margin_seconds": 60},
                         tiktok={"timeout_seconds": 5, "max_attempts": 12, "max_retry_seconds": 120,
                                 "max_requests_per_second": 1000})  # pacing: tests/test_rate_limit_sync.py
        valid, invalid = build_warehouse(p, rng, now, count=4000, cursor_values=400, bad=60)
        in_flight = getattr(load_project(p.root).tiktok, "max_in_flight", 1)
        env = cli_env(api)
        kills = 0
        for cycle in range(cycles):
            before = _http(base, "GET", "stats")["requests"]
            proc = subprocess.Popen(p.cli_args("sync"), env=env, cwd=str(REPO), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            try:
                target, deadline = before + rng.randint(1, 4), time.monotonic() + 8
                while (_http(base, "GET", "stats")["requests"] < target and proc.poll() is None
                       and time.monotonic() < deadline):
                    time.sleep(0.02)
                time.sleep(rng.uniform(0.0, 0.15))
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
                proc.wait(timeout=10)
                assert proc.returncode in (0, -signal.SIGKILL), f"cycle {cycle}: exit {proc.returncode}"
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        for _ in range(4):
            result = p.cli("sync", env=env, timeout=120)
            if result.returncode == 0 and result.report["status"] == "success":
                break
        assert result.returncode == 0, result.stderr
        last = p.cli("sync", env=env, timeout=120)
        assert (last.returncode, last.report["status"], last.report["events_sent"]) == (0, "success", 0)

        stats = _http(base, "GET", "stats")
        accepted = _http(base, "GET", "accepted")["events"]
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    ids = Counter(e["event"]["event_id"] for e in accepted)
    assert set(ids) == valid, f"lost {sorted(valid - set(ids))[:10]}, unexpected {sorted(set(ids) - valid)[:10]}"
    duplicates = sum(n - 1 for n in ids.values())
    assert duplicates == stats["duplicates_within_48h"] and stats["duplicates_after_48h"] == 0
    assert duplicates <= kills * in_flight * batch
    assert sorted(p.ledger_ids()) == sorted(valid)
    assert {(r["event_id"], r["reason"]) for r in p.rejects()} == set(invalid.items())
    (top,) = p.query("select max(updated_at) from orders")[0]
    assert p.watermark() == (top.astimezone(UTC).isoformat(timespec="microseconds"), "timestamptz")
    print(f"\nchaos (fake in its own process): {kills} kills, {stats['requests']} requests, "
          f"{stats['server_errors'] + stats['throttled'] + stats['dropped']} faults injected, "
          f"duplicates within 48 h {stats['duplicates_within_48h']}")
    assert kills >= 6
