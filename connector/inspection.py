"""Read the state tables for `status`, `history` and `rejects`, and clear them for `reset`.

Reading writes nothing: a run still `running` whose sync no live run holds (its process is gone, or its lease
expired) is shown `abandoned`, as the next run of the sync will record it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .errors import LeaseHeld
from .state import StateStore, cursor_text, decode_cursor
from .timeutil import utcnow


@dataclass(frozen=True)
class SyncStatus:
    sync: str
    watermark: str | None
    last_run_at: dt.datetime | None  # UTC, with its offset
    last_status: str | None
    last_events_sent: int | None
    last_events_rejected: int | None
    health: str  # ok | rejecting | failing | running | abandoned | never run
    ledger_size: int
    unresolved_rejects: int


RUN_COLUMNS = ("run_id", "mode", "status", "health", "started_at", "finished_at", "rows_read", "events_sent",
               "events_rejected", "events_skipped", "duplicates_skipped", "batches", "retries",
               "watermark_before", "watermark_after", "error")
REJECT_COLUMNS = ("recorded_at", "run_id", "event_id", "cursor_value", "event_time", "reason", "detail",
                  "resolved_at")


def _utc(value: Any) -> Any:
    """A time from the state tables, which store UTC without an offset, as an aware UTC datetime."""
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value


def never_run(sync_name: str) -> SyncStatus:
    return SyncStatus(sync_name, None, None, None, None, None, "never run", 0, 0)


def sync_status(store: StateStore, sync_name: str) -> SyncStatus:
    p = store.p
    mark = store.conn.query(f"select watermark, watermark_type from {p}watermarks where sync_name = :s",
                            {"s": sync_name})
    runs = store.conn.query(
        f"select started_at, status, events_sent, events_rejected, health, {_owner(store)} from {p}runs "
        "where sync_name = :s and mode = 'sync' order by started_at desc limit 1", {"s": sync_name})
    (ledger,) = store.conn.query(f"select count(*) from {p}ledger where sync_name = :s", {"s": sync_name})[0]
    (unresolved,) = store.conn.query(
        f"select count(*) from {p}rejects where sync_name = :s and resolved_at is null", {"s": sync_name})[0]
    watermark = cursor_text(decode_cursor(*mark[0])) if mark and mark[0][0] is not None else None
    if not runs:
        return SyncStatus(sync_name, watermark, None, None, None, None, "never run", int(ledger), int(unresolved))
    started, status, sent, rejected, health, owner = runs[0]
    status = _shown_status(store, sync_name, status, owner)
    return SyncStatus(sync_name, watermark, _utc(started), status, sent, rejected,
                      status if status in ("running", "abandoned") else (health or status), int(ledger),
                      int(unresolved))


def run_history(store: StateStore, sync_name: str, limit: int) -> list[dict[str, Any]]:
    rows = store.conn.query(
        f"select {', '.join(RUN_COLUMNS)}, {_owner(store)} from {store.p}runs where sync_name = :s "
        "order by started_at desc limit :n", {"s": sync_name, "n": limit})
    runs = []
    for *values, owner in rows:
        run = dict(zip(RUN_COLUMNS, map(_utc, values)))
        run["status"] = _shown_status(store, sync_name, run["status"], owner)
        runs.append(run)
    return runs


def _owner(store: StateStore) -> str:
    """The runs' owner column, which state tables older than version 3 do not have."""
    return "owner" if (store.version() or 0) >= 3 else "null"


def _shown_status(store: StateStore, sync_name: str, status: str, owner: str | None) -> str:
    if status != "running":
        return status
    holder = store.live_lease(sync_name, utcnow())
    return "running" if holder is not None and (owner is None or owner == holder) else "abandoned"


def reject_counts(store: StateStore, sync_name: str, include_resolved: bool) -> dict[str, int]:
    rows = store.conn.query(
        f"select reason, count(*) from {store.p}rejects where sync_name = :s "
        f"{'' if include_resolved else 'and resolved_at is null '}group by reason order by count(*) desc",
        {"s": sync_name})
    return {reason: int(count) for reason, count in rows}


def reject_rows(store: StateStore, sync_name: str, reason: str | None, include_resolved: bool,
                limit: int | None, offset: int = 0) -> list[dict[str, Any]]:
    sql = f"select {', '.join(REJECT_COLUMNS)} from {store.p}rejects where sync_name = :s"
    params: dict[str, Any] = {"s": sync_name}
    if reason:
        sql += " and reason = :r"
        params["r"] = reason
    if not include_resolved:
        sql += " and resolved_at is null"
    sql += " order by recorded_at desc, run_id, event_id, reason"
    if limit:
        sql += " limit :n offset :o"
        params.update(n=limit, o=offset)
    return [dict(zip(REJECT_COLUMNS, map(_utc, row))) for row in store.conn.query(sql, params)]


def reset_sync(store: StateStore, sync_name: str, force: bool = False) -> dict[str, int]:
    """Forget the sync's watermark, ledger, rejects and lease (run history is kept). Returns rows deleted.

    Refused while a live run holds the sync's lease (it would go on writing the state being forgotten),
    unless `force`: the caller knows that holder is dead."""
    holder = store.live_lease(sync_name, utcnow())
    if holder is not None and not force:
        raise LeaseHeld(f"sync {sync_name!r} is running ({holder}): nothing was reset; wait for that run to "
                        "finish, or pass --force if that process is known to be dead (stopped, or its host is down)")
    deleted: dict[str, int] = {}
    with store.conn.transaction():
        for table in ("watermarks", "ledger", "rejects", "leases"):
            (count,) = store.conn.query(f"select count(*) from {store.p}{table} where sync_name = :s",
                                        {"s": sync_name})[0]
            store.conn.execute(f"delete from {store.p}{table} where sync_name = :s", {"s": sync_name})
            deleted[table] = int(count)
    return deleted


def iter_reject_rows(store: StateStore, sync_name: str, reason: str | None, include_resolved: bool,
                     page: int = 10_000) -> Iterator[dict[str, Any]]:
    """Every matching reject, a page at a time: an export never holds the whole table."""
    offset = 0
    while rows := reject_rows(store, sync_name, reason, include_resolved, page, offset):
        yield from rows
        offset += len(rows)
