"""Conformance: input rows → the exact TikTok request bodies, table-driven (tests/conformance_cases.py).

Three ways:
1. unit: each case through `EventBuilder` with a compiled mapping and a fixed attribution window;
2. end to end: every case as a row of a real DuckDB warehouse, synced by `run_sync` to the fake TikTok on
   127.0.0.1, which must accept (code 0) exactly the expected event in the right envelope; rejected cases
   end up in `tiktok_rejects` with their reason;
3. agreement: what the connector refuses to send, posted directly, the fake refuses too (40002).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
import requests
import yaml

from conformance_cases import (ALICE, BY_ID, CASES, EXT_DOC, GENERIC_NAMES, ID_COLUMN, LEGACY_NAMES, NOW,
                               PHONE_DOC, SOURCE_IDS, TEST_EVENT_CODE, WHEN, Case, T, sha)
from connector import payload
from connector.config import BASE_URL_ENV, load_project
from connector.errors import ConfigError
from connector.events import Event, EventBuilder, Rejection, as_id
from connector.mapping import FieldSpec, Mapping, compile_mapping
from connector.reasons import REASONS
from connector.runner import RunOptions, run_sync
from connector.testing.fake_tiktok import FakeTikTok
from connector.tiktok_spec import TRACK_PATH
from connector.timeutil import attribution_window

TOKEN = "test-token"
WINDOW = attribution_window(NOW, 28, 300)
CURSOR = "updated_at"
HEX64 = re.compile(r"^[0-9a-f]{64}$")
E2E_CASES = [c for c in CASES if c.e2e]  # every case whose values a DuckDB table can hold


def param(c: Case) -> Any:
    marks = [pytest.mark.xfail(reason=c.bug, strict=True)] if c.bug else []
    return pytest.param(c, id=c.id, marks=marks)


def canonical(value: Any) -> str:
    """JSON as TikTok reads it: 100 and 100.0, "1" and 1, true and 1 all differ."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def cursor_value(index: int) -> dt.datetime:
    return NOW - dt.timedelta(hours=1) + dt.timedelta(seconds=index)


def case_rows(c: Case, index: int = 0) -> list[dict[str, Any]]:
    """The case's rows with the cursor filled in (one value for all rows of the event)."""
    return [{CURSOR: cursor_value(index), **row} for row in c.rows]


def case_columns(c: Case) -> list[str]:
    """Mapped columns in mapping order, then any other column the rows have, then the cursor."""
    columns: list[str] = []
    for target in c.fields.values():
        if isinstance(target, str) and target not in columns:
            columns.append(target)
    for row in c.rows:
        columns += [name for name in row if name not in columns and name != CURSOR]
    return columns + [CURSOR]


def mapping_of(c: Case) -> Mapping:
    specs = tuple(FieldSpec(path, constant=target["value"]) if isinstance(target, dict) else FieldSpec(path, target)
                  for path, target in c.fields.items())
    return Mapping(f"{c.id}.yml", specs, dict(c.events))


def build(c: Case) -> tuple[tuple[str, ...], Event | Rejection]:
    columns = case_columns(c)
    compiled = compile_mapping(mapping_of(c), columns, c.source)
    builder = EventBuilder(compiled, c.source, c.source_id, WINDOW, columns.index(CURSOR), c.region)
    rows = [tuple(row.get(name) for name in columns) for row in case_rows(c)]
    return compiled.not_applicable, builder.build(rows)


# ---------------------------------------------------------------- the table itself

def test_documented_hash_examples_are_what_the_table_expects() -> None:
    assert sha(" ALICE_abc@gmail.com ".strip().lower()) == ALICE
    assert sha("+12133734253") == PHONE_DOC
    assert sha("user_123") == EXT_DOC
    assert int(WHEN.timestamp()) == T


def test_the_table_covers_every_reason_a_row_can_produce() -> None:
    # rejected_by_tiktok comes from TikTok's answer, not from a row: test_events.py covers it.
    assert {c.reason for c in CASES if c.reason} == set(REASONS) - {"rejected_by_tiktok"}
    assert all((c.expect is None) != (c.reason is None) for c in CASES)
    assert all(c.detail for c in CASES if c.reason)


def test_the_table_covers_every_field_and_source() -> None:
    """Every TikTok field path is mapped by an accepted case of a source it applies to, and sent."""
    missing = []
    for path, (_, sources) in payload.FIELDS.items():
        sent = False
        for c in CASES:
            if not c.accepted or path not in c.fields or c.source not in sources:
                continue
            if path == "event_source_id":
                sent = c.envelope_id is not None
            elif payload.is_item_field(path):
                key = path.rsplit(".", 1)[1]
                sent = any(key in item for item in c.expect.get("properties", {}).get("contents", []))
            else:
                sent = payload.get_path(c.expect, path) is not None
            if sent:
                break
        if not sent:
            missing.append(path)
    assert missing == []
    for source in SOURCE_IDS:
        kinds = Counter("accepted" if c.accepted else "rejected" for c in CASES if c.source == source)
        assert kinds["accepted"] and kinds["rejected"], source
        assert any(c.not_sent for c in CASES if c.source == source), f"{source}: no not-applicable case"


def test_the_table_covers_event_names() -> None:
    sent = {(c.rows[0]["event_name"].strip(), c.expect["event"]) for c in CASES if c.accepted and not c.events}
    for raw, name in GENERIC_NAMES.items():
        assert (raw, name) in sent, raw
    for name in LEGACY_NAMES:
        assert (name, name) in sent, name
    assert any(c.events and c.accepted for c in CASES)
    assert {c.source for c in CASES if c.reason == "unknown_event"} == {"offline", "app", "crm"}
    assert any(c.source == "web" and c.accepted and c.expect["event"] == c.rows[0]["event_name"]
               and c.rows[0]["event_name"] not in GENERIC_NAMES and c.expect["event"][0].islower() for c in CASES)


def test_match_keys_in_expectations_are_hashes() -> None:
    for c in CASES:
        for key in ("email", "phone", "external_id"):
            value = payload.get_path(c.expect or {}, f"user.{key}")
            for one in ([value] if isinstance(value, str) else value or []):
                assert HEX64.match(one), (c.id, key, one)


# ---------------------------------------------------------------- 1. unit level: EventBuilder

@pytest.mark.parametrize("c", [param(c) for c in CASES])
def test_unit(c: Case) -> None:
    not_applicable, result = build(c)
    assert not_applicable == c.not_sent
    if c.accepted:
        assert isinstance(result, Event), f"rejected: {getattr(result, 'reason', '')}: {getattr(result, 'detail', '')}"
        assert canonical(result.body) == canonical(c.expect)
        assert result.event_id == c.expect["event_id"]
        assert result.event_time == c.expect["event_time"]
        assert result.event_source_id == c.expected_source_id
    else:
        assert isinstance(result, Rejection), f"built: {canonical(result.body)}"
        assert (result.reason, c.detail in result.detail) == (c.reason, True), result.detail
        assert result.event_id == as_id(c.rows[0][ID_COLUMN[c.source]])


# ---------------------------------------------------------------- 2. end to end: DuckDB → run_sync → fake TikTok

def duckdb_type(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "bigint" if abs(value) < 2 ** 63 else "hugeint"
    if isinstance(value, Decimal):
        return "decimal(18, 2)"
    if isinstance(value, float):
        return "double"
    if isinstance(value, dt.datetime):
        return "timestamptz" if value.tzinfo else "timestamp"
    if isinstance(value, dt.date):
        return "date"
    if isinstance(value, str):
        return "varchar"
    if isinstance(value, list) and all(v is None or isinstance(v, str) for v in value):
        return "varchar[]"
    raise AssertionError(f"give the case a DuckDB type for {value!r}")


def column_types(c: Case) -> dict[str, str]:
    types: dict[str, str] = {}
    for row in c.rows:
        for name, value in row.items():
            kind = c.types.get(name) or duckdb_type(value)
            if kind:
                assert types.setdefault(name, kind) == kind, (c.id, name)
    return types


@dataclass
class Bucket:
    """Cases that can share one table, mapping and sync."""

    name: str
    source: str
    cases: list[Case] = field(default_factory=list)


def bucket_key(c: Case) -> tuple[Any, ...]:
    # A case whose event has no id gets a sync of its own (rejects are found by (sync, event_id)), and so
    # does a case showing a bug, which must not take other cases down with it.
    lonely = c.id if c.bug or as_id(c.rows[0][ID_COLUMN[c.source]]) is None else None
    return (c.source, json.dumps(c.fields), json.dumps(c.events, sort_keys=True), c.source_id, c.region,
            c.test_event_code, lonely)


def buckets() -> list[Bucket]:
    """Cases grouped into as few syncs as their mappings, options and column types allow."""
    out: list[Bucket] = []
    by_key: dict[tuple[Any, ...], list[Bucket]] = defaultdict(list)
    for c in E2E_CASES:
        types = column_types(c)
        for bucket in by_key[bucket_key(c)]:
            merged = {**bucket_types(bucket)}
            if all(merged.get(name, kind) == kind for name, kind in types.items()):
                bucket.cases.append(c)
                break
        else:
            bucket = Bucket(f"{c.source}_{len(out) + 1:02d}", c.source, [c])
            by_key[bucket_key(c)].append(bucket)
            out.append(bucket)
    return out


def bucket_types(bucket: Bucket) -> dict[str, str]:
    merged: dict[str, str] = {}
    for c in bucket.cases:
        merged.update(column_types(c))
    return merged


def write_bucket(root: Path, con: duckdb.DuckDBPyConnection, bucket: Bucket, first_index: int) -> dict[str, Any]:
    """Table, query and mapping of one bucket; returns its sync section."""
    columns: list[str] = []
    for c in bucket.cases:
        columns += [name for name in case_columns(c) if name not in columns and name != CURSOR]
    types = bucket_types(bucket)
    definitions = [f'"{name}" {types.get(name, "varchar")}' for name in columns]
    con.execute(f'create table {bucket.name} ("_seq" integer, {", ".join(definitions)}, "{CURSOR}" timestamptz)')
    all_types = {"_seq": "integer", **{name: types.get(name, "varchar") for name in columns}, CURSOR: "timestamptz"}
    casts = ", ".join(f"cast(? as {kind})" for kind in all_types.values())
    rows = [row for n, c in enumerate(bucket.cases) for row in case_rows(c, first_index + n)]
    # Stored in reverse: items must follow the query's `order by`, not the table's storage order.
    for seq, row in reversed(list(enumerate(rows, start=1))):
        values = {"_seq": seq, **row}
        con.execute(f"insert into {bucket.name} values ({casts})", [values.get(name) for name in all_types])
    (root / "queries" / f"{bucket.name}.sql").write_text(f"select * from {bucket.name} order by _seq\n")
    first = bucket.cases[0]
    fields = {path: target for path, target in first.fields.items()}
    mapping: dict[str, Any] = {"fields": fields}
    if first.events:
        mapping["events"] = dict(first.events)
    (root / "mappings" / f"{bucket.name}.yml").write_text(yaml.safe_dump(mapping, sort_keys=False))
    sync: dict[str, Any] = {"query": f"{bucket.name}.sql", "mapping": f"{bucket.name}.yml",
                            "event_source": bucket.source, "cursor": CURSOR}
    if first.source_id is not None:
        sync["event_source_id"] = first.source_id
    if first.region:
        sync["default_phone_region"] = first.region
    return sync


@dataclass
class EndToEnd:
    buckets: list[Bucket]
    sync_of: dict[str, str]  # case id → sync name
    reports: dict[str, Any]  # sync name → SyncReport, or the exception run_sync raised
    received: dict[str, list[Any]]  # event_id → AcceptedEvent (accepted and test events)
    requests: list[Any]  # RecordedRequest
    rejects: dict[tuple[str, str | None], list[tuple[str, str]]]  # (sync, event_id) → [(reason, detail)]


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> EndToEnd:
    root = tmp_path_factory.mktemp("conformance")
    (root / "queries").mkdir()
    (root / "mappings").mkdir()
    groups = buckets()
    with pytest.MonkeyPatch.context() as mp, FakeTikTok(access_token=TOKEN) as fake:
        mp.delenv(BASE_URL_ENV, raising=False)
        mp.delenv("TIKTOK_TEST_EVENT_CODE", raising=False)
        syncs: dict[str, Any] = {}
        sync_of: dict[str, str] = {}
        con = duckdb.connect(str(root / "warehouse.duckdb"))
        try:
            con.execute("set TimeZone = 'UTC'")
            index = 0
            for bucket in groups:
                syncs[bucket.name] = write_bucket(root, con, bucket, index)
                index += len(bucket.cases)
                sync_of.update({c.id: bucket.name for c in bucket.cases})
        finally:
            con.close()
        (root / "connector.yml").write_text(yaml.safe_dump({
            "warehouse": {"url": "duckdb:///warehouse.duckdb"},
            "tiktok": {"access_token": TOKEN, "base_url": fake.base_url, "max_attempts": 2, "timeout_seconds": 5},
            "syncs": syncs,
        }, sort_keys=False))
        project = load_project(root)
        reports = {}
        for bucket in groups:
            code = bucket.cases[0].test_event_code
            try:
                reports[bucket.name] = run_sync(project, project.syncs[bucket.name],
                                                RunOptions(now=NOW, test_event_code=code))
            except Exception as exc:  # a crash is a finding of its case, not of the whole table
                reports[bucket.name] = exc
        received: dict[str, list[Any]] = defaultdict(list)
        for accepted in fake.accepted() + fake.test_events():
            received[accepted.event.get("event_id")].append(accepted)
        recorded = fake.requests()
    con = duckdb.connect(str(root / "warehouse.duckdb"))
    try:
        rejects: dict[tuple[str, str | None], list[tuple[str, str]]] = defaultdict(list)
        for sync_name, event_id, reason, detail in con.execute(
                "select sync_name, event_id, reason, detail from tiktok_rejects").fetchall():
            rejects[(sync_name, event_id)].append((reason, detail))
    finally:
        con.close()
    return EndToEnd(groups, sync_of, reports, dict(received), recorded, dict(rejects))


def test_end_to_end_runs(e2e: EndToEnd) -> None:
    """Every sync succeeded, the fake answered every request with code 0, and it received nothing else."""
    bug_syncs = {e2e.sync_of[c.id] for c in E2E_CASES if c.bug}
    for name, report in e2e.reports.items():
        if name not in bug_syncs:
            assert not isinstance(report, Exception) and report.status == "success", (name, report)
    assert e2e.requests and all(r.http_status == 200 and r.code == 0 for r in e2e.requests), \
        [(r.code, r.message) for r in e2e.requests if r.code != 0]
    bug_ids = {as_id(c.rows[0][ID_COLUMN[c.source]]) for c in E2E_CASES if c.bug}
    expected_ids = sorted(c.expect["event_id"] for c in E2E_CASES if c.accepted and not c.bug)
    assert sorted(set(e2e.received) - bug_ids) == expected_ids
    assert len(e2e.buckets) < len(E2E_CASES) / 2  # grouped: a few syncs per event source


@pytest.mark.parametrize("c", [param(c) for c in E2E_CASES])
def test_end_to_end(e2e: EndToEnd, c: Case) -> None:
    sync = e2e.sync_of[c.id]
    report = e2e.reports[sync]
    assert not isinstance(report, Exception), f"the sync crashed: {report!r}"
    assert report.status == "success", report.error
    notes = [n for n in report.notes if n.startswith("not sent for")]
    if c.not_sent:
        assert notes == [f"not sent for {c.source} events: {', '.join(c.not_sent)}"]
    else:
        assert notes == []
    event_id = as_id(c.rows[0][ID_COLUMN[c.source]])
    if not c.accepted:
        assert e2e.rejects.get((sync, event_id)) is not None, f"not recorded in tiktok_rejects ({sync})"
        [(reason, detail)] = e2e.rejects[(sync, event_id)]
        assert (reason, c.detail in detail) == (c.reason, True), detail
        assert event_id not in e2e.received
        return
    assert e2e.rejects.get((sync, event_id)) is None
    [accepted] = e2e.received.get(event_id, [None])
    assert accepted is not None, f"not received by the fake ({sync}: {dict(report.rejected_by_reason)})"
    assert canonical(accepted.event) == canonical(c.expect)
    # the request envelope
    [request] = [r for r in e2e.requests if r.index == accepted.request_index]
    assert request.code == 0
    body = request.body
    assert body["event_source"] == c.source
    assert body["event_source_id"] == c.expected_source_id and type(body["event_source_id"]) is str
    if c.test_event_code:
        assert body["test_event_code"] == c.test_event_code
        assert accepted.test_event_code == c.test_event_code
    else:
        assert "test_event_code" not in body
    assert all("test_event_code" not in event for event in body["data"])
    assert list(body) == [k for k in ("event_source", "event_source_id", "partner_name", "test_event_code", "data")
                          if k in body]


def test_items_of_one_event_with_different_cursors_stay_one_event(make_project, fake_tiktok) -> None:
    mapping = {"fields": {"event": "event_name", "event_id": "order_id", "event_time": "ordered_at",
                          "user.email": "email", "properties.contents[].content_id": "sku",
                          "properties.contents[].quantity": "qty"}}
    query = ("select o.order_id, o.event_name, o.ordered_at, o.email, i.sku, i.qty,\n"
             "       greatest(o.updated_at, i.changed_at) as changed_at\n"
             "from orders as o join items as i using (order_id)\norder by o.order_id, i.line\n")
    base = NOW - dt.timedelta(hours=2)
    orders = [{"order_id": "A", "event_name": "Purchase", "ordered_at": WHEN, "updated_at": base, "email": "a@x.com"},
              {"order_id": "B", "event_name": "Purchase", "ordered_at": WHEN, "updated_at": base, "email": "b@x.com"}]
    items = [{"order_id": "A", "line": 1, "sku": "A-1", "qty": 1, "changed_at": base},
             {"order_id": "A", "line": 2, "sku": "A-2", "qty": 2, "changed_at": base + dt.timedelta(minutes=10)},
             {"order_id": "B", "line": 1, "sku": "B-1", "qty": 1, "changed_at": base + dt.timedelta(minutes=5)}]
    project = make_project(orders, mapping=mapping, query=query, sync_overrides={"cursor": "changed_at"},
                           ddl=["create table items (order_id varchar, line integer, sku varchar, qty integer, "
                                "changed_at timestamptz)"], tables={"items": items})
    report = project.run(now=NOW)
    assert report.ok, report.error
    sent = {e.event["event_id"]: e.event["properties"] for e in fake_tiktok.accepted()}
    assert sent["B"] == {"contents": [{"content_id": "B-1", "quantity": 1}], "content_ids": ["B-1"], "num_items": 1,
                         "content_type": "product"}
    assert sent["A"] == {"contents": [{"content_id": "A-1", "quantity": 1}, {"content_id": "A-2", "quantity": 2}],
                         "content_ids": ["A-1", "A-2"], "num_items": 3, "content_type": "product"}
    assert report.duplicates_skipped == 0


def test_more_than_1000_events_go_in_several_requests(make_project, fake_tiktok, order) -> None:
    project = make_project([order(n) for n in range(1, 1002)])
    report = project.run()
    assert report.ok, report.error
    # batches may be in flight together: arrival order is not fixed
    assert sorted((r.code, r.event_count) for r in fake_tiktok.requests()) == [(0, 1), (0, 1000)]
    assert len(set(fake_tiktok.accepted_event_ids())) == 1001


def test_batch_size_above_tiktoks_limit_is_refused(make_project) -> None:
    project = make_project(sync_overrides={"batch_size": 1001})
    with pytest.raises(ConfigError, match="batch_size"):
        load_project(project.root)


# ---------------------------------------------------------------- 3. the fake refuses what the connector refuses

def built_event(case_id: str) -> dict[str, Any]:
    _, result = build(BY_ID[case_id])
    assert isinstance(result, Event)
    return json.loads(json.dumps(result.body))


def set_path(event: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    payload.set_path(event, path, value)
    return event


def drop(event: dict[str, Any], key: str) -> dict[str, Any]:
    del event[key]
    return event


FAKE = "connector/testing/fake_tiktok.py"
# name → (the connector case that refuses it or drops the field, the accepted case whose built event is the base,
# the event the connector would have had to send instead, the path the fake must name, a bug mark or None)
AGREEMENT: dict[str, tuple[str, str, Callable[[dict[str, Any]], dict[str, Any]], str, str | None]] = {
    "bad currency": ("off-currency-invalid", "off-value-currency",
                     lambda e: set_path(e, "properties.currency", "XYZ"), "data.0.properties.currency", None),
    "negative value": ("off-value-negative", "off-value-currency",
                       lambda e: set_path(e, "properties.value", -5), "data.0.properties.value", None),
    "value as text": ("off-value-not-a-number", "off-value-currency",
                      lambda e: set_path(e, "properties.value", "19.99"), "data.0.properties.value", None),
    "plain email": ("off-email-doc", "off-email-doc",
                    lambda e: set_path(e, "user.email", " ALICE_abc@gmail.com "), "data.0.user.email", None),
    "plain email in a list": ("off-emails-list", "off-emails-list",
                              lambda e: set_path(e, "user.email", [ALICE, "b@x.com"]), "data.0.user.email", None),
    "plain phone": ("off-phone-doc", "off-phone-doc",
                    lambda e: set_path(e, "user.phone", "+12133734253"), "data.0.user.phone", None),
    "plain external_id": ("web-external-id-doc", "web-external-id-doc",
                          lambda e: set_path(e, "user.external_id", "user_123"), "data.0.user.external_id", None),
    "number as event_id": ("off-event-id-number", "off-event-id-number",
                           lambda e: set_path(e, "event_id", 9007199254740993), "data.0.event_id", None),
    "number as content_id": ("off-items-numeric-sku", "off-items-numeric-sku",
                             lambda e: set_path(e, "properties.contents", [{"content_id": 123456, "quantity": 1}]),
                             "data.0.properties.contents.0.content_id", None),
    "number as order_id": ("off-ids-are-strings", "off-ids-are-strings",
                           lambda e: set_path(e, "properties.order_id", 1000), "data.0.properties.order_id", None),
    "number as app_id": ("app-app-id-number", "app-app-id-number",
                         lambda e: set_path(e, "app.app_id", 1234567890), "data.0.app.app_id", None),
    "number as lead_id": ("crm-lead-id-number", "crm-lead-id-number",
                          lambda e: set_path(e, "lead.lead_id", 9876543210123), "data.0.lead.lead_id", None),
    "quantity as text": ("off-items-rows", "off-items-rows",
                         lambda e: set_path(e, "properties.contents", [{"content_id": "SKU-B", "quantity": "1"}]),
                         "data.0.properties.contents.0.quantity", None),
    "custom event on offline": ("off-custom-event", "off-email-doc",
                                lambda e: set_path(e, "event", "dance_party"), "data.0.event", None),
    "custom event on crm": ("crm-custom-event", "crm-minimal",
                            lambda e: set_path(e, "event", "qualified"), "data.0.event", None),
    "custom event on app": ("app-custom-event", "app-minimal",
                            lambda e: set_path(e, "event", "level_7"), "data.0.event", None),
    "offline without email or phone": ("off-no-match-keys", "off-email-doc",
                                       lambda e: drop(e, "user"), "data.0.user", None),
    "web without a page object": ("web-missing-url", "web-minimal", lambda e: drop(e, "page"), "data.0.page", None),
    "app without app.app_id": ("app-missing-app-id", "app-minimal",
                               lambda e: set_path(e, "app", {"app_name": "Shop"}), "data.0.app.app_id", None),
    "crm without lead.lead_id": ("crm-missing-lead-id", "crm-minimal",
                                 lambda e: set_path(e, "lead", {"lead_event_source": "Salesforce"}),
                                 "data.0.lead.lead_id", None),
    "ttclid on offline": ("off-not-applicable-fields", "off-email-doc",
                          lambda e: set_path(e, "user.ttclid", "E.C.P.abc"), "data.0.user.ttclid", None),
    "external_id on offline": ("off-not-applicable-fields", "off-email-doc",
                               lambda e: set_path(e, "user.external_id", EXT_DOC), "data.0.user.external_id", None),
    "bad content_type": ("off-content-type-invalid", "off-email-doc",
                         lambda e: set_path(e, "properties.content_type", "sku"), "data.0.properties.content_type",
                         None),
    "bad event_channel": ("off-event-channel-invalid", "off-email-doc",
                          lambda e: set_path(e, "properties.event_channel", "fax"),
                          "data.0.properties.event_channel", None),
    "event_time in milliseconds": ("web-time-milliseconds", "web-minimal",
                                   lambda e: set_path(e, "event_time", T * 1000), "data.0.event_time", None),
    "event_time as ISO text": ("web-time-iso-z", "web-minimal",
                               lambda e: set_path(e, "event_time", "2024-05-31T12:00:00Z"), "data.0.event_time",
                               None),
    # Rules the fake once did not check (it does now).
    "standard web event on app": ("app-web-only-event", "app-minimal", lambda e: set_path(e, "event", "Lead"),
                                  "data.0.event", None),
    "bad customer_type": ("web-customer-type-invalid", "web-minimal",
                          lambda e: set_path(e, "properties.customer_type", "vip"),
                          "data.0.properties.customer_type", None),
    "bad att_status": ("app-att-invalid", "app-minimal", lambda e: set_path(e, "user.att_status", "MAYBE"),
                       "data.0.user.att_status", None),
    "limited_data_use as text": ("web-ldu-invalid", "web-minimal",
                                 lambda e: set_path(e, "limited_data_use", "maybe"), "data.0.limited_data_use",
                                 None),
    "locale on offline": ("off-not-applicable-fields", "off-email-doc",
                          lambda e: set_path(e, "user.locale", "en-US"), "data.0.user.locale", None),
    "page.url on offline": ("off-not-applicable-fields", "off-email-doc",
                            lambda e: set_path(e, "page", {"url": "https://shop.example.com/"}), "data.0.page",
                            None),
    "ttclid on crm": ("crm-not-applicable-fields", "crm-minimal", lambda e: set_path(e, "user.ttclid", "E.C.P.abc"),
                      "data.0.user.ttclid", None),
}


def post(fake: FakeTikTok, body: dict[str, Any]) -> dict[str, Any]:
    response = requests.post(fake.base_url + TRACK_PATH, json=body,
                             headers={"Access-Token": TOKEN, "Content-Type": "application/json"}, timeout=5)
    assert response.status_code == 200  # application errors come back with HTTP 200
    return response.json()


@pytest.mark.parametrize(("connector_case", "base_case", "mutate", "path"), [
    pytest.param(*row[:4], id=name, marks=[pytest.mark.xfail(reason=row[4], strict=True)] if row[4] else [])
    for name, row in AGREEMENT.items()])
def test_the_fake_refuses_what_the_connector_refuses(fake_tiktok, connector_case, base_case, mutate, path) -> None:
    refused, base = BY_ID[connector_case], BY_ID[base_case]
    # The connector does not send it: a reason, or the field dropped (and named in the run's notes).
    _, result = build(refused)
    if refused.accepted:
        assert isinstance(result, Event)
        assert canonical(result.body) == canonical(refused.expect)
    else:
        assert isinstance(result, Rejection) and result.reason == refused.reason
    source_id = base.expected_source_id
    good = payload.request_body(base.source, source_id, [built_event(base_case)])
    answer = post(fake_tiktok, good)
    assert answer["code"] == 0, answer["message"]
    bad = payload.request_body(base.source, source_id, [mutate(built_event(base_case))])
    answer = post(fake_tiktok, bad)
    assert answer["code"] == 40002, answer
    assert answer["message"].startswith(path), answer["message"]
    assert "data" not in answer or answer["data"] == {}


def test_the_fake_refuses_more_than_1000_events(fake_tiktok) -> None:
    event = built_event("off-email-doc")
    events = [{**event, "event_id": f"E-{n}"} for n in range(1001)]
    assert post(fake_tiktok, payload.request_body("offline", SOURCE_IDS["offline"], events[:1000]))["code"] == 0
    answer = post(fake_tiktok, payload.request_body("offline", SOURCE_IDS["offline"], events))
    assert answer["code"] == 40002
    assert answer["message"].startswith("data")


def test_test_event_code_is_top_level_in_the_body() -> None:
    body = payload.request_body("web", SOURCE_IDS["web"], [built_event("web-minimal")], TEST_EVENT_CODE)
    assert body["test_event_code"] == TEST_EVENT_CODE
    assert "test_event_code" not in body["data"][0]
