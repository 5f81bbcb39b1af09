"""Row chunks → row groups: the frozen upper bound (rows past it are deferred, not read)."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings, strategies as st

from connector.report import SyncReport
from connector.rows import grouped

UTC = dt.timezone.utc
END = dt.datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def _reference(rows: list[tuple], end: dt.datetime | None) -> tuple[list[tuple], int]:
    """What grouped() must read: every row before the first one at or past the end (naive cursors are UTC)."""
    for position, (cursor, _) in enumerate(rows):
        if isinstance(cursor, dt.datetime) and end is not None and \
                (cursor.replace(tzinfo=UTC) if cursor.tzinfo is None else cursor) >= end:
            return rows[:position], len(rows) - position
    return rows, 0


_offsets = st.lists(st.one_of(st.none(), st.integers(-5, 5)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(offsets=_offsets, cuts=st.lists(st.integers(1, 60), max_size=8), naive=st.booleans(),
       with_end=st.booleans())
def test_rows_past_the_end_are_deferred_whatever_the_chunks(offsets: list[int | None], cuts: list[int],
                                                            naive: bool, with_end: bool) -> None:
    """Cursors in the query's order (NULLs first, then ascending, ties too), in chunks of any size: the rows
    read are the ones before the first cursor at or past the end, the rest are counted as deferred."""
    minutes = sorted(offset for offset in offsets if offset is not None)
    cursors = [None] * (len(offsets) - len(minutes)) + [END + dt.timedelta(minutes=m) for m in minutes]
    if naive:
        cursors = [c if c is None else c.replace(tzinfo=None) for c in cursors]
    rows = [(cursor, i) for i, cursor in enumerate(cursors)]
    chunks, start = [], 0
    for cut in sorted(set(cuts)) + [len(rows)]:
        if start < cut <= len(rows):
            chunks.append(rows[start:cut])
            start = cut
    end = END if with_end else None
    report = SyncReport("s")
    got = [group for groups in grouped(iter(chunks), None, report, 0, end) for group in groups]
    expected, deferred = _reference(rows, end)
    assert [group[0] for group in got] == expected
    assert (report.rows_read, report.rows_deferred) == (len(expected), deferred)


def test_a_chunk_whose_cursors_do_not_compare_is_still_cut_at_the_end() -> None:
    """Values that cannot be compared with each other (naive beside aware) are tested row by row."""
    rows = [(END.replace(tzinfo=None) - dt.timedelta(hours=1), 1), (END - dt.timedelta(hours=1), 2), (END, 3)]
    report = SyncReport("s")
    got = [group for groups in grouped(iter([rows]), None, report, 0, END) for group in groups]
    assert [group[0][1] for group in got] == [1, 2]
    assert (report.rows_read, report.rows_deferred) == (2, 1)
