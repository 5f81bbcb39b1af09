"""The rate limiter: even pacing under the ceiling, one cut per throttled pace, recovery, sharing per token."""

from __future__ import annotations

import gc
import math
import threading

import pytest
from hypothesis import given, settings, strategies as st

from connector.ratelimit import (
    CATCH_UP_BELOW, CATCH_UP_GAP, CATCH_UP_SECONDS, DECREASE, FAST_SECONDS, FAST_UP_TO, JITTER_GUARD, MIN_RATE,
    RECOVERY_SECONDS, RateLimiter, shared_limiter,
)


class FakeClock:
    """A clock that only moves when the limiter sleeps (or a test says so)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


def limiter(rate: float) -> tuple[RateLimiter, FakeClock]:
    clock = FakeClock()
    return RateLimiter(rate, clock=clock, sleep=clock.sleep), clock


def starts(lim: RateLimiter, clock: FakeClock, n: int) -> list[float]:
    times = []
    for _ in range(n):
        lim.acquire()
        times.append(clock.now)
    return times


def most_in_one_second(times: list[float]) -> int:
    """The largest number of starts inside any closed window of one second."""
    times = sorted(times)
    best, first = 0, 0
    for last, t in enumerate(times):
        while t - times[first] > 1.0:
            first += 1
        best = max(best, last - first + 1)
    return best


def test_requests_are_spaced_evenly_under_the_ceiling() -> None:
    lim, clock = limiter(10)
    times = starts(lim, clock, 31)
    gaps = {round(b - a, 9) for a, b in zip(times, times[1:])}
    assert gaps == {round((1 + JITTER_GUARD) / 10, 9)}
    assert most_in_one_second(times) == 10
    assert times[0] == 1000.0, "the first request does not wait"


def test_a_waiter_that_wakes_late_pushes_the_next_ones_back() -> None:
    """A sender thread that gets the CPU 20 ms late (a busy process) leaves late, and at a pace of long slots
    the next one still leaves a full slot after it: requests never bunch up at the server."""
    lim, clock = limiter(10)
    naps = 0

    def late_sleep(seconds: float) -> None:
        nonlocal naps
        naps += 1
        clock.sleep(seconds + (0.02 if naps == 3 else 0.0))

    lim._sleep = late_sleep
    times = starts(lim, clock, 21)
    interval = (1 + JITTER_GUARD) / 10
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[2] == pytest.approx(interval + 0.02)
    assert min(gaps) >= interval - 1e-9
    assert most_in_one_second(times) <= 10


def _late_once(lim: RateLimiter, clock: FakeClock, seconds: float) -> None:
    """The limiter's third pause lasts `seconds` longer than asked (a sender thread that got the CPU late)."""
    naps = 0

    def late_sleep(asked: float) -> None:
        nonlocal naps
        naps += 1
        clock.sleep(asked + (seconds if naps == 3 else 0.0))

    lim._sleep = late_sleep


def test_at_a_fast_pace_a_late_waiter_is_made_up_within_the_window() -> None:
    """At 200/s (5 ms slots) a sender 10 ms late is made up by the next ones, a little each (senders here
    come one after another, so the next booking starts from the late one: half of it is made up), and still
    no second holds more than 200."""
    lim, clock = limiter(200)
    _late_once(lim, clock, 0.01)
    times = starts(lim, clock, 401)
    interval = (1 + JITTER_GUARD) / 200
    assert interval < CATCH_UP_BELOW
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[2] == pytest.approx(interval + 0.01)
    assert min(gaps) >= max(CATCH_UP_GAP * interval, interval - CATCH_UP_SECONDS) - 1e-9
    assert gaps[3] < interval, "made up at once"
    assert times[-1] - times[0] < 400 * interval + 0.006, "less than the 10 ms lost"
    assert most_in_one_second(times) <= 200


def test_a_long_delay_is_not_made_up_by_a_burst() -> None:
    """A sender a whole second late does not let a second's worth of requests out at once: they leave at
    most twice as fast as the pace, and no second holds more than the ceiling."""
    lim, clock = limiter(100)
    _late_once(lim, clock, 1.0)
    times = starts(lim, clock, 400)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= CATCH_UP_GAP * (1 + JITTER_GUARD) / 100 - 1e-9
    assert most_in_one_second(times) <= 100


def test_an_idle_limiter_does_not_save_up_a_burst() -> None:
    lim, clock = limiter(5)
    starts(lim, clock, 3)
    clock.now += 60  # a minute without requests
    assert most_in_one_second(starts(lim, clock, 20)) == 5


def test_a_throttled_answer_halves_the_pace_and_accepted_ones_bring_it_back() -> None:
    lim, clock = limiter(20)
    generation = lim.acquire()
    lim.throttled(generation)
    assert lim.rate == 10 and lim.throttled_count == 1
    before = clock.now
    lim.acquire()
    assert clock.now - before == pytest.approx((1 + JITTER_GUARD) / 10), "the next request waits a full new slot"
    seconds = 0.0
    while lim.rate < lim.ceiling:
        before = clock.now
        lim.acquire()
        seconds += clock.now - before
        lim.accepted()
    # Fast from half to 90 % (0.4 × FAST_SECONDS), then slowly the last 10 % (0.1 × RECOVERY_SECONDS).
    expected = (FAST_UP_TO - DECREASE) * FAST_SECONDS + (1 - FAST_UP_TO) * RECOVERY_SECONDS
    assert expected * 0.9 < seconds < expected * 1.2
    assert lim.rate == 20


def test_the_climb_slows_down_near_the_pace_that_was_throttled() -> None:
    """TikTok allows less than configured: after a cut the pace comes back fast to 90 % of where it was
    throttled, and then probes beyond it slowly."""
    lim, clock = limiter(100)
    lim.rate = 12.0
    lim.throttled()  # at 12: TikTok allows about 10
    assert lim.rate == 6
    started = clock.now
    while lim.rate < 0.9 * 12:
        lim.acquire()
        lim.accepted()
    fast = clock.now - started
    started = clock.now
    while lim.rate < 12:
        lim.acquire()
        lim.accepted()
    slow = clock.now - started
    fast_climb, slow_climb = (0.9 * 12 - 6) / fast, (12 - 0.9 * 12) / slow  # requests/s gained per second
    assert fast_climb > 2.5 * slow_climb, (fast_climb, slow_climb)


def test_answers_to_requests_sent_before_a_cut_cut_nothing_more() -> None:
    lim, _ = limiter(64)
    in_flight = [lim.acquire() for _ in range(16)]  # sent at one pace, all answered 'throttled'
    for generation in in_flight:
        lim.throttled(generation)
    assert lim.rate == 32 and lim.throttled_count == 16
    lim.throttled(lim.acquire())  # a request sent at the new pace is throttled too: cut again
    assert lim.rate == 16


def test_the_rate_never_falls_below_the_floor() -> None:
    lim, _ = limiter(4)
    for _ in range(20):
        lim.throttled()
    assert lim.rate == MIN_RATE
    tiny, _ = limiter(0.2)
    tiny.throttled()
    assert tiny.rate == 0.2, "a ceiling under the floor is the floor"


def test_a_slot_after_the_deadline_is_not_taken() -> None:
    lim, clock = limiter(1)
    assert lim.acquire() is not None
    assert lim.acquire(deadline=clock.now + 0.5) is None, "the next slot is a second away"
    assert clock.now == 1000.0, "no wait for a slot not taken"
    assert lim.acquire(deadline=clock.now + 2) is not None
    assert clock.now == pytest.approx(1000 + 1 + JITTER_GUARD), "the refused slot was not given away"


def test_a_rate_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0)


def test_threads_share_the_pace() -> None:
    """Real threads, real clock: 4 senders through one limiter at 50/s take the time 50/s allows."""
    lim = RateLimiter(50)
    times: list[float] = []
    lock = threading.Lock()

    def sender() -> None:
        import time
        for _ in range(10):
            lim.acquire()
            with lock:
                times.append(time.monotonic())

    threads = [threading.Thread(target=sender) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(times) == 40
    assert max(times) - min(times) >= 39 * (1 + JITTER_GUARD) / 50 * 0.95
    assert most_in_one_second(times) <= 50


def test_one_limiter_per_token_and_api_the_lowest_ceiling_holds() -> None:
    a = shared_limiter("http://127.0.0.1:1/open_api", "token-one", 100)
    b = shared_limiter("http://127.0.0.1:1/open_api/", "token-one", 40)
    other_token = shared_limiter("http://127.0.0.1:1/open_api", "token-two", 100)
    other_api = shared_limiter("http://127.0.0.1:2/open_api", "token-one", 100)
    assert a is b and a.ceiling == 40
    assert other_token is not a and other_api is not a
    assert "token-one" not in repr(vars(a))


def test_a_limiter_no_one_holds_is_forgotten() -> None:
    """A long-lived process starts afresh with the rate configured now, not a slowed-down pace from before."""
    first = shared_limiter("http://127.0.0.1:3/open_api", "token-three", 10)
    first.throttled()
    del first
    gc.collect()
    again = shared_limiter("http://127.0.0.1:3/open_api", "token-three", 30)
    assert (again.ceiling, again.rate) == (30, 30)


_steps = st.lists(st.one_of(
    # idle this long (mostly not at all: senders queue), then take a slot
    st.tuples(st.just("acquire"), st.one_of(st.just(0.0), st.just(0.0), st.floats(0, 3))),
    st.tuples(st.just("throttled"), st.integers(0, 3)),  # the answer to the slot this many back was 'throttled'
    st.tuples(st.just("accepted"), st.just(0)),
), max_size=300)


@settings(max_examples=300, deadline=None)
@given(ceiling=st.one_of(st.integers(1, 500).map(float), st.floats(0.1, 500)), steps=_steps)
def test_any_sequence_keeps_the_rate_in_bounds_and_every_second_under_the_ceiling(
        ceiling: float, steps: list[tuple[str, float]]) -> None:
    lim, clock = limiter(ceiling)
    times: list[float] = []
    generations: list[int] = []
    for op, arg in steps:
        if op == "acquire":
            clock.now += arg
            generation = lim.acquire()
            assert generation is not None
            generations.append(generation)
            times.append(clock.now)
        elif op == "throttled":
            lim.throttled(generations[-1 - int(arg)] if len(generations) > arg else None)
        else:
            lim.accepted()
        assert min(MIN_RATE, ceiling) <= lim.rate <= ceiling
    assert times == sorted(times)
    # Starts are at least (1 + guard) / ceiling apart, so no closed second holds more than the ceiling
    # (rounded up: one request a second goes out even at a ceiling of 0.5/s).
    assert most_in_one_second(times) <= math.ceil(ceiling)
