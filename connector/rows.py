"""Reading a sync's rows: the lower bound of the read window, the frozen upper bound, and row chunks
grouped into events (one row per item → one event)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from .events import Row
from .report import SyncReport


def read_start(watermark: Any, lookback_seconds: int) -> Any:
    """The closed lower bound: the watermark, moved back by the lookback for late-arriving rows."""
    if watermark is None or not lookback_seconds:
        return watermark
    if isinstance(watermark, (dt.datetime, dt.date)):
        return watermark - dt.timedelta(seconds=lookback_seconds)
    if isinstance(watermark, (int, float)) and not isinstance(watermark, bool):
        return watermark - lookback_seconds
    return watermark


def _past_end(cursor: Any, end: dt.datetime | None, end_naive: dt.datetime | None) -> bool:
    """The frozen upper bound applies to timestamp cursors; naive ones are UTC."""
    if end is None or not isinstance(cursor, dt.datetime):
        return False
    return cursor >= (end_naive if cursor.tzinfo is None else end)


def grouped(chunks: Iterator[list[tuple[Any, ...]]], group_index: int | None, report: SyncReport,
             cursor_index: int, end: dt.datetime | None) -> Iterator[list[list[Row]]]:
    """Row chunks → lists of row groups, stopping at the upper bound (rows past it are only counted).

    With items mapped, consecutive rows sharing an event id form one group (one event, one item per row);
    a group may straddle two chunks."""
    carry: list[Row] = []
    deferring = False
    end_naive = end.astimezone(dt.timezone.utc).replace(tzinfo=None) if end else None
    for chunk in chunks:
        if deferring:
            report.rows_deferred += len(chunk)
            continue
        for position, row in enumerate(chunk):
            if _past_end(row[cursor_index], end, end_naive):
                deferring = True
                report.rows_deferred += len(chunk) - position
                chunk = chunk[:position]
                break
        report.rows_read += len(chunk)
        if group_index is None:
            if chunk:
                yield [[row] for row in chunk]
            continue
        groups: list[list[Row]] = []
        for row in chunk:
            if carry and row[group_index] != carry[0][group_index]:
                groups.append(carry)
                carry = []
            carry.append(row)
        if groups:
            yield groups
    if carry:
        yield [carry]
