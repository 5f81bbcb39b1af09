"""Row chunks → row groups: the frozen upper bound (rows past it are deferred, not read)."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest

from hypothesis import given, settings, strategies as st

from connector.report import SyncReport
from connector.rows import _read_ahead, grouped

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


def _counted_chunks(count: int, produced: list[int], fail_at: int | None = None):
    for n in range(count):
        if n == fail_at:
            raise RuntimeError("the warehouse went away")
        produced.append(n)
        yield [(n,)]


def test_read_ahead_keeps_at_most_depth_chunks_waiting() -> None:
    """The helper thread fetches ahead while chunks are consumed, but never more than `depth` beyond them
    (memory stays bounded whatever the result's size), and every chunk arrives once, in order."""
    produced: list[int] = []
    reader = _read_ahead(_counted_chunks(40, produced), depth=3)
    seen = []
    for chunk in reader:
        time.sleep(0.005)  # a slow consumer: the reader runs ahead until the queue is full
        # waiting: at most `depth` in the queue and one fetched, blocked on putting it
        assert len(produced) - len(seen) <= 3 + 2
        seen.append(chunk[0][0])
    assert seen == list(range(40))


def test_read_ahead_runs_ahead_of_a_slow_consumer() -> None:
    produced: list[int] = []
    reader = _read_ahead(_counted_chunks(10, produced), depth=5)
    assert next(reader) == [(0,)]
    deadline = time.monotonic() + 5
    while len(produced) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(produced) >= 6  # fetched while the first chunk was being consumed
    assert [c[0][0] for c in reader] == list(range(1, 10))


def test_read_ahead_raises_the_fetch_error_after_the_chunks_before_it() -> None:
    produced: list[int] = []
    seen = []
    with pytest.raises(RuntimeError, match="went away"):
        for chunk in _read_ahead(_counted_chunks(10, produced, fail_at=4), depth=2):
            seen.append(chunk[0][0])
    assert seen == [0, 1, 2, 3]


def test_read_ahead_closed_early_stops_its_thread_before_returning() -> None:
    """A consumer that stops (a preview, an error) while the reader is blocked on a full queue: closing
    returns at once, the thread has ended (the result can be closed safely), and nothing more is fetched."""
    produced: list[int] = []
    before = set(threading.enumerate())
    reader = _read_ahead(_counted_chunks(1000, produced), depth=2)
    next(reader)
    time.sleep(0.05)  # the queue fills, the reader blocks
    started = time.monotonic()
    reader.close()
    assert time.monotonic() - started < 1
    assert not [t for t in set(threading.enumerate()) - before if t.name == "tiktok-read"]
    fetched = len(produced)
    time.sleep(0.05)
    assert len(produced) == fetched <= 5
