"""Poison rows through real syncs: generated values of many column types in each mapped column, synced by
the CLI (`sync --json`) from DuckDB (and PostgreSQL) to the fake TikTok, then synced again.

Every row must end accepted by the fake or in tiktok_rejects with a known reason code; the run never
crashes (exit 0 or 3, one JSON object); the rerun sends nothing twice and records nothing twice; bytes that
are UTF-8 give the event their text gives; no plain email or phone reaches a reject's detail.
"""

from __future__ import annotations

import re

import datetime as dt
import hashlib
import json
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from cli_helpers import cli, json_lines
from connector.reasons import REASONS
from delivery_helpers import MAPPING

UTC = dt.timezone.utc
DAY = 86_400
MARK = "Zq9"  # in every generated email/phone: it must never appear in a reject's detail
TEXT_ALPHABET = st.characters(exclude_characters="\x00", exclude_categories=("Cs",))  # DuckDB VARCHAR: UTF-8, no NUL
TEXTS = st.one_of(
    st.text(TEXT_ALPHABET, max_size=20),
    st.builds(lambda c, n: c * n, st.sampled_from(["x", "é", "7", "🙂"]), st.integers(250, 200_000)),
    st.from_regex(r"-?[0-9]{1,45}", fullmatch=True),
    st.sampled_from(["nan", "inf", "NaN", "1e400", "USD", " eur ", "Purchase", "true", "", " ",
                     "2024-05-31T12:00:00Z", "0001-01-01", "9999-12-31T23:59:59", "[1, 2]", '{"a": 1}']))
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) |
                           st.text(TEXT_ALPHABET, max_size=10),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                               st.sampled_from(["content_id", "price", "quantity", "a"]), inner, max_size=3),
                           max_leaves=8)


# Column types: (DuckDB type, values, SQL for one bound value).
COLUMN_TYPES: dict[str, tuple[str, Any, str]] = {
    "bigint": ("bigint", st.integers(-2 ** 63, 2 ** 63 - 1), "cast(? as bigint)"),
    "hugeint": ("hugeint", st.integers(-2 ** 127 + 1, 2 ** 127 - 1).map(str), "cast(? as hugeint)"),
    "ubigint": ("ubigint", st.integers(0, 2 ** 64 - 1).map(str), "cast(? as ubigint)"),
    "double": ("double", st.floats(), "cast(? as double)"),
    "decimal": ("decimal(38, 9)", st.decimals(-10 ** 28, 10 ** 28, places=9, allow_nan=False).map(str),
                "cast(? as decimal(38, 9))"),
    "date": ("date", st.dates(), "cast(? as date)"),
    "timestamp": ("timestamp", st.datetimes(), "cast(? as timestamp)"),
    "timestamptz": ("timestamptz", st.datetimes(timezones=st.just(UTC)), "cast(? as timestamptz)"),
    "blob": ("blob", st.binary(max_size=24) | TEXTS.map(lambda t: t.encode("utf-8")), "cast(? as blob)"),
    "varchar": ("varchar", TEXTS, "cast(? as varchar)"),
    "list": ("varchar[]", st.lists(st.none() | TEXTS, max_size=3), "cast(? as varchar[])"),
    "struct": ("struct(a varchar, b bigint)", st.tuples(st.none() | TEXTS, st.none() | st.integers(-9, 2 ** 40)),
               "struct_pack(a := cast(? as varchar), b := cast(? as bigint))"),
    "map": ("map(varchar, varchar)", st.dictionaries(TEXTS, st.none() | TEXTS, max_size=3),
            "map(cast(? as varchar[]), cast(? as varchar[]))"),
    "json": ("json", JSON_VALUES.map(json.dumps), "cast(? as json)"),
}
TARGETS = ["event_id", "event_time", "event", "user.email", "user.phone", "properties.value",
           "properties.currency", "properties.order_id", "properties.description", "properties.content_ids",
           "properties.num_items", "properties.contents", "event_source_id"]
UNITS = (1, 1_000, 1_000_000, 1_000_000_000)


def _params(kind: str, value: Any) -> list[Any]:
    if kind == "struct":
        return list(value)
    if kind == "map":
        return [list(value), list(value.values())]
    return [value]


def _pii_text(text: str) -> str:
    return f"{MARK}{text}"


def _times(kind: str, now_s: int) -> Any:
    """(value, the Unix seconds it stands for) for event_time, in the column type's way of holding a time:
    inside the window, far outside it on either side, in every unit."""
    offsets = st.one_of(st.integers(-27 * DAY, -2 * 3600), st.integers(-10 ** 10, -29 * DAY),
                        st.integers(2 * DAY, 10 ** 9))
    at = offsets.map(lambda offset: now_s + offset)
    if kind in ("bigint", "hugeint", "ubigint", "varchar", "blob"):
        def number(seconds: int, unit: int, part: float) -> tuple[Any, int]:
            value = seconds * unit + int(part * unit)
            if kind == "ubigint" and value < 0 or kind == "bigint" and not -2 ** 63 <= value < 2 ** 63:
                value, seconds = now_s * unit, now_s
            shown = {"varchar": str(value), "blob": str(value).encode(), "hugeint": str(value),
                     "ubigint": str(value)}.get(kind, value)
            return shown, seconds
        return st.builds(number, at, st.sampled_from(UNITS), st.floats(0, 0.999))
    if kind == "double":  # whole units, exact in a double: seconds, milliseconds, microseconds
        return st.builds(lambda s, unit: (float(s * unit), s), at, st.sampled_from(UNITS[:3]))
    if kind == "decimal":
        return st.builds(lambda s, frac: (f"{s}.{frac:09d}", s), at, st.integers(0, 999_999_999))
    if kind == "date":
        return at.map(lambda s: (dt.date(1970, 1, 1) + dt.timedelta(days=s // DAY), s - s % DAY))
    if kind in ("timestamp", "timestamptz"):
        zone = UTC if kind == "timestamptz" else None
        return st.builds(lambda s, us: (dt.datetime(1970, 1, 1, tzinfo=zone) + dt.timedelta(seconds=s, microseconds=us), s),
                         at, st.integers(0, 999_999))
    return None


@st.composite
def cases(draw: st.DrawFn, now_s: int) -> dict[str, Any]:
    target = draw(st.sampled_from(TARGETS))
    kind = draw(st.sampled_from(sorted(COLUMN_TYPES)))
    _, values, _ = COLUMN_TYPES[kind]
    if target in ("user.email", "user.phone") and kind in ("varchar", "blob", "list", "json"):
        texts = st.one_of(st.builds(lambda a: _pii_text(a) + "@example.com", st.text(TEXT_ALPHABET, max_size=8)),
                          st.builds(lambda a: "+1415555" + _pii_text(a), st.text(TEXT_ALPHABET, max_size=8)),
                          st.just(f"+1415555{MARK}0101"), TEXTS.map(_pii_text))
        values = {"varchar": texts, "blob": texts.map(lambda t: t.encode("utf-8")),
                  "list": st.lists(st.none() | texts, max_size=3),
                  "json": st.lists(texts, max_size=2).map(json.dumps)}[kind]
    timed = _times(kind, now_s) if target == "event_time" else None
    count = draw(st.integers(1, 6))
    rows = []
    for _ in range(count):
        if timed is not None and draw(st.booleans()):
            value, seconds = draw(timed)
        else:
            value, seconds = draw(st.none() | values), None
        rows.append((value, seconds))
    return {"target": target, "kind": kind, "rows": rows}


def _write_table(project: Any, order: Any, kind: str, rows: list[tuple[Any, int | None]], now: dt.datetime) -> None:
    sql_type, _, expression = COLUMN_TYPES[kind]
    con = duckdb.connect(str(project.db))
    try:
        con.execute("set TimeZone = 'UTC'")
        con.execute(f"alter table orders add column v {sql_type}")
        con.execute("alter table orders add column v_text varchar")
        updated_at = now - dt.timedelta(hours=1)  # one cursor for every row: each rerun re-reads them all
        for n, (value, _) in enumerate(rows):
            base = order(n, now=now, updated_at=updated_at)
            twin = value.decode("utf-8") if isinstance(value, bytes) and _utf8(value) else None
            v_sql = "null" if value is None else expression
            params = [base[c] for c in ("order_id", "event_name", "ordered_at", "updated_at", "email", "phone",
                                          "total", "currency")]
            params += [] if value is None else _params(kind, value)
            con.execute(f"insert into orders select ?, ?, ?, ?, ?, ?, ?, ?, {v_sql}, ?", params + [twin])
    finally:
        con.close()


def _utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _add_twin_sync(project: Any, mapping: dict[str, Any]) -> None:
    """A second sync reading the same rows, the target field mapped to `v_text` (the BLOB as text)."""
    twin = {"fields": {**mapping["fields"]}, "events": mapping["events"]}
    for path, column in twin["fields"].items():
        if column == "v":
            twin["fields"][path] = "v_text"
    (project.root / "mappings" / "twin.yml").write_text(yaml.safe_dump(twin), encoding="utf-8")
    config_path = project.root / "connector.yml"
    config = yaml.safe_load(config_path.read_text())
    config["syncs"]["twin"] = {**config["syncs"]["orders"], "mapping": "twin.yml"}
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))


def _sync(capsys: Any, root: Path, sync: str) -> dict[str, Any]:
    code, out, err = cli(capsys, "sync", sync, "--json", "--project", str(root))
    [report] = json_lines(out)  # one JSON object, whatever happened
    assert code in (0, 3), (code, err, report)
    assert report["status"] == "success", report
    assert (code == 3) == (report["health"] == "rejecting"), report
    return report


def _rejects(project: Any, sync: str) -> list[tuple[Any, ...]]:
    return project.query("select event_id, reason, detail, cursor_value from tiktok_rejects where sync_name = ?",
                         [sync])


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _as_text_id(value: Any) -> str | None:
    """The id a row's value must have been sent as (for the values whose id is plain to tell)."""
    if isinstance(value, bytes):
        return value.decode("utf-8").strip() if _utf8(value) else None
    if isinstance(value, str) and value.strip() and not value.strip().lstrip("-").isdigit():
        return value.strip()
    return None


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_generated_values_in_every_mapped_column_sync_without_a_crash(make_project, fake_tiktok, order, capsys,
                                                                       data: st.DataObject) -> None:
    now = dt.datetime.now(UTC).replace(microsecond=0)
    case = data.draw(cases(int(now.timestamp())))
    target, kind, rows = case["target"], case["kind"], case["rows"]
    fake_tiktok.reset()
    mapping = json.loads(json.dumps(MAPPING))
    mapping["fields"][target] = "v"
    project = make_project(mapping=mapping)
    _write_table(project, order, kind, rows, now)
    if kind == "blob":
        _add_twin_sync(project, mapping)
    order_ids = [order(n)["order_id"] for n in range(len(rows))]

    def row_id(event: dict[str, Any]) -> str:  # ORD-n: the order_id column, through the field not poisoned
        return event["properties"]["order_id"] if target == "event_id" else event["event_id"]

    first = _sync(capsys, project.root, "orders")
    accepted = [e.event for e in fake_tiktok.accepted()]
    sent_ids = [e["event_id"] for e in accepted]
    rejects = _rejects(project, "orders")
    assert len(sent_ids) == len(set(sent_ids)) == first["events_sent"]
    assert first["rows_read"] == len(rows)
    assert first["events_sent"] + first["events_rejected"] + first["duplicates_skipped"] == len(rows), first
    assert len(rejects) == first["events_rejected"]
    assert Counter(r[1] for r in rejects) == Counter(first["rejected_by_reason"])
    assert {r[1] for r in rejects} <= set(REASONS)
    details = "\n".join(r[2] for r in rejects).lower()
    assert MARK.lower() not in details and "@example.com" not in details and "(415)" not in details, details
    by_row = {row_id(e): e for e in accepted}
    if target == "event_id":
        for oid, (value, _) in zip(order_ids, rows):
            if oid in by_row and kind in ("varchar", "blob") and _as_text_id(value) is not None:  # text ids
                assert by_row[oid]["event_id"] == _as_text_id(value), (value, by_row[oid])
    else:  # every row is one event or one reject, by its order id
        rejected_ids = [r[0] for r in rejects]
        for oid in order_ids:
            assert (oid in by_row) + rejected_ids.count(oid) == 1, (oid, by_row.keys(), rejects)
    if target == "event_time":
        reasons = {r[0]: r[1] for r in rejects}
        for oid, (_, seconds) in zip(order_ids, rows):
            if seconds is None:
                continue
            if seconds > int(now.timestamp()) + 300:
                assert reasons.get(oid) == "event_in_future", (oid, seconds, reasons.get(oid))
            elif seconds < int(now.timestamp()) - 28 * DAY:
                assert reasons.get(oid) == "event_too_old", (oid, seconds, reasons.get(oid))
            else:
                assert by_row[oid]["event_time"] == seconds

    again = _sync(capsys, project.root, "orders")
    assert again["rows_read"] == len(rows)  # the tie at the watermark is read again
    assert again["events_sent"] == 0 and again["events_rejected"] == 0, again
    assert len(fake_tiktok.accepted_event_ids()) == len(sent_ids)
    assert sorted(_rejects(project, "orders")) == sorted(rejects)

    if kind == "blob" and target != "event_id":  # the BLOB read as text: the same events, the same rejects
        fake_tiktok.reset()
        twin = _sync(capsys, project.root, "twin")
        twin_events = {row_id(e.event): e.event for e in fake_tiktok.accepted()}
        twin_reasons = {r[0]: r[1] for r in _rejects(project, "twin")}
        blob_reasons = {r[0]: r[1] for r in rejects}
        for oid, (value, _) in zip(order_ids, rows):
            if value is not None and _utf8(value):
                assert twin_events.get(oid) == by_row.get(oid), (oid, value)
                assert twin_reasons.get(oid) == blob_reasons.get(oid), (oid, value)
        assert twin["events_sent"] == len(twin_events)


# ---------------------------------------------------------------- a table of poison only, and rows without ids

def test_a_table_of_poison_only_succeeds_rejecting_and_its_rerun_records_nothing_again(
        make_project, fake_tiktok, order, default_mapping, now, capsys) -> None:
    """The issue's NaN order ids (three rows: one used to be sent as "nan", two vanished as duplicates),
    infinities, an empty id, a list where a currency goes, a time in 2255: nothing is sent, every row is
    recorded once, the run succeeds with exit 3, and the next run (every row a tie at the watermark) records
    nothing again and exits 0."""
    default_mapping["fields"].update({"event_id": "oid", "event_time": "t", "properties.currency": "cur"})
    tie = now - dt.timedelta(hours=1)
    micros = int((now - dt.timedelta(hours=2)).timestamp()) * 1_000_000
    nan, inf = float("nan"), float("inf")
    rows = [order(n, now=now, updated_at=tie, oid=oid, t=t, cur=cur) for n, (oid, t, cur) in enumerate(
        [(nan, micros, ["USD"]), (nan, micros, ["USD"]), (nan, micros, ["USD"]), (inf, micros, ["USD"]),
         (None, micros, ["USD"]), (6.0, micros, ["USD"]), (7.0, 9 * 10 ** 18, ["USD"])])]
    project = make_project(rows, mapping=default_mapping, ddl=[
        "alter table orders add column oid double", "alter table orders add column t bigint",
        "alter table orders add column cur varchar[]"])
    root = str(project.root)

    code, out, err = cli(capsys, "sync", "--json", "--project", root)
    [report] = json_lines(out)
    assert code == 3, err
    assert report["status"] == "success" and report["health"] == "rejecting"
    assert report["events_sent"] == 0 and fake_tiktok.accepted() == []
    assert report["rejected_by_reason"] == {"invalid_event_id": 4, "missing_event_id": 1, "invalid_currency": 1,
                                            "event_in_future": 1}
    [run] = project.runs()
    assert (run["status"], run["health"], run["events_rejected"]) == ("success", "rejecting", 7)
    stored = project.rejects()
    assert len(stored) == 7
    assert [event_id for _, event_id, _ in stored].count(None) == 5  # no id is "nan" or "inf"
    assert "nan" not in [event_id for _, event_id, _ in stored]

    code, out, err = cli(capsys, "sync", "--json", "--project", root)
    [again] = json_lines(out)
    assert code == 0, (err, again)
    assert again["rows_read"] == 7 and again["events_sent"] == 0 and again["events_rejected"] == 0
    assert again["health"] == "ok"
    assert project.rejects() == stored
    assert [r["health"] for r in project.runs()] == ["rejecting", "ok"]


def test_rows_without_an_event_id_are_recorded_once_across_ties_and_lookback(
        make_project, fake_tiktok, order, now, capsys) -> None:
    """Issue 16, class 10: a NULL event_id at the watermark used to be recorded again on every run, and every
    run exited 3. A re-read row (a tie at the watermark, or inside the lookback) is known by its cursor,
    reason and fingerprint; a new row at the same cursor is still recorded."""
    at = {"old": now - dt.timedelta(minutes=90), "tie": now - dt.timedelta(minutes=60)}
    rows = [order(1, now=now, order_id=None, updated_at=at["old"]),
            order(2, now=now, order_id=" ", updated_at=at["tie"]),
            order(3, now=now, order_id="x" * 300, updated_at=at["tie"]),
            order(4, now=now, updated_at=at["tie"])]
    project = make_project(rows, sync_overrides={"lookback": "2h"})
    root = str(project.root)

    def run() -> tuple[int, dict[str, Any]]:
        code, out, err = cli(capsys, "sync", "--json", "--project", root)
        [report] = json_lines(out)
        return code, report

    code, first = run()
    assert code == 3 and first["events_sent"] == 1
    assert first["rejected_by_reason"] == {"missing_event_id": 2, "invalid_event_id": 1}
    for _ in range(2):
        code, again = run()
        assert code == 0 and again["rows_read"] == 4, again
        assert again["events_rejected"] == 0 and again["events_sent"] == 0
    assert len(project.rejects()) == 3

    project.insert([order(5, now=now, order_id=None, updated_at=at["tie"]),  # the same cursor, another row
                    order(6, now=now, order_id=None, updated_at=at["tie"], email="other@example.com")])
    code, later = run()
    assert later["rejected_by_reason"] == {"missing_event_id": 2}, later
    code, last = run()
    assert code == 0 and last["events_rejected"] == 0
    stored = project.rejects()
    assert len(stored) == 5
    assert len({detail for _, _, detail in stored}) == 5  # each row has its own fingerprint
    assert len(fake_tiktok.accepted_event_ids()) == 1
    for _, _, detail in stored:
        assert "@" not in detail and "example.com" not in detail.lower()


# ---------------------------------------------------------------- the other values, one by one

def test_ids_of_ten_megabytes_lists_and_the_longest_id(make_project, fake_tiktok, order, default_mapping) -> None:
    """A 10 MB event_id went on the wire and into the ledger; a list id was sent as "['o0', 'p']". The id
    of exactly MAX_ID_LENGTH characters is sent (by DuckDB's rendering or Python, the same)."""
    from connector.values import MAX_ID_LENGTH
    longest, too_long, huge = "L" * MAX_ID_LENGTH, "T" * (MAX_ID_LENGTH + 1), "H" * 10_000_000
    default_mapping["fields"]["properties.content_ids"] = "ids"
    project = make_project([order(1, order_id=longest, ids=None), order(2, order_id=too_long, ids=None),
                            order(3, order_id=huge, ids=None), order(4, ids=["o0", "p"])], mapping=default_mapping,
                           ddl=["alter table orders add column ids varchar[]"])
    report = project.run()
    assert report.ok, report.error
    assert sorted(fake_tiktok.accepted_event_ids()) == sorted(["ORD-00004", longest])
    [listed] = [e.event for e in fake_tiktok.accepted() if e.event["event_id"] == "ORD-00004"]
    assert listed["properties"]["content_ids"] == ["o0", "p"]
    assert sorted((reason, event_id) for reason, event_id, _ in project.rejects()) == \
        [("invalid_event_id", None), ("invalid_event_id", None)]
    assert max(len(r.raw) for r in fake_tiktok.requests()) < 10_000
    assert project.query("select max(length(event_id)) from tiktok_ledger")[0][0] == MAX_ID_LENGTH
    assert project.query("select max(length(detail)) from tiktok_rejects")[0][0] < 200

    project.query("update orders set ids = null")
    project.insert([order(5, ids=None, order_id="['o0', 'p']")])
    assert project.run().ok
    assert "['o0', 'p']" in fake_tiktok.accepted_event_ids()  # a text id that looks like a list is text


@pytest.mark.parametrize("hash_in_warehouse", [False, True])
def test_an_email_column_also_mapped_elsewhere_shows_in_no_detail(make_project, fake_tiktok, order, default_mapping,
                                                                  hash_in_warehouse: bool) -> None:
    default_mapping["fields"].update({"properties.value": "email", "properties.description": "email",
                                      "properties.content_type": "phone"})
    project = make_project([order(1), order(2, email="Customer2@Example.com,x")], mapping=default_mapping,
                           sync_overrides={"hash_in_warehouse": hash_in_warehouse})
    report = project.run()
    assert report.ok, report.error
    rejects = project.rejects()
    assert [reason for reason, _, _ in rejects] == ["invalid_value", "invalid_value"]
    # without the run ids: 32 random hex digits hold "415" one run in thirty
    text = re.sub(r"\b[0-9a-f]{32}\b", "<run id>", project.table_text("tiktok_rejects").lower())
    assert "customer" not in text and "@" not in text and "415" not in text, text


def test_a_blob_email_is_hashed_from_its_text(make_project, fake_tiktok, order, default_mapping) -> None:
    """Not from its Python repr ("b'…'"); bytes that are not UTF-8 refuse the row."""
    default_mapping["fields"]["user.email"] = "email_bytes"
    default_mapping["fields"]["user.phone"] = "phone_bytes"
    project = make_project([order(1, email_bytes=b" Jane@Example.com ", phone_bytes=None),
                            order(2, email_bytes=b"\xff\xfe@x.com", phone_bytes=b"+14155550101")],
                           mapping=default_mapping, ddl=["alter table orders add column email_bytes blob",
                                                         "alter table orders add column phone_bytes blob"])
    report = project.run()
    assert report.ok, report.error
    [event] = [e.event for e in fake_tiktok.accepted()]
    assert event["user"]["email"] == _sha("jane@example.com")
    assert [(reason, event_id) for reason, event_id, _ in project.rejects()] == [("invalid_field", "ORD-00002")]


# ---------------------------------------------------------------- PostgreSQL: bytea, NaN, arrays, jsonb, huge times

PG_TABLE = """create table poison (order_id text, email bytea, skus text[], oid numeric, t bigint,
    ts timestamptz, contents jsonb, total numeric, updated_at timestamptz)"""


def test_postgres_bytea_numeric_nan_arrays_jsonb_and_huge_times(tmp_path) -> None:
    """The drivers' own types (psycopg2: bytea as memoryview, numeric NaN as Decimal, arrays as lists,
    jsonb as dicts) and timestamps of ±infinity, which PostgreSQL cannot cast to bigint (one such row used to
    fail every read): every row ends as an event or a reject; a rerun sends and records nothing."""
    from warehouse_helpers import NOW, postgres_target, sync_runs, write_project
    now_s = int(NOW.timestamp())
    hour_ago, two_hours_ago = now_s - 3600, NOW - dt.timedelta(hours=2)
    tie = NOW - dt.timedelta(hours=1)
    contents = json.dumps([{"content_id": "A", "price": 2.5, "quantity": 2}])
    rows = [  # order_id, email, skus, oid, t, ts, contents, total
        ("P1", b" Jane@Example.com ", ["A", "B"], Decimal("1"), hour_ago * 1_000_000, two_hours_ago, contents, "9.99"),
        ("P2", b"\xff\xfe", None, Decimal("2"), hour_ago * 1000, two_hours_ago, None, "1"),
        ("P3", b"c@x.com", None, Decimal("NaN"), hour_ago, two_hours_ago, None, "1"),
        ("P4", b"d@x.com", None, Decimal("4"), 2 ** 63 - 1, two_hours_ago, None, "1"),
        ("P5", b"e@x.com", None, Decimal("5"), hour_ago * 10 ** 9, two_hours_ago, '{"content_id": "A"}', "1"),
        ("P6", b"f@x.com", None, Decimal("6"), hour_ago, "infinity", None, "1"),
        ("P7", b"g@x.com", None, Decimal("7"), hour_ago, "-infinity", None, "NaN"),
        ("P8", b"h@x.com", None, Decimal("1E+40"), hour_ago, two_hours_ago, None, "1"),
        ("P9", b"i@x.com", None, Decimal("9"), -(2 ** 63), two_hours_ago, None, "1"),
    ]
    fields = {"event": {"value": "Purchase"}, "event_id": "oid", "event_time": "t", "user.email": "email",
              "properties.order_id": "order_id", "properties.contents": "contents", "properties.content_ids": "skus",
              "properties.value": "total", "properties.currency": {"value": "USD"}}
    sync = {"query": "poison.sql", "event_source_id": "7654321098765432109", "cursor": "updated_at"}
    with postgres_target() as target:
        target.run(PG_TABLE)
        with target.session() as con:
            con.executemany("insert into poison values (?, ?, ?, ?, ?, ?, ?, ?, ?)", [(*row, tie) for row in rows])
        root = write_project(tmp_path / "pg", target, {
            "bigint_times": {**sync, "mapping": "bigint.yml"}, "timestamps": {**sync, "mapping": "ts.yml"}},
            queries={"poison.sql": "select * from poison"},
            mappings={"bigint.yml": {"fields": fields}, "ts.yml": {"fields": {**fields, "event_time": "ts"}}})
        bigint_runs = sync_runs(root, "bigint_times", runs=2)
        ts_runs = sync_runs(root, "timestamps", runs=2)
        rejects = target.query("select sync_name, event_id, reason, detail from tiktok_rejects")
    for outcome in (*bigint_runs, *ts_runs):
        assert outcome.report.ok, outcome.report.error
    big = str(10 ** 40)
    events = bigint_runs[0].by_id()
    assert set(events) == {"1", "6", big}, events
    assert {e["event_time"] for e in events.values()} == {hour_ago}
    assert events["1"]["user"]["email"] == _sha("jane@example.com")
    assert events["1"]["properties"]["contents"] == [{"content_id": "A", "price": 2.5, "quantity": 2}]
    assert events["1"]["properties"]["content_ids"] == ["A", "B"]
    assert set(ts_runs[0].by_id()) == {"1", "4", "9", big}

    def reasons(sync_name: str) -> list[tuple[str | None, str]]:
        return sorted(((r[1], r[2]) for r in rejects if r[0] == sync_name), key=repr)

    assert reasons("bigint_times") == sorted([
        ("2", "invalid_field"), (None, "invalid_event_id"), ("4", "event_in_future"), ("5", "invalid_field"),
        ("7", "invalid_value"), ("9", "event_too_old")], key=repr)
    assert reasons("timestamps") == sorted([
        ("2", "invalid_field"), (None, "invalid_event_id"), ("5", "invalid_field"), ("6", "invalid_event_time"),
        ("7", "invalid_event_time")], key=repr)
    for outcome in (bigint_runs[1], ts_runs[1]):  # every row a tie at the watermark, read again
        assert outcome.report.rows_read == len(rows)
        assert outcome.report.events_sent == 0 and outcome.report.events_rejected == 0
    assert all("jane" not in r[3].lower() and "@" not in r[3] for r in rejects)
