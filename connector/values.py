"""Warehouse values as the scalars TikTok fields take (text, ids, numbers), or why a value cannot be one.

Drivers hand over more than text and numbers: bytes (DuckDB BLOB, PostgreSQL bytea as a memoryview),
lists, structs and maps (as dicts), NaN and infinities, integers of any size, text of any length. Every
function here either returns the field's value or raises `Invalid` with the field's reason code; none
lets another exception out, and none writes a value into a detail that could not be shown (see `describe`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

MAX_ID_LENGTH = 256  # characters; a longer id is refused, never cut (two cut ids could be one)
MAX_NUMBER = 2 ** 63  # numbers from here on are refused: no price or count is that large, and JSON
# encoders (orjson, TikTok's) stop at 64-bit integers
BYTES = (bytes, bytearray, memoryview)
CONTAINERS = (list, tuple, dict, set, frozenset)
_ID_DIGITS = 10 ** MAX_ID_LENGTH


class Invalid(Exception):
    """A value a field cannot take: the row is not sent, for `reason`; `path` is the field."""

    def __init__(self, reason: str, path: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.path, self.detail = reason, path, detail


def kind_of(value: Any) -> str:
    """What a value that is no text is, in words that carry none of its content."""
    if isinstance(value, BYTES):
        return "bytes that are not UTF-8 text"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a struct or map"
    if isinstance(value, (set, frozenset)):
        return "a set"
    if isinstance(value, str):
        return "text that is not valid Unicode (a lone surrogate)"
    return f"a {type(value).__name__}"


def describe(value: Any) -> str:
    """A short, safe rendering of a value for a reject's detail (never raises, never more than ~60 chars)."""
    if isinstance(value, str):
        shown = value[:40]
        return repr(shown) if is_utf8(shown) else kind_of(value)
    if isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return str(value)[:40] if value.bit_length() < 4_000 else f"a {value.bit_length()}-bit integer"
    if isinstance(value, (float, Decimal)):
        return str(value)[:40]
    if isinstance(value, (*BYTES, *CONTAINERS)):
        return kind_of(value)
    try:
        return repr(str(value)[:40])
    except Exception:  # a driver's own type whose str() fails: its name is all there is to say
        return kind_of(value)


def is_utf8(text: str) -> bool:
    """True when the text can be written as UTF-8 (no lone surrogates), as JSON and SHA-256 need it."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text(path: str, value: Any, reason: str) -> str:
    """The value as text: str as it is, bytes decoded as UTF-8, other scalars by str(). A list, struct, map,
    bytes that are not UTF-8, or text that is not valid Unicode is refused with `reason`."""
    if type(value) is str:
        result = value
    elif isinstance(value, BYTES):
        try:
            result = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise Invalid(reason, path, f"{path}: {kind_of(value)}") from None
    elif isinstance(value, CONTAINERS):
        raise Invalid(reason, path, f"{path}: {kind_of(value)} is not a single value")
    else:
        result = str(value)
    if not is_utf8(result):
        raise Invalid(reason, path, f"{path}: {kind_of(result)}")
    return result


def texts(path: str, raw: Any, reason: str) -> list[str]:
    """A list/array column, or a comma-separated value → non-empty trimmed texts (items as `text` reads them)."""
    items: Sequence[Any] = raw if isinstance(raw, (list, tuple)) else text(path, raw, reason).split(",")
    out = []
    for item in items:
        if item is not None:
            one = text(path, item, reason).strip()
            if one:
                out.append(one)
    return out


def identifier(path: str, value: Any, reason: str) -> str | None:
    """An id as TikTok gets it: a string, trimmed (12345 → "12345", Decimal('1E+3') → "1000", 12.0 → "12",
    never scientific notation); None when empty. Refused with `reason`: lists and maps, NaN and infinities,
    booleans, bytes that are not UTF-8, and ids longer than MAX_ID_LENGTH characters."""
    if type(value) is str:
        result = value.strip()
    elif value is None:
        return None
    elif isinstance(value, bool):
        raise Invalid(reason, path, f"{path}: a boolean is not an id")
    elif isinstance(value, int):
        if abs(value) >= _ID_DIGITS:
            raise Invalid(reason, path, f"{path}: {describe(value)} has more than {MAX_ID_LENGTH} digits")
        result = str(value)
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise Invalid(reason, path, f"{path}: {value} is not an id")
        if value.adjusted() >= MAX_ID_LENGTH or value.as_tuple().exponent < -MAX_ID_LENGTH:  # type: ignore[operator]
            raise Invalid(reason, path, f"{path}: {describe(value)} has more than {MAX_ID_LENGTH} digits")
        result = str(int(value)) if value == value.to_integral_value() else format(value, "f")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise Invalid(reason, path, f"{path}: {value!r} is not an id")
        result = str(int(value)) if value.is_integer() else repr(value)
    else:
        result = text(path, value, reason).strip()
    if len(result) > MAX_ID_LENGTH:
        raise Invalid(reason, path, f"{path}: {len(result)} characters, longer than the {MAX_ID_LENGTH} an id may have")
    if not result:
        return None
    if not is_utf8(result):
        raise Invalid(reason, path, f"{path}: {kind_of(result)}")
    return result


def as_id(value: Any) -> str | None:
    """The id `identifier` reads, or None when it is empty or refused."""
    try:
        return identifier("id", value, "invalid_field")
    except Invalid:
        return None


def number(path: str, value: Any) -> int | float:
    """A finite, non-negative number below MAX_NUMBER; whole numbers as ints (100.00 → 100)."""
    if isinstance(value, bool):
        raise Invalid("invalid_value", path, f"{path}: {value!r} is not a number")
    if isinstance(value, int):
        result: int | float = value
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise Invalid("invalid_value", path, f"{path}: {value} is not a finite number")
        if abs(value) >= MAX_NUMBER:  # before int(): Decimal('1E+999999') would take long to become one
            raise Invalid("invalid_value", path, f"{path}: {describe(value)} is {'negative' if value < 0 else 'too large'}")
        result = int(value) if value == value.to_integral_value() else float(value)
    elif isinstance(value, float):
        result = value
    else:
        given = text(path, value, "invalid_value")
        try:
            result = float(given)
        except ValueError:
            raise Invalid("invalid_value", path, f"{path}: {given[:40]!r} is not a number") from None
        if result.is_integer():
            result = int(result)
    if isinstance(result, float):
        if not math.isfinite(result):
            raise Invalid("invalid_value", path, f"{path}: {describe(value)} is not a finite number")
        if result.is_integer() and abs(result) < 2 ** 53:
            result = int(result)  # 100.00 from any warehouse is sent as 100
    if result < 0:
        raise Invalid("invalid_value", path, f"{path}: {describe(result)} is negative")
    if result >= MAX_NUMBER:
        raise Invalid("invalid_value", path, f"{path}: {describe(result)} is too large")
    return result


def integer(path: str, value: Any) -> int:
    result = number(path, value)
    if isinstance(result, float):
        if not result.is_integer():
            raise Invalid("invalid_value", path, f"{path}: {result!r} is not a whole number")
        result = int(result)
    return result


def boolean(path: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    given = text(path, value, "invalid_field").strip().lower()
    if given in {"true", "1", "yes", "t"}:
        return True
    if given in {"false", "0", "no", "f"}:
        return False
    raise Invalid("invalid_field", path, f"{path}: {given[:20]!r} is not true/false")


def fingerprint(rows: Sequence[Sequence[Any]]) -> str:
    """16 hex digits of SHA-256 over a row group's values: the same rows give the same fingerprint in every
    run, and it tells rows apart without holding any of their values (emails and phones included)."""
    digest = hashlib.sha256()
    for row in rows:
        for value in row:
            _feed(digest, value, 0)
        digest.update(b"\x1e")
    return digest.hexdigest()[:16]


def _feed(digest: Any, value: Any, depth: int) -> None:
    if isinstance(value, str):
        digest.update(b"s" + value.encode("utf-8", "surrogatepass"))
    elif isinstance(value, BYTES):
        digest.update(b"b" + bytes(value))
    elif isinstance(value, bool) or value is None:
        digest.update(repr(value).encode())
    elif isinstance(value, int):
        digest.update(b"i" + hex(value).encode())  # hex(): repr() refuses ints of over 4,300 digits
    elif isinstance(value, (list, tuple)) and depth < 20:
        digest.update(b"[")
        for item in value:
            _feed(digest, item, depth + 1)
        digest.update(b"]")
    elif isinstance(value, dict) and depth < 20:
        digest.update(b"{")
        for key, item in value.items():
            _feed(digest, key, depth + 1)
            _feed(digest, item, depth + 1)
        digest.update(b"}")
    else:
        try:
            digest.update(b"r" + repr(value).encode("utf-8", "surrogatepass"))
        except Exception:
            digest.update(b"t" + type(value).__name__.encode())
    digest.update(b"\x1f")
