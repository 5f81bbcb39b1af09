"""Requests per second for one access token, shared by every sync and audience of the process that uses it.

TikTok counts requests per token and does not publish the limit reliably (1,000/s and 1,000/minute are both
quoted), so the connector paces its requests at a configured rate and adapts to what TikTok answers: a
throttled answer halves the pace, accepted requests bring it back up, never above the rate configured."""

from __future__ import annotations

import hashlib
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable

# 1,000 requests a minute (one of the limits quoted for TikTok) is 16.7 a second: stay under it.
DEFAULT_REQUESTS_PER_SECOND = 16.0
MIN_RATE = 0.5  # requests per second a throttled limiter slows down to at most
DECREASE = 0.5  # the pace after a throttled answer, as a share of the pace before
# After a cut the pace climbs back fast to this share of where it was cut (a throttle at the configured
# rate is most likely a request that reached TikTok late: little is lost), then slowly, by the pace it was
# cut at every RECOVERY_SECONDS, to probe whether TikTok allows more (few throttles when it does not).
FAST_UP_TO = 0.9
FAST_SECONDS = 2.0  # seconds from 0 to the cut pace at the fast climb: from half to FAST_UP_TO in 0.8 s
RECOVERY_SECONDS = 10.0
# Requests are spaced as if a second lasted this much longer: a request that reaches the server a few
# milliseconds late must not let the one `ceiling` slots later fall into the same one-second window.
JITTER_GUARD = 0.05
# Where slots are shorter than CATCH_UP_BELOW seconds (above ~50 requests/s), a request that left late is
# made up by the next ones, each at most CATCH_UP_SECONDS before its full slot and never closer than
# CATCH_UP_GAP of a slot to the one before; any `rate` consecutive requests still span (1 + JITTER_GUARD)
# seconds. A late wake-up of a millisecond is a fifth of a slot at 200/s, and lost for good without it (87 %
# of 200/s in bench/ratelimit.py); at 17/s it is little, and requests brought closer leave less room for
# one that reaches the server late (throttled more often in that bench).
CATCH_UP_BELOW = 0.02
CATCH_UP_GAP = 0.5
CATCH_UP_SECONDS = 0.005


class RateLimiter:
    """Even pacing (no bursts: a server that counts per second sees at most `ceiling` in any second) with
    multiplicative decrease on throttling and additive increase on success.

    `acquire` hands out slots in order and returns the pace's generation; a throttled answer to a request
    sent at an older generation (its slot was given before the last cut) is counted but cuts nothing more:
    the requests in flight when the server first throttles are answered alike, and one cut is enough."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not rate > 0:
            raise ValueError("rate must be positive")
        self.ceiling = float(rate)
        self.rate = self.ceiling
        self.throttled_count = 0
        self.accepted_count = 0
        self.waited = 0.0  # seconds senders spent waiting for a slot
        self._generation = 0  # bumped by every cut of the pace
        self._cut_at = self.ceiling  # the pace when it was last cut
        self._next = float("-inf")  # the next slot to book
        self._left: deque[float] = deque(maxlen=int(rate) + 1)  # when the last requests left, oldest first
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep

    @property
    def floor(self) -> float:
        return min(MIN_RATE, self.ceiling)

    def _interval(self) -> float:
        return (1.0 + JITTER_GUARD) / self.rate

    def _earliest(self) -> float:
        """When the next request may leave: a slot after the last one less what may be made up, and n slots
        after the n-th last one, n being the requests of one second at the current pace (what a server counts)."""
        left, interval = self._left, self._interval()
        if not left:
            return float("-inf")
        if interval >= CATCH_UP_BELOW:
            return left[-1] + interval
        n = min(len(left), max(1, int(self.rate)))
        gap = max(CATCH_UP_GAP * interval, interval - CATCH_UP_SECONDS)
        return max(left[-1] + gap, left[-n] + n * interval)

    def acquire(self, deadline: float | None = None) -> int | None:
        """Wait for this request's slot and return the generation to give `throttled`; None, without
        waiting or taking a slot, when the slot would start after `deadline` (on this limiter's clock).

        Slots are booked ahead, evenly spaced, so waiters wake one at a time, in order. A request leaves a
        full slot after the one before really left: a waiter that wakes late (a busy process) pushes the next
        ones back rather than letting them bunch up behind it, except where slots are short (_earliest:
        there the next ones make the time up, a little each). When the pace was cut meanwhile, the slots
        booked at the old pace are void and the waiter books again."""
        while True:
            with self._lock:
                now = self._clock()
                start = max(now, self._next)
                if deadline is not None and start > deadline:
                    return None
                self._next = start + self._interval()
                generation = self._generation
            self._pause(start - now)
            while True:
                with self._lock:
                    if generation != self._generation:
                        break  # book again at the new pace
                    now = self._clock()
                    gap = self._earliest() - now
                    if gap <= 0:
                        self._left.append(now)
                        return generation
                self._pause(gap)

    def _pause(self, seconds: float) -> None:
        if seconds > 0:
            with self._lock:
                self.waited += seconds
            self._sleep(seconds)

    def throttled(self, generation: int | None = None) -> None:
        """TikTok answered 'too many requests' to a request sent at `generation` (None: the current one):
        halve the pace, and let the next request wait a full slot of the new pace (from now)."""
        with self._lock:
            self.throttled_count += 1
            if generation is not None and generation != self._generation:
                return
            self._generation += 1
            self._cut_at = self.rate
            self.rate = max(self.floor, self.rate * DECREASE)
            self._next = self._clock() + self._interval()  # slots booked at the old pace are void

    def accepted(self) -> None:
        """TikTok accepted a request: climb back towards the ceiling (per second of requests at the current
        pace: fast up to FAST_UP_TO of the pace last cut, then by that pace every RECOVERY_SECONDS)."""
        with self._lock:
            self.accepted_count += 1
            fast = self.rate < FAST_UP_TO * self._cut_at
            per_second = self._cut_at / (FAST_SECONDS if fast else RECOVERY_SECONDS)
            self.rate = min(self.ceiling, self.rate + per_second / self.rate)

    def lower_ceiling(self, rate: float) -> None:
        """Another user of the same token configured a lower rate: the lower one holds for both."""
        with self._lock:
            self.ceiling = min(self.ceiling, float(rate))
            self._left = deque(self._left, maxlen=int(self.ceiling) + 1)
            self.rate = min(self.rate, self.ceiling)
            self._cut_at = min(self._cut_at, self.ceiling)


# Weak: a limiter lives while a client uses it, so the syncs running together share one, and a long-lived
# process (a scheduler's worker) starts afresh once they are done, with the rate configured then.
_shared: weakref.WeakValueDictionary[tuple[str, str], RateLimiter] = weakref.WeakValueDictionary()
_shared_lock = threading.Lock()


def shared_limiter(base_url: str, access_token: str, rate: float) -> RateLimiter:
    """The limiter of this token at this API in the process, made at `rate` when no client holds one (keyed by
    a digest: the token is not kept here). Hold the returned object for as long as it is used."""
    key = (base_url.rstrip("/"), hashlib.sha256(access_token.encode()).hexdigest())
    with _shared_lock:
        limiter = _shared.get(key)
        if limiter is None:
            limiter = RateLimiter(rate)
            _shared[key] = limiter
        else:
            limiter.lower_ceiling(rate)
        return limiter
