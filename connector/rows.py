"""Reading a sync's rows: the lower bound of the read window, the frozen upper bound, and row chunks
grouped into events (one row per item → one event)."""

from __future__ import annotations

import datetime as dt
import contextlib
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from operator import is_not, itemgetter
from typing import Any

from .events import Row
from .query import Page
from .report import SyncReport
from .warehouse import ResultStream, Warehouse

PageSQL = Callable[[Page], tuple[str, dict[str, Any]]]


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


_not_none = partial(is_not, None)


def _may_pass_end(chunk: list[tuple[Any, ...]], cursor_index: int, end: dt.datetime,
                  end_naive: dt.datetime | None) -> bool:
    """Whether a row of the chunk may be past the upper bound: its greatest cursor is (one pass in C instead
    of a Python call per row: 0.27 → 0.05 s per 1M rows)."""
    try:
        greatest = max(filter(_not_none, map(itemgetter(cursor_index), chunk)), default=None)
    except TypeError:  # values that do not compare: each row is tested
        return True
    return _past_end(greatest, end, end_naive)


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
        if end is not None and _may_pass_end(chunk, cursor_index, end, end_naive):
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


def windows(chunks: Iterator[list[list[Row]]], rows: int) -> Iterator[list[list[list[Row]]]]:
    """Consecutive lists of row groups, gathered until they hold `rows` rows (the last may hold fewer)."""
    window: list[list[list[Row]]] = []
    count = 0
    for groups in chunks:
        window.append(groups)
        count += sum(map(len, groups))
        if count >= rows:
            yield window
            window, count = [], 0
    if window:
        yield window


READ_AHEAD_CHUNKS = 5


def _read_ahead(chunks: Iterator[list[Row]], depth: int = READ_AHEAD_CHUNKS) -> Iterator[list[Row]]:
    """The chunks, fetched by a helper thread while earlier ones are consumed, at most `depth` waiting: a
    window of rows is consumed at once, with a ledger lookup and state writes, and the warehouse would sit
    idle behind one chunk fetched ahead (it renders as the rows are fetched)."""
    waiting: queue.Queue[tuple[list[Row] | None, BaseException | None]] = queue.Queue(depth)
    stopped = threading.Event()

    def fetch() -> None:
        try:
            for chunk in chunks:
                waiting.put((chunk, None))
                if stopped.is_set():
                    return
            waiting.put((None, None))
        except BaseException as exc:  # handed to the consumer, raised there
            waiting.put((None, exc))

    reader = threading.Thread(target=fetch, name="tiktok-read", daemon=True)
    reader.start()
    try:
        while (item := waiting.get())[0] is not None:
            yield item[0]
        if item[1] is not None:
            raise item[1]
    finally:  # stopped early: the fetch in flight ends (its put finds room) before the result is closed
        stopped.set()
        while reader.is_alive():
            with contextlib.suppress(queue.Empty):
                waiting.get(timeout=0.05)
        reader.join()


@dataclass
class _OpenedPage:
    """A page read ahead: its first rows fetched, the rest (a page of many ties) still streaming."""

    chunks: deque[list[Row]]
    rest: ResultStream | None
    following: Page | None

    def close(self) -> None:
        if self.rest is not None:
            self.rest.close()


def paged_chunks(warehouse: Warehouse, page_sql: PageSQL, boundary_sql: PageSQL | None,
                 chunk_rows: int, page_rows: int, tie_count_sql: PageSQL | None = None,
                 read_ahead: bool = False) -> Iterator[list[Row]]:
    """Row chunks in cursor order, read page by page: each page ends just before the cursor `boundary_sql`
    finds `page_rows` rows ahead, so no query sorts more than a page. Rows sharing a cursor stay in one
    page: when there are more of them than a page holds, that page of ties is not sorted at all, and is
    read in slices of about `page_rows` rows (`tie_count_sql` counts them). No `boundary_sql`: one query.

    A helper thread queries and fetches the next page while this one is sent (DuckDB works without the
    GIL). It fetches the whole page, so the page's read transaction ends at once: DuckDB cannot clean up
    the state commits made while an older transaction is open, and a DuckDB that never gets to
    checkpoint keeps every ledger row in memory and in its WAL. No `boundary_sql`: one query, whose next chunks
    (up to READ_AHEAD_CHUNKS) a helper thread fetches while earlier ones are sent with `read_ahead`: the
    warehouse computes what it renders as the rows are fetched (DuckDB after its sort, PostgreSQL behind a
    server-side cursor), and would wait for the connector otherwise."""
    if boundary_sql is None:
        sql, params = page_sql(Page())
        with warehouse.stream(sql, params, chunk_rows) as stream:
            yield from _read_ahead(stream.chunks) if read_ahead else stream.chunks
        return

    def bounded(page: Page) -> Page:
        """The page up to the cursor `page_rows` rows ahead, or a page of ties sliced to fetch whole."""
        assert boundary_sql is not None
        if page.ties:
            return page
        with warehouse.stream(*boundary_sql(page), 1) as probe:
            found = next(probe.chunks, [])
        upper = found[0][0] if found else None
        if upper is None or upper != page.lower:
            return replace(page, upper=upper)
        ties = Page(lower=upper, upper=upper, upper_inclusive=True)
        if tie_count_sql is None:
            return ties
        with warehouse.stream(*tie_count_sql(ties), 1) as count:
            rows = next(count.chunks, [(0,)])[0][0]
        return replace(ties, parts=max(1, -(-rows // page_rows)))

    def open_page(page: Page) -> _OpenedPage:
        current = bounded(page)
        sql, params = page_sql(current)
        stream = warehouse.stream(sql, params, chunk_rows)
        fetched: deque[list[Row]] = deque()
        rows = 0
        try:
            for chunk in stream.chunks:  # exhausted for a page of `page_rows`; an unsliced page of ties may hold more
                fetched.append(chunk)
                rows += len(chunk)
                if rows >= 2 * page_rows:
                    return _OpenedPage(fetched, stream, current.following())
        except BaseException:
            stream.close()
            raise
        stream.close()
        return _OpenedPage(fetched, None, current.following())

    with ThreadPoolExecutor(1, thread_name_prefix="tiktok-page") as pool:
        upcoming: Future[_OpenedPage] | None = pool.submit(open_page, Page())
        try:
            while upcoming is not None:
                opened = upcoming.result()
                upcoming = pool.submit(open_page, opened.following) if opened.following is not None else None
                while opened.chunks:
                    yield opened.chunks.popleft()
                if opened.rest is not None:
                    with opened.rest:
                        yield from opened.rest.chunks
        finally:
            if upcoming is not None:  # stopped early: close the page opened ahead
                with contextlib.suppress(Exception):
                    upcoming.result().close()
