"""The fake TikTok's Custom Audience endpoints behave as docs/tiktok-audiences-api.md says, over real HTTP:
create, mapping add/delete, get, list; every validation rule; membership as hashes per id type; faults."""

from __future__ import annotations

import copy
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

from connector.audience_spec import CREATE_PATH, GET_PATH, LIST_PATH, MAPPING_PATH
from connector.testing.fake_tiktok import FakeTikTok
from connector.tiktok_spec import TRACK_PATH

TOKEN = "audience-token"
EVENTS_TOKEN = "test-token"
ADVERTISER = "7000000000000000001"
OTHER_ADVERTISER = "7000000000000000002"
NOW = 1_760_000_000


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


EMAILS = [sha256(f"person{i}@example.com") for i in range(6)]
PHONES = [sha256(f"1415555000{i}") for i in range(6)]


@pytest.fixture(scope="module")
def server() -> Iterator[FakeTikTok]:
    with FakeTikTok(access_token=EVENTS_TOKEN, audience_access_token=TOKEN, clock=lambda: NOW,
                    advertiser_ids={ADVERTISER, OTHER_ADVERTISER}) as fake:
        yield fake


@pytest.fixture
def fake(server: FakeTikTok) -> FakeTikTok:
    server.reset()
    return server


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def call(http: requests.Session, fake: FakeTikTok, path: str, body: Any = None, params: dict | None = None,
         token: str | None = TOKEN, timeout: float = 5) -> requests.Response:
    headers = {"Access-Token": token} if token is not None else {}
    if path in (GET_PATH, LIST_PATH):
        return http.get(fake.base_url + path, params=params, headers=headers, timeout=timeout)
    kwargs: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
    return http.post(fake.base_url + path, headers=headers, timeout=timeout, **kwargs)


def ok(response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["code"] == 0, payload
    assert re.fullmatch(r"[0-9a-f]{32}", payload["request_id"])
    return payload["data"]


def assert_refused(response: requests.Response, code: int, part: str) -> None:
    assert response.status_code == 200  # application errors travel as HTTP 200
    payload = response.json()
    assert payload["code"] == code, payload
    assert part in payload["message"], payload
    assert "data" not in payload


def create(http: requests.Session, fake: FakeTikTok, name: str = "VIP buyers", advertiser: str = ADVERTISER) -> str:
    data = ok(call(http, fake, CREATE_PATH, {"advertiser_id": advertiser, "action": "create",
                                             "custom_audience_name": name}))
    assert re.fullmatch(r"\d{16,}", data["audience_id"])
    return data["audience_id"]


def mapping(audience_id: str, action: str = "add", people: list[list[Any]] | None = None,
            schema: list[str] | None = None) -> dict[str, Any]:
    if people is None:
        people = [[{"id": e, "audience_ids": [audience_id]}, {"id": p, "audience_ids": [audience_id]}]
                  for e, p in zip(EMAILS[:3], PHONES[:3])]
        people.append([{"id": EMAILS[3], "audience_ids": [audience_id]}, {}])
    return {"advertiser_ids": [ADVERTISER], "action": action,
            "id_schema": schema or ["EMAIL_SHA256", "PHONE_SHA256"], "batch_data": people}


# ---------------------------------------------------------------- the happy path

def test_create_add_delete_get_and_list(fake: FakeTikTok, http: requests.Session) -> None:
    audience_id = create(http, fake)
    ok(call(http, fake, MAPPING_PATH, mapping(audience_id)))
    assert fake.audiences.members(audience_id) == {"EMAIL_SHA256": set(EMAILS[:4]), "PHONE_SHA256": set(PHONES[:3])}
    ok(call(http, fake, MAPPING_PATH, mapping(audience_id)))  # adding present people again: no change
    delete = mapping(audience_id, "delete", [[{"id": EMAILS[0], "audience_ids": [audience_id]}, {}],
                                             [{"id": EMAILS[5], "audience_ids": [audience_id]}, {}]])
    ok(call(http, fake, MAPPING_PATH, delete))  # EMAILS[5] was never in: deleting it is a no-op
    assert fake.audiences.members(audience_id) == {"EMAIL_SHA256": set(EMAILS[1:4]), "PHONE_SHA256": set(PHONES[:3])}
    details = ok(call(http, fake, GET_PATH, params={"advertiser_id": ADVERTISER,
                                                   "custom_audience_ids": json.dumps([audience_id])}))
    [item] = details["list"]
    assert item["audience_details"] | {"create_time": None, "expired_time": None} == {
        "name": "VIP buyers", "audience_id": audience_id, "cover_num": 3, "is_valid": True, "is_expiring": False,
        "calculate_type": "NONE", "type": "Partner", "create_time": None, "expired_time": None}
    assert item["audience_details"]["expired_time"] == "2026-10-09 08:53:20"  # 365 days after creation
    listed = ok(call(http, fake, LIST_PATH, params={"advertiser_id": ADVERTISER}))
    assert [a["audience_id"] for a in listed["list"]] == [audience_id]
    assert listed["page_info"] == {"page": 1, "page_size": 10, "total_number": 1, "total_page": 1}
    assert fake.audiences.stats | {} == {"requests": 6, "created": 1, "ids_added": 14, "ids_deleted": 2,
                                         "rejected_requests": 0, "throttled": 0, "server_errors": 0, "dropped": 0}
    assert [r.path for r in fake.audiences.requests()] == [CREATE_PATH, MAPPING_PATH, MAPPING_PATH, MAPPING_PATH,
                                                           GET_PATH, LIST_PATH]
    assert fake.audiences.requests(MAPPING_PATH)[0].body == mapping(audience_id)


def test_duplicate_names_are_allowed_and_list_pages_newest_first(fake: FakeTikTok, http: requests.Session) -> None:
    ids = [create(http, fake, "same name") for _ in range(23)]
    create(http, fake, "other advertiser", OTHER_ADVERTISER)
    pages = [ok(call(http, fake, LIST_PATH, params={"advertiser_id": ADVERTISER, "page": p, "page_size": 10}))
             for p in (1, 2, 3, 4)]
    assert [len(p["list"]) for p in pages] == [10, 10, 3, 0]
    assert [a["audience_id"] for p in pages for a in p["list"]] == ids[::-1]
    assert {a["name"] for p in pages for a in p["list"]} == {"same name"}
    assert pages[0]["page_info"] == {"page": 1, "page_size": 10, "total_number": 23, "total_page": 3}


def test_one_person_may_go_to_several_audiences_of_the_advertiser(fake: FakeTikTok, http: requests.Session) -> None:
    a, b = create(http, fake, "a"), create(http, fake, "b")
    ok(call(http, fake, MAPPING_PATH, mapping(a, people=[[{"id": EMAILS[0], "audience_ids": [a, b]}]],
                                              schema=["EMAIL_SHA256"])))
    assert fake.audiences.members(a) == fake.audiences.members(b) == {"EMAIL_SHA256": {EMAILS[0]}}


def test_every_id_type_with_its_hash_length(fake: FakeTikTok, http: requests.Session) -> None:
    audience_id = create(http, fake)
    schema = ["EMAIL_SHA256", "PHONE_SHA256", "IDFA_SHA256", "AAID_SHA256", "IDFA_MD5", "AAID_MD5"]
    values = [EMAILS[0], PHONES[0], sha256("idfa"), sha256("gaid"), md5("idfa"), md5("gaid")]
    ok(call(http, fake, MAPPING_PATH, mapping(audience_id, people=[[{"id": v, "audience_ids": [audience_id]}
                                                                    for v in values]], schema=schema)))
    assert fake.audiences.members(audience_id) == {name: {v} for name, v in zip(schema, values)}


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("path", [CREATE_PATH, MAPPING_PATH, GET_PATH, LIST_PATH])
@pytest.mark.parametrize(("token", "code", "part"), [
    (None, 40104, "Access token is empty"),
    (EVENTS_TOKEN, 40105, "incorrect or has been revoked"),  # the Events API token is not a Marketing API one
    ("wrong", 40105, "incorrect or has been revoked"),
])
def test_the_audience_token_is_required(fake: FakeTikTok, http: requests.Session, path: str, token: str | None,
                                        code: int, part: str) -> None:
    assert_refused(call(http, fake, path, {"advertiser_id": ADVERTISER, "action": "create",
                                           "custom_audience_name": "x"},
                        params={"advertiser_id": ADVERTISER}, token=token), code, part)
    assert fake.audiences.audiences() == []


def test_the_events_endpoint_keeps_its_own_token(fake: FakeTikTok, http: requests.Session) -> None:
    response = http.post(fake.base_url + TRACK_PATH, json={}, headers={"Access-Token": TOKEN}, timeout=5)
    assert response.json()["code"] == 40105


@pytest.mark.parametrize(("body", "code", "part"), [
    ({"action": "create", "custom_audience_name": "x"}, 40002, "advertiser_id: Missing"),
    ({"advertiser_id": 7, "action": "create", "custom_audience_name": "x"}, 40002, "advertiser_id: Not a valid string"),
    ({"advertiser_id": "999", "action": "create", "custom_audience_name": "x"}, 40001, "No permission"),
    ({"advertiser_id": ADVERTISER, "custom_audience_name": "x"}, 40002, "action: Missing"),
    ({"advertiser_id": ADVERTISER, "action": "update", "custom_audience_name": "x"}, 40002, "action: Not a valid choice"),
    ({"advertiser_id": ADVERTISER, "action": "create"}, 40002, "custom_audience_name: Missing"),
    ({"advertiser_id": ADVERTISER, "action": "create", "custom_audience_name": "  "}, 40002, "custom_audience_name"),
    ({"advertiser_id": ADVERTISER, "action": "create", "custom_audience_name": "x" * 129}, 40002, "at most 128"),
    (b"not json", 40002, "not a JSON object"),
    ([], 40002, "not a JSON object"),
])
def test_create_is_validated(fake: FakeTikTok, http: requests.Session, body: Any, code: int, part: str) -> None:
    assert_refused(call(http, fake, CREATE_PATH, body), code, part)
    assert fake.audiences.audiences() == []
    create(http, fake, "x" * 128)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    *parents, last = [int(k) if k.isdigit() else k for k in path.split(".")]

    def apply(body: dict[str, Any]) -> None:
        node: Any = body
        for key in parents:
            node = node[key]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
    return apply


_DELETE = object()
MAPPING_RULES = [
    ("advertiser_ids", _DELETE, 40002, "advertiser_ids: Missing"),
    ("advertiser_ids", [], 40002, "advertiser_ids: Not a valid list"),
    ("advertiser_ids", ADVERTISER, 40002, "advertiser_ids: Not a valid list"),
    ("advertiser_ids", ["999"], 40001, "No permission to operate advertiser 999"),
    ("action", "remove", 40002, "action: Not a valid choice"),
    ("action", _DELETE, 40002, "action: Missing"),
    ("id_schema", _DELETE, 40002, "id_schema: Missing"),
    ("id_schema", [], 40002, "id_schema: Not a valid list"),
    ("id_schema", ["EMAIL_SHA256", "EMAIL"], 40002, "id_schema.1: Not a valid choice"),
    ("id_schema", ["EMAIL_SHA256", "EMAIL_SHA256"], 40002, "id_schema: values must be unique"),
    ("batch_data", _DELETE, 40002, "batch_data: Missing"),
    ("batch_data", {}, 40002, "batch_data: Not a valid list"),
    ("batch_data", [], 40002, "batch_data: Length must be between 1 and 10000"),
    ("batch_data.1", {"id": EMAILS[0]}, 40002, "batch_data.1: must be a list of 2 entries"),
    ("batch_data.1", [{"id": EMAILS[1], "audience_ids": ["A"]}], 40002, "batch_data.1: must be a list of 2 entries"),
    ("batch_data.2", [{}, {}], 40002, "batch_data.2: has no id"),
    ("batch_data.0.1", "", 40002, "batch_data.0.1: Not a valid object"),
    ("batch_data.0.0.id", _DELETE, 40002, "batch_data.0.0.id: Missing"),
    ("batch_data.0.0.id", 12, 40002, "batch_data.0.0.id: Not a valid string"),
    ("batch_data.0.0.id", EMAILS[0].upper(), 40002, "must be a lowercase SHA-256 hex digest for EMAIL_SHA256"),
    ("batch_data.0.0.id", EMAILS[0][:63], 40002, "must be a lowercase SHA-256"),
    ("batch_data.0.0.id", "person0@example.com", 40002, "must be a lowercase SHA-256"),
    ("batch_data.0.0.id", md5("x"), 40002, "must be a lowercase SHA-256"),
    ("batch_data.0.0.audience_ids", _DELETE, 40002, "batch_data.0.0.audience_ids: Missing"),
    ("batch_data.0.0.audience_ids", [], 40002, "batch_data.0.0.audience_ids: Not a valid list"),
    ("batch_data.0.0.audience_ids", [1800], 40002, "batch_data.0.0.audience_ids: Not a valid list"),
    ("batch_data.3.0.audience_ids", ["1"], 40002, "batch_data.3.0.audience_ids: Audience does not exist: 1"),
]


@pytest.mark.parametrize(("path", "value", "code", "part"), MAPPING_RULES,
                         ids=[f"{r[0]}={'<deleted>' if r[1] is _DELETE else r[1]!r}"[:70] for r in MAPPING_RULES])
def test_mapping_is_validated_and_a_refused_request_changes_nothing(
        fake: FakeTikTok, http: requests.Session, path: str, value: Any, code: int, part: str) -> None:
    audience_id = create(http, fake)
    body = mapping(audience_id)
    _set(path, value if value is _DELETE else copy.deepcopy(value))(body)
    assert_refused(call(http, fake, MAPPING_PATH, body), code, part)
    assert fake.audiences.members(audience_id) == {}  # the valid people before the bad one were not added


def test_mapping_refuses_audiences_it_cannot_write(fake: FakeTikTok, http: requests.Session) -> None:
    customer_file = fake.audiences.add_audience(ADVERTISER, "uploaded by hand", "Customer File")
    theirs = create(http, fake, "other", OTHER_ADVERTISER)
    for audience_id in (customer_file, theirs):
        assert_refused(call(http, fake, MAPPING_PATH, mapping(audience_id)), 40002,
                       f"Audience does not exist: {audience_id}")
    both = mapping(theirs)
    both["advertiser_ids"] = [ADVERTISER, OTHER_ADVERTISER]  # allowed when the request names its advertiser
    ok(call(http, fake, MAPPING_PATH, both))


def test_the_people_limit_is_configurable(fake: FakeTikTok, http: requests.Session) -> None:
    audience_id = create(http, fake)
    fake.audiences.max_people_per_request = 3
    try:
        assert_refused(call(http, fake, MAPPING_PATH, mapping(audience_id)), 40002, "between 1 and 3")
        ok(call(http, fake, MAPPING_PATH, mapping(audience_id, people=mapping(audience_id)["batch_data"][:3])))
    finally:
        fake.audiences.max_people_per_request = 10_000
    people = [[{"id": sha256(str(i)), "audience_ids": [audience_id]}] for i in range(10_001)]
    assert_refused(call(http, fake, MAPPING_PATH, mapping(audience_id, people=people, schema=["EMAIL_SHA256"])),
                   40002, "between 1 and 10000")
    ok(call(http, fake, MAPPING_PATH, mapping(audience_id, people=people[:10_000], schema=["EMAIL_SHA256"])))
    assert len(fake.audiences.members(audience_id)["EMAIL_SHA256"]) == 10_003


@pytest.mark.parametrize(("params", "code", "part"), [
    ({"custom_audience_ids": '["{id}"]'}, 40002, "advertiser_id: Missing"),
    ({"advertiser_id": "999", "custom_audience_ids": '["{id}"]'}, 40001, "No permission"),
    ({"advertiser_id": ADVERTISER}, 40002, "custom_audience_ids: Missing"),
    ({"advertiser_id": ADVERTISER, "custom_audience_ids": "{id}"}, 40002, "Not a valid list"),
    ({"advertiser_id": ADVERTISER, "custom_audience_ids": "[{id}]"}, 40002, "Not a valid list of strings"),
    ({"advertiser_id": ADVERTISER, "custom_audience_ids": "["}, 40002, "Not a valid JSON list"),
    ({"advertiser_id": ADVERTISER, "custom_audience_ids": "[]"}, 40002, "between 1 and 100"),
    ({"advertiser_id": ADVERTISER, "custom_audience_ids": json.dumps(["{id}"] * 101)}, 40002, "between 1 and 100"),
    ({"advertiser_id": ADVERTISER, "custom_audience_ids": '["{id}", "42"]'}, 40002, "Audience does not exist: 42"),
    ({"advertiser_id": OTHER_ADVERTISER, "custom_audience_ids": '["{id}"]'}, 40002, "Audience does not exist"),
])
def test_get_is_validated(fake: FakeTikTok, http: requests.Session, params: dict[str, str], code: int,
                          part: str) -> None:
    audience_id = create(http, fake)
    assert_refused(call(http, fake, GET_PATH, params={k: v.replace("{id}", audience_id) for k, v in params.items()}),
                   code, part)


@pytest.mark.parametrize(("params", "part"), [
    ({}, "advertiser_id: Missing"),
    ({"advertiser_id": ADVERTISER, "page": "0"}, "page: Not a valid integer"),
    ({"advertiser_id": ADVERTISER, "page": "x"}, "page: Not a valid integer"),
    ({"advertiser_id": ADVERTISER, "page_size": "101"}, "page_size: must be at most 100"),
])
def test_list_is_validated(fake: FakeTikTok, http: requests.Session, params: dict[str, str], part: str) -> None:
    assert_refused(call(http, fake, LIST_PATH, params=params), 40002, part)


def test_methods_and_paths(fake: FakeTikTok, http: requests.Session) -> None:
    response = http.get(fake.base_url + MAPPING_PATH, headers={"Access-Token": TOKEN}, timeout=5)
    assert response.status_code == 405 and "use POST" in response.json()["message"]
    response = http.post(fake.base_url + LIST_PATH, json={}, headers={"Access-Token": TOKEN}, timeout=5)
    assert response.status_code == 405 and "use GET" in response.json()["message"]
    response = http.post(fake.base_url + "/v1.3/segment/mapping", json={}, timeout=5)  # no trailing slash
    assert response.status_code == 404


# ---------------------------------------------------------------- faults

@pytest.mark.parametrize(("arm", "status", "code"), [
    (lambda f: f.audiences.fail_next(), 503, 50000),
    (lambda f: f.audiences.fail_next(code=51003, http_status=200, message="audience service error"), 200, 51003),
    (lambda f: f.audiences.throttle_next(), 200, 40100),
    (lambda f: f.audiences.set_auth_error(40102), 200, 40102),
    (lambda f: f.audiences.set_chaos(1.0, kinds=["5xx"]), 503, 50000),
])
def test_faults_answer_instead_and_change_nothing(fake: FakeTikTok, http: requests.Session,
                                                  arm: Callable[[FakeTikTok], None], status: int, code: int) -> None:
    audience_id = create(http, fake)
    arm(fake)
    response = call(http, fake, MAPPING_PATH, mapping(audience_id))
    assert (response.status_code, response.json()["code"]) == (status, code)
    assert fake.audiences.members(audience_id) == {}
    # the events endpoint is not affected by the audience fault, and the next audience call is answered
    assert http.post(fake.base_url + TRACK_PATH, json={}, headers={"Access-Token": EVENTS_TOKEN},
                     timeout=5).json()["code"] == 40002
    fake.audiences.set_chaos(0)
    fake.audiences.set_auth_error(None)
    ok(call(http, fake, MAPPING_PATH, mapping(audience_id)))


def test_drop_and_stall(fake: FakeTikTok, http: requests.Session) -> None:
    audience_id = create(http, fake)
    fake.audiences.drop_next()
    with pytest.raises(requests.ConnectionError):
        call(http, fake, MAPPING_PATH, mapping(audience_id))
    assert fake.audiences.stats["dropped"] == 1 and fake.audiences.members(audience_id) == {}
    fake.audiences.stall_next(seconds=0.6)
    with pytest.raises(requests.Timeout):
        call(http, fake, MAPPING_PATH, mapping(audience_id), timeout=0.2)
    # as on the track endpoint, a stalled request is answered late with a server error, and not applied
    deadline = time.monotonic() + 5
    while len(fake.audiences.requests(MAPPING_PATH)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [(r.http_status, r.code) for r in fake.audiences.requests(MAPPING_PATH)] == [(None, None), (503, 50000)]
    assert fake.audiences.members(audience_id) == {}
    ok(call(http, fake, MAPPING_PATH, mapping(audience_id)))


def test_events_faults_do_not_touch_audiences(fake: FakeTikTok, http: requests.Session) -> None:
    audience_id = create(http, fake)
    fake.fail_next(3)
    ok(call(http, fake, MAPPING_PATH, mapping(audience_id)))


# ---------------------------------------------------------------- admin, for a fake in another process

def test_admin_routes(fake: FakeTikTok, http: requests.Session) -> None:
    admin = fake.base_url.removesuffix("/open_api") + "/_fake/audiences"
    audience_id = create(http, fake)
    ok(call(http, fake, MAPPING_PATH, mapping(audience_id)))
    summary = http.get(admin, timeout=5).json()
    assert summary["audiences"] == [{"advertiser_id": ADVERTISER, "audience_id": audience_id, "name": "VIP buyers",
                                     "type": "Partner", "cover_num": 4,
                                     "members": {"EMAIL_SHA256": 4, "PHONE_SHA256": 3}}]
    assert summary["stats"]["ids_added"] == 7
    detail = http.get(f"{admin}/{audience_id}", timeout=5).json()
    assert detail["members"] == {"EMAIL_SHA256": sorted(EMAILS[:4]), "PHONE_SHA256": sorted(PHONES[:3])}
    assert http.get(f"{admin}/42", timeout=5).status_code == 404
    seeded = http.post(f"{admin}/seed", json={"advertiser_id": ADVERTISER, "name": "file", "type": "Customer File"},
                       timeout=5).json()["audience_id"]
    assert http.post(f"{admin}/seed", json={}, timeout=5).status_code == 400
    assert_refused(call(http, fake, MAPPING_PATH, mapping(seeded)), 40002, "Audience does not exist")
    assert http.post(f"{admin}/faults", json={"throttle_next": {"n": 1}}, timeout=5).json() == {"ok": True}
    assert call(http, fake, MAPPING_PATH, mapping(audience_id)).json()["code"] == 40100
    assert http.post(f"{admin}/faults", json={"nope": 1}, timeout=5).status_code == 400
    assert http.post(admin.removesuffix("/audiences") + "/reset", timeout=5).json() == {"ok": True}
    assert http.get(admin, timeout=5).json()["audiences"] == []


def test_cli_serves_audiences_with_its_own_token(http: requests.Session) -> None:
    root = Path(__file__).resolve().parents[1]
    env = os.environ | {"PYTHONPATH": str(root)}
    proc = subprocess.Popen([sys.executable, "-m", "connector.testing.fake_tiktok", "--port", "0",
                             "--audience-token", "cli-audience", "--advertiser-id", "123"],
                            cwd=root, env=env, stdout=subprocess.PIPE, text=True)
    watchdog = threading.Timer(10, proc.kill)
    watchdog.start()
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        url = re.fullmatch(r"listening on (http://127\.0\.0\.1:\d+/open_api)\n", line).group(1)  # type: ignore[union-attr]
        body = {"advertiser_id": "123", "action": "create", "custom_audience_name": "x"}
        assert http.post(url + CREATE_PATH, json=body, headers={"Access-Token": "cli-audience"},
                         timeout=5).json()["code"] == 0
        body["advertiser_id"] = "124"
        assert http.post(url + CREATE_PATH, json=body, headers={"Access-Token": "cli-audience"},
                         timeout=5).json()["code"] == 40001
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        watchdog.cancel()
        proc.kill()
