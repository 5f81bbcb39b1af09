"""Poison rows: whatever a warehouse hands over, every row ends as a correct event or a stored reject with a
reason code, never a crash, and a rerun sends nothing twice and records nothing twice.

Values come from Hypothesis: integers, floats and decimals of every size (NaN and infinities too), times in
seconds, milliseconds, microseconds and nanoseconds, dates and timestamps from the year 1 to 9999, BLOBs,
text of every kind and length, lists, structs, maps and JSON, in every mapped column, through the Python
builder; the issue's own rows through real syncs (tests/test_poison_sync.py drives the CLI with generated
values, DuckDB and PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from connector.events import Event, EventBuilder, Rejection
from connector.mapping import FieldSpec, Mapping, compile_mapping
from connector.reasons import REASONS
from connector.timeutil import MAX_SECONDS, MIN_SECONDS, attribution_window
from connector.values import MAX_ID_LENGTH, fingerprint

UTC = dt.timezone.utc
NOW = dt.datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
T = int(NOW.timestamp())
SOURCE_ID = "7654321098765432109"
MARK = "Zq9"  # in every generated email/phone: it must never appear in a reject's detail


# ---------------------------------------------------------------- what drivers hand over

def _lone_surrogate(text: str, code: int) -> str:
    return text + chr(0xD800 + code)


HUGE_TEXT = st.builds(lambda c, n: c * n, st.sampled_from(["x", "é", "7", " ", "🙂"]),
                      st.integers(MAX_ID_LENGTH - 2, 300_000))
TEXTS = st.one_of(st.text(max_size=30), HUGE_TEXT, st.from_regex(r"-?[0-9]{1,45}", fullmatch=True),
                  st.builds(_lone_surrogate, st.text(max_size=5), st.integers(0, 0x7FF)),
                  st.sampled_from(["nan", "inf", "-inf", "NaN", "1e400", "²", "١٢٣", "", "  ", "USD", "Purchase",
                                   "true", "2024-05-31T12:00:00Z", "0001-01-01", "9999-12-31T23:59:59"]))
NUMBERS = st.one_of(st.integers(), st.integers(-2 ** 130, 2 ** 130), st.floats(), st.decimals(),
                    st.sampled_from([Decimal("NaN"), Decimal("sNaN"), Decimal("-Infinity"), Decimal("1E+999999"),
                                     Decimal("1E-999999"), 2 ** 63, 2 ** 64, -2 ** 63, float("nan"), 1e300]))
TIMES = st.one_of(st.dates(), st.datetimes(), st.datetimes(timezones=st.sampled_from(
    [UTC, dt.timezone(dt.timedelta(hours=14)), dt.timezone(dt.timedelta(hours=-12))])),
    st.times(), st.timedeltas(), st.uuids())
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXTS, TIMES, st.binary(max_size=20),
                    st.binary(max_size=20).map(bytearray), st.binary(max_size=20).map(memoryview),
                    TEXTS.filter(lambda t: t.encode("utf-8", "surrogatepass") == t.encode("utf-8", "ignore"))
                    .map(lambda t: t.encode("utf-8")))
ANYTHING = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.tuples(inner, inner), st.dictionaries(st.text(max_size=8), inner, max_size=3),
    st.lists(st.dictionaries(st.sampled_from(["content_id", "price", "quantity", "brand"]), inner), max_size=3)),
    max_leaves=6)


# ---------------------------------------------------------------- the Python builder, value by value

OFFLINE_FIELDS = {
    "event": "event", "event_id": "event_id", "event_time": "event_time", "event_source_id": "source",
    "user.email": "email", "user.phone": "phone", "properties.value": "value", "properties.currency": "currency",
    "properties.order_id": "order_id", "properties.shop_id": "shop_id", "properties.content_type": "content_type",
    "properties.content_ids": "content_ids", "properties.num_items": "num_items",
    "properties.search_string": "search", "properties.description": "description",
    "properties.event_channel": "channel", "properties.contents": "contents",
}
WEB_FIELDS = {
    "event": "event", "event_id": "event_id", "event_time": "event_time", "user.email": "email",
    "user.external_id": "external_id", "user.ttclid": "ttclid", "user.ip": "ip", "page.url": "url",
    "limited_data_use": "ldu", "properties.customer_type": "customer_type", "ad.attribution_share": "share",
    "ad.campaign_id": "campaign", "properties.value": "value", "properties.currency": "currency",
}
APP_FIELDS = {
    "event": "event", "event_id": "event_id", "event_time": "event_time", "app.app_id": "app_id",
    "user.idfa": "idfa", "user.gaid": "gaid", "user.att_status": "att", "properties.contents[].content_id": "sku",
    "properties.contents[].price": "price", "properties.contents[].quantity": "qty",
}
VALID = {
    "event": "Purchase", "event_id": "E-1", "event_time": NOW - dt.timedelta(hours=2), "source": SOURCE_ID,
    "email": "jane@example.com", "phone": "+14155550101", "value": Decimal("9.99"), "currency": "USD",
    "order_id": "O-1", "shop_id": 7, "content_type": "product", "content_ids": ["A", "B"], "num_items": 2,
    "search": "shoes", "description": "two shoes", "channel": "in_store",
    "contents": '[{"content_id": "A", "price": 1.5, "quantity": 2}]', "external_id": "u-1", "ttclid": "tt",
    "ip": "10.0.0.1", "url": "https://shop.example.com/?ttclid=abc", "ldu": False, "customer_type": "new",
    "share": 0.5, "campaign": 123, "app_id": "7312345678901234567", "idfa": "6D92078A-8246-4BA4-AE5B-76104861E7DC",
    "gaid": "38400000-8cf0-11bd-b23e-10b96e40000d", "att": "authorized", "sku": "S-1", "price": 2, "qty": 1,
    "updated_at": NOW - dt.timedelta(hours=1),
}


def _builder(source: str, fields: dict[str, str]) -> tuple[EventBuilder, list[str]]:
    columns = sorted(set(fields.values())) + ["updated_at"]
    compiled = compile_mapping(Mapping("m.yml", tuple(FieldSpec(p, c) for p, c in fields.items())), columns, source)
    builder = EventBuilder(compiled, source, SOURCE_ID, attribution_window(NOW, 28, 300), len(columns) - 1)
    return builder, columns


BUILDERS = {source: _builder(source, fields) for source, fields in
            (("offline", OFFLINE_FIELDS), ("web", WEB_FIELDS), ("app", APP_FIELDS))}


def _check_outcome(result: Event | Rejection) -> None:
    """What every built row must be: a sendable event, or a reject that can be stored and shown."""
    if isinstance(result, Event):
        wire = orjson.dumps(result.body)  # the sender thread's step: must not raise
        assert type(result.event_id) is str and 0 < len(result.event_id) <= MAX_ID_LENGTH
        assert MIN_SECONDS <= result.event_time <= MAX_SECONDS
        assert orjson.loads(wire) == result.body
    else:
        assert isinstance(result, Rejection)
        assert result.reason in REASONS, result.reason
        assert isinstance(result.detail, str) and len(result.detail) <= 1000
        result.detail.encode("utf-8")  # stored in the state tables
        assert result.event_id is None or (type(result.event_id) is str and len(result.event_id) <= MAX_ID_LENGTH)


@settings(max_examples=400, deadline=None)
@given(source=st.sampled_from(sorted(BUILDERS)), data=st.data())
def test_the_builder_never_raises_whatever_the_values(source: str, data: st.DataObject) -> None:
    builder, columns = BUILDERS[source]
    poisoned = data.draw(st.dictionaries(st.sampled_from(columns[:-1]), ANYTHING, min_size=1, max_size=3))
    rows = [tuple(poisoned.get(c, VALID[c]) for c in columns)]
    if source == "app" and data.draw(st.booleans()):  # a second item row, with its own poison
        rows.append(tuple(data.draw(ANYTHING) if c in ("sku", "price", "qty") else rows[0][i]
                          for i, c in enumerate(columns)))
    _check_outcome(builder.build(rows))
    builder.event_id(rows)  # the ledger lookup reads ids ahead: it must not raise either


def test_the_valid_rows_of_the_property_are_events() -> None:
    """The property's baseline must build, or its poison would be tested against rows refused anyway."""
    for builder, columns in BUILDERS.values():
        assert isinstance(builder.build([tuple(VALID[c] for c in columns)]), Event)


@pytest.mark.parametrize(("value", "reason"), [
    (["o0", "p"], "invalid_event_id"), (("o0",), "invalid_event_id"), ({"a": 1}, "invalid_event_id"),
    (float("nan"), "invalid_event_id"), (float("inf"), "invalid_event_id"), (Decimal("NaN"), "invalid_event_id"),
    (True, "invalid_event_id"), (b"\xff\xfe", "invalid_event_id"), ("x" * (MAX_ID_LENGTH + 1), "invalid_event_id"),
    (10 ** MAX_ID_LENGTH, "invalid_event_id"), ("a\ud800", "invalid_event_id"), (1e300, "invalid_event_id"),
    (None, "missing_event_id"), ("  ", "missing_event_id"), (b"", "missing_event_id"),
])
def test_event_ids_that_are_no_ids_are_refused(value: Any, reason: str) -> None:
    builder, columns = BUILDERS["offline"]
    row = tuple(value if c == "event_id" else VALID[c] for c in columns)
    result = builder.build([row])
    assert isinstance(result, Rejection) and result.reason == reason, result
    assert result.event_id is None and builder.event_id([row]) is None
    assert f"(row {fingerprint([row])})" in result.detail


@pytest.mark.parametrize(("value", "expected"), [
    (b"O-1", "O-1"), (bytearray(b"O-1"), "O-1"), (memoryview(b" O-1 "), "O-1"), ("x" * MAX_ID_LENGTH, "x" * MAX_ID_LENGTH),
    (12.0, "12"), (Decimal("1E+3"), "1000"), (2 ** 100, str(2 ** 100)),
])
def test_event_ids_that_are_ids(value: Any, expected: str) -> None:
    builder, columns = BUILDERS["offline"]
    result = builder.build([tuple(value if c == "event_id" else VALID[c] for c in columns)])
    assert isinstance(result, Event) and result.event_id == expected == result.body["event_id"]


def _offline_event(**overrides: Any) -> Event | Rejection:
    builder, columns = BUILDERS["offline"]
    return builder.build([tuple(overrides.get(c, VALID[c]) for c in columns)])


def test_bytes_that_are_utf8_give_the_event_their_text_gives() -> None:
    text = {"email": " Jane@Example.com ", "phone": "+1 415 555 0101", "currency": "eur", "event": "purchase",
            "description": "ünï", "order_id": "Ö-1", "content_ids": "a,b", "channel": "in_store",
            "contents": '[{"content_id": "Ä", "price": 1}]', "event_time": "2024-06-01T10:00:00Z"}
    for column, value in text.items():
        for kind in (bytes, bytearray, memoryview):
            as_bytes = _offline_event(**{column: kind(value.encode("utf-8"))})
            as_text = _offline_event(**{column: value})
            assert isinstance(as_text, Event), as_text
            assert isinstance(as_bytes, Event) and as_bytes.body == as_text.body, (column, kind)


@pytest.mark.parametrize("column", ["email", "phone", "currency", "event", "description", "order_id", "content_ids",
                                    "channel", "contents", "event_time", "value", "num_items", "source"])
@pytest.mark.parametrize("value", [b"\xff\xfeo0", ["\ud800"], {"k": "v"}, [["o0"]], "a\udfff", memoryview(b"\xc3")])
def test_bytes_that_are_not_utf8_and_values_that_are_not_scalars_are_refused(column: str, value: Any) -> None:
    result = _offline_event(**{column: value})
    assert isinstance(result, Rejection), (column, value, result)
    expected = {"currency": "invalid_currency", "event_time": "invalid_event_time", "value": "invalid_value",
                "num_items": "invalid_value"}.get(column, "invalid_field")
    assert result.reason == expected, result
    assert "<memory at" not in result.detail and "b'" not in result.detail


def test_lists_stay_lists_where_the_field_takes_lists() -> None:
    event = _offline_event(email=["a@x.com", b"b@x.com", None], phone=("+14155550101",), content_ids=["A", 7, b"C"],
                           contents=[{"content_id": "A", "price": Decimal("1.5"), "quantity": 2}])
    assert isinstance(event, Event), event
    assert len(event.body["user"]["email"]) == 2
    assert event.body["properties"]["content_ids"] == ["A", "7", "C"]
    assert event.body["properties"]["contents"] == [{"content_id": "A", "price": 1.5, "quantity": 2}]


def test_numbers_too_large_for_json_are_refused_not_sent() -> None:
    for column, value in (("value", 2 ** 64), ("value", Decimal("1E+30")), ("value", "1e30"), ("num_items", 2 ** 63),
                          ("contents", '[{"quantity": 9223372036854775808}]')):
        result = _offline_event(**{column: value})
        assert isinstance(result, Rejection) and result.reason == "invalid_value", (column, value, result)
    assert _offline_event(value=2 ** 63 - 1).body["properties"]["value"] == 2 ** 63 - 1
    builder, columns = BUILDERS["app"]  # num_items derived: the sum of the items' quantities
    rows = [tuple(quantity if c == "qty" else VALID[c] for c in columns) for quantity in (2 ** 63 - 1, 1)]
    result = builder.build(rows)
    assert isinstance(result, Rejection) and result.reason == "invalid_value", result


# ---------------------------------------------------------------- no plain email or phone in a detail

SHARING = ["event", "event_time", "event_id", "event_source_id", "properties.value", "properties.currency",
           "properties.content_type", "properties.num_items", "properties.contents", "properties.event_channel",
           "properties.order_id", "properties.content_ids", "properties.description"]
PII_VALUES = st.one_of(
    st.builds(lambda a, b: f"{MARK}{a}@{b}.com", st.text(max_size=10), st.text(max_size=6)),
    st.builds(lambda a: f"+1415{MARK}{a}", st.text(max_size=12)),
    st.builds(lambda a: f"{MARK}{a}", st.text(max_size=300)),
    st.just(f"1{MARK}"), st.just(f"[{{\"quantity\": -1, \"content_id\": \"{MARK}\"}}]"),
    st.builds(lambda a: f"{MARK}{a}", st.text(max_size=300)).map(lambda t: t.encode("utf-8")),
    st.lists(st.builds(lambda a: f"{MARK}{a}@x.com", st.text(max_size=5)), max_size=3))


@settings(max_examples=200, deadline=None)
@given(pii=st.sampled_from(["user.email", "user.phone"]), field=st.sampled_from(SHARING), value=PII_VALUES)
def test_no_detail_shows_a_value_of_a_column_mapped_to_an_email_or_phone(pii: str, field: str, value: Any) -> None:
    """The PII column is also mapped to another field (and to everything else the mapping leaves): whatever
    that field says about the value, the detail must not carry it."""
    fields = dict(OFFLINE_FIELDS)
    fields[field] = fields[pii]
    builder, columns = _builder("offline", fields)
    pii_column = fields[pii]
    result = builder.build([tuple(value if c == pii_column else VALID[c] for c in columns)])
    _check_outcome(result)
    if isinstance(result, Rejection):
        assert MARK.lower() not in result.detail.lower(), result.detail
        assert "@" not in result.detail


def test_a_hidden_detail_still_names_the_field_and_the_reason() -> None:
    fields = dict(OFFLINE_FIELDS, **{"properties.value": "email"})
    builder, columns = _builder("offline", fields)
    result = builder.build([tuple("jane@example.com" if c == "email" else VALID[c] for c in columns)])
    assert isinstance(result, Rejection) and result.reason == "invalid_value"
    assert result.detail == ("properties.value: " + REASONS["invalid_value"] +
                             " (the value is not shown: its column is mapped to user.email)")


# ---------------------------------------------------------------- the issue's rows, through a real sync

def test_bigint_microseconds_and_huge_numeric_strings_in_event_time(make_project, fake_tiktok, order,
                                                                     default_mapping) -> None:
    """The issue's crash: `year 58901 is out of range`. Microseconds are read as microseconds; numbers that
    are no time in any unit are invalid_event_time; every rerun succeeds and sends nothing twice."""
    default_mapping["fields"]["event_time"] = "t_us"
    when = NOW - dt.timedelta(hours=3)
    us = int(when.timestamp()) * 1_000_000 + 123_456
    project = make_project(
        [order(1, t_us=us), order(2, t_us=us * 1000), order(3, t_us=int(when.timestamp()) * 1000),
         order(4, t_us=9_223_372_036_854_775_807), order(5, t_us=-9_223_372_036_854_775_808),
         order(6, t_us=10 ** 30), order(7, t_us=-1)],
        mapping=default_mapping, ddl=["alter table orders add column t_us hugeint"])
    for _ in range(2):
        report = project.run()
        assert report.ok, report.error
    seconds = int(when.timestamp())
    assert {e.event["event_id"]: e.event["event_time"] for e in fake_tiktok.accepted()} == {
        "ORD-00001": seconds, "ORD-00002": seconds, "ORD-00003": seconds}
    assert {event_id: reason for reason, event_id, _ in project.rejects()} == {
        "ORD-00004": "event_in_future",  # the largest BIGINT is 2262-04-11 in nanoseconds
        "ORD-00005": "event_too_old",  # the smallest is 1677-09-21
        "ORD-00006": "invalid_event_time", "ORD-00007": "event_too_old"}
    assert len(fake_tiktok.accepted_event_ids()) == 3


def test_the_issue_rows_end_as_events_or_rejects(make_project, fake_tiktok, order, default_mapping) -> None:
    default_mapping["fields"]["event_time"] = "t_us"
    when = NOW - dt.timedelta(hours=3)
    seconds = int(when.timestamp())
    rows = [order(1, t_us=seconds * 1_000_000 + 999_999), order(2, t_us=str(58901 * 10 ** 12)),
            order(3, t_us=str(10 ** 40)), order(4, t_us=str(seconds * 1000)), order(5, t_us="-1"),
            order(6, t_us="9" * 5000)]
    project = make_project(rows, mapping=default_mapping, ddl=["alter table orders add column t_us varchar"])
    for _ in range(3):
        report = project.run()
        assert report.ok, report.error
    assert sorted(fake_tiktok.accepted_event_ids()) == ["ORD-00001", "ORD-00004"]
    assert {e.event["event_time"] for e in fake_tiktok.accepted()} == {seconds}
    reasons = {event_id: reason for reason, event_id, _ in project.rejects()}
    assert reasons == {"ORD-00002": "event_in_future", "ORD-00003": "invalid_event_time",
                       "ORD-00005": "event_too_old", "ORD-00006": "invalid_event_time"}


def test_timestamps_duckdb_holds_beyond_the_year_9999_are_never_read_as_milliseconds(
        make_project, fake_tiktok, order, default_mapping) -> None:
    """DuckDB timestamps go to the year 294247 and to ±infinity; the warehouse turns them into Unix seconds.
    Seconds of the year 56387 read as milliseconds would be NOW: they must be invalid_event_time, not sent."""
    default_mapping["fields"]["event_time"] = "happened"
    in_window = int((NOW - dt.timedelta(hours=2)).timestamp())
    project = make_project([order(n) for n in range(1, 7)], mapping=default_mapping,
                           ddl=["alter table orders add column happened timestamptz"])
    project.query(f"""update orders set happened = case order_id
        when 'ORD-00001' then to_timestamp({in_window})
        when 'ORD-00002' then to_timestamp({in_window * 1000})
        when 'ORD-00003' then timestamptz 'infinity' when 'ORD-00004' then timestamptz '-infinity'
        when 'ORD-00005' then timestamptz '12000-01-01 00:00:00+00' else timestamptz '0001-01-01 00:00:00+00' end""")
    assert project.run().ok
    assert [(e.event["event_id"], e.event["event_time"]) for e in fake_tiktok.accepted()] == [("ORD-00001", in_window)]
    assert {event_id: reason for reason, event_id, _ in project.rejects()} == {
        "ORD-00002": "invalid_event_time", "ORD-00003": "invalid_event_time", "ORD-00004": "invalid_event_time",
        "ORD-00005": "invalid_event_time", "ORD-00006": "event_too_old"}
