"""Event times as Unix seconds, and TikTok's attribution window as a pure function of `now`."""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from decimal import Decimal

UTC = dt.timezone.utc
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = dt.datetime(1970, 1, 1)
_EPOCH_DATE = dt.date(1970, 1, 1)
# The Unix seconds a datetime can hold: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
MIN_SECONDS = -62_135_596_800
MAX_SECONDS = 253_402_300_799
# A number is read in the first of these units that makes it a time in the years 1 to 9999.
UNITS = ((1, "seconds"), (1_000, "milliseconds"), (1_000_000, "microseconds"), (1_000_000_000, "nanoseconds"))
_DIGITS = re.compile(r"[+-]?[0-9]{1,40}")  # longer numbers are no time in any unit
_LARGEST = (MAX_SECONDS + 1) * UNITS[-1][0]


def seconds_from_number(value: int) -> int | None:
    """Unix seconds from a number of seconds, milliseconds, microseconds or nanoseconds, told apart by
    magnitude: the first unit in which the number is a time in the years 1 to 9999 (a time of the years 1 to
    9999 in seconds is always read as seconds). None when no unit gives one."""
    for factor, _ in UNITS:
        if MIN_SECONDS * factor <= value < (MAX_SECONDS + 1) * factor:
            return value // factor
    return None


def unix_seconds_in_range(value: int) -> int | None:
    """Unix seconds the warehouse computed from a timestamp: themselves when a datetime can hold them."""
    return value if MIN_SECONDS <= value <= MAX_SECONDS else None


def to_unix_seconds(value: object) -> int | None:
    """Integer Unix seconds from a datetime, date, number or ISO string; None when it cannot be one.

    Naive datetimes are taken as UTC (warehouse convention); aware ones are converted. Numbers and strings of
    digits are read by `seconds_from_number`; fractions of a second are cut towards the past, as for datetimes.
    """
    if type(value) is int:  # the common case: seconds computed in SQL
        return value if MIN_SECONDS <= value <= MAX_SECONDS else seconds_from_number(value)
    if isinstance(value, dt.datetime):
        # Whole days and seconds of the timedelta: exact (total_seconds() is a float, which rounds the last
        # microsecond of 9999 up into the year 10000), and fractions of a second cut towards the past.
        since = value - (_EPOCH_NAIVE if value.tzinfo is None else _EPOCH)
        return since.days * 86_400 + since.seconds
    if isinstance(value, dt.date):
        return (value - _EPOCH_DATE).days * 86_400
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return seconds_from_number(int(value))
    if isinstance(value, (float, Decimal)):
        # Checked before math.floor: an infinite or enormous number would raise or take long to convert.
        if not value.is_finite() if isinstance(value, Decimal) else not math.isfinite(value):
            return None
        if abs(value) >= _LARGEST:
            return None
        return seconds_from_number(math.floor(value))
    if isinstance(value, str):
        text = value.strip()
        if _DIGITS.fullmatch(text):
            return seconds_from_number(int(text))
        try:
            return to_unix_seconds(dt.datetime.fromisoformat(text.replace("Z", "+00:00")))
        except (ValueError, OverflowError):
            return None
    return None


@dataclass(frozen=True, slots=True)
class AttributionWindow:
    """Event times TikTok can still attribute: `[oldest, newest)` in Unix seconds."""

    oldest: int
    newest: int

    def explain(self, event_time: int) -> str:
        when = iso(event_time)
        if event_time < self.oldest:
            return f"event_time {when} is before the attribution window, which starts {iso(self.oldest)}"
        return f"event_time {when} is in the future (later than {iso(self.newest - 1)})"

    def reason(self, event_time: int) -> str | None:
        if event_time < self.oldest:
            return "event_too_old"
        if event_time >= self.newest:
            return "event_in_future"
        return None


def attribution_window(now: dt.datetime, days: int, future_tolerance_seconds: int) -> AttributionWindow:
    now_seconds = int(now.timestamp())
    return AttributionWindow(oldest=now_seconds - days * 86_400, newest=now_seconds + future_tolerance_seconds + 1)


def iso(seconds: int) -> str:
    """`2024-06-01T12:00:00Z`; seconds no datetime can hold are written as they are."""
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        # str() refuses ints of more than 4,300 digits
        number = str(seconds) if seconds.bit_length() < 4_000 else f"a {seconds.bit_length()}-bit number of"
        return f"({number} Unix seconds, outside the years 1 to 9999)"
    when = _EPOCH_NAIVE + dt.timedelta(seconds=seconds)
    return f"{when.year:04d}-{when:%m-%dT%H:%M:%S}Z"  # strftime writes the year 1 as "1"


def utcnow() -> dt.datetime:
    return dt.datetime.now(UTC)
