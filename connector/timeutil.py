"""Event times as Unix seconds, and TikTok's attribution window as a pure function of `now`."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from decimal import Decimal

UTC = dt.timezone.utc
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = dt.datetime(1970, 1, 1)
# Numbers this large are milliseconds: 1e11 seconds is the year 5138.
_MILLISECONDS_THRESHOLD = 100_000_000_000


def to_unix_seconds(value: object) -> int | None:
    """Integer Unix seconds from a datetime, date, number or ISO string; None when it cannot be one.

    Naive datetimes are taken as UTC (warehouse convention); aware ones are converted.
    """
    if type(value) is int:  # the common case: seconds computed in SQL
        return value // 1000 if abs(value) >= _MILLISECONDS_THRESHOLD else value
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return int((value - _EPOCH_NAIVE).total_seconds() // 1)
        return int((value - _EPOCH).total_seconds() // 1)
    if isinstance(value, dt.date):
        return int((dt.datetime(value.year, value.month, value.day) - _EPOCH_NAIVE).total_seconds())
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float, Decimal)):
        if isinstance(value, (float, Decimal)) and not math.isfinite(value):
            return None
        seconds = int(value)
        return seconds // 1000 if abs(seconds) >= _MILLISECONDS_THRESHOLD else seconds
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return to_unix_seconds(int(text))
        try:
            return to_unix_seconds(dt.datetime.fromisoformat(text.replace("Z", "+00:00")))
        except ValueError:
            return None
    return None


@dataclass(frozen=True, slots=True)
class AttributionWindow:
    """Event times TikTok can still attribute: `[oldest, newest)` in Unix seconds."""

    oldest: int
    newest: int

    def explain(self, event_time: int) -> str:
        when = _iso(event_time)
        if event_time < self.oldest:
            return f"event_time {when} is before the attribution window, which starts {_iso(self.oldest)}"
        return f"event_time {when} is in the future (later than {_iso(self.newest - 1)})"

    def reason(self, event_time: int) -> str | None:
        if event_time < self.oldest:
            return "event_too_old"
        if event_time >= self.newest:
            return "event_in_future"
        return None


def attribution_window(now: dt.datetime, days: int, future_tolerance_seconds: int) -> AttributionWindow:
    now_seconds = int(now.timestamp())
    return AttributionWindow(oldest=now_seconds - days * 86_400, newest=now_seconds + future_tolerance_seconds + 1)


def _iso(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utcnow() -> dt.datetime:
    return dt.datetime.now(UTC)
