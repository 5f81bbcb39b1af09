"""The fake TikTok Events API behaves as the contract in docs/tiktok-events-api.md says."""

from __future__ import annotations


import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from connector.testing.fake_tiktok import FakeTikTok
from connector.tiktok_spec import MAX_EVENTS_PER_REQUEST, TRACK_PATH

TOKEN = "test-token"
SOURCE_ID = "7654321098765432109"
NOW = 1_760_000_000  # what the fake clock says, in Unix seconds
HOUR = 3600
EMAIL = hashlib.sha256(b"alice@example.com").hexdigest()
PHONE = hashlib.sha256(b"+12133734253").hexdigest()
DELETE = object()  # marks a key to remove in a body mutation


class Clock:
    def __init__(self) -> None:
        self.now: float = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def server(clock: Clock) -> Iterator[FakeTikTok]:
    with FakeTikTok(clock=clock) as fake:
        yield fake


@pytest.fixture
def fake(server: FakeTikTok, clock: Clock) -> FakeTikTok:
    server.reset()
    clock.now = NOW
    return server


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def offline_event(i: int = 0, **fields: Any) -> dict[str, Any]:
    event = {
        "event": "Purchase", "event_time": NOW - HOUR, "event_id": f"o-{i}",
        "user": {"email": EMAIL, "phone": [PHONE]},
        "properties": {"currency": "USD", "value": 42.5, "order_id": f"o-{i}", "content_type": "product",
                       "contents": [{"content_id": "sku-1", "price": 42.5, "quantity": 1,
                                     "content_name": "Mug", "content_category": "home", "brand": "Acme"}]},
    }
    return event | fields


def batch(events: list[dict[str, Any]], source: str = "offline", **top: Any) -> dict[str, Any]:
    return {"event_source": source, "event_source_id": SOURCE_ID, "partner_name": "tests", "data": events} | top


def offline_batch(n: int = 4, **top: Any) -> dict[str, Any]:
    return batch([offline_event(i) for i in range(n)], **top)


def post(http: requests.Session, fake: FakeTikTok, body: Any, token: str | None = TOKEN,
         timeout: float = 5, **headers: str) -> requests.Response:
    if token is not None:
        headers["Access-Token"] = token
    kwargs: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
    return http.post(fake.base_url + TRACK_PATH, headers=headers, timeout=timeout, **kwargs)


def admin_url(fake: FakeTikTok, name: str) -> str:
    return fake.base_url.removesuffix("/open_api") + "/_fake/" + name


def mutate(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set (or with DELETE remove) the value at a dotted path such as data.3.user.email."""
    *parents, last = [int(k) if k.isdigit() else k for k in path.split(".")]

    def apply(body: dict[str, Any]) -> None:
        node: Any = body
        for key in parents:
            node = node[key]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return apply


def assert_rejected(response: requests.Response, code: int, message_part: str) -> None:
    assert response.status_code == 200  # TikTok: application errors travel as HTTP 200
    payload = response.json()
    assert payload["code"] == code, payload
    assert message_part in payload["message"], payload
    assert "data" not in payload and re.fullmatch(r"[0-9a-f]{32}", payload["request_id"])


# ------------------------------------------------------------------------ accepting

def test_valid_offline_batch_is_accepted_and_recorded(fake: FakeTikTok, http: requests.Session) -> None:
    r = post(http, fake, offline_batch(3))

    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    assert int(r.headers["Content-Length"]) == len(r.content)
    assert r.raw.version == 11
    payload = r.json()
    assert payload["code"] == 0 and payload["message"] == "OK" and payload["data"] == {}
    assert re.fullmatch(r"[0-9a-f]{32}", payload["request_id"])
    accepted = fake.accepted()
    assert [e.event["event_id"] for e in accepted] == ["o-0", "o-1", "o-2"] == fake.accepted_event_ids()
    assert {(e.event_source, e.event_source_id, e.test_event_code, e.request_index) for e in accepted} == {
        ("offline", SOURCE_ID, None, 0)}
    (req,) = fake.requests()
    assert (req.index, req.http_status, req.code, req.message, req.event_count) == (0, 200, 0, "OK", 3)
    assert req.body == offline_batch(3) and req.headers["Access-Token"] == "<redacted>"
    assert fake.stats == {"requests": 1, "accepted_events": 3, "test_events": 0, "rejected_requests": 0,
                         "throttled": 0, "server_errors": 0, "dropped": 0,
                         "duplicates_within_48h": 0, "duplicates_after_48h": 0}


def web_event(**fields: Any) -> dict[str, Any]:
    return {"event": "MyCustomEvent", "event_time": NOW, "event_id": "w-1", "page": {"url": "https://a.b/?x=1"},
            "user": {"ttclid": "E.C.P.abc", "ttp": "t", "ip": "1.2.3.4", "user_agent": "UA",
                     "external_id": [EMAIL]}} | fields


def app_event(**fields: Any) -> dict[str, Any]:
    return {"event": "InstallApp", "event_time": NOW, "app": {"app_id": "123"}, "user": {"idfa": "X"}} | fields


def crm_event(**fields: Any) -> dict[str, Any]:
    return {"event": "Lead", "event_time": NOW, "lead": {"lead_id": "L-1", "lead_event_source": "Salesforce"},
            "user": {"external_id": EMAIL}} | fields


@pytest.mark.parametrize("source, event", [
    ("web", web_event()),
    ("web", web_event(page={})),  # page.url is recommended, not required
    ("web", web_event(page={"referrer": "x"})),
    ("app", app_event()),
    ("app", app_event(event="InAppADImpr")),  # the iOS SDK's spelling
    ("app", app_event(event="InAppAdImpr")),  # the Android SDK's spelling
    ("app", app_event(event="ViewContent")),  # standard names work for apps too
    ("crm", crm_event()),
    ("offline", offline_event(event="CompletePayment")),  # legacy name, still accepted
    ("offline", offline_event(user={"phone": PHONE}, properties={"event_channel": "in_store", "foo": [1]})),
    ("offline", offline_event(properties={"value": 0, "num_items": 2, "content_ids": ["a", "b"],
                                          "shop_id": "s", "description": "d", "search_string": "q"})),
    ("offline", {"event": "Lead", "event_time": NOW + 3 * HOUR, "user": {"email": [EMAIL, PHONE]}}),
])
def test_valid_events_of_each_source_are_accepted(fake: FakeTikTok, http: requests.Session, source: str,
                                                  event: dict[str, Any]) -> None:
    r = post(http, fake, batch([event], source=source))
    assert r.json()["code"] == 0, r.json()
    assert [e.event for e in fake.accepted()] == [event]


def test_1000_events_are_accepted_and_1001_rejected(fake: FakeTikTok, http: requests.Session) -> None:
    assert post(http, fake, offline_batch(MAX_EVENTS_PER_REQUEST)).json()["code"] == 0
    assert_rejected(post(http, fake, offline_batch(MAX_EVENTS_PER_REQUEST + 1)), 40002,
                    "data: Length must be between 1 and 1000")
    assert fake.stats["accepted_events"] == 1000 and fake.stats["rejected_requests"] == 1


# ------------------------------------------------------------------------ validation, path by path

INVALID_OFFLINE = [
    ("event_source", "pixel", "event_source: Must be one of"),
    ("event_source", DELETE, "event_source: Missing data for required field"),
    ("event_source_id", int(SOURCE_ID), "event_source_id: Not a valid string"),
    ("event_source_id", "", "event_source_id: Not a valid string"),
    ("event_source_id", DELETE, "event_source_id: Missing data"),
    ("test_event_code", 123, "test_event_code: Not a valid string"),
    ("partner_name", None, "partner_name: Not a valid string"),
    ("data", {"0": {}}, "data: Not a valid list"),
    ("data", [], "data: Length must be between 1 and 1000"),
    ("data", DELETE, "data: Missing data"),
    ("data.3", "Purchase", "data.3: Not a valid object"),
    ("data.3.event", DELETE, "data.3.event: Missing data for required field"),
    ("data.3.event", "", "data.3.event: Not a valid string"),
    ("data.3.event", "MyCustomEvent", "data.3.event: 'MyCustomEvent' is not a supported offline event"),
    ("data.3.event", "purchase", "data.3.event: 'purchase' is not a supported"),  # case-sensitive
    ("data.3.event", "InstallApp", "data.3.event: 'InstallApp' is not a supported offline event"),
    ("data.3.event_time", DELETE, "data.3.event_time: Missing data for required field"),
    ("data.3.event_time", str(NOW), "data.3.event_time: Not a valid integer"),
    ("data.3.event_time", float(NOW), "data.3.event_time: Not a valid integer"),
    ("data.3.event_time", True, "data.3.event_time: Not a valid integer"),
    ("data.3.event_time", NOW * 1000, "data.3.event_time: must be Unix seconds"),
    ("data.3.event_time", 1_400_000_000, "data.3.event_time: must be Unix seconds"),
    ("data.3.event_time", NOW + 25 * HOUR, "data.3.event_time: must be Unix seconds"),
    ("data.3.event_id", 3, "data.3.event_id: Not a valid string"),
    ("data.3.event_id", None, "data.3.event_id: Not a valid string"),
    ("data.3.user", DELETE, "data.3.user: offline events need email or phone"),
    ("data.3.user", {}, "data.3.user: offline events need email or phone"),
    ("data.3.user", [EMAIL], "data.3.user: Not a valid object"),
    ("data.3.user", {"locale": "en-US"}, "data.3.user.locale: not supported for offline events"),
    ("data.3.user.email", "alice@example.com", "data.3.user.email: must be a SHA-256 hex digest"),
    ("data.3.user.email", EMAIL.upper(), "data.3.user.email: must be a SHA-256 hex digest"),
    ("data.3.user.email", EMAIL[:63], "data.3.user.email: must be a SHA-256 hex digest"),
    ("data.3.user.email", "", "data.3.user.email: must be a SHA-256 hex digest"),
    ("data.3.user.phone", [PHONE, "+12133734253"], "data.3.user.phone: must be a SHA-256 hex digest"),
    ("data.3.user.phone", [], "data.3.user.phone: must be a SHA-256 hex digest"),
    ("data.3.user.phone", 12133734253, "data.3.user.phone: must be a SHA-256 hex digest"),
    *[(f"data.3.user.{key}", value, f"data.3.user.{key}: not supported for offline events")
      for key, value in [("ttclid", "E.C.P.x"), ("ttp", "t"), ("ip", "1.2.3.4"), ("user_agent", "UA"),
                         ("external_id", EMAIL), ("idfa", "X"), ("gaid", "g")]],
    ("data.3.properties", [], "data.3.properties: Not a valid object"),
    ("data.3.properties", None, "data.3.properties: Not a valid object"),
    ("data.3.properties.currency", "usd", "data.3.properties.currency: Not a valid choice"),
    ("data.3.properties.currency", "XXX", "data.3.properties.currency: Not a valid choice"),
    ("data.3.properties.value", "42.50", "data.3.properties.value: Not a valid number"),
    ("data.3.properties.value", True, "data.3.properties.value: Not a valid number"),
    ("data.3.properties.value", None, "data.3.properties.value: Not a valid number"),
    ("data.3.properties.value", -1, "data.3.properties.value: must be >= 0"),
    ("data.3.properties.contents", {"content_id": "a"}, "data.3.properties.contents: Not a valid list"),
    ("data.3.properties.contents.0", "sku-1", "data.3.properties.contents.0: Not a valid object"),
    ("data.3.properties.contents.0.content_id", 1, "data.3.properties.contents.0.content_id: Not a valid string"),
    ("data.3.properties.contents.0.price", "9.99", "data.3.properties.contents.0.price: Not a valid number"),
    ("data.3.properties.contents.0.quantity", 1.5, "data.3.properties.contents.0.quantity: Not a valid integer"),
    ("data.3.properties.contents.0.quantity", True, "contents.0.quantity: Not a valid integer"),
    ("data.3.properties.contents.0.content_name", 7, "contents.0.content_name: Not a valid string"),
    ("data.3.properties.contents.0.content_category", 7, "contents.0.content_category: Not a valid string"),
    ("data.3.properties.contents.0.brand", ["Acme"], "contents.0.brand: Not a valid string"),
    ("data.3.properties.content_ids", "sku-1", "data.3.properties.content_ids: Not a valid list"),
    ("data.3.properties.content_ids", ["a", 2], "data.3.properties.content_ids: Not a valid list of strings"),
    ("data.3.properties.content_type", "sku", "data.3.properties.content_type: Not a valid choice"),
    ("data.3.properties.num_items", "2", "data.3.properties.num_items: Not a valid integer"),
    ("data.3.properties.order_id", 1234, "data.3.properties.order_id: Not a valid string"),
    ("data.3.properties.shop_id", 1, "data.3.properties.shop_id: Not a valid string"),
    ("data.3.properties.description", 1, "data.3.properties.description: Not a valid string"),
    ("data.3.properties.search_string", 1, "data.3.properties.search_string: Not a valid string"),
    ("data.3.properties.event_channel", "fax", "data.3.properties.event_channel: Not a valid choice"),
]


@pytest.mark.parametrize("path, value, message", INVALID_OFFLINE,
                         ids=[f"{p}={v!r:.20}" for p, v, _ in INVALID_OFFLINE])
def test_invalid_offline_body_fails_whole_with_40002(fake: FakeTikTok, http: requests.Session, path: str,
                                                     value: Any, message: str) -> None:
    body = offline_batch(5)
    mutate(path, value)(body)
    assert_rejected(post(http, fake, body), 40002, message)
    assert fake.accepted() == [] and fake.stats["rejected_requests"] == 1


def test_a_bad_item_after_good_ones_is_named_by_its_position(fake: FakeTikTok, http: requests.Session) -> None:
    body = offline_batch(5)
    item = body["data"][3]["properties"]["contents"][0]
    body["data"][3]["properties"]["contents"] = [item, dict(item), item | {"price": "9.99"}]
    assert_rejected(post(http, fake, body), 40002, "data.3.properties.contents.2.price: Not a valid number")
    body["data"][3]["properties"]["contents"][2] = ["sku-1"]
    assert_rejected(post(http, fake, body), 40002, "data.3.properties.contents.2: Not a valid object")
    assert fake.accepted() == []


INVALID_OTHER_SOURCES = [
    ("web", web_event(page=DELETE), "data.0.page: Missing data for required field"),
    ("web", web_event(page={"url": 1}), "data.0.page.url: Not a valid string"),
    ("web", web_event(page="https://a.b"), "data.0.page: Not a valid object"),
    ("web", web_event(event=""), "data.0.event: Not a valid string"),
    ("web", web_event(user={"external_id": "user_123"}), "data.0.user.external_id: must be a SHA-256 hex"),
    ("app", app_event(app=DELETE), "data.0.app: Missing data for required field"),
    ("app", app_event(app={"app_id": 123}), "data.0.app.app_id: Not a valid string"),
    ("app", app_event(event="MyCustomEvent"), "data.0.event: 'MyCustomEvent' is not a supported app event"),
    ("crm", crm_event(lead={"lead_event_source": "Salesforce"}), "data.0.lead.lead_id: Missing data"),
    ("crm", crm_event(event="InstallApp"), "data.0.event: 'InstallApp' is not a supported crm event"),
]


@pytest.mark.parametrize("source, event, message", INVALID_OTHER_SOURCES,
                         ids=[m.split(":")[0] + "-" + s for s, _, m in INVALID_OTHER_SOURCES])
def test_invalid_web_app_crm_events_are_rejected(fake: FakeTikTok, http: requests.Session, source: str,
                                                 event: dict[str, Any], message: str) -> None:
    event = {k: v for k, v in event.items() if v is not DELETE}
    assert_rejected(post(http, fake, batch([event], source=source)), 40002, message)


@pytest.mark.parametrize("raw, message", [
    (b"{not json", "not a JSON object"),
    (b"[1, 2]", "not a JSON object"),
    (b"", "not a JSON object"),
])
def test_body_that_is_not_a_json_object_is_rejected(fake: FakeTikTok, http: requests.Session, raw: bytes,
                                                    message: str) -> None:
    assert_rejected(post(http, fake, raw), 40002, message)
    assert fake.requests()[0].body is None


def test_unknown_event_source_id_gets_40001_when_ids_are_known(http: requests.Session) -> None:
    with FakeTikTok(known_event_source_ids={"111"}, clock=lambda: NOW) as fake:
        assert_rejected(post(http, fake, offline_batch(1)), 40001, "No permission to access event source id")
        assert post(http, fake, offline_batch(1, event_source_id="111")).json()["code"] == 0


# ------------------------------------------------------------------------ auth, paths, methods

@pytest.mark.parametrize("token, headers, code, message", [
    (None, {}, 40104, "Access token is empty"),
    ("", {}, 40104, "Access token is empty"),
    (None, {"Authorization": f"Bearer {TOKEN}"}, 40104, "Access token is empty"),
    ("other-token", {}, 40105, "Access token is incorrect or has been revoked"),
])
def test_auth_errors(fake: FakeTikTok, http: requests.Session, token: str | None, headers: dict[str, str],
                     code: int, message: str) -> None:
    assert_rejected(post(http, fake, offline_batch(1), token=token, **headers), code, message)
    assert fake.accepted() == []


def test_set_auth_error_answers_that_code_until_cleared(fake: FakeTikTok, http: requests.Session) -> None:
    fake.set_auth_error(40105)
    assert_rejected(post(http, fake, offline_batch(1)), 40105, "incorrect or has been revoked")
    assert_rejected(post(http, fake, offline_batch(1)), 40105, "incorrect or has been revoked")
    fake.set_auth_error(40001)
    assert_rejected(post(http, fake, offline_batch(1)), 40001, "No permission")
    fake.set_auth_error(None)
    assert post(http, fake, offline_batch(1)).json()["code"] == 0


@pytest.mark.parametrize("path", ["/open_api/v1.3/event/track", "/open_api/v1.2/event/track/",
                                  "/v1.3/event/track/", "/open_api/v1.3/offline/track/"])
def test_wrong_path_is_404_with_json(fake: FakeTikTok, http: requests.Session, path: str) -> None:
    root = fake.base_url.removesuffix("/open_api")
    r = http.post(root + path, json=offline_batch(1), headers={"Access-Token": TOKEN}, timeout=5)
    assert r.status_code == 404 and r.headers["Content-Type"] == "application/json"
    assert "Not found" in r.json()["message"]
    assert fake.requests() == []


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_other_methods_are_405(fake: FakeTikTok, http: requests.Session, method: str) -> None:
    r = http.request(method, fake.base_url + TRACK_PATH, headers={"Access-Token": TOKEN}, timeout=5)
    assert r.status_code == 405 and r.headers["Allow"] == "POST" and "use POST" in r.json()["message"]


# ------------------------------------------------------------------------ faults

def test_fail_next_answers_server_errors_then_recovers(fake: FakeTikTok, http: requests.Session) -> None:
    fake.fail_next(2)
    fake.fail_next(1, code=50002, http_status=200, message="Service busy")
    first, second, third, fourth = (post(http, fake, offline_batch(1)) for _ in range(4))

    assert (first.status_code, first.json()["code"], first.json()["message"]) == (503, 50000, "Internal error")
    assert second.status_code == 503
    assert (third.status_code, third.json()["code"], third.json()["message"]) == (200, 50002, "Service busy")
    assert fourth.json()["code"] == 0
    assert [e.request_index for e in fake.accepted()] == [3]
    assert fake.stats["server_errors"] == 3 and fake.stats["requests"] == 4


def test_throttle_next_answers_40100_at_http_200(fake: FakeTikTok, http: requests.Session) -> None:
    fake.throttle_next()
    fake.throttle_next(code=40016)
    r1, r2, r3 = (post(http, fake, offline_batch(1)) for _ in range(3))
    assert_rejected(r1, 40100, "Too many requests")
    assert_rejected(r2, 40016, "Too many requests")
    assert "Retry-After" not in r1.headers
    assert r3.json()["code"] == 0 and fake.stats["throttled"] == 2


def test_drop_next_resets_the_connection(fake: FakeTikTok, http: requests.Session) -> None:
    fake.drop_next()
    with pytest.raises(requests.ConnectionError):
        post(http, fake, offline_batch(2))
    assert post(http, fake, offline_batch(2)).json()["code"] == 0
    dropped, ok = fake.requests()
    assert (dropped.http_status, dropped.code, dropped.event_count) == (None, None, 2)
    assert ok.code == 0 and fake.stats["dropped"] == 1 and len(fake.accepted()) == 2


def test_stall_next_makes_the_client_time_out_and_accepts_nothing(fake: FakeTikTok,
                                                                   http: requests.Session) -> None:
    fake.stall_next(seconds=0.6)
    with pytest.raises(requests.Timeout):
        post(http, fake, offline_batch(1), timeout=0.2)
    assert post(http, fake, offline_batch(1, test_event_code="T")).json()["code"] == 0
    assert fake.accepted() == []
    deadline = time.monotonic() + 3  # the stalled handler still answers (into a closed socket)
    while len(fake.requests()) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [r.code for r in fake.requests()] == [50000, 0]


def test_stall_next_answers_50000_after_the_stall(fake: FakeTikTok, http: requests.Session) -> None:
    fake.stall_next(seconds=0.2)
    started = time.monotonic()
    r = post(http, fake, offline_batch(1))
    assert time.monotonic() - started >= 0.2
    assert (r.status_code, r.json()["code"]) == (503, 50000) and fake.accepted() == []


def test_reject_event_ids_fails_every_request_that_carries_them(fake: FakeTikTok,
                                                                 http: requests.Session) -> None:
    fake.reject_event_ids(["o-2", "o-9"])
    fake.reject_event_ids(["o-3"], message="Not a valid order")
    assert_rejected(post(http, fake, offline_batch(5)), 40002, "data.2.event_id: Not a valid value")
    assert_rejected(post(http, fake, batch([offline_event(3)])), 40002, "data.0.event_id: Not a valid order")
    assert_rejected(post(http, fake, batch([offline_event(2)])), 40002, "data.0.event_id: Not a valid value")
    # What a splitting connector does next: send the good ones alone.
    assert post(http, fake, batch([offline_event(i) for i in (0, 1, 4)])).json()["code"] == 0
    assert fake.accepted_event_ids() == ["o-0", "o-1", "o-4"]


def test_latency_delays_every_track_answer(fake: FakeTikTok, http: requests.Session) -> None:
    fake.latency = 0.15
    started = time.monotonic()
    assert post(http, fake, offline_batch(1)).json()["code"] == 0
    assert time.monotonic() - started >= 0.15
    fake.reset()
    assert fake.latency == 0.0


def test_requests_wait_out_their_latency_together(fake: FakeTikTok) -> None:
    """Validation runs one request at a time; the latency does not: four requests in flight take one latency."""
    fake.latency = 0.4
    answers: list[int] = []

    def send(i: int) -> None:
        with requests.Session() as session:
            answers.append(post(session, fake, batch([offline_event(i)])).json()["code"])

    senders = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    started = time.monotonic()
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    assert answers == [0, 0, 0, 0]
    assert 0.4 <= time.monotonic() - started < 1.2
    assert sorted(fake.accepted_event_ids()) == ["o-0", "o-1", "o-2", "o-3"]


def chaos_outcomes(fake: FakeTikTok, http: requests.Session, n: int) -> list[str]:
    outcomes = []
    for _ in range(n):
        try:
            outcomes.append(str(post(http, fake, offline_batch(1)).json()["code"]))
        except requests.ConnectionError:
            outcomes.append("drop")
    return outcomes


def test_chaos_is_reproducible_by_seed(fake: FakeTikTok, http: requests.Session) -> None:
    fake.set_chaos(0.5, seed=0, stall_seconds=0.01)
    first = chaos_outcomes(fake, http, 24)
    fake.reset()
    fake.set_chaos(0.5, seed=0, stall_seconds=0.01)
    assert chaos_outcomes(fake, http, 24) == first
    assert {"0", "50000", "40100", "drop"} <= set(first)
    fake.set_chaos(0)
    assert set(chaos_outcomes(fake, http, 5)) == {"0"}
    with pytest.raises(ValueError, match="unknown chaos kinds"):
        fake.set_chaos(0.1, kinds=("5xx", "flood"))


# ------------------------------------------------------------------------ test events, dedup

def test_test_event_code_events_are_kept_apart(fake: FakeTikTok, http: requests.Session) -> None:
    assert post(http, fake, offline_batch(2, test_event_code="TEST123")).json()["code"] == 0
    assert post(http, fake, offline_batch(1)).json()["code"] == 0
    assert fake.accepted_event_ids() == ["o-0"]
    assert [(e.event["event_id"], e.test_event_code) for e in fake.test_events()] == [
        ("o-0", "TEST123"), ("o-1", "TEST123")]
    assert fake.stats["test_events"] == 2 and fake.stats["accepted_events"] == 1
    assert fake.stats["duplicates_within_48h"] == 0


def test_dedup_counts_duplicates_within_and_after_48h(fake: FakeTikTok, http: requests.Session,
                                                      clock: Clock) -> None:
    def send(*events: dict[str, Any], source_id: str = SOURCE_ID) -> None:
        assert post(http, fake, batch(list(events), event_source_id=source_id)).json()["code"] == 0

    send(offline_event(1), offline_event(2))
    clock.now += 47 * HOUR
    send(offline_event(1))  # same key, 47 h later: TikTok keeps the first
    send(offline_event(1, event="Lead"), offline_event(1), source_id="999")  # other event / source: new keys
    assert (fake.stats["duplicates_within_48h"], fake.stats["duplicates_after_48h"]) == (1, 0)
    clock.now += 2 * HOUR
    send(offline_event(2))  # 49 h after the first: a new event for TikTok
    send(offline_event(2))  # ...and the window restarts from there
    assert (fake.stats["duplicates_within_48h"], fake.stats["duplicates_after_48h"]) == (2, 1)
    assert fake.accepted_event_ids() == ["o-1", "o-2", "o-1", "o-1", "o-1", "o-2", "o-2"]
    assert fake.stats["accepted_events"] == 7


def test_dedup_counts_repeats_within_one_request(fake: FakeTikTok, http: requests.Session) -> None:
    same = [offline_event(1), offline_event(2), offline_event(1), offline_event(1, event="Lead"),
            offline_event(2, event="Lead"), offline_event(2, event="Lead")]
    assert post(http, fake, batch(same)).json()["code"] == 0
    assert fake.stats["duplicates_within_48h"] == 2  # o-1 Purchase once more, o-2 Lead once more
    assert post(http, fake, batch([offline_event(3), offline_event(4)])).json()["code"] == 0
    assert post(http, fake, batch([offline_event(5), offline_event(3)])).json()["code"] == 0
    assert fake.stats["duplicates_within_48h"] == 3


def test_reset_clears_records_counters_faults_and_dedup(fake: FakeTikTok, http: requests.Session) -> None:
    post(http, fake, offline_batch(1))
    fake.fail_next(3)
    fake.reject_event_ids(["o-0"])
    fake.set_auth_error(40105)
    fake.reset()
    assert fake.accepted() == [] and fake.requests() == [] and set(fake.stats.values()) == {0}
    assert post(http, fake, offline_batch(1)).json()["code"] == 0
    assert fake.stats["duplicates_within_48h"] == 0 and fake.requests()[0].index == 0


# ------------------------------------------------------------------------ admin surface, concurrency

def test_admin_endpoints_drive_the_fake_over_http(fake: FakeTikTok, http: requests.Session) -> None:
    faults = {"fail_next": {"n": 1, "code": 50000, "http_status": 503}, "throttle_next": {"n": 1},
              "reject_event_ids": {"ids": ["o-7"], "message": "bad id"}, "latency": 0.0}
    assert http.post(admin_url(fake, "faults"), json=faults, timeout=5).json() == {"ok": True}
    assert post(http, fake, offline_batch(1)).status_code == 503
    assert post(http, fake, offline_batch(1)).json()["code"] == 40100
    assert_rejected(post(http, fake, batch([offline_event(7)])), 40002, "data.0.event_id: bad id")
    assert post(http, fake, offline_batch(2, test_event_code="T1")).json()["code"] == 0
    assert post(http, fake, offline_batch(1)).json()["code"] == 0

    accepted = http.get(admin_url(fake, "accepted"), timeout=5).json()
    assert accepted["events"] == [{"event_source": "offline", "event_source_id": SOURCE_ID,
                                   "event": offline_event(0), "test_event_code": None, "request_index": 4}]
    assert [e["test_event_code"] for e in accepted["test_events"]] == ["T1", "T1"]
    assert accepted["stats"]["requests"] == 5
    stats = http.get(admin_url(fake, "stats"), timeout=5).json()
    assert stats == fake.stats and stats["server_errors"] == stats["throttled"] == stats["rejected_requests"] == 1

    http.post(admin_url(fake, "faults"), json={"auth_error": 40105}, timeout=5)
    assert_rejected(post(http, fake, offline_batch(1)), 40105, "revoked")
    http.post(admin_url(fake, "faults"), json={"drop_next": {"n": 1}, "stall_next": {"n": 1, "seconds": 0.01},
                                               "chaos": {"rate": 0.2, "seed": 3}}, timeout=5)
    assert http.post(admin_url(fake, "reset"), timeout=5).json() == {"ok": True}
    assert fake.stats["requests"] == 0 and post(http, fake, offline_batch(1)).json()["code"] == 0

    bad = http.post(admin_url(fake, "faults"), json={"explode": True}, timeout=5)
    assert bad.status_code == 400 and "unknown keys" in bad.json()["error"]
    assert http.get(admin_url(fake, "nothing"), timeout=5).status_code == 404


def test_concurrent_clients_are_all_recorded(fake: FakeTikTok) -> None:
    def client(k: int) -> None:
        with requests.Session() as session:
            for j in range(5):
                events = [offline_event(1000 * k + 100 * j + i) for i in range(100)]
                assert post(session, fake, batch(events)).json()["code"] == 0

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = fake.accepted_event_ids()
    assert len(ids) == len(set(ids)) == 2000
    assert sorted(r.index for r in fake.requests()) == list(range(20))


def test_keep_alive_requests_are_not_slowed_by_nagle(fake: FakeTikTok, http: requests.Session) -> None:
    post(http, fake, offline_batch(1))  # open the connection
    started = time.monotonic()
    for _ in range(20):
        post(http, fake, offline_batch(1))
    # With Nagle + delayed ACK each answer would take ~40 ms.
    assert (time.monotonic() - started) / 20 < 0.02


def test_large_batches_are_served_quickly(fake: FakeTikTok) -> None:
    body = json.dumps(offline_batch(MAX_EVENTS_PER_REQUEST)).encode()

    def client() -> None:
        with requests.Session() as session:
            for _ in range(5):
                assert post(session, fake, body).json()["code"] == 0

    threads = [threading.Thread(target=client) for _ in range(4)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Loose on purpose: a quiet 2-core box does 100-150 requests/s, one shared with other test runs (load 7)
    # about 20. What it guards against is a read path that stalls per chunk: a 200 kB body read in small
    # pieces behind the GIL took seconds per request.
    assert 20 / (time.monotonic() - started) > 10
    assert fake.stats["accepted_events"] == 20 * MAX_EVENTS_PER_REQUEST


# ------------------------------------------------------------------------ lifecycle and CLI

def test_base_url_needs_a_started_server_and_stop_closes_it(http: requests.Session) -> None:
    fake = FakeTikTok()
    with pytest.raises(RuntimeError, match="not started"):
        fake.base_url
    with fake:
        url = fake.base_url
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/open_api", url)
        assert post(http, fake, offline_batch(1)).json()["code"] == 0
    with pytest.raises(requests.ConnectionError):
        http.post(url + TRACK_PATH, json={}, timeout=2)


def test_cli_prints_one_line_serves_and_stops_on_sigterm(http: requests.Session) -> None:
    root = Path(__file__).resolve().parents[1]
    env = os.environ | {"PYTHONPATH": str(root)}
    proc = subprocess.Popen([sys.executable, "-m", "connector.testing.fake_tiktok", "--port", "0",
                             "--token", "cli-token"], cwd=root, env=env, stdout=subprocess.PIPE, text=True)
    watchdog = threading.Timer(10, proc.kill)
    watchdog.start()
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        match = re.fullmatch(r"listening on (http://127\.0\.0\.1:\d+/open_api)\n", line)
        assert match, line
        url = match.group(1)
        r = http.post(url + TRACK_PATH, json=offline_batch(1), headers={"Access-Token": "cli-token"}, timeout=5)
        assert r.json()["code"] == 0
        assert http.get(url.removesuffix("/open_api") + "/_fake/stats", timeout=5).json()["accepted_events"] == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert proc.stdout.read() == ""  # type: ignore[union-attr]
    finally:
        watchdog.cancel()
        proc.kill()
