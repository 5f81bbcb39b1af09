"""The fake TikTok's validation: TikTok's 40002 rules for a track body, per the contract."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NoReturn

from connector.tiktok_spec import (
    APP_EVENTS, ATT_STATUSES, CODE_INVALID_PARAMETER, CODE_PERMISSION, CODE_TOKEN_EMPTY, CODE_TOKEN_INVALID,
    CONTENT_TYPES, CURRENCIES, CUSTOMER_TYPES, EVENT_CHANNELS, EVENT_SOURCES, MAX_EVENTS_PER_REQUEST,
    accepted_event_names,
)

MIN_EVENT_TIME = 1_420_070_400  # 2015-01-01T00:00:00Z; anything older is taken for a unit mistake
MAX_FUTURE_SECONDS = 86_400
AUTH_MESSAGES = {
    CODE_PERMISSION: "No permission to access event source id",
    40101: "Access token is invalid",
    40102: "Access token has expired",
    CODE_TOKEN_EMPTY: "Access token is empty: send it in the Access-Token header",
    CODE_TOKEN_INVALID: "Access token is incorrect or has been revoked",
}

MISSING, NOT_STR, NOT_INT = "Missing data for required field", "Not a valid string", "Not a valid integer"
NOT_NUM, NOT_LIST, NOT_OBJ = "Not a valid number", "Not a valid list", "Not a valid object"
NOT_CHOICE, NOT_HASH = "Not a valid choice", "must be a SHA-256 hex digest"


class Rejected(Exception):
    def __init__(self, message: str, code: int = CODE_INVALID_PARAMETER) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def fail(path: str, message: str) -> NoReturn:
    raise Rejected(f"{path}: {message}")


# A rule is (allowed JSON types, allowed values or None, message). `type(v) in types` rather than
# isinstance keeps true/false out of integer fields, as TikTok does.
_Rule = tuple[tuple[type, ...], frozenset[str] | None, str]
_STR: _Rule = ((str,), None, NOT_STR)
_INT: _Rule = ((int,), None, NOT_INT)
_NUM: _Rule = ((int, float), None, NOT_NUM)
_PROPERTY_RULES: dict[str, _Rule] = {
    "currency": ((str,), CURRENCIES, NOT_CHOICE), "value": _NUM, "contents": ((list,), None, NOT_LIST),
    "content_ids": ((list,), None, NOT_LIST), "content_type": ((str,), CONTENT_TYPES, NOT_CHOICE),
    "num_items": _INT, "order_id": _STR, "shop_id": _STR, "description": _STR, "search_string": _STR,
    "event_channel": ((str,), EVENT_CHANNELS, NOT_CHOICE),
    "customer_type": ((str,), CUSTOMER_TYPES, NOT_CHOICE),
}
_CONTENT_RULES: dict[str, _Rule] = {
    "content_id": _STR, "price": _NUM, "quantity": _INT, "content_name": _STR,
    "content_category": _STR, "brand": _STR,
}
_EVENT_NAMES: dict[str, frozenset[str] | None] = {
    "offline": accepted_event_names("offline"),
    "crm": accepted_event_names("crm"),
    "app": APP_EVENTS,
    "web": None,  # pixels may send custom event names
}
# The object each source must carry, its id-like key, and whether that key is required: web events need a
# `page`, but page.url is only recommended (TikTok's server-side GTM template sends `page: {}` without one).
_REQUIRED_OBJECT = {"web": ("page", "url", False), "app": ("app", "app_id", True), "crm": ("lead", "lead_id", True)}
_HASHED_USER_KEYS = ("email", "phone", "external_id")
# Offline events match on email and phone only; the connector must not leak web/app keys there.
_OFFLINE_FORBIDDEN = frozenset({"ttclid", "ttp", "ip", "user_agent", "external_id", "idfa", "idfv", "gaid",
                                "locale", "att_status"})
_WEB_ONLY_USER_KEYS = frozenset({"ttclid", "ttp"})
# Objects that only some sources may carry.
_OBJECT_SOURCES = {"page": {"web"}, "app": {"app"}, "lead": {"crm"}, "ad": {"web", "app"}}
_is_hex64 = re.compile(r"[0-9a-f]{64}").fullmatch


def validate_body(body: dict[str, Any], now: float, known_ids: set[str] | None) -> tuple[str, str, list]:
    """Check a track body like TikTok, raising Rejected on the first problem; return
    (event_source, event_source_id, data)."""
    source = body.get("event_source")
    if type(source) is not str or source not in EVENT_SOURCES:
        fail("event_source", MISSING if source is None else f"Must be one of {sorted(EVENT_SOURCES)}")
    source_id = body.get("event_source_id")
    if type(source_id) is not str or not source_id:
        fail("event_source_id", MISSING if source_id is None else "Not a valid string (non-empty)")
    for key in ("test_event_code", "partner_name"):
        if key in body and type(body[key]) is not str:
            fail(key, NOT_STR)
    data = body.get("data")
    if type(data) is not list:
        fail("data", MISSING if data is None else NOT_LIST)
    if not 1 <= len(data) <= MAX_EVENTS_PER_REQUEST:
        fail("data", f"Length must be between 1 and {MAX_EVENTS_PER_REQUEST}")
    if known_ids is not None and source_id not in known_ids:
        raise Rejected(AUTH_MESSAGES[CODE_PERMISSION], CODE_PERMISSION)
    names, max_time = _EVENT_NAMES[source], now + MAX_FUTURE_SECONDS
    for i, event in enumerate(data):
        _check_event(event, i, source, names, max_time)
    return source, source_id, data


def _check_event(ev: Any, i: int, source: str, names: frozenset[str] | None, max_time: float) -> None:
    if type(ev) is not dict:
        fail(f"data.{i}", NOT_OBJ)
    name = ev.get("event")
    if type(name) is not str or not name:
        fail(f"data.{i}.event", MISSING if name is None else NOT_STR)
    if names is not None and name not in names:
        fail(f"data.{i}.event", f"{name!r} is not a supported {source} event")
    t = ev.get("event_time")
    if type(t) is not int:
        fail(f"data.{i}.event_time", MISSING if t is None else NOT_INT)
    if not MIN_EVENT_TIME <= t <= max_time:
        fail(f"data.{i}.event_time", "must be Unix seconds")
    if "event_id" in ev and type(ev["event_id"]) is not str:
        fail(f"data.{i}.event_id", NOT_STR)
    user = ev.get("user")
    if user is not None or source == "offline":
        _check_user(user, i, source == "offline")
        if source != "web" and type(user) is dict and not _WEB_ONLY_USER_KEYS.isdisjoint(user):
            key = next(k for k in user if k in _WEB_ONLY_USER_KEYS)
            fail(f"data.{i}.user.{key}", f"not supported for {source} events")
        if type(user) is dict and "att_status" in user and user["att_status"] not in ATT_STATUSES:
            fail(f"data.{i}.user.att_status", NOT_CHOICE)
    for key, sources in _OBJECT_SOURCES.items():
        if key in ev and source not in sources:
            fail(f"data.{i}.{key}", f"not supported for {source} events")
    if "limited_data_use" in ev and type(ev["limited_data_use"]) is not bool:
        fail(f"data.{i}.limited_data_use", "Not a valid boolean")
    if "properties" in ev:
        _check_properties(ev["properties"], f"data.{i}.properties")
    if source in _REQUIRED_OBJECT:
        obj_key, field, field_required = _REQUIRED_OBJECT[source]
        obj = ev.get(obj_key)
        if type(obj) is not dict:
            fail(f"data.{i}.{obj_key}", MISSING if obj is None else NOT_OBJ)
        _check_fields(obj, f"data.{i}.{obj_key}", {field: _STR}, required=field if field_required else None)


def _check_user(user: Any, i: int, offline: bool) -> None:
    if user is None:
        user = {}  # only offline events get here without one, to fail below
    elif type(user) is not dict:
        fail(f"data.{i}.user", NOT_OBJ)
    if offline and not _OFFLINE_FORBIDDEN.isdisjoint(user):
        key = next(k for k in user if k in _OFFLINE_FORBIDDEN)
        fail(f"data.{i}.user.{key}", "not supported for offline events")
    if offline and "email" not in user and "phone" not in user:
        fail(f"data.{i}.user", "offline events need email or phone")
    for key in _HASHED_USER_KEYS:
        if key in user:
            v = user[key]
            if type(v) is str and _is_hex64(v):
                continue
            if type(v) is not list or not v or not all(type(x) is str and _is_hex64(x) for x in v):
                fail(f"data.{i}.user.{key}", NOT_HASH)


def _check_properties(props: Any, p: str) -> None:
    _check_fields(props, p, _PROPERTY_RULES)
    if props.get("value", 0) < 0:
        fail(f"{p}.value", "must be >= 0")
    if "content_ids" in props and not all(type(x) is str for x in props["content_ids"]):
        fail(f"{p}.content_ids", "Not a valid list of strings")
    for j, item in enumerate(props.get("contents", ())):
        if type(item) is not dict or _bad_key(item, _CONTENT_RULES) is not None:  # the path only for an error
            _check_fields(item, f"{p}.contents.{j}", _CONTENT_RULES)


def _check_fields(obj: Any, p: str, rules: Mapping[str, _Rule], required: str | None = None) -> None:
    if type(obj) is not dict:
        fail(p, NOT_OBJ)
    key = _bad_key(obj, rules)
    if key is not None:
        fail(f"{p}.{key}", rules[key][2])
    if required is not None and required not in obj:
        fail(f"{p}.{required}", MISSING)


def _bad_key(obj: dict[str, Any], rules: Mapping[str, _Rule]) -> str | None:
    """The first key whose value breaks its rule; keys without a rule are ignored, as TikTok ignores them."""
    for key, v in obj.items():
        rule = rules.get(key)
        if rule is not None and (type(v) not in rule[0] or rule[1] is not None and v not in rule[1]):
            return key
    return None
