"""`hash_in_warehouse: true`: the SQL of connector.dialects hashes match keys exactly as connector.pii does.

Part 1 runs a table of cases through `Dialect(name).hashed_email/hashed_phone/hashed_external_id` on DuckDB,
PostgreSQL and Snowflake (fakesnow) and compares each result with pii.hash_email/hash_phone/
hash_external_id (None for NULL). TikTok's documented examples are among the cases.

Part 2 syncs the same rows with hash_in_warehouse false and true on each warehouse: the request bodies
must be identical, and with true the rows Python receives hold no plain email, phone or external id.

Known differences (SQL has no phone metadata): the SQL phone rules check the shape and length of a number,
not whether it is valid for its country, and SQL drops numbers written with an extension; see
test_known_difference_*. Cases where SQL and Python disagree beyond that are marked xfail as bugs.
PostgreSQL tests skip when nothing listens on 127.0.0.1:5432.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from connector import pii
from connector.dialects import Dialect
from connector.query import SOURCE_ALIAS, quote

from warehouse_helpers import (
    DIALECTS, NOW, SOURCE_ID, Target, canonical, duckdb_target, open_recording, sync_runs, target_for,
    write_project,
)

fakesnow = pytest.importorskip("fakesnow")

HEX_UPPER = "9F7EC22D72092CD3C0B58726ED9C2D91B92E51A3F29837508FB2948BB22DD2FD"
HEX_LOWER = HEX_UPPER.lower()
# TikTok's documented examples (shared/docs/tiktok-events-api.md, "user").
TIKTOK_EMAIL = (" ALICE_abc@gmail.com ", "848a771458438fc2ec420560d769fb9b9b86851ee338ec56517baabd79d3bb4f")
TIKTOK_PHONE = ("(+1)2133734253", "9f7ec22d72092cd3c0b58726ed9c2d91b92e51a3f29837508fb2948bb22dd2fd")
TIKTOK_EXTERNAL_ID = ("user_123", "80fba0ae1c48e3978e43e4efc365e14e12ea0c830ba8ba5b9a2dafc7e3f2ab8b")
REGIONS = (None, "US", "GB", "DE", "FR")


@dataclass(frozen=True)
class Case:
    kind: str  # email | phone | external_id
    raw: str | None
    region: str | None = None
    label: str = ""

    @property
    def id(self) -> str:
        region = f"[{self.region}]" if self.region else ""
        return f"{self.kind}{region}:{self.label or repr(self.raw)}"

    def python(self) -> str | None:
        if self.raw is None:
            return None
        if self.kind == "email":
            return pii.hash_email(self.raw)
        if self.kind == "phone":
            return pii.hash_phone(self.raw, self.region)
        return pii.hash_external_id(self.raw)

    def sql(self, dialect: Dialect, column: str) -> str:
        if self.kind == "email":
            return dialect.hashed_email(column)
        if self.kind == "phone":
            return dialect.hashed_phone(column, self.region)
        return dialect.hashed_external_id(column)


EMAILS = [
    Case("email", TIKTOK_EMAIL[0], label="TikTok example"),
    Case("email", "Customer1@Example.COM"),
    Case("email", "\tTabbed.User+tag@Example.com\t", label="tabs around, plus tag kept"),
    Case("email", "\r\n  spaced@example.com  \n", label="CR/LF and spaces around"),
    Case("email", "ÄLICE@Exämple.com", label="non-ASCII lowercased"),
    Case("email", "", label="empty"),
    Case("email", "   ", label="spaces only"),
    Case("email", " \t\n ", label="whitespace only"),
    Case("email", None, label="NULL"),
    Case("email", "no-at-sign.example.com", label="no @"),
    Case("email", HEX_UPPER, label="pre-hashed upper"),
    Case("email", HEX_LOWER, label="pre-hashed lower"),
    Case("email", f"  {HEX_UPPER}\t", label="pre-hashed with spaces"),
    Case("email", HEX_UPPER[:63], label="63 hex is not a hash"),
]
PHONES = [
    Case("phone", TIKTOK_PHONE[0], label="TikTok example"),
    Case("phone", "+1 213-373-4253"),
    Case("phone", "+1.213.373.4253"),
    Case("phone", "0012133734253", label="00 international prefix"),
    Case("phone", "12133734253", label="digits with country code"),
    Case("phone", "+44 20 7946 0958"),
    Case("phone", "+44 (0)20 7946 0958", label="written trunk 0 in parentheses"),
    Case("phone", "+44 020 7946 0958", label="written trunk 0 (GB)"),
    Case("phone", "+49 030 1234567", label="written trunk 0 (DE)"),
    Case("phone", "+39 06 1234 5678", label="Italy keeps its 0"),
    Case("phone", "0044 20 7946 0958"),
    Case("phone", "", label="empty"),
    Case("phone", "  \t", label="whitespace only"),
    Case("phone", None, label="NULL"),
    Case("phone", "not a phone"),
    Case("phone", "12345", label="too short"),
    Case("phone", "1234567890123456", label="too long"),
    Case("phone", HEX_UPPER, label="pre-hashed upper"),
    Case("phone", f" {HEX_LOWER} ", label="pre-hashed lower with spaces"),
] + [
    Case("phone", raw, region)
    for region, numbers in {
        "US": ["2133734253", "(213) 373-4253", "1 213 373 4253", "+1 213-373-4253", "0012133734253"],
        "GB": ["020 7946 0958", "07700 900123", "+44 20 7946 0958", "+1 213 373 4253"],
        "DE": ["030 123456", "0151 23456789", "0044 20 7946 0958"],
        "FR": ["01 23 45 67 89", "06 12 34 56 78", "+12133734253"],
    }.items() for raw in numbers
]
EXTERNAL_IDS = [
    Case("external_id", TIKTOK_EXTERNAL_ID[0], label="TikTok example"),
    Case("external_id", " User_123 ", label="spaces trimmed, case kept"),
    Case("external_id", "\tCRM-42 A\t", label="tabs trimmed, inner space kept"),
    Case("external_id", "", label="empty"),
    Case("external_id", "   ", label="spaces only"),
    Case("external_id", None, label="NULL"),
    Case("external_id", HEX_UPPER, label="pre-hashed upper"),
]
MATCHING = EMAILS + PHONES + EXTERNAL_IDS

# SQL checks the length of a number, not its validity for the country (no phone metadata in SQL), and drops
# a number written with an extension: (case, the E.164 text SQL hashes, or None when SQL drops it).
KNOWN_DIFFERENCES = [
    (Case("phone", "2133734253", None, "10 digits without country code"), "+2133734253"),
    (Case("phone", "2133734253", "FR", "US number read as French"), "+332133734253"),
    (Case("phone", "12133734253", "GB", "US number read as British"), "+4412133734253"),
    (Case("phone", "020 7946 0958", "US", "British number read as US"), "+102079460958"),
    (Case("phone", "+1 213 373 4253 ext 5", None, "extension"), None),
]
# Disagreements that are bugs (see the xfail reasons), and Unicode edge spaces (str.strip() removes them).
LEADING_ZERO_NO_REGION = [
    Case("phone", "020 7946 0958", None, "national GB number, no region"),
    Case("phone", "01 23 45 67 89", None, "national FR number, no region"),
]
TRUNK_ZERO_MISSED = [
    Case("phone", "+33 06 12 34 56 78", None, "written trunk 0 (FR)"),
    Case("phone", "+81 090 1234 5678", None, "written trunk 0 (JP)"),
    Case("phone", "+91 098765 43210", None, "written trunk 0 (IN)"),
]
UNICODE_SPACE = [
    Case("email", "\u00a0alice@example.com", label="no-break space before"),
    Case("phone", "+1 213 373 4253\u00a0", label="no-break space after"),
    Case("external_id", "\u00a0user_123", label="no-break space before"),
    Case("external_id", "user_123\u3000", label="ideographic space after"),
    Case("email", "\u2003bob@example.com\u2028", label="em space and line separator"),
]
ALL_CASES = MATCHING + [c for c, _ in KNOWN_DIFFERENCES] + LEADING_ZERO_NO_REGION + TRUNK_ZERO_MISSED + UNICODE_SPACE


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def sql_literal(value: str | None) -> str:
    return "null" if value is None else "'" + value.replace("'", "''") + "'"


# ---------------------------------------------------------------- part 1: the case table

def _hash_cases_in(target: Target) -> dict[Case, Any]:
    """All cases in one table (raw as varchar), every case's expression in one SELECT."""
    dialect = Dialect(target.dialect)
    raws = list(dict.fromkeys(c.raw for c in ALL_CASES))
    ids = {raw: i for i, raw in enumerate(raws)}
    target.run("create table cases (id integer, raw varchar(300))")
    with target.session() as con:
        values = ", ".join(f"({i}, {sql_literal(raw)})" for raw, i in ids.items())
        con.execute(f"insert into cases (id, raw) values {values}")
        stored = dict(con.query("select id, raw from cases"))
        assert stored == {i: raw for raw, i in ids.items()}, "the cases did not reach the table unchanged"
        expressions = {case: case.sql(dialect, "raw") for case in ALL_CASES}
        columns = list(dict.fromkeys(expressions.values()))
        select = ", ".join(f"{expr} as h{n}" for n, expr in enumerate(columns))
        rows = {row[0]: row[1:] for row in con.query(f"select id, {select} from cases")}
    return {case: rows[ids[case.raw]][columns.index(expressions[case])] for case in ALL_CASES}


_RESULTS: dict[str, dict[Case, Any]] = {}


@pytest.fixture(scope="module")
def sql_hashes(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], dict[Case, Any]]:
    """dialect → {case: what the warehouse's SQL returned}, computed once per warehouse."""
    def get(dialect: str) -> dict[Case, Any]:
        if dialect not in _RESULTS:
            with target_for(dialect, tmp_path_factory.mktemp(f"hash-{dialect}")) as target:
                _RESULTS[dialect] = _hash_cases_in(target)
        return _RESULTS[dialect]
    return get


def test_tiktok_documented_examples_are_what_python_computes() -> None:
    assert pii.hash_email(TIKTOK_EMAIL[0]) == TIKTOK_EMAIL[1]
    assert pii.hash_phone(TIKTOK_PHONE[0]) == TIKTOK_PHONE[1]
    assert pii.hash_external_id(TIKTOK_EXTERNAL_ID[0]) == TIKTOK_EXTERNAL_ID[1]
    labels = {(c.kind, c.label) for c in MATCHING}
    assert {("email", "TikTok example"), ("phone", "TikTok example"), ("external_id", "TikTok example")} <= labels


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("case", MATCHING, ids=[c.id for c in MATCHING])
def test_sql_hash_equals_python_hash(dialect: str, case: Case, sql_hashes: Callable[[str], dict]) -> None:
    assert sql_hashes(dialect)[case] == case.python()


@pytest.mark.parametrize("dialect", DIALECTS)
def test_tiktok_examples_hash_in_sql_to_the_documented_digests(dialect: str, sql_hashes: Callable) -> None:
    results = sql_hashes(dialect)
    by_label = {(c.kind, c.label): results[c] for c in MATCHING if c.label == "TikTok example"}
    assert by_label == {("email", "TikTok example"): TIKTOK_EMAIL[1], ("phone", "TikTok example"): TIKTOK_PHONE[1],
                        ("external_id", "TikTok example"): TIKTOK_EXTERNAL_ID[1]}


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize(("case", "sql_e164"), KNOWN_DIFFERENCES, ids=[c.id for c, _ in KNOWN_DIFFERENCES])
def test_known_difference_sql_phone_rules_check_length_not_country_validity(
        dialect: str, case: Case, sql_e164: str | None, sql_hashes: Callable) -> None:
    """Documented, not a bug: Python (phonenumbers) drops these; SQL hashes a number of a plausible length
    (or drops an extension Python would keep). Update this table when the SQL rules change."""
    python = case.python()
    if sql_e164 is None:
        assert python is not None
        assert sql_hashes(dialect)[case] is None
    else:
        assert python is None
        assert sql_hashes(dialect)[case] == sha256(sql_e164)


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("case", LEADING_ZERO_NO_REGION, ids=[c.id for c in LEADING_ZERO_NO_REGION])
def test_sql_drops_national_numbers_without_a_region(dialect: str, case: Case, sql_hashes: Callable) -> None:
    assert case.python() is None
    assert sql_hashes(dialect)[case] == case.python()


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("case", TRUNK_ZERO_MISSED, ids=[c.id for c in TRUNK_ZERO_MISSED])
def test_sql_drops_a_written_trunk_zero_like_python(dialect: str, case: Case, sql_hashes: Callable) -> None:
    assert case.python() is not None
    assert sql_hashes(dialect)[case] == case.python()


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("case", UNICODE_SPACE, ids=[c.id for c in UNICODE_SPACE])
def test_sql_trims_unicode_whitespace_like_python(dialect: str, case: Case, sql_hashes: Callable) -> None:
    assert sql_hashes(dialect)[case] == case.python()


# ---------------------------------------------------------------- part 2: whole syncs

PEOPLE_DDL = """create table people (id varchar(20), event_name varchar(20), ordered_at {tz}, updated_at {tz},
    email varchar(200), phone varchar(200), external_id varchar(200))"""
E2E_EMAILS = [c.raw for c in EMAILS]
E2E_PHONES = [c.raw for c in PHONES if c.region in (None, "US")]
E2E_EXTERNAL_IDS = [c.raw for c in EXTERNAL_IDS]
E2E_REGION = "US"


def people_rows(count: int = 30) -> list[tuple[Any, ...]]:
    import datetime as dt
    rows = []
    for n in range(count):
        rows.append((f"P-{n:03d}", "purchase", NOW - dt.timedelta(days=1, minutes=n),
                     NOW - dt.timedelta(hours=2, minutes=n), E2E_EMAILS[n % len(E2E_EMAILS)],
                     E2E_PHONES[(n * 7) % len(E2E_PHONES)], E2E_EXTERNAL_IDS[n % len(E2E_EXTERNAL_IDS)]))
    return rows


OFFLINE_MAPPING = {"fields": {"event": "event_name", "event_id": "id", "event_time": "ordered_at",
                              "user.email": "email", "user.phone": "phone"}}
CRM_MAPPING = {"fields": {**OFFLINE_MAPPING["fields"], "user.external_id": "external_id", "lead.lead_id": "id"}}
PAIRS = {"offline": ("offline_python", "offline_sql"), "crm": ("crm_python", "crm_sql")}


def people_project(root: Path, target: Target) -> Path:
    syncs = {}
    for source, (python_sync, sql_sync) in PAIRS.items():
        for name, in_sql in ((python_sync, False), (sql_sync, True)):
            syncs[name] = {"query": "people.sql", "mapping": f"{source}.yml", "event_source": source,
                           "event_source_id": SOURCE_ID, "cursor": "updated_at",
                           "default_phone_region": E2E_REGION, "hash_in_warehouse": in_sql}
    return write_project(root, target, syncs, queries={"people.sql": "select * from people\n"},
                         mappings={"offline.yml": OFFLINE_MAPPING, "crm.yml": CRM_MAPPING})


def load_people(target: Target, rows: list[tuple[Any, ...]]) -> None:
    target.run(PEOPLE_DDL)
    with target.session() as con:
        con.executemany("insert into people values (?, ?, ?, ?, ?, ?, ?)", rows)


@dataclass
class PairResult:
    python: Any
    sql: Any
    recorded_sql: list[str]
    recorded_rows: list[tuple[Any, ...]]
    columns: list[str]  # the user's query's columns (the probe)


def run_pairs(target: Target, root: Path, rows: list[tuple[Any, ...]]) -> dict[str, PairResult]:
    load_people(target, rows)
    project = people_project(root, target)
    results = {}
    for source, (python_sync, sql_sync) in PAIRS.items():
        [python] = sync_runs(project, python_sync)
        recorder = open_recording(project)
        try:
            [in_sql] = sync_runs(project, sql_sync, warehouse=recorder)
        finally:
            recorder.close()
        results[source] = PairResult(python, in_sql, recorder.sql, recorder.rows, recorder.columns[0])
    return results


@pytest.mark.parametrize("dialect", DIALECTS)
def test_hash_in_warehouse_sends_the_same_bodies_and_no_plain_values_reach_python(
        dialect: str, tmp_path: Path) -> None:
    rows = people_rows()
    with target_for(dialect, tmp_path) as target:
        results = run_pairs(target, tmp_path / "project", rows)
    sql_dialect = Dialect(dialect)
    for source, result in results.items():
        assert result.python.report.ok, result.python.report.error
        assert result.sql.report.ok, result.sql.report.error
        assert result.python.report.events_sent >= 20, source
        assert canonical(result.sql.bodies) == canonical(result.python.bodies), source
        assert result.sql.report.rejected_by_reason == result.python.report.rejected_by_reason, source
        # The warehouse did the hashing: the read query wraps each match-key column in the dialect's hash.
        [read_sql] = [s for s in result.recorded_sql if SOURCE_ALIAS in s and "limit 1 offset" not in s]
        col = {c.lower(): c for c in result.columns}
        keys = {"email": sql_dialect.hashed_email, "phone": lambda e: sql_dialect.hashed_phone(e, E2E_REGION)}
        if source == "crm":
            keys["external_id"] = sql_dialect.hashed_external_id
        for name, expression in keys.items():
            assert expression(f"{SOURCE_ALIAS}.{quote(col[name])}") in read_sql, (source, name)
        # …and Python never saw a plain email, phone or external id: every row it read (one per person)
        # holds only hashes or NULL where the plain values were.
        key_columns = slice(4, 7 if source == "crm" else 6)  # email, phone (, external_id)
        plain_values = {v.strip().lower() for row in rows for v in row[key_columns] if v and v.strip()} - {HEX_LOWER}
        assert len(result.recorded_rows) == len(rows)
        for row in result.recorded_rows:
            assert not {str(v).strip().lower() for v in row if v is not None} & plain_values


@pytest.mark.xfail(reason="LIMIT (README, Hashing in the warehouse): connector/runner.py _warehouse_hashing + dialects.hashed_email hash a "
                          "comma-separated (or array) email column as one string, while the Python path "
                          "(pii.split_values) sends one hash per address: hash_in_warehouse changes the bodies",
                   strict=True)
def test_hash_in_warehouse_handles_a_comma_separated_email_column(tmp_path: Path) -> None:
    import datetime as dt
    rows = [("P-MULTI", "purchase", NOW - dt.timedelta(days=1), NOW - dt.timedelta(hours=2),
             "a@example.com, B@Example.com", None, None)]
    target = duckdb_target(tmp_path / "project")
    results = run_pairs(target, tmp_path / "project", rows)
    python, in_sql = results["offline"].python, results["offline"].sql
    assert python.events[0]["user"]["email"] == [pii.hash_email("a@example.com"), pii.hash_email("b@example.com")]
    assert canonical(in_sql.bodies) == canonical(python.bodies)
