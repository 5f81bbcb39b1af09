"""A reference audience run for the tests of the audience modules, and a people table on any warehouse.

`AudienceDriver.run` is the order of steps of an audience run (read → count → guard → plan → deliver per
request → checkpoint membership → owed deletes) without the run skeleton, retries, bisection or rate limit,
to test the audience modules on their own: it posts with `requests` to the fake TikTok and retries
throttling and server errors a few times. The connector's own run is connector/audience_run.py, tested
through the CLI in test_audience_sync.py and test_audience_chaos.py.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import requests

from connector.audience_ids import ID_TYPES, IdentifierHasher
from connector.audience_plan import (
    MODES, Batch, Item, MappingRequest, PlanCounts, batches, check_mass_delete, delete_request, diff, plan,
)
from connector.audience_query import PeopleSpec, diff_sql, people_sql, read_pairs, read_people, resolve_columns
from connector.audience_spec import CREATE_PATH, MAPPING_PATH, OK_CODES, RETRY_CODES
from connector.dialects import Dialect
from connector.events import Rejection
from connector.membership import MEMBERSHIP_MIGRATION, AudienceRecord, MembershipStore
from connector.testing.fake_tiktok import FakeTikTok
from connector.tiktok_spec import THROTTLE_CODES
from connector.warehouse import Connection, Warehouse

NOW = dt.datetime(2024, 6, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
AUDIENCE_TOKEN = "audience-token"
ADVERTISER = "7000000000000000001"
PEOPLE_DDL = """create table people (customer_id {member_type}, email varchar(200), phone varchar(64),
    idfa varchar(64), gaid varchar(64))"""
IDENTIFIERS = {"email": "email", "phone": "phone", "idfa": "idfa", "gaid": "gaid"}


def apply_membership_migration(conn: Connection, schema: str | None = None) -> None:
    """What StateStore.ensure_tables does with MEMBERSHIP_MIGRATION (state version 4), on a bare connection."""
    p = f"{schema}.tiktok_" if schema else "tiktok_"
    if schema:
        conn.execute(f"create schema if not exists {schema}")
    for statement in MEMBERSHIP_MIGRATION[1]:
        dialect, sql = statement if isinstance(statement, tuple) else (conn.dialect, statement)
        if dialect == conn.dialect:
            conn.execute(sql.format(p=p))


class Crash(Exception):
    """Raised by a test's crash hook: the run stops there, as if killed."""


@dataclass
class RunResult:
    counts: PlanCounts
    rejects: list[Rejection] = field(default_factory=list)
    requests: list[MappingRequest] = field(default_factory=list)


@dataclass
class AudienceDriver:
    warehouse: Warehouse
    store: MembershipStore
    fake: FakeTikTok
    name: str = "vip"
    query: str = "select * from people"
    identifiers: dict[str, str] = field(default_factory=lambda: dict(IDENTIFIERS))
    member_id: str = "customer_id"
    mode: str = "mirror"
    hasher: IdentifierHasher = field(default_factory=lambda: IdentifierHasher("US"))
    hash_in_warehouse: bool = False
    in_warehouse_diff: bool = False  # diff_sql (state in the warehouse) instead of the merge-join
    batch_size: int = 5000
    max_delete_fraction: float = 1.0
    session: requests.Session = field(default_factory=requests.Session)
    run_number: int = 0

    def spec(self) -> PeopleSpec:
        probe = self.warehouse.stream(f"select * from ({self.query}) as probe where 1 = 0", {}, 1)
        probe.close()
        return resolve_columns(self.name, self.member_id, self.identifiers, probe.columns, self.hasher,
                               hash_in_warehouse=self.hash_in_warehouse)

    @contextmanager
    def plan(self, spec: PeopleSpec, counts: PlanCounts | None = None) -> Iterator[Iterator[Item]]:
        """The run's plan: the warehouse's diff, or the query merged with the membership state."""
        dialect, mode = Dialect(self.warehouse.dialect), MODES[self.mode]
        if self.in_warehouse_diff:
            sql, params = diff_sql(self.query, dialect, spec, self.store.members_table, self.name)
        else:
            sql, params = people_sql(self.query, dialect, spec)
        stream = self.warehouse.stream(sql, params, 2000)
        try:
            if self.in_warehouse_diff:
                yield plan(read_pairs(stream.chunks), mode, spec.hashing(), counts)
            else:
                yield diff(read_people(stream.chunks), self.store.members(self.name), mode, spec.hashing(), counts)
        finally:
            stream.close()

    def audience(self, spec: PeopleSpec) -> AudienceRecord:
        record = self.store.audience(self.name)
        if record is None:
            data = self.post(CREATE_PATH, {"advertiser_id": ADVERTISER, "action": "create",
                                           "custom_audience_name": f"{self.name} audience"})
            record = AudienceRecord(self.name, ADVERTISER, data["audience_id"], f"{self.name} audience",
                                    spec.id_schema)
            self.store.record_audience(record, NOW)
        elif record.id_schema != spec.id_schema:
            record = AudienceRecord(record.audience, record.advertiser_id, record.audience_id,
                                    record.audience_name, spec.id_schema)
            self.store.record_audience(record, NOW)
        return record

    def run(self, crash: Callable[[str], None] = lambda point: None) -> RunResult:
        """One run: count, guard, send adds and state changes batch by batch, then the owed deletes."""
        self.run_number += 1
        run_id = f"run-{self.run_number}"
        spec = self.spec()
        record = self.audience(spec)
        counts = PlanCounts()
        with self.plan(spec, counts) as items:
            for _ in items:
                pass
        if self.in_warehouse_diff:
            counts.include_unchanged(self.store.count(self.name))
        check_mass_delete(counts, self.max_delete_fraction, self.name)
        result = RunResult(counts)
        if counts.has_work:
            with self.plan(spec) as items:
                for batch in batches(items, spec.id_schema, self.batch_size):
                    self.deliver(batch, record, run_id, crash, result)
        self.store.prune_held_deletes(self.name)
        crash("pruned")
        for page in self.store.unheld_deletes(self.name, self.batch_size):
            request = delete_request(page.id_type, page.hashes, record.id_schema)
            self.post(MAPPING_PATH, request.body(record.advertiser_id, record.audience_id))
            result.requests.append(request)
            crash("deleted")
            self.store.clear_deletes(self.name, page)
            crash("cleared")
        return result

    def deliver(self, batch: Batch, record: AudienceRecord, run_id: str, crash: Callable[[str], None],
                result: RunResult) -> None:
        if batch.request is not None:
            self.post(MAPPING_PATH, batch.request.body(record.advertiser_id, record.audience_id))
            result.requests.append(batch.request)
            crash("sent")
        self.store.apply(self.name, batch.changes, run_id, NOW)
        result.rejects.extend(batch.rejects)
        crash("applied")

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        for attempt in range(6):
            try:
                response = self.session.post(self.fake.base_url + path, json=body, timeout=2,
                                             headers={"Access-Token": AUDIENCE_TOKEN})
            except requests.RequestException:
                time.sleep(0.01)
                continue
            payload = response.json()
            if payload.get("code") in OK_CODES:
                return payload.get("data") or {}
            if payload.get("code") in RETRY_CODES or payload.get("code") in THROTTLE_CODES or response.status_code >= 500:
                time.sleep(0.01 * attempt)
                continue
            raise AssertionError(f"TikTok refused {path}: {payload}")
        raise AssertionError(f"{path}: no answer after retries")


def people_table(conn: Any, dialect: str, rows: Sequence[tuple[Any, ...]], member_type: str = "varchar(40)",
                 replace: bool = True) -> None:
    """(Re)create the `people` table with these rows, through a DB-API-like `execute(sql, params)` of the
    test's Target session (`?` placeholders)."""
    if replace:
        conn.execute("drop table if exists people")
    conn.execute(PEOPLE_DDL.format(member_type=member_type))
    if rows:
        conn.executemany("insert into people values (?, ?, ?, ?, ?)", [tuple(r) for r in rows])


def expected_hashes(rows: Sequence[tuple[Any, ...]], hasher: IdentifierHasher) -> dict[str, set[str]]:
    """The audience TikTok should hold for these rows (member ids unique): every valid hash, by id type."""
    out: dict[str, set[str]] = {}
    kinds = {"email": 1, "phone": 2, "idfa": 3, "gaid": 4}
    for row in rows:
        for t in ID_TYPES:
            if t.algorithm != "sha256":
                continue
            value = row[kinds[t.kind]]
            h = hasher.hash(t.name, value) if value is not None else None
            if h:
                out.setdefault(t.name, set()).add(h)
    return out


# People of two runs (customer_id, email, phone, idfa, gaid): what changes between them is said beside each row.
IDFA = "6d92078a-8246-4ba4-ae5b-76104861e7d{}"

FIRST = [
    ("c1", "Ann@Example.com", "(415) 555-0101", None, None),
    ("c2", "bob@example.com", "+1 415 555 0102", IDFA.format(2), None),
    ("c3", "carl@example.com", "+1 415 555 0100", None, None),  # shares a phone with c4: a household
    ("c4", "dora@example.com", "+1 415 555 0100", None, None),
    ("c5", None, None, IDFA.format(5), None),
    ("c6", "eve@example.com", None, None, None),
    (" 7 ", "fay@example.com", "4155550107", None, None),  # the member id is trimmed
]
SECOND = [
    ("c1", "ann@example.com", "(415) 555-0101", None, None),  # same hashes, other raw text: no request
    ("c2", "bob@new.example.com", "+1 415 555 0102", IDFA.format(2), None),  # email changed
    ("c3", "carl@example.com", None, None, None),  # lost the shared phone: c4 keeps it in TikTok
    ("c4", "dora@example.com", "+1 415 555 0100", None, None),
    ("c6", None, "not a phone", None, None),  # no usable identifier left: rejected and removed
    ("7", "fay@example.com", "4155550107", None, None),
    ("c8", "eve@example.com", None, None, None),  # c6's email moves to a new member
    ("c9", "gil@example.com", None, None, None),
    ("c9", "gil@other.example.com", None, None, None),  # a duplicate member id: both rows rejected
]
SECOND_EXPECTED = [r for r in SECOND if r[0] != "c9"]
