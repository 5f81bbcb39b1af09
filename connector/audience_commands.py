"""The workflow commands for audiences (`audiences:` in connector.yml): preview, status, reset and check.

They read the audience query and the membership state and change nothing in TikTok; `reset` deletes state
rows only. `status` asks TikTok for cover_num (`cover_num_lookup`) and `check` asks whether the audience
token may manage each advertiser's audiences (`verify_audience_token`), both through the audience client.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .audience_client import audience_client
from .audience_ids import ID_TYPE_NAMES, IdentifierHasher
from .audience_plan import MODES, Item, MappingRequest, PlanCounts, check_mass_delete, delete_request, diff
from .audience_query import PeopleSpec, people_sql, read_people, resolve_columns
from .audience_spec import MAX_GET_IDS
from .config import AudienceSettings, Project
from .dialects import Dialect
from .errors import ConfigError, ConnectorError, MassDeleteRefused, MissingDatabase, WarehouseBusy
from .events import Rejection
from .membership import MEMBERSHIP_MIGRATION, AudienceRecord, MembershipStore
from .output import emit_note, emit_result, json_text, paint
from .query import env_var_function, render
from .report import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, EXIT_UNVERIFIED
from .runner import FAKE_BASE_URL, open_project_warehouse
from .state import StateStore
from .warehouse import Warehouse, open_warehouse, quietly

NOT_CREATED = "(created on first run)"  # the audience id in a preview's bodies before the first run
MIN_MATCHED_PEOPLE = 1000  # TikTok targets an audience only from about this many matched people
READ_CHUNK = 2000

# (advertiser_id, audience_ids of that advertiser) → audience_id → cover_num (None: TikTok has no figure).
CoverNumLookup = Callable[[str, Sequence[str]], Mapping[str, "int | None"]]


# ---------------------------------------------------------------- asking TikTok (status, check)

def cover_num_lookup(project: Project) -> CoverNumLookup | None:
    """How `status` asks TikTok for audiences' `cover_num` (GET /v1.3/dmp/custom_audience/get/ with the
    audience token). None without a token, and for the built-in fake (tiktok.base_url: fake), which keeps no
    audience between runs: status leaves cover_num empty ("-", null in --json)."""
    if not project.tiktok.audience_access_token or project.tiktok.base_url == FAKE_BASE_URL:
        return None
    client = audience_client(project.tiktok.base_url, project.tiktok.audience_access_token, project.tiktok)

    def lookup(advertiser_id: str, audience_ids: Sequence[str]) -> Mapping[str, int | None]:
        found: dict[str, int | None] = {}
        for start in range(0, len(audience_ids), MAX_GET_IDS):
            found.update((d.audience_id, d.cover_num)
                         for d in client.get(advertiser_id, audience_ids[start:start + MAX_GET_IDS]))
        return found
    return lookup


def verify_audience_token(project: Project, advertiser_id: str) -> tuple[bool | None, str] | None:
    """Whether tiktok.audience_access_token may manage the audiences of `advertiser_id` (one list call,
    nothing changed), asked once per advertiser by `check`: (True, message) accepted, (False, message)
    refused, (None, message) TikTok could not be asked. The built-in fake is started for the question."""
    token = project.require_audience_token()
    fake = None
    base_url = project.tiktok.base_url
    if base_url == FAKE_BASE_URL:
        from .testing.fake_tiktok import FakeTikTok
        fake = FakeTikTok(access_token=project.tiktok.access_token or "test-token",
                          audience_access_token=token).start()
        base_url = fake.base_url
    try:
        verification = audience_client(base_url, token, project.tiktok).verify(advertiser_id)
    finally:
        if fake is not None:
            fake.stop()
    return verification.verified, verification.message


# ---------------------------------------------------------------- the audience query

@dataclass(frozen=True)
class AudienceQuery:
    """An audience's query rendered, its columns checked against connector.yml, and what to read."""

    rendered: str
    spec: PeopleSpec
    columns: tuple[str, ...]


def hasher(audience: AudienceSettings) -> IdentifierHasher:
    return IdentifierHasher(audience.default_phone_region, audience.phone_format)


def prepare(project: Project, audience: AudienceSettings, warehouse: Warehouse) -> AudienceQuery:
    """Render the query, learn its columns without reading a row, and resolve member_id and identifiers
    against them (ConfigError naming the key when a column is missing)."""
    context = {"vars": audience.vars, "audience": audience.name, "target": project.target,
               "env_var": env_var_function(project.env)}
    rendered = render(project.queries_dir, audience.query, warehouse.dialect, context)
    with warehouse.stream(f"select * from (\n{rendered}\n) as probe where 1 = 0", {}, 1) as probe:
        columns, kinds = probe.columns, probe.kinds
    spec = resolve_columns(audience.name, audience.member_id, audience.identifiers, columns, hasher(audience),
                           audience.device_id_hash, audience.hash_in_warehouse, kinds)
    return AudienceQuery(rendered, spec, tuple(columns))


@contextmanager
def membership(project: Project, warehouse: Warehouse | None = None) -> Iterator[MembershipStore | None]:
    """The membership tables opened for reading, or None when there are none yet (no state file, no tables,
    or state tables from before version 4). Creates and writes nothing."""
    own = warehouse is None or project.state_url is not None
    try:
        state = (open_warehouse(project.state_url or project.warehouse_url, project.warehouse_options,
                                read_only=True) if own else warehouse)
    except MissingDatabase:
        yield None
        return
    try:
        conn = state.connect()  # type: ignore[union-attr]
        try:
            version = StateStore(conn, project.state_schema).version()
            yield MembershipStore(conn, project.state_schema) if (version or 0) >= MEMBERSHIP_MIGRATION[0] else None
        finally:
            quietly(conn.close, "closing the state connection")
    finally:
        if own:
            state.close()  # type: ignore[union-attr]


# ---------------------------------------------------------------- preview

@dataclass
class _Sample:
    """The first people a run would add, and the first hashes it would delete, by id type."""

    limit: int
    adds: list[tuple[str | None, ...]] = field(default_factory=list)
    deletes: dict[str, list[str]] = field(default_factory=dict)

    def take(self, item: Item) -> None:
        if type(item) is Rejection:
            return
        if item.sends and len(self.adds) < self.limit:  # type: ignore[union-attr]
            self.adds.append(item.sent)  # type: ignore[union-attr]
        for name, value in zip(ID_TYPE_NAMES, item.dropped):  # type: ignore[union-attr]
            hashes = self.deletes.setdefault(name, []) if value else None
            if hashes is not None and len(hashes) < self.limit and value not in hashes:
                hashes.append(value)


@dataclass
class AudiencePreview:
    audience: AudienceSettings
    query: str  # the audience query as rendered
    sql: str  # what the warehouse runs: the query keyed by member, digested and ordered (people_sql)
    counts: PlanCounts
    record: AudienceRecord | None  # what the state knows of the TikTok audience
    state: bool  # whether membership tables exist
    requests: list[dict[str, Any]]
    notes: list[str]

    @property
    def audience_id(self) -> str | None:
        return self.audience.audience_id or (self.record.audience_id if self.record else None)

    def to_dict(self) -> dict[str, Any]:
        c = self.counts
        return {"audience": self.audience.name, "advertiser_id": self.audience.advertiser_id,
                "audience_id": self.audience_id, "mode": self.audience.mode, "sql": self.query, "sql_sent": self.sql,
                "rows_read": c.rows, "members_before": c.members, "members_added": c.adds,
                "members_removed": c.removes, "members_changed": c.replaces, "members_unchanged": c.unchanged,
                "members_kept": c.kept, "members_after": c.members_after,
                "rejected_by_reason": dict(sorted(c.rejected.items())), "requests": self.requests,
                "notes": self.notes}


def plan_preview(project: Project, audience: AudienceSettings, limit: int) -> AudiencePreview:
    """What a run of the audience would do now: the query diffed against the membership state (none: every
    person is an add), counted in full while only the first `limit` people and hashes are kept."""
    warehouse = open_project_warehouse(project, read_only=True)
    try:
        query = prepare(project, audience, warehouse)
        spec = query.spec
        sql, params = people_sql(query.rendered, Dialect(warehouse.dialect), spec)
        counts, sample = PlanCounts(), _Sample(limit)
        with membership(project, warehouse) as store:
            record = store.audience(audience.name) if store else None
            members = store.members(audience.name) if store else iter(())
            stream = warehouse.stream(sql, params, READ_CHUNK)
            try:
                for item in diff(read_people(stream.chunks), members, MODES[audience.mode], spec.hashing(), counts):
                    sample.take(item)
            finally:
                stream.close()
            state = store is not None
    finally:
        warehouse.close()
    preview = AudiencePreview(audience, query.rendered, sql, counts, record, state, [], [])
    audience_id = preview.audience_id or NOT_CREATED
    if sample.adds:
        add = MappingRequest("add", spec.id_schema, tuple(sample.adds))
        preview.requests.append(add.body(audience.advertiser_id, audience_id))
    for name, hashes in sample.deletes.items():
        preview.requests.append(delete_request(name, hashes, spec.id_schema).body(audience.advertiser_id, audience_id))
    preview.notes += _notes(audience, counts)
    return preview


def _notes(audience: AudienceSettings, counts: PlanCounts) -> list[str]:
    notes = []
    try:
        check_mass_delete(counts, audience.max_delete_fraction, audience.name)
    except MassDeleteRefused as exc:
        notes.append(f"a run now would be refused by the mass-delete guard: {exc}")
    if counts.members_after < MIN_MATCHED_PEOPLE:
        notes.append(f"the audience would have {counts.members_after:,} members: TikTok needs about "
                     f"{MIN_MATCHED_PEOPLE:,} matched people before an ad group can target it")
    return notes


def preview(project: Project, audience: AudienceSettings, limit: int) -> int:
    """`preview NAME` for an audience: prints the plan, sends nothing, writes nothing."""
    result = plan_preview(project, audience, limit)
    data, c = result.to_dict(), result.counts
    where = result.audience_id or NOT_CREATED
    state = f"{c.members:,} members in state" if result.state and result.record else "no membership state yet"
    lines = [paint("-- the audience query as rendered (the warehouse runs it wrapped to key, digest and order the "
                   "people: sql_sent in --json)", "dim"), result.query,
             paint(f"-- audience {audience.name!r} ({audience.mode}): advertiser {audience.advertiser_id}, TikTok "
                   f"audience {where}; {state}", "dim"),
             paint(f"-- a run now would add {c.adds:,}, remove {c.removes:,}, change the identifiers of "
                   f"{c.replaces:,} and leave {c.unchanged + c.kept:,} as they are ({c.rows:,} rows read; "
                   f"members {c.members:,} → {c.members_after:,})", "dim")]
    if c.rejected:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(c.rejected.items()))
        lines.append(paint(f"-- rows read but not sent: {reasons}", "dim"))
    for body in result.requests:
        people = len(body["batch_data"])
        what = ("the first {n} person(s) to add" if body["action"] == "add"
                else "the first {n} hash(es) to delete (at the end of the run, unless another member holds them)")
        lines.append(paint(f"-- {what.format(n=people)}, as the request would carry them (hashed; a request "
                           f"holds up to {audience.batch_size:,} people)", "dim"))
        lines.append(json_text(body, indent=2))
    if not result.requests:
        lines.append(paint("-- nothing to send: the audience already equals the query", "dim"))
    lines += [paint(f"-- note: {note}", "yellow") for note in result.notes]
    emit_result(data, "\n".join(lines))
    return EXIT_OK


# ---------------------------------------------------------------- status

@dataclass(frozen=True)
class AudienceStatus:
    audience: str
    advertiser_id: str
    audience_id: str | None  # the TikTok audience the state follows (else connector.yml's)
    members: int  # in the membership state: people TikTok acknowledged
    pending_deletes: int  # hashes owed a delete (a run stopped before sending them)
    cover_num: int | None  # TikTok's approximate matched size; None when not asked or not known
    health: str
    last_run_at: Any
    last_status: str | None


def audience_status(states: StateStore | None, store: MembershipStore | None,
                    audience: AudienceSettings) -> AudienceStatus:
    from . import inspection
    run = inspection.sync_status(states, audience.name) if states else inspection.never_run(audience.name)
    record = store.audience(audience.name) if store else None
    audience_id = record.audience_id if record else audience.audience_id
    return AudienceStatus(audience.name, record.advertiser_id if record else audience.advertiser_id, audience_id,
                          store.count(audience.name) if store else 0,
                          store.pending_deletes(audience.name) if store else 0, None, run.health,
                          run.last_run_at, run.last_status)


def with_cover_num(rows: list[AudienceStatus], lookup: CoverNumLookup | None) -> list[AudienceStatus]:
    """The rows with TikTok's cover_num where `lookup` answers (one call per advertiser); a lookup that fails
    leaves the rows as they are and says why on stderr."""
    if lookup is None:
        return rows
    by_advertiser: dict[str, list[str]] = {}
    for row in rows:
        if row.audience_id:
            by_advertiser.setdefault(row.advertiser_id, []).append(row.audience_id)
    found: dict[tuple[str, str], int | None] = {}
    for advertiser_id, ids in by_advertiser.items():
        try:
            answer = lookup(advertiser_id, ids)
        except ConnectorError as exc:
            emit_note(f"cover_num of advertiser {advertiser_id}'s audiences not read: {exc}", "WARNING")
            continue
        found.update({(advertiser_id, k): v for k, v in answer.items()})
    return [AudienceStatus(**{**row.__dict__, "cover_num": found.get((row.advertiser_id, row.audience_id or ""))})
            for row in rows]


def status_rows(project: Project, audiences: Sequence[AudienceSettings], states: StateStore | None,
                lookup: CoverNumLookup | None = None) -> list[AudienceStatus]:
    """Each audience's row; `states` is the state store `status` opened for reading (None: no state yet)."""
    store = None
    if states is not None and (states.version() or 0) >= MEMBERSHIP_MIGRATION[0]:
        store = MembershipStore(states.conn, project.state_schema)
    return with_cover_num([audience_status(states, store, a) for a in audiences], lookup)


def status_table(rows: Sequence[AudienceStatus], table: Callable[[list[tuple[str, ...]]], str],
                 time: Callable[[Any], str]) -> str:
    header = ("AUDIENCE", "HEALTH", "ADVERTISER", "TIKTOK AUDIENCE", "MEMBERS (STATE)", "OWED DELETES",
              "COVER_NUM", "LAST RUN (UTC)")
    body = [(r.audience, r.health, r.advertiser_id, r.audience_id or "-", str(r.members), str(r.pending_deletes),
             str(r.cover_num) if r.cover_num is not None else "-", time(r.last_run_at)) for r in rows]
    text = table([header, *body])
    if any(r.cover_num is None for r in rows):
        text += ("\nCOVER_NUM is TikTok's approximate matched size (updated in 24-48 h, shown from about 1,000 "
                 "people); '-': not known or not asked")
    return text


# ---------------------------------------------------------------- reset

def reset_prompt(name: str) -> str:
    return (f"This forgets the membership state of audience {name!r} (its members, owed deletes, TikTok audience "
            "id and rejects). The audience in TikTok is not changed: nobody is removed from it. The next run "
            "adopts the TikTok audience by its name (or creates one) and adds everyone the query returns. "
            "Type the audience name to confirm: ")


def reset_audience(states: StateStore, name: str, force: bool) -> dict[str, int]:
    """Forget the audience's membership state (and its rejects and lease, as reset does for a sync); run
    history is kept. Refused while a live run holds the audience's lease, unless `force`."""
    from . import inspection
    deleted = {table: count for table, count in inspection.reset_sync(states, name, force).items()
               if table in ("rejects", "leases")}
    store = MembershipStore(states.conn, states.schema_name)
    deleted["audience_members"] = store.count(name)
    deleted["audience_deletes"] = store.pending_deletes(name)
    deleted["audiences"] = int(store.audience(name) is not None)
    store.forget(name)
    return deleted


# ---------------------------------------------------------------- check

@dataclass
class _Checks:
    name: str
    items: list[dict[str, Any]] = field(default_factory=list)

    def add(self, check: str, status: str, message: str) -> None:
        self.items.append({"check": check, "ok": {"ok": True, "failed": False}.get(status), "status": status,
                           "message": message})

    def result(self, code: int) -> dict[str, Any]:
        status = {EXIT_OK: "ok", EXIT_FAILED: "failed", EXIT_CONFIG: "error", EXIT_UNVERIFIED: "unverified"}[code]
        return {"audience": self.name, "status": status, "exit_code": code, "checks": self.items}


def check_audience(project: Project, audience: AudienceSettings,
                   verified: dict[str, tuple[bool | None, str] | None]) -> dict[str, Any]:
    """Validate the audience without sending: its query renders and runs (no rows read), member_id and the
    identifiers are columns of its result, and the keyed query the run sends is valid SQL; then the token
    through the `verify_audience_token` hook (once per advertiser: `verified` caches the answers)."""
    checks = _Checks(audience.name)
    try:
        warehouse = open_project_warehouse(project, read_only=True)
        try:
            query = prepare(project, audience, warehouse)
            sql, params = people_sql(query.rendered, Dialect(warehouse.dialect), query.spec)
            with warehouse.stream(f"select * from (\n{sql}\n) as probe where 1 = 0", params, 1):
                pass
        finally:
            warehouse.close()
    except ConfigError as exc:
        checks.add("configuration", "failed", str(exc))
        return checks.result(EXIT_CONFIG)
    except WarehouseBusy as exc:
        checks.add("warehouse", "unverified", f"nothing could be read: {exc}")
        return checks.result(EXIT_UNVERIFIED)
    except ConnectorError as exc:
        checks.add("query", "failed", str(exc))
        return checks.result(EXIT_FAILED)
    spec = query.spec
    checks.add("configuration", "ok", "connector.yml and the query are valid")
    mapped = ", ".join(f"{name} ← {column!r}" for name, column in spec.identifiers)
    checks.add("query", "ok", f"renders and runs; member_id {spec.member_id!r} and the identifiers ({mapped}) are "
                              "in its result")
    if not project.tiktok.audience_access_token:
        checks.add("tiktok", "failed", f"no audience access token: {project.tiktok.audience_token_hint}")
        return checks.result(EXIT_CONFIG)
    if audience.advertiser_id not in verified:
        verified[audience.advertiser_id] = verify_audience_token(project, audience.advertiser_id)
    answer = verified[audience.advertiser_id]
    if answer is None:
        checks.add("tiktok", "note", f"the audience token was not verified against advertiser "
                                     f"{audience.advertiser_id}: this build does not ask TikTok yet")
        return checks.result(EXIT_OK)
    ok, message = answer
    if ok is None:
        checks.add("tiktok", "unverified", f"not verified: {message}")
        return checks.result(EXIT_UNVERIFIED)
    checks.add("tiktok", "ok" if ok else "failed", message)
    return checks.result(EXIT_OK if ok else EXIT_FAILED)

