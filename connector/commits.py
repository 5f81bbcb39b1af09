"""State commits in the order they are made: on the run's thread, or on one helper thread for a store that is
another process."""

from __future__ import annotations

import datetime as dt
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from .errors import StateError
from .state import Checkpoint, StateStore

AHEAD = 2  # commits that may be waiting on the helper thread while the run goes on


@dataclass
class _Pending:
    future: Future[float]
    event_ids: list[str]
    committed: Callable[[], None]


class StateCommits:
    """Checkpoints committed one after another, in order. A store in another process (PostgreSQL, Snowflake)
    spends most of a commit waiting for the server: there commits run on one helper thread, on a connection
    of their own (the run asks the ledger on its own meanwhile), at most AHEAD of them behind the run, which
    goes on reading, building and sending, and their event ids count as sent until they are committed. Once a commit fails, no later one runs (a later watermark must not pass rows
    whose rejects were not stored), and the failure is raised on the run's thread by the next `commit` or by
    `wait`. `committed` callbacks run on the run's thread, in order, once their checkpoint is durable."""

    def __init__(self, store: StateStore, background: bool) -> None:
        self.store = store
        self.seconds = 0.0  # spent committing, on whichever thread did it
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tiktok-commit") if background else None
        self._own: StateStore | None = None  # the helper thread's, on a connection of its own
        self._pending: deque[_Pending] = deque()
        self._event_ids: set[str] = set()
        self._failed = False

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._event_ids

    def commit(self, checkpoint: Checkpoint, now: dt.datetime, committed: Callable[[], None]) -> None:
        if self._pool is None:
            self.seconds += self._commit(checkpoint, now)
            committed()
            return
        self._settle(AHEAD - 1)
        if self._own is None:  # the run asks the ledger on its own connection meanwhile
            self._own = StateStore(self.store.conn.sibling(), self.store.schema_name)
        event_ids = [event.event_id for event in checkpoint.acked]
        self._event_ids.update(event_ids)
        self._pending.append(_Pending(self._pool.submit(self._commit, checkpoint, now), event_ids, committed))

    def wait(self) -> None:
        """Until every commit made is durable (raises the first that failed)."""
        self._settle(0)

    def close(self) -> None:
        """Let the commits already made finish (a run stopped by another error keeps what TikTok acknowledged)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._own is not None:
            self._own.conn.close()

    def _commit(self, checkpoint: Checkpoint, now: dt.datetime) -> float:
        if self._failed:
            raise StateError("not committed: an earlier state commit of this run failed")
        started = time.perf_counter()
        try:
            (self._own or self.store).checkpoint(checkpoint, now)
        except BaseException:
            self._failed = True
            raise
        return time.perf_counter() - started

    def _settle(self, keep: int) -> None:
        """Apply the commits that are done, and wait for the oldest until at most `keep` are pending."""
        while self._pending and (len(self._pending) > keep or self._pending[0].future.done()):
            pending = self._pending.popleft()
            self.seconds += pending.future.result()
            self._event_ids.difference_update(pending.event_ids)
            pending.committed()
