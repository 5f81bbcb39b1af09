"""The README's "Delivery guarantees", one small test each: real DuckDB files, real HTTP to the fake TikTok
server on 127.0.0.1, real subprocesses for the CLI.

Every test checks what TikTok actually received (the fake's records), not only what the connector reports.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from connector import runner
from connector.events import EventBuilder
from connector.sql_events import RenderedEvents
from connector.state import StateStore
from connector.errors import FatalAPIError, RetriableAPIError
from connector.testing.fake_tiktok import FakeTikTok
from connector.tiktok import RetryPolicy, TikTokClient
from delivery_helpers import (
    PYTHON, REPO, SOURCE_ID, TOKEN, UTC, Project, cli_env, make_project, oid, order, sent_once, utc_now,
)

HOUR = dt.timedelta(hours=1)
SECRET_TOKEN = "tok-SECRET-7f3a9c41d2"


@pytest.fixture
def fake(fake_tiktok: FakeTikTok) -> FakeTikTok:
    """The conftest's fake TikTok (same token), under this module's shorter name."""
    return fake_tiktok


@pytest.fixture
def env(fake: FakeTikTok) -> dict[str, str]:
    """Environment for CLI subprocesses pointed at the fake."""
    return cli_env(fake.base_url)


def iso(value: dt.datetime) -> str:
    return value.isoformat(timespec="microseconds")


def rows(numbers: range, updated_at: object, ordered_at: dt.datetime, **overrides: object) -> list[dict]:
    return [order(n, updated_at(n) if callable(updated_at) else updated_at, ordered_at, **overrides)
            for n in numbers]


# ------------------------------------------------------------------ watermark: ties, late rows, margin

def test_ties_at_the_watermark_are_sent_exactly_once_across_runs(tmp_path: Path, fake: FakeTikTok,
                                                                 now: dt.datetime) -> None:
    top = now - HOUR  # the highest cursor value, shared by several rows
    day_ago = now - 24 * HOUR
    p = make_project(tmp_path / "p", rows(range(1, 6), lambda n: top - dt.timedelta(minutes=n), day_ago)
                     + rows(range(6, 11), top, day_ago), sync={"batch_size": 3})  # ties straddle batches

    first = p.run(now=now)
    assert (first.status, first.events_sent) == ("success", 10)
    assert p.watermark() == (iso(top), "timestamptz")

    # Rows added later with exactly the watermark's cursor value: the closed bound re-reads the ties.
    p.insert(rows(range(11, 14), top, day_ago))
    second = p.run(now=now)
    assert (second.status, second.events_sent, second.duplicates_skipped) == ("success", 3, 5)
    assert p.watermark() == (iso(top), "timestamptz")

    third = p.run(now=now)
    assert (third.events_sent, third.duplicates_skipped) == (0, 8)
    sent_once(fake.accepted_event_ids(), [oid(n) for n in range(1, 14)])
    assert sorted(p.ledger_ids()) == [oid(n) for n in range(1, 14)]


def test_late_rows_inside_the_lookback_are_sent_and_the_watermark_never_moves_back(
        tmp_path: Path, fake: FakeTikTok, now: dt.datetime) -> None:
    top = now - HOUR
    day_ago = now - 24 * HOUR
    p = make_project(tmp_path / "p", rows(range(1, 6), lambda n: top - dt.timedelta(minutes=5 * (5 - n)), day_ago),
                     sync={"lookback": "2h"})
    assert p.run(now=now).events_sent == 5
    assert p.watermark() == (iso(top), "timestamptz")

    # A transaction that committed late: its cursor is 1 h behind the watermark, inside the 2 h lookback.
    p.insert(rows(range(6, 7), top - HOUR, day_ago))
    late = p.run(now=now)
    assert (late.status, late.events_sent, late.duplicates_skipped) == ("success", 1, 5)
    assert p.watermark() == (iso(top), "timestamptz"), "a lookback re-read moved the watermark"

    # 3 h behind is outside the lookback: not read at all (the documented limit of lookback).
    p.insert(rows(range(7, 8), top - 3 * HOUR, day_ago))
    outside = p.run(now=now)
    assert (outside.status, outside.events_sent) == ("success", 0)
    assert outside.rows_read == 6, "only rows with cursor >= watermark - lookback are read"
    assert p.watermark() == (iso(top), "timestamptz")
    assert oid(7) not in p.ledger_ids()
    assert oid(7) not in {r["event_id"] for r in p.rejects()}
    # A run that stops below the watermark (here: the safety margin was raised to 2 h, so rows from
    # top - 1 h on wait) sends the late row it reads and still keeps the watermark where it was.
    cfg = p.root / "connector.yml"
    cfg.write_text(cfg.read_text().replace("safety_margin_seconds: 0", "safety_margin_seconds: 7200"))
    p.insert(rows(range(8, 9), top - dt.timedelta(minutes=90), day_ago))
    stopped_early = p.run(now=now)
    assert (stopped_early.status, stopped_early.events_sent) == ("success", 1)
    assert stopped_early.rows_deferred == 6
    assert p.watermark() == (iso(top), "timestamptz"), "the watermark moved back"
    sent_once(fake.accepted_event_ids(), [oid(n) for n in range(1, 7)] + [oid(8)])
    befores_afters = p.query("select watermark_before, watermark_after from tiktok_runs "
                             "where watermark_before is not null")
    assert all(after >= before for before, after in befores_afters)


def test_rows_inside_the_safety_margin_wait_for_the_next_run(tmp_path: Path, fake: FakeTikTok,
                                                             now: dt.datetime) -> None:
    day_ago = now - 24 * HOUR
    old = now - HOUR
    fresh = now - dt.timedelta(minutes=2)  # newer than now - 600 s
    p = make_project(tmp_path / "p", rows(range(1, 4), old, day_ago) + rows(range(4, 6), fresh, day_ago),
                     sync={"safety_margin_seconds": 600})

    first = p.run(now=now)
    assert (first.events_sent, first.rows_deferred) == (3, 2)
    assert p.watermark() == (iso(old), "timestamptz")
    assert sorted(set(fake.accepted_event_ids())) == [oid(n) for n in range(1, 4)]

    later = p.run(now=now + dt.timedelta(minutes=15))  # the fresh rows are now older than the margin
    assert (later.events_sent, later.rows_deferred) == (2, 0)
    assert p.watermark() == (iso(fresh), "timestamptz")
    sent_once(fake.accepted_event_ids(), [oid(n) for n in range(1, 6)])


# ------------------------------------------------------------------ ledger lookups

@pytest.fixture
def small_windows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Chunks of 5 rows, pages of 40 (a ledger lookup per half page); returns the sizes of the lookups made."""
    monkeypatch.setattr(runner, "CHUNK_ROWS", 5)
    monkeypatch.setattr(runner, "PAGE_ROWS", 40)
    sizes: list[int] = []
    acknowledged = StateStore.acknowledged

    def counted(self: StateStore, sync_name: str, event_ids: list[str]) -> set[str]:
        sizes.append(len(event_ids))
        return acknowledged(self, sync_name, event_ids)

    monkeypatch.setattr(StateStore, "acknowledged", counted)
    return sizes


def _repeating_orders(now: dt.datetime) -> list[dict]:
    """100 rows, one a second: orders 1-90, then 1-5 again (windows later) and 86-90 again (same window)."""
    start, day_ago = now - 2 * HOUR, now - 24 * HOUR
    numbers = [*range(1, 91), *range(1, 6), *range(86, 91)]
    return [order(n, start + dt.timedelta(seconds=i), day_ago) for i, n in enumerate(numbers)]


def test_the_ledger_is_asked_once_per_window_and_a_repeated_id_is_sent_once(
        tmp_path: Path, fake: FakeTikTok, now: dt.datetime, small_windows: list[int]) -> None:
    p = make_project(tmp_path / "p", _repeating_orders(now), sync={"lookback": "3h", "batch_size": 7})
    first = p.run(now=now)
    assert (first.status, first.events_sent, first.duplicates_skipped) == ("success", 90, 10)
    assert small_windows == [20, 20, 20, 20, 15], "one lookup per 20 rows, of the distinct ids among them"

    small_windows.clear()
    again = p.run(now=now)  # the lookback re-reads every row: the ledger answers for all of them
    assert (again.events_sent, again.duplicates_skipped) == (0, 100)
    assert len(small_windows) == 5
    sent_once(fake.accepted_event_ids(), [oid(n) for n in range(1, 91)])


def test_an_id_the_lookup_did_not_ask_about_is_checked_before_it_is_sent(
        tmp_path: Path, fake: FakeTikTok, now: dt.datetime, small_windows: list[int],
        monkeypatch: pytest.MonkeyPatch) -> None:
    p = make_project(tmp_path / "p", _repeating_orders(now), sync={"lookback": "3h"})
    assert p.run(now=now).events_sent == 90
    # The window's lookup reads ids from rows before events are built; an event whose id came out otherwise
    # (here: every one) is looked up on its own before it is sent.
    for builder in (EventBuilder, RenderedEvents):
        monkeypatch.setattr(builder, "event_ids", lambda self, groups: [None] * len(groups))
    small_windows.clear()
    again = p.run(now=now)
    assert (again.events_sent, again.duplicates_skipped) == (0, 100)
    assert len(small_windows) == 19, "one per chunk of 5 rows, but the last: orders 86-90 again, asked already"
    sent_once(fake.accepted_event_ids(), [oid(n) for n in range(1, 91)])


# ------------------------------------------------------------------ typed watermarks

@pytest.mark.parametrize("cursor_type", ["timestamp", "timestamptz", "int"])
def test_watermark_is_stored_typed_at_full_precision(tmp_path: Path, fake: FakeTikTok, now: dt.datetime,
                                                     cursor_type: str) -> None:
    day_ago = now - 24 * HOUR
    if cursor_type == "int":
        a, b, earlier = 1_700_000_001, 1_700_000_002, 1_700_000_000
        a_text, kind = str(a), "int"
    else:
        a = (now - HOUR).replace(microsecond=1)  # an odd microsecond: any rounding shows
        if cursor_type == "timestamp":
            a = a.replace(tzinfo=None)
        b, earlier = a + dt.timedelta(microseconds=1), a - dt.timedelta(seconds=1)
        a_text, kind = iso(a), cursor_type
    p = make_project(tmp_path / "p", [order(1, earlier, day_ago), order(2, a, day_ago)], cursor_type=cursor_type)

    assert p.run(now=now).events_sent == 2
    assert p.watermark() == (a_text, kind)

    p.insert([order(3, b, day_ago)])  # 1 µs (or 1) after the watermark
    second = p.run(now=now)
    assert (second.status, second.events_sent, second.duplicates_skipped) == ("success", 1, 1)
    assert p.watermark() == (str(b) if cursor_type == "int" else iso(b), kind)

    assert p.run(now=now).events_sent == 0
    sent_once(fake.accepted_event_ids(), [oid(1), oid(2), oid(3)])


def test_null_cursor_rows_are_rejected_with_reason_null_cursor(tmp_path: Path, fake: FakeTikTok,
                                                               now: dt.datetime) -> None:
    day_ago = now - 24 * HOUR
    p = make_project(tmp_path / "p", rows(range(1, 4), lambda n: now - HOUR + dt.timedelta(seconds=n), day_ago)
                     + rows(range(4, 6), None, day_ago))
    first = p.run(now=now)
    assert first.events_sent == 3
    assert first.rejected_by_reason == {"null_cursor": 2}
    rejects = p.rejects()
    assert sorted((r["event_id"], r["reason"]) for r in rejects) == [(oid(4), "null_cursor"), (oid(5), "null_cursor")]
    assert all(r["cursor_value"] is None for r in rejects)

    p.insert(rows(range(6, 7), now - dt.timedelta(minutes=30), day_ago))
    assert p.run(now=now).events_sent == 1
    assert len(p.rejects()) == 2, "null_cursor rows recorded again"
    sent_once(fake.accepted_event_ids(), [oid(1), oid(2), oid(3), oid(6)])


# ------------------------------------------------------------------ retries

def _five(tmp_path: Path, now: dt.datetime, **tiktok: object) -> Project:
    return make_project(tmp_path / "p", rows(range(1, 6), lambda n: now - HOUR + dt.timedelta(seconds=n),
                                             now - 24 * HOUR), tiktok=tiktok or None)


def test_server_errors_are_retried_and_the_batch_sent_once(tmp_path: Path, fake: FakeTikTok,
                                                           now: dt.datetime) -> None:
    p = _five(tmp_path, now, max_attempts=4, max_retry_seconds=20)
    fake.fail_next(2)  # HTTP 503
    report = p.run(now=now)
    assert (report.status, report.events_sent) == ("success", 5)
    assert report.retries >= 2
    assert fake.stats["server_errors"] == 2 and fake.stats["requests"] == 3
    sent_once(fake.accepted_event_ids(), [oid(n) for n in range(1, 6)])


def test_throttling_is_retried(tmp_path: Path, fake: FakeTikTok, now: dt.datetime) -> None:
    p = _five(tmp_path, now)
    fake.throttle_next(3)  # code 40100 with HTTP 200
    report = p.run(now=now, client=p.fast_client(max_attempts=6))
    assert (report.status, report.events_sent, report.retries) == ("success", 5, 3)
    assert fake.stats["throttled"] == 3
    sent_once(fake.accepted_event_ids(), [oid(n) for n in range(1, 6)])


def test_a_dropped_connection_is_retried(tmp_path: Path, fake: FakeTikTok, now: dt.datetime) -> None:
    p = _five(tmp_path, now)
    fake.drop_next(1)
    report = p.run(now=now)
    assert (report.status, report.events_sent) == ("success", 5)
    assert report.retries >= 1 and fake.stats["dropped"] == 1
    sent_once(fake.accepted_event_ids(), [oid(n) for n in range(1, 6)])


def test_a_stalled_request_times_out_and_is_retried(tmp_path: Path, fake: FakeTikTok, now: dt.datetime) -> None:
    p = _five(tmp_path, now, timeout_seconds=0.5)
    fake.stall_next(1, seconds=3.0)  # longer than tiktok.timeout_seconds
    started = time.monotonic()
    report = p.run(now=now)
    assert (report.status, report.events_sent) == ("success", 5)
    assert report.retries >= 1
    assert time.monotonic() - started < 2.5, "the client waited for the stalled answer"
    sent_once(fake.accepted_event_ids(), [oid(n) for n in range(1, 6)])


def test_every_sender_keeps_its_connection(fake: FakeTikTok, caplog: pytest.LogCaptureFixture) -> None:
    """16 batches in flight through one client: none waits for, or throws away, a pooled connection."""
    fake.latency = 0.3
    client = TikTokClient(fake.base_url, TOKEN, connections=16)
    with caplog.at_level("WARNING", logger="urllib3"):
        for round_ in range(2):
            senders = [threading.Thread(target=client.track,
                                        args=("offline", SOURCE_ID, [_wire_event(f"c-{round_}-{i}")]))
                       for i in range(16)]
            for sender in senders:
                sender.start()
            for sender in senders:
                sender.join()
    assert fake.stats["accepted_events"] == 32
    assert not [r.getMessage() for r in caplog.records if "pool" in r.getMessage()]


def test_proxy_settings_come_from_the_environment(fake: FakeTikTok, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", fake.base_url.removesuffix("/open_api"))  # the fake answers as the proxy
    client = TikTokClient("http://tiktok.invalid/open_api", TOKEN, retry=RetryPolicy(max_attempts=1))
    with pytest.raises(FatalAPIError, match="HTTP 404"):  # reached the proxy, which has no such path
        client.track("offline", SOURCE_ID, [_wire_event("p-1")])
    monkeypatch.setenv("NO_PROXY", "tiktok.invalid")
    client = TikTokClient("http://tiktok.invalid/open_api", TOKEN, retry=RetryPolicy(max_attempts=1))
    with pytest.raises(RetriableAPIError, match="connection failed"):  # straight to a host that does not exist
        client.track("offline", SOURCE_ID, [_wire_event("p-1")])


def _wire_event(event_id: str) -> dict[str, object]:
    """One valid offline event as it goes on the wire (hashed email), for the client alone."""
    return {"event": "Purchase", "event_time": int(time.time()) - 3600, "event_id": event_id,
            "user": {"email": "a" * 64}}


def test_exhausted_retries_fail_the_run_and_leave_state_alone(tmp_path: Path, fake: FakeTikTok,
                                                              env: dict[str, str], now: dt.datetime) -> None:
    day_ago = now - 24 * HOUR
    p = make_project(tmp_path / "p", rows(range(1, 6), lambda n: now - 2 * HOUR + dt.timedelta(seconds=n), day_ago),
                     tiktok={"max_attempts": 3, "max_retry_seconds": 5})
    healthy = p.cli("sync", env=env)
    assert healthy.returncode == 0 and healthy.report["events_sent"] == 5
    watermark, ledger = p.watermark(), p.ledger_ids()

    p.insert(rows(range(6, 11), lambda n: now - HOUR + dt.timedelta(seconds=n), day_ago))
    fake.fail_next(100)
    before = fake.stats["requests"]
    failed = p.cli("sync", env=env)
    assert failed.returncode == 1, failed.stderr
    assert failed.report["status"] == "failed" and failed.report["events_sent"] == 0
    assert "3 attempts" in failed.report["error"]
    assert fake.stats["requests"] - before == 3, "max_attempts not respected"
    assert p.watermark() == watermark
    assert p.ledger_ids() == ledger
    assert p.query("select status from tiktok_runs order by started_at desc limit 1") == [("failed",)]

    accepted = fake.accepted_event_ids()
    fake.reset()
    again = p.cli("sync", env=env)
    assert again.returncode == 0 and again.report["events_sent"] == 5
    sent_once(accepted + fake.accepted_event_ids(), [oid(n) for n in range(1, 11)])
    assert sorted(p.ledger_ids()) == [oid(n) for n in range(1, 11)]


@pytest.mark.parametrize("case", ["40105", "40001", "wrong-token"])
def test_auth_errors_stop_at_once_without_retries_or_leaking_the_token(
        tmp_path: Path, fake: FakeTikTok, now: dt.datetime, case: str) -> None:
    p = _five(tmp_path, now, max_attempts=5)
    if case != "wrong-token":
        fake.set_auth_error(int(case))
    result = p.cli("sync", env=cli_env(fake.base_url, token=SECRET_TOKEN))
    assert result.returncode == 1
    report = result.report
    assert report["status"] == "failed" and report["events_sent"] == 0
    expected_code = "40105" if case == "wrong-token" else case
    assert expected_code in report["error"]
    assert len(fake.requests()) == 1, "an auth error was retried"
    assert SECRET_TOKEN not in result.stdout + result.stderr
    assert SECRET_TOKEN not in repr(p.query("select * from tiktok_runs"))
    assert p.watermark() is None and p.ledger_ids() == []


def test_a_40002_without_an_index_bisects_the_batch_and_sends_everything_once(
        tmp_path: Path, fake: FakeTikTok, now: dt.datetime) -> None:
    p = make_project(tmp_path / "p", rows(range(1, 41), lambda n: now - HOUR + dt.timedelta(seconds=n),
                                          now - 24 * HOUR))
    fake.fail_next(1, code=40002, http_status=200, message="Invalid parameters")  # names no event
    report = p.run(now=now)
    assert (report.status, report.events_sent, report.batches_split) == ("success", 40, 1)
    assert report.rejected_by_reason == {}
    sent_once(fake.accepted_event_ids(), [oid(n) for n in range(1, 41)])


# ------------------------------------------------------------------ bad rows isolated, retry command

def test_a_poisoned_event_is_isolated_stored_and_retried(tmp_path: Path, fake: FakeTikTok,
                                                         env: dict[str, str], now: dt.datetime) -> None:
    cursor = lambda n: now - 2 * HOUR + dt.timedelta(seconds=n)  # noqa: E731
    p = make_project(tmp_path / "p", rows(range(1, 1001), cursor, now - 24 * HOUR))
    poisoned = oid(500)
    fake.reject_event_ids([poisoned], message="Not a valid value for this pixel")

    report = p.run(now=now)
    assert (report.status, report.events_sent) == ("success", 999)
    assert report.rejected_by_reason == {"rejected_by_tiktok": 1}
    assert [r.event_count for r in fake.requests()] == [1000, 999]
    sent_once(fake.accepted_event_ids(), [oid(n) for n in range(1, 1001) if n != 500])
    [reject] = p.rejects()
    assert (reject["event_id"], reject["reason"], reject["resolved_at"]) == (poisoned, "rejected_by_tiktok", None)
    assert "data.499.event_id: Not a valid value for this pixel" in reject["detail"]
    assert "40002" in reject["detail"]
    assert p.watermark() == (iso(cursor(1000)), "timestamptz"), "the poisoned row blocked the watermark"
    watermark = p.watermark()

    fake.reset()  # TikTok accepts it now
    retried = p.cli("retry", "orders", env=env)
    assert retried.returncode == 0, retried.stderr
    assert (retried.report["status"], retried.report["events_sent"]) == ("success", 1)
    assert fake.accepted_event_ids() == [poisoned]
    [reject] = p.rejects()
    assert reject["resolved_at"] is not None
    assert p.watermark() == watermark

    second = p.cli("retry", "orders", env=env)
    assert second.returncode == 0 and second.report["events_sent"] == 0
    assert fake.accepted_event_ids() == [poisoned]
    assert poisoned in p.ledger_ids() and len(p.ledger_ids()) == 1000


def test_an_event_refused_by_tiktok_at_the_watermark_is_recorded_once(tmp_path: Path, fake: FakeTikTok,
                                                                      now: dt.datetime) -> None:
    """A refused row re-read at the watermark (a tie) is neither sent again nor stored again by later runs:
    `retry` is the way to re-send it."""
    p = make_project(tmp_path / "p", rows(range(1, 6), lambda n: now - HOUR + dt.timedelta(seconds=n),
                                          now - 24 * HOUR))
    fake.reject_event_ids([oid(5)])  # the row with the highest cursor: the next run re-reads it
    assert p.run(now=now).events_sent == 4
    assert p.watermark() == (iso(now - HOUR + dt.timedelta(seconds=5)), "timestamptz")
    for _ in range(2):
        again = p.run(now=now)
        assert (again.status, again.events_sent) == ("success", 0)
    assert [r.event_count for r in fake.requests()] == [5, 4], "the refused event was sent again"
    unresolved = [r for r in p.rejects() if r["resolved_at"] is None]
    assert [(r["event_id"], r["reason"]) for r in unresolved] == [(oid(5), "rejected_by_tiktok")]


# ------------------------------------------------------------------ one run per sync

def _dead_pid() -> int:
    child = subprocess.Popen([PYTHON, "-c", "pass"])
    child.wait()
    try:
        os.kill(child.pid, 0)
    except ProcessLookupError:
        return child.pid
    pytest.skip("the pid of a finished child was reused at once")


def _insert_lease(p: Project, owner: str) -> None:
    at = dt.datetime.now(UTC).replace(tzinfo=None)
    p.execute("insert into tiktok_leases values (?, ?, ?, ?)", [p.sync, owner, at, at + dt.timedelta(days=365)])


def test_a_lease_held_by_a_live_process_skips_the_run_with_exit_0(tmp_path: Path, fake: FakeTikTok,
                                                                  env: dict[str, str], now: dt.datetime) -> None:
    p = _five(tmp_path, now)
    assert p.cli("sync", env=env).returncode == 0
    fake.reset()
    p.insert(rows(range(6, 8), now - dt.timedelta(minutes=30), now - 24 * HOUR))
    holder = f"{socket.gethostname()}:{os.getpid()}:someone-else"  # this test process: alive
    _insert_lease(p, holder)

    result = p.cli("sync", env=env)
    assert result.returncode == 0, result.stderr
    assert "skipped" in result.stderr and "already running" in result.stderr
    assert fake.stats["requests"] == 0
    assert p.query("select owner from tiktok_leases") == [(holder,)], "the live holder's lease was taken"


def test_a_lease_left_by_a_dead_process_does_not_block_the_next_run(tmp_path: Path, fake: FakeTikTok,
                                                                    env: dict[str, str], now: dt.datetime) -> None:
    p = _five(tmp_path, now)
    assert p.cli("sync", env=env).returncode == 0
    p.insert(rows(range(6, 8), now - dt.timedelta(minutes=30), now - 24 * HOUR))
    _insert_lease(p, f"{socket.gethostname()}:{_dead_pid()}:killed-run")

    result = p.cli("sync", env=env)
    assert result.returncode == 0, result.stderr
    assert result.report["status"] == "success" and result.report["events_sent"] == 2
    assert p.query("select count(*) from tiktok_leases") == [(0,)]
    sent_once(fake.accepted_event_ids(), [oid(n) for n in range(1, 8)])


@pytest.fixture(scope="module")
def concurrent_runs(tmp_path_factory: pytest.TempPathFactory):
    """A first sync held mid-run (the fake keeps its requests waiting at a gate), and a second run of the same
    sync started meanwhile. Yields (first, second, fake) with first and second as CliResults."""
    from delivery_helpers import CliResult

    now = utc_now()
    with FakeTikTok(access_token=TOKEN, latency=0.05) as fake:
        gate, arrived = threading.Event(), threading.Semaphore(0)
        handle = fake._handle_track

        def gated(headers, raw):  # requests wait here until the second run is over
            arrived.release()
            gate.wait(20)
            return handle(headers, raw)

        fake._handle_track = gated  # type: ignore[method-assign]
        env = cli_env(fake.base_url)
        p = make_project(tmp_path_factory.mktemp("concurrent") / "p",
                         rows(range(1, 41), lambda n: now - HOUR + dt.timedelta(seconds=n), now - 24 * HOUR),
                         sync={"batch_size": 5}, tiktok={"timeout_seconds": 30})
        first = subprocess.Popen(p.cli_args("sync"), env=env, cwd=str(REPO), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        try:
            assert arrived.acquire(timeout=30), "the first run did not start sending"
            second = p.cli("sync", env=env, timeout=30)  # the first run holds its lease and is sending
            assert first.poll() is None, "the first run ended before the second one: the test proves nothing"
            gate.set()
            out, err = first.communicate(timeout=60)
        finally:
            gate.set()
            if first.poll() is None:
                first.kill()
                first.wait()
        print(f"\nsecond run: exit {second.returncode}, stderr: {second.stderr.strip()!r}")
        yield CliResult(first.returncode, out, err), second, fake


def test_a_concurrent_second_run_sends_nothing_and_the_first_completes(concurrent_runs) -> None:
    first, second, fake = concurrent_runs
    assert first.returncode == 0, first.stderr
    assert first.report["status"] == "success" and first.report["events_sent"] == 40
    assert all(r.get("events_sent", 0) == 0 for r in second.reports)
    message = second.stderr.lower()
    assert message.startswith("skipped") or "already running" in message, message
    sent_once(fake.accepted_event_ids(), [oid(n) for n in range(1, 41)])
    assert [r.event_count for r in fake.requests()] == [5] * 8, "the second run sent something"


def test_a_concurrent_second_run_exits_0(concurrent_runs) -> None:
    """README: exit 0 when another run holds the sync, whether the lease or DuckDB's file lock stops it."""
    first, second, _ = concurrent_runs
    assert first.returncode == 0
    assert second.returncode == 0, second.stderr


# ------------------------------------------------------------------ backfill

def _backfill_rows(now: dt.datetime) -> tuple[list[dict], dict[str, list[str]]]:
    """Rows by event time (ordered_at): 1 at -35 d (in the range, too old for TikTok), 2-4 at -20/-10/-5 d
    (in the range), 5 at -1 d (after the range), 6 at -45 d (before the range)."""
    ages = {1: 35, 2: 20, 3: 10, 4: 5, 5: 1, 6: 45}
    data = [order(n, now - HOUR + dt.timedelta(seconds=n), now - dt.timedelta(days=age)) for n, age in ages.items()]
    return data, {"in_range": [oid(2), oid(3), oid(4)], "too_old": [oid(1)], "outside": [oid(5), oid(6)]}


def _range(now: dt.datetime) -> list[str]:
    fmt = "%Y-%m-%dT%H:%M:%S"
    return ["--start", (now - dt.timedelta(days=40)).strftime(fmt), "--end", (now - dt.timedelta(days=2)).strftime(fmt)]


def test_backfill_sends_its_range_once_and_never_moves_the_watermark(
        tmp_path: Path, fake: FakeTikTok, env: dict[str, str], now: dt.datetime) -> None:
    data, ids = _backfill_rows(now)
    p = make_project(tmp_path / "p", data)

    first = p.cli("backfill", "orders", *_range(now), env=env)
    assert first.returncode == 0, first.stderr
    report = first.report
    assert (report["mode"], report["status"], report["events_sent"]) == ("backfill", "success", 3)
    assert report["rejected_by_reason"] == {"event_too_old": 1}
    assert report["events_outside_range"] == 2
    sent_once(fake.accepted_event_ids(), ids["in_range"])
    assert p.watermark_rows() == []
    assert sorted(p.ledger_ids()) == ids["in_range"]

    second = p.cli("backfill", "orders", *_range(now), env=env)
    assert second.returncode == 0 and second.report["events_sent"] == 0
    assert second.report["duplicates_skipped"] == 3
    assert p.watermark_rows() == []

    # The next incremental sync does not resend what the backfill sent.
    incremental = p.cli("sync", env=env)
    assert incremental.returncode == 0
    assert (incremental.report["events_sent"], incremental.report["duplicates_skipped"]) == (1, 3)
    sent_once(fake.accepted_event_ids(), ids["in_range"] + [oid(5)])


def test_backfill_after_incremental_sync_sends_only_what_sync_could_not_see(
        tmp_path: Path, fake: FakeTikTok, env: dict[str, str], now: dt.datetime) -> None:
    cursor = lambda n: now - HOUR + dt.timedelta(seconds=n)  # noqa: E731
    p = make_project(tmp_path / "p", rows(range(1, 11), cursor, now - dt.timedelta(days=3)))
    assert p.cli("sync", env=env).report["events_sent"] == 10
    watermark = p.watermark_rows()

    # Rows loaded late with an old cursor: incremental sync cannot see them, a backfill can.
    p.insert(rows(range(11, 14), now - 10 * HOUR, now - dt.timedelta(days=4)))
    assert p.cli("sync", env=env).report["events_sent"] == 0
    result = p.cli("backfill", "orders", *_range(now), env=env)
    assert result.returncode == 0
    assert (result.report["events_sent"], result.report["duplicates_skipped"]) == (3, 10)
    assert p.watermark_rows() == watermark
    sent_once(fake.accepted_event_ids(), [oid(n) for n in range(1, 14)])


def test_backfill_dry_run_sends_nothing_and_keeps_state(tmp_path: Path, fake: FakeTikTok,
                                                        env: dict[str, str], now: dt.datetime) -> None:
    data, ids = _backfill_rows(now)
    p = make_project(tmp_path / "p", data)
    result = p.cli("backfill", "orders", *_range(now), "--dry-run", env=env)
    assert result.returncode == 0, result.stderr
    assert result.report["dry_run"] is True and result.report["events_to_send"] == 3
    assert fake.stats["requests"] == 0
    if p.table_exists("tiktok_ledger"):
        assert p.ledger_ids() == [] and p.watermark_rows() == []
        assert p.query("select count(*) from tiktok_rejects") == [(0,)]


# ------------------------------------------------------------------ the counts, visible with -s

def test_print_delivery_counts(tmp_path: Path, fake: FakeTikTok, now: dt.datetime) -> None:
    cursor = lambda n: now - 2 * HOUR + dt.timedelta(seconds=n)  # noqa: E731
    p = make_project(tmp_path / "p", rows(range(1, 2501), cursor, now - 24 * HOUR)
                     + rows(range(2501, 2504), cursor, now - 24 * HOUR, currency="XYZ"),
                     sync={"batch_size": 500, "lookback": "1h"})
    fake.fail_next(1)
    fake.throttle_next(1)
    fake.drop_next(1)
    fake.fail_next(1, code=40002, http_status=200, message="Invalid parameters")  # no index: bisect
    fake.reject_event_ids([oid(1234)])
    first = p.run(now=now, client=p.fast_client())
    p.insert(rows(range(2504, 2511), now - HOUR, now - 24 * HOUR))
    second = p.run(now=now, client=p.fast_client())

    for name, r in (("first", first), ("second", second)):
        print(f"\n{name} run: sent {r.events_sent}, retried {r.retries}, split {r.batches_split}, "
              f"rejected {r.events_rejected} {dict(r.rejected_by_reason)}, duplicates skipped "
              f"{r.duplicates_skipped}, batches {r.batches}")
    print(f"fake: {fake.stats}")
    assert (first.status, second.status) == ("success", "success")
    assert first.events_sent == 2499 and first.retries == 3 and first.batches_split == 1
    assert first.rejected_by_reason == {"rejected_by_tiktok": 1, "invalid_currency": 3}
    assert second.events_sent == 7 and second.duplicates_skipped > 0
    sent_once(fake.accepted_event_ids(), [oid(n) for n in range(1, 2511) if n != 1234 and not 2501 <= n <= 2503])
    assert fake.stats["duplicates_within_48h"] == 0
