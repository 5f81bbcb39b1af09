"""One run of an audience: the second destination of the run skeleton (runner.run_job_skeleton).

    lease + run row → render and probe the query → count pass (the plan; its rejects stored as found, once
      per member and reason) → mass-delete guard → create or adopt the TikTok audience → send pass: per batch, an add request, then its membership
      changes (and people TikTok refused) committed together → owed deletes: delete requests, each cleared once answered
    → report (outcome recorded, lease freed, alert by the skeleton)

Both passes stream the plan (audience_plan: the query merged with the membership state in member-key order,
or the warehouse's own diff where the state lives in the same database): memory does not grow with the
audience. A run killed anywhere converges on the next: membership is committed only after TikTok acknowledged
the request that carries it, adds and deletes are idempotent at TikTok, and a hash owed a delete stays in
tiktok_audience_deletes until a delete of it was acknowledged.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from dataclasses import replace

from . import query as sqlq
from .audience_client import AudienceClient, RefusedPeople, audience_client
from .audience_ids import IdentifierHasher
from .audience_plan import MODES, Batch, Item, PlanCounts, batches, check_mass_delete, delete_request, diff, plan
from .audience_query import (
    PeopleSpec, diff_sql, fingerprint_sql, people_sql, read_pairs, read_people, resolve_columns,
)
from .audience_spec import PARTNER_TYPE
from .config import AudienceSettings, Project
from .dialects import Dialect
from .errors import ConfigError, MassDeleteRefused
from .events import Rejection
from .membership import AudienceRecord, MembershipStore, key_ranges
from .report import AudienceReport
from .runner import FAKE_BASE_URL, JobRun, RunOptions, run_job_skeleton, start_fake
from .state import StateStore
from .warehouse import Warehouse

log = logging.getLogger("connector.audiences")
CHUNK_ROWS = 5000
REJECTS_PER_COMMIT = 5000
PEOPLE_PER_PAGE = 200_000  # DuckDB: people one query sorts at most
MEMBERSHIP_VERSION = 4  # the state version that has the membership tables
TARGETABLE_MINIMUM = 1000  # matched people an audience needs before an ad group can target it
TIKTOK_REFUSED = "rejected_by_tiktok"


def run_audience(project: Project, audience: AudienceSettings, options: RunOptions | None = None, *,
                 warehouse: Warehouse | None = None, client: AudienceClient | None = None) -> AudienceReport:
    """Run one audience and return its report; raises ConfigError and SyncLocked as runner.run_sync does."""
    options = options or RunOptions()
    report = AudienceReport(sync=audience.name, dry_run=options.dry_run)
    if options.test_event_code or options.backfill or options.retry_reasons:
        options = replace(options, test_event_code=None, backfill=None, retry_reasons=None)
        report.notes.append("test event codes, backfills and retries apply to event syncs: this audience ran as usual")

    def start(warehouse: Warehouse, store: StateStore, connect_state: Callable[[], StateStore]) -> AudienceRun:
        return AudienceRun(project, audience, options, report, warehouse, store, connect_state, client)
    return run_job_skeleton(project, options, report, start, warehouse)


class AudienceRun(JobRun):
    lease_lost_note = ("the audience's lease lapsed during the run: another run may have run at the same time "
                       "(membership is committed per acknowledged request: the next run converges)")

    def __init__(self, project: Project, audience: AudienceSettings, options: RunOptions, report: AudienceReport,
                 warehouse: Warehouse, store: StateStore, connect_state: Callable[[], StateStore],
                 client: AudienceClient | None = None) -> None:
        super().__init__(project, audience, options, report, warehouse, store, connect_state)
        self.audience, self.report = audience, report
        self.mode = "audience"
        if not options.dry_run and client is None:
            token = project.require_audience_token()  # a missing token fails before anything is read or sent
            base_url = project.tiktok.base_url
            if base_url == FAKE_BASE_URL:
                self.fake = start_fake(project, report)
                base_url = self.fake.base_url
            client = audience_client(base_url, token, project.tiktok)
        self.client = client
        self.members: MembershipStore | None = None
        self.query_rows: int | None = None  # the query's rows, where the fingerprint counted them
        self.refused: Counter[str] = Counter()  # people TikTok refused, by change kind (add, replace)

    # ------------------------------------------------------------ the flow
    def execute(self) -> None:
        audience, report = self.audience, self.report
        if self.commits:
            self._lease()
            self._open_run_row()
        spec, rendered = self._spec()
        self.members = self._membership()
        record = self._stored_record()
        fingerprint = self._fingerprint(rendered, spec) if self.members is not None else None
        if fingerprint is not None and self._unchanged(fingerprint):
            return
        in_warehouse = self._diff_in_warehouse()
        counts: PlanCounts | None = None
        if self._count_first():
            counts = self._count(rendered, spec, in_warehouse)
            self._guard(counts)
        if self.options.dry_run:
            assert counts is not None
            report.to_send = counts.adds + counts.replaces
            report.notes.append("dry run: nothing was sent and no state was written")
            self._minimum_note(counts)
            return
        record = self._audience(record, spec)
        if counts is None:  # nothing can be removed: count while sending
            counts = self._send(rendered, spec, in_warehouse, record, PlanCounts())
        elif counts.changes or counts.refreshed:  # rejects were stored by the count pass
            self._send(rendered, spec, in_warehouse, record)
        self._report_counts(counts)
        self._send_owed_deletes(record)
        self._remember(rendered, spec, fingerprint, counts)
        self._minimum_note(counts)
        log.info("%s: %s, %d added, %d removed, %d changed, %d unchanged", audience.name, report.audience_id,
                 report.members_added, report.members_removed, report.members_changed, report.members_unchanged)

    def _spec(self) -> tuple[PeopleSpec, str]:
        """Render the query and check the configured columns against what it returns, reading no row."""
        audience, project = self.audience, self.project
        context = {"vars": audience.vars, "audience": audience.name, "sync": audience.name,
                   "target": project.target, "env_var": sqlq.env_var_function(project.env)}
        rendered = self.rendered = sqlq.render(project.queries_dir, audience.query, self.warehouse.dialect, context)
        with self.warehouse.stream(f"select * from (\n{rendered}\n) as probe where 1 = 0", {}, 1) as probe:
            columns, kinds = probe.columns, probe.kinds
        hasher = IdentifierHasher(audience.default_phone_region, audience.phone_format)
        spec = resolve_columns(audience.name, audience.member_id, audience.identifiers, columns, hasher,
                               audience.device_id_hash, audience.hash_in_warehouse, kinds)
        return spec, rendered

    def _membership(self) -> MembershipStore | None:
        """The membership tables, or None where they do not exist yet (a dry run before the first run)."""
        if not self.commits:
            version = self.store.version()
            if version is None or version < MEMBERSHIP_VERSION:
                return None
        return MembershipStore(self.store.conn, self.store.schema)

    def _stored_record(self) -> AudienceRecord | None:
        audience = self.audience
        record = self.members.audience(audience.name) if self.members else None
        if record is not None:
            for key, configured, stored in (("audience_id", audience.audience_id, record.audience_id),
                                            ("advertiser_id", audience.advertiser_id, record.advertiser_id)):
                if configured and configured != stored:
                    raise ConfigError(f"{self.project.config_path}: audiences.{audience.name}.{key}",
                                      f"is {configured}, but this audience's membership state is for {stored}",
                                      f"set it back, or run `tiktok-connector reset {audience.name}` to start the "
                                      "membership over (the next run uploads everyone again)")
        self.report.audience_id = record.audience_id if record else audience.audience_id
        return record

    # ------------------------------------------------------------ a result unchanged since the last run
    def _fingerprint(self, rendered: str, spec: PeopleSpec) -> str | None:
        """DuckDB: the query result's fingerprint (audience_query.fingerprint_sql) with the audience's mode;
        other warehouses diff in the warehouse, where a result that did not change reads no row anyway."""
        if self.warehouse.dialect != "duckdb":
            return None
        sql, params = fingerprint_sql(rendered, Dialect(self.warehouse.dialect), spec)
        with self.warehouse.stream(sql, params, 1) as stream:
            (rows, xor, total), = [row for chunk in stream.chunks for row in chunk]
        self.query_rows = int(rows)
        return f"{self.audience.mode}:{rows}:{xor}:{total}"

    def _unchanged(self, fingerprint: str) -> bool:
        """When the query returns what the membership was made equal to by the last complete run (and nothing
        is owed a delete), report that run's counts and stop: there is nothing to diff."""
        members, name = self.members, self.audience.name
        stored = members.fingerprint(name) if members else None
        if members is None or not stored:
            return False
        summary = json.loads(stored)
        if summary.get("fingerprint") != fingerprint or members.pending_deletes(name):
            return False
        count = members.count(name)
        if count != summary["members"]:
            return False
        report = self.report
        report.rows_read, report.members_before = summary["rows"], count
        report.members_kept = summary["kept"]
        report.members_unchanged = count - summary["kept"]
        report.rejected_by_reason.update(summary["rejected"])
        report.notes.append("the query returned what the last run made the audience equal to: nothing to send")
        return True

    def _remember(self, rendered: str, spec: PeopleSpec, fingerprint: str | None, counts: PlanCounts) -> None:
        """Store the fingerprint once the membership equals the result it was taken of (the result did not
        change while the run diffed and sent: it is taken again)."""
        if fingerprint is None or self.members is None or self._fingerprint(rendered, spec) != fingerprint:
            return
        report = self.report
        summary = {"fingerprint": fingerprint, "rows": counts.rows, "members": self.members.count(self.audience.name),
                   "kept": counts.kept, "rejected": dict(report.rejected_by_reason)}
        self.members.set_fingerprint(self.audience.name, json.dumps(summary, sort_keys=True))

    def _diff_in_warehouse(self) -> bool:
        """The warehouse diffs (an anti-join: a run with nothing changed reads no row) where the membership
        tables are in the warehouse's own database; else the query is merged with the state in Python, both
        streamed in member-key order. Embedded DuckDB runs queries inside this process's warehouse.memory_limit,
        where its join and grouping of a large audience do not fit: it sorts the query and merges."""
        return self.members is not None and self.project.state_url is None and self.warehouse.dialect != "duckdb"

    def _count_first(self) -> bool:
        """A mirror run that could remove members counts before it sends (the mass-delete guard), and a dry
        run only counts; otherwise the send pass counts as it goes."""
        if self.options.dry_run or self.members is None:
            return True
        return self.audience.mode == "mirror" and self.members.count(self.audience.name) > 0

    def _send(self, rendered: str, spec: PeopleSpec, in_warehouse: bool, record: AudienceRecord,
              counts: PlanCounts | None = None) -> PlanCounts | None:
        """The send pass: batches of the plan delivered and committed one by one."""
        assert self.members is not None
        name = self.audience.name
        self.members.set_fingerprint(name, None)
        members_before = self.members.count(name) if counts is not None and in_warehouse else 0
        with self._plan(rendered, spec, in_warehouse, counts, ordered=True) as items:
            for batch in batches(items, spec.id_schema, self.audience.batch_size):
                if counts is not None and batch.rejects:
                    self._store_rejects(list(batch.rejects))
                self._deliver(batch, record)
        if counts is not None and in_warehouse:
            counts.include_unchanged(members_before)
        return counts

    @contextmanager
    def _plan(self, rendered: str, spec: PeopleSpec, in_warehouse: bool, counts: PlanCounts | None = None,
              ordered: bool = False) -> Iterator[Iterator[Item]]:
        """The run's plan, streamed: changes and rejects in member-key order (the count pass takes the
        warehouse's diff in any order)."""
        dialect, mode, name = Dialect(self.warehouse.dialect), MODES[self.audience.mode], self.audience.name
        if in_warehouse:
            assert self.members is not None
            sql, params = diff_sql(rendered, dialect, spec, self.members.members_table, name, ordered=ordered)
            if ordered or not self.report.sql:
                self.report.sql = sql
            stream = self.warehouse.stream(sql, params, CHUNK_ROWS)
            try:
                yield plan(read_pairs(stream.chunks), mode, spec.hashing(), counts)
            finally:
                stream.close()
            return
        pages = self._people_pages(rendered, spec)
        try:
            members = self.members.members(name) if self.members else iter(())
            yield diff(read_people(pages), members, mode, spec.hashing(), counts)
        finally:
            pages.close()

    def _people_pages(self, rendered: str, spec: PeopleSpec) -> Iterator[list[Any]]:
        """The query's people in member-key order. Embedded DuckDB sorts inside this process's memory_limit,
        beside the run's state writes: a large result is read in ranges of member keys (keys are hex
        digests, so equal ranges hold about equal shares), each sorted on its own."""
        dialect = Dialect(self.warehouse.dialect)
        rows = self.query_rows if self.warehouse.dialect == "duckdb" else 0
        for number, (condition, params) in enumerate(key_ranges("p.k", rows or 0, PEOPLE_PER_PAGE)):
            if number == 0 and condition != "1 = 1":
                condition = f"({condition} or p.k is null)"  # people without a member id: rejected, in the first page
            sql, sql_params = people_sql(rendered, dialect, spec, "" if condition == "1 = 1" else condition)
            if not self.report.sql:
                self.report.sql = sql
            with self.warehouse.stream(sql, {**sql_params, **params}, CHUNK_ROWS) as stream:
                yield from stream.chunks

    def _count(self, rendered: str, spec: PeopleSpec, in_warehouse: bool) -> PlanCounts:
        """The count pass: what the run would do, before anything is sent (the mass-delete guard needs it)."""
        counts = PlanCounts()
        rejects: list[Rejection] = []
        with self._plan(rendered, spec, in_warehouse, counts) as items:
            for item in items:
                if type(item) is Rejection and self.commits:
                    rejects.append(item)
                    if len(rejects) >= REJECTS_PER_COMMIT:
                        self._store_rejects(rejects)
                        rejects = []
        if rejects:
            self._store_rejects(rejects)
        if in_warehouse and self.members is not None:
            counts.include_unchanged(self.members.count(self.audience.name))
        self._report_counts(counts)
        return counts

    def _report_counts(self, counts: PlanCounts) -> None:
        """The plan's counts in the report, less the people TikTok refused."""
        report, refused = self.report, self.refused
        report.rows_read, report.members_before = counts.rows, counts.members
        report.members_added, report.members_removed = counts.adds - refused["add"], counts.removes
        report.members_changed = counts.replaces - refused["replace"]
        report.members_unchanged, report.members_kept = counts.unchanged, counts.kept
        report.rejected_by_reason = Counter(counts.rejected)
        if refused:
            report.rejected_by_reason[TIKTOK_REFUSED] += sum(refused.values())

    def _store_rejects(self, rejects: list[Rejection]) -> None:
        """Store the people the plan refused, those stored unresolved before (same member, same reason) once."""
        name = self.audience.name
        keys = {(r.event_id, None, r.reason) for r in rejects if r.event_id is not None}
        known = self.store.already_rejected(name, keys) if keys else set()  # type: ignore[arg-type]
        new = [r for r in rejects if r.event_id is None or (r.event_id, None, r.reason) not in known]
        if new:
            started = time.monotonic()
            with self.store.conn.transaction():
                self.store.record_rejects(self.run_id, name, new, self._clock())
            self.report.state_seconds += time.monotonic() - started

    def _guard(self, counts: PlanCounts) -> None:
        audience = self.audience
        if audience.mode != "mirror":
            return
        try:
            check_mass_delete(counts, audience.max_delete_fraction, audience.name)
        except MassDeleteRefused as exc:
            if not self.options.allow_mass_delete:
                raise MassDeleteRefused(f"{exc}, or run once with --allow-mass-delete") from None
            self.report.notes.append(f"--allow-mass-delete: removing {counts.removes:,} of {counts.members:,} "
                                     "members, more than max_delete_fraction")

    def _audience(self, record: AudienceRecord | None, spec: PeopleSpec) -> AudienceRecord:
        """The TikTok audience: as stored; else the configured audience_id (checked with TikTok), else the one
        audience of audience_name (created when there is none). Stored at once: a run that dies right after
        must not create another."""
        audience, client, members = self.audience, self.client, self.members
        assert client is not None and members is not None
        if record is None:
            if audience.audience_id:
                audience_id = self._adopt(audience.audience_id)
                self.report.notes.append(f"adopted TikTok audience {audience_id}")
            else:
                audience_id = client.create(audience.advertiser_id, audience.audience_name or audience.name)
                self.report.notes.append(f"TikTok audience {audience_id} ({audience.audience_name!r}) created or "
                                         "adopted by name; mapping calls work 1-2 minutes after creation")
            record = AudienceRecord(audience.name, audience.advertiser_id, audience_id, audience.audience_name,
                                    spec.id_schema)
            members.record_audience(record, self._clock())
        elif record.id_schema != spec.id_schema:
            record = replace(record, id_schema=spec.id_schema)
            members.record_audience(record, self._clock())
        self.report.audience_id = record.audience_id
        return record

    def _adopt(self, audience_id: str) -> str:
        where = f"{self.project.config_path}: audiences.{self.audience.name}.audience_id"
        assert self.client is not None
        try:
            found = self.client.get(self.audience.advertiser_id, [audience_id])
        except RefusedPeople:
            found = []
        if not found:
            raise ConfigError(where, f"TikTok has no audience {audience_id} for advertiser {self.audience.advertiser_id}",
                              "check the id, or remove audience_id to create the audience from audience_name")
        if found[0].type not in (None, PARTNER_TYPE):
            raise ConfigError(where, f"audience {audience_id} is a {found[0].type} audience: only audiences "
                              "created through the API accept members", "remove audience_id to create one")
        return audience_id

    # ------------------------------------------------------------ delivery and checkpoints
    def _deliver(self, batch: Batch, record: AudienceRecord) -> None:
        """One batch: its add request (bisected when TikTok refuses people in it), then its membership
        changes and rejects in one transaction."""
        assert self.client is not None and self.members is not None
        report = self.report
        changes, rejects = list(batch.changes), []  # the plan's own rejects were stored by the count pass
        if batch.request is not None:
            self.members.owe_until_held(self.audience.name, batch.request.rows, self.run_id, self._clock())
            before = self.client.requests
            refused = self.client.mapping_bisected(batch.request, record.advertiser_id, record.audience_id)
            report.requests_sent += self.client.requests - before
            report.events_sent += len(batch.request.rows) - len(refused)
            if refused:
                sending = [c for c in batch.changes if c.sends]
                bad = {sending[r.index].member_key: r.message for r in refused}
                changes = [c for c in changes if c.member_key not in bad]
                for change in (c for c in sending if c.member_key in bad):
                    self.refused[change.kind] += 1
                    rejects.append(Rejection(TIKTOK_REFUSED, f"TikTok refused this person: {bad[change.member_key]}"[:1000],
                                             change.member_key, None, None))
        started = time.monotonic()
        with self.store.conn.transaction():
            self.members.write(self.audience.name, changes, self.run_id, self._clock())
            self.store.record_rejects(self.run_id, self.audience.name, rejects, self._clock())
        report.state_seconds += time.monotonic() - started
        report.batches = report.requests_sent
        if self.options.progress:
            self.options.progress(report)

    def _send_owed_deletes(self, record: AudienceRecord) -> None:
        """Delete the hashes members dropped that no member holds now, each page cleared once acknowledged."""
        assert self.client is not None and self.members is not None
        name, report = self.audience.name, self.report
        self.members.prune_held_deletes(name)
        for page in self.members.unheld_deletes(name, self.audience.batch_size):
            request = delete_request(page.id_type, page.hashes, record.id_schema)
            before = self.client.requests
            refused = self.client.mapping_bisected(request, record.advertiser_id, record.audience_id)
            report.requests_sent += self.client.requests - before
            report.hashes_deleted += len(page.hashes) - len(refused)
            report.events_sent += len(page.hashes) - len(refused)
            if refused:  # a hash TikTok refuses cannot be in the audience: forgotten with the rest
                report.notes.append(f"TikTok refused to delete {len(refused)} {page.id_type} hash(es): "
                                    f"{refused[0].message}")
            self.members.clear_deletes(name, page)
        report.batches = report.requests_sent

    def _minimum_note(self, counts: PlanCounts) -> None:
        after = counts.members_after
        if after < TARGETABLE_MINIMUM:
            self.report.notes.append(f"the audience has {after:,} member(s): TikTok needs about {TARGETABLE_MINIMUM:,} "
                                     "matched people before an ad group can target it (cover_num shows from then, "
                                     "24-48 h after a change)")
