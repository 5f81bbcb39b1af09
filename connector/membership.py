"""Audience membership in the state tables: which people TikTok acknowledged, by member key, and the hashes
owed a delete.

Tables (prefix `tiktok_`, in `state.schema` when set), created by MEMBERSHIP_MIGRATION:
  tiktok_audiences(audience PK, advertiser_id, audience_id, audience_name, id_schema, created_at, updated_at,
                   fingerprint: the query result the membership was last made equal to, see `fingerprint`)
  tiktok_audience_members(audience, member_key, email_sha256, phone_sha256, idfa_sha256, aaid_sha256,
                          idfa_md5, aaid_md5, source_digest, run_id, updated_at; PK (audience, member_key))
  tiktok_audience_deletes(audience, id_type, hash, run_id, recorded_at)
`audience` is the connector's name for it (the key under `audiences:`); `member_key` is the SHA-256 of the
member id's text (audience_ids.member_key), never the id. A members row holds the hashes TikTok acknowledged
for that person and the digest of the raw values they came from (audience_ids.source_digest_sql, so a run
re-hashes only people whose values changed); a deletes row is a hash some member dropped, deleted from TikTok at the end of a run unless
a member holds it again. Invariant between runs: TikTok's audience = the members' hashes, plus at most the
hashes in deletes (an add request's hashes are owed a delete before it is sent: `owe_until_held`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .audience_ids import ID_TYPES, Hashes, id_schema as ordered_schema
from .audience_plan import Change, Member
from .warehouse import Connection

HASH_COLUMNS: tuple[str, ...] = tuple(t.column for t in ID_TYPES)
_HASH_DDL = ", ".join(f"{t.column} varchar({t.hex_length})" for t in ID_TYPES)

# Version 4 of state.MIGRATIONS (see its format there). DuckDB keeps a primary key's index in memory, so its
# members table is made again without one (v4 has just created it: it is empty), as the ledger was in
# version 2; the connector never inserts a member twice (apply deletes before it inserts). PostgreSQL
# compares member keys byte-wise ("C"), the order the diff merges in, and its primary key index serves the
# range pages of MembershipStore.members.
_MEMBERS_DDL = f"""create table if not exists {{p}}audience_members (
        audience varchar not null, member_key varchar(64) not null, {_HASH_DDL}, source_digest varchar(64),
        run_id varchar, updated_at timestamp not null{{key}})"""
MEMBERSHIP_MIGRATION: tuple[int, list[str | tuple[str, str]]] = (4, [
    """create table if not exists {p}audiences (
        audience varchar primary key, advertiser_id varchar not null, audience_id varchar not null,
        audience_name varchar, id_schema varchar not null, created_at timestamp not null,
        updated_at timestamp not null, fingerprint varchar)""",
    _MEMBERS_DDL.replace("{key}", ", primary key (audience, member_key)"),
    """create table if not exists {p}audience_deletes (
        audience varchar not null, id_type varchar not null, hash varchar(64) not null, run_id varchar,
        recorded_at timestamp not null)""",
    ("postgresql", 'alter table {p}audience_members alter column member_key type varchar(64) collate "C"'),
    ("duckdb", "drop table if exists {p}audience_members"),
    ("duckdb", _MEMBERS_DDL.replace("{key}", "")),
])

DEFAULT_PAGE_SIZE = 10_000


@dataclass(frozen=True)
class AudienceRecord:
    """The TikTok audience a configured audience syncs to; stored the moment it is created or adopted."""

    audience: str  # the name under `audiences:` in connector.yml
    advertiser_id: str
    audience_id: str
    audience_name: str | None  # the name in TikTok
    id_schema: tuple[str, ...]


@dataclass(frozen=True)
class DeletePage:
    """Hashes of one id type that no member holds any more, owed a delete request."""

    id_type: str
    hashes: tuple[str, ...]


class MembershipStore:
    """Reads and writes the membership tables over one state connection (`Warehouse.connect()`)."""

    def __init__(self, conn: Connection, schema: str | None = None) -> None:
        self.conn = conn
        self.p = f"{schema}.tiktok_" if schema else "tiktok_"
        self._key_order = 'member_key collate "C"' if conn.dialect == "postgresql" else "member_key"

    # the audience
    def audience(self, audience: str) -> AudienceRecord | None:
        rows = self.conn.query(f"select advertiser_id, audience_id, audience_name, id_schema from {self.p}audiences "
                               "where audience = :a", {"a": audience})
        if not rows:
            return None
        advertiser_id, audience_id, name, schema = rows[0]
        return AudienceRecord(audience, advertiser_id, audience_id, name, tuple(filter(None, schema.split(","))))

    def record_audience(self, record: AudienceRecord, now: dt.datetime) -> None:
        """Store (or update) the audience's TikTok id and id_schema, committed at once: a run that dies right
        after creating the audience must find it next time rather than create a second one."""
        at = _naive_utc(now)
        params = {"a": record.audience, "adv": record.advertiser_id, "id": record.audience_id,
                  "name": record.audience_name, "schema": ",".join(ordered_schema(record.id_schema)), "t": at}
        with self.conn.transaction():
            exists = self.conn.query(f"select 1 from {self.p}audiences where audience = :a", {"a": record.audience})
            if exists:
                self.conn.execute(f"update {self.p}audiences set advertiser_id = :adv, audience_id = :id, "
                                  "audience_name = :name, id_schema = :schema, updated_at = :t where audience = :a",
                                  params)
            else:
                self.conn.execute(f"insert into {self.p}audiences (audience, advertiser_id, audience_id, audience_name, "
                                  "id_schema, created_at, updated_at) values (:a, :adv, :id, :name, :schema, :t, :t)",
                                  params)

    def fingerprint(self, audience: str) -> str | None:
        """What `set_fingerprint` stored: a run that finds the query's result unchanged skips its diff."""
        rows = self.conn.query(f"select fingerprint from {self.p}audiences where audience = :a", {"a": audience})
        return rows[0][0] if rows else None

    def set_fingerprint(self, audience: str, fingerprint: str | None) -> None:
        """Store (None: forget) the fingerprint of the query result the membership now equals; forget it
        before changing the membership."""
        with self.conn.transaction():
            self.conn.execute(f"update {self.p}audiences set fingerprint = :f where audience = :a",
                              {"a": audience, "f": fingerprint})

    # members
    @property
    def members_table(self) -> str:
        """The members table's name, for a diff the warehouse runs (audience_query.diff_sql)."""
        return f"{self.p}audience_members"

    def members(self, audience: str, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[Member]:
        """Every member in member-key order, read in pages of about `page_size` (see `key_ranges`)."""
        columns = ", ".join(HASH_COLUMNS)
        for condition, params in key_ranges("member_key", self.count(audience), page_size):
            rows = self.conn.query(
                f"select member_key, {columns}, source_digest from {self.p}audience_members where audience = :a "
                f"and {condition} order by {self._key_order}", {"a": audience, **params})
            for row in rows:
                yield Member(row[0], tuple(row[1:-1]), row[-1])

    def count(self, audience: str) -> int:
        rows = self.conn.query(f"select count(*) from {self.p}audience_members where audience = :a", {"a": audience})
        return int(rows[0][0])

    def apply(self, audience: str, changes: Sequence[Change], run_id: str, now: dt.datetime) -> None:
        """One batch's changes in one transaction: call it once TikTok acknowledged the batch's request (at
        once for a batch without one)."""
        with self.conn.transaction():
            self.write(audience, changes, run_id, now)

    def write(self, audience: str, changes: Sequence[Change], run_id: str, now: dt.datetime) -> None:
        """`apply` inside the caller's transaction (to commit rejects or a lease renewal with it)."""
        if not changes:
            return
        at = _naive_utc(now)
        # An added person had no row when the plan read the state, and the run's lease keeps it so.
        for keys in self._lists([c.member_key for c in changes if c.kind != "add"]):
            placeholders, params = self.conn.in_values("k", keys)
            self.conn.execute(f"delete from {self.p}audience_members where audience = :a "
                              f"and member_key in {placeholders}", {"a": audience, **params})
        self.conn.insert_many(f"{self.p}audience_members", ("member_key", *HASH_COLUMNS, "source_digest"),
                              [(c.member_key, *c.hashes, c.digest) for c in changes if c.hashes is not None],
                              {"audience": audience, "run_id": run_id, "updated_at": at})
        self.conn.insert_many(f"{self.p}audience_deletes", ("id_type", "hash"),
                              [(t.name, h) for c in changes for t, h in zip(ID_TYPES, c.dropped) if h],
                              {"audience": audience, "run_id": run_id, "recorded_at": at})

    # deletes owed
    def owe_until_held(self, audience: str, rows: Sequence[Hashes], run_id: str, now: dt.datetime) -> None:
        """Before an add request is sent: owe its hashes a delete, committed at once. Once the request is
        acknowledged and applied, members hold them and `prune_held_deletes` forgets them; a run killed
        between sending and applying leaves them owed, so people who then leave the query before a run
        applies them do not stay in TikTok."""
        with self.conn.transaction():
            self.conn.insert_many(f"{self.p}audience_deletes", ("id_type", "hash"),
                                  [(t.name, h) for row in rows for t, h in zip(ID_TYPES, row) if h],
                                  {"audience": audience, "run_id": run_id, "recorded_at": _naive_utc(now)})

    def prune_held_deletes(self, audience: str) -> None:
        """Forget owed deletes of hashes a member holds again. Call it once every add request of the run has
        been answered, then send `unheld_deletes`."""
        if self.conn.dialect == "postgresql":
            # Tables a run has just filled have no statistics yet: PostgreSQL would plan the join below as a
            # nested loop over every owed delete and every member.
            self.conn.execute(f"analyze {self.p}audience_deletes, {self.p}audience_members")
        with self.conn.transaction():
            for t in ID_TYPES:
                # EXISTS, not IN (select …): PostgreSQL runs an IN whose subquery outgrows work_mem once per row.
                self.conn.execute(
                    f"delete from {self.p}audience_deletes where audience = :a and id_type = :t and exists "
                    f"(select 1 from {self.p}audience_members m where m.audience = :a "
                    f"and m.{t.column} = {self.p}audience_deletes.hash)",
                    {"a": audience, "t": t.name})

    def unheld_deletes(self, audience: str, page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[DeletePage]:
        """The owed deletes, distinct, in pages of about `page_size` hashes of one id type (call
        `prune_held_deletes` first)."""
        counts = dict(self.conn.query(f"select id_type, count(*) from {self.p}audience_deletes where audience = :a "
                                      "group by id_type", {"a": audience}))
        for t in ID_TYPES:
            for condition, params in key_ranges("hash", counts.get(t.name, 0), page_size):
                rows = self.conn.query(
                    f"select distinct hash from {self.p}audience_deletes where audience = :a and id_type = :t "
                    f"and {condition} order by hash", {"a": audience, "t": t.name, **params})
                if rows:
                    yield DeletePage(t.name, tuple(row[0] for row in rows))

    def clear_deletes(self, audience: str, page: DeletePage) -> None:
        """Forget owed deletes TikTok acknowledged."""
        with self.conn.transaction():
            for hashes in self._lists(page.hashes):
                placeholders, params = self.conn.in_values("h", hashes)
                self.conn.execute(f"delete from {self.p}audience_deletes where audience = :a and id_type = :t "
                                  f"and hash in {placeholders}", {"a": audience, "t": page.id_type, **params})

    def pending_deletes(self, audience: str) -> int:
        rows = self.conn.query(f"select count(*) from {self.p}audience_deletes where audience = :a", {"a": audience})
        return int(rows[0][0])

    def forget(self, audience: str) -> None:
        """Drop everything known about the audience (a reset: the next run creates or adopts it anew)."""
        with self.conn.transaction():
            for table in ("audience_members", "audience_deletes", "audiences"):
                self.conn.execute(f"delete from {self.p}{table} where audience = :a", {"a": audience})

    def _lists(self, values: Sequence[str]) -> Iterator[Sequence[str]]:
        size = self.conn.max_in_values or len(values) or 1
        return (values[start:start + size] for start in range(0, len(values), size))


def key_ranges(column: str, count: int, page_size: int) -> Iterator[tuple[str, dict[str, str]]]:
    """Conditions that cut a column of hex digests (member keys, hashes: spread evenly) into ranges of about
    `page_size` rows, in order. A keyset page (`column > :after … limit n`) would make DuckDB, which has no
    index to range-scan, read the rest of the table for every page; an equal slice of the key space it
    reads once per page, and PostgreSQL answers either from its primary key index."""
    slices = max(1, -(-count // page_size))
    bounds = [format(i * 16**8 // slices, "08x") for i in range(1, slices)]
    for i in range(slices):
        parts, params = [], {}
        if i > 0:
            parts.append(f"{column} >= :low")
            params["low"] = bounds[i - 1]
        if i < slices - 1:
            parts.append(f"{column} < :high")
            params["high"] = bounds[i]
        yield " and ".join(parts) or "1 = 1", params


def _naive_utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.timezone.utc).replace(tzinfo=None) if value.tzinfo else value
