"""The fake TikTok's per-token rate limit: a sliding one-second window, code 40100 beyond it, set through
the Python API, the /_fake/ HTTP control and the command line."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from connector.testing.fake_tiktok import FakeTikTok, token_key
from connector.tiktok_spec import CODE_THROTTLED, TRACK_PATH

TOKEN = "test-token"
OTHER = "other-token"
SOURCE_ID = "7654321098765432109"


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def body(i: int = 0) -> dict:
    event = {"event": "Purchase", "event_time": int(time.time()) - 3600, "event_id": f"r-{i}",
             "user": {"email": "a" * 64}}
    return {"event_source": "offline", "event_source_id": SOURCE_ID, "data": [event]}


def codes(http: requests.Session, url: str, n: int, token: str = TOKEN) -> list[int]:
    return [http.post(url + TRACK_PATH, json=body(i), headers={"Access-Token": token}, timeout=5).json()["code"]
            for i in range(n)]


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake(clock: Clock) -> Iterator[FakeTikTok]:
    with FakeTikTok(access_token=TOKEN, rate_limit=3, rate_clock=clock) as server:
        yield server


def test_requests_beyond_the_limit_in_one_second_are_throttled(fake: FakeTikTok, clock: Clock,
                                                                http: requests.Session) -> None:
    assert codes(http, fake.base_url, 5) == [0, 0, 0, CODE_THROTTLED, CODE_THROTTLED]
    clock.now += 0.5
    assert codes(http, fake.base_url, 1) == [CODE_THROTTLED], "the window slides: the first three are 0.5 s old"
    clock.now += 0.5
    assert codes(http, fake.base_url, 4) == [0, 0, 0, CODE_THROTTLED], "a second later the window is free again"
    stats = fake.stats
    assert (stats["requests"], stats["throttled"], stats["accepted_events"]) == (10, 4, 6)
    assert fake.rate_stats() == {token_key(TOKEN): {"requests": 10, "throttled": 4, "most_in_one_second": 6,
                                                    "first_to_last_seconds": 1.0}}
    assert [r.code for r in fake.requests()][:5] == [0, 0, 0, CODE_THROTTLED, CODE_THROTTLED]


def test_each_token_has_its_own_window(fake: FakeTikTok, http: requests.Session) -> None:
    assert codes(http, fake.base_url, 4) == [0, 0, 0, CODE_THROTTLED]
    # The other token is refused for its token (40105), but only after passing its own rate window.
    assert codes(http, fake.base_url, 3, token=OTHER) == [40105] * 3
    rates = fake.rate_stats()
    assert rates[token_key(OTHER)] == {"requests": 3, "throttled": 0, "most_in_one_second": 3,
                                       "first_to_last_seconds": 0.0}
    assert rates[token_key(TOKEN)]["throttled"] == 1
    assert TOKEN not in repr(rates) and OTHER not in repr(rates)


def test_throttled_requests_do_not_count_against_the_window(fake: FakeTikTok, clock: Clock,
                                                            http: requests.Session) -> None:
    codes(http, fake.base_url, 3)
    for _ in range(4):
        clock.now += 0.3
        codes(http, fake.base_url, 2)  # at 0.3 and 0.6 throttled; at 0.9 still; at 1.2 two let through
    assert fake.rate_stats()[token_key(TOKEN)]["throttled"] == 6
    assert fake.stats["accepted_events"] == 5


def test_set_rate_limit_and_reset(fake: FakeTikTok, clock: Clock, http: requests.Session) -> None:
    fake.set_rate_limit(None)
    assert codes(http, fake.base_url, 6) == [0] * 6
    fake.set_rate_limit(1)
    clock.now += 2
    assert codes(http, fake.base_url, 2) == [0, CODE_THROTTLED]
    fake.reset()
    assert fake.rate_limit == 3 and fake.rate_stats() == {}
    with pytest.raises(ValueError):
        fake.set_rate_limit(-1)


def test_the_http_control_sets_the_limit_and_reports_per_token(clock: Clock, http: requests.Session) -> None:
    with FakeTikTok(access_token=TOKEN, rate_clock=clock) as fake:
        admin = fake.base_url.removesuffix("/open_api") + "/_fake/"
        assert codes(http, fake.base_url, 4) == [0] * 4, "no limit by default"
        assert http.post(admin + "faults", json={"rate_limit": 2}, timeout=5).json() == {"ok": True}
        clock.now += 5
        assert codes(http, fake.base_url, 3) == [0, 0, CODE_THROTTLED]
        rate = http.get(admin + "rate", timeout=5).json()
        assert rate == {"rate_limit": 2.0, "window": "sliding, 1 s",
                        "tokens": {token_key(TOKEN): {"requests": 7, "throttled": 1, "most_in_one_second": 4,
                                                      "first_to_last_seconds": 5.0}}}
        assert http.get(admin + "stats", timeout=5).json()["throttled"] == 1
        assert http.post(admin + "faults", json={"rate_limit": None}, timeout=5).json() == {"ok": True}
        assert codes(http, fake.base_url, 3) == [0] * 3
        assert http.post(admin + "faults", json={"rate_limit": -2}, timeout=5).status_code == 400


def test_the_command_line_flag(http: requests.Session) -> None:
    root = Path(__file__).resolve().parents[1]
    env = os.environ | {"PYTHONPATH": str(root)}
    proc = subprocess.Popen([sys.executable, "-m", "connector.testing.fake_tiktok", "--port", "0",
                             "--token", TOKEN, "--rate-limit", "2"], cwd=root, env=env, stdout=subprocess.PIPE,
                            text=True)
    watchdog = threading.Timer(10, proc.kill)
    watchdog.start()
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        match = re.fullmatch(r"listening on (http://127\.0\.0\.1:\d+/open_api)\n", line)
        assert match, line
        # Three at once: the third is within a second of the first two (the server's real clock).
        assert codes(http, match.group(1), 3) == [0, 0, CODE_THROTTLED]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        watchdog.cancel()
        proc.kill()
