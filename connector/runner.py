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
from typing import Any, TypeVar

from . import cursors, query as sqlq, sql_lines
from .alerts import alert_payload, send_alert
from .config import JobSettings, Project, SyncSettings
from .delivery import Delivery, DeliveryPolicy
from .dialects import Dialect
from .errors import ConfigError, ConnectorError, MissingDatabase, QueryError, SyncLocked, mask_literals
from .events import Event, EventBuilder, Rejection, Row
from .mapping import CompiledMapping, compile_mapping, find_column, load_mapping
from .output import redact_logs
from .redaction import redact
from .report import SyncReport
from .rows import grouped, paged_chunks, read_start, windows
from .sql_events import RenderedEvents, RenderedItems, rendered_select
from .lease import LeaseKeeper
from .state import AbsentState, CursorForm, RunRecord, StateStore, cursor_text, lease_owner
from .tiktok import RetryPolicy, TikTokClient
from .timeutil import attribution_window, to_unix_seconds, utcnow
from .warehouse import DuckDBWarehouse, StructLists, Warehouse, open_warehouse, quietly

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
    lease_ttl_seconds: float = LEASE_TTL_SECONDS  # a dead run's lease frees the sync after this long
    allow_mass_delete: bool = False  # audiences: run even when more than max_delete_fraction would leave

    @property
    def writes_state(self) -> bool:
        """Dry and test runs keep no state: they read it where it exists and create nothing."""
        return not self.dry_run and self.mode != "test"

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
    sent and SyncLocked when another run holds the sync; run failures come back as status 'failed', recorded
    in the state tables (the first error wins over any while cleaning up)."""
    options = options or RunOptions()
    if not options.test_event_code and project.tiktok.test_event_code and not options.dry_run:
        options = replace(options, test_event_code=project.tiktok.test_event_code)
    report = SyncReport(sync=sync.name, mode=options.mode, dry_run=options.dry_run)

    def start(warehouse: Warehouse, store: StateStore, connect_state: Callable[[], StateStore]) -> _Run:
        return _Run(project, sync, options, report, warehouse, store, connect_state, client)
    return run_job_skeleton(project, options, report, start, warehouse)


R = TypeVar("R", bound=SyncReport)


def run_job_skeleton(project: Project, options: RunOptions, report: R,
                     start: Callable[[Warehouse, StateStore, Callable[[], StateStore]], JobRun],
                     warehouse: Warehouse | None = None) -> R:
    """The run skeleton of every job, event sync or audience: open the warehouse and the state, let the
    destination's JobRun `execute` (lease and run row first, then read, plan, deliver, checkpoint), turn
    what happened into the report's status, and `finish` (record the outcome, free the lease, alert).
    Raises ConfigError and SyncLocked as run_sync does."""
    redact_logs()
    started = time.monotonic()
    read_only = not options.writes_state
    own_warehouse = warehouse is None
    warehouse = warehouse or open_project_warehouse(project, read_only)
    state_warehouse: Warehouse | None = warehouse
    store: StateStore | None = None
    run: JobRun | None = None
    try:
        if project.state_url:
            try:
                state_warehouse = open_warehouse(project.state_url, read_only=read_only)
            except MissingDatabase:
                state_warehouse = None  # no state file yet, and this run creates none

        def connect_state() -> StateStore:
            """A new connection to the state tables (the lease keeper's, or the run's after its own died)."""
            if state_warehouse is None:
                return AbsentState(project.state_schema)
            return StateStore(state_warehouse.connect(), project.state_schema)

        store = connect_state()
        run = start(warehouse, store, connect_state)
        try:
            run.execute()
            report.status = "success"
        except SyncLocked:
            report.status = "skipped"
            raise
        except ConfigError as exc:
            report.status, report.error = "failed", redact(str(exc))  # recorded and alerted like any failure
            raise
        except ConnectorError as exc:
            report.status, report.error = "failed", run.error_text(exc)
            report.error_detail = redact(run.error_text(exc, full=True))
        except Exception as exc:  # a bug or an unwrapped driver error: recorded and reported like any failure
            log.debug("%s: unexpected error", report.sync, exc_info=True)
            report.status = "failed"
            report.error = redact(f"unexpected {exc.__class__.__name__}: {mask_literals(str(exc))} (-vv shows where)")
            report.error_detail = redact(f"unexpected {exc.__class__.__name__}: {exc}")
        finally:
            if report.status == "running":  # KeyboardInterrupt, SystemExit: still recorded, then raised on
                report.status, report.error = "failed", "interrupted"
            report.duration_seconds = time.monotonic() - started
            report.retries = run.retries
            run.finish()
            # The report is stored above, and printed, alerted and returned from here: what it says is redacted.
            report.notes[:] = map(redact, report.notes)
            report.sql = redact(report.sql) if report.sql else report.sql
    finally:
        if run is not None:
            quietly(run.close, "stopping the run's TikTok client")
        if store is not None and store.conn is not None:
            quietly(store.conn.close, "closing the state connection")
        if state_warehouse is not None and state_warehouse is not warehouse:
            state_warehouse.close()
        if own_warehouse:
            warehouse.close()
    return report


def open_project_warehouse(project: Project, read_only: bool) -> Warehouse:
    """The project's warehouse; read-only, a DuckDB file that is not there is a configuration error (a
    mistyped path), not a new file."""
    try:
        return open_warehouse(project.warehouse_url, project.warehouse_options, read_only=read_only)
    except MissingDatabase as exc:
        raise ConfigError(f"{project.config_path}: warehouse.url", str(exc),
                          "check the path (relative to the project directory): check, preview, status and dry "
                          "runs create no file") from None


def _client(project: Project, base_url: str | None = None) -> TikTokClient:
    settings = project.tiktok
    return TikTokClient(
        base_url or settings.base_url, project.require_token(), timeout=settings.timeout_seconds,
        retry=RetryPolicy(max_attempts=settings.max_attempts, max_elapsed=settings.max_retry_seconds),
        partner_name=settings.partner_name, connections=settings.max_in_flight,
        max_requests_per_second=settings.max_requests_per_second)


def start_fake(project: Project, report: SyncReport) -> Any:
    """The built-in fake TikTok (tiktok.base_url: fake), serving the Events API and the audience endpoints."""
    from .testing.fake_tiktok import FakeTikTok
    fake = FakeTikTok(access_token=project.tiktok.access_token or "test-token",
                      audience_access_token=project.tiktok.audience_access_token or "audience-token").start()
    report.notes.append("sent to the built-in fake TikTok on 127.0.0.1 (tiktok.base_url: fake); "
                        "remove that line to send to TikTok")
    return fake


class JobRun:
    """What every run does around its destination's work: the lease, the run's row in tiktok_runs, and at
    the end its outcome recorded, the lease freed and the alert sent. Subclasses `execute` (calling
    `_lease` and `_open_run_row` first when `commits`)."""

    lease_lost_note = "the lease lapsed during the run: another run may have run at the same time"

    def __init__(self, project: Project, job: JobSettings, options: RunOptions, report: SyncReport,
                 warehouse: Warehouse, store: StateStore, connect_state: Callable[[], StateStore]) -> None:
        self.project, self.job, self.options, self.report = project, job, options, report
        self.warehouse, self.store = warehouse, store
        self.connect_state = connect_state
        self.now = options.now or utcnow()
        self.mode = options.mode
        self.commits = options.writes_state
        self.run_id = uuid.uuid4().hex
        self.owner = lease_owner(self.run_id)
        self.leased = False
        self.keeper: LeaseKeeper | None = None
        self.row_open = False  # the run's row exists and says running: finish_run closes it
        self._previous_health: str | None = None
        self._health_read = False
        self.rendered: str | None = None  # the rendered query, to name the template's line in a query error
        self.client: Any = None  # the destination's TikTok client (None in a dry run)
        self.fake: Any = None  # the built-in fake TikTok (tiktok.base_url: fake), started for this run

    def execute(self) -> None:
        raise NotImplementedError

    @property
    def retries(self) -> int:
        return self.client.retries if self.client else 0

    def close(self) -> None:
        """Stop what the run started for its destination (the built-in fake)."""
        if self.fake is not None:
            self.fake.stop()

    def _clock(self) -> dt.datetime:
        return utcnow() if self.options.now is None else self.now

    def _lease(self) -> None:
        """Create or migrate the state tables, take the job's lease (SyncLocked when a live run holds it),
        keep it renewed, and mark runs that died without an outcome."""
        name, store, ttl = self.job.name, self.store, self.options.lease_ttl_seconds
        store.ensure_tables()
        holder = store.acquire_lease(name, self.owner, self._clock(), ttl)
        if holder:
            raise SyncLocked(f"{self.job.kind} {name!r} is already running ({holder}); nothing was done")
        self.leased = True
        self.keeper = LeaseKeeper(self.connect_state, name, self.owner, ttl, self._clock).start()
        abandoned = store.abandon_runs(name, self.owner, self._clock(), ttl)
        if abandoned:
            self.report.notes.append(f"{abandoned} earlier run(s) of this {self.job.kind} ended without recording "
                                     "an outcome (killed, or lost the lease): marked abandoned")

    def _open_run_row(self, watermark_before: Any = None) -> None:
        self.store.start_run(RunRecord(self.run_id, self.job.name, self.mode, self.now, watermark_before, self.owner))
        self.report.run_id, self.row_open = self.run_id, True

    def error_text(self, exc: ConnectorError, full: bool = False) -> str:
        """What the report, the runs table and the webhook say (masked); `full`: the terminal's text for -v. A
        query error names the line of the job's query template it comes from."""
        text = getattr(exc, "full_text", str(exc)) if full else str(exc)
        if not isinstance(exc, QueryError):
            return text
        path = sql_lines.template_file(self.project.queries_dir, self.job.query, self.warehouse.dialect)
        source = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else None
        file = path.relative_to(self.project.root).as_posix() if path.is_relative_to(self.project.root) else str(path)
        return sql_lines.located(text, exc.sql, self.rendered, file, source)

    def finish(self) -> None:
        report, job = self.report, self.job
        report.health_label = report.health(job.max_reject_rate)
        if self.keeper is not None:
            self.keeper.stop()
            if self.keeper.lost:
                report.notes.append(self.lease_lost_note)
        previous = self._record() if self.commits else None
        if job.alert_webhook_url and self.commits and report.status in ("success", "failed"):
            payload = alert_payload(report, previous, report.health_label)
            problem = send_alert(job.alert_webhook_url, payload) if payload else None
            if problem:
                report.notes.append(problem)

    def _record(self) -> str | None:
        """Record the outcome and free the lease; returns the health before this run. When the run's state
        connection died (the warehouse restarted, the connection was killed), on a new one."""
        try:
            return self._write_outcome(self.store)
        except Exception as exc:  # noqa: BLE001 - whatever broke the connection, try a new one
            log.debug("%s: recording the run failed (%s); reconnecting", self.job.name, exc.__class__.__name__)
        store = None
        try:
            store = self.connect_state()
            return self._write_outcome(store)
        except Exception as exc:  # noqa: BLE001 - the run's own outcome stands; this is a note on it
            text = str(exc) if isinstance(exc, ConnectorError) else exc.__class__.__name__
            self.report.notes.append(f"the run could not be recorded in the state tables: {text}")
            return None
        finally:
            if store is not None:
                quietly(store.conn.close, "closing a state connection")

    def _write_outcome(self, store: StateStore) -> str | None:
        report = self.report
        if not self._health_read:
            self._previous_health, self._health_read = store.last_health(self.job.name), True
        if self.row_open:
            store.finish_run(self.run_id, report.status, report.counts(), report.watermark,
                             dict(report.rejected_by_reason), report.error, report.health_label, utcnow())
            self.row_open = False
        if self.leased:
            store.release_lease(self.job.name, self.owner)
            self.leased = False
        return self._previous_health


class _Run(JobRun):
    """An event sync: the watermark's window of rows → events → Delivery (batches, ledger checkpoints)."""

    lease_lost_note = ("the sync's lease lapsed during the run: another run may have run at the same time (the "
                       "ledger still keeps either from sending an event twice once recorded)")

    def __init__(self, project: Project, sync: SyncSettings, options: RunOptions, report: SyncReport,
                 warehouse: Warehouse, store: StateStore, connect_state: Callable[[], StateStore],
                 client: TikTokClient | None = None) -> None:
        super().__init__(project, sync, options, report, warehouse, store, connect_state)
        self.sync = sync
        if not options.dry_run and client is None:
            if project.tiktok.base_url == FAKE_BASE_URL:
                project.require_token()
                self.fake = start_fake(project, report)
            client = _client(project, self.fake.base_url if self.fake else None)
        self.client = client
        self.form = CursorForm()
        self.stored_column: str | None = None  # the cursor column of the stored watermark
        self.backfill = _backfill_range(options.backfill)  # [start, end) in Unix seconds

    def _begin(self) -> Any:
        """State first: tables, the lease and the run's row, so even a run whose query fails is recorded.
        A run that writes no state reads it where it exists and creates nothing."""
        sync, store = self.sync, self.store
        if not self.commits:
            if store.version() is None:
                self.store = store = AbsentState(store.schema_name)
            stored_watermark = store.watermark(sync.name)
            self.stored_column = store.watermark_column(sync.name)
            self.report.watermark_before = cursor_text(stored_watermark)
            return stored_watermark
        self._lease()
        stored_watermark = store.watermark(sync.name)
        self.stored_column = store.watermark_column(sync.name)
        self.report.watermark_before = cursor_text(stored_watermark)
        self._open_run_row(stored_watermark)
        return stored_watermark

    def _compile(self) -> tuple[str, list[str], list[str], StructLists, CompiledMapping, int]:
        """Render the query, learn its columns without reading a row, and check the mapping against them."""
        sync = self.sync
        mapping = load_mapping(sync.mapping, self.project.mappings_dir)
        context = {"vars": sync.vars, "sync": sync.name, "event_source": sync.event_source,
                   "target": self.project.target, "env_var": sqlq.env_var_function(self.project.env)}
        rendered = self.rendered = sqlq.render(self.project.queries_dir, sync.query, self.warehouse.dialect, context)
        with self.warehouse.stream(f"select * from (\n{rendered}\n) as probe where 1 = 0", {}, 1) as probe:
            columns, kinds, struct_lists = probe.columns, probe.kinds, probe.struct_lists
        compiled = compile_mapping(mapping, columns, sync.event_source)
        cursor_index = find_column(columns, sync.cursor)
        if cursor_index is None:
            raise ConfigError(self._cursor_key, f"column {sync.cursor!r} is not in the query result",
                              f"the query returns: {', '.join(columns)}")
        cursors.check_column(self.stored_column, columns, cursor_index, self._cursor_key, sync.name)
        cursors.check_kind(_kind(kinds, cursor_index), self._cursor_key, columns[cursor_index])
        if compiled.not_applicable:
            self.report.notes.append(f"not sent for {sync.event_source} events: {', '.join(compiled.not_applicable)}")
        return rendered, columns, kinds, struct_lists, compiled, cursor_index

    @property
    def _cursor_key(self) -> str:
        return f"{self.project.config_path}: syncs.{self.sync.name}.cursor"

    def execute(self) -> None:
        sync, store = self.sync, self.store
        stored_watermark = self._begin()
        rendered, columns, kinds, struct_lists, compiled, cursor_index = self._compile()
        cursor_kind = _kind(kinds, cursor_index)
        stored_watermark = cursors.watermark_as(cursor_kind, stored_watermark, self._cursor_key,
                                                columns[cursor_index], sync.name)
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
                               window, builder, dialect, struct_lists)
        group_index: int | None = None
        rendered_events: RenderedEvents | RenderedItems | None = None
        if fast is not None:
            json_index = len(plan.items)  # the rendered columns follow the plan's own
            plan = plan.rendering(fast.items, fast.params, fast.prepared)
            if compiled.item_slots:
                rendered_events = RenderedItems(builder, plan, sync.event_source_id)
                group_index = RenderedItems.GROUP
            else:
                rendered_events = RenderedEvents(builder, json_index, plan.cursor_index, sync.event_source_id)
            build, event_ids = rendered_events.build, rendered_events.event_ids
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
        if isinstance(self.warehouse, DuckDBWarehouse) and (not paged or (fast is not None and fast.item_lists)):
            self.warehouse.sort_items()
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
            # The lease keeper renews the lease: checkpoints renewing it too would race it for the row.
            self.report, store, self.client, self.run_id, watermark, form,
            None, int(self.options.lease_ttl_seconds), self._clock)
        end = self.now - dt.timedelta(seconds=sync.safety_margin_seconds) if incremental else None
        if group_column and group_index is None:
            group_index = len(plan.items)  # the event key query._grouped_sql adds
        self.report.sql = sql
        log.info("%s (%s): reading rows with %s >= %s", sync.name, self.mode, sync.cursor,
                 form.text(start) or "(the beginning)")
        limit = self.options.preview_limit
        try:
            chunks = paged_chunks(self.warehouse, page_sql, boundary_sql if paged else None, CHUNK_ROWS,
                                  PAGE_ROWS, tie_count_sql if tie_key else None,
                                  read_ahead=rendered_events is not None)
            if cursor_kind not in cursors.ORDERED_KINDS:  # the warehouse did not say: the first value tells
                chunks = _first_cursor_checked(chunks, plan.cursor_index, lambda value: cursors.check_value(
                    value, stored_watermark, self._cursor_key, columns[cursor_index], sync.name))
            try:
                row_groups = grouped(chunks, group_index, self.report, plan.cursor_index, end)
                # One ledger lookup per window of rows. With random ids (order numbers, UUIDs) DuckDB scans the
                # sync's whole ledger for each lookup, whatever its size: a window of half a page makes one
                # lookup of five chunks (a streamed result's helper thread fetches the next ones meanwhile). A
                # preview stops after its first chunk.
                window_rows = CHUNK_ROWS if limit else PAGE_ROWS // 2
                for groups, ledger in self._looked_up(windows(row_groups, window_rows), event_ids, delivery):
                    self._consume(build(groups), delivery, watermark, ledger)
                    if self.options.progress:
                        self.options.progress(self.report)
                    if limit and self.report.events_built >= limit:
                        break
            finally:
                quietly(chunks.close, "closing the query result")
            delivery.finish()
        finally:
            quietly(delivery.close, "stopping the senders")
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

    def _reject_key(self, item: Event | Rejection, reason: str) -> tuple[str, ...]:
        """How a stored reject is found again: (event id, cursor, reason). A row without an event id has no
        id to be found by: ("", cursor, reason, detail), its detail ending in the row's fingerprint (a hash of
        its values, see EventBuilder._detail), so a re-read row matches and a new row at that cursor does not."""
        cursor = self.form.text(item.cursor) or ""
        if item.event_id is None and isinstance(item, Rejection):
            return ("", cursor, reason, item.detail)
        return (item.event_id or "", cursor, reason)

    def _recorded_rejects(self, items: list[Event | Rejection], watermark: Any) -> set[tuple[str, ...]]:
        """Rejects already stored for re-read rows (at or behind the watermark). Retry re-reads rows with stored
        rejects wherever they are: one refused again for the same reason is counted, not stored twice (events
        are not looked up there: retry re-sends the ones TikTok refused)."""
        if self.mode == "retry":
            reread: list[Event | Rejection] = [i for i in items if isinstance(i, Rejection)]
        elif watermark is None:
            return set()
        else:
            reread = [i for i in items if i.cursor is not None and i.cursor <= watermark]
        keys = {self._reject_key(i, i.reason if isinstance(i, Rejection) else TIKTOK_REFUSED) for i in reread
                if i.event_id is not None}
        known: set[tuple[str, ...]] = set(self.store.already_rejected(self.sync.name, keys)) if keys else set()
        rows = {self._reject_key(i, i.reason) for i in reread if i.event_id is None and isinstance(i, Rejection)}
        if rows:
            known |= self.store.already_rejected_rows(self.sync.name, rows)
        return known

    def finish(self) -> None:
        report = self.report
        if report.watermark is None:
            report.watermark = report.watermark_before
        super().finish()
        log.info("%s: %s, %d events sent, %d not sent, watermark %s", self.sync.name, report.status,
                 report.events_sent, report.events_rejected, report.watermark)


def _kind(kinds: list[str], index: int) -> str:
    return kinds[index] if index < len(kinds) else "other"


def _first_cursor_checked(chunks: Iterator[list[Row]], index: int,
                          check: Callable[[Any], None]) -> Iterator[list[Row]]:
    """The chunks as read; the first cursor value that is not NULL is checked before its chunk goes on."""
    try:
        for chunk in chunks:
            value = next((row[index] for row in chunk if row[index] is not None), None)
            if value is not None:
                check(value)
                yield chunk
                yield from chunks
                return
            yield chunk
    finally:
        chunks.close()  # type: ignore[attr-defined]


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
