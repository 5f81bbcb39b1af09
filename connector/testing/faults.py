"""Faults on demand for the fake TikTok's endpoints (track and audiences): queued faults for the next
requests, random chaos, and an auth error for every request."""

from __future__ import annotations

import random
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from connector.tiktok_spec import CODE_SERVER_ERROR, CODE_THROTTLED

CHAOS_KINDS = ("5xx", "throttle", "drop", "stall")
THROTTLE_MESSAGE = "Too many requests. Please retry in some time."


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str  # one of CHAOS_KINDS, or redirect, drip, quote_token
    code: int = CODE_SERVER_ERROR
    http_status: int = 503
    message: str = "Internal error"
    seconds: float = 0.0  # stall: before the answer; drip: between two bytes of it
    location: str = ""  # redirect: the Location header


@dataclass(slots=True)
class _Chaos:
    rate: float
    rng: random.Random
    kinds: tuple[str, ...]
    stall_seconds: float


class Faults:
    """Mixed into a fake endpoint: it calls `_clear_faults()` when it resets and `_take_fault()` (under its
    `_lock`) once per request."""

    _lock: threading.Lock
    _faults: deque[Fault]
    _chaos: _Chaos | None
    _auth_error: int | None
    latency: float

    def _clear_faults(self) -> None:
        self._faults = deque()
        self._chaos = None
        self._auth_error = None

    def fail_next(self, n: int = 1, code: int = CODE_SERVER_ERROR, http_status: int = 503,
                  message: str = "Internal error") -> None:
        self._queue(n, Fault("5xx", code, http_status, message))

    def throttle_next(self, n: int = 1, code: int = CODE_THROTTLED) -> None:
        self._queue(n, Fault("throttle", code, 200, THROTTLE_MESSAGE))

    def drop_next(self, n: int = 1) -> None:
        self._queue(n, Fault("drop"))

    def stall_next(self, n: int = 1, seconds: float = 5.0) -> None:
        self._queue(n, Fault("stall", message="Request timed out", seconds=seconds))

    def set_chaos(self, rate: float, seed: int = 0, kinds: Iterable[str] = CHAOS_KINDS,
                  stall_seconds: float = 2.0) -> None:
        """Random faults on `rate` of the requests (not already hit by a queued fault); 0 disables."""
        kinds = tuple(kinds)
        if unknown := set(kinds) - set(CHAOS_KINDS):
            raise ValueError(f"unknown chaos kinds {sorted(unknown)}; use {CHAOS_KINDS}")
        with self._lock:
            self._chaos = _Chaos(rate, random.Random(seed), kinds, stall_seconds) if rate > 0 else None

    def set_auth_error(self, code: int | None) -> None:
        with self._lock:
            self._auth_error = code

    def fault_actions(self) -> dict[str, Callable[[Any], None]]:
        """The keys of a faults document (POST /_fake/faults) these faults answer."""
        return {
            "fail_next": lambda a: self.fail_next(**a), "throttle_next": lambda a: self.throttle_next(**a),
            "drop_next": lambda a: self.drop_next(**a), "stall_next": lambda a: self.stall_next(**a),
            "chaos": lambda a: self.set_chaos(**a), "latency": lambda a: setattr(self, "latency", float(a)),
            "auth_error": self.set_auth_error,
        }

    def apply_faults(self, spec: Mapping[str, Any]) -> None:
        """Apply a faults document (the JSON of POST /_fake/faults), keys in their given order."""
        actions = self.fault_actions()
        if unknown := set(spec) - set(actions):
            raise ValueError(f"unknown keys {sorted(unknown)}; use {sorted(actions)}")
        for key, arg in spec.items():
            actions[key](arg)

    def _queue(self, n: int, fault: Fault) -> None:
        with self._lock:
            self._faults.extend([fault] * n)

    def _take_fault(self) -> Fault | None:
        if self._faults:
            return self._faults.popleft()
        chaos = self._chaos
        if chaos is None or chaos.rng.random() >= chaos.rate:
            return None
        kind = chaos.kinds[chaos.rng.randrange(len(chaos.kinds))]
        if kind == "throttle":
            return Fault(kind, CODE_THROTTLED, 200, THROTTLE_MESSAGE)
        if kind == "stall":
            return Fault(kind, message="Request timed out", seconds=chaos.stall_seconds)
        return Fault(kind)
