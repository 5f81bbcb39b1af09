"""Requests per second for one access token, shared by every sync and audience of the process that uses it.

TikTok counts requests per token and does not publish the limit reliably (1,000/s and 1,000/minute are both
quoted), so the connector paces its requests at a configured rate and adapts to what TikTok answers: a
throttled answer halves the pace, each accepted request brings it back up a little, never above the rate
configured."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

MIN_RATE = 0.5  # requests per second a throttled limiter slows down to at most
RECOVERY_STEPS = 50  # accepted requests that bring a halved rate back to the configured one


class RateLimiter:
    """Even pacing (no bursts: a server that counts per second sees at most `rate` in any second) with
    multiplicative decrease on throttling and additive increase on success."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.ceiling = float(rate)
        self.rate = float(rate)
        self.throttled_count = 0
        self.waited = 0.0  # seconds senders spent waiting for a slot
        self._next = 0.0  # when the next request may start
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep

    def acquire(self) -> None:
        """Wait for this request's slot."""
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + 1.0 / self.rate
            wait = start - now
            self.waited += wait
        if wait > 0:
            self._sleep(wait)

    def throttled(self) -> None:
        """TikTok answered 'too many requests': halve the pace, and let the next request wait a full slot."""
        with self._lock:
            self.throttled_count += 1
            self.rate = max(min(MIN_RATE, self.ceiling), self.rate / 2)
            self._next = max(self._next, self._clock() + 1.0 / self.rate)

    def accepted(self) -> None:
        with self._lock:
            self.rate = min(self.ceiling, self.rate + self.ceiling / RECOVERY_STEPS)

    def lower_ceiling(self, rate: float) -> None:
        """Another user of the same token configured a lower rate: the lower one holds for both."""
        with self._lock:
            self.ceiling = min(self.ceiling, float(rate))
            self.rate = min(self.rate, self.ceiling)


_shared: dict[tuple[str, str], RateLimiter] = {}
_shared_lock = threading.Lock()


def shared_limiter(base_url: str, access_token: str, rate: float) -> RateLimiter:
    """The process's limiter for this token at this API (keyed by a digest: the token is not kept here)."""
    key = (base_url.rstrip("/"), hashlib.sha256(access_token.encode()).hexdigest())
    with _shared_lock:
        limiter = _shared.get(key)
        if limiter is None:
            limiter = _shared[key] = RateLimiter(rate)
        else:
            limiter.lower_ceiling(rate)
        return limiter
