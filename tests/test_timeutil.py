"""Unix seconds from warehouse values, and the attribution window as a table of literal datetimes."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from connector.timeutil import AttributionWindow, attribution_window, to_unix_seconds

UTC = dt.timezone.utc
# 2024-06-01T12:00:00Z
T = 1_717_243_200


@pytest.mark.parametrize(("value", "expected"), [
    (dt.datetime(2024, 6, 1, 12, 0, tzinfo=UTC), T),
    (dt.datetime(2024, 6, 1, 14, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))), T),  # aware: converted
    (dt.datetime(2024, 6, 1, 7, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5))), T),
    (dt.datetime(2024, 6, 1, 12, 0), T),  # naive: UTC
    (dt.datetime(2024, 6, 1, 12, 0, 0, 999_999, tzinfo=UTC), T),  # fractions are cut, not rounded up
    (dt.datetime(2024, 6, 1, 12, 0, 0, 999_999), T),
    (dt.date(2024, 6, 1), T - 12 * 3600),  # a date is its UTC midnight
    (T, T),
    (T * 1000, T),  # milliseconds
    (T * 1000 + 999, T),
    (float(T), T),
    (Decimal(T), T),
    (str(T), T),
    (str(T * 1000), T),
    ("2024-06-01T12:00:00Z", T),
    ("2024-06-01T12:00:00.250Z", T),
    ("2024-06-01T14:00:00+02:00", T),
    ("2024-06-01T12:00:00", T),  # naive ISO: UTC
    ("2024-06-01 12:00:00", T),
    (" 2024-06-01T12:00:00Z ", T),
])
def test_to_unix_seconds(value: object, expected: int) -> None:
    assert to_unix_seconds(value) == expected


@pytest.mark.parametrize("value", [None, "", "yesterday", "2024-13-45", True, False, [T], object()])
def test_to_unix_seconds_rejects_what_is_not_a_time(value: object) -> None:
    assert to_unix_seconds(value) is None


def test_naive_datetime_is_utc_whatever_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    import time
    monkeypatch.setenv("TZ", "America/Los_Angeles")
    time.tzset()
    try:
        assert to_unix_seconds(dt.datetime(2024, 6, 1, 12, 0)) == T
        assert to_unix_seconds("2024-06-01T12:00:00") == T
    finally:
        monkeypatch.undo()
        time.tzset()


NOW = dt.datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
WINDOW = attribution_window(NOW, days=28, future_tolerance_seconds=300)


@pytest.mark.parametrize(("event_time", "reason"), [
    (dt.datetime(2024, 5, 4, 12, 0, 0, tzinfo=UTC), None),  # exactly 28 days old: sent
    (dt.datetime(2024, 5, 4, 11, 59, 59, tzinfo=UTC), "event_too_old"),  # one second older
    (dt.datetime(2024, 5, 4, 12, 0, 1, tzinfo=UTC), None),
    (dt.datetime(2024, 1, 1, tzinfo=UTC), "event_too_old"),
    (dt.datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC), None),  # now
    (dt.datetime(2024, 6, 1, 12, 5, 0, tzinfo=UTC), None),  # now + 300 s: within the tolerance
    (dt.datetime(2024, 6, 1, 12, 5, 1, tzinfo=UTC), "event_in_future"),  # now + 301 s
    (dt.datetime(2024, 6, 2, tzinfo=UTC), "event_in_future"),
])
def test_attribution_window_edges(event_time: dt.datetime, reason: str | None) -> None:
    assert WINDOW.reason(to_unix_seconds(event_time)) == reason


def test_attribution_window_bounds_are_half_open_seconds() -> None:
    assert WINDOW == AttributionWindow(oldest=T - 28 * 86_400, newest=T + 301)


@pytest.mark.parametrize(("days", "tolerance", "old_ok", "old_bad", "future_ok", "future_bad"), [
    (7, 0, dt.datetime(2024, 5, 25, 12, tzinfo=UTC), dt.datetime(2024, 5, 25, 11, 59, 59, tzinfo=UTC),
     dt.datetime(2024, 6, 1, 12, tzinfo=UTC), dt.datetime(2024, 6, 1, 12, 0, 1, tzinfo=UTC)),
    (1, 60, dt.datetime(2024, 5, 31, 12, tzinfo=UTC), dt.datetime(2024, 5, 31, 11, 59, 59, tzinfo=UTC),
     dt.datetime(2024, 6, 1, 12, 1, tzinfo=UTC), dt.datetime(2024, 6, 1, 12, 1, 1, tzinfo=UTC)),
])
def test_configured_window(days, tolerance, old_ok, old_bad, future_ok, future_bad) -> None:
    window = attribution_window(NOW, days, tolerance)
    assert window.reason(to_unix_seconds(old_ok)) is None
    assert window.reason(to_unix_seconds(old_bad)) == "event_too_old"
    assert window.reason(to_unix_seconds(future_ok)) is None
    assert window.reason(to_unix_seconds(future_bad)) == "event_in_future"


def test_window_from_a_non_utc_now_is_the_same_instant() -> None:
    tokyo_now = NOW.astimezone(dt.timezone(dt.timedelta(hours=9)))
    assert attribution_window(tokyo_now, 28, 300) == WINDOW
