"""TikTok's Custom Audience endpoints for the fake TikTok: create, mapping (add/delete), get and list, with
TikTok's validation, membership kept as hashes per id type, and faults on demand like the track endpoint.

`FakeTikTok(audience_access_token=…, advertiser_ids=…)` serves them beside the Events API; the backend is
`fake.audiences`. The Access-Token is the Marketing API token, not the Events API one.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from connector.audience_ids import BY_NAME, ID_TYPE_NAMES
from connector.audience_spec import (
    CREATE_PATH, GET_PATH, LIST_PATH, MAPPING_ACTIONS, MAX_GET_IDS, MAX_LIST_PAGE_SIZE,
    MAX_NAME_LENGTH, MAX_PEOPLE_PER_REQUEST, METHODS, PARTNER_TYPE,
)
from connector.testing.fake_rules import (
    AUTH_MESSAGES, MISSING, NOT_CHOICE, NOT_INT, NOT_LIST, NOT_OBJ, NOT_STR, Rejected, fail,
)
from connector.testing.fake_tiktok import _outcome_counter, _parse_object
from connector.testing.faults import Faults
from connector.tiktok_spec import CODE_PERMISSION, CODE_TOKEN_EMPTY, CODE_TOKEN_INVALID

EXPIRY_SECONDS = 365 * 86_400  # an audience expires 365 days after its last use
FIRST_AUDIENCE_ID = 1_800_000_000_000_000
_HEX = {64: re.compile(r"[0-9a-f]{64}").fullmatch, 32: re.compile(r"[0-9a-f]{32}").fullmatch}
_COUNTERS = ("requests", "created", "ids_added", "ids_deleted", "rejected_requests", "throttled",
             "server_errors", "dropped")


@dataclass
class FakeAudience:
    advertiser_id: str
    audience_id: str
    name: str
    type: str
    created_at: float
    members: dict[str, set[bytes]] = field(default_factory=dict)  # id type → digests (bytes keep it small)

    @property
    def cover_num(self) -> int:
        """Approximate matched size: the most populated id type (TikTok's own figure is an estimate too)."""
        return max((len(v) for v in self.members.values()), default=0)

    def hashes(self) -> dict[str, set[str]]:
        return {name: {d.hex() for d in digests} for name, digests in self.members.items() if digests}


@dataclass(frozen=True, slots=True)
class AudienceRequest:
    """One request to an audience endpoint and how the fake answered it."""

    index: int
    method: str
    path: str  # e.g. /v1.3/segment/mapping/
    query: dict[str, str]
    raw: bytes
    http_status: int | None  # None: dropped without a response
    code: int | None
    message: str

    @property
    def body(self) -> dict[str, Any] | None:
        return _parse_object(self.raw)


class AudienceBackend(Faults):
    """The state and rules behind the four audience endpoints; thread-safe."""

    def __init__(self, access_token: str = "audience-token", advertiser_ids: Iterable[str] | None = None,
                 max_people_per_request: int = MAX_PEOPLE_PER_REQUEST, clock: Callable[[], float] = time.time,
                 wait: Callable[[float], object] = time.sleep) -> None:
        self.access_token = access_token
        self._initial_advertisers = set(advertiser_ids) if advertiser_ids is not None else None
        self.max_people_per_request = max_people_per_request
        self.keep_bodies = True  # False: requests() keep no body (a benchmark of millions of people)
        self.latency = 0.0
        self._clock, self._wait = clock, wait
        self._lock = threading.Lock()
        self._serial = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget audiences, records, counters and faults (the advertisers go back to the constructor's)."""
        with self._lock:
            self._advertisers = set(self._initial_advertisers) if self._initial_advertisers is not None else None
            self._audiences: dict[str, FakeAudience] = {}
            self._ids = itertools.count(FIRST_AUDIENCE_ID)
            self._requests: list[AudienceRequest] = []
            self._counters = dict.fromkeys(_COUNTERS, 0)
            self._clear_faults()
            self._next_index = 0
            self.latency = 0.0

    # setup and inspection, for tests
    def add_advertiser(self, advertiser_id: str) -> None:
        with self._lock:
            if self._advertisers is not None:
                self._advertisers.add(advertiser_id)

    def add_audience(self, advertiser_id: str, name: str, type: str = PARTNER_TYPE) -> str:
        """An audience made outside the API (type "Customer File", "Lookalike" …) or before the test."""
        with self._lock:
            return self._create(advertiser_id, name, type).audience_id

    def audiences(self, advertiser_id: str | None = None) -> list[FakeAudience]:
        with self._lock:
            return [a for a in self._audiences.values() if advertiser_id in (None, a.advertiser_id)]

    def members(self, audience_id: str) -> dict[str, set[str]]:
        """The audience's hashes by id type (hex), id types without any left out."""
        with self._lock:
            return self._audiences[audience_id].hashes()

    def requests(self, path: str | None = None) -> list[AudienceRequest]:
        with self._lock:
            return [r for r in sorted(self._requests, key=lambda r: r.index) if path in (None, r.path)]

    @property
    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counters)

    # the endpoints
    def handle(self, method: str, path: str, query_string: str, headers: Mapping[str, str],
               raw: bytes) -> tuple[int, dict[str, Any]] | None:
        """Answer one request to an audience path: (http_status, json body), or None to drop the connection."""
        allowed = METHODS[path]
        if method != allowed:
            return 405, {"code": 405, "message": f"Method {method} not allowed; use {allowed}"}
        query = {k: v[-1] for k, v in parse_qs(query_string, keep_blank_values=True).items()}
        with self._lock:
            index, self._next_index = self._next_index, self._next_index + 1
            fault, auth_error = self._take_fault(), self._auth_error
        self._wait(self.latency + (fault.seconds if fault is not None else 0.0))
        data: dict[str, Any] | None = None
        with self._serial:  # a request is validated and applied whole before the next one
            if fault is not None and fault.kind == "drop":
                self._record(AudienceRequest(index, method, path, query, raw, None, None, "dropped"))
                return None
            if fault is not None:
                status, code, message = fault.http_status, fault.code, fault.message
            else:
                status = 200
                try:
                    data = self._answer(path, query, headers, raw, auth_error)
                    code, message = 0, "OK"
                except Rejected as e:
                    code, message = e.code, e.message
            self._record(AudienceRequest(index, method, path, query, raw, status, code, message))
        payload: dict[str, Any] = {"code": code, "message": message, "request_id": uuid.uuid4().hex}
        if data is not None:
            payload["data"] = data
        return status, payload

    def _record(self, record: AudienceRequest) -> None:
        if not self.keep_bodies:
            record = AudienceRequest(record.index, record.method, record.path, record.query, b"",
                                     record.http_status, record.code, record.message)
        with self._lock:
            self._requests.append(record)
            self._counters["requests"] += 1
            if record.code != 0:
                self._counters[_outcome_counter(record.http_status, record.code)] += 1

    def _answer(self, path: str, query: dict[str, str], headers: Mapping[str, str], raw: bytes,
                auth_error: int | None) -> dict[str, Any]:
        if auth_error is not None:
            raise Rejected(AUTH_MESSAGES.get(auth_error, "Authentication failed"), auth_error)
        token = headers.get("Access-Token")
        if not token:
            raise Rejected(AUTH_MESSAGES[CODE_TOKEN_EMPTY], CODE_TOKEN_EMPTY)
        if token != self.access_token:
            raise Rejected(AUTH_MESSAGES[CODE_TOKEN_INVALID], CODE_TOKEN_INVALID)
        if path == GET_PATH:
            return self._get(query)
        if path == LIST_PATH:
            return self._list(query)
        body = _parse_object(raw)
        if body is None:
            raise Rejected("Request body is not a JSON object")
        return self._create_audience(body) if path == CREATE_PATH else self._mapping(body)

    def _create_audience(self, body: dict[str, Any]) -> dict[str, Any]:
        advertiser_id = self._advertiser(body.get("advertiser_id"), "advertiser_id")
        if body.get("action") != "create":
            fail("action", MISSING if "action" not in body else NOT_CHOICE + " (create)")
        name = body.get("custom_audience_name")
        if type(name) is not str or not name.strip():
            fail("custom_audience_name", MISSING if name is None else NOT_STR + " (non-empty)")
        if len(name) > MAX_NAME_LENGTH:
            fail("custom_audience_name", f"Length must be at most {MAX_NAME_LENGTH}")
        with self._lock:
            audience = self._create(advertiser_id, name, PARTNER_TYPE)  # duplicate names are allowed, as on TikTok
            self._counters["created"] += 1
        return {"audience_id": audience.audience_id}

    def _create(self, advertiser_id: str, name: str, type: str) -> FakeAudience:
        audience = FakeAudience(advertiser_id, str(next(self._ids)), name, type, self._clock())
        self._audiences[audience.audience_id] = audience
        if self._advertisers is not None:
            self._advertisers.add(advertiser_id)
        return audience

    def _mapping(self, body: dict[str, Any]) -> dict[str, Any]:
        advertisers = body.get("advertiser_ids")
        if type(advertisers) is not list or not advertisers:
            fail("advertiser_ids", MISSING if advertisers is None else NOT_LIST + " (non-empty)")
        allowed = {self._advertiser(a, f"advertiser_ids.{i}") for i, a in enumerate(advertisers)}
        action = body.get("action")
        if action not in MAPPING_ACTIONS:
            fail("action", MISSING if action is None else f"{NOT_CHOICE} ({', '.join(sorted(MAPPING_ACTIONS))})")
        schema = body.get("id_schema")
        if type(schema) is not list or not schema:
            fail("id_schema", MISSING if schema is None else NOT_LIST + " (non-empty)")
        for j, name in enumerate(schema):
            if name not in BY_NAME:
                fail(f"id_schema.{j}", f"{NOT_CHOICE}: use {', '.join(ID_TYPE_NAMES)}")
        if len(set(schema)) != len(schema):
            fail("id_schema", "values must be unique")
        people = body.get("batch_data")
        if type(people) is not list:
            fail("batch_data", MISSING if people is None else NOT_LIST)
        if not 1 <= len(people) <= self.max_people_per_request:
            fail("batch_data", f"Length must be between 1 and {self.max_people_per_request}")
        lengths = [BY_NAME[name].hex_length for name in schema]
        with self._lock:
            audiences = {a.audience_id: a for a in self._audiences.values() if a.advertiser_id in allowed}
        changes: list[tuple[FakeAudience, str, bytes]] = []
        for i, person in enumerate(people):
            if type(person) is not list or len(person) != len(schema):
                fail(f"batch_data.{i}", f"must be a list of {len(schema)} entries, one per id_schema value")
            if not any(person):
                fail(f"batch_data.{i}", "has no id: every entry is {}")
            for j, entry in enumerate(person):
                changes.extend(self._entry(entry, f"batch_data.{i}.{j}", schema[j], lengths[j], audiences))
        with self._lock:
            for audience, name, digest in changes:
                digests = audience.members.setdefault(name, set())
                if action == "add":
                    digests.add(digest)
                else:
                    digests.discard(digest)  # deleting an absent person is a no-op, as adding a present one
            self._counters["ids_added" if action == "add" else "ids_deleted"] += len(changes)
        return {}

    @staticmethod
    def _entry(entry: Any, where: str, name: str, length: int,
               audiences: dict[str, FakeAudience]) -> list[tuple[FakeAudience, str, bytes]]:
        if type(entry) is not dict:
            fail(where, NOT_OBJ)
        if not entry:
            return []
        value = entry.get("id")
        if type(value) is not str:
            fail(f"{where}.id", MISSING if value is None else NOT_STR)
        if not _HEX[length](value):
            fail(f"{where}.id", f"must be a lowercase {'SHA-256' if length == 64 else 'MD5'} hex digest for {name}")
        ids = entry.get("audience_ids")
        if type(ids) is not list or not ids or not all(type(a) is str for a in ids):
            fail(f"{where}.audience_ids", MISSING if ids is None else "Not a valid list of strings (non-empty)")
        found = []
        for audience_id in ids:
            audience = audiences.get(audience_id)
            if audience is None or audience.type != PARTNER_TYPE:
                fail(f"{where}.audience_ids", f"Audience does not exist: {audience_id}")
            found.append((audience, name, bytes.fromhex(value)))
        return found

    def _get(self, query: dict[str, str]) -> dict[str, Any]:
        advertiser_id = self._advertiser(query.get("advertiser_id"), "advertiser_id")
        text = query.get("custom_audience_ids")
        if text is None:
            fail("custom_audience_ids", MISSING)
        try:
            ids = json.loads(text)
        except ValueError:
            fail("custom_audience_ids", "Not a valid JSON list")
        if type(ids) is not list or not all(type(a) is str for a in ids):
            fail("custom_audience_ids", "Not a valid list of strings")
        if not 1 <= len(ids) <= MAX_GET_IDS:
            fail("custom_audience_ids", f"Length must be between 1 and {MAX_GET_IDS}")
        with self._lock:
            found = [self._audiences.get(a) for a in ids]
            for audience_id, audience in zip(ids, found):
                if audience is None or audience.advertiser_id != advertiser_id:
                    fail("custom_audience_ids", f"Audience does not exist: {audience_id}")
            return {"list": [{"audience_details": self._details(a)} for a in found if a is not None]}

    def _list(self, query: dict[str, str]) -> dict[str, Any]:
        advertiser_id = self._advertiser(query.get("advertiser_id"), "advertiser_id")
        page = _positive_int(query, "page", 1, None)
        page_size = _positive_int(query, "page_size", 10, MAX_LIST_PAGE_SIZE)
        with self._lock:
            mine = sorted((a for a in self._audiences.values() if a.advertiser_id == advertiser_id),
                          key=lambda a: (a.created_at, int(a.audience_id)), reverse=True)  # newest first
            items = [self._details(a) for a in mine[(page - 1) * page_size:page * page_size]]
        total = len(mine)
        return {"list": items, "page_info": {"page": page, "page_size": page_size, "total_number": total,
                                             "total_page": -(-total // page_size)}}

    def _details(self, audience: FakeAudience) -> dict[str, Any]:
        return {"name": audience.name, "audience_id": audience.audience_id, "cover_num": audience.cover_num,
                "is_valid": True, "is_expiring": False, "calculate_type": "NONE", "type": audience.type,
                "create_time": _time_text(audience.created_at),
                "expired_time": _time_text(audience.created_at + EXPIRY_SECONDS)}

    def _advertiser(self, value: Any, where: str) -> str:
        if type(value) is not str or not value:
            fail(where, MISSING if value is None else NOT_STR + " (non-empty)")
        if self._advertisers is not None and value not in self._advertisers:
            raise Rejected(f"No permission to operate advertiser {value}", CODE_PERMISSION)
        return value

    # admin surface, for a fake in another process: /_fake/audiences[/…]
    def admin(self, method: str, rest: str, body: Any) -> tuple[int, dict[str, Any]]:
        if method == "GET" and rest == "":
            return 200, {"audiences": [self._summary(a) for a in self.audiences()], "stats": self.stats}
        if method == "POST" and rest == "faults":
            try:
                self.apply_faults(body)
            except (TypeError, ValueError, AttributeError) as e:
                return 400, {"ok": False, "error": f"bad faults body: {e}"}
            return 200, {"ok": True}
        if method == "POST" and rest == "seed":
            try:
                return 200, {"audience_id": self.add_audience(str(body["advertiser_id"]), str(body["name"]),
                                                              str(body.get("type", PARTNER_TYPE)))}
            except (KeyError, TypeError) as e:
                return 400, {"ok": False, "error": f"seed needs advertiser_id and name ({e})"}
        if method == "POST" and rest == "reset":
            self.reset()
            return 200, {"ok": True}
        if method == "GET" and rest:
            with self._lock:
                audience = self._audiences.get(rest)
                if audience is not None:
                    summary = self._summary(audience)
                    summary["members"] = {k: sorted(v) for k, v in audience.hashes().items()}
                    return 200, summary
            return 404, {"ok": False, "error": f"no audience {rest}"}
        return 404, {"ok": False, "error": f"no admin route {method} /_fake/audiences/{rest}"}

    @staticmethod
    def _summary(audience: FakeAudience) -> dict[str, Any]:
        return {"advertiser_id": audience.advertiser_id, "audience_id": audience.audience_id,
                "name": audience.name, "type": audience.type, "cover_num": audience.cover_num,
                "members": {k: len(v) for k, v in audience.members.items() if v}}


def _positive_int(query: dict[str, str], key: str, default: int, maximum: int | None) -> int:
    text = query.get(key)
    if text is None:
        return default
    if not text.isdigit() or int(text) < 1:
        fail(key, NOT_INT + " (>= 1)")
    if maximum is not None and int(text) > maximum:
        fail(key, f"must be at most {maximum}")
    return int(text)


def _time_text(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
