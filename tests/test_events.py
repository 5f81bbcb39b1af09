"""Rows → events through real syncs: every rejection reason, the request body TikTok receives, Amperity rows."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from decimal import Decimal

import pytest

from connector.cli import main
from connector.events import as_id
from connector.reasons import REASONS
from delivery_helpers import MAPPING as DEFAULT_MAPPING
from connector.tiktok_spec import TRACK_PATH

UTC = dt.timezone.utc
NOW = dt.datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
SOURCE_ID = "7654321098765432109"
HEX64 = re.compile(r"^[0-9a-f]{64}$")
ALICE_SHA = "848a771458438fc2ec420560d769fb9b9b86851ee338ec56517baabd79d3bb4f"  # " ALICE_abc@gmail.com "


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def iso(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- every rejection reason, through a real sync

REJECTS_DDL = [
    "alter table orders add column event_time_text varchar",
    "alter table orders add column source_id varchar",
    "alter table orders add column channel varchar",
]
REJECTS_MAPPING = {
    "fields": {
        "event": "event_name",
        "event_id": "order_id",
        "event_time": "event_time_text",  # ISO strings with Z, so a row can hold a value that is no time
        "event_source_id": "source_id",
        "user.email": "email",
        "user.phone": "phone",
        "properties.value": "total",
        "properties.currency": "currency",
        "properties.event_channel": "channel",
    },
    "events": {"purchase": "Purchase"},
}
# reason → (order_id, overrides); order ids say which row is which in the rejects table.
REJECTED_ROWS: dict[str, tuple[str | None, dict]] = {
    "null_cursor": ("R-NULL-CURSOR", {"updated_at": None}),
    "missing_event_id": (None, {}),
    "invalid_event_id": (None, {"order_id": "X" * 300}),  # refused, never cut: its stored id is NULL
    "missing_event": ("R-NO-EVENT", {"event_name": "   "}),
    "unknown_event": ("R-UNKNOWN-EVENT", {"event_name": "dance_party"}),
    "missing_event_time": ("R-NO-TIME", {"event_time_text": None}),
    "invalid_event_time": ("R-BAD-TIME", {"event_time_text": "last tuesday"}),
    "event_too_old": ("R-TOO-OLD", {"event_time_text": "old"}),  # filled relative to now below
    "event_in_future": ("R-FUTURE", {"event_time_text": "future"}),
    "missing_event_source_id": ("R-NO-SOURCE", {"source_id": None}),
    "no_match_keys": ("R-NO-MATCH", {"email": "not-an-email", "phone": "not-a-phone"}),
    "invalid_currency": ("R-CURRENCY", {"currency": "XYZ"}),
    "invalid_value": ("R-VALUE", {"total": Decimal("-5.00")}),
    "invalid_field": ("R-CHANNEL", {"channel": "fax"}),
    "rejected_by_tiktok": ("R-TIKTOK", {}),
}


def rejection_rows(order, now: dt.datetime) -> list[dict]:
    rows = []
    for n, (reason, (order_id, overrides)) in enumerate(REJECTED_ROWS.items(), start=1):
        row = order(n, now=now, order_id=order_id, source_id=SOURCE_ID, channel="in_store")
        row["event_time_text"] = iso(row["ordered_at"])
        row.update(overrides)
        if reason == "event_too_old":
            row["event_time_text"] = iso(now - dt.timedelta(days=28, hours=1))
        if reason == "event_in_future":
            row["event_time_text"] = iso(now + dt.timedelta(hours=1))
        rows.append(row)
    for n in (101, 102):
        row = order(n, now=now, order_id=f"OK-{n}", source_id=SOURCE_ID, channel="in_store")
        row["event_time_text"] = iso(row["ordered_at"])
        rows.append(row)
    return rows


def plain_pii(rows: list[dict]) -> set[str]:
    """Every spelling of the rows' emails and phones that must never be stored or printed."""
    found: set[str] = set()
    for row in rows:
        for key in ("email", "phone"):
            value = row.get(key)
            if value:
                found |= {value, value.strip(), value.strip().lower()}
        phone = row.get("phone")
        if phone and phone.startswith("+1 (415)"):
            digits = re.sub(r"\D", "", phone)
            found |= {"+" + digits, digits}
    return found


def test_every_reason_is_covered_by_a_test() -> None:
    # missing_required_field cannot happen offline: test_missing_required_field_for_crm covers it.
    assert set(REJECTED_ROWS) | {"missing_required_field"} == set(REASONS)


def test_every_rejection_reason_through_a_real_sync(make_project, fake_tiktok, order, capsys) -> None:
    now = dt.datetime.now(UTC)  # the CLI runs on the real clock; the rows keep hours away from the window edges
    rows = rejection_rows(order, now)
    project = make_project(rows, mapping=REJECTS_MAPPING, ddl=REJECTS_DDL,
                           sync_overrides={"event_source_id": None})
    fake_tiktok.reject_event_ids(["R-TIKTOK"], message="Not a valid value")

    # exit 3 (partial): most of these rows are rejected on purpose, above max_reject_rate
    assert main(["sync", "--project", str(project.root), "--dry-run"]) == 3
    dry_out, dry_err = capsys.readouterr()
    assert fake_tiktok.stats["requests"] == 0
    assert main(["sync", "--project", str(project.root), "--json"]) == 3
    out, err = capsys.readouterr()

    report = json.loads(out)
    expected = {reason: 1 for reason in REJECTED_ROWS}
    assert report["rejected_by_reason"] == expected
    assert report["events_rejected"] == len(REJECTED_ROWS)
    assert report["events_sent"] == 2
    assert sorted(fake_tiktok.accepted_event_ids()) == ["OK-101", "OK-102"]

    stored = project.rejects()
    assert sorted((reason, event_id) for reason, event_id, _ in stored) == sorted(
        (reason, order_id) for reason, (order_id, _) in REJECTED_ROWS.items())
    details = {reason: detail for reason, _, detail in stored}
    assert all(details.values()), details
    assert "'XYZ'" in details["invalid_currency"]
    assert "'fax'" in details["invalid_field"]
    assert "last tuesday" in details["invalid_event_time"]
    assert "dance_party" in details["unknown_event"]
    assert "40002" in details["rejected_by_tiktok"] and "Not a valid value" in details["rejected_by_tiktok"]

    # No plain email or phone in the rejects or runs tables, in any output, or on the wire.
    secrets = plain_pii(rows)
    assert "customer3@example.com" in secrets and "+14155550003" in secrets
    stored_text = project.table_text("tiktok_rejects") + project.table_text("tiktok_runs")
    printed = dry_out + dry_err + out + err
    wire = b"".join(r.raw for r in fake_tiktok.requests()).decode()
    for secret in secrets:
        assert secret not in stored_text
        assert secret not in printed
        assert secret not in wire


def test_rejected_rows_are_not_recorded_twice_on_the_next_run(make_project, fake_tiktok, order) -> None:
    rows = rejection_rows(order, NOW)
    project = make_project(rows, mapping=REJECTS_MAPPING, ddl=REJECTS_DDL,
                           sync_overrides={"event_source_id": None})
    fake_tiktok.reject_event_ids(["R-TIKTOK"])
    first = project.run()
    assert first.ok, first.error
    second = project.run()
    assert second.ok, second.error
    assert second.events_sent == 0
    assert dict(second.rejected_by_reason) == {}
    assert len(project.rejects()) == len(REJECTED_ROWS)


def test_missing_required_field_for_crm(make_project, fake_tiktok, order, default_mapping) -> None:
    default_mapping["fields"]["lead.lead_id"] = "lead_id"
    default_mapping["events"] = {"purchase": "Lead"}
    rows = [order(1, lead_id="L-1"), order(2, lead_id=None, email=None, phone=None), order(3, lead_id="  ")]
    project = make_project(rows, mapping=default_mapping, sync_overrides={"event_source": "crm"},
                           ddl=["alter table orders add column lead_id varchar"])
    report = project.run()
    assert report.ok, report.error
    assert dict(report.rejected_by_reason) == {"missing_required_field": 2}
    assert sorted((r, e) for r, e, _ in project.rejects()) == [("missing_required_field", "ORD-00002"),
                                                              ("missing_required_field", "ORD-00003")]
    [accepted] = fake_tiktok.accepted()
    assert accepted.event_source == "crm"
    assert accepted.event["lead"] == {"lead_id": "L-1"}


@pytest.mark.parametrize(("event_time", "sent", "reason"), [
    (NOW - dt.timedelta(days=28), True, None),
    (NOW - dt.timedelta(days=28, seconds=1), False, "event_too_old"),
    (NOW + dt.timedelta(seconds=300), True, None),
    (NOW + dt.timedelta(seconds=301), False, "event_in_future"),
])
def test_attribution_window_edges_through_a_sync(make_project, fake_tiktok, order, event_time, sent, reason) -> None:
    project = make_project([order(1, ordered_at=event_time)])
    report = project.run(now=NOW)
    assert report.ok, report.error
    assert fake_tiktok.accepted_event_ids() == (["ORD-00001"] if sent else [])
    assert dict(report.rejected_by_reason) == ({} if sent else {reason: 1})
    assert [(r, e) for r, e, _ in project.rejects()] == ([] if sent else [(reason, "ORD-00001")])


def test_configured_attribution_window_is_applied(make_project, fake_tiktok, order) -> None:
    rows = [order(1, ordered_at=NOW - dt.timedelta(days=7)),
            order(2, ordered_at=NOW - dt.timedelta(days=7, seconds=1))]
    project = make_project(rows, sync_overrides={"attribution_window_days": 7})
    report = project.run(now=NOW)
    assert fake_tiktok.accepted_event_ids() == ["ORD-00001"]
    assert dict(report.rejected_by_reason) == {"event_too_old": 1}


def test_infinite_event_time_is_a_row_problem(make_project, fake_tiktok, order, default_mapping) -> None:
    default_mapping["fields"]["event_time"] = "epoch"
    project = make_project(
        [order(1, epoch=float("inf")), order(2, epoch=float("nan")), order(3, epoch=NOW.timestamp() - 60)],
        mapping=default_mapping, ddl=["alter table orders add column epoch double"])
    report = project.run(now=NOW)
    assert report.ok
    assert dict(report.rejected_by_reason) == {"invalid_event_time": 2}
    assert fake_tiktok.accepted_event_ids() == ["ORD-00003"]


# ---------------------------------------------------------------- the request body

ITEMS_DDL = [
    "alter table orders add column store_id integer",
    """create table order_items (order_id varchar, line_no integer, sku varchar, product_name varchar,
       unit_price decimal(10, 2), qty integer)""",
]
# Items leave in line_no DESCENDING order: neither insertion nor alphabetical order.
ITEMS_QUERY = """
select o.order_id, o.event_name, o.ordered_at, o.updated_at, o.email, o.phone, o.total, o.currency, o.store_id,
       i.sku, i.product_name, i.unit_price, i.qty
from orders as o join order_items as i on i.order_id = o.order_id
order by o.order_id, i.line_no desc
"""
ITEMS_MAPPING = {
    "fields": {
        **DEFAULT_MAPPING["fields"],
        "properties.shop_id": "store_id",
        "properties.content_type": {"value": "product"},
        "properties.contents[].content_id": "sku",
        "properties.contents[].content_name": "product_name",
        "properties.contents[].price": "unit_price",
        "properties.contents[].quantity": "qty",
    },
    "events": {"purchase": "Purchase"},
}


def item(order_id: str, line_no: int, sku: str, price: str, qty: int) -> dict:
    return {"order_id": order_id, "line_no": line_no, "sku": sku, "product_name": f"Product {sku}",
            "unit_price": Decimal(price), "qty": qty}


@pytest.fixture
def items_project(make_project, order):
    orders = [order(1, store_id=101, total=Decimal("19.99")), order(2, store_id=102, total=Decimal("45.00"),
                                                                      email=None)]
    items = [
        item("ORD-00001", 1, "SKU-B", "4.99", 1),
        item("ORD-00001", 2, "SKU-A", "5.00", 2),
        item("ORD-00001", 3, "SKU-C", "5.00", 1),
        item("ORD-00002", 1, "SKU-Z", "45.00", 1),
    ]
    return make_project(orders, mapping=ITEMS_MAPPING, query=ITEMS_QUERY, ddl=ITEMS_DDL,
                        tables={"order_items": items})


def test_request_envelope_and_headers(items_project, fake_tiktok) -> None:
    report = items_project.run()
    assert report.ok, report.error
    [request] = fake_tiktok.requests()
    assert request.http_status == 200 and request.code == 0  # the fake checks token, path and schema
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert "access-token" in headers  # recorded redacted; the fake accepted it, so it was "test-token"
    assert "authorization" not in headers
    assert headers["content-type"] == "application/json"
    body = request.body
    assert body is not None
    assert body["event_source"] == "offline"
    assert body["event_source_id"] == SOURCE_ID and isinstance(body["event_source_id"], str)
    assert "test_event_code" not in body
    assert [e["event_id"] for e in body["data"]] == ["ORD-00001", "ORD-00002"]
    assert fake_tiktok.base_url.endswith("/open_api") and TRACK_PATH == "/v1.3/event/track/"


def test_event_body_fields(items_project, fake_tiktok, order) -> None:
    items_project.run()
    first, second = fake_tiktok.requests()[0].body["data"]
    row = order(1)
    assert first["event"] == "Purchase"
    assert first["event_time"] == int(row["ordered_at"].timestamp()) and type(first["event_time"]) is int
    assert first["event_id"] == "ORD-00001"
    assert first["user"] == {"email": sha("customer1@example.com"), "phone": sha("+14155550001")}
    assert second["user"] == {"phone": sha("+14155550002")}  # a NULL email is left out, not hashed
    props = first["properties"]
    assert props["currency"] == "USD"
    assert props["order_id"] == "ORD-00001"
    assert props["shop_id"] == "101"  # an INTEGER column, sent as a string
    assert props["content_type"] == "product"
    # contents[] in the query's row order, with content_ids and num_items derived from the items.
    assert props["contents"] == [
        {"content_id": "SKU-C", "content_name": "Product SKU-C", "price": 5, "quantity": 1},
        {"content_id": "SKU-A", "content_name": "Product SKU-A", "price": 5, "quantity": 2},
        {"content_id": "SKU-B", "content_name": "Product SKU-B", "price": 4.99, "quantity": 1},
    ]
    assert props["content_ids"] == ["SKU-C", "SKU-A", "SKU-B"]
    assert props["num_items"] == 4
    assert second["properties"]["contents"] == [
        {"content_id": "SKU-Z", "content_name": "Product SKU-Z", "price": 45, "quantity": 1}]
    assert second["properties"]["num_items"] == 1


def test_money_is_a_json_number(items_project, fake_tiktok) -> None:
    items_project.run()
    [request] = fake_tiktok.requests()
    raw = request.raw.decode()
    assert '"value":19.99' in raw.replace(" ", "")
    assert '"price":4.99' in raw.replace(" ", "")
    value = request.body["data"][0]["properties"]["value"]
    assert value == 19.99 and isinstance(value, float)
    assert request.body["data"][1]["properties"]["value"] == 45


BIG_ID = 12345678901234567890123456789012345678  # 38 digits: DECIMAL(38,0)


@pytest.mark.parametrize(("column_type", "value", "expected"), [
    ("bigint", 9007199254740993, "9007199254740993"),  # 2**53 + 1: a float would round it
    ("integer", 42, "42"),
    ("decimal(38, 0)", BIG_ID, str(BIG_ID)),
    ("decimal(38, 0)", 10 ** 30, "1" + "0" * 30),  # never 1E+30
    ("hugeint", 10 ** 25, "1" + "0" * 25),
])
def test_event_id_is_a_string_without_scientific_notation(make_project, fake_tiktok, order, default_mapping,
                                                          column_type, value, expected) -> None:
    default_mapping["fields"].update({"event_id": "order_num", "properties.order_id": "order_num"})
    project = make_project([order(1, order_num=value)], mapping=default_mapping,
                           ddl=[f"alter table orders add column order_num {column_type}"])
    report = project.run()
    assert report.ok, report.error
    [request] = fake_tiktok.requests()
    [event] = request.body["data"]
    assert event["event_id"] == expected
    assert event["properties"]["order_id"] == expected
    assert f'"event_id":"{expected}"' in request.raw.decode()


@pytest.mark.parametrize(("value", "expected"), [
    (12345, "12345"), (Decimal("1E+3"), "1000"), (Decimal(10 ** 30), "1" + "0" * 30), (Decimal("12.50"), "12.50"),
    (12.0, "12"), (" A-1 ", "A-1"), ("", None), ("  ", None), (None, None), (True, None),
])
def test_as_id(value, expected) -> None:
    assert as_id(value) == expected


def test_wrong_base_url_path_fails_with_a_clear_message(make_project, fake_tiktok, order, monkeypatch) -> None:
    monkeypatch.setenv("TIKTOK_API_BASE_URL", fake_tiktok.base_url.removesuffix("/open_api"))
    project = make_project([order(1)])
    report = project.run()
    assert report.status == "failed"
    assert "404" in report.error and "open_api" in report.error
    assert fake_tiktok.accepted() == []
    assert project.watermark() is None


def test_partner_name_and_numeric_event_source_id_in_the_envelope(make_project, fake_tiktok, order) -> None:
    project = make_project([order(1)], tiktok={"partner_name": "Acme"},
                           sync_overrides={"event_source_id": 7654321098765432109})  # unquoted in YAML
    assert "event_source_id: 7654321098765432109\n" in (project.root / "connector.yml").read_text()
    assert project.run().ok
    [request] = fake_tiktok.requests()
    assert request.body["event_source_id"] == SOURCE_ID
    assert request.body["partner_name"] == "Acme"
    assert '"event_source_id":"7654321098765432109"' in request.raw.decode()


def test_list_and_comma_separated_match_keys(make_project, fake_tiktok, order, default_mapping) -> None:
    default_mapping["fields"]["user.email"] = "emails"
    rows = [
        order(1, emails=["A@x.com", " b@X.com ", "", None, "a@x.com"]),
        order(2, emails=None, phone="+1 213 373 4253, (+1)2133734253, +1 415-555-0100, junk"),
        order(3, emails=[ALICE_SHA.upper()], phone="  "),
    ]
    project = make_project(rows, mapping=default_mapping, ddl=["alter table orders add column emails varchar[]"])
    assert project.run().ok
    users = {e.event["event_id"]: e.event["user"] for e in fake_tiktok.accepted()}
    assert users["ORD-00001"]["email"] == [sha("a@x.com"), sha("b@x.com")]
    assert users["ORD-00002"] == {"phone": [sha("+12133734253"), sha("+14155550100")]}
    assert users["ORD-00003"] == {"email": ALICE_SHA}  # already hashed: lowercased, not hashed again


def test_default_phone_region(make_project, fake_tiktok, order) -> None:
    rows = [order(1, phone="(213) 373-4253", email=None), order(2, phone="+44 20 7946 0958", email=None)]
    project = make_project(rows, sync_overrides={"default_phone_region": "US"})
    assert project.run().ok
    phones = {e.event["event_id"]: e.event["user"]["phone"] for e in fake_tiktok.accepted()}
    assert phones == {"ORD-00001": sha("+12133734253"), "ORD-00002": sha("+442079460958")}


def test_national_phone_without_region_is_not_a_match_key(make_project, fake_tiktok, order) -> None:
    project = make_project([order(1, phone="(213) 373-4253", email=None)])
    report = project.run()
    assert dict(report.rejected_by_reason) == {"no_match_keys": 1}
    assert fake_tiktok.accepted() == []


# ---------------------------------------------------------------- the shipped Amperity mapping

AMPERITY_DDL = ["""create table amperity_orders (
    email varchar, phone varchar, event varchar, event_id varchar, event_set_id varchar, "timestamp" timestamptz,
    value decimal(12, 2), currency varchar, order_id varchar, shop_id varchar, content_id varchar,
    content_name varchar, content_category varchar, content_type varchar, brand varchar, price decimal(10, 2),
    quantity integer, event_channel varchar)"""]
SET_A, SET_B = "7000000000000000001", "7000000000000000002"


def amperity_row(event_id: str, set_id: str, minutes: int, content_id: str, price: str, qty: int, **kw) -> dict:
    row = {"email": f"{event_id}@Example.com", "phone": "+1 213 373 4253", "event": "Purchase",
           "event_id": event_id, "event_set_id": set_id, "timestamp": NOW - dt.timedelta(minutes=minutes),
           "value": Decimal("30.50"), "currency": "usd", "order_id": f"O-{event_id}", "shop_id": "S-1",
           "content_id": content_id, "content_name": f"Name {content_id}", "content_category": "Shoes",
           "content_type": "product", "brand": "Acme", "price": Decimal(price), "quantity": qty,
           "event_channel": "in_store"}
    row.update(kw)
    return row


def test_amperity_rows_sync_with_the_builtin_mapping(make_project, fake_tiktok) -> None:
    rows = [
        amperity_row("E1", SET_A, 90, "C-2", "10.50", 1),
        amperity_row("E1", SET_A, 90, "C-1", "10.00", 2),
        amperity_row("E2", SET_B, 80, "C-9", "7.25", 1, event_channel="email", email=None),
        amperity_row("E3", SET_A, 70, "C-3", "3.00", 3),
    ]
    project = make_project(
        mapping=None, ddl=AMPERITY_DDL, tables={"amperity_orders": rows},
        query="select * from amperity_orders order by event_id, price desc\n",
        sync_overrides={"event_source_id": None, "cursor": "timestamp"})
    assert "mapping" not in (project.root / "connector.yml").read_text()

    report = project.run()
    assert report.ok, report.error
    assert report.events_sent == 3
    assert report.rows_read == 4

    by_set = {}
    for request in fake_tiktok.requests():
        body = request.body
        by_set.setdefault(body["event_source_id"], []).extend(e["event_id"] for e in body["data"])
    assert by_set == {SET_A: ["E1", "E3"], SET_B: ["E2"]}  # event_set_id became event_source_id

    events = {e.event["event_id"]: e.event for e in fake_tiktok.accepted()}
    e1 = events["E1"]
    assert e1["event"] == "Purchase"
    assert e1["event_time"] == int((NOW - dt.timedelta(minutes=90)).timestamp())
    assert e1["user"] == {"email": sha("e1@example.com"),
                          "phone": "9f7ec22d72092cd3c0b58726ed9c2d91b92e51a3f29837508fb2948bb22dd2fd"}
    assert e1["properties"]["value"] == 30.5
    assert e1["properties"]["currency"] == "USD"
    assert e1["properties"]["order_id"] == "O-E1"
    assert e1["properties"]["shop_id"] == "S-1"
    assert e1["properties"]["content_type"] == "product"
    assert e1["properties"]["event_channel"] == "in_store"
    assert e1["properties"]["contents"] == [
        {"content_id": "C-2", "content_name": "Name C-2", "content_category": "Shoes", "brand": "Acme",
         "price": 10.5, "quantity": 1},
        {"content_id": "C-1", "content_name": "Name C-1", "content_category": "Shoes", "brand": "Acme",
         "price": 10, "quantity": 2},
    ]
    assert e1["properties"]["content_ids"] == ["C-2", "C-1"]
    assert e1["properties"]["num_items"] == 3
    assert events["E2"]["properties"]["event_channel"] == "email"
    assert "email" not in events["E2"]["user"]
    assert "event_set_id" not in json.dumps(list(events.values()))  # a 1.0 name, not part of the event

    again = project.run()
    assert again.ok and again.events_sent == 0
    assert len(fake_tiktok.accepted()) == 3


def test_phones_are_hashed_once_per_distinct_value_and_the_remembered_ones_are_bounded(monkeypatch) -> None:
    """Rows left to Python are mostly phones only phonenumbers decides (50 µs each): a repeated phone is
    not parsed again, and no more than _PHONES_CACHED values are remembered."""
    from connector import events as events_module, pii as pii_module

    real, asked = pii_module.hash_phone, []
    monkeypatch.setattr(pii_module, "hash_phone", lambda text, region=None: asked.append(text) or real(text, region))
    monkeypatch.setattr(events_module, "_PHONES_CACHED", 3)
    hashed = events_module._phone_hasher("US")
    values = ["(212) 555-0142", "212.555.0142", "(212) 555-0142", "x", "+1 212 555 0143", "(212) 555-0142",
              "+1 212 555 0143"]
    assert [hashed(v) for v in values] == [real(v, "US") for v in values]
    assert asked == ["(212) 555-0142", "212.555.0142", "x", "+1 212 555 0143", "+1 212 555 0143"]
