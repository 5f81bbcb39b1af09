"""The state tables: watermark per sync, run history, rejects, and the ledger of acknowledged event ids.

Tables (prefix `tiktok_`, in `state.schema` when set), created on first use:
  tiktok_state_version(version)
  tiktok_watermarks(sync_name PK, cursor_column, watermark, watermark_type, updated_at, run_id)
  tiktok_runs(run_id PK, sync_name, mode, status, started_at, finished_at, rows_read, events_sent,
              events_rejected, events_skipped, duplicates_skipped, batches, retries,
              watermark_before, watermark_after, rejected_by_reason, error, health, owner)
  tiktok_rejects(run_id, sync_name, event_id, cursor_value, event_time, reason, detail, recorded_at, resolved_at)
  tiktok_ledger(sync_name, event_id, event_time, acked_at, run_id; PK (sync_name, event_id))
  tiktok_leases(sync_name PK, owner, acquired_at, expires_at)
Timestamps are UTC. Watermarks are stored as text with their type, at full precision. The schema version
is in tiktok_state_version; MIGRATIONS below upgrades older tables on first use. Only runs that write state
create or migrate the tables: reading commands find them absent or older and say so.

A run's status is running, success, failed or abandoned: a run still `running` once another run holds its
sync's lease died without finishing (killed, or its lease lapsed); the next run of the sync marks it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .errors import ConfigError, StateError, WarehouseError
from .events import Event, Rejection
from .identifiers import SCHEMA_HINT, quoted_schema, schema_problem
from .membership import MEMBERSHIP_MIGRATION
from .warehouse import Connection, in_list

_VERSION_TABLE = "create table if not exists {p}state_version (version integer not null)"
_V1 = [
    """create table if not exists {p}watermarks (
        sync_name varchar primary key, cursor_column varchar not null, watermark varchar,
        watermark_type varchar, updated_at timestamp, run_id varchar)""",
    """create table if not exists {p}runs (
        run_id varchar primary key, sync_name varchar not null, mode varchar not null, status varchar not null,
        started_at timestamp not null, finished_at timestamp, rows_read bigint, events_sent bigint,
        events_rejected bigint, events_skipped bigint, duplicates_skipped bigint, batches bigint, retries bigint,
        watermark_before varchar, watermark_after varchar, rejected_by_reason varchar, error varchar,
        health varchar)""",
    """create table if not exists {p}rejects (
        run_id varchar not null, sync_name varchar not null, event_id varchar, cursor_value varchar,
        event_time bigint, reason varchar not null, detail varchar, recorded_at timestamp not null,
        resolved_at timestamp)""",
    """create table if not exists {p}ledger (
        sync_name varchar not null, event_id varchar not null, event_time bigint, acked_at timestamp not null,
        run_id varchar, primary key (sync_name, event_id))""",
    """create table if not exists {p}leases (
        sync_name varchar primary key, owner varchar not null, acquired_at timestamp not null,
        expires_at timestamp not null)""",
]
# Schema migrations, oldest first: (version, statements). Add a new entry for every change; never edit
# one that has shipped. Statements are idempotent where the warehouse allows it.
# DuckDB keeps a primary key's index in memory and does not use it for the ledger's IN-list lookups: the
# ledger is rebuilt without it (the connector never inserts an id twice: it deletes before a --resend).
_V2_DUCKDB_LEDGER = [
    ("duckdb", "create table if not exists {p}ledger_unindexed as select * from {p}ledger"),
    ("duckdb", "drop table if exists {p}ledger"),
    ("duckdb", "alter table {p}ledger_unindexed rename to tiktok_ledger"),
]
# A statement is SQL for every warehouse, or (dialect, SQL) for one.
# Version 3: the lease owner (host:pid:run) that wrote a run's row, so a later run can tell a dead run.
_V3_RUN_OWNER = ["alter table {p}runs add column if not exists owner varchar"]
MIGRATIONS: list[tuple[int, list[str | tuple[str, str]]]] = [(1, _V1), (2, _V2_DUCKDB_LEDGER), (3, _V3_RUN_OWNER),
                                                          MEMBERSHIP_MIGRATION]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def encode_cursor(value: Any) -> tuple[str, str]:
    """A cursor value as (text, type), exact enough to bind back the same value next run."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            return value.astimezone(dt.timezone.utc).isoformat(timespec="microseconds"), "timestamptz"
        return value.isoformat(timespec="microseconds"), "timestamp"
    if isinstance(value, dt.date):
        return value.isoformat(), "date"
    if isinstance(value, bool):
        raise StateError("a boolean cannot be a cursor")
    if isinstance(value, int):
        return str(value), "int"
    if isinstance(value, Decimal):
        return str(value), "decimal"
    if isinstance(value, float):
        return repr(value), "float"
    return str(value), "str"


def decode_cursor(text: str | None, kind: str | None) -> Any:
    if text is None:
        return None
    if kind in ("timestamptz", "timestamp"):
        return dt.datetime.fromisoformat(text)
    if kind == "date":
        return dt.date.fromisoformat(text)
    if kind == "int":
        return int(text)
    if kind == "decimal":
        return Decimal(text)
    if kind == "float":
        return float(text)
    return text


def cursor_text(value: Any) -> str | None:
    return None if value is None else encode_cursor(value)[0]


@dataclass(frozen=True)
class CursorForm:
    """How the pipeline carries cursor values. A TIMESTAMPTZ cursor may be read as naive UTC (DuckDB hands
    out naive timestamps several times faster than zoned ones); it is stored zoned, as its column is."""

    utc_naive: bool = False

    def stored(self, value: Any) -> Any:
        if self.utc_naive and isinstance(value, dt.datetime) and value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value

    def pipeline(self, value: Any) -> Any:
        if self.utc_naive and isinstance(value, dt.datetime) and value.tzinfo is not None:
            return value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value

    def text(self, value: Any) -> str | None:
        return cursor_text(self.stored(value))


@dataclass(frozen=True)
class Checkpoint:
    run_id: str
    sync_name: str
    cursor_column: str
    acked: Sequence[Event]
    rejects: Sequence[Rejection]
    watermark: Any = None
    resolve_rejects: bool = False
    replace_ledger: bool = False
    renew_lease: str | None = None  # the lease owner, when the lease is due for renewal
    lease_ttl_seconds: int = 0


@dataclass
class RunRecord:
    run_id: str
    sync_name: str
    mode: str
    started_at: dt.datetime
    watermark_before: Any
    owner: str | None = None  # the lease owner of the run


_MIGRATING = threading.Lock()


class StateStore:
    def __init__(self, conn: Connection, schema: str | None = None) -> None:
        self.conn = conn
        problem = schema_problem(schema, conn.dialect) if schema else None
        if problem:
            raise ConfigError("state.schema", problem, SCHEMA_HINT)
        # The schema as SQL: checked and quoted, never pasted as written (see identifiers.py).
        self.schema_name = schema  # as connector.yml writes it, for another store on the same tables
        self.schema = quoted_schema(schema, conn.dialect) if schema else None
        self.p = f"{self.schema}.tiktok_" if self.schema else "tiktok_"
        self._watermark_written: set[str] = set()  # syncs whose watermark row this store committed

    def ensure_tables(self) -> None:
        """Create the state tables on first use and apply the migrations they have not seen yet (one job of the
        process at a time: jobs running together would conflict creating the same tables)."""
        with _MIGRATING:
            self._ensure_tables()

    def _ensure_tables(self) -> None:
        try:
            # DDL stays out of transactions: Snowflake commits DDL implicitly.
            if self.schema:
                self.conn.execute(f"create schema if not exists {self.schema}")
            self.conn.execute(_VERSION_TABLE.format(p=self.p))
            rows = self.conn.query(f"select max(version) from {self.p}state_version")
            current = rows[0][0] if rows and rows[0][0] is not None else 0
            if current > SCHEMA_VERSION:
                raise StateError(f"the state tables are at version {current}, newer than this tiktok-connector "
                                 f"understands ({SCHEMA_VERSION}): upgrade tiktok-connector")
            for version, statements in MIGRATIONS:
                if version > current:
                    for statement in statements:
                        dialect, sql = statement if isinstance(statement, tuple) else (self.conn.dialect, statement)
                        if dialect == self.conn.dialect:
                            self.conn.execute(sql.format(p=self.p))
                    with self.conn.transaction():
                        self.conn.execute(f"delete from {self.p}state_version", {})
                        self.conn.execute(f"insert into {self.p}state_version (version) values (:v)", {"v": version})
        except WarehouseError as exc:
            raise StateError(f"cannot create or migrate the state tables: {exc}") from exc

    def version(self) -> int | None:
        """The state tables' schema version, or None when they do not exist; creates nothing."""
        if not self._table_exists("state_version"):
            return None
        rows = self.conn.query(f"select max(version) from {self.p}state_version")
        current = rows[0][0] if rows and rows[0][0] is not None else 0
        if current > SCHEMA_VERSION:
            raise StateError(f"the state tables are at version {current}, newer than this tiktok-connector "
                             f"understands ({SCHEMA_VERSION}): upgrade tiktok-connector")
        return int(current)

    def _table_exists(self, name: str) -> bool:
        table = f"tiktok_{name}"
        if self.conn.dialect == "postgresql":  # resolved as the statements resolve it: through search_path
            rows = self.conn.query("select to_regclass(:t) is not null",
                                   {"t": f"{self.schema}.{table}" if self.schema else table})
            return bool(rows[0][0])
        rows = self.conn.query(
            "select count(*) from information_schema.tables where upper(table_name) = upper(:t) "
            "and upper(table_schema) = upper(coalesce(:s, current_schema())) "
            "and upper(table_catalog) = upper(current_database())", {"t": table, "s": self.schema})
        return bool(rows[0][0])

    def watermark(self, sync_name: str) -> Any:
        rows = self.conn.query(f"select watermark, watermark_type from {self.p}watermarks where sync_name = :s",
                               {"s": sync_name})
        return decode_cursor(*rows[0]) if rows else None

    def watermark_column(self, sync_name: str) -> str | None:
        """The cursor column the stored watermark was read from (None: no watermark yet)."""
        rows = self.conn.query(f"select cursor_column from {self.p}watermarks where sync_name = :s",
                               {"s": sync_name})
        return rows[0][0] if rows else None

    def acknowledged(self, sync_name: str, event_ids: Sequence[str]) -> set[str]:
        """The ids among `event_ids` that TikTok already acknowledged for this sync."""
        found: set[str] = set()
        for ids in self._lists(event_ids):
            placeholders, params = self.conn.in_values("id", ids)
            # The range repeats what the list says; it lets the warehouse skip blocks by their min/max.
            rows = self.conn.query(
                f"select event_id from {self.p}ledger where sync_name = :s and event_id >= :lowest "
                f"and event_id <= :highest and event_id in {placeholders}",
                {"s": sync_name, "lowest": min(ids), "highest": max(ids), **params})
            found.update(row[0] for row in rows)
        return found

    def already_rejected(self, sync_name: str, keys: set[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
        """The (event_id, cursor, reason) keys of re-read rows that are recorded already, unresolved, so a
        tie at the watermark or a lookback neither records nor re-sends a row twice."""
        found: set[tuple[str, str, str]] = set()
        ids = sorted({key[0] for key in keys})
        for some in self._lists(ids):
            placeholders, params = self.conn.in_values("id", some)
            rows = self.conn.query(
                f"select event_id, cursor_value, reason from {self.p}rejects where sync_name = :s "
                f"and resolved_at is null and event_id in {placeholders}", {"s": sync_name, **params})
            found.update(key for key in ((r[0], r[1], r[2]) for r in rows) if key in keys)
        return found

    def already_rejected_rows(self, sync_name: str,
                              keys: set[tuple[str, ...]]) -> set[tuple[str, ...]]:
        """The ("", cursor, reason, detail) keys of re-read rows without an event id that are recorded already,
        unresolved (their detail holds the row's fingerprint)."""
        found: set[tuple[str, ...]] = set()
        cursors = sorted({key[1] for key in keys})
        for some in self._lists(cursors):
            placeholders, params = self.conn.in_values("c", some)
            rows = self.conn.query(
                f"select cursor_value, reason, detail from {self.p}rejects where sync_name = :s "
                f"and resolved_at is null and event_id is null and cursor_value in {placeholders}",
                {"s": sync_name, **params})
            found.update(key for key in (("", r[0], r[1], r[2]) for r in rows) if key in keys)
        return found

    def unresolved_rejects(self, sync_name: str, event_ids: Sequence[str], reasons: Iterable[str]) -> set[str]:
        """The ids among `event_ids` with an unresolved reject for one of `reasons` (for `retry`)."""
        found: set[str] = set()
        reason_list, reason_params = in_list("reason", sorted(reasons))
        for ids in self._lists(event_ids):
            placeholders, params = self.conn.in_values("id", ids)
            rows = self.conn.query(
                f"select distinct event_id from {self.p}rejects where sync_name = :s and resolved_at is null "
                f"and reason in {reason_list} and event_id in {placeholders}", {"s": sync_name, **params, **reason_params})
            found.update(row[0] for row in rows)
        return found

    def _lists(self, values: Sequence[str]) -> Iterator[Sequence[str]]:
        """`values` in lists of the size one in_values may bind, one query each (None: a single list)."""
        size = self.conn.max_in_values or len(values) or 1
        return (values[start:start + size] for start in range(0, len(values), size))

    def acquire_lease(self, sync_name: str, owner: str, now: dt.datetime, ttl_seconds: int) -> str | None:
        """Take the sync's lease; return None, or the live holder's name when another run has it.

        A lease whose holder died is free once it expires, or at once when the holder was a process on
        this host that no longer exists."""
        at = _naive_utc(now)
        try:
            with self.conn.transaction():
                rows = self.conn.query(f"select owner, expires_at from {self.p}leases where sync_name = :s",
                                       {"s": sync_name})
                for holder, expires_at in rows:
                    if expires_at > at and _holder_alive(holder):
                        return holder
                if rows:
                    self.conn.execute(f"delete from {self.p}leases where sync_name = :s", {"s": sync_name})
                self.conn.execute(
                    f"insert into {self.p}leases (sync_name, owner, acquired_at, expires_at) "
                    "values (:s, :o, :a, :e)",
                    {"s": sync_name, "o": owner, "a": at, "e": at + dt.timedelta(seconds=ttl_seconds)})
        except WarehouseError:
            pass  # another run inserted its lease first (primary key): the check below names it
        # Two runs may race to here; warehouses that do not enforce primary keys (Snowflake) keep both rows,
        # so the earliest lease wins and the other run backs off.
        holders = self.conn.query(f"select owner from {self.p}leases where sync_name = :s "
                                  "order by acquired_at, owner", {"s": sync_name})
        if holders and holders[0][0] != owner:
            self.release_lease(sync_name, owner)
            return holders[0][0]
        if not holders:
            raise StateError(f"could not take the lease of sync {sync_name!r}; run it again")
        return None

    def renew_lease(self, sync_name: str, owner: str, now: dt.datetime, ttl_seconds: float) -> None:
        self.conn.execute(f"update {self.p}leases set expires_at = :e where sync_name = :s and owner = :o",
                          {"s": sync_name, "o": owner, "e": _naive_utc(now) + dt.timedelta(seconds=ttl_seconds)})

    def keep_lease(self, sync_name: str, owner: str, now: dt.datetime, ttl_seconds: float) -> bool:
        """Renew the lease; False when `owner` no longer holds it (it lapsed and another run took it, or a
        `reset --force` removed it)."""
        self.renew_lease(sync_name, owner, now, ttl_seconds)
        return bool(self.conn.query(f"select owner from {self.p}leases where sync_name = :s and owner = :o",
                                    {"s": sync_name, "o": owner}))

    def live_lease(self, sync_name: str, now: dt.datetime) -> str | None:
        """The owner of the sync's lease when a live run holds it: unexpired, and not a process of this host
        that is gone."""
        rows = self.conn.query(f"select owner, expires_at from {self.p}leases where sync_name = :s "
                               "order by acquired_at, owner", {"s": sync_name})
        at = _naive_utc(now)
        return next((owner for owner, expires_at in rows if expires_at > at and _holder_alive(owner)), None)

    def abandon_runs(self, sync_name: str, owner: str, now: dt.datetime, ttl_seconds: float) -> int:
        """Mark the sync's runs still `running` as abandoned; call it holding the lease (as `owner`). Their
        runs cannot be alive and holding it, so they died without recording an outcome. Rows written before
        runs had owners (version 3) are marked only once older than a lease lasts. Returns how many."""
        at = _naive_utc(now)
        found = {"s": sync_name, "old": at - dt.timedelta(seconds=ttl_seconds), "o": owner}
        # Runs interrupted before version 3 may have a finished_at and still say running.
        where = (f"from {self.p}runs where sync_name = :s and status = 'running' "
                 "and (owner is null and started_at < :old or owner is not null and owner <> :o)")
        error = f"abandoned: the run ended without recording an outcome (killed, or its lease lapsed); seen by {owner}"
        with self.conn.transaction():
            (count,) = self.conn.query(f"select count(*) {where}", found)[0]
            if count:
                self.conn.execute(f"update {self.p}runs set status = 'abandoned', error = :e, "
                                  f"finished_at = coalesce(finished_at, :t) where run_id in (select run_id {where})",
                                  {**found, "t": at, "e": error})
        return int(count)

    def release_lease(self, sync_name: str, owner: str) -> None:
        with self.conn.transaction():
            self.conn.execute(f"delete from {self.p}leases where sync_name = :s and owner = :o",
                              {"s": sync_name, "o": owner})

    def start_run(self, record: RunRecord) -> None:
        with self.conn.transaction():
            self.conn.execute(
                f"insert into {self.p}runs (run_id, sync_name, mode, status, started_at, watermark_before, owner) "
                "values (:r, :s, :m, 'running', :t, :w, :o)",
                {"r": record.run_id, "s": record.sync_name, "m": record.mode,
                 "t": _naive_utc(record.started_at), "w": cursor_text(record.watermark_before), "o": record.owner})

    def checkpoint(self, checkpoint: Checkpoint, now: dt.datetime) -> None:
        """Ledger, rejects, watermark and lease of one acknowledged batch, in one transaction. One cut short by
        a lost connection (a restarted or killed server) is committed again on a new one: TikTok acknowledged
        those events, and a ledger without them sends them again next run. (Had the commit itself gone
        through, the ledger's key refuses the second one and the run fails with nothing sent twice.)"""
        try:
            self._checkpoint(checkpoint, now)
        except WarehouseError as exc:
            if not exc.connection_lost:
                raise
            self._checkpoint(checkpoint, now)  # SQLAlchemy connects again on the next statement

    def _checkpoint(self, checkpoint: Checkpoint, now: dt.datetime) -> None:
        at = _naive_utc(now)
        run_id, sync_name = checkpoint.run_id, checkpoint.sync_name
        acked = _unique(checkpoint.acked)
        ledger_only = not (checkpoint.rejects or checkpoint.watermark is not None or checkpoint.renew_lease
                           or checkpoint.replace_ledger or checkpoint.resolve_rejects)
        # Most checkpoints only add ledger rows: one atomic statement needs no transaction around it.
        with contextlib.nullcontext() if ledger_only and self.conn.insert_is_atomic else self.conn.transaction():
            if checkpoint.replace_ledger and acked:
                placeholders, params = self.conn.in_values("id", [e.event_id for e in acked])
                self.conn.execute(f"delete from {self.p}ledger where sync_name = :s and event_id in {placeholders}",
                                  {"s": sync_name, **params})
            self.conn.insert_many(f"{self.p}ledger", ("event_id", "event_time"),
                                  [(e.event_id, e.event_time) for e in acked],
                                  {"sync_name": sync_name, "acked_at": at, "run_id": run_id})
            self.record_rejects(run_id, sync_name, checkpoint.rejects, now)
            if checkpoint.resolve_rejects and acked:
                placeholders, params = self.conn.in_values("id", [e.event_id for e in acked])
                self.conn.execute(f"update {self.p}rejects set resolved_at = :t where sync_name = :s "
                                  f"and resolved_at is null and event_id in {placeholders}",
                                  {"t": at, "s": sync_name, **params})
            if checkpoint.watermark is not None:
                self._set_watermark(run_id, sync_name, checkpoint.cursor_column, checkpoint.watermark, at)
            if checkpoint.renew_lease:
                self.renew_lease(sync_name, checkpoint.renew_lease, now, checkpoint.lease_ttl_seconds)
        if checkpoint.watermark is not None:
            self._watermark_written.add(sync_name)  # committed: later checkpoints update the row

    def record_rejects(self, run_id: str, sync_name: str, rejects: Sequence[Rejection], now: dt.datetime) -> None:
        self.conn.insert_many(
            f"{self.p}rejects", ("event_id", "cursor_value", "event_time", "reason", "detail"),
            [(r.event_id, cursor_text(r.cursor), r.event_time, r.reason, r.detail[:1000]) for r in rejects],
            {"run_id": run_id, "sync_name": sync_name, "recorded_at": _naive_utc(now)})

    def _set_watermark(self, run_id: str, sync_name: str, cursor_column: str, value: Any, at: dt.datetime) -> None:
        text, kind = encode_cursor(value)
        params = {"s": sync_name, "c": cursor_column, "w": text, "k": kind, "t": at, "r": run_id}
        if sync_name in self._watermark_written:  # one statement per checkpoint once the row is there
            self.conn.execute(f"update {self.p}watermarks set cursor_column = :c, watermark = :w, watermark_type = :k, "
                              "updated_at = :t, run_id = :r where sync_name = :s", params)
            return
        self.conn.execute(f"delete from {self.p}watermarks where sync_name = :s", {"s": sync_name})
        self.conn.execute(
            f"insert into {self.p}watermarks (sync_name, cursor_column, watermark, watermark_type, updated_at, run_id) "
            "values (:s, :c, :w, :k, :t, :r)", params)

    def finish_run(self, run_id: str, status: str, counts: dict[str, Any], watermark_after: Any,
                   rejected_by_reason: dict[str, int], error: str | None, health: str, now: dt.datetime) -> None:
        with self.conn.transaction():
            self.conn.execute(
                f"update {self.p}runs set status = :status, finished_at = :t, rows_read = :rows_read, "
                "events_sent = :events_sent, events_rejected = :events_rejected, events_skipped = :events_skipped, "
                "duplicates_skipped = :duplicates_skipped, batches = :batches, retries = :retries, "
                "watermark_after = :w, rejected_by_reason = :reasons, error = :error, health = :health "
                "where run_id = :r",
                {"status": status, "t": _naive_utc(now), "w": cursor_text(watermark_after), "health": health,
                 "reasons": json.dumps(rejected_by_reason, sort_keys=True), "error": error, "r": run_id, **counts})

    def last_health(self, sync_name: str) -> str | None:
        """Health of the sync's latest finished run (ok, rejecting, failing), for alerts on change."""
        rows = self.conn.query(
            f"select health from {self.p}runs where sync_name = :s and finished_at is not null "
            "and health is not null order by finished_at desc limit 1", {"s": sync_name})
        return rows[0][0] if rows else None

    def prune_ledger(self, sync_name: str, older_than_event_time: int) -> None:
        """Ids of events older than the attribution window can never be sent again: drop them."""
        with self.conn.transaction():
            self.conn.execute(f"delete from {self.p}ledger where sync_name = :s and event_time < :t",
                              {"s": sync_name, "t": older_than_event_time})


class AbsentState(StateStore):
    """The state of a project that has none yet (no tables, or no state file), for runs that write none:
    dry and test runs read through it and find nothing recorded, and nothing is created."""

    def __init__(self, schema: str | None = None) -> None:
        # No connection: every read below answers "nothing recorded" without one.
        self.conn = None  # type: ignore[assignment]
        self.schema_name, self.schema, self.p = schema, schema, ""
        self._watermark_written = set()

    def version(self) -> int | None:
        return None

    def watermark(self, sync_name: str) -> Any:
        return None

    def watermark_column(self, sync_name: str) -> str | None:
        return None

    def already_rejected_rows(self, sync_name: str, keys: set[tuple[str, ...]]) -> set[tuple[str, ...]]:
        return set()

    def acknowledged(self, sync_name: str, event_ids: Sequence[str]) -> set[str]:
        return set()

    def already_rejected(self, sync_name: str, keys: set[tuple[str, str, str]]) -> set[tuple[str, str, str]]:
        return set()

    def unresolved_rejects(self, sync_name: str, event_ids: Sequence[str], reasons: Iterable[str]) -> set[str]:
        return set()

    def last_health(self, sync_name: str) -> str | None:
        return None


def _holder_alive(owner: str) -> bool:
    """Owners are `host:pid:run`; a holder on this host is alive only while its process exists."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lease_owner(run_id: str) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{run_id}"


def _unique(events: Iterable[Event]) -> list[Event]:
    return list({e.event_id: e for e in events}.values())


def _naive_utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.timezone.utc).replace(tzinfo=None) if value.tzinfo else value
