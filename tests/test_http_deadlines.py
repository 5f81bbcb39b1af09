"""No hang: every HTTP attempt (TikTok, `check`, the alert webhook) ends within its deadline, however slowly
the server answers, and a batch's retries end within max_retry_seconds. Real CLI, the fake TikTok dripping
its answers one byte at a time over real sockets."""

from __future__ import annotations

import re
import time

import pytest

from connector.alerts import ALERT_SECONDS
from connector.testing.fake_tiktok import FakeTikTok
from cli_helpers import cli, json_lines
from conftest import make_order

DRIP = 0.1  # seconds between two bytes: a whole answer takes 15-20 s, every single read gets a byte in time
TIMEOUT = 1.0  # also for the undisturbed requests of a test, on a busy machine
SLACK = 4.0  # process work around the HTTP calls (warehouse, state, threads) on a busy machine; a drip takes 19 s


def timed(capsys, *argv: str) -> tuple[float, int, str, str]:
    started = time.monotonic()
    code, out, err = cli(capsys, *argv)
    return time.monotonic() - started, code, out, err


def test_a_drip_fed_answer_ends_each_attempt_at_its_deadline_and_the_lease_is_free_after(
        make_project, fake_tiktok, now, capsys) -> None:
    attempts, budget = 3, 2.0
    project = make_project([make_order(1, now), make_order(2, now)],
                           tiktok={"timeout_seconds": TIMEOUT, "max_attempts": attempts, "max_retry_seconds": budget})
    fake_tiktok.drip_next(attempts, interval=DRIP)
    seconds, code, out, err = timed(capsys, "sync", "--project", str(project.root), "--json")
    assert code == 1 and "Traceback" not in err
    [report] = json_lines(out)
    assert re.search(r"no complete answer within [\d.]+s", report["error"])  # the last retry: what was left
    assert "run the sync again later" in report["error"]
    assert seconds < max(TIMEOUT, budget) + TIMEOUT + SLACK, seconds
    assert 2 <= len(fake_tiktok.requests()) <= attempts  # retried, within both bounds

    # the run ended: its lease is gone, the next run sends (TikTok dedups what the dripped answers carried)
    fake_tiktok.reset()
    code, out, err = cli(capsys, "sync", "--project", str(project.root), "--json")
    assert code == 0, out + err
    assert sorted(fake_tiktok.accepted_event_ids()) == ["ORD-00001", "ORD-00002"]


def test_the_retry_loop_ends_within_max_retry_seconds_whatever_max_attempts_says(
        make_project, fake_tiktok, now, capsys) -> None:
    budget, timeout = 1.2, 0.3
    project = make_project([make_order(1, now)],
                           tiktok={"timeout_seconds": timeout, "max_attempts": 50, "max_retry_seconds": budget})
    fake_tiktok.drip_next(50, interval=DRIP)
    seconds, code, out, err = timed(capsys, "sync", "--project", str(project.root), "--json")
    assert code == 1
    [report] = json_lines(out)
    assert "no complete answer within" in report["error"]
    assert seconds < budget + timeout + SLACK, seconds
    assert len(fake_tiktok.requests()) < 50


def test_check_verifies_within_the_deadline_against_a_drip_fed_answer(make_project, fake_tiktok, now,
                                                                       capsys) -> None:
    project = make_project([make_order(1, now)], tiktok={"timeout_seconds": TIMEOUT, "max_attempts": 2,
                                                         "max_retry_seconds": 1.0})
    fake_tiktok.drip_next(1, interval=DRIP)
    seconds, code, out, err = timed(capsys, "check", "--project", str(project.root))
    [line] = [line for line in out.splitlines() if "tiktok:" in line]
    assert f"no complete answer within {TIMEOUT:g}s" in line and "Traceback" not in err
    assert seconds < TIMEOUT + SLACK, seconds

    fake_tiktok.drip_next(2, interval=DRIP)  # a test event: the sync's retry bounds
    seconds, code, out, err = timed(capsys, "check", "--project", str(project.root), "--test-event-code", "T1")
    [line] = [line for line in out.splitlines() if "tiktok:" in line]
    assert "FAIL" in line and "no complete answer within" in line and code == 1
    assert seconds < 2 * TIMEOUT + SLACK, seconds  # within max(timeout_seconds, max_retry_seconds)


def test_a_drip_feeding_webhook_holds_the_run_up_for_a_few_seconds_at_most(make_project, fake_tiktok, now,
                                                                            capsys) -> None:
    with FakeTikTok() as hook:
        hook.drip_next(1, interval=DRIP)
        project = make_project([make_order(1, now), make_order(2, now, currency="XYZ")],
                               sync_overrides={"alert_webhook_url": hook.base_url + "/v1.3/event/track/"})
        seconds, code, out, err = timed(capsys, "sync", "--project", str(project.root), "--json")
    assert code == 3  # rejecting: the reject rate decides, not the webhook
    [report] = json_lines(out)
    assert report["status"] == "success" and report["events_sent"] == 1
    [note] = [n for n in report["notes"] if "alert webhook" in n]
    assert f"no complete answer within {ALERT_SECONDS:g}s" in note
    assert seconds < ALERT_SECONDS + SLACK, seconds
    assert len(hook.requests()) == 1  # one attempt: an alert is not retried


@pytest.mark.parametrize("max_in_flight", [1, 16])
def test_kept_alive_connections_still_serve_every_batch_after_a_cut(make_project, fake_tiktok, now, capsys,
                                                                    max_in_flight) -> None:
    """A socket cut at a deadline is never handed to a later attempt: pooled connections keep working."""
    project = make_project([make_order(n, now) for n in range(1, 41)], sync_overrides={"batch_size": 2},
                           tiktok={"timeout_seconds": TIMEOUT, "max_attempts": 4, "max_retry_seconds": 5,
                                   "max_in_flight": max_in_flight})
    fake_tiktok.drip_next(2, interval=DRIP)
    code, out, err = cli(capsys, "sync", "--project", str(project.root), "--json")
    assert code == 0, out + err
    [report] = json_lines(out)
    assert report["events_sent"] == 40 and report["retries"] >= 1
    assert len(set(fake_tiktok.accepted_event_ids())) == 40
