"""Rows → TikTok events: map, check the attribution window, validate, normalize and hash.

A row group either becomes an `Event` (hashed, ready to send) or a `Rejection` (why it was not sent), never
an exception: connector/values.py reads every warehouse value or says why it cannot. Plain emails and phones
exist only inside `EventBuilder.build`, and no reject's detail shows a value of a column mapped to one.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from . import payload, pii, values
from .mapping import CompiledMapping, Slot
from .reasons import REASONS
from .timeutil import AttributionWindow, to_unix_seconds, unix_seconds_in_range
from .tiktok_spec import (ATT_STATUSES, CONTENT_TYPES, CURRENCIES, CUSTOMER_TYPES, EVENT_CHANNELS,
                          accepted_event_names, generic_event_names)
from .values import MAX_ID_LENGTH, Invalid as _Invalid, as_id

__all__ = ["MAX_ID_LENGTH", "Event", "EventBuilder", "Rejection", "Row", "as_id"]

Row = Sequence[Any]
PII_PATHS = frozenset({"user.email", "user.phone", "user.external_id"})
_NAMES_CACHED = 10_000  # distinct event names remembered, so custom web names cannot grow memory with rows
_PHONES_CACHED = 50_000  # distinct phones hashed once each (phonenumbers takes 50 µs a number), at most


@dataclass(slots=True)  # not frozen: a frozen dataclass takes 1.1 µs to build, this one 0.17 µs
class Event:
    """One hashed event: `body` is exactly what goes into the request's `data` array, built by Python (a
    dict) or rendered by the warehouse (its JSON text, sent verbatim). Never changed once built."""

    event_id: str
    event_source_id: str
    event_time: int
    cursor: Any
    body: dict[str, Any] | str | bytes  # JSON text: str, or its UTF-8 bytes as DuckDB hands them over

    def wire(self) -> dict[str, Any] | orjson.Fragment:
        """What the request body embeds: orjson writes a Fragment's JSON as it is."""
        return self.body if type(self.body) is dict else orjson.Fragment(self.body)

    def document(self) -> dict[str, Any]:
        return self.body if type(self.body) is dict else orjson.loads(self.body)  # type: ignore[return-value,arg-type]


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    detail: str
    event_id: str | None
    event_time: int | None
    cursor: Any


def _enum(path: str, value: Any, allowed: frozenset[str], normalize: Callable[[str], str] = str) -> str:
    text = normalize(values.text(path, value, "invalid_field").strip())
    if text not in allowed:
        raise _Invalid("invalid_field", path, f"{path}: {text[:40]!r} is not one of {', '.join(sorted(allowed))}")
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
        time_slot = self._slot.get("event_time")
        self._warehouse_seconds = time_slot is not None and time_slot.unix_seconds
        self._names: dict[str, str] = {}
        self._fields = tuple(self._field(s) for s in mapping.slots
                             if s.path not in _HEAD_FIELDS and s.path not in payload.ENVELOPE_FIELDS)
        self._item_fields = tuple((payload.CONTENT_ITEM_KEYS[s.path], s.index, s.constant, self.converter(s.path))
                                  for s in mapping.item_slots)
        self._hidden = _sharing_pii_columns((*mapping.slots, *mapping.item_slots))

    def _field(self, slot: Slot) -> tuple[str, str | None, int | None, Any, Callable[[Any], Any]]:
        section, _, key = slot.path.rpartition(".")
        return key, section or None, slot.index, slot.constant, self.converter(slot.path)

    def _getter(self, path: str) -> Callable[[Row], Any]:
        slot = self._slot.get(path)
        if slot is None or slot.index is None:
            constant = None if slot is None else slot.constant
            return lambda row: constant
        return operator.itemgetter(slot.index)

    def build(self, rows: Sequence[Row], items: Sequence[dict[str, Any] | None] | None = None) -> Event | Rejection:
        """Rows sharing one event_id (one per item, or just one) → an Event or the reason it is not sent.
        `items`: the rows' items where the warehouse converted them already (None: read from the row)."""
        head = rows[0]
        cursor = head[self.cursor_index]
        raw_id = self._event_id(head)
        event_id = as_id(raw_id)
        event_time: int | None = None
        try:
            if cursor is None:
                raise _Invalid("null_cursor", "", "the cursor column is NULL")
            if event_id is None:
                values.identifier("event_id", raw_id, "invalid_event_id")  # raises when it is no id
                raise _Invalid("missing_event_id", "event_id", "event_id: empty")
            raw_time = self._event_time(head)
            if raw_time is None:
                raise _Invalid("missing_event_time", "event_time", "event_time: empty")
            event_time = self._seconds(raw_time)
            skip = self.window.reason(event_time)
            if skip:
                raise _Invalid(skip, "event_time", self.window.explain(event_time))
            event_source_id = values.identifier("event_source_id", self._event_source_id(head), "invalid_field") \
                or self.default_event_source_id
            if not event_source_id:
                raise _Invalid("missing_event_source_id", "event_source_id", "event_source_id: empty")
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
                self._add_items(body, rows, items)
            elif "contents" in body.get("properties", ()):
                _derive_from_contents(body["properties"])
            self._check_source_rules(body)
        except _Invalid as problem:
            return Rejection(problem.reason, self._detail(problem, rows, event_id, cursor), event_id, event_time,
                             cursor)
        return Event(event_id, event_source_id, event_time, cursor, body)

    def _seconds(self, raw: Any) -> int:
        """event_time in Unix seconds, or invalid_event_time."""
        if self._warehouse_seconds and type(raw) is int:
            seconds = unix_seconds_in_range(raw)
            if seconds is None:
                raise _Invalid("invalid_event_time", "event_time",
                               "event_time: the timestamp is infinite or outside the years 1 to 9999")
            return seconds
        given = values.text("event_time", raw, "invalid_event_time") if isinstance(raw, values.BYTES) else raw
        seconds = to_unix_seconds(given)
        if seconds is None:
            if isinstance(given, (int, float, Decimal)) and not isinstance(given, bool):
                raise _Invalid("invalid_event_time", "event_time", f"event_time: {values.describe(given)} is no "
                               "time of the years 1 to 9999 in seconds, milliseconds, microseconds or nanoseconds")
            raise _Invalid("invalid_event_time", "event_time", f"event_time: {values.describe(given)} is not a time")
        return seconds

    def finish(self, rows: Sequence[Row], head: Event, items: Sequence[dict[str, Any] | None]) -> Event | Rejection:
        """An event the warehouse rendered without its items (`head`) plus its rows' items, as `build` adds them
        (`items` as in `build`)."""
        body = head.document()
        try:
            self._add_items(body, rows, items)
            self._check_source_rules(body)
        except _Invalid as problem:
            return Rejection(problem.reason, self._detail(problem, rows, head.event_id, head.cursor), head.event_id,
                             head.event_time, head.cursor)
        return Event(head.event_id, head.event_source_id, head.event_time, head.cursor, body)

    def _detail(self, problem: _Invalid, rows: Sequence[Row], event_id: str | None, cursor: Any) -> str:
        """The problem's detail, with no value of a column mapped to an email, phone or external id, and the
        row's fingerprint when it has no event id (a re-read of the row is then told from a new row)."""
        detail = problem.detail
        pii_path = self._hidden.get(problem.path)
        if pii_path is not None:
            detail = (f"{problem.path}: {REASONS.get(problem.reason, problem.reason)} (the value is not shown: "
                      f"its column is mapped to {pii_path})")
        if event_id is None and cursor is not None:
            detail = f"{detail[:900]} (row {values.fingerprint(rows)})"
        return detail

    def build_all(self, groups: list[list[Row]]) -> list[Event | Rejection]:
        return [self.build(group) for group in groups]

    def event_ids(self, groups: list[list[Row]]) -> list[str | None]:
        return [self.event_id(group) for group in groups]

    def event_id(self, group: Sequence[Row]) -> str | None:
        """The id the group's event gets from `build`, read without building it (None: it gets none)."""
        return as_id(self._event_id(group[0]))

    def _event_name(self, row: Row) -> str:
        raw = self._event(row)
        if type(raw) is not str:
            return self.resolve_name(raw)  # bytes, lists…: rare, and not all of them can be a dict key
        name = self._names.get(raw)
        if name is None:
            name = self.resolve_name(raw)
            if len(self._names) < _NAMES_CACHED:
                self._names[raw] = name  # few distinct names: resolve each once
        return name

    def resolve_name(self, raw: Any) -> str:
        name = values.text("event", raw, "invalid_field").strip() if raw is not None else ""
        if not name:
            raise _Invalid("missing_event", "event", "event: empty")
        if name in self.mapping.events:
            name = self.mapping.events[name]
        elif name not in self.accepted_names:
            name = generic_event_names(self.event_source).get(name.lower(), name)
        if self.event_source != "web" and name not in self.accepted_names:
            raise _Invalid("unknown_event", "event",
                           f"event: {name[:60]!r} is not a TikTok {self.event_source} event name")
        return name

    def converter(self, path: str) -> Callable[[Any], Any]:
        """The function that turns a warehouse value into the field's TikTok value (None: leave it out)."""
        kind = payload.FIELDS[path][0]
        region = self.region
        simple: dict[str, Callable[[Any], Any]] = {
            "email": lambda raw: _hashed_list(path, raw, pii.hash_email),
            "phone": lambda raw: _hashed_list(path, raw, _phone_hasher(region)),
            "external_id": lambda raw: _hashed_list(path, raw, pii.hash_external_id),
            "currency": _currency_converter(path),
            "content_type": lambda raw: _enum(path, raw, CONTENT_TYPES),
            "event_channel": lambda raw: _enum(path, raw, EVENT_CHANNELS),
            "customer_type": lambda raw: _enum(path, raw, CUSTOMER_TYPES, str.lower),
            "att_status": lambda raw: _enum(path, raw, ATT_STATUSES, str.upper),
            "idfa": lambda raw: _device_id(path, raw, upper=True),
            "gaid": lambda raw: _device_id(path, raw, upper=False),
            "url": lambda raw: _text(path, raw, payload.MAX_URL),
            "money": lambda raw: values.number(path, raw),
            "number": lambda raw: values.number(path, raw),
            "int": lambda raw: values.integer(path, raw),
            "bool": lambda raw: values.boolean(path, raw),
            "id_list": lambda raw: _id_list(path, raw),
            "contents": lambda raw: self._contents_from_json(path, raw),
            "id": lambda raw: values.identifier(path, raw, "invalid_field"),
        }
        return simple.get(kind, lambda raw: _text(path, raw, payload.MAX_TEXT))

    def _contents_from_json(self, path: str, raw: Any) -> list[dict[str, Any]] | None:
        try:
            items = json.loads(values.text(path, raw, "invalid_field")) \
                if isinstance(raw, (str, *values.BYTES)) else raw
        except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
            raise _Invalid("invalid_field", path, f"{path}: not valid JSON") from None
        if not isinstance(items, (list, tuple)):
            raise _Invalid("invalid_field", path, f"{path}: not a list of items")
        out = []
        for item in items:
            if not isinstance(item, dict):
                raise _Invalid("invalid_field", path, f"{path}: an item is not an object")
            content = {}
            for key, value in item.items():
                item_path = f"{payload.CONTENTS}{payload.ITEM_MARK}.{key}"
                if item_path in payload.FIELDS and value is not None:
                    try:
                        converted = self.converter(item_path)(value)
                    except _Invalid as problem:  # the column is `path`'s: so is the problem
                        raise _Invalid(problem.reason, path, problem.detail) from None
                    if converted is not None:
                        content[key] = converted
            if content:
                out.append(content)
        return out or None

    def _add_items(self, body: dict[str, Any], rows: Sequence[Row],
                   converted: Sequence[dict[str, Any] | None] | None = None) -> None:
        contents = []
        for position, row in enumerate(rows):
            item = converted[position] if converted is not None else None
            if item is None:
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
            raise _Invalid("missing_required_field", required,
                           f"{required}: required for {self.event_source} events")
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
                raise _Invalid("no_match_keys", "user", "user: no usable email or phone")


def _sharing_pii_columns(slots: Sequence[Slot]) -> dict[str, str]:
    """Fields that read a column mapped to an email, phone or external id → that PII field: their rejects
    must not show the value."""
    def column(slot: Slot) -> int | None:
        return slot.column if slot.column is not None else slot.index

    pii_columns = {column(s): s.path for s in slots if s.path in PII_PATHS and column(s) is not None}
    return {s.path: pii_columns[column(s)] for s in slots
            if s.path not in PII_PATHS and column(s) is not None and column(s) in pii_columns}


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
        total = sum(c["quantity"] for c in contents)
        if total >= values.MAX_NUMBER:
            raise _Invalid("invalid_value", "properties.contents[].quantity",
                           "properties.num_items: the items' quantities add up to too large a number")
        properties["num_items"] = total


_HEAD_FIELDS = frozenset({"event", "event_id", "event_time"})


def _text(path: str, raw: Any, longest: int) -> str | None:
    """Text fields are cut, not refused, when they are longer than TikTok needs."""
    return values.text(path, raw, "invalid_field").strip()[:longest] or None


def _currency_converter(path: str) -> Callable[[Any], str]:
    seen: dict[str, str] = {}

    def convert(raw: Any) -> str:
        code = seen.get(raw) if type(raw) is str else None
        if code is None:
            code = values.text(path, raw, "invalid_currency").strip().upper()
            if code not in CURRENCIES:
                raise _Invalid("invalid_currency", path, f"{path}: {code[:10]!r} is not a TikTok currency")
            if type(raw) is str:
                seen[raw] = code
        return code

    return convert


def _hashed_list(path: str, raw: Any, hash_one: Callable[[str], str | None]) -> Any:
    """One hash, or a list of distinct hashes when the column holds several values."""
    if type(raw) is str and "," not in raw and values.is_utf8(raw):
        return hash_one(raw)
    hashed = [h for h in (hash_one(v) for v in values.texts(path, raw, "invalid_field")) if h]
    if not hashed:
        return None
    return hashed[0] if len(hashed) == 1 else list(dict.fromkeys(hashed))


def _phone_hasher(region: str | None) -> Callable[[str], str | None]:
    """pii.hash_phone, asked once per distinct value: the rows SQL leaves to Python are mostly phones only
    phonenumbers can decide, and the same customer's phone comes back order after order. The first
    _PHONES_CACHED values are remembered (memory must not grow with rows)."""
    seen: dict[str, str | None] = {}

    def hashed(text: str) -> str | None:
        if text in seen:
            return seen[text]
        result = pii.hash_phone(text, region)
        if len(seen) < _PHONES_CACHED:
            seen[text] = result
        return result

    return hashed


def _id_list(path: str, raw: Any) -> list[str] | None:
    """content_ids: a list/array column or comma-separated ids, each read as an id."""
    items = raw if isinstance(raw, (list, tuple)) else values.text(path, raw, "invalid_field").split(",")
    ids = [i for i in (values.identifier(path, item, "invalid_field") for item in items) if i]
    return ids or None


def _ttclid_from_url(url: str | None) -> str | None:
    """TikTok appends `ttclid=` to the landing page URL of an ad click."""
    if not url or "ttclid=" not in url:
        return None
    from urllib.parse import parse_qs, urlsplit
    try:
        values_ = parse_qs(urlsplit(url).query).get("ttclid") or [""]
    except ValueError:  # e.g. "http://[::1": not a URL whose query can be read
        return None
    return values_[0].strip() or None


_ZERO_DEVICE_ID = "00000000-0000-0000-0000-000000000000"


def _device_id(path: str, raw: Any, upper: bool) -> str | None:
    """IDFA/IDFV raw in upper case, GAID in lower case; hashed values lowercased; all-zero ids (limited
    ad tracking) dropped. Device ids are ids: one longer than MAX_ID_LENGTH is refused."""
    text = values.identifier(path, raw, "invalid_field")
    if not text or text == _ZERO_DEVICE_ID:
        return None
    if pii.is_hashed(text):
        return text.lower()
    return text.upper() if upper else text.lower()
