"""Unix seconds from warehouse values, and the attribution window as a table of literal datetimes."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given, settings, strategies as st

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


# ---------------------------------------------------------------- numbers in any unit, and values no time can be

MAX_S, MIN_S = 253_402_300_799, -62_135_596_800  # 9999-12-31T23:59:59Z and 0001-01-01T00:00:00Z, by hand


@pytest.mark.parametrize(("value", "expected"), [
    (T, T), (T * 1000 + 999, T), (T * 1_000_000 + 999_999, T), (T * 1_000_000_000 + 999_999_999, T),  # every unit
    (MAX_S, MAX_S), (MIN_S, MIN_S),  # a time of the years 1 to 9999 in seconds is always seconds
    (MAX_S + 1, (MAX_S + 1) // 1000),  # 253402300800: milliseconds (1978-01-12)
    (MIN_S - 1, (MIN_S - 1) // 1000),  # before the year 1 in seconds: milliseconds, 1968
    ((MAX_S + 1) * 1000 - 1, MAX_S), ((MAX_S + 1) * 1000, 253_402_300),  # microseconds from here on
    ((MAX_S + 1) * 10 ** 9 - 1, MAX_S),  # the last nanosecond of 9999
    ((MAX_S + 1) * 10 ** 9, None), (MIN_S * 10 ** 9 - 1, None), (10 ** 40, None), (-(10 ** 40), None),
    (2 ** 63 - 1, 9_223_372_036), (-(2 ** 63), -9_223_372_037),  # BIGINT's extremes: 2262 and 1677 in ns
    (-1, -1), (0, 0),
    (float(T) * 1000, T), (T + 0.999, T), (-0.5, -1), (float("nan"), None), (float("inf"), None),
    (float("-inf"), None), (1e300, None), (-1e300, None),
    (Decimal(f"{T}.999999"), T), (Decimal("NaN"), None), (Decimal("sNaN"), None), (Decimal("-Infinity"), None),
    (Decimal("1E+999999"), None), (Decimal("-1E+999999"), None), (Decimal("1E-999999"), 0),
    ("-1", -1), ("+5", 5), (f" {T * 1000} ", T), (str(MAX_S + 1), (MAX_S + 1) // 1000), ("9" * 41, None),
    ("9" * 5000, None), ("²", None), ("١٢٣", None), ("1_000", None), ("1e9", None), ("12.5", None),
    ("0001-01-01T00:00:00Z", MIN_S), ("9999-12-31T23:59:59.999999Z", MAX_S), ("10000-01-01", None),
    (dt.datetime.min, MIN_S), (dt.datetime.max, MAX_S), (dt.date.min, MIN_S), (dt.date.max, MAX_S - 86_399),
    (dt.datetime.max.replace(tzinfo=dt.timezone(dt.timedelta(hours=-14))), MAX_S + 14 * 3600),  # year 10000 UTC
    (dt.datetime(1969, 12, 31, 23, 59, 59, 1), -1),
    (b"1717243200", None), (dt.time(12), None), (dt.timedelta(1), None), ({"a": 1}, None),
])
def test_numbers_in_every_unit_and_values_no_time_can_be(value: object, expected: int | None) -> None:
    assert to_unix_seconds(value) == expected


@given(st.one_of(st.integers(), st.integers(-10 ** 30, 10 ** 30), st.floats(), st.decimals(),
                 st.from_regex(r"[+-]?[0-9]{1,60}", fullmatch=True)))
@settings(max_examples=300, deadline=None)
def test_a_number_is_no_time_or_a_time_of_the_years_1_to_9999(value: object) -> None:
    seconds = to_unix_seconds(value)
    assert seconds is None or MIN_S <= seconds <= MAX_S
    if seconds is not None:
        assert dt.datetime(1970, 1, 1) + dt.timedelta(seconds=seconds)  # a datetime can hold it


@given(st.one_of(st.integers(), st.integers(-2 ** 20_000, 2 ** 20_000)), st.integers(MIN_S, MAX_S))
@settings(max_examples=300, deadline=None)
def test_explain_never_raises(event_time: int, now: int) -> None:
    window = AttributionWindow(now - 28 * 86_400, now + 301)
    text = window.explain(event_time)
    assert text.startswith("event_time ") and len(text) < 300


def test_explain_writes_the_years_1_and_9999_with_four_digits() -> None:
    window = AttributionWindow(MIN_S + 1, MAX_S)
    assert window.explain(MIN_S) == ("event_time 0001-01-01T00:00:00Z is before the attribution window, which "
                                      "starts 0001-01-01T00:00:01Z")
    assert window.explain(MAX_S + 1).startswith("event_time (253402300800 Unix seconds, outside the years 1 to 9999)")
