"""What may be a sync's cursor, and the stored watermark read as the cursor column's kind.

A cursor must sort rows in the order they change. Timestamps, dates and numbers do. Text does not: it
sorts '9' after '10', and ISO timestamps written as text sort right only while every row is written in
the same format and zone; a row that sorts below the watermark is never read, and the run still
succeeds. So a text cursor is refused, with the cast that fixes it in the query.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from typing import Any

from .errors import ConfigError
from .mapping import find_column

ORDERED_KINDS = frozenset({"timestamptz", "timestamp", "date", "int", "decimal", "float"})
NUMBER_TYPES = (int, Decimal, float)


def text_cursor_error(where: str, column: str, type_name: str) -> ConfigError:
    return ConfigError(where, f"column {column!r} is {type_name}: a cursor must be a timestamp, date or number "
                              "(text sorts '9' after '10', so rows would be skipped)",
                       f"cast it in the query, e.g. cast({column} as timestamp) as {column}, "
                       f"or cast({column} as bigint) as {column}")


def check_column(stored: str | None, columns: list[str], cursor_index: int, where: str, sync: str) -> None:
    """Refuse a cursor column other than the one the stored watermark was read from: its value means
    nothing in another column, and rows below it would never be read."""
    if stored is None or find_column(columns, stored) == cursor_index:
        return
    raise ConfigError(where, f"the stored watermark of sync {sync!r} belongs to column {stored!r}, "
                             f"not {columns[cursor_index]!r}",
                      f"restore cursor: {stored}, or run `tiktok-connector reset {sync}` to start over "
                      "(it also forgets the ledger of events sent)")


def check_kind(kind: str, where: str, column: str) -> None:
    """Refuse a column the warehouse reports as text; other kinds it does not name are checked by value."""
    if kind == "text":
        raise text_cursor_error(where, column, "text")


def kind_of(value: Any) -> str | None:
    """The cursor kind of a value read from the warehouse, or None when it cannot be a cursor."""
    if isinstance(value, dt.datetime):
        return "timestamptz" if value.tzinfo is not None else "timestamp"
    if isinstance(value, dt.date):
        return "date"
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return "int"
    if isinstance(value, Decimal):
        return "decimal"
    if isinstance(value, float):
        return "float"
    return None


def check_value(value: Any, watermark: Any, where: str, column: str, sync: str) -> None:
    """The first cursor value read, where the warehouse does not report the column's type: it must be a
    timestamp, date or number, of the stored watermark's kind (the read already compared them in SQL)."""
    kind = kind_of(value)
    if kind is None:
        raise text_cursor_error(where, column, "text" if isinstance(value, str) else type(value).__name__)
    if watermark is not None and _family(kind_of(watermark)) != _family(kind):
        raise _changed_kind(where, watermark, column, kind, sync)


def _family(kind: str | None) -> str | None:
    return "number" if kind in ("int", "decimal", "float") else kind


def watermark_as(kind: str, watermark: Any, where: str, column: str, sync: str) -> Any:
    """The stored watermark as a value of the cursor column's kind, so SQL and Python compare like with like.

    A watermark stored as text (by a text cursor, before they were refused) is read as the column's kind
    when it spells one: the fix for a text cursor, a cast in the query, then keeps its place. A watermark
    of another kind (the column's type changed) is refused."""
    if watermark is None or kind not in ORDERED_KINDS:
        return watermark
    value = _from_text(kind, watermark) if isinstance(watermark, str) else watermark
    if kind in ("int", "decimal", "float"):
        if isinstance(value, NUMBER_TYPES) and not isinstance(value, bool):
            return value
    elif isinstance(value, dt.datetime):
        if kind == "timestamptz":
            return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
        if kind == "timestamp":
            return value.astimezone(dt.timezone.utc).replace(tzinfo=None) if value.tzinfo else value
        return value.date()  # a day's rows are read again; the ledger skips those already sent
    elif isinstance(value, dt.date):
        if kind == "date":
            return value
        midnight = dt.datetime.combine(value, dt.time())  # the whole day is read again, as above
        return midnight.replace(tzinfo=dt.timezone.utc) if kind == "timestamptz" else midnight
    raise _changed_kind(where, watermark, column, kind, sync)


def _changed_kind(where: str, watermark: Any, column: str, kind: str, sync: str) -> ConfigError:
    return ConfigError(where, f"the stored watermark of sync {sync!r} is {_kind_name(watermark)}, but column "
                              f"{column!r} is {kind} now",
                       f"cast the column back in the query, or run `tiktok-connector reset {sync}` to start over")


def _from_text(kind: str, text: str) -> Any:
    try:
        if kind in ("timestamptz", "timestamp"):
            return dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        if kind == "date":
            return dt.date.fromisoformat(text.strip()[:10])
        number = Decimal(text.strip())
        if not number.is_finite():
            return text
        return int(number) if kind == "int" and number == number.to_integral_value() else number
    except (ValueError, InvalidOperation):
        return text


def _kind_name(value: Any) -> str:
    return "text" if isinstance(value, str) else (kind_of(value) or type(value).__name__)
