"""Rows → TikTok events: map, check the attribution window, validate, normalize and hash.

A row group either becomes an `Event` (hashed, ready to send) or a `Rejection` (why it was not sent).
Plain emails and phones exist only inside `EventBuilder.build`.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from . import payload, pii
from .mapping import CompiledMapping, Slot
from .timeutil import AttributionWindow, to_unix_seconds
from .tiktok_spec import (ATT_STATUSES, CONTENT_TYPES, CURRENCIES, CUSTOMER_TYPES, EVENT_CHANNELS,
                          accepted_event_names, generic_event_names)

Row = Sequence[Any]


@dataclass(slots=True)  # not frozen: a frozen dataclass takes 1.1 µs to build, this one 0.17 µs
class Event:
    """One hashed event: `body` is exactly what goes into the request's `data` array, built by Python (a
    dict) or rendered by the warehouse (its JSON text, sent verbatim). Never changed once built."""

    event_id: str
    event_source_id: str
    event_time: int
    cursor: Any
    body: dict[str, Any] | str

    def wire(self) -> dict[str, Any] | orjson.Fragment:
        """What the request body embeds: orjson writes a Fragment's JSON as it is."""
        return orjson.Fragment(self.body) if type(self.body) is str else self.body

    def document(self) -> dict[str, Any]:
        return orjson.loads(self.body) if type(self.body) is str else self.body  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    detail: str
    event_id: str | None
    event_time: int | None
    cursor: Any


class _Invalid(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        self.reason, self.detail = reason, detail


def as_id(value: Any) -> str | None:
    """Ids are strings: 12345 → "12345", Decimal('1E+3') → "1000", 12.0 → "12"; never scientific notation."""
    if type(value) is str:
        text = value.strip()
        return text or None
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            return None
        return str(int(value)) if value == value.to_integral_value() else format(value, "f")
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    text = str(value).strip()
    return text or None


def _number(path: str, value: Any) -> int | float:
    if isinstance(value, bool):
        raise _Invalid("invalid_value", f"{path}: {value!r} is not a number")
    if isinstance(value, int):
        number: int | float = value
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise _Invalid("invalid_value", f"{path}: {value} is not a finite number")
        number = int(value) if value == value.to_integral_value() else float(value)
    else:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise _Invalid("invalid_value", f"{path}: {str(value)[:40]!r} is not a number") from None
        if number.is_integer() and not isinstance(value, float):
            number = int(number)
    if isinstance(number, float):
        if not math.isfinite(number):
            raise _Invalid("invalid_value", f"{path}: {value!r} is not a finite number")
        if number.is_integer() and abs(number) < 2 ** 53:
            number = int(number)  # 100.00 from any warehouse is sent as 100
    if number < 0:
        raise _Invalid("invalid_value", f"{path}: {number!r} is negative")
    return number


def _integer(path: str, value: Any) -> int:
    number = _number(path, value)
    if isinstance(number, float):
        if not number.is_integer():
            raise _Invalid("invalid_value", f"{path}: {number!r} is not a whole number")
        number = int(number)
    return number


def _bool(path: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"true", "1", "yes", "t"}:
        return True
    if text in {"false", "0", "no", "f"}:
        return False
    raise _Invalid("invalid_field", f"{path}: {str(value)[:20]!r} is not true/false")


def _enum(path: str, value: Any, allowed: frozenset[str]) -> str:
    text = str(value).strip()
    if text not in allowed:
        raise _Invalid("invalid_field", f"{path}: {text[:40]!r} is not one of {', '.join(sorted(allowed))}")
    return text


class EventBuilder:
    """Builds events for one sync: its compiled mapping, event source and attribution window.

    Each mapped field gets its converter once, here; `build` only runs them (it is the hot path)."""

    def __init__(self, mapping: CompiledMapping, event_source: str, default_event_source_id: str | None,
                 window: AttributionWindow, cursor_index: int, default_phone_region: str | None = None) -> None:
        self.mapping = mapping
        self.event_source = event_source
        self.default_event_source_id = default_event_source_id
        self.window = window
        self.cursor_index = cursor_index
        self.region = default_phone_region
        self.accepted_names = accepted_event_names(event_source)
        self._slot = {s.path: s for s in mapping.slots}
        self.event_id_index = self._slot["event_id"].index
        self._event_id = self._getter("event_id")
        self._event_time = self._getter("event_time")
        self._event = self._getter("event")
        self._event_source_id = self._getter("event_source_id")
        self._names: dict[Any, str] = {}
        self._fields = tuple(self._field(s) for s in mapping.slots
                             if s.path not in _HEAD_FIELDS and s.path not in payload.ENVELOPE_FIELDS)
        self._item_fields = tuple((payload.CONTENT_ITEM_KEYS[s.path], s.index, s.constant, self.converter(s.path))
                                  for s in mapping.item_slots)

    def _field(self, slot: Slot) -> tuple[str, str | None, int | None, Any, Callable[[Any], Any]]:
        section, _, key = slot.path.rpartition(".")
        return key, section or None, slot.index, slot.constant, self.converter(slot.path)

    def _getter(self, path: str) -> Callable[[Row], Any]:
        slot = self._slot.get(path)
        if slot is None or slot.index is None:
            constant = None if slot is None else slot.constant
            return lambda row: constant
        return operator.itemgetter(slot.index)

    def build(self, rows: Sequence[Row]) -> Event | Rejection:
        """Rows sharing one event_id (one per item, or just one) → an Event or the reason it is not sent."""
        head = rows[0]
        cursor = head[self.cursor_index]
        event_id = as_id(self._event_id(head))
        event_time: int | None = None
        try:
            if cursor is None:
                raise _Invalid("null_cursor", "the cursor column is NULL")
            if event_id is None:
                raise _Invalid("missing_event_id", "event_id: empty")
            raw_time = self._event_time(head)
            if raw_time is None:
                raise _Invalid("missing_event_time", "event_time: empty")
            event_time = to_unix_seconds(raw_time)
            if event_time is None:
                raise _Invalid("invalid_event_time", f"event_time: {str(raw_time)[:40]!r} is not a time")
            skip = self.window.reason(event_time)
            if skip:
                raise _Invalid(skip, self.window.explain(event_time))
            event_source_id = as_id(self._event_source_id(head)) or self.default_event_source_id
            if not event_source_id:
                raise _Invalid("missing_event_source_id", "event_source_id: empty")
            body: dict[str, Any] = {"event": self._event_name(head), "event_time": event_time, "event_id": event_id}
            for key, section, index, constant, convert in self._fields:
                raw = constant if index is None else head[index]
                if raw is None:
                    continue
                value = convert(raw)
                if value is None:
                    continue
                if section is None:
                    body[key] = value
                elif section in body:
                    body[section][key] = value
                else:
                    payload.set_path(body, section, {key: value})
            if self._item_fields:
                self._add_items(body, rows)
            elif "contents" in body.get("properties", ()):
                _derive_from_contents(body["properties"])
            self._check_source_rules(body)
        except _Invalid as problem:
            return Rejection(problem.reason, problem.detail, event_id, event_time, cursor)
        return Event(event_id, event_source_id, event_time, cursor, body)

    def build_all(self, groups: list[list[Row]]) -> list[Event | Rejection]:
        return [self.build(group) for group in groups]

    def event_ids(self, groups: list[list[Row]]) -> list[str | None]:
        return [self.event_id(group) for group in groups]

    def event_id(self, group: Sequence[Row]) -> str | None:
        """The id the group's event gets from `build`, read without building it."""
        return as_id(self._event_id(group[0]))

    def _event_name(self, row: Row) -> str:
        raw = self._event(row)
        name = self._names.get(raw)
        if name is None:
            name = self._names[raw] = self.resolve_name(raw)  # few distinct names: resolve each once
        return name

    def resolve_name(self, raw: Any) -> str:
        name = str(raw).strip() if raw is not None else ""
        if not name:
            raise _Invalid("missing_event", "event: empty")
        if name in self.mapping.events:
            name = self.mapping.events[name]
        elif name not in self.accepted_names:
            name = generic_event_names(self.event_source).get(name.lower(), name)
        if self.event_source != "web" and name not in self.accepted_names:
            raise _Invalid("unknown_event", f"event: {name[:60]!r} is not a TikTok {self.event_source} event name")
        return name

    def converter(self, path: str) -> Callable[[Any], Any]:
        """The function that turns a warehouse value into the field's TikTok value (None: leave it out)."""
        kind = payload.FIELDS[path][0]
        region = self.region
        simple: dict[str, Callable[[Any], Any]] = {
            "email": lambda raw: _hashed_list(raw, pii.hash_email),
            "phone": lambda raw: _hashed_list(raw, lambda text: pii.hash_phone(text, region)),
            "external_id": lambda raw: _hashed_list(raw, pii.hash_external_id),
            "currency": _currency_converter(path),
            "content_type": lambda raw: _enum(path, raw, CONTENT_TYPES),
            "event_channel": lambda raw: _enum(path, raw, EVENT_CHANNELS),
            "customer_type": lambda raw: _enum(path, str(raw).strip().lower(), CUSTOMER_TYPES),
            "att_status": lambda raw: _enum(path, str(raw).strip().upper(), ATT_STATUSES),
            "idfa": lambda raw: _device_id(raw, upper=True),
            "gaid": lambda raw: _device_id(raw, upper=False),
            "url": lambda raw: str(raw).strip()[:payload.MAX_URL] or None,
            "money": lambda raw: _number(path, raw),
            "number": lambda raw: _number(path, raw),
            "int": lambda raw: _integer(path, raw),
            "bool": lambda raw: _bool(path, raw),
            "id_list": lambda raw: [i for i in (as_id(v) for v in pii.split_values(raw)) if i] or None,
            "contents": lambda raw: self._contents_from_json(path, raw),
            "id": as_id,
        }
        return simple.get(kind, _text)

    def _contents_from_json(self, path: str, raw: Any) -> list[dict[str, Any]] | None:
        try:
            items = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            raise _Invalid("invalid_field", f"{path}: not valid JSON") from None
        if not isinstance(items, list):
            raise _Invalid("invalid_field", f"{path}: not a list of items")
        out = []
        for item in items:
            if not isinstance(item, dict):
                raise _Invalid("invalid_field", f"{path}: an item is not an object")
            content = {}
            for key, value in item.items():
                item_path = f"{payload.CONTENTS}{payload.ITEM_MARK}.{key}"
                if item_path in payload.FIELDS and value is not None:
                    converted = self.converter(item_path)(value)
                    if converted is not None:
                        content[key] = converted
            if content:
                out.append(content)
        return out or None

    def _add_items(self, body: dict[str, Any], rows: Sequence[Row]) -> None:
        contents = []
        for row in rows:
            item = {}
            for key, index, constant, convert in self._item_fields:
                raw = constant if index is None else row[index]
                if raw is not None:
                    value = convert(raw)
                    if value is not None:
                        item[key] = value
            if item:
                contents.append(item)
        if contents:
            body.setdefault("properties", {})["contents"] = contents
            _derive_from_contents(body["properties"])

    def _check_source_rules(self, body: dict[str, Any]) -> None:
        required = payload.REQUIRED_BY_SOURCE.get(self.event_source)
        if required and not payload.get_path(body, required):
            raise _Invalid("missing_required_field", f"{required}: required for {self.event_source} events")
        if self.event_source == "web":
            # TikTok's reference asks web events for a `page` object but only recommends page.url; its own
            # server-side GTM template sends an empty page when it has no URL, and so do we.
            body.setdefault("page", {})
        if self.event_source == "web" and not payload.get_path(body, "user.ttclid"):
            ttclid = _ttclid_from_url(payload.get_path(body, "page.url"))
            if ttclid:
                payload.set_path(body, "user.ttclid", ttclid)
        if self.event_source == "offline":
            user = body.get("user") or {}
            if not user.get("email") and not user.get("phone"):
                raise _Invalid("no_match_keys", "user: no usable email or phone")


def _derive_from_contents(properties: dict[str, Any]) -> None:
    """content_ids, num_items and content_type from contents[], unless the mapping gives them."""
    contents = properties["contents"]
    # Catalog and Video Shopping Ads matching need a content_type; Segment, RudderStack and Commanders Act
    # send "product" when items are present and none is mapped.
    properties.setdefault("content_type", "product")
    ids = [c["content_id"] for c in contents if "content_id" in c]
    if ids and "content_ids" not in properties:
        properties["content_ids"] = ids
    if "num_items" not in properties and all("quantity" in c for c in contents):
        properties["num_items"] = sum(c["quantity"] for c in contents)


_HEAD_FIELDS = frozenset({"event", "event_id", "event_time"})


def _text(raw: Any) -> str | None:
    text = str(raw).strip()
    return text[:payload.MAX_TEXT] or None


def _currency_converter(path: str) -> Callable[[Any], str]:
    seen: dict[Any, str] = {}

    def convert(raw: Any) -> str:
        code = seen.get(raw)
        if code is None:
            code = str(raw).strip().upper()
            if code not in CURRENCIES:
                raise _Invalid("invalid_currency", f"{path}: {code[:10]!r} is not a TikTok currency")
            seen[raw] = code
        return code

    return convert


def _hashed_list(raw: Any, hash_one: Callable[[str], str | None]) -> Any:
    """One hash, or a list of distinct hashes when the column holds several values."""
    if isinstance(raw, str) and "," not in raw:
        return hash_one(raw)
    hashed = [h for h in (hash_one(v) for v in pii.split_values(raw)) if h]
    if not hashed:
        return None
    return hashed[0] if len(hashed) == 1 else list(dict.fromkeys(hashed))


def _ttclid_from_url(url: str | None) -> str | None:
    """TikTok appends `ttclid=` to the landing page URL of an ad click."""
    if not url or "ttclid=" not in url:
        return None
    from urllib.parse import parse_qs, urlsplit
    values = parse_qs(urlsplit(url).query).get("ttclid") or [""]
    return values[0].strip() or None


_ZERO_DEVICE_ID = "00000000-0000-0000-0000-000000000000"


def _device_id(raw: Any, upper: bool) -> str | None:
    """IDFA/IDFV raw in upper case, GAID in lower case; hashed values lowercased; all-zero ids (limited
    ad tracking) dropped."""
    text = str(raw).strip()
    if not text or text == _ZERO_DEVICE_ID:
        return None
    if pii.is_hashed(text):
        return text.lower()
    return text.upper() if upper else text.lower()
