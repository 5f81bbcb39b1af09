"""The audience query: the user's SQL wrapped to key each row by member (and, where the membership table is
in the same database, diffed against it by the warehouse), and the result rows as people or pairs.

The member key and a digest of the raw identifier values are computed by the warehouse (so it can sort,
join and compare by them); Python never sees the member id. Identifiers are hashed by the warehouse with
`hash_in_warehouse: true`, else in Python, and in either case only for people whose digest changed.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .audience_ids import (
    ID_TYPE_NAMES, ID_TYPES, INDEX, NO_HASHES, Hashes, IdentifierHasher, digest_tag, id_type, member_key_sql,
    order_by_key, source_digest_sql,
)
from .audience_plan import Member, Pair, Person
from .dialects import Dialect
from .errors import ConfigError
from .query import quote

MEMBER_KEY_ALIAS = "tiktok_member_key"
SOURCE_ALIAS = "tiktok_people"


@dataclass(frozen=True)
class PeopleSpec:
    """What to read from the audience query: its member id column and its identifier columns (named as
    the warehouse reports them, see `resolve_columns`), and how to hash."""

    member_id: str
    identifiers: tuple[tuple[str, str], ...]  # (id type, column) in ID_TYPES order
    hasher: IdentifierHasher = field(default_factory=IdentifierHasher)
    hash_in_warehouse: bool = False

    @property
    def id_schema(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.identifiers)

    @property
    def digest_tag(self) -> str:
        return digest_tag(self.hasher, self.id_schema, self.hash_in_warehouse)

    def hashing(self) -> Callable[[tuple[Any, ...]], Hashes]:
        """A person's values (raw, or hashed by the warehouse) → Hashes: the plan's `hashing`."""
        positions = [INDEX[name] for name, _ in self.identifiers]
        functions = [None if self.hash_in_warehouse else self.hasher.function(name) for name, _ in self.identifiers]
        slots = list(zip(positions, functions))
        width = len(NO_HASHES)

        def hashes(values: tuple[Any, ...]) -> Hashes:
            out: list[str | None] = [None] * width
            for (position, function), value in zip(slots, values):
                if value is not None:
                    out[position] = (value or None) if function is None else function(value)
            return tuple(out)
        return hashes


def resolve_columns(audience: str, member_id: str, identifiers: Mapping[str, str], columns: Sequence[str],
                    hasher: IdentifierHasher = IdentifierHasher(), device_id_hash: str = "sha256",
                    hash_in_warehouse: bool = False, kinds: Sequence[str] | None = None) -> PeopleSpec:
    """A PeopleSpec from connector.yml's names (identifier kind → column) and the columns the query
    reports (a probe, with its `ResultStream.kinds`); names match case-insensitively, as Snowflake reports
    unquoted names upper case."""
    where = f"connector.yml: audiences.{audience}"
    if not identifiers:
        raise ConfigError(f"{where}.identifiers", "no identifier is mapped",
                          "map at least one of email, phone, idfa, gaid to a column of the query")
    by_type: dict[str, str] = {}
    for kind, column in identifiers.items():
        try:
            name = id_type(kind, device_id_hash).name
        except ValueError as exc:
            raise ConfigError(f"{where}.identifiers.{kind}", str(exc), "use email, phone, idfa or gaid") from None
        by_type[name] = _column(column, columns, f"{where}.identifiers.{kind}")
    member_column = _column(member_id, columns, f"{where}.member_id")
    if kinds is not None and kinds[list(columns).index(member_column)] == "float":
        # Warehouses write floats differently (1e+16, 1E16): the member key would change with the warehouse.
        raise ConfigError(f"{where}.member_id", f"column {member_column!r} is a floating-point number",
                          "cast it to an integer or a string in the query")
    return PeopleSpec(member_column,
                      tuple((name, by_type[name]) for name in ID_TYPE_NAMES if name in by_type),
                      hasher, hash_in_warehouse)


def _column(name: str, columns: Sequence[str], where: str) -> str:
    if name in columns:
        return name
    folded = [c for c in columns if c.lower() == name.lower()]
    if len(folded) == 1:
        return folded[0]
    lowered = {c.lower(): c for c in columns}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1)
    hint = f"did you mean {lowered[close[0]]!r}?" if close else f"the query returns {', '.join(columns) or 'no columns'}"
    raise ConfigError(where, f"the query has no column {name!r}", hint)


DIGEST_TAG_PARAM = "tiktok_digest_tag"
AUDIENCE_PARAM = "tiktok_audience"


def _keyed_sql(rendered: str, dialect: Dialect, spec: PeopleSpec) -> str:
    """The user's query as (k, d, c0, c1 …): member key, digest, raw identifier values."""
    def column(name: str) -> str:
        return f"{SOURCE_ALIAS}.{quote(name)}"

    raw = [column(col) for _, col in spec.identifiers]
    items = [f"{member_key_sql(dialect, column(spec.member_id))} as k",
             f"{source_digest_sql(dialect, raw, DIGEST_TAG_PARAM)} as d",
             *(f"{expr} as c{n}" for n, expr in enumerate(raw))]
    return f"select {', '.join(items)} from (\n{rendered.rstrip().rstrip(';')}\n) as {SOURCE_ALIAS}"


def _values(dialect: Dialect, spec: PeopleSpec, alias: str) -> list[str]:
    """The identifier columns as Python is to receive them: hashes when the warehouse hashes, else raw."""
    if spec.hash_in_warehouse:
        return [spec.hasher.sql(dialect, name, f"{alias}.c{n}") for n, (name, _) in enumerate(spec.identifiers)]
    return [f"{alias}.c{n}" for n in range(len(spec.identifiers))]


def people_sql(rendered: str, dialect: Dialect, spec: PeopleSpec, where: str = "") -> tuple[str, dict[str, Any]]:
    """The user's query wrapped for the merge-join (`audience_plan.diff`): one row per query row, (member
    key, digest, identifier values…), ordered by member key; `where` (on `p.k`) reads one range of keys."""
    values = ", ".join(f"{v} as tiktok_id_{n}" for n, v in enumerate(_values(dialect, spec, "p")))
    sql = (f"select p.k as {MEMBER_KEY_ALIAS}, p.d as tiktok_digest{', ' + values if values else ''} "
           f"from ({_keyed_sql(rendered, dialect, spec)}) as p {'where ' + where + ' ' if where else ''}"
           f"order by {order_by_key(dialect, 'p.k')}")
    return sql, {DIGEST_TAG_PARAM: spec.digest_tag}


def fingerprint_sql(rendered: str, dialect: Dialect, spec: PeopleSpec) -> tuple[str, dict[str, Any]]:
    """DuckDB: one row (rows, xor and sum of a 64-bit hash of each row's member key and digest), computed as
    the rows stream by (no sort, no join: it fits any memory_limit). Equal fingerprints mean, short of a
    64-bit hash collision, the same multiset of (member, identifier values): the diff would find nothing."""
    if dialect.name != "duckdb":
        raise ValueError("fingerprint_sql is DuckDB's")
    row = "hash(coalesce(k, '') || '/' || coalesce(d, ''))"
    sql = (f"select count(*), cast(bit_xor({row}) as varchar), cast(sum({row}) as varchar) "
           f"from ({_keyed_sql(rendered, dialect, spec)}) as p")
    return sql, {DIGEST_TAG_PARAM: spec.digest_tag}


def read_people(chunks: Iterable[Sequence[Sequence[Any]]]) -> Iterator[Person]:
    """The rows of `people_sql` as people."""
    for chunk in chunks:
        for row in chunk:
            yield Person(row[0], tuple(row[2:]), row[1])


def diff_sql(rendered: str, dialect: Dialect, spec: PeopleSpec, members_table: str,
             audience: str, ordered: bool = True) -> tuple[str, dict[str, Any]]:
    """The diff run by the warehouse, where the membership table lives in the same database: a full outer
    join of the keyed query with the audience's members that returns only the member keys that differ —
    new, gone, duplicated, or with another digest — one row each, ordered by member key. Its rows are
    `read_pairs`; a run with nothing changed reads none. `ordered=False` leaves the sort out (a pass that
    only counts: DuckDB sorts inside the connector's memory limit)."""
    hash_columns = ", ".join(f"m.{t.column}" for t in ID_TYPES)
    values = "".join(f", {v}" for v in _values(dialect, spec, "p"))
    # One row per key, with its row count; a group's values matter only when it has one row. A grouping
    # (unlike a window) the warehouse can spill to disk under a memory limit.
    columns = "".join(f", min(c{n}) as c{n}" for n in range(len(spec.identifiers)))
    grouped = f"select k, count(*) as n, min(d) as d{columns} from ({_keyed_sql(rendered, dialect, spec)}) as keyed group by k"
    key = "coalesce(p.k, m.member_key)"
    sql = (f"select {key} as {MEMBER_KEY_ALIAS}, p.n, m.member_key, m.source_digest, {hash_columns}, p.d{values} "
           f"from ({grouped}) as p "
           f"full outer join (select * from {members_table} where audience = :{AUDIENCE_PARAM}) as m "
           "on p.k = m.member_key "
           "where p.k is null or m.member_key is null or p.n > 1 or p.d is distinct from m.source_digest"
           + (f" order by {order_by_key(dialect, key)}" if ordered else ""))
    return sql, {DIGEST_TAG_PARAM: spec.digest_tag, AUDIENCE_PARAM: audience}


def read_pairs(chunks: Iterable[Sequence[Sequence[Any]]]) -> Iterator[Pair]:
    """The rows of `diff_sql` as pairs for `audience_plan.plan`."""
    width = len(ID_TYPES)
    for chunk in chunks:
        for row in chunk:
            rows = row[1] or 0
            member = Member(row[2], tuple(row[4:4 + width]), row[3]) if row[2] is not None else None
            person = Person(row[0], tuple(row[5 + width:]), row[4 + width]) if rows == 1 else None
            yield Pair(row[0], rows, person, member)
