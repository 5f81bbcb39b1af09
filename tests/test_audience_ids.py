"""Audience identifiers (connector.audience_ids): normalisation and hashing per id type as the audiences
contract says, the same in SQL on DuckDB, PostgreSQL and Snowflake (fakesnow), and the member key, whose
text form must not depend on the warehouse.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import duckdb
import pytest
from hypothesis import given, settings, strategies as st

from connector.audience_ids import (
    ID_TYPE_NAMES, IdentifierHasher, hash_device_id, hash_email, hash_phone, id_schema, id_type, member_key,
    member_key_sql, schema_of,
)
from connector.dialects import Dialect

from warehouse_helpers import DIALECTS, Target, target_for

pytest.importorskip("fakesnow")

IDFA = "6D92078A-8246-4BA4-AE5B-76104861E7DC"
GAID = "38400000-8cf0-11bd-b23e-10b96e40000d"
HEX64 = "9F7EC22D72092CD3C0B58726ED9C2D91B92E51A3F29837508FB2948BB22DD2FD"
HEX32 = "0CC175B9C0F1B6A831C399E269772661"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


# (id type, raw value, region, phone format, expected hash): the contract's table, literally.
EXPECTED = [
    ("EMAIL_SHA256", " ALICE_abc@gmail.com ", None, "digits", sha256("alice_abc@gmail.com")),
    ("EMAIL_SHA256", "\tTabbed.User+tag@Example.com\n", None, "digits", sha256("tabbed.user+tag@example.com")),
    ("EMAIL_SHA256", "no-at-sign.example.com", None, "digits", None),
    ("EMAIL_SHA256", "   ", None, "digits", None),
    ("EMAIL_SHA256", HEX64, None, "digits", HEX64.lower()),
    ("EMAIL_SHA256", HEX64[:63], None, "digits", None),
    ("PHONE_SHA256", "(+1)2133734253", None, "digits", sha256("12133734253")),  # no '+', TikTok's 2025 form
    ("PHONE_SHA256", "(+1)2133734253", None, "e164_plus", sha256("+12133734253")),  # the Events API form
    ("PHONE_SHA256", "+1 213-373-4253", None, "digits", sha256("12133734253")),
    ("PHONE_SHA256", "0012133734253", None, "digits", sha256("12133734253")),
    ("PHONE_SHA256", "(213) 373-4253", "US", "digits", sha256("12133734253")),
    ("PHONE_SHA256", "020 7946 0958", "GB", "digits", sha256("442079460958")),
    ("PHONE_SHA256", "+44 (0)20 7946 0958", None, "e164_plus", sha256("+442079460958")),
    ("PHONE_SHA256", f" {HEX64} ", None, "digits", HEX64.lower()),
    ("PHONE_SHA256", "not a phone", "US", "digits", None),
    ("PHONE_SHA256", "", "US", "digits", None),
    ("IDFA_SHA256", IDFA, None, "digits", sha256(IDFA.lower())),
    ("IDFA_SHA256", f"  {IDFA.lower()}\t", None, "digits", sha256(IDFA.lower())),
    ("IDFA_SHA256", "00000000-0000-0000-0000-000000000000", None, "digits", None),  # tracking denied
    ("IDFA_SHA256", IDFA.replace("-", ""), None, "digits", None),  # not a UUID, not a SHA-256
    ("IDFA_SHA256", HEX64, None, "digits", HEX64.lower()),
    ("IDFA_SHA256", "not-an-idfa", None, "digits", None),
    ("AAID_SHA256", GAID.upper(), None, "digits", sha256(GAID)),
    ("IDFA_MD5", IDFA, None, "digits", md5(IDFA.lower())),
    ("IDFA_MD5", HEX32, None, "digits", HEX32.lower()),
    ("IDFA_MD5", HEX64, None, "digits", None),  # a SHA-256 is not an MD5
    ("AAID_MD5", f" {GAID} ", None, "digits", md5(GAID)),
    ("AAID_MD5", "", None, "digits", None),
]


@pytest.mark.parametrize(("name", "raw", "region", "phone_format", "expected"), EXPECTED,
                         ids=[f"{c[0]}:{c[1]!r}:{c[2]}:{c[3]}" for c in EXPECTED])
def test_python_hash_follows_the_contract(name: str, raw: str, region: str | None, phone_format: str,
                                          expected: str | None) -> None:
    assert IdentifierHasher(region, phone_format).hash(name, raw) == expected


def test_numbers_hash_as_their_digits() -> None:
    # A phone kept in a BIGINT or NUMBER column arrives as int or Decimal.
    assert hash_phone(12133734253) == hash_phone(Decimal("12133734253")) == sha256("12133734253")
    assert hash_email(None) is None and hash_phone(None) is None and hash_device_id(None) is None
    assert hash_device_id(True) is None


def test_id_schema_has_one_stable_order() -> None:
    assert schema_of(["phone", "email"]) == ("EMAIL_SHA256", "PHONE_SHA256")
    assert schema_of(["gaid", "idfa", "email"], "md5") == ("EMAIL_SHA256", "IDFA_MD5", "AAID_MD5")
    assert id_type("gaid").name == "AAID_SHA256" and id_type("email", "md5").name == "EMAIL_SHA256"
    with pytest.raises(ValueError, match="unknown identifier"):
        id_type("twitter")
    with pytest.raises(ValueError, match="unknown id types"):
        id_schema(["EMAIL_MD5"])
    with pytest.raises(ValueError, match="unknown phone format"):
        IdentifierHasher(phone_format="e164")


@settings(max_examples=40, deadline=None)
@given(st.permutations(ID_TYPE_NAMES), st.integers(min_value=1, max_value=len(ID_TYPE_NAMES)))
def test_id_schema_order_does_not_depend_on_the_mapping_order(names: list[str], count: int) -> None:
    chosen = names[:count]
    assert id_schema(chosen) == tuple(n for n in ID_TYPE_NAMES if n in chosen)
    assert id_schema(reversed(chosen)) == id_schema(chosen)


# ---------------------------------------------------------------- the same in SQL

SQL_CASES = EXPECTED + [
    ("EMAIL_SHA256", None, None, "digits", None),
    ("PHONE_SHA256", None, "US", "digits", None),
    ("IDFA_SHA256", None, None, "digits", None),
    ("PHONE_SHA256", "+1 213 373 4253\u00a0", None, "digits", sha256("12133734253")),
    ("AAID_SHA256", "\u3000" + GAID, None, "digits", sha256(GAID)),
]


def sql_literal(value: str | None) -> str:
    return "null" if value is None else "'" + value.replace("'", "''") + "'"


def _hashes_in(target: Target) -> list[Any]:
    dialect = Dialect(target.dialect)
    target.run("create table ids (n integer, raw varchar(300))")
    with target.session() as con:
        con.execute("insert into ids (n, raw) values " +
                    ", ".join(f"({n}, {sql_literal(c[1])})" for n, c in enumerate(SQL_CASES)))
        select = ", ".join(f"case when n = {n} then {IdentifierHasher(c[2], c[3]).sql(dialect, c[0], 'raw')} end"
                           for n, c in enumerate(SQL_CASES))
        rows = sorted(con.query(f"select n, {select} from ids"))
    return [row[1 + n] for n, row in enumerate(rows)]


_SQL_RESULTS: dict[str, list[Any]] = {}


@pytest.fixture(scope="module")
def sql_hashes(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], list[Any]]:
    def get(dialect: str) -> list[Any]:
        if dialect not in _SQL_RESULTS:
            with target_for(dialect, tmp_path_factory.mktemp(f"ids-{dialect}")) as target:
                _SQL_RESULTS[dialect] = _hashes_in(target)
        return _SQL_RESULTS[dialect]
    return get


@pytest.mark.parametrize("dialect", DIALECTS)
def test_sql_hash_equals_python_hash(dialect: str, sql_hashes: Callable[[str], list[Any]]) -> None:
    python = [IdentifierHasher(c[2], c[3]).hash(c[0], c[1]) for c in SQL_CASES]
    assert python[:len(EXPECTED)] == [c[4] for c in EXPECTED]
    mismatches = [(c[:4], sql, py) for c, sql, py in zip(SQL_CASES, sql_hashes(dialect), python) if sql != py]
    assert not mismatches


# Characters a generated email or device id may hold: ASCII, some Latin letters, and the whitespace both
# str.strip() and the SQL trim remove. (Case folding beyond these differs between Python and SQL engines.)
_ALPHABET = st.sampled_from(list("abcXYZ019@.+-_ ") + ["\t", "\n", "\u00a0", "\u3000", "é", "Ö"])
_UUIDS = st.uuids().map(str).map(lambda u: u.upper() if len(u) % 2 else u)


@settings(max_examples=30, deadline=None)
@given(emails=st.lists(st.text(_ALPHABET, max_size=20), min_size=1, max_size=20),
       devices=st.lists(st.one_of(_UUIDS, st.text(_ALPHABET, max_size=40),
                                  st.uuids().map(lambda u: " " + str(u) + "\t")), min_size=1, max_size=20))
def test_generated_emails_and_device_ids_hash_alike_in_duckdb(emails: list[str], devices: list[str]) -> None:
    con = duckdb.connect()
    dialect, hasher = Dialect("duckdb"), IdentifierHasher()
    for name, values in (("EMAIL_SHA256", emails), ("IDFA_SHA256", devices), ("AAID_MD5", devices)):
        got = [row[0] for row in con.execute(
            f"select {hasher.sql(dialect, name, 'v')} from unnest(?) with ordinality as t(v, i) order by i",
            [values]).fetchall()]
        assert got == [hasher.hash(name, v) for v in values], name


# ---------------------------------------------------------------- the member key

# (column type per warehouse, values): the member id's text must be the same everywhere.
MEMBER_COLUMNS = {
    "int_id": ({"duckdb": "bigint", "postgresql": "bigint", "snowflake": "number(38, 0)"},
               [0, 42, -7, 9007199254740993, None]),
    "dec_id": ({"duckdb": "decimal(20, 2)", "postgresql": "numeric(20, 2)", "snowflake": "number(20, 2)"},
               [Decimal("5.00"), Decimal("1.50"), Decimal("-0.50"), Decimal("12345678901234567.00"), None]),
    "big_id": ({"duckdb": "decimal(38, 0)", "postgresql": "numeric(38, 0)", "snowflake": "number(38, 0)"},
               # fakesnow stores NUMBER(38, 0) as BIGINT, so no value beyond 2**63 here
               [Decimal("923456789012345678"), Decimal(42), Decimal(0), Decimal(-1), None]),
    "text_id": ({"duckdb": "varchar", "postgresql": "varchar(80)", "snowflake": "varchar(80)"},
                ["abc", " abc\t", "ABC", "5.00", "Zoë 李", "", "  ", "007", "a@b.co", None]),
}


def _member_keys_in(target: Target) -> dict[str, list[str | None]]:
    dialect = Dialect(target.dialect)
    out = {}
    for column, (types, values) in MEMBER_COLUMNS.items():
        target.run(f"create table m_{column} (n integer, v {types[target.dialect]})")
        with target.session() as con:
            con.executemany(f"insert into m_{column} (n, v) values (?, ?)", list(enumerate(values)))
            rows = con.query(f"select n, {member_key_sql(dialect, 'v')} from m_{column} order by n")
        out[column] = [row[1] for row in rows]
    return out


@pytest.fixture(scope="module")
def member_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, list[str | None]]]:
    results = {}
    for dialect in DIALECTS:
        try:
            with target_for(dialect, tmp_path_factory.mktemp(f"keys-{dialect}")) as target:
                results[dialect] = _member_keys_in(target)
        except pytest.skip.Exception:
            continue
    return results


def test_member_key_text_is_the_same_on_every_warehouse_and_in_python(member_keys: dict) -> None:
    assert "duckdb" in member_keys and "snowflake" in member_keys
    for column, (_, values) in MEMBER_COLUMNS.items():
        python = [member_key(v) for v in values]
        for dialect, keys in member_keys.items():
            assert keys[column] == python, (dialect, column)
    assert member_key(Decimal("5.00")) == member_key(5) == member_key("5.00") == sha256("5")
    assert member_key(Decimal("1.50")) == sha256("1.50")  # a fraction is kept as the warehouse writes it
    assert member_key(" abc\t") == member_key("abc") != member_key("ABC")
    assert member_key("") is None and member_key("  ") is None and member_key(None) is None


@settings(max_examples=30, deadline=None)
@given(st.lists(st.one_of(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                                  max_size=30),
                          st.integers(min_value=-2**63, max_value=2**63 - 1).map(str)), min_size=1, max_size=25))
def test_generated_member_ids_key_alike_in_duckdb_and_python(ids: list[str]) -> None:
    con = duckdb.connect()
    got = [row[0] for row in con.execute(
        f"select {member_key_sql(Dialect('duckdb'), 'v')} from unnest(?) with ordinality as t(v, i) order by i",
        [ids]).fetchall()]
    assert got == [member_key(v) for v in ids]
    assert all(k is None or (len(k) == 64 and k == k.lower()) for k in got)
