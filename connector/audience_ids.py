"""Audience identifiers: TikTok's id types, a value → its hash (in Python or in SQL), and the member key.

The normalisation follows the audiences contract (shared/docs/tiktok-audiences-api.md): emails as the
Events API hashes them; phones to E.164, hashed without the '+' unless `phone_format: e164_plus`; IDFA and
GAID trimmed and lowercased, SHA-256 or MD5. A value that already is a hash of the type's length passes
through lowercased. The SQL forms reproduce the Python ones on DuckDB, PostgreSQL and Snowflake.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import phonenumbers

from . import pii
from .dialects import HEX64, Dialect
from .events import as_id


@dataclass(frozen=True, slots=True)
class IdType:
    """One of TikTok's `id_schema` values, and where its hashes live in the membership table."""

    name: str  # as TikTok spells it: EMAIL_SHA256
    kind: str  # the identifier it hashes: email, phone, idfa, gaid
    algorithm: str  # sha256 | md5

    @property
    def column(self) -> str:
        return self.name.lower()

    @property
    def hex_length(self) -> int:
        return 64 if self.algorithm == "sha256" else 32


# The stable order of every id_schema and of every hash tuple in the audience modules.
ID_TYPES: tuple[IdType, ...] = (
    IdType("EMAIL_SHA256", "email", "sha256"),
    IdType("PHONE_SHA256", "phone", "sha256"),
    IdType("IDFA_SHA256", "idfa", "sha256"),
    IdType("AAID_SHA256", "gaid", "sha256"),
    IdType("IDFA_MD5", "idfa", "md5"),
    IdType("AAID_MD5", "gaid", "md5"),
)
ID_TYPE_NAMES: tuple[str, ...] = tuple(t.name for t in ID_TYPES)
BY_NAME: dict[str, IdType] = {t.name: t for t in ID_TYPES}
INDEX: dict[str, int] = {t.name: i for i, t in enumerate(ID_TYPES)}
KINDS = ("email", "phone", "idfa", "gaid")
PHONE_FORMATS = ("digits", "e164_plus")  # digits: E.164 without the '+' (TikTok's customer-file form)
DEVICE_ID_HASHES = ("sha256", "md5")

Hashes = tuple[str | None, ...]  # one entry per ID_TYPES position; None: the person has no such id
NO_HASHES: Hashes = (None,) * len(ID_TYPES)

_HEX = {64: re.compile(r"[0-9A-Fa-f]{64}").fullmatch, 32: re.compile(r"[0-9A-Fa-f]{32}").fullmatch}
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").fullmatch
UUID_SQL = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
HEX32 = "^[A-Fa-f0-9]{32}$"
# iOS hands out this IDFA when the user denied tracking: it identifies nobody.
ZERO_DEVICE_ID = "00000000-0000-0000-0000-000000000000"
_INTEGRAL_DECIMAL = re.compile(r"-?[0-9]+\.0+").fullmatch
INTEGRAL_DECIMAL_SQL = "^-?[0-9]+[.]0+$"


def id_type(kind: str, device_id_hash: str = "sha256") -> IdType:
    """The id type of an identifier kind: email, phone, idfa or gaid (device ids hashed as chosen)."""
    if kind not in KINDS:
        raise ValueError(f"unknown identifier {kind!r}; use one of {KINDS}")
    if device_id_hash not in DEVICE_ID_HASHES:
        raise ValueError(f"unknown device id hash {device_id_hash!r}; use one of {DEVICE_ID_HASHES}")
    algorithm = "sha256" if kind in ("email", "phone") else device_id_hash
    return next(t for t in ID_TYPES if t.kind == kind and t.algorithm == algorithm)


def id_schema(names: Iterable[str]) -> tuple[str, ...]:
    """The id types (TikTok names) in their stable order, each once: a request's `id_schema`."""
    wanted = set(names)
    if unknown := wanted - set(ID_TYPE_NAMES):
        raise ValueError(f"unknown id types {sorted(unknown)}; use {ID_TYPE_NAMES}")
    return tuple(name for name in ID_TYPE_NAMES if name in wanted)


def schema_of(kinds: Iterable[str], device_id_hash: str = "sha256") -> tuple[str, ...]:
    """The id_schema of the mapped identifier kinds (email, phone, idfa, gaid)."""
    return id_schema(id_type(kind, device_id_hash).name for kind in kinds)


def _text(value: Any) -> str | None:
    text = as_id(value)  # numbers as plain digits (a phone in a BIGINT column), strings trimmed
    return text if text else None


def hash_email(value: Any) -> str | None:
    text = _text(value)
    return pii.hash_email(text) if text else None


def hash_phone(value: Any, default_region: str | None = None, phone_format: str = "digits") -> str | None:
    text = _text(value)
    if text is None:
        return None
    if pii.is_hashed(text):
        return text.lower()
    e164 = pii.normalize_phone(text, default_region)
    if e164 is None:
        return None
    return pii.sha256_hex(e164 if phone_format == "e164_plus" else e164[1:])


def hash_device_id(value: Any, algorithm: str = "sha256") -> str | None:
    """An IDFA or GAID (a UUID, any case) → its hash; a hash of the algorithm's length passes through."""
    text = _text(value)
    if text is None:
        return None
    if _HEX[64 if algorithm == "sha256" else 32](text):
        return text.lower()
    text = text.lower()
    if not _UUID(text) or text == ZERO_DEVICE_ID:
        return None
    digest = hashlib.sha256 if algorithm == "sha256" else hashlib.md5
    return digest(text.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class IdentifierHasher:
    """An audience's hashing settings: a raw value of an id type → its hash, or None (empty or invalid)."""

    default_phone_region: str | None = None
    phone_format: str = "digits"

    def __post_init__(self) -> None:
        if self.phone_format not in PHONE_FORMATS:
            raise ValueError(f"unknown phone format {self.phone_format!r}; use one of {PHONE_FORMATS}")

    def function(self, name: str) -> Callable[[Any], str | None]:
        """The hash function of one id type, settings bound (for a hot loop)."""
        t = BY_NAME[name]
        if t.kind == "email":
            return hash_email
        if t.kind == "phone":
            region, phone_format = self.default_phone_region, self.phone_format
            return lambda value: hash_phone(value, region, phone_format)
        algorithm = t.algorithm
        return lambda value: hash_device_id(value, algorithm)

    def hash(self, name: str, value: Any) -> str | None:
        return self.function(name)(value)

    def sql(self, dialect: Dialect, name: str, expr: str) -> str:
        """The SQL that computes `hash(name, <expr>)` in the warehouse (`hash_in_warehouse: true`)."""
        return hashed_sql(dialect, name, expr, self.default_phone_region, self.phone_format)


# ---------------------------------------------------------------- the same in SQL

def md5_sql(dialect: Dialect, expr: str) -> str:
    return f"md5({expr})"  # lowercase hex on DuckDB, PostgreSQL and Snowflake alike


def hashed_sql(dialect: Dialect, name: str, expr: str, default_phone_region: str | None = None,
               phone_format: str = "digits") -> str:
    """SQL for the hash of id type `name` of the value `expr`, NULL where Python gives None."""
    t = BY_NAME[name]
    if t.kind == "email":
        return dialect.hashed_email(expr)
    if t.kind == "phone":
        if phone_format == "e164_plus":
            return dialect.hashed_phone(expr, default_phone_region)
        trimmed = dialect.trimmed_text(expr)
        e164 = dialect.e164_phone(expr, default_phone_region)
        return (f"case when {dialect.regexp_matches(trimmed, HEX64)} then lower({trimmed}) "
                f"else {dialect.sha256(f'substr({e164}, 2)')} end")
    trimmed = dialect.trimmed_text(expr)
    lowered = f"lower({trimmed})"
    digest = dialect.sha256(lowered) if t.algorithm == "sha256" else md5_sql(dialect, lowered)
    return (f"case when {trimmed} is null or {trimmed} = '' then null "
            f"when {dialect.regexp_matches(trimmed, HEX64 if t.algorithm == 'sha256' else HEX32)} then {lowered} "
            f"when {dialect.regexp_matches(lowered, UUID_SQL)} and {lowered} <> '{ZERO_DEVICE_ID}' then {digest} "
            "else null end")


# ---------------------------------------------------------------- the source digest

# Bump when the normalisation above changes: every member's digest then differs once, and is re-hashed.
HASHING_VERSION = 1


def digest_tag(hasher: IdentifierHasher, id_schema: Sequence[str], hash_in_warehouse: bool) -> str:
    """What besides the raw values decides a person's hashes: part of every digest, so a change of settings
    (or of the phone metadata) re-hashes everyone once instead of trusting stale hashes."""
    return "|".join([f"v{HASHING_VERSION}", phonenumbers.__version__, hasher.default_phone_region or "",
                     hasher.phone_format, "sql" if hash_in_warehouse else "python", ",".join(id_schema)])


def source_digest_sql(dialect: Dialect, exprs: Sequence[str], tag_param: str) -> str:
    """SQL for the SHA-256 of a person's raw identifier values as the warehouse writes them, and the tag
    (bound as `tag_param`): equal digests mean equal hashes, so an unchanged person is never re-hashed."""
    parts = [f"cast(:{tag_param} as varchar)"] + [f"coalesce(cast({e} as varchar), chr(30))" for e in exprs]
    return dialect.sha256(" || chr(31) || ".join(parts))


# ---------------------------------------------------------------- the member key

def member_id_text(value: Any) -> str | None:
    """The text a member id is keyed by: trimmed; numbers as plain digits, an integral decimal without its
    zero fraction (5.00 → 5), so a column typed DECIMAL in one warehouse and NUMBER(38,0) in another, or
    retyped between runs, keeps its members."""
    text = _text(value)
    if text is None:
        return None
    return text[:text.index(".")] if _INTEGRAL_DECIMAL(text) else text


def member_key(value: Any) -> str | None:
    """SHA-256 hex of the member id's text: what the state stores instead of the id (which may be an email)."""
    text = member_id_text(value)
    return pii.sha256_hex(text) if text is not None else None


def member_id_text_sql(dialect: Dialect, expr: str) -> str:
    trimmed = dialect.trimmed_text(expr)
    return (f"case when {dialect.regexp_matches(trimmed, INTEGRAL_DECIMAL_SQL)} "
            f"then substr({trimmed}, 1, position('.' in {trimmed}) - 1) else {trimmed} end")


def member_key_sql(dialect: Dialect, expr: str) -> str:
    """SQL for `member_key(<expr>)`: lowercase hex of 64 characters, NULL for a NULL or blank id."""
    text = member_id_text_sql(dialect, expr)
    return f"case when ({text}) = '' then null else {dialect.sha256(f'({text})')} end"


def order_by_key(dialect: Dialect, expr: str) -> str:
    """ORDER BY text for a member key column that sorts as Python compares str (byte order)."""
    return f'{expr} collate "C"' if dialect.name == "postgresql" else expr
