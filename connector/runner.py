"""One run of a sync, start to end: state → read window → SQL → rows → events → Delivery → report.

Modes: `sync` (incremental), `test` (test_event_code; state untouched), `backfill` (an event
time range; never moves the watermark) and `retry` (rows with unresolved rejects); any of them dry.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from . import query as sqlq
from .alerts import alert_payload, send_alert
from .config import Project, SyncSettings
from .delivery import Delivery, DeliveryPolicy
from .dialects import Dialect
from .errors import ConfigError, ConnectorError, SyncLocked
from .events import Event, EventBuilder, Rejection, Row
from .mapping import CompiledMapping, compile_mapping, find_column, load_mapping
from .report import SyncReport
from .rows import grouped, paged_chunks, read_start, windows
from .sql_events import RenderedEvents, rendered_select
from .state import CursorForm, RunRecord, StateStore, cursor_text, lease_owner
from .tiktok import RetryPolicy, TikTokClient
from .timeutil import attribution_window, to_unix_seconds, utcnow
from .warehouse import Warehouse, open_warehouse

log = logging.getLogger("connector.runner")
CHUNK_ROWS = 5000
PAGE_ROWS = 50_000  # rows one DuckDB query sorts at most (ties at a page's end excepted)
FAKE_BASE_URL = "fake"
LEASE_TTL_SECONDS = 600
TIKTOK_REFUSED = "rejected_by_tiktok"
RETRYABLE_REASONS = frozenset({TIKTOK_REFUSED})


@dataclass
class LedgerAnswer:
    """The ids a window's ledger lookup asked about, and those the ledger holds (acknowledged before)."""

    asked: set[str]
    acknowledged: set[str]


@dataclass
class RunOptions:
    dry_run: bool = False
    test_event_code: str | None = None
    now: dt.datetime | None = None
    backfill: tuple[dt.datetime, dt.datetime] | None = None  # [start, end) by event time
    retry_reasons: frozenset[str] | None = None
    resend: bool = False  # send events the ledger says were acknowledged already
    preview_limit: int | None = None  # dry run that stops after this many events
    progress: Callable[[SyncReport], None] | None = None  # called after each chunk of rows

    @property
    def mode(self) -> str:
        if self.test_event_code:
            return "test"
        if self.backfill:
            return "backfill"
        if self.retry_reasons:
            return "retry"
        return "sync"


def run_sync(project: Project, sync: SyncSettings, options: RunOptions | None = None, *,
             warehouse: Warehouse | None = None, client: TikTokClient | None = None) -> SyncReport:
    """Run one sync and return its report. Raises ConfigError for user mistakes found before anything is
    sent and SyncLocked when another run holds the sync; run failures come back as status 'failed'."""
    options = options or RunOptions()
    if not options.test_event_code and project.tiktok.test_event_code and not options.dry_run:
        options = replace(options, test_event_code=project.tiktok.test_event_code)
    report = SyncReport(sync=sync.name, mode=options.mode, dry_run=options.dry_run)
    started = time.monotonic()
    own_warehouse = warehouse is None
    warehouse = warehouse or open_warehouse(project.warehouse_url, project.warehouse_options)
    state_warehouse = open_warehouse(project.state_url) if project.state_url else warehouse
    fake = None
    try:
        if not options.dry_run and client is None:
            if project.tiktok.base_url == FAKE_BASE_URL:
                from .testing.fake_tiktok import FakeTikTok
                fake = FakeTikTok(access_token=project.require_token()).start()
                report.notes.append("sent to the built-in fake TikTok on 127.0.0.1 (tiktok.base_url: fake); "
                                    "remove that line to send to TikTok")
            client = _client(project, fake.base_url if fake else None)
        run = _Run(project, sync, options, report, warehouse, StateStore(state_warehouse.connect(),
                                                                          project.state_schema), client)
        try:
            run.execute()
            report.status = "success"
        except SyncLocked:
            raise
        except ConfigError as exc:
            report.status, report.error = "failed", str(exc)  # recorded and alerted like any failure
            raise
        except ConnectorError as exc:
            report.status, report.error = "failed", str(exc)
        finally:
            report.duration_seconds = time.monotonic() - started
            report.retries = client.retries if client else 0
            run.finish()
    finally:
        if fake is not None:
            fake.stop()
        if state_warehouse is not warehouse:
            state_warehouse.close()
        if own_warehouse:
            warehouse.close()
    return report


def _client(project: Project, base_url: str | None = None) -> TikTokClient:
    settings = project.tiktok
    return TikTokClient(
        base_url or settings.base_url, project.require_token(), timeout=settings.timeout_seconds,
        retry=RetryPolicy(max_attempts=settings.max_attempts, max_elapsed=settings.max_retry_seconds),
        partner_name=settings.partner_name, connections=settings.max_in_flight)


class _Run:
    def __init__(self, project: Project, sync: SyncSettings, options: RunOptions, report: SyncReport,
                 warehouse: Warehouse, store: StateStore, client: TikTokClient | None) -> None:
        self.project, self.sync, self.options, self.report = project, sync, options, report
        self.warehouse, self.store, self.client = warehouse, store, client
        self.now = options.now or utcnow()
        self.mode = options.mode
        self.commits = not options.dry_run and self.mode != "test"
        self.run_id = uuid.uuid4().hex
        self.owner = lease_owner(self.run_id)
        self.leased = False
        self.recorded = False
        self.form = CursorForm()
        self.backfill = _backfill_range(options.backfill)  # [start, end) in Unix seconds

    def _clock(self) -> dt.datetime:
        return utcnow() if self.options.now is None else self.now

    def _begin(self) -> Any:
        """State first: tables, the lease and the run's row, so even a run whose query fails is recorded."""
        sync, store = self.sync, self.store
        store.ensure_tables()
        if self.commits:
            holder = store.acquire_lease(sync.name, self.owner, self._clock(), LEASE_TTL_SECONDS)
            if holder:
                raise SyncLocked(f"sync {sync.name!r} is already running ({holder}); nothing was done")
            self.leased = True
        stored_watermark = store.watermark(sync.name)
        self.report.watermark_before = cursor_text(stored_watermark)
        if self.commits:
            store.start_run(RunRecord(self.run_id, sync.name, self.mode, self.now, stored_watermark))
            self.report.run_id, self.recorded = self.run_id, True
        return stored_watermark

    def _compile(self) -> tuple[str, list[str], list[str], CompiledMapping, int]:
        """Render the query, learn its columns without reading a row, and check the mapping against them."""
        sync = self.sync
        mapping = load_mapping(sync.mapping, self.project.mappings_dir)
        context = {"vars": sync.vars, "sync": sync.name, "event_source": sync.event_source}
        rendered = sqlq.render(self.project.queries_dir, sync.query, self.warehouse.dialect, context)
        with self.warehouse.stream(f"select * from (\n{rendered}\n) as probe where 1 = 0", {}, 1) as probe:
            columns, kinds = probe.columns, probe.kinds
        compiled = compile_mapping(mapping, columns, sync.event_source)
        cursor_index = find_column(columns, sync.cursor)
        if cursor_index is None:
            raise ConfigError(f"{self.project.config_path}: syncs.{sync.name}.cursor",
                              f"column {sync.cursor!r} is not in the query result",
                              f"the query returns: {', '.join(columns)}")
        if compiled.not_applicable:
            self.report.notes.append(f"not sent for {sync.event_source} events: {', '.join(compiled.not_applicable)}")
        return rendered, columns, kinds, compiled, cursor_index

    def execute(self) -> None:
        sync, store = self.sync, self.store
        stored_watermark = self._begin()
        rendered, columns, kinds, compiled, cursor_index = self._compile()
        dialect = Dialect(self.warehouse.dialect)
        plan = sqlq.plan_select(compiled, columns, kinds, cursor_index, dialect,
                                _warehouse_hashing(dialect, sync) if sync.hash_in_warehouse else None)
        self.form = form = plan.cursor_form
        watermark = form.pipeline(stored_watermark)
        window = attribution_window(self.now, sync.attribution_window_days, sync.future_tolerance_seconds)
        builder = EventBuilder(plan.mapping, sync.event_source, sync.event_source_id, window, plan.cursor_index,
                               sync.default_phone_region)
        build, event_ids = builder.build_all, builder.event_ids
        fast = rendered_select(compiled, columns, kinds, cursor_index, sync.event_source, sync.event_source_id,
                               window, builder, dialect)
        if fast is not None:
            rendered_events = RenderedEvents(builder, len(plan.items), plan.cursor_index, sync.event_source_id)
            build, event_ids = rendered_events.build, rendered_events.event_ids
            plan = plan.rendering(fast.items, fast.params, fast.prepared)
        incremental = self.mode in ("sync", "test")
        start = read_start(watermark, sync.lookback_seconds) if incremental else None
        read_window, group_column = sqlq.ReadWindow(start), _group_column(compiled, columns)

        tie_key = _event_id_column(compiled, columns)

        def page_sql(page: sqlq.Page) -> tuple[str, dict[str, Any]]:
            return sqlq.incremental_sql(rendered, plan, columns[cursor_index], read_window, group_column, page,
                                        tie_key)

        def boundary_sql(page: sqlq.Page) -> tuple[str, dict[str, Any]]:
            return sqlq.page_boundary_sql(rendered, columns[cursor_index], read_window, page, PAGE_ROWS)

        def tie_count_sql(page: sqlq.Page) -> tuple[str, dict[str, Any]]:
            return sqlq.tie_count_sql(rendered, columns[cursor_index], read_window, page)

        # Embedded DuckDB sorts in this process: it reads page by page. Other warehouses sort on their side.
        paged = self.warehouse.dialect == "duckdb" and group_column is None
        sql = page_sql(sqlq.Page())[0]
        if self.commits:
            store.prune_ledger(sync.name, window.oldest)
        delivery = Delivery(
            sync, DeliveryPolicy(send=not self.options.dry_run, commit=self.commits,
                                 move_watermark=self.mode == "sync", resolve_rejects=self.mode == "retry",
                                 test_event_code=self.options.test_event_code, resend=self.options.resend,
                                 sample_events=self.options.preview_limit or 3,
                                 partner_name=self.project.tiktok.partner_name,
                                 max_in_flight=self.project.tiktok.max_in_flight),
            self.report, store, self.client, self.run_id, watermark, form,
            self.owner if self.leased else None, LEASE_TTL_SECONDS, self._clock)
        end = self.now - dt.timedelta(seconds=sync.safety_margin_seconds) if incremental else None
        group_index = builder.event_id_index if compiled.item_slots else None
        self.report.sql = sql
        log.info("%s (%s): reading rows with %s >= %s", sync.name, self.mode, sync.cursor,
                 form.text(start) or "(the beginning)")
        limit = self.options.preview_limit
        try:
            chunks = paged_chunks(self.warehouse, page_sql, boundary_sql if paged else None, CHUNK_ROWS,
                                  PAGE_ROWS, tie_count_sql if tie_key else None)
            try:
                row_groups = grouped(chunks, group_index, self.report, plan.cursor_index, end)
                # One ledger lookup per window of rows. With random ids (order numbers, UUIDs) DuckDB scans the
                # sync's whole ledger for each lookup, whatever its size: a window of half a page (rows already
                # in memory) makes one lookup of five chunks. A streamed result is looked up chunk by chunk.
                window_rows = PAGE_ROWS // 2 if paged else CHUNK_ROWS
                for groups, ledger in self._looked_up(windows(row_groups, window_rows), event_ids, delivery):
                    self._consume(build(groups), delivery, watermark, ledger)
                    if self.options.progress:
                        self.options.progress(self.report)
                    if limit and self.report.events_built >= limit:
                        break
            finally:
                chunks.close()
            delivery.finish()
        finally:
            delivery.close()
        if self.report.rows_deferred:
            self.report.notes.append(
                f"{self.report.rows_deferred} row(s) changed within safety_margin_seconds "
                f"({sync.safety_margin_seconds}s) are left for the next run")

    def _looked_up(self, windows: Iterator[list[list[list[Row]]]],
                   event_ids: Callable[[list[list[Row]]], list[str | None]],
                   delivery: Delivery) -> Iterator[tuple[list[list[Row]], LedgerAnswer]]:
        """Each chunk of row groups with the ledger's answer for its window's ids, asked once per window."""
        for window in windows:
            ids = [] if self.options.resend else \
                list(dict.fromkeys(i for groups in window for i in event_ids(groups) if i is not None))
            ledger = LedgerAnswer(set(ids), self.store.acknowledged(self.sync.name, ids) if ids else set())
            delivery.recently_acked.clear()  # the ledger now answers for what was acknowledged before
            window.reverse()
            while window:
                yield window.pop(), ledger  # a chunk's rows are freed once it is consumed

    def _consume(self, items: list[Event | Rejection], delivery: Delivery, watermark: Any,
                 ledger: LedgerAnswer) -> None:
        sync_name = self.sync.name
        events = [item for item in items if isinstance(item, Event)]
        ids = [e.event_id for e in events]
        backfill = self.backfill
        if backfill:
            inside = [i for i in items if i.event_time is None or backfill[0] <= i.event_time < backfill[1]]
            self.report.events_outside_range += len(items) - len(inside)
            items = inside
        if self.options.retry_reasons:
            keys = [i.event_id for i in items if i.event_id is not None]
            wanted = self.store.unresolved_rejects(sync_name, keys, self.options.retry_reasons) if keys else set()
            items = [i for i in items if i.event_id in wanted]
        unasked = [i for i in ids if i not in ledger.asked] if not self.options.resend else []
        if unasked:  # ids the window's lookup did not cover (built otherwise than read ahead) are asked now
            ledger.acknowledged.update(self.store.acknowledged(sync_name, unasked))
            ledger.asked.update(unasked)
        acknowledged = ledger.acknowledged
        known = self._recorded_rejects(items, watermark)
        for item in items:
            if item.cursor is not None:
                delivery.last_cursor = item.cursor
            if isinstance(item, Rejection):
                recorded = bool(known) and self._reject_key(item, item.reason) in known
                if not recorded:
                    delivery.reject(item)
                elif self.mode in ("backfill", "retry"):
                    self.report.rejected_by_reason[item.reason] += 1  # counted, not stored twice
                continue
            self.report.events_built += 1
            if known and self._reject_key(item, TIKTOK_REFUSED) in known:
                continue  # TikTok refused this very row before: `retry` re-sends it on demand
            if item.event_id in acknowledged or delivery.is_pending_or_sent(item.event_id):
                self.report.duplicates_skipped += 1
                continue
            delivery.add(item)

    def _reject_key(self, item: Event | Rejection, reason: str) -> tuple[str, str, str]:
        return (item.event_id or "", self.form.text(item.cursor) or "", reason)

    def _recorded_rejects(self, items: list[Event | Rejection], watermark: Any) -> set[tuple[str, str, str]]:
        """Rejects already stored for re-read rows (at or behind the watermark)."""
        if watermark is None or self.mode == "retry":
            return set()
        keys = {self._reject_key(i, i.reason if isinstance(i, Rejection) else TIKTOK_REFUSED) for i in items
                if i.event_id is not None and i.cursor is not None and i.cursor <= watermark}
        return self.store.already_rejected(self.sync.name, keys) if keys else set()

    def finish(self) -> None:
        report, sync = self.report, self.sync
        if report.watermark is None:
            report.watermark = report.watermark_before
        report.health_label = report.health(sync.max_reject_rate)
        log.info("%s: %s, %d events sent, %d not sent, watermark %s", sync.name, report.status,
                 report.events_sent, report.events_rejected, report.watermark)
        try:
            previous = self.store.last_health(sync.name) if self.commits else None
            if self.recorded:
                self.store.finish_run(self.run_id, report.status, report.counts(), report.watermark,
                                      dict(report.rejected_by_reason), report.error, report.health_label, utcnow())
            if self.leased:
                self.store.release_lease(sync.name, self.owner)
        except ConnectorError as exc:
            previous = None
            report.notes.append(f"the run could not be recorded in the state tables: {exc}")
        if sync.alert_webhook_url and self.commits and report.status in ("success", "failed"):
            payload = alert_payload(report, previous, report.health_label)
            problem = send_alert(sync.alert_webhook_url, payload) if payload else None
            if problem:
                report.notes.append(problem)


def _backfill_range(backfill: tuple[dt.datetime, dt.datetime] | None) -> tuple[int, int] | None:
    if not backfill:
        return None
    start, end = (to_unix_seconds(value) for value in backfill)
    assert start is not None and end is not None
    return start, end


def _warehouse_hashing(dialect: Dialect, sync: SyncSettings) -> dict[str, Callable[[str], str]]:
    """SQL that hashes emails, phones and external ids, so plain values stay in the warehouse; the Python
    path then sees 64-hex values and passes them through."""
    return {
        "user.email": dialect.hashed_email,
        "user.phone": lambda column: dialect.hashed_phone(column, sync.default_phone_region),
        "user.external_id": dialect.hashed_external_id,
    }


def _group_column(compiled: CompiledMapping, columns: list[str]) -> str | None:
    slot = compiled.slot("event_id")
    return columns[slot.index] if compiled.item_slots and slot and slot.index is not None else None


def _event_id_column(compiled: CompiledMapping, columns: list[str]) -> str | None:
    """The column the event id comes from (None when it is a constant)."""
    slot = compiled.slot("event_id")
    return columns[slot.index] if slot and slot.index is not None else None
