"""Offline events rendered as JSON by DuckDB or PostgreSQL (sql_functions spells the SQL for each): the fast path.

For each row the warehouse either renders the event's JSON exactly as `EventBuilder` would build it, or
yields NULL, and Python builds that row (and gives its reason when it is not sent). SQL only takes the
rows whose every value it provably converts like Python: text trimmed of every Unicode whitespace, phones
written as real tables hold them (punctuation, "(0)", a 00 prefix, national numbers with
default_phone_region: connector/sql_phones.py follows phonenumbers' metadata), ids of at most
MAX_ID_LENGTH bytes, finite non-negative numbers below 2^63, times inside the attribution window. Anything
else (a comma-separated email, a non-ASCII email, a phone SQL cannot prove, a negative value, a time SQL
would have to guess the unit of…) goes the Python way. Columns that are not text, numbers or timestamps
(BLOB, LIST, STRUCT, MAP…) are never rendered, but for properties.contents from a DuckDB LIST of STRUCT column
(`_Renderer.contents`: each item rendered in a lambda). Mappings with fields this module does not render
(contents from a JSON text column, other event sources) use Python for every row.

One row per item (query._rendered_groups_sql): the event's first row carries its head (the event up to its properties)
and its properties' fields; every row carries its item's JSON, content id and quantity. Python joins them
(`RenderedItems`), and builds the event whose head or any item SQL left to it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from . import payload, sql_phones
from .sql_functions import FUNCTIONS, SqlFunctions, quoted
from .warehouse import StructLists, duckdb_kind
from .dialects import HEX64, Dialect
from .events import MAX_ID_LENGTH, Event, EventBuilder, Rejection, Row
from .mapping import CompiledMapping, Slot
from .query import (EVENT_CURSOR_COLUMN, FIRST_ROW_COLUMN, ITEM_JSON_COLUMN, SOURCE_ALIAS, TEXT_PASSED_KINDS, TIME_KINDS,
                    SelectPlan, quote)
from .tiktok_spec import CONTENT_TYPES, CURRENCIES, GENERIC_EVENT_NAMES, accepted_event_names
from .timeutil import MAX_SECONDS, UNITS, AttributionWindow
from .values import MAX_NUMBER

# The code points Python's str.strip() removes.
PYTHON_WHITESPACE = "".join(chr(code) for code in range(0x3001) if chr(code).isspace())
E164_FULL = "[+][1-9][0-9]{6,14}"
JSON_COLUMNS = ("tiktok_event_json", "tiktok_event_id", "tiktok_event_time", "tiktok_event_source_id")
_TEXT_PATHS = {"event_id": "id", "event_source_id": "id", "properties.order_id": "id",
               "properties.shop_id": "id", "properties.description": "str", "properties.search_string": "str"}
_RENDERED_PATHS = frozenset({"event", "event_time", "user.email", "user.phone", "properties.value",
                             "properties.currency", "properties.content_type", "properties.num_items",
                             "properties.content_ids", payload.CONTENTS, *_TEXT_PATHS})
_ITEM_PATHS = {f"{payload.CONTENTS}{payload.ITEM_MARK}.{key}": kind for key, kind in (
    ("content_id", "id"), ("content_name", "str"), ("content_category", "str"), ("brand", "str"), ("price", "number"),
    ("quantity", "int"))}
# One row per item (query._rendered_groups_sql): the event's head record on its first row (the event up to its
# properties, the properties' fields, the _GIVEN_BITS of the fields the mapping gives, event_time, the event
# source id's JSON or '', and the event id, joined by U+001F, which JSON text never holds unescaped: the event
# id, which may hold one, is last), then on every row the item's JSON ('' when empty), content id's JSON and
# quantity.
HEAD_COLUMN = "tiktok_event_head"
ITEM_COLUMNS = (ITEM_JSON_COLUMN, "tiktok_item_content_id", "tiktok_item_quantity")
SEPARATOR = "\x1f"
_SEPARATOR = SEPARATOR.encode()  # item rows come as UTF-8 bytes (SqlFunctions.utf8)
_GIVEN_BITS = {"content_type": 1, "content_ids": 2, "num_items": 4}
_DUCKDB_ONLY_PATHS = frozenset({"properties.content_ids", "properties.num_items", *_ITEM_PATHS})
_ELEMENT = "tiktok_item"  # the lambda variable of an item of a LIST of STRUCT column
_PREPARED_ALIAS = re.compile(r"\btiktok_[a-z_]+_\d+\b")


@dataclass(frozen=True)
class RenderedSelect:
    """SQL items (alias, expression) appended to the select list, and the parameters they bind."""

    items: tuple[tuple[str, str], ...]
    params: dict[str, Any]
    # Per-row values the items share, computed once below them, in layers: each uses the layers below.
    prepared: tuple[tuple[tuple[str, str], ...], ...]
    item_lists: bool = False  # contents[] rendered from a LIST column: rows with their items' JSON


@dataclass(frozen=True)
class _Contents:
    """SQL for contents[] from a LIST of STRUCT column, and for what it derives."""

    json: str  # the array's JSON; NULL when no item has a field
    ids: str  # content_ids' JSON: the items' ids, NULL when none has one
    all_counted: str  # every item has a quantity
    total: str  # the sum of the items' quantities (HUGEINT)


class _Layers:
    """Expressions computed once each, in layers: an expression is in the layer above the ones it uses."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.prepared: dict[str, str] = {}  # expression → alias
        self.layer_of: dict[str, int] = {}  # alias → layer, 0 being the lowest

    def alias(self, expression: str, name: str) -> str:
        alias = self.prepared.get(expression)
        if alias is None:
            alias = self.prepared[expression] = f"{self.prefix}{name}_{len(self.prepared)}"
            used = [self.layer_of[used] for used in _PREPARED_ALIAS.findall(expression) if used in self.layer_of]
            self.layer_of[alias] = 1 + max(used, default=-1)
        return alias

    def layers(self) -> tuple[tuple[tuple[str, str], ...], ...]:
        """Each layer's (alias, expression), from the lowest."""
        count = 1 + max(self.layer_of.values(), default=-1)
        return tuple(tuple((alias, expression) for expression, alias in self.prepared.items()
                           if self.layer_of[alias] == layer) for layer in range(count))


class _ItemLayers(_Layers):
    """Values computed once per item of a LIST column (DuckDB does not share subexpressions inside a lambda
    either): each layer is a list_transform that carries the item and the values of the layers below in a
    struct, and adds its own."""

    ITEM = "{each item}"  # stands for the item in the expressions prepared here (no SQL text holds it)

    def __init__(self) -> None:
        super().__init__("tiktok_each_")

    def prepare(self, expression: str, name: str) -> str:
        return f"{_ELEMENT}.{self.alias(expression, name)}"

    def transform(self, column: str, final: str) -> str:
        """The column's items, each as `final` over the item and its prepared values."""
        x, stage, item, carried = _ELEMENT, column, _ELEMENT, []
        for layer in self.layers():
            values = [f"tiktok_value := {item}", *(f"{alias} := {x}.{alias}" for alias in carried),
                      *(f"{alias} := {expression.replace(self.ITEM, item)}" for alias, expression in layer)]
            stage = f"list_transform({stage}, lambda {x}: struct_pack({', '.join(values)}))"
            carried += [alias for alias, _ in layer]
            item = f"{x}.tiktok_value"
        return f"list_transform({stage}, lambda {x}: {final.replace(self.ITEM, item)})"


class _Unsupported(Exception):
    """The mapping has something SQL does not render: every row goes through Python."""


def rendered_select(mapping: CompiledMapping, columns: Sequence[str], kinds: Sequence[str], cursor_index: int,
                    event_source: str, default_event_source_id: str | None, window: AttributionWindow,
                    builder: EventBuilder, dialect: Dialect,
                    struct_lists: StructLists | None = None) -> RenderedSelect | None:
    """The JSON-rendering items for this mapping, or None when the warehouse cannot render its events
    (only DuckDB and PostgreSQL can: see sql_functions; item rows and contents from a LIST of STRUCT column,
    whose fields `struct_lists` gives (ResultStream.struct_lists), only DuckDB)."""
    sql = FUNCTIONS.get(dialect.name)
    if sql is None or event_source != "offline" or (mapping.item_slots and dialect.name != "duckdb"):
        return None
    renderer = _Renderer(mapping, columns, kinds, default_event_source_id, window, builder, sql, struct_lists or {})
    if mapping.item_slots:  # rows of one event: query._rendered_groups_sql gives each its event's cursor and first row
        event_id = mapping.slot("event_id")
        if event_id is None or event_id.index is None or _item_rows_unrenderable(mapping, kinds, cursor_index):
            return None
        renderer.first_row = f"{SOURCE_ALIAS}.{FIRST_ROW_COLUMN}"
        renderer.fallback_if(f"{SOURCE_ALIAS}.{EVENT_CURSOR_COLUMN} is null")
    else:
        renderer.fallback_if(f"{SOURCE_ALIAS}.{quote(columns[cursor_index])} is null")
    try:
        return renderer.select()
    except _Unsupported:
        return None


def _item_rows_unrenderable(mapping: CompiledMapping, kinds: Sequence[str], cursor_index: int) -> bool:
    """A field reads the cursor column, which item rows replace with their event's newest cursor (an event_time
    from a timestamp cursor excepted: it is read as Unix seconds, apart from the cursor), or a column whose
    values query._rendered_groups_sql could not pass to Python as text."""
    slots = (*mapping.slots, *mapping.item_slots)
    return any(s.index == cursor_index and not (s.path == "event_time" and kinds[cursor_index] in TIME_KINDS)
               for s in slots) or any(s.index is not None and kinds[s.index] not in TEXT_PASSED_KINDS
                                      and not (s.path == "event_time" and kinds[s.index] in TIME_KINDS) for s in slots)


class _Renderer:
    def __init__(self, mapping: CompiledMapping, columns: Sequence[str], kinds: Sequence[str],
                 default_event_source_id: str | None, window: AttributionWindow, builder: EventBuilder,
                 sql: SqlFunctions, struct_lists: StructLists) -> None:
        self.mapping, self.columns, self.kinds, self.sql = mapping, columns, kinds, sql
        self.struct_lists = struct_lists
        self.default_event_source_id = default_event_source_id
        self.window, self.builder = window, builder
        self.params: dict[str, Any] = {**sql.whitespace_params(PYTHON_WHITESPACE),
                                       "tiktok_ws_other": PYTHON_WHITESPACE.replace(" ", ""), "tiktok_oldest": window.oldest,
                                       "tiktok_newest": window.newest}
        self.needs_python: list[str] = []  # conditions under which a row goes the Python way
        self.rows = _Layers("tiktok_")  # values prepared per row
        # Item rows: the condition of an event's first row, the only one whose event fields are used. While
        # `only_first` is set, prepared columns are computed on first rows only (NULL on the others).
        self.first_row: str | None = None
        self.only_first = False
        # While the items of a LIST column are rendered: their values prepared per item, not per row.
        self.element: _ItemLayers | None = None
        guard = sql.row_guard()
        if guard is not None:
            self.fallback_if(guard)

    def param(self, value: Any) -> str:
        name = f"tiktok_p{len(self.params)}"
        self.params[name] = value
        return f":{name}"

    def column(self, slot: Slot) -> tuple[str, str]:
        assert slot.index is not None
        return f"{SOURCE_ALIAS}.{quote(self.columns[slot.index])}", self.kinds[slot.index]

    def prepare(self, expression: str, name: str) -> str:
        """A column computed once per row below the items, in the layer above the prepared columns it uses:
        DuckDB does not share subexpressions inside CASE branches (a hash would be computed once for the
        checks and once more for the JSON)."""
        if self.element is not None:
            return self.element.prepare(expression, name)
        if self.only_first and self.first_row:
            expression = f"case when {self.first_row} then {expression} end"
        return f"{SOURCE_ALIAS}.{self.rows.alias(expression, name)}"

    def shared(self, json_value: str | None, name: str) -> str | None:
        """A field's JSON value, computed once per row (a bound constant is already computed)."""
        if json_value is None or json_value.startswith(":"):
            return json_value
        return self.prepare(json_value, name)

    def trimmed(self, expr: str) -> str:
        """The column as Python's str.strip() leaves it (every Unicode whitespace), computed once per row below
        the items (DuckDB does not share subexpressions inside CASE branches). SQL trims spaces first, which is
        fast; trimming every whitespace character costs several times more, so only a value that still
        starts or ends with other whitespace (a tab, a no-break space…) is trimmed again."""
        sql = self.sql
        spaces = self.prepare(sql.trim_spaces(sql.text(expr)), "spaced")
        return self.prepare(f"case when {spaces} <> '' and {sql.edge_whitespace(spaces)} "
                            f"then {sql.trim_whitespace(spaces)} else {spaces} end", "trimmed")

    def fallback_if(self, condition: str) -> None:
        self.needs_python.append(f"coalesce({condition}, false)")

    def constant(self, slot: Slot) -> str | None:
        """A mapped constant, converted by Python once: its JSON text, or None when it is left out."""
        if slot.constant is None:
            return None
        try:
            value = self.builder.converter(slot.path)(slot.constant)
        except Exception:  # a constant Python refuses: every row is rejected, by Python
            raise _Unsupported from None
        return None if value is None else self.param(orjson.dumps(value).decode())

    # ------------------------------------------------------------------ fields → JSON values (or NULL)

    def value(self, slot: Slot) -> str | None:
        """SQL for the JSON text of the field's value; NULL leaves the key out."""
        if slot.index is None:
            return self.constant(slot)
        expr, kind = self.column(slot)
        path = slot.path
        if path == "user.email":
            return self.email(expr, kind)
        if path == "user.phone":
            return self.phone(expr, kind)
        if path == "properties.value":
            return self.number(expr, kind)
        if path == "properties.currency":
            return self.currency(expr, kind)
        if path == "properties.content_type":
            return self.content_type(expr, kind)
        if path in _DUCKDB_ONLY_PATHS and self.sql.name != "duckdb":
            raise _Unsupported  # written in DuckDB's SQL only (lists, lambdas, hugeint)
        if path == "properties.content_ids":
            return self.id_list(expr, kind)
        field_kind = _TEXT_PATHS.get(path) or _ITEM_PATHS.get(path)
        if field_kind == "id":
            return self.identifier(expr, kind)
        if field_kind == "str":
            return self.text(expr, kind)
        if field_kind == "number":
            return self.number(expr, kind)
        if field_kind == "int" or path == "properties.num_items":
            return self.integer(expr, kind)[0]
        raise _Unsupported

    def contents(self, slot: Slot) -> _Contents:
        """properties.contents from a LIST of STRUCT column (DuckDB), as EventBuilder._contents_from_json converts
        its items: each with the fields TikTok knows, in the struct's order; an item with none is left out. A
        NULL item, or a value SQL cannot prove, sends the row to Python. Each item is rendered once, into a
        struct of its JSON, content id, quantity and whether Python must build the row."""
        fields = self.struct_lists.get(slot.index) if slot.index is not None else None
        if fields is None or self.mapping.item_slots or self.sql.name != "duckdb":
            raise _Unsupported  # a JSON text column, one row per item besides, lambdas elsewhere: Python
        outer, self.needs_python, self.element = self.needs_python, [], _ItemLayers()
        try:
            parts: list[str] = []
            content_id = quantity = "null"
            for position, (name, type_name) in enumerate(fields, 1):
                field_kind = _ITEM_PATHS.get(f"{payload.CONTENTS}{payload.ITEM_MARK}.{name}")
                if field_kind is None:
                    continue  # a key TikTok does not know: Python leaves it out
                expr, kind = f"struct_extract_at({_ItemLayers.ITEM}, {position})", duckdb_kind(type_name)
                if field_kind == "int":
                    json_value, number = self.integer(expr, kind)
                    # computed for refused items too: kept below 2^63, the sum of a list cannot overflow
                    quantity = f"case when {number} < {MAX_NUMBER} then cast({number} as hugeint) end"
                elif field_kind == "number":
                    json_value = self.decimal(expr, type_name) if kind == "decimal" else self.number(expr, kind)
                elif field_kind == "id":
                    json_value = content_id = self.identifier(expr, kind)
                else:
                    json_value = self.text(expr, kind)
                parts.append(f"'\"{name}\":' || ({json_value})")
            inner = f"concat_ws(',', {', '.join(parts)})" if parts else "''"
            refused = " or ".join([f"{_ItemLayers.ITEM} is null", *self.needs_python])
            items = self.element.transform(self.column(slot)[0], f"struct_pack(item := {inner}, content_id := "
                                           f"{content_id}, quantity := {quantity}, refused := {refused})")
        finally:
            self.needs_python, self.element = outer, None
        x = _ELEMENT
        items = self.prepare(items, "items")
        self.fallback_if(f"list_bool_or(list_transform({items}, lambda {x}: {x}.refused))")
        kept = self.prepare(f"list_filter(list_transform({items}, lambda {x}: {x}.item), lambda {x}: {x} <> '')", "kept")
        ids = self.prepare(f"list_filter(list_transform({items}, lambda {x}: {x}.content_id), "
                           f"lambda {x}: {x} is not null)", "content_ids")
        quantities = self.prepare(f"list_filter(list_transform({items}, lambda {x}: {x}.quantity), "
                                  f"lambda {x}: {x} is not null)", "quantities")
        return _Contents(
            json=f"case when len({kept}) > 0 then '[{{' || array_to_string({kept}, '}},{{') || '}}]' end",
            ids=f"case when len({ids}) > 0 then '[' || array_to_string({ids}, ',') || ']' end",
            all_counted=f"len({quantities}) = len({kept})",  # an item with a quantity is never left out
            total=self.prepare(f"list_sum({quantities})", "num_items"))

    def derived_from_contents(self, contents: str, derived: _Contents, given: Mapping[str, str]) -> list[str]:
        """content_type, content_ids and num_items from contents[] as events._derive_from_contents adds them,
        after the properties, where the mapping gives none for the row (`given`: their JSON values)."""
        def unless_given(key: str) -> str:
            return f" and ({given[key]}) is null" if key in given else ""

        counted = self.prepare(f"{contents} is not null and {derived.all_counted}{unless_given('num_items')}",
                               "counted")
        self.fallback_if(f"{counted} and {derived.total} >= {MAX_NUMBER}")  # Python refuses the sum
        return [f"case when {contents} is not null{unless_given('content_type')} then '\"content_type\":\"product\"' end",
                f"case when {contents} is not null{unless_given('content_ids')} then '\"content_ids\":' || {derived.ids} end",
                f"case when {counted} then '\"num_items\":' || cast({derived.total} as varchar) end"]

    def decimal(self, expr: str, type_name: str) -> str:
        """values.number of a Decimal (a DECIMAL inside a STRUCT reaches Python as one, not as a double): a whole
        value exactly, any other as the double nearest to it, which DuckDB's cast gives while the unscaled value
        fits in a double's 53 bits (larger ones go to Python)."""
        scale = re.fullmatch(r"DECIMAL\(\d+,\s*(\d+)\)", type_name.upper())
        if scale is None:
            raise _Unsupported
        whole = f"{expr} = trunc({expr})"
        self.fallback_if(f"{expr} < 0 or {expr} >= {MAX_NUMBER} or "
                         f"(not {whole} and abs({expr}) >= {2 ** 53 // 10 ** int(scale.group(1))})")
        return (f"case when {whole} then cast(cast({expr} as hugeint) as varchar) "
                f"else cast(to_json(cast({expr} as double)) as varchar) end")

    def quantity(self, slot: Slot) -> tuple[str | None, str]:
        """An item's quantity: its JSON text, and the number Python adds up into num_items."""
        if slot.index is None:
            json_value = self.constant(slot)
            return json_value, "null" if json_value is None else self.param(self.builder.converter(slot.path)(slot.constant))
        json_value, number = self.integer(*self.column(slot))
        return self.shared(json_value, "json"), number

    def identifier(self, expr: str, kind: str) -> str:
        if kind == "int":
            return f"('\"' || cast({expr} as varchar) || '\"')"
        if kind != "text":
            raise _Unsupported
        t = self.trimmed(expr)
        self.fallback_if(f"{self.sql.strlen(t)} > {MAX_ID_LENGTH}")  # Python refuses it (bytes: never fewer than characters)
        return f"cast(to_json(nullif({t}, '')) as varchar)"

    def text(self, expr: str, kind: str) -> str:
        if kind != "text":
            raise _Unsupported
        t = self.trimmed(expr)
        self.fallback_if(f"{self.sql.strlen(t)} > {payload.MAX_TEXT}")  # bytes: never fewer than characters
        return f"cast(to_json(nullif({t}, '')) as varchar)"

    def email(self, expr: str, kind: str) -> str:
        if kind != "text":
            raise _Unsupported
        sql, t = self.sql, self.trimmed(expr)
        hashed = self.prepare(_is_hashed(t, sql), "hashed")
        # '@' bound, not written: the SQL is in reports, where an '@' reads as an email that leaked
        comma, at = sql.contains(t, "','"), sql.contains(t, self.param("@"))
        self.fallback_if(f"not {hashed} and ({sql.strlen(t)} <> {sql.length(t)} or {comma})")
        return _hash_json(t, hashed, f"when {at} then '\"' || {sql.sha256(f'lower({t})')} || '\"'")

    def phone(self, expr: str, kind: str) -> str:
        if kind != "text":
            raise _Unsupported
        sql, t = self.sql, self.trimmed(expr)
        hashed = self.prepare(_is_hashed(t, sql), "hashed")
        # pii.normalize_phone's rewrite (drop "(0)", then punctuation), for values of digits, '+' and punctuation
        rewritten = _without_characters(f"replace({t}, '(0)', '')", " ()./-")
        c = self.prepare(f"case when {sql.full_match(t, '[+][0-9]+')} then {t} "
                         f"when {sql.full_match(t, sql_phones.PHONE_CHARACTERS)} then {rewritten} end", "phone_text")
        index = self.param(sql_phones.code_index())
        # E.164 as it is, unless a 0 follows the country code (pii.zero_after_country_code)
        code_length = sql.once(sql_phones.code_length(f"substr({c}, 2)", index, sql), "phone_code_length", self.prepare)
        direct = self.prepare(f"coalesce({sql.full_match(c, E164_FULL)} and ({code_length} = 0 "
                              f"or substr({c}, 2 + {code_length}, 1) <> '0'), false)", "phone_direct")
        region = self.builder.region
        digits_only = sql.full_match(c, "[0-9]+")
        abroad = self.prepare(f"case when {direct} then null when {sql.full_match(c, '00[0-9]+')} then substr({c}, 3) "
                              f"when {sql.full_match(c, '[+][0-9]+')} then substr({c}, 2) "
                              + ("" if region else f"when {digits_only} then {c} ") + "end", "phone_abroad")
        branches = [f"when {direct} then {c}",
                    f"when {abroad} is not null then {sql_phones.international(abroad, index, self.prepare, sql)}"]
        if region:
            home = self.prepare(f"case when not {direct} and {digits_only} and not starts_with({c}, '00') then {c} end",
                                "phone_home")
            national = sql_phones.national(home, region, self.prepare, sql)
            if national is not None:
                branches.append(f"when {home} is not null then {national}")
        e164 = self.prepare(f"case {' '.join(branches)} end", "phone")
        self.fallback_if(f"{t} <> '' and not {hashed} and {e164} is null")
        return _hash_json(t, hashed, f"else '\"' || {sql.sha256(e164)} || '\"'")

    def number(self, expr: str, kind: str) -> str:
        if kind == "int":  # Python keeps integers exact, up to 2^63
            self.fallback_if(f"{expr} < 0 or {expr} >= {MAX_NUMBER}")
            return f"cast({expr} as varchar)"
        if kind not in ("decimal", "float"):  # decimals reach Python as doubles (query.plan_select)
            raise _Unsupported
        d = self.sql.driver_double(expr, kind, self.prepare)
        self.fallback_if(f"{self.sql.not_finite(d)} or {d} < 0 or {d} >= {MAX_NUMBER}")
        return (f"case when {d} = trunc({d}) and abs({d}) < 9007199254740992 "
                f"then cast(cast({d} as bigint) as varchar) else cast(to_json({d}) as varchar) end")

    def integer(self, expr: str, kind: str) -> tuple[str, str]:
        """values.integer: a whole number from 0 to 2^63 (a whole double or decimal too): its JSON, its value."""
        if kind == "int":
            return self.number(expr, kind), expr
        if kind == "float":
            d = f"cast({expr} as double)"
            self.fallback_if(f"{self.sql.not_finite(d)} or {d} < 0 or {d} >= {MAX_NUMBER} or {d} <> trunc({d})")
            whole = f"try_cast({d} as bigint)"  # prepared for every row, refused ones too: no cast error
        elif kind == "decimal":  # Python gets a Decimal (query.plan_select turns only money and numbers to doubles)
            self.fallback_if(f"{expr} < 0 or {expr} >= {MAX_NUMBER} or {expr} <> trunc({expr})")
            whole = f"cast({expr} as hugeint)"
        else:
            raise _Unsupported
        return f"cast({whole} as varchar)", whole

    def content_type(self, expr: str, kind: str) -> str:
        if kind != "text":
            raise _Unsupported
        t = self.trimmed(expr)
        # Comparisons, not list_contains: DuckDB plans that as a hash join, several MB per query.
        self.fallback_if(f"not ({' or '.join(f'{t} = {self.param(name)}' for name in sorted(CONTENT_TYPES))})")
        return f"'\"' || {t} || '\"'"

    def id_list(self, expr: str, kind: str) -> str:
        """content_ids from comma-separated ids of printable ASCII (each trimmed of spaces, the only whitespace
        there can be), none longer than an id may be; other text, and LIST columns, go to Python."""
        if kind != "text":
            raise _Unsupported
        text = f"cast({expr} as varchar)"
        self.fallback_if(f"strlen({text}) > {MAX_ID_LENGTH} or regexp_matches({text}, '[^ -~]')")
        ids = self.prepare(f"list_filter(list_transform(string_split({text}, ','), lambda x: trim(x)), lambda x: x <> '')",
                           "ids")
        return f"case when len({ids}) > 0 then cast(to_json({ids}) as varchar) end"

    def currency(self, expr: str, kind: str) -> str:
        if kind != "text":
            raise _Unsupported
        sql, t = self.sql, self.trimmed(expr)
        code = sql.once(f"upper({t})", "currency", self.prepare)
        self.fallback_if(f"{sql.strlen(t)} <> {sql.length(t)} or not {sql.in_list(code, self.param(sorted(CURRENCIES)))}")
        return f"'\"' || {code} || '\"'"

    def event_name(self, slot: Slot) -> str:
        """Every spelling Python resolves to an accepted name, bound as two lists; others go to Python."""
        if slot.index is None:
            try:
                name = self.builder.resolve_name(slot.constant)
            except Exception:
                raise _Unsupported from None
            return self.param(orjson.dumps(name).decode())
        expr, kind = self.column(slot)
        if kind != "text":
            raise _Unsupported
        accepted = accepted_event_names("offline")
        exact = {name: name for name in accepted}
        exact.update({key: value if value in accepted else None for key, value in self.mapping.events.items()})
        generic = {key: value for key, value in GENERIC_EVENT_NAMES.items() if value in accepted}
        t = self.trimmed(expr)
        exact_keys, exact_values = self.param(list(exact)), self.param(list(exact.values()))
        generic_keys, generic_values = self.param(list(generic)), self.param(list(generic.values()))
        sql = self.sql
        name = self.prepare(f"case when {sql.in_list(t, exact_keys)} "
                            f"then {sql.lookup(t, exact_keys, exact_values)} "
                            f"when {sql.strlen(t)} = {sql.length(t)} "
                            f"then {sql.lookup(f'lower({t})', generic_keys, generic_values)} end",
                            "event_name")
        self.fallback_if(f"{name} is null")
        return f"cast(to_json({name}) as varchar)"

    def event_time(self, slot: Slot) -> str:
        if slot.index is None:
            raise _Unsupported
        expr, kind = self.column(slot)
        if kind in TIME_KINDS:
            seconds = self.sql.epoch_seconds(expr)
        elif kind == "int":
            # The unit by magnitude, as timeutil.seconds_from_number; only for times from 1970 on, where
            # SQL's integer division (towards zero) and Python's (towards the past) agree. abs() is not
            # used: it overflows on the smallest BIGINT.
            units = " ".join(f"when {expr} < {(MAX_SECONDS + 1) * factor} then "
                             f"{expr if factor == 1 else self.sql.integer_division(expr, factor)}"
                             for factor, _ in UNITS)
            seconds = f"(case when {expr} < 0 then null {units} end)"
        else:
            raise _Unsupported
        seconds = self.prepare(seconds, "seconds")
        self.fallback_if(f"{seconds} is null or not ({seconds} >= :tiktok_oldest and {seconds} < :tiktok_newest)")
        return seconds

    # ------------------------------------------------------------------ the event

    def select(self) -> RenderedSelect:
        slots = {s.path: s for s in self.mapping.slots}
        if not set(slots) <= _RENDERED_PATHS or not {"event", "event_id", "event_time"} <= set(slots):
            raise _Unsupported
        if any(s.path not in _ITEM_PATHS for s in self.mapping.item_slots):
            raise _Unsupported
        self.only_first = True
        event_id = self.shared(self.value(slots["event_id"]), "event_id")
        if event_id is None:
            raise _Unsupported
        self.fallback_if(f"({event_id}) is null")
        seconds = self.event_time(slots["event_time"])
        name = self.event_name(slots["event"])
        source = slots.get("event_source_id")
        source_id = self.shared(self.value(source), "event_source_id") if source is not None else None
        if source_id is None and not self.default_event_source_id:
            raise _Unsupported
        if source_id is not None and not self.default_event_source_id:
            self.fallback_if(f"({source_id}) is null")  # Python rejects it: missing_event_source_id
        sections: dict[str, list[str]] = {"user": [], "properties": []}
        given: dict[str, str] = {}  # the JSON values of fields contents[] would derive, where the mapping gives them
        contents: tuple[str, _Contents] | None = None
        for path, slot in slots.items():
            section, _, key = path.partition(".")
            if section in sections:
                if path == payload.CONTENTS:
                    derived = self.contents(slot)
                    json_value = self.shared(derived.json, "contents")
                    contents = (json_value, derived)
                else:
                    json_value = self.shared(self.value(slot), "json")
                if json_value is not None:
                    sections[section].append(f"'\"{key}\":' || ({json_value})")
                    if section == "properties" and key in _GIVEN_BITS:
                        given[key] = json_value
        if contents is not None:
            sections["properties"].extend(self.derived_from_contents(*contents, given))
        if not sections["user"]:
            raise _Unsupported  # offline events need email or phone: Python rejects every row
        user = self.prepare(f"concat_ws(',', {', '.join(sections['user'])})", "user")
        self.fallback_if(f"{user} = ''")  # no usable email or phone
        properties = (self.prepare(f"concat_ws(',', {', '.join(sections['properties'])})", "properties")
                      if sections["properties"] else "''")
        head = (f"'{{\"event\":' || {name} || ',\"event_time\":' || cast({seconds} as varchar) || "
                f"',\"event_id\":' || ({event_id}) || ',\"user\":{{' || {user} || '}}'")
        needs_python = " or ".join(self.needs_python)
        source_text = self.sql.json_string(source_id) if source_id is not None else "null"
        ids = ((JSON_COLUMNS[1], self.sql.json_string(event_id)), (JSON_COLUMNS[2], seconds),
               (JSON_COLUMNS[3], source_text))
        if self.first_row is None:
            body = (f"{head} || case when {properties} = '' then '' else ',\"properties\":{{' || {properties} || '}}' end "
                    f"|| '}}'")
            return RenderedSelect(((JSON_COLUMNS[0], f"case when not ({needs_python}) then {self.sql.utf8(body)} end"), *ids),
                                  self.params, self.rows.layers(), item_lists=contents is not None)
        # One row per item: the head (the event up to its properties, unclosed), the properties' fields and the
        # event's id, time and source on its first row; the item on every row.
        given_bits = " + ".join(f"case when ({json_value}) is null then 0 else {_GIVEN_BITS[key]} end"
                                for key, json_value in given.items()) or "0"
        record = " || chr(31) || ".join([head, properties, f"cast({given_bits} as varchar)",
                                          f"cast({seconds} as varchar)", f"coalesce({source_id or 'null'}, '')",
                                          ids[0][1]])
        rendered = f"case when {self.first_row} and not ({needs_python}) then {self.sql.utf8(record)} end"
        self.only_first = False
        return RenderedSelect(((HEAD_COLUMN, rendered), *self.items()), self.params, self.rows.layers())

    def items(self) -> tuple[tuple[str, str], ...]:
        """Each row's item: its JSON ('' when it has no field), content id and quantity, or NULLs when Python
        must read it."""
        self.needs_python = []
        fields: list[str] = []
        content_id = quantity = "null"
        for slot in self.mapping.item_slots:
            key = payload.CONTENT_ITEM_KEYS[slot.path]
            if key == "quantity":
                json_value, quantity = self.quantity(slot)
            else:
                json_value = self.shared(self.value(slot), "json")
                if key == "content_id" and json_value is not None:
                    content_id = json_value
            if json_value is not None:
                fields.append(f"'\"{key}\":' || ({json_value})")
        inner = self.prepare(f"concat_ws(',', {', '.join(fields)})", "item") if fields else "''"
        ok = f"not ({' or '.join(self.needs_python)})" if self.needs_python else "true"
        item = f"case when {inner} = '' then '' else '{{' || {inner} || '}}' end"
        return ((ITEM_COLUMNS[0], f"case when {ok} then {self.sql.utf8(item)} end"),
                (ITEM_COLUMNS[1], f"case when {ok} then {self.sql.utf8(content_id)} end"),
                (ITEM_COLUMNS[2], f"case when {ok} then {quantity} end"))


def _without_characters(expr: str, characters: str) -> str:
    """`expr` with every one of `characters` removed: a replace() each costs half one regexp_replace()."""
    for character in characters:
        expr = f"replace({expr}, {quoted(character)}, '')"
    return expr


def _is_hashed(t: str, sql: SqlFunctions) -> str:
    return f"({sql.strlen(t)} = 64 and {sql.full_match(t, HEX64[1:-1])})"  # the length first: cheap


def _hash_json(t: str, hashed: str, otherwise: str) -> str:
    """A match key's JSON string, as pii.hash_*: empty → left out, 64-hex → lowercased, else `otherwise`."""
    return f"case when {t} = '' then null when {hashed} then '\"' || lower({t}) || '\"' {otherwise} end"


class RenderedEvents:
    """Row groups → events: rows DuckDB rendered become events as they are; the others are built by Python."""

    def __init__(self, builder: EventBuilder, json_index: int, cursor_index: int,
                 default_event_source_id: str | None) -> None:
        self.builder, self.json_index, self.cursor_index = builder, json_index, cursor_index
        self.default_event_source_id = default_event_source_id or ""

    def build(self, groups: list[list[Row]]) -> list[Event | Rejection]:
        j, cursor, default_source, build = self.json_index, self.cursor_index, self.default_event_source_id, \
            self.builder.build
        out: list[Event | Rejection] = []
        for group in groups:
            row = group[0]
            text = row[j]
            if text is None:
                out.append(build(group))
            else:
                out.append(Event(row[j + 1], row[j + 3] or default_source, row[j + 2], row[cursor], text))
        return out

    def event_ids(self, groups: list[list[Row]]) -> list[str | None]:
        j, event_id = self.json_index, self.builder.event_id
        return [group[0][j + 1] if group[0][j] is not None else event_id(group) for group in groups]


class RenderedItems:
    """Item row groups (query._rendered_groups_sql) → events. A group whose head and every item SQL rendered is
    joined from their texts, with contents[] and what it derives (content_type, content_ids, num_items) as
    EventBuilder adds them; Python adds the items SQL left to it to a rendered head, and builds the event whose
    head it left (from the source values of the rows it reads, as the select plan gives them)."""

    CURSOR, HEAD, ITEM, CONTENT_ID, QUANTITY, SOURCE, GROUP = range(7)  # the columns of a row

    def __init__(self, builder: EventBuilder, plan: SelectPlan, default_event_source_id: str | None) -> None:
        assert plan.rendered_from is not None
        self.builder = builder
        self.default_event_source_id = default_event_source_id or ""
        self.readers = tuple(_TEXT_READERS[kind] for kind in plan.value_kinds[1:plan.rendered_from])

    def build(self, groups: list[list[Row]]) -> list[Event | Rejection]:
        return [self._rendered(group) or self._python(group) for group in groups]

    def _rendered(self, group: list[Row]) -> Event | None:
        """The group's event joined from its rendered head and items, with contents[] and what it derives as
        EventBuilder adds them (in one pass over the rows); None when Python must build it."""
        first = group[0]
        record = first[self.HEAD]
        if record is None:
            return None
        item_at, content_id_at, quantity_at = self.ITEM, self.CONTENT_ID, self.QUANTITY
        kept: list[bytes] = []
        content_ids: list[bytes] = []
        total: int | None = 0
        for row in group:
            text = row[item_at]
            if text is None:
                return None
            if text:  # an item with no field is left out, its quantity not counted
                kept.append(text)
                quantity = row[quantity_at]
                total = None if quantity is None or total is None else total + quantity
            if row[content_id_at] is not None:
                content_ids.append(row[content_id_at])
        head, properties, given, ids = self._head(record)
        body = _joined(head, properties, given, kept, content_ids, total)
        return None if body is None else Event(*ids, first[0], body)

    def _head(self, record: bytes) -> tuple[bytes, bytes, int, tuple[str, str, int]]:
        """A head record's parts (query._rendered_groups_sql): the head, the properties' fields, the fields the
        mapping gives (_GIVEN_BITS), and the event's id, source id and time (an Event's first fields)."""
        head, properties, given, seconds, source, event_id = record.split(_SEPARATOR, 5)
        source_id = orjson.loads(source) if source else self.default_event_source_id
        return head, properties, int(given), (event_id.decode(), source_id, int(seconds))

    def event_ids(self, groups: list[list[Row]]) -> list[str | None]:
        head_at, event_id = self.HEAD, self.builder.event_id
        return [group[0][head_at].split(_SEPARATOR, 5)[5].decode() if group[0][head_at] is not None
                else event_id(self._source_rows(group[:1])) for group in groups]

    def _source_rows(self, group: list[Row]) -> list[Row]:
        """The rows as the select plan gives them (cursor, then the source values), for EventBuilder."""
        readers, nothing = self.readers, (None,) * len(self.readers)
        return [(row[0], *(nothing if row[self.SOURCE] is None else
                           (None if text is None else read(text) for read, text in zip(readers, row[self.SOURCE]))))
                for row in group]

    def _python(self, group: list[Row]) -> Event | Rejection:
        """The group's event built by Python, from its rendered head and items where SQL rendered them."""
        texts = [row[self.ITEM] for row in group]
        items = [None if text is None else orjson.loads(text) if text else {} for text in texts]
        rows, record = self._source_rows(group), group[0][self.HEAD]
        if record is None:
            return self.builder.build(rows, items)
        head, properties, _, ids = self._head(record)
        return self.builder.finish(rows, Event(*ids, group[0][0], _closed(head, properties)), items)


# Source values reach Python as text (query._rendered_groups_sql; doubles as DuckDB writes them, which reads
# back to the same double): each read back to what the driver gives.
_TEXT_READERS: dict[str, Any] = {"text": str, "int": int, "decimal": Decimal, "float": float}


def _closed(head: bytes, properties: bytes) -> bytes:
    """A rendered head and its properties' fields, closed into the event's JSON (no contents[])."""
    return head + (b',"properties":{' + properties + b"}}" if properties else b"}")


def _joined(head: bytes, properties: bytes, given: int, kept: list[bytes], content_ids: list[bytes],
            total: int | None) -> bytes | None:
    """The event's JSON from its rendered head and its items' JSON, content ids and quantities' sum (None when
    an item has none); None: Python must tell why num_items is refused."""
    if not kept:
        return _closed(head, properties)
    contents = b'"contents":[' + b",".join(kept) + b"]"
    parts = [properties, contents] if properties else [contents]
    if not given & _GIVEN_BITS["content_type"]:
        parts.append(b'"content_type":"product"')
    if content_ids and not given & _GIVEN_BITS["content_ids"]:
        parts.append(b'"content_ids":[' + b",".join(content_ids) + b"]")
    if total is not None and not given & _GIVEN_BITS["num_items"]:
        if total >= MAX_NUMBER:
            return None
        parts.append(b'"num_items":%d' % total)
    return b"".join((head, b',"properties":{', b",".join(parts), b"}}"))
