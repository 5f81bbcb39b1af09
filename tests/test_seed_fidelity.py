"""Seed fidelity (issue 19): the Amperity preset's web columns, event names per event source, content_type.

Through the real CLI (`cli`) and the fake TikTok server; the value-level rules also with generated values
through `EventBuilder`. The expectations come from the documents the README's Mappings section cites, not
from the connector.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli_helpers import cli, json_lines
from conftest import NOW, TestProject
from connector.events import Event, EventBuilder
from connector.mapping import FieldSpec, Mapping, compile_mapping, load_mapping
from connector.testing.fake_tiktok import FakeTikTok
from connector.tiktok_spec import APP_EVENTS, GENERIC_APP_EVENT_NAMES, GENERIC_EVENT_NAMES
from connector.timeutil import attribution_window

PIXEL = "CPIXEL0123456789ABCD"
OFFLINE_SET = "7000000000000000001"
APP_ID = "7312345678901234567"
CRM_SET = "7111111111111111111"
WEB_KEYS = {"user_agent", "ip", "ttp", "ttclid"}
UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Safari/605.1.15"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def add_sync(project: TestProject, name: str, **sync: Any) -> None:
    """A second sync in the project's connector.yml (same query file unless given)."""
    path = project.root / "connector.yml"
    config = yaml.safe_load(path.read_text())
    config["syncs"][name] = {"query": "orders.sql", **sync}
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def accepted_by_source(fake: FakeTikTok) -> dict[str, dict[str, dict[str, Any]]]:
    """event_source → event_id → the event as TikTok received it."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for accepted in fake.accepted():
        out.setdefault(accepted.event_source, {})[accepted.event["event_id"]] = accepted.event
    return out


# ---------------------------------------------------------------- 1. the Amperity preset's web columns

AMPERITY_WEB_DDL = ["""create table amperity_events (
    email varchar, phone varchar, event varchar, event_id varchar, event_set_id varchar, "timestamp" timestamptz,
    value decimal(12, 2), currency varchar, order_id varchar, content_id varchar, price decimal(10, 2),
    quantity integer, content_type varchar, event_channel varchar,
    agent varchar, ip varchar, cookie_id varchar, tiktok_click_id varchar)"""]


def amperity_web_row(event_id: str, now: dt.datetime, minutes: int, **kw: Any) -> dict[str, Any]:
    row = {"email": f"{event_id}@Example.com", "phone": "+1 213 373 4253", "event": "purchase",
           "event_id": event_id, "event_set_id": None, "timestamp": now - dt.timedelta(minutes=minutes),
           "value": "30.50", "currency": "usd", "order_id": f"O-{event_id}", "content_id": f"C-{event_id}",
           "price": "30.50", "quantity": 1, "content_type": None, "event_channel": "website",
           "agent": f" {UA} ", "ip": "203.0.113.7", "cookie_id": f"ttp-{event_id}",
           "tiktok_click_id": f"E.C.P.{event_id}"}
    row.update(kw)
    return row


@pytest.fixture
def amperity_web(make_project, now) -> TestProject:
    """Amperity-style web rows (no page URL column) with the built-in mapping: a web sync and an offline one."""
    rows = [amperity_web_row("W1", now, 90), amperity_web_row("W2", now, 80, agent=None, ip="  ",
                                                               event_channel=None)]
    project = make_project(mapping=None, ddl=AMPERITY_WEB_DDL, tables={"amperity_events": rows},
                           query="select * from amperity_events\n",
                           sync_overrides={"event_source": "web", "event_source_id": PIXEL, "cursor": "timestamp"})
    add_sync(project, "orders_offline", event_source="offline", event_source_id=OFFLINE_SET, cursor="timestamp")
    return project


def test_builtin_mapping_names_amperity_web_columns_for_web_and_app_only() -> None:
    mapping = load_mapping(None, Path("/nonexistent"))
    columns = {spec.path: spec.column for spec in mapping.fields}
    assert {path: columns[path] for path in ("user.user_agent", "user.ip", "user.ttp", "user.ttclid")} == {
        "user.user_agent": "agent", "user.ip": "ip", "user.ttp": "cookie_id", "user.ttclid": "tiktok_click_id"}
    all_columns = [c for c in columns.values() if c]
    compiled = {source: compile_mapping(mapping, all_columns, source) for source in ("web", "app", "offline", "crm")}
    sent = {source: {s.path for s in c.slots} for source, c in compiled.items()}
    web_app, web_only = {"user.user_agent", "user.ip"}, {"user.ttp", "user.ttclid"}
    assert web_app | web_only <= sent["web"]
    assert web_app <= sent["app"] and not web_only & sent["app"]
    for source in ("offline", "crm"):
        assert not (web_app | web_only) & sent[source]
        assert (web_app | web_only) <= set(compiled[source].not_applicable)


def test_builtin_mapping_needs_no_note_for_web_columns_an_offline_query_lacks() -> None:
    mapping = load_mapping(None, Path("/nonexistent"))
    plain = ["email", "event", "event_id", "timestamp", "value", "currency"]
    assert compile_mapping(mapping, plain, "offline").not_applicable == ()
    assert compile_mapping(mapping, [*plain, "ip"], "offline").not_applicable == ("user.ip",)


def test_the_project_copy_of_the_amperity_mapping_is_the_builtin_one() -> None:
    repo = Path(__file__).resolve().parent.parent
    assert (repo / "mappings" / "amperity.yml").read_bytes() == \
        (repo / "connector" / "mappings" / "amperity.yml").read_bytes()


def test_preview_of_an_amperity_web_query_shows_the_web_match_keys(amperity_web, fake_tiktok, capsys) -> None:
    code, out, err = cli(capsys, "preview", "orders", "--json", "--project", str(amperity_web.root))
    assert code == 0, err
    [preview] = json_lines(out)
    assert preview["rejected_by_reason"] == {}  # no page.url column: nothing refused for it
    (body,) = preview["requests"]
    assert body["event_source"] == "web" and body["event_source_id"] == PIXEL
    events = {e["event_id"]: e for e in body["data"]}
    assert events["W1"]["user"] == {"email": sha("w1@example.com"), "phone": sha("+12133734253"),
                                    "user_agent": UA, "ip": "203.0.113.7", "ttp": "ttp-W1", "ttclid": "E.C.P.W1"}
    assert events["W1"]["page"] == {}
    assert events["W2"]["user"] == {"email": sha("w2@example.com"), "phone": sha("+12133734253"),
                                    "ttp": "ttp-W2", "ttclid": "E.C.P.W2"}  # empty agent and ip: left out
    assert "properties.event_channel" in " ".join(preview["notes"])  # offline/CRM only, and said so
    assert fake_tiktok.requests() == []


def test_sync_sends_the_web_keys_and_an_offline_sync_of_the_same_query_does_not(amperity_web, fake_tiktok,
                                                                                capsys) -> None:
    code, out, err = cli(capsys, "sync", "--project", str(amperity_web.root))
    assert code == 0, err + out
    sent = accepted_by_source(fake_tiktok)
    assert set(sent) == {"web", "offline"}
    web, offline = sent["web"], sent["offline"]
    assert set(web) == set(offline) == {"W1", "W2"}
    assert {k: web["W1"]["user"][k] for k in WEB_KEYS} == {
        "user_agent": UA, "ip": "203.0.113.7", "ttp": "ttp-W1", "ttclid": "E.C.P.W1"}
    assert web["W1"]["event"] == "Purchase" and web["W1"]["page"] == {}
    assert "event_channel" not in web["W1"]["properties"]
    for event in offline.values():
        assert set(event["user"]) == {"email", "phone"}  # offline match keys only
        assert "page" not in event
    assert offline["W1"]["properties"]["event_channel"] == "website"
    by_request = {r.body["event_source"]: r.body["event_source_id"] for r in fake_tiktok.requests()}
    assert by_request == {"web": PIXEL, "offline": OFFLINE_SET}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.fixed_dictionaries({key: st.one_of(st.none(), st.text(max_size=30))
                                     for key in ("agent", "ip", "cookie_id", "tiktok_click_id")}))
def test_amperity_web_columns_for_any_text(values: dict[str, str | None]) -> None:
    mapping = load_mapping(None, Path("/nonexistent"))
    columns = ["event", "event_id", "timestamp", "email", *values, "cursor"]
    row = ("purchase", "E-1", NOW - dt.timedelta(hours=1), "a@x.com", *values.values(), NOW)
    window = attribution_window(NOW, 28, 300)
    key_of = {"agent": "user_agent", "ip": "ip", "cookie_id": "ttp", "tiktok_click_id": "ttclid"}
    expected = {key_of[c]: v.strip() for c, v in values.items() if v is not None and v.strip()}
    for source, source_id in (("web", PIXEL), ("offline", OFFLINE_SET)):
        builder = EventBuilder(compile_mapping(mapping, columns, source), source, source_id, window,
                               columns.index("cursor"))
        event = builder.build([row])
        assert isinstance(event, Event)
        user = event.document()["user"]
        if source == "web":
            assert {k: v for k, v in user.items() if k in WEB_KEYS} == expected
        else:
            assert set(user) == {"email"}


# ---------------------------------------------------------------- 2. event names per event source

# Hand-written from Commanders Act's TikTok destination (doc.commandersact.com, Quick reference) and TikTok's
# app event list (tiktok-business-android-sdk EventName.java, tiktok-business-ios-sdk TikTokConstants.h).
COMMANDERS_ACT_APP = {"sign_up": "Registration", "begin_checkout": "Checkout", "login": "Login",
                      "achieve_level": "AchieveLevel", "add_to_cart": "AddToCart", "purchase": "Purchase",
                      "complete_tutorial": "CompleteTutorial", "create_group": "CreateGroup",
                      "launch_app": "LaunchAPP", "in_app_ad_impr": "InAppADImpr"}
COMMANDERS_ACT_WEB = {"sign_up": "CompleteRegistration", "begin_checkout": "InitiateCheckout",
                      "add_to_cart": "AddToCart", "add_payment_info": "AddPaymentInfo",
                      "application_approval": "ApplicationApproval", "purchase": "Purchase"}
# Names the app table must pass through as they are (both spellings of the ad impression event)…
APP_AS_IS = ("InAppAdImpr", "InAppADImpr", "LaunchAPP", "ImpressionLevelAdRevenue")
# …other spellings it translates, and web names it must still refuse on an app sync.
APP_EXTRA = {" SIGN_UP ": "Registration", "LaunchApp": "LaunchAPP", "InAppAdImpression": "InAppADImpr"}
APP_REFUSED = ("CompleteRegistration", "InitiateCheckout", "Lead")


def test_the_tables_agree_with_commanders_act_and_tiktok() -> None:
    assert {k: GENERIC_APP_EVENT_NAMES.get(k) for k in COMMANDERS_ACT_APP} == COMMANDERS_ACT_APP
    assert {k: GENERIC_EVENT_NAMES.get(k) for k in COMMANDERS_ACT_WEB} == COMMANDERS_ACT_WEB
    assert {"InAppAdImpr", "InAppADImpr"} <= APP_EVENTS
    assert set(GENERIC_APP_EVENT_NAMES.values()) <= APP_EVENTS


NAMES_DDL = ["create table named_events (event_key varchar, event_name varchar, happened_at timestamptz, "
             "email varchar, changed_at timestamptz)"]
NAME_FIELDS = {"event": "event_name", "event_id": "event_key", "event_time": "happened_at", "user.email": "email"}
SOURCE_SETUP: dict[str, tuple[str, dict[str, Any]]] = {
    "web": (PIXEL, {}),
    "offline": (OFFLINE_SET, {}),
    "crm": (CRM_SET, {"lead.lead_id": "event_key"}),
    "app": (APP_ID, {"app.app_id": {"value": "1234567890"}}),
}


def names_project(make_project: Callable[..., TestProject], now: dt.datetime, source: str,
                  raw_names: list[str]) -> TestProject:
    source_id, extra = SOURCE_SETUP[source]
    rows = [{"event_key": f"N{i:03d}", "event_name": raw, "happened_at": now - dt.timedelta(hours=2),
             "email": "a@x.com", "changed_at": now - dt.timedelta(hours=1, seconds=-i)}
            for i, raw in enumerate(raw_names)]
    return make_project(mapping={"fields": {**NAME_FIELDS, **extra}}, ddl=NAMES_DDL, tables={"named_events": rows},
                        query="select * from named_events\n",
                        sync_overrides={"event_source": source, "event_source_id": source_id,
                                        "cursor": "changed_at"})


@pytest.mark.parametrize("source", ["web", "offline", "crm", "app"])
def test_every_entry_of_the_source_table_reaches_the_wire(make_project, fake_tiktok, now, capsys,
                                                          source: str) -> None:
    table = GENERIC_APP_EVENT_NAMES if source == "app" else GENERIC_EVENT_NAMES
    expected = dict(table)
    if source == "app":
        expected |= {name: name for name in APP_AS_IS} | APP_EXTRA
    raw_names = list(expected)
    refused = list(APP_REFUSED) if source == "app" else []
    project = names_project(make_project, now, source, raw_names + refused)
    code, out, err = cli(capsys, "sync", "--project", str(project.root))
    assert code == 0, err + out
    received = accepted_by_source(fake_tiktok)[source]
    wire = {raw_names[int(event_id[1:])]: event["event"] for event_id, event in received.items()}
    assert wire == expected  # every generic name, with the name TikTok received for this source
    if source == "app":
        assert wire["sign_up"] == "Registration" and wire["InAppAdImpr"] == "InAppAdImpr"
        rejects = project.rejects()
        assert [(reason, event_id) for reason, event_id, _ in rejects] == [
            ("unknown_event", f"N{len(raw_names) + i:03d}") for i in range(len(refused))]
    else:
        assert project.rejects() == []


# ---------------------------------------------------------------- 3. content_type

CONTENT_DDL = ["create table item_rows (order_id varchar, ordered_at timestamptz, email varchar, sku varchar, "
               "qty integer, ct varchar, changed_at timestamptz)"]
ITEM_FIELDS = {"event": {"value": "Purchase"}, "event_id": "order_id", "event_time": "ordered_at",
               "user.email": "email", "properties.contents[].content_id": "sku",
               "properties.contents[].quantity": "qty"}


def test_content_type_default_and_overrides_on_the_wire(make_project, fake_tiktok, now, capsys) -> None:
    def row(order_id: str, sku: str | None, ct: str | None, second: int) -> dict[str, Any]:
        return {"order_id": order_id, "ordered_at": now - dt.timedelta(hours=3), "email": "a@x.com", "sku": sku,
                "qty": 1 if sku else None, "ct": ct, "changed_at": now - dt.timedelta(hours=1, seconds=-second)}

    rows = [row("ITEMS", "S-1", None, 1), row("ITEMS", "S-2", None, 1),   # items, nothing mapped: product
            row("GROUP", "G-1", "product_group", 2),                       # the mapped column wins
            row("NOITEMS", None, None, 3)]                                 # no items: no content_type
    project = make_project(mapping={"fields": {**ITEM_FIELDS, "properties.content_type": "ct"}},
                           ddl=CONTENT_DDL, tables={"item_rows": rows}, query="select * from item_rows\n",
                           sync_overrides={"cursor": "changed_at", "event_source_id": OFFLINE_SET})
    (project.root / "mappings" / "constant.yml").write_text(yaml.safe_dump(
        {"fields": {**ITEM_FIELDS, "properties.content_type": {"value": "product_group"}}}))
    (project.root / "mappings" / "unmapped.yml").write_text(yaml.safe_dump({"fields": ITEM_FIELDS}))
    add_sync(project, "constant", mapping="constant.yml", event_source="offline", event_source_id="7000000000000000002",
             cursor="changed_at")
    add_sync(project, "unmapped", mapping="unmapped.yml", event_source="offline", event_source_id="7000000000000000003",
             cursor="changed_at")

    code, out, err = cli(capsys, "sync", "--project", str(project.root))
    assert code == 0, err + out
    by_set: dict[str, dict[str, dict[str, Any]]] = {}
    for accepted in fake_tiktok.accepted():
        by_set.setdefault(accepted.event_source_id, {})[accepted.event["event_id"]] = accepted.event
    column, constant, unmapped = (by_set[s] for s in (OFFLINE_SET, "7000000000000000002", "7000000000000000003"))

    def content_type(events: dict[str, dict[str, Any]], event_id: str) -> str | None:
        return events[event_id].get("properties", {}).get("content_type")

    assert [content_type(column, e) for e in ("ITEMS", "GROUP", "NOITEMS")] == ["product", "product_group", None]
    assert [content_type(constant, e) for e in ("ITEMS", "GROUP", "NOITEMS")] == ["product_group"] * 3
    assert [content_type(unmapped, e) for e in ("ITEMS", "GROUP", "NOITEMS")] == ["product", "product", None]
    assert column["ITEMS"]["properties"]["content_ids"] == ["S-1", "S-2"]


@settings(max_examples=50, deadline=None)
@given(skus=st.lists(st.one_of(st.none(), st.text(min_size=1, max_size=8)), max_size=4),
       mapped=st.sampled_from(["unmapped", "column", "constant"]),
       value=st.sampled_from([None, "product", "product_group"]))
def test_content_type_rule_for_any_items(skus: list[str | None], mapped: str, value: str | None) -> None:
    fields = {"event": "event", "event_id": "order_id", "event_time": "at", "user.email": "email",
              "properties.contents[].content_id": "sku"}
    if mapped == "column":
        fields["properties.content_type"] = "ct"
    specs = [FieldSpec(path, column) for path, column in fields.items()]
    if mapped == "constant" and value is not None:
        specs.append(FieldSpec("properties.content_type", constant=value))
    columns = ["event", "order_id", "at", "email", "sku", "ct", "cursor"]
    compiled = compile_mapping(Mapping("m.yml", tuple(specs)), columns, "offline")
    builder = EventBuilder(compiled, "offline", OFFLINE_SET, attribution_window(NOW, 28, 300), columns.index("cursor"))
    rows = [("Purchase", "E-1", NOW - dt.timedelta(hours=1), "a@x.com", sku, value, NOW) for sku in skus or [None]]
    event = builder.build(rows)
    assert isinstance(event, Event)
    properties = event.document().get("properties", {})
    has_items = any(sku is not None and sku.strip() for sku in skus)
    assert ("contents" in properties) == has_items
    if mapped != "unmapped" and value is not None:
        assert properties["content_type"] == value  # a mapped constant or column value wins
    elif has_items:
        assert properties["content_type"] == "product"
    else:
        assert "content_type" not in properties
