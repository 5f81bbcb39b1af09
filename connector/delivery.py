"""Events → batches → TikTok → state: open batches per event source id, requests in flight, 40002 isolation,
and checkpoints committed in batch order."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from . import payload
from .commits import StateCommits
from .config import SyncSettings
from .errors import ConnectorError
from .events import Event, Rejection
from .report import SyncReport
from .state import Checkpoint, CursorForm, StateStore
from .tiktok import InvalidEvents, TikTokClient

log = logging.getLogger("connector.delivery")
MAX_PENDING_REJECTS = 5000
# The ledger is committed with every batch and alone keeps a re-read from sending anything twice; the
# watermark only says where the next run starts reading, so it is written at most this often (and always
# when the run ends or fails): after a crash the next run re-reads at most this much more.
WATERMARK_EVERY_SECONDS = 1.0
# A store whose connection asks for fewer, larger commits (`events_per_commit`: Snowflake, where every
# statement is a round trip to a remote warehouse) still commits at least this often.
COMMIT_AT_LEAST_EVERY_SECONDS = 5.0


@dataclass(frozen=True)
class DeliveryPolicy:
    send: bool  # False for a dry run
    commit: bool  # False for dry and test runs: state is left untouched
    move_watermark: bool  # only incremental syncs; backfill and retry never move it
    resolve_rejects: bool = False  # retry marks the rejects it re-sent as resolved
    test_event_code: str | None = None
    resend: bool = False  # events already in the ledger are sent again: their ledger rows are replaced
    sample_events: int = 3  # events kept, in their request bodies, for dry-run and test output
    partner_name: str | None = None
    max_in_flight: int = 1  # batches sent concurrently


@dataclass
class Outcome:
    """What became of one batch: the parts TikTok acknowledged, the events it refused, and the error that
    stopped the rest (if any). Built in a sender thread; applied to state on the main thread."""

    acked: list[list[Event]] = field(default_factory=list)
    refused: list[Rejection] = field(default_factory=list)
    splits: int = 0
    error: ConnectorError | None = None


@dataclass
class _Dispatch:
    source_id: str
    batch: list[Event]
    future: Future[Outcome]
    event_ids: list[str]


class Delivery:
    """Keeps the watermark behind every event not yet acknowledged: it is committed as the first cursor of
    the oldest batch still open or in flight, or the last cursor read when there is none; the closed lower
    bound and the ledger make the re-read of ties harmless. Checkpoints follow batch order even when later
    batches are acknowledged first."""

    def __init__(self, sync: SyncSettings, policy: DeliveryPolicy, report: SyncReport, store: StateStore,
                 client: TikTokClient | None, run_id: str, stored_watermark: Any, form: CursorForm,
                 lease_owner: str | None, lease_ttl_seconds: int, clock: Callable[[], dt.datetime]) -> None:
        self.sync, self.policy, self.report, self.store, self.client = sync, policy, report, store, client
        self.run_id = run_id
        self.stored_watermark = stored_watermark  # in the pipeline's form, as every cursor here
        self.form = form
        self.lease_owner, self.lease_ttl_seconds = lease_owner, lease_ttl_seconds
        self._lease_renewed: dt.datetime | None = None
        self.clock = clock
        self.open_batches: dict[str, list[Event]] = {}
        self.open_ids: set[str] = set()  # ids in open or in-flight batches
        # Ids acknowledged since the runner last asked the ledger: an id may come back within a window of rows.
        self.recently_acked: set[str] = set()
        self.pending_rejects: list[Rejection] = []
        # Acknowledged events not committed yet: a slow store commits several batches at once (a crash re-sends
        # them, as it does the batches in flight). Their ids count as sent until the ledger has them.
        self.events_per_commit = store.conn.events_per_commit
        self.unsaved: list[Event] = []
        self.unsaved_ids: set[str] = set()
        self._committed_at = time.monotonic()
        self.commits = StateCommits(store, background=store.conn.commits_in_background)
        self.last_cursor: Any = None
        self.in_flight: deque[_Dispatch] = deque()
        self._watermark_due: Any = None  # safe to write, not written yet
        self._watermark_written_at = time.monotonic()
        self._pool = (ThreadPoolExecutor(policy.max_in_flight, thread_name_prefix="tiktok-send")
                      if policy.send else None)

    def reject(self, rejection: Rejection) -> None:
        self._record(rejection)
        if len(self.pending_rejects) >= MAX_PENDING_REJECTS:
            self.checkpoint([], final=True)  # a run of rejected rows must not pile up in memory

    def _record(self, rejection: Rejection) -> None:
        self.report.rejected_by_reason[rejection.reason] += 1
        self.pending_rejects.append(rejection)

    def is_pending_or_sent(self, event_id: str) -> bool:
        return (event_id in self.open_ids or event_id in self.recently_acked or event_id in self.unsaved_ids
                or event_id in self.commits)

    def add(self, event: Event) -> None:
        batch = self.open_batches.setdefault(event.event_source_id, [])
        batch.append(event)
        self.open_ids.add(event.event_id)
        if len(batch) >= self.sync.batch_size:
            self.deliver(event.event_source_id)

    def finish(self) -> None:
        for source_id in list(self.open_batches):
            self.deliver(source_id)
        self._drain(until_empty=True)
        self.checkpoint([], final=True, write_watermark=True)
        self.commits.wait()
        self.report.state_seconds = self.commits.seconds

    def close(self) -> None:
        """Wait for requests still in flight (a failing run must not leave senders behind), and for the state
        commits already made."""
        if self._pool:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self.commits.close()
        self.report.state_seconds = self.commits.seconds

    def deliver(self, source_id: str) -> None:
        batch = self.open_batches.pop(source_id, [])
        if not batch:
            return
        if self._pool is None:
            self.report.batches += 1
            self.open_ids.difference_update(e.event_id for e in batch)
            self._sample(source_id, batch)
            return
        self.in_flight.append(_Dispatch(source_id, batch, self._pool.submit(self._send, source_id, batch),
                                        [e.event_id for e in batch]))
        self._drain(until_empty=False)

    def _drain(self, until_empty: bool) -> None:
        """Apply finished batches in order; wait for the oldest while too many are in flight. Batches found
        acknowledged together are committed together: one transaction, the same guarantees."""
        while self.in_flight:
            head = self.in_flight[0]
            if not head.future.done() and not until_empty and len(self.in_flight) < self.policy.max_in_flight:
                return
            acked: list[Event] = []
            while True:
                dispatch = self.in_flight.popleft()
                outcome = dispatch.future.result()
                acked += self._apply(dispatch, outcome)
                if outcome.error is not None or not self.in_flight or not self.in_flight[0].future.done():
                    break
            self.checkpoint(acked, final=outcome.error is None)
            if outcome.error is not None:
                self._stop(outcome.error, dispatch)

    def _apply(self, dispatch: _Dispatch, outcome: Outcome) -> list[Event]:
        """Count one finished batch; returns the events TikTok acknowledged, for the checkpoint."""
        self.open_ids.difference_update(dispatch.event_ids)
        self.report.batches_split += outcome.splits
        for rejection in outcome.refused:
            self._record(rejection)  # committed with this batch's checkpoint
        for part in outcome.acked:
            self.report.batches += 1
            self.report.events_sent += len(part)
            self.recently_acked.update(dispatch.event_ids if part is dispatch.batch else (e.event_id for e in part))
            if self.policy.test_event_code:
                self._sample(dispatch.source_id, part)
        return [event for part in outcome.acked for event in part]

    def _stop(self, error: ConnectorError, failed: _Dispatch) -> None:
        """A batch failed for good: keep what later batches got acknowledged (ledger only), write the watermark
        up to the failed batch (when this run got anything acknowledged), then fail."""
        if self.report.events_sent:
            self._advance_watermark(failed.batch[0].cursor)
        while self.in_flight:
            dispatch = self.in_flight.popleft()
            outcome = dispatch.future.result()
            outcome.error = None
            self.report.batches_split += outcome.splits
            for rejection in outcome.refused:
                self._record(rejection)
            acked = [event for part in outcome.acked for event in part]
            self.report.events_sent += len(acked)
            self.report.batches += len(outcome.acked)
            self.checkpoint(acked, final=False)
        self.checkpoint([], final=False, write_watermark=True)
        with contextlib.suppress(ConnectorError):  # the batch's own failure is the one to report
            self.commits.wait()
        raise error

    def _send(self, source_id: str, batch: list[Event]) -> Outcome:
        """In a sender thread: send the batch; on a 40002 drop the event TikTok names, or bisect."""
        assert self.client is not None
        outcome = Outcome()
        parts = [batch]
        while parts:
            part = parts.pop(0)
            try:
                self.client.track(self.sync.event_source, source_id, [e.wire() for e in part],
                                  self.policy.test_event_code)
            except InvalidEvents as refused:
                parts[:0] = self._isolate(part, refused, outcome)
                continue
            except ConnectorError as exc:
                outcome.error = exc
                return outcome
            outcome.acked.append(part)
        return outcome

    @staticmethod
    def _isolate(part: list[Event], refused: InvalidEvents, outcome: Outcome) -> list[list[Event]]:
        index = 0 if len(part) == 1 else refused.index
        if index is not None and index < len(part):
            bad = part[index]
            outcome.refused.append(Rejection("rejected_by_tiktok", f"code {refused.code}: {refused}"[:1000],
                                             bad.event_id, bad.event_time, bad.cursor))
            rest = part[:index] + part[index + 1:]
            return [rest] if rest else []
        outcome.splits += 1
        middle = len(part) // 2
        return [part[:middle], part[middle:]]

    def _sample(self, source_id: str, events: list[Event]) -> None:
        """Keep the first events in the request body they go out in, exactly as sent (hashed)."""
        room = self.policy.sample_events - len(self.report.sample_events)
        if room > 0:
            self.report.sample_requests.append(payload.request_body(
                self.sync.event_source, source_id, [e.document() for e in events[:room]],
                self.policy.test_event_code, self.policy.partner_name))

    def checkpoint(self, acked: list[Event], final: bool, write_watermark: bool = False) -> None:
        """Commit the ledger and rejects after TikTok acknowledged `acked`, with the watermark when it is due
        (see WATERMARK_EVERY_SECONDS) or `write_watermark` asks for it. `final`: every batch before the
        open and in-flight ones is done, so the watermark may move up to them."""
        if final:
            self._advance_watermark()
        if not self.policy.commit:
            self.pending_rejects = []
            return
        if self.events_per_commit:
            self.unsaved += acked
            self.unsaved_ids.update(e.event_id for e in acked)
            if not (write_watermark or len(self.unsaved) >= self.events_per_commit
                    or len(self.pending_rejects) >= MAX_PENDING_REJECTS
                    or time.monotonic() - self._committed_at >= COMMIT_AT_LEAST_EVERY_SECONDS):
                return
            acked, self.unsaved = self.unsaved, []
            self.unsaved_ids = set()
        due = write_watermark or time.monotonic() - self._watermark_written_at >= WATERMARK_EVERY_SECONDS
        watermark = self._watermark_due if due else None
        rejects, self.pending_rejects = self.pending_rejects, []
        rejects = [replace(r, cursor=self.form.stored(r.cursor)) for r in rejects] if self.form.utc_naive else rejects
        log.debug("%s: checkpoint: %d acknowledged, %d rejects, watermark %s", self.sync.name, len(acked),
                  len(rejects), self.form.text(watermark))
        now = self.clock()
        renew = self.lease_owner and (self._lease_renewed is None or
                                      (now - self._lease_renewed).total_seconds() > self.lease_ttl_seconds / 4)
        if not (acked or rejects or watermark is not None or renew):
            return
        if renew:
            self._lease_renewed = now
        if watermark is not None:
            self._watermark_due, self._watermark_written_at = None, time.monotonic()

        def committed() -> None:
            if watermark is not None:
                self.report.watermark = self.form.text(watermark)

        self.commits.commit(Checkpoint(
            self.run_id, self.sync.name, self.sync.cursor, acked, rejects, self.form.stored(watermark),
            resolve_rejects=self.policy.resolve_rejects, replace_ledger=self.policy.resend,
            renew_lease=self.lease_owner if renew else None, lease_ttl_seconds=self.lease_ttl_seconds), now,
            committed)
        self.report.state_seconds = self.commits.seconds
        self._committed_at = time.monotonic()

    def _advance_watermark(self, *unacknowledged: Any) -> None:
        """Note the watermark that is safe now, to write when due. It never decreases: a row read later has
        a cursor at or past every watermark computed before."""
        candidate = self._safe_watermark(*unacknowledged) if self.policy.move_watermark else None
        if candidate is not None:
            self._watermark_due = candidate

    def _safe_watermark(self, *unacknowledged: Any) -> Any:
        pending = [batch[0].cursor for batch in self.open_batches.values() if batch] + list(unacknowledged)
        pending += [dispatch.batch[0].cursor for dispatch in self.in_flight]
        candidate = min(pending) if pending else self.last_cursor
        if candidate is None:
            return None
        if self.stored_watermark is not None and candidate <= self.stored_watermark:
            return None  # a lookback re-read never moves the watermark back
        return candidate
