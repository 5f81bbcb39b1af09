"""The conformance table: warehouse rows → the exact TikTok event (`data[0]`), or the reason it is not sent.

Every expectation here is written by hand from ../shared/docs/tiktok-events-api.md (TikTok's documented hash
examples verbatim) and the README's Mappings and Reasons sections — never computed by the connector.
Rows are typed as a warehouse returns them: str, int, Decimal, aware/naive datetime, date, list, JSON text.

`tests/test_conformance.py` runs the table through `EventBuilder` and, end to end, through real syncs of a
DuckDB project to the fake TikTok server.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

UTC = dt.timezone.utc
NOW = dt.datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)
WHEN = NOW - dt.timedelta(days=1)  # 2024-05-31T12:00:00Z, well inside the attribution window
T = 1717156800  # WHEN in Unix seconds, written by hand (checked against the datetime in a test)

OFFLINE_ID = "7654321098765432109"  # an offline event set id: 19 digits
PIXEL_CODE = "CPIXEL0123456789ABCD"  # a web pixel code
APP_SOURCE_ID = "7312345678901234567"  # a TikTok app id
CRM_ID = "7111111111111111111"  # a CRM event set id
SOURCE_IDS = {"offline": OFFLINE_ID, "web": PIXEL_CODE, "app": APP_SOURCE_ID, "crm": CRM_ID}
TEST_EVENT_CODE = "TEST12345"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# TikTok's documented examples, verbatim from the contract.
ALICE = "848a771458438fc2ec420560d769fb9b9b86851ee338ec56517baabd79d3bb4f"  # " ALICE_abc@gmail.com "
PHONE_DOC = "9f7ec22d72092cd3c0b58726ed9c2d91b92e51a3f29837508fb2948bb22dd2fd"  # "(+1)2133734253"
EXT_DOC = "80fba0ae1c48e3978e43e4efc365e14e12ea0c830ba8ba5b9a2dafc7e3f2ab8b"  # "user_123"

BUYER = sha("buyer@example.com")  # the default row's "Buyer@Example.com "
UK = sha("+442079460958")  # +44 20 7946 0958, however it is written
IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
IDFV = "AB12CD34-56EF-4A1B-9C2D-3E4F5A6B7C8D"
GAID = "38400000-8cf0-11bd-b23e-10b96e40000d"
ZERO_ID = "00000000-0000-0000-0000-000000000000"
UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko)"
URL = "https://shop.example.com/p/1"


@dataclass(frozen=True)
class Case:
    """Rows of one event and what TikTok must receive: `expect` (the whole event) or `reason` + `detail`."""

    id: str
    source: str
    fields: dict[str, Any]  # mapping fields: TikTok path → column, or {"value": constant}
    rows: tuple[dict[str, Any], ...]  # column → value; unlisted mapped columns are NULL
    expect: dict[str, Any] | None = None
    reason: str | None = None
    detail: str | None = None  # a substring of the rejection's detail
    events: dict[str, str] = field(default_factory=dict)  # the mapping's `events:`
    source_id: str | None = None  # the sync's event_source_id
    region: str | None = None  # the sync's default_phone_region
    envelope_id: str | None = None  # the request's event_source_id, when not the sync's
    not_sent: tuple[str, ...] = ()  # mapped fields the source cannot use (compiled.not_applicable)
    types: dict[str, str] = field(default_factory=dict)  # DuckDB column types inference cannot guess
    test_event_code: str | None = None  # end to end: run this case's sync as a test run
    e2e: bool = True  # False: the value cannot be stored in DuckDB (unit level only)
    bug: str | None = None  # strict xfail: the connector does not do what the contract says

    @property
    def accepted(self) -> bool:
        return self.expect is not None

    @property
    def expected_source_id(self) -> str | None:
        return self.envelope_id or self.source_id


# ---------------------------------------------------------------- mappings

OFFLINE_FIELDS: dict[str, Any] = {
    "event": "event_name",
    "event_id": "order_id",
    "event_time": "ordered_at",
    "user.email": "email",
    "user.phone": "phone",
    "properties.value": "total",
    "properties.currency": "currency",
    "properties.order_id": "order_ref",
    "properties.shop_id": "shop",
    "properties.content_type": "content_type",
    "properties.num_items": "num_items",
    "properties.search_string": "search",
    "properties.description": "description",
    "properties.event_channel": "channel",
}
OFFLINE_LISTS = {**{k: v for k, v in OFFLINE_FIELDS.items() if not k.startswith("user.")},
                 "user.email": "emails", "user.phone": "phones"}
ITEM_FIELDS: dict[str, Any] = {
    "properties.contents[].content_id": "sku",
    "properties.contents[].content_name": "product_name",
    "properties.contents[].content_category": "category",
    "properties.contents[].brand": "brand",
    "properties.contents[].price": "unit_price",
    "properties.contents[].quantity": "qty",
}
OFFLINE_ITEMS = {"event": "event_name", "event_id": "order_id", "event_time": "ordered_at", "user.email": "email",
                 "properties.value": "total", "properties.currency": "currency",
                 "properties.content_type": {"value": "product"}, **ITEM_FIELDS}
OFFLINE_ITEMS_GIVEN = {**OFFLINE_ITEMS, "properties.content_type": {"value": "product_group"},
                       "properties.content_ids": "given_ids", "properties.num_items": "given_count"}
OFFLINE_JSON = {"event": "event_name", "event_id": "order_id", "event_time": "ordered_at", "user.email": "email",
                "properties.value": "total", "properties.currency": "currency", "properties.contents": "items"}
OFFLINE_JSON_GIVEN = {**OFFLINE_JSON, "properties.content_ids": "given_ids", "properties.num_items": "given_count"}
OFFLINE_SOURCE_COLUMN = {**OFFLINE_FIELDS, "event_source_id": "set_id"}
# Fields that do not apply to offline events, in mapping order: not sent, and the run says so once.
OFFLINE_NOT_SENT = ("user.external_id", "user.ttclid", "user.ttp", "user.ip", "user.user_agent", "user.locale",
                    "user.idfv", "page.url",
                    "limited_data_use", "properties.customer_type", "app.app_id", "lead.lead_id")
OFFLINE_EXTRA = {**OFFLINE_FIELDS, **{path: f"x_{path.replace('.', '_')}" for path in OFFLINE_NOT_SENT}}

WEB_FIELDS: dict[str, Any] = {
    "event": "event_name",
    "event_id": "event_key",
    "event_time": "happened_at",
    "page.url": "url",
    "page.referrer": "referrer",
    "user.ttclid": "ttclid",
    "user.ttp": "ttp",
    "user.ip": "ip",
    "user.user_agent": "user_agent",
    "user.locale": "locale",
    "user.external_id": "user_id",
    "user.email": "email",
    "user.phone": "phone",
    "limited_data_use": "ldu",
    "properties.customer_type": "customer_type",
    "properties.value": "amount",
    "properties.currency": "currency",
}
WEB_NOT_SENT = ("app.app_id", "user.idfa", "user.gaid", "user.att_status", "lead.lead_id",
                "lead.lead_event_source", "properties.event_channel")
WEB_EXTRA = {**WEB_FIELDS, **{path: f"x_{path.replace('.', '_')}" for path in WEB_NOT_SENT}}

APP_FIELDS: dict[str, Any] = {
    "event": "event_name",
    "event_id": "event_key",
    "event_time": "happened_at",
    "app.app_id": "app_id",
    "app.app_name": "app_name",
    "app.app_version": "app_version",
    "user.idfa": "idfa",
    "user.idfv": "idfv",
    "user.gaid": "gaid",
    "user.att_status": "att",
    "user.ip": "ip",
    "user.user_agent": "user_agent",
    "user.locale": "locale",
    "user.email": "email",
    "user.phone": "phone",
    "limited_data_use": "ldu",
    "properties.value": "amount",
    "properties.currency": "currency",
    "properties.customer_type": "customer_type",
}
APP_AD_FIELDS = {**APP_FIELDS, **{f"ad.{key}": key for key in (
    "callback", "campaign_id", "ad_id", "creative_id", "is_retargeting", "attributed", "attribution_type",
    "attribution_provider", "attribution_share")}}
APP_NOT_SENT = ("page.url", "page.referrer", "user.ttclid", "user.ttp", "lead.lead_id", "properties.event_channel")
APP_EXTRA = {**APP_FIELDS, **{path: f"x_{path.replace('.', '_')}" for path in APP_NOT_SENT}}

CRM_FIELDS: dict[str, Any] = {
    "event": "event_name",
    "event_id": "lead_key",
    "event_time": "happened_at",
    "lead.lead_id": "lead_id",
    "lead.lead_event_source": "lead_source",
    "user.email": "email",
    "user.phone": "phone",
    "user.external_id": "user_id",
    "properties.event_channel": "channel",
    "properties.value": "amount",
    "properties.currency": "currency",
}
CRM_NOT_SENT = ("page.url", "user.ttclid", "user.ip", "user.user_agent", "user.idfa", "app.app_id",
                "limited_data_use", "properties.customer_type", "ad.callback")
CRM_EXTRA = {**CRM_FIELDS, **{path: f"x_{path.replace('.', '_')}" for path in CRM_NOT_SENT}}

DEFAULT_FIELDS = {"offline": OFFLINE_FIELDS, "web": WEB_FIELDS, "app": APP_FIELDS, "crm": CRM_FIELDS}
ID_COLUMN = {"offline": "order_id", "web": "event_key", "app": "event_key", "crm": "lead_key"}


def base_row(source: str, event_id: Any) -> dict[str, Any]:
    """A valid row of each source: the smallest event it accepts."""
    if source == "offline":
        return {"order_id": event_id, "event_name": "purchase", "ordered_at": WHEN, "email": "Buyer@Example.com "}
    if source == "web":
        return {"event_key": event_id, "event_name": "page_view", "happened_at": WHEN, "url": URL}
    if source == "app":
        return {"event_key": event_id, "event_name": "InstallApp", "happened_at": WHEN, "app_id": "1234567890"}
    return {"lead_key": event_id, "event_name": "submit_form", "happened_at": WHEN, "lead_id": f"L-{event_id}"}


def ev(event: str, *, event_id: Any = None, time: int = T, **sections: Any) -> dict[str, Any]:
    """An expected event: every key TikTok receives, nothing else (event_id is filled from the case)."""
    return {"event": event, "event_time": time, "event_id": event_id, **sections}


def case(source: str, cid: str, row: dict[str, Any] | None = None, *, rows: list[dict[str, Any]] | None = None,
         expect: dict[str, Any] | None = None, fields: dict[str, Any] | None = None,
         source_id: Any = "default", **kw: Any) -> Case:
    """A case whose rows are the source's base row (event id = the case id) with `row` merged in."""
    if rows is None:
        rows = [{**base_row(source, cid), **(row or {})}]
    else:
        rows = [{**base_row(source, cid), **r} for r in rows]
    if expect is not None and expect["event_id"] is None:
        expect = {**expect, "event_id": cid}
    return Case(cid, source, fields or DEFAULT_FIELDS[source], tuple(rows), expect,
                source_id=SOURCE_IDS[source] if source_id == "default" else source_id, **kw)


def offline(cid: str, row: dict[str, Any] | None = None, **kw: Any) -> Case:
    return case("offline", cid, row, **kw)


def web(cid: str, row: dict[str, Any] | None = None, **kw: Any) -> Case:
    return case("web", cid, row, **kw)


def app(cid: str, row: dict[str, Any] | None = None, **kw: Any) -> Case:
    return case("app", cid, row, **kw)


def crm(cid: str, row: dict[str, Any] | None = None, **kw: Any) -> Case:
    return case("crm", cid, row, **kw)


def purchase(**sections: Any) -> dict[str, Any]:
    """The base offline row's event with these sections (default: the buyer's email only)."""
    sections.setdefault("user", {"email": BUYER})
    return ev("Purchase", **sections)


def page_view(**sections: Any) -> dict[str, Any]:
    return ev("ViewContent", page={"url": URL}, **sections)


def install(**sections: Any) -> dict[str, Any]:
    return ev("InstallApp", app={"app_id": "1234567890"}, **sections)


def lead(cid: str, event: str = "Lead", **sections: Any) -> dict[str, Any]:
    sections.setdefault("lead", {"lead_id": f"L-{cid}"})
    return ev(event, **sections)


# ---------------------------------------------------------------- offline

GENERIC_NAMES = {  # the built-in table of warehouse names, as the README lists it
    "purchase": "Purchase", "add_to_cart": "AddToCart", "begin_checkout": "InitiateCheckout",
    "sign_up": "CompleteRegistration", "generate_lead": "Lead", "submit_form": "Lead", "view_item": "ViewContent",
    "page_view": "ViewContent", "search": "Search", "subscribe": "Subscribe", "start_trial": "StartTrial",
    "contact": "Contact", "download": "Download", "schedule": "Schedule",
}
LEGACY_NAMES = ("CompletePayment", "SubmitForm", "PlaceAnOrder", "ClickButton")

ITEM_ROWS = [  # one row per item, deliberately in neither alphabetical nor price order
    {"sku": "SKU-B", "product_name": "Blue Tee", "category": "Shirts", "brand": "Acme",
     "unit_price": Decimal("4.99"), "qty": 1, "total": Decimal("25.48"), "currency": "USD"},
    {"sku": "SKU-A", "product_name": "Amber Cap", "category": "Hats", "brand": "Acme",
     "unit_price": Decimal("5.00"), "qty": 2, "total": Decimal("25.48"), "currency": "USD"},
    {"sku": "SKU-C", "product_name": "Cyan Sock", "category": "Socks", "brand": "Bolt",
     "unit_price": Decimal("10.50"), "qty": 1, "total": Decimal("25.48"), "currency": "USD"},
]
ITEM_CONTENTS = [
    {"content_id": "SKU-B", "content_name": "Blue Tee", "content_category": "Shirts", "brand": "Acme",
     "price": 4.99, "quantity": 1},
    {"content_id": "SKU-A", "content_name": "Amber Cap", "content_category": "Hats", "brand": "Acme",
     "price": 5, "quantity": 2},
    {"content_id": "SKU-C", "content_name": "Cyan Sock", "content_category": "Socks", "brand": "Bolt",
     "price": 10.5, "quantity": 1},
]

OFFLINE_CASES = [
    # identity: TikTok's documented examples
    offline("off-email-doc", {"email": " ALICE_abc@gmail.com "}, expect=purchase(user={"email": ALICE})),
    offline("off-phone-doc", {"email": None, "phone": "(+1)2133734253"}, expect=purchase(user={"phone": PHONE_DOC})),
    offline("off-email-and-phone", {"phone": "+1 213-373-4253"},
            expect=purchase(user={"email": BUYER, "phone": PHONE_DOC})),
    # several values per column → arrays of distinct hashes, in first-seen order
    offline("off-emails-comma", {"email": "a@x.com, B@X.com ,a@x.com,,"},
            expect=purchase(user={"email": [sha("a@x.com"), sha("b@x.com")]})),
    offline("off-phones-comma", {"email": None, "phone": "+1 213 373 4253, (+1)2133734253, +44 20 7946 0958"},
            expect=purchase(user={"phone": [PHONE_DOC, UK]})),
    offline("off-emails-list", {"emails": ["A@x.com", " b@X.com ", "", None, "a@x.com"],
                                "phones": ["+12133734253", "0044 20 7946 0958"]}, fields=OFFLINE_LISTS,
            expect=purchase(user={"email": [sha("a@x.com"), sha("b@x.com")], "phone": [PHONE_DOC, UK]})),
    offline("off-emails-list-one", {"emails": [" ALICE_abc@gmail.com ", None], "phones": None}, fields=OFFLINE_LISTS,
            expect=purchase(user={"email": ALICE})),
    # pre-hashed values: lowercased, not hashed again
    offline("off-email-prehashed", {"email": f" {ALICE.upper()} "}, expect=purchase(user={"email": ALICE})),
    offline("off-phone-prehashed", {"email": None, "phone": PHONE_DOC.upper()},
            expect=purchase(user={"phone": PHONE_DOC})),
    # normalization
    offline("off-email-no-gmail-rewrite", {"email": "John.Doe+promo@GMail.com"},
            expect=purchase(user={"email": sha("john.doe+promo@gmail.com")})),
    offline("off-email-blank-dropped", {"email": "   ", "phone": "+12133734253"},
            expect=purchase(user={"phone": PHONE_DOC})),
    offline("off-email-without-at-dropped", {"email": "not-an-email", "phone": "+12133734253"},
            expect=purchase(user={"phone": PHONE_DOC})),
    offline("off-phone-trunk-zero", {"email": None, "phone": "+44 (0)20 7946 0958"},
            expect=purchase(user={"phone": UK})),
    offline("off-phone-00-prefix", {"email": None, "phone": "0044 20 7946 0958"}, expect=purchase(user={"phone": UK})),
    offline("off-phone-region-us", {"email": None, "phone": "(213) 373-4253"}, region="US",
            expect=purchase(user={"phone": PHONE_DOC})),
    offline("off-phone-region-keeps-intl", {"email": None, "phone": "+44 20 7946 0958"}, region="US",
            expect=purchase(user={"phone": UK})),
    offline("off-phone-region-gb", {"email": None, "phone": "020 7946 0958"}, region="GB",
            expect=purchase(user={"phone": UK})),
    offline("off-phone-national-without-region", {"email": None, "phone": "(213) 373-4253"},
            reason="no_match_keys", detail="user: no usable email or phone"),
    offline("off-no-match-keys", {"email": None, "phone": None}, reason="no_match_keys", detail="email or phone"),
    offline("off-no-match-keys-junk", {"email": "n/a", "phone": "call me"}, reason="no_match_keys",
            detail="email or phone"),
    # properties: value, currency
    offline("off-value-currency", {"total": Decimal("19.99"), "currency": "usd"},
            expect=purchase(properties={"value": 19.99, "currency": "USD"})),
    offline("off-value-zero-kept", {"total": Decimal("0.00"), "currency": " eur "},
            expect=purchase(properties={"value": 0, "currency": "EUR"})),
    offline("off-value-whole", {"total": Decimal("100.00"), "currency": "JPY"},
            expect=purchase(properties={"value": 100, "currency": "JPY"})),
    offline("off-value-negative", {"total": Decimal("-5.00"), "currency": "USD"}, reason="invalid_value",
            detail="properties.value: -5 is negative"),
    offline("off-value-not-a-number", {"total": "12,50 €", "currency": "EUR"}, reason="invalid_value",
            detail="properties.value: '12,50 €' is not a number"),
    offline("off-value-infinite", {"total": float("inf"), "currency": "USD"}, types={"total": "double"},
            reason="invalid_value", detail="properties.value: inf is not a finite number"),
    offline("off-value-decimal-infinity", {"total": Decimal("Infinity"), "currency": "USD"}, e2e=False,
            reason="invalid_value", detail="properties.value",
                ),
    offline("off-currency-invalid", {"total": Decimal("1.00"), "currency": "XYZ"}, reason="invalid_currency",
            detail="properties.currency: 'XYZ' is not a TikTok currency"),
    offline("off-currency-symbol", {"total": Decimal("1.00"), "currency": "$"}, reason="invalid_currency",
            detail="properties.currency: '$' is not a TikTok currency"),
    # ids are strings, strings are trimmed and cut, enums are checked
    offline("off-ids-are-strings", {"order_ref": Decimal("1E+3"), "shop": 101},
            expect=purchase(properties={"order_id": "1000", "shop_id": "101"})),
    offline("off-texts", {"order_ref": " A-1 ", "search": "  running shoes  ", "description": "d" * 1500,
                          "content_type": "product_group", "channel": "in_store", "num_items": 3},
            expect=purchase(properties={"order_id": "A-1", "search_string": "running shoes",
                                        "description": "d" * 1000, "content_type": "product_group",
                                        "event_channel": "in_store", "num_items": 3})),
    offline("off-content-type-product", {"content_type": "product"},
            expect=purchase(properties={"content_type": "product"})),
    offline("off-content-type-invalid", {"content_type": "sku"}, reason="invalid_field",
            detail="properties.content_type: 'sku' is not one of product, product_group"),
    offline("off-event-channel-invalid", {"channel": "fax"}, reason="invalid_field",
            detail="properties.event_channel: 'fax' is not one of"),
    offline("off-num-items-negative", {"num_items": -1}, reason="invalid_value",
            detail="properties.num_items: -1 is negative"),
    offline("off-num-items-fraction", {"num_items": Decimal("2.5")}, reason="invalid_value",
            detail="properties.num_items: 2.5 is not a whole number"),
    # event names: standard, legacy, built-in generic names, the mapping's events:, custom
    offline("off-standard-name", {"event_name": "ApplicationApproval"}, expect=ev("ApplicationApproval",
                                                                                  user={"email": BUYER})),
    *[offline(f"off-legacy-{name}", {"event_name": name}, expect=ev(name, user={"email": BUYER}))
      for name in LEGACY_NAMES],
    *[offline(f"off-generic-{raw}", {"event_name": raw}, expect=ev(name, user={"email": BUYER}))
      for raw, name in GENERIC_NAMES.items() if raw != "purchase"],
    offline("off-generic-upper-case", {"event_name": " PURCHASE "}, expect=purchase()),
    offline("off-events-override", {"event_name": "order_placed"}, events={"order_placed": "Purchase"},
            expect=purchase()),
    offline("off-events-override-wins", {"event_name": "purchase"}, events={"purchase": "CompletePayment"},
            expect=ev("CompletePayment", user={"email": BUYER})),
    offline("off-events-override-to-custom", {"event_name": "refund"}, events={"refund": "Refund"},
            reason="unknown_event", detail="event: 'Refund' is not a TikTok offline event name"),
    offline("off-custom-event", {"event_name": "dance_party"}, reason="unknown_event",
            detail="event: 'dance_party' is not a TikTok offline event name"),
    offline("off-event-name-case-sensitive", {"event_name": "viewcontent"}, reason="unknown_event",
            detail="'viewcontent'"),
    offline("off-missing-event", {"event_name": "   "}, reason="missing_event", detail="event: empty"),
    # event_id, event_time, cursor, attribution window, event source id
    offline("off-missing-event-id", {"order_id": None}, reason="missing_event_id", detail="event_id: empty"),
    offline("off-blank-event-id", {"order_id": "   "}, reason="missing_event_id", detail="event_id: empty"),
    offline("off-event-id-too-long", {"order_id": "X" * 257}, reason="invalid_event_id",
            detail="event_id: 257 characters, longer than the 256 an id may have"),
    offline("off-event-id-nan", {"order_id": float("nan")}, types={"order_id": "double"}, reason="invalid_event_id",
            detail="event_id: nan is not an id"),
    offline("off-event-id-list", {"order_id": ["o0", "p"]}, types={"order_id": "varchar[]"},
            reason="invalid_event_id", detail="event_id: a list is not a single value"),
    offline("off-event-id-number", {"order_id": 9007199254740993, "shop": 7},
            expect=purchase(event_id="9007199254740993", properties={"shop_id": "7"})),
    offline("off-missing-event-time", {"ordered_at": None}, reason="missing_event_time", detail="event_time: empty"),
    offline("off-null-cursor", {"updated_at": None}, reason="null_cursor", detail="cursor column is NULL"),
    offline("off-event-time-aware-non-utc",
            {"ordered_at": dt.datetime(2024, 5, 31, 14, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))},
            expect=purchase()),
    offline("off-window-oldest-kept", {"ordered_at": NOW - dt.timedelta(days=28)},
            expect=purchase(time=1714824000)),
    offline("off-too-old", {"ordered_at": NOW - dt.timedelta(days=28, seconds=1)}, reason="event_too_old",
            detail="event_time 2024-05-04T11:59:59Z is before the attribution window, which starts "
                   "2024-05-04T12:00:00Z"),
    offline("off-future-tolerance-kept", {"ordered_at": NOW + dt.timedelta(seconds=300)},
            expect=purchase(time=1717243500)),
    offline("off-future", {"ordered_at": NOW + dt.timedelta(seconds=301)}, reason="event_in_future",
            detail="event_time 2024-06-01T12:05:01Z is in the future"),
    offline("off-missing-event-source-id", source_id=None, reason="missing_event_source_id",
            detail="event_source_id: empty"),
    offline("off-event-source-id-column", {"set_id": 7000000000000000001}, fields=OFFLINE_SOURCE_COLUMN,
            envelope_id="7000000000000000001", expect=purchase()),
    offline("off-event-source-id-column-null", {"set_id": None}, fields=OFFLINE_SOURCE_COLUMN, expect=purchase()),
    # fields offline events cannot use: not sent, and the run says so once
    offline("off-not-applicable-fields", {"x_user_external_id": "user_123", "x_user_ttclid": "E.C.P.abc",
                                          "x_user_ttp": "ttp-1", "x_user_ip": "203.0.113.7", "x_user_user_agent": UA,
                                          "x_user_locale": "en-US", "x_user_idfv": IDFV,
                                          "x_page_url": URL, "x_limited_data_use": True,
                                          "x_properties_customer_type": "new", "x_app_app_id": "1",
                                          "x_lead_lead_id": "L-1"},
            fields=OFFLINE_EXTRA, not_sent=OFFLINE_NOT_SENT, expect=purchase()),
    # multi-item events (a): one row per item, grouped by event_id, items in query row order
    offline("off-items-rows", rows=ITEM_ROWS, fields=OFFLINE_ITEMS,
            expect=purchase(properties={"value": 25.48, "currency": "USD", "content_type": "product",
                                        "contents": ITEM_CONTENTS, "content_ids": ["SKU-B", "SKU-A", "SKU-C"],
                                        "num_items": 4})),
    offline("off-items-missing-quantity", rows=[{"sku": "S-1", "unit_price": Decimal("3.00"), "qty": 2},
                                                {"sku": "S-2", "unit_price": Decimal("1.25"), "qty": None}],
            fields=OFFLINE_ITEMS,  # num_items is derived only when every item has a quantity
            expect=purchase(properties={"content_type": "product", "content_ids": ["S-1", "S-2"],
                                        "contents": [{"content_id": "S-1", "price": 3, "quantity": 2},
                                                     {"content_id": "S-2", "price": 1.25}]})),
    offline("off-items-numeric-sku", rows=[{"sku": 123456, "qty": 1}, {"sku": 98765, "qty": 3}], fields=OFFLINE_ITEMS,
            expect=purchase(properties={"content_type": "product", "content_ids": ["123456", "98765"],
                                        "contents": [{"content_id": "123456", "quantity": 1},
                                                     {"content_id": "98765", "quantity": 3}],
                                        "num_items": 4})),
    offline("off-items-given-ids-and-count", rows=[{"sku": "S-9", "qty": 1, "given_ids": "G-1, G-2",
                                                    "given_count": 10}], fields=OFFLINE_ITEMS_GIVEN,
            expect=purchase(properties={"content_type": "product_group", "content_ids": ["G-1", "G-2"],
                                        "num_items": 10, "contents": [{"content_id": "S-9", "quantity": 1}]})),
    offline("off-items-negative-price", rows=[{"sku": "S-1", "unit_price": Decimal("2.00"), "qty": 1},
                                              {"sku": "S-2", "unit_price": Decimal("-1.00"), "qty": 1}],
            fields=OFFLINE_ITEMS, reason="invalid_value", detail="properties.contents[].price: -1 is negative"),
    # multi-item events (b): a JSON / ARRAY column of items
    offline("off-items-json-text",
            {"items": '[{"content_id": 1, "content_name": "Tee", "price": "9.50", "quantity": 2, "color": "red"},'
                      ' {"content_id": "B-2", "price": 5, "quantity": 1}]', "given_ids": ["1", "B-2"],
             "given_count": 3}, fields=OFFLINE_JSON_GIVEN,
            expect=purchase(properties={"content_type": "product",  # the default: items, none mapped
                                        "contents": [{"content_id": "1", "content_name": "Tee", "price": 9.5,
                                                      "quantity": 2},
                                                     {"content_id": "B-2", "price": 5, "quantity": 1}],
                                        "content_ids": ["1", "B-2"], "num_items": 3})),
    offline("off-items-json-derived",
            {"items": '[{"content_id": "A", "quantity": 2}, {"content_id": "B", "quantity": 1}]'},
            fields=OFFLINE_JSON,
            expect=purchase(properties={"content_type": "product",
                                        "contents": [{"content_id": "A", "quantity": 2},
                                                     {"content_id": "B", "quantity": 1}],
                                        "content_ids": ["A", "B"], "num_items": 3})),
    offline("off-items-array-column",
            {"items": [{"content_id": "A", "price": 1.5, "quantity": 1}, {"content_id": "B", "price": 2.0,
                                                                         "quantity": 3}],
             "given_ids": ["A", "B"], "given_count": 4},
            fields=OFFLINE_JSON_GIVEN, types={"items": "struct(content_id varchar, price double, quantity integer)[]"},
            expect=purchase(properties={"content_type": "product",
                                        "contents": [{"content_id": "A", "price": 1.5, "quantity": 1},
                                                     {"content_id": "B", "price": 2, "quantity": 3}],
                                        "content_ids": ["A", "B"], "num_items": 4})),
    offline("off-items-json-not-a-list", {"items": '{"content_id": "A"}'}, fields=OFFLINE_JSON,
            reason="invalid_field", detail="properties.contents: not a list of items"),
    offline("off-items-json-item-not-object", {"items": '["A", "B"]'}, fields=OFFLINE_JSON,
            reason="invalid_field", detail="properties.contents: an item is not an object"),
    offline("off-items-json-malformed", {"items": '[{"content_id": "A",'}, fields=OFFLINE_JSON,
            reason="invalid_field", detail="properties.contents",
                ),
    offline("off-items-json-negative-quantity", {"items": '[{"content_id": "A", "quantity": -2}]'},
            fields=OFFLINE_JSON, reason="invalid_value", detail="properties.contents[].quantity: -2 is negative"),
]

# ---------------------------------------------------------------- web

LONG_URL = "https://shop.example.com/search?q=" + "a" * 3000
TTCLID_URL = "https://shop.example.com/landing?utm_source=tiktok&ttclid=E.C.P.fromurl&x=1"
WEB_CASES = [
    web("web-minimal", expect=page_view()),
    web("web-all-fields", {"event_name": "purchase", "referrer": "https://www.tiktok.com/", "ttclid": "E.C.P.v3abc",
                           "ttp": "2fQ-ttp_cookie", "ip": " 203.0.113.7 ", "user_agent": UA, "locale": "en-US",
                           "user_id": " user_123 ", "email": " ALICE_abc@gmail.com ", "phone": "(+1)2133734253",
                           "ldu": True, "customer_type": "Returning", "amount": Decimal("42.00"),
                           "currency": "usd"},
        test_event_code=TEST_EVENT_CODE,
        expect=ev("Purchase", page={"url": URL, "referrer": "https://www.tiktok.com/"},
                  user={"ttclid": "E.C.P.v3abc", "ttp": "2fQ-ttp_cookie", "ip": "203.0.113.7", "user_agent": UA,
                        "locale": "en-US", "external_id": EXT_DOC, "email": ALICE, "phone": PHONE_DOC},
                  limited_data_use=True, properties={"customer_type": "returning", "value": 42, "currency": "USD"})),
    web("web-ttclid-from-url", {"url": TTCLID_URL},
        expect=ev("ViewContent", page={"url": TTCLID_URL}, user={"ttclid": "E.C.P.fromurl"})),
    web("web-ttclid-column-wins", {"url": "https://shop.example.com/?ttclid=E.C.P.url", "ttclid": "E.C.P.column"},
        expect=ev("ViewContent", page={"url": "https://shop.example.com/?ttclid=E.C.P.url"},
                  user={"ttclid": "E.C.P.column"})),
    web("web-external-id-case-kept", {"user_id": "User_ABC"}, expect=page_view(user={"external_id": sha("User_ABC")})),
    web("web-external-id-doc", {"user_id": "user_123"}, expect=page_view(user={"external_id": EXT_DOC})),
    web("web-external-ids-comma", {"user_id": "u-1, u-2,u-1"},
        expect=page_view(user={"external_id": [sha("u-1"), sha("u-2")]})),
    web("web-external-id-prehashed", {"user_id": EXT_DOC.upper()}, expect=page_view(user={"external_id": EXT_DOC})),
    web("web-custom-event", {"event_name": "wishlist_shared"}, expect=ev("wishlist_shared", page={"url": URL})),
    web("web-custom-event-case-kept", {"event_name": "Newsletter_Signup"},
        expect=ev("Newsletter_Signup", page={"url": URL})),
    web("web-generic-begin-checkout", {"event_name": "begin_checkout"},
        expect=ev("InitiateCheckout", page={"url": URL})),
    web("web-legacy-complete-payment", {"event_name": "CompletePayment", "amount": Decimal("0"), "currency": "GBP"},
        expect=ev("CompletePayment", page={"url": URL}, properties={"value": 0, "currency": "GBP"})),
    # page.url is recommended, not required (README): without one the event is sent with an empty page object
    web("web-missing-url", {"url": None}, expect=ev("ViewContent", page={})),
    web("web-blank-url", {"url": "   "}, expect=ev("ViewContent", page={})),
    web("web-referrer-without-url", {"url": None, "referrer": "https://www.tiktok.com/"},
        expect=ev("ViewContent", page={"referrer": "https://www.tiktok.com/"})),
    web("web-long-url-cut", {"url": LONG_URL, "referrer": LONG_URL},
        expect=ev("ViewContent", page={"url": LONG_URL[:2048], "referrer": LONG_URL[:2048]})),
    web("web-long-text-cut", {"user_agent": "Mozilla/5.0 " + "x" * 1500},
        expect=page_view(user={"user_agent": ("Mozilla/5.0 " + "x" * 1500)[:1000]})),
    web("web-ldu-text", {"ldu": "no"}, expect=page_view(limited_data_use=False)),
    web("web-ldu-invalid", {"ldu": "maybe"}, reason="invalid_field",
        detail="limited_data_use: 'maybe' is not true/false"),
    web("web-customer-type-invalid", {"customer_type": "vip"}, reason="invalid_field",
        detail="properties.customer_type: 'vip' is not one of new, returning"),
    web("web-currency-invalid", {"amount": Decimal("5"), "currency": "XYZ"}, reason="invalid_currency",
        detail="properties.currency: 'XYZ' is not a TikTok currency"),
    web("web-not-applicable-fields", {"x_app_app_id": "1", "x_user_idfa": IDFA, "x_user_gaid": GAID,
                                      "x_user_att_status": "AUTHORIZED", "x_lead_lead_id": "L-1",
                                      "x_lead_lead_event_source": "Salesforce",
                                      "x_properties_event_channel": "website"},
        fields=WEB_EXTRA, not_sent=WEB_NOT_SENT, expect=page_view()),
    # event_time as warehouses hand it over
    web("web-time-naive-utc", {"happened_at": dt.datetime(2024, 5, 31, 12, 0, 0)}, expect=page_view()),
    web("web-time-seconds", {"happened_at": 1717156800}, expect=page_view()),
    web("web-time-milliseconds", {"happened_at": 1717156800123}, expect=page_view()),
    web("web-time-iso-z", {"happened_at": "2024-05-31T12:00:00Z"}, expect=page_view()),
    web("web-time-iso-offset", {"happened_at": "2024-05-31T14:00:00+02:00"}, expect=page_view()),
    web("web-time-invalid", {"happened_at": "yesterday"}, reason="invalid_event_time",
        detail="event_time: 'yesterday' is not a time"),
    web("web-time-date", {"happened_at": dt.date(2024, 5, 31)}, expect=page_view(time=1717113600)),
]

# ---------------------------------------------------------------- app

APP_CASES = [
    app("app-minimal", expect=install()),
    app("app-ios", {"idfa": f" {IDFA.lower()} ", "idfv": IDFV.lower(), "att": "authorized", "app_name": "Shop",
                    "app_version": "3.2.1", "ip": "198.51.100.4", "user_agent": UA, "locale": "fr-FR",
                    "email": " ALICE_abc@gmail.com ", "ldu": False, "customer_type": "new"},
        expect=ev("InstallApp", app={"app_id": "1234567890", "app_name": "Shop", "app_version": "3.2.1"},
                  user={"idfa": IDFA, "idfv": IDFV, "att_status": "AUTHORIZED", "ip": "198.51.100.4",
                        "user_agent": UA, "locale": "fr-FR", "email": ALICE},
                  limited_data_use=False, properties={"customer_type": "new"})),
    app("app-android-gaid", {"gaid": f" {GAID.upper()} ", "phone": "+1 213 373 4253"},
        expect=install(user={"gaid": GAID, "phone": PHONE_DOC})),
    app("app-zero-idfa-dropped", {"idfa": ZERO_ID, "att": "DENIED"}, expect=install(user={"att_status": "DENIED"})),
    app("app-zero-gaid-dropped", {"gaid": ZERO_ID}, expect=install()),
    app("app-idfa-prehashed", {"idfa": sha(IDFA.lower()).upper()}, expect=install(user={"idfa": sha(IDFA.lower())})),
    app("app-att-invalid", {"att": "MAYBE"}, reason="invalid_field", detail="user.att_status: 'MAYBE' is not one of"),
    app("app-missing-app-id", {"app_id": None}, reason="missing_required_field",
        detail="app.app_id: required for app events"),
    app("app-app-id-number", {"app_id": 1234567890}, expect=install()),
    app("app-ad-fields", {"event_name": "purchase", "amount": Decimal("9.99"), "currency": "USD", "callback": "cb-123",
                          "campaign_id": 1800000000000001, "ad_id": "1800000000000002",
                          "creative_id": 1800000000000003, "is_retargeting": "true", "attributed": True,
                          "attribution_type": "click", "attribution_provider": "AppsFlyer",
                          "attribution_share": Decimal("0.5")},
        fields=APP_AD_FIELDS,
        expect=ev("Purchase", app={"app_id": "1234567890"}, properties={"value": 9.99, "currency": "USD"},
                  ad={"callback": "cb-123", "campaign_id": "1800000000000001", "ad_id": "1800000000000002",
                      "creative_id": "1800000000000003", "is_retargeting": True, "attributed": True,
                      "attribution_type": "click", "attribution_provider": "AppsFlyer", "attribution_share": 0.5})),
    *[app(f"app-event-{name}", {"event_name": name}, expect=ev(name, app={"app_id": "1234567890"}))
      for name in ("LaunchAPP", "Checkout", "InAppADClick", "GenerateLead")],
    app("app-event-Registration", {"event_name": "Registration"},
        expect=ev("Registration", app={"app_id": "1234567890"}),
            ),
    app("app-generic-add-to-cart", {"event_name": "add_to_cart"}, expect=ev("AddToCart", app={"app_id": "1234567890"})),
    app("app-custom-event", {"event_name": "level_7"}, reason="unknown_event",
        detail="event: 'level_7' is not a TikTok app event name"),
    app("app-web-only-event", {"event_name": "Lead"}, reason="unknown_event",
        detail="event: 'Lead' is not a TikTok app event name"),
    app("app-not-applicable-fields", {"x_page_url": URL, "x_page_referrer": URL, "x_user_ttclid": "E.C.P.abc",
                                      "x_user_ttp": "ttp-1", "x_lead_lead_id": "L-1",
                                      "x_properties_event_channel": "other"},
        fields=APP_EXTRA, not_sent=APP_NOT_SENT, expect=install()),
]

# ---------------------------------------------------------------- crm

CRM_CASES = [
    crm("crm-minimal", expect=lead("crm-minimal")),
    crm("crm-all-fields", {"event_name": "generate_lead", "lead_source": "Salesforce", "email": " ALICE_abc@gmail.com ",
                           "phone": "(+1)2133734253", "user_id": "user_123", "channel": "crm",
                           "amount": Decimal("1500.50"), "currency": "EUR"},
        expect=lead("crm-all-fields", lead={"lead_id": "L-crm-all-fields", "lead_event_source": "Salesforce"},
                    user={"email": ALICE, "phone": PHONE_DOC, "external_id": EXT_DOC},
                    properties={"event_channel": "crm", "value": 1500.5, "currency": "EUR"})),
    crm("crm-lead-id-number", {"lead_id": 9876543210123},
        expect=lead("crm-lead-id-number", lead={"lead_id": "9876543210123"})),
    crm("crm-missing-lead-id", {"lead_id": None}, reason="missing_required_field",
        detail="lead.lead_id: required for crm events"),
    crm("crm-blank-lead-id", {"lead_id": "  "}, reason="missing_required_field",
        detail="lead.lead_id: required for crm events"),
    crm("crm-legacy-submit-form", {"event_name": "SubmitForm"}, expect=lead("crm-legacy-submit-form", "SubmitForm")),
    *[crm(f"crm-generic-{raw}", {"event_name": raw}, expect=lead(f"crm-generic-{raw}", name))
      for raw, name in (("schedule", "Schedule"), ("contact", "Contact"), ("sign_up", "CompleteRegistration"))],
    crm("crm-events-override", {"event_name": "SQL"}, events={"MQL": "Lead", "SQL": "SubmitApplication"},
        expect=lead("crm-events-override", "SubmitApplication")),
    crm("crm-custom-event", {"event_name": "qualified"}, reason="unknown_event",
        detail="event: 'qualified' is not a TikTok crm event name"),
    crm("crm-channel-invalid", {"channel": "fax"}, reason="invalid_field",
        detail="properties.event_channel: 'fax' is not one of"),
    crm("crm-not-applicable-fields", {"x_page_url": URL, "x_user_ttclid": "E.C.P.abc", "x_user_ip": "203.0.113.7",
                                      "x_user_user_agent": UA, "x_user_idfa": IDFA, "x_app_app_id": "1",
                                      "x_limited_data_use": True, "x_properties_customer_type": "new",
                                      "x_ad_callback": "cb"},
        fields=CRM_EXTRA, not_sent=CRM_NOT_SENT, expect=lead("crm-not-applicable-fields")),
]


CASES: list[Case] = OFFLINE_CASES + WEB_CASES + APP_CASES + CRM_CASES
BY_ID = {c.id: c for c in CASES}
