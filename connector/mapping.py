"""Mapping files: which query column feeds which TikTok field, compiled against a result's columns."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import payload
from .errors import ConfigError
from .files import load_yaml

BUILTIN_DIR = Path(__file__).parent / "mappings"
DEFAULT_MAPPING = "amperity.yml"
REQUIRED_FIELDS = ("event", "event_id", "event_time")


@dataclass(frozen=True)
class FieldSpec:
    path: str
    column: str | None = None
    constant: Any = None


@dataclass(frozen=True)
class Mapping:
    file: str
    fields: tuple[FieldSpec, ...]
    events: dict[str, str] = field(default_factory=dict)
    lenient: bool = False  # built-in mappings skip columns the query does not return


@dataclass(frozen=True)
class Slot:
    """Where one field's value comes from in a row: a column index, or a constant when index is None."""

    path: str
    index: int | None
    constant: Any = None
    column: int | None = None  # the query column it reads, kept when a select plan re-points `index`
    unix_seconds: bool = False  # the warehouse turned the column's timestamps into Unix seconds


@dataclass(frozen=True)
class CompiledMapping:
    slots: tuple[Slot, ...]
    item_slots: tuple[Slot, ...]
    events: dict[str, str]
    not_applicable: tuple[str, ...]

    def slot(self, path: str) -> Slot | None:
        return next((s for s in self.slots if s.path == path), None)


def load_mapping(name: str | None, mappings_dir: Path) -> Mapping:
    """A mapping from the project's mappings/ folder, else a built-in one; no name means the default."""
    file_name = name or DEFAULT_MAPPING
    path = mappings_dir / file_name
    lenient = False
    if not path.is_file():
        builtin = BUILTIN_DIR / file_name
        if not builtin.is_file():
            shipped = ", ".join(sorted(p.name for p in BUILTIN_DIR.glob("*.yml")))
            raise ConfigError(str(path), "mapping file not found",
                              f"create it, or use a built-in mapping ({shipped})")
        path, lenient = builtin, name is None
    raw = load_yaml(path) or {}
    if not isinstance(raw, dict) or not isinstance(raw.get("fields"), dict):
        raise ConfigError(f"{path}: fields", "missing", "map TikTok fields to columns, e.g. fields: {event_id: order_id}")
    unknown = set(raw) - {"fields", "events"}
    if unknown:
        raise ConfigError(f"{path}: {sorted(unknown)[0]}", "unknown key", "a mapping has 'fields:' and 'events:'")
    specs = tuple(_field_spec(str(path), str(target), value) for target, value in raw["fields"].items())
    for required in REQUIRED_FIELDS:
        if not any(spec.path == required for spec in specs):
            raise ConfigError(f"{path}: fields.{required}", "missing", f"map a column to {required}")
    events = raw.get("events") or {}
    if not isinstance(events, dict):
        raise ConfigError(f"{path}: events", "must map warehouse names to TikTok names", "e.g. purchase: Purchase")
    return Mapping(str(path), specs, {str(k): str(v) for k, v in events.items()}, lenient)


def _field_spec(file: str, target: str, value: Any) -> FieldSpec:
    if target not in payload.FIELDS:
        close = difflib.get_close_matches(target, list(payload.FIELDS), n=1)
        hint = f"did you mean {close[0]!r}?" if close else "see the README's field reference"
        raise ConfigError(f"{file}: fields.{target}", "not a TikTok event field", hint)
    if isinstance(value, dict):
        if set(value) != {"value"}:
            raise ConfigError(f"{file}: fields.{target}", "a constant is written {value: ...}", "e.g. {value: USD}")
        return FieldSpec(target, constant=value["value"])
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{file}: fields.{target}", "must name a column", "or write {value: ...} for a constant")
    return FieldSpec(target, column=value.strip())


def compile_mapping(mapping: Mapping, columns: list[str], event_source: str) -> CompiledMapping:
    """Resolve column names to indexes (exact, then case-insensitive) and drop fields the source cannot use."""
    slots: list[Slot] = []
    not_applicable: list[str] = []
    for spec in mapping.fields:
        if not payload.applies_to(spec.path, event_source):
            if not (mapping.lenient and spec.column is not None and find_column(columns, spec.column) is None):
                not_applicable.append(spec.path)  # a built-in mapping's column the query lacks needs no note
            continue
        if spec.column is None:
            slots.append(Slot(spec.path, None, spec.constant))
            continue
        index = find_column(columns, spec.column)
        if index is None:
            if mapping.lenient and spec.path not in REQUIRED_FIELDS:
                continue
            raise ConfigError(f"{mapping.file}: fields.{spec.path}",
                              f"column {spec.column!r} is not in the query result",
                              f"the query returns: {', '.join(columns)}")
        slots.append(Slot(spec.path, index, column=index))
    return CompiledMapping(
        slots=tuple(s for s in slots if not payload.is_item_field(s.path)),
        item_slots=tuple(s for s in slots if payload.is_item_field(s.path)),
        events=mapping.events,
        not_applicable=tuple(not_applicable),
    )


def find_column(columns: list[str], name: str) -> int | None:
    for i, column in enumerate(columns):
        if column == name:
            return i
    return next((i for i, column in enumerate(columns) if column.lower() == name.lower()), None)
