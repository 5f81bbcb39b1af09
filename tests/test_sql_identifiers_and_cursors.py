"""Config values that reach SQL, on DuckDB and PostgreSQL through the real CLI (issue 16, classes 3 and 9):
generated `state.schema` names are refused (exit 2) or hold the state tables in exactly that schema, and
never run as SQL; a changed cursor column and a text cursor are refused before anything is sent."""

from __future__ import annotations

import datetime as dt
import itertools
import re
import uuid
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings, strategies as st

from cli_helpers import cli
from connector.errors import ConfigError
from connector.state import _V1, _VERSION_TABLE
from warehouse_helpers import Target, fake_tiktok_env, target_for, write_yaml

SETTINGS = settings(max_examples=20, deadline=None, database=None, suppress_health_check=list(HealthCheck))
DIALECTS = ["duckdb", "postgresql"]
SOURCE_ID = "7654321098765432109"
MAPPING = {"fields": {"event": "event_name", "event_id": "order_id", "event_time": "ordered_at",
                      "user.email": "email"}}
ORDERS_DDL = ("create table orders (order_id varchar(40), event_name varchar(40), ordered_at {tz}, "
              "updated_at {tz}, changed_at {tz}, email varchar(200))")
INSERT_ORDER = "insert into orders values (?, 'purchase', ?, ?, ?, ?)"


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def write_config(root: Path, target: Target, syncs: dict[str, Any], state: dict[str, Any] | None) -> None:
    config: dict[str, Any] = {"warehouse": {"url": target.url},
                              "tiktok": {"access_token": "${TIKTOK_ACCESS_TOKEN}", "max_attempts": 2,
                                         "timeout_seconds": 10},
                              "syncs": syncs}
    if state:
        config["state"] = state
    write_yaml(root / "connector.yml", config)


def orders_sync(cursor: str = "updated_at", query: str = "orders.sql") -> dict[str, Any]:
    return {"query": query, "mapping": "orders.yml", "event_source_id": SOURCE_ID, "cursor": cursor,
            "safety_margin_seconds": 0}


def project_on(target: Target, root: Path, rows: int = 1) -> Path:
    target.run(ORDERS_DDL)
    at = now() - dt.timedelta(hours=2)
    with target.session() as con:
        con.executemany(INSERT_ORDER, [(f"ORD-{n}", at, at + dt.timedelta(seconds=n), at, f"c{n}@example.com")
                                       for n in range(1, rows + 1)])
    (root / "queries").mkdir(parents=True, exist_ok=True)
    (root / "queries" / "orders.sql").write_text("select * from orders\n", encoding="utf-8")
    write_yaml(root / "mappings" / "orders.yml", MAPPING)
    write_config(root, target, {"orders": orders_sync()}, target.state)
    return root


def error_line(code: int, out: str, err: str, *fragments: str) -> str:
    assert code == 2, (code, out, err)
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


# ---------------------------------------------------------------- state.schema (class 3)

SCHEMA_NAMES = st.one_of(
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_$]{0,20}", fullmatch=True),
    st.from_regex(r"[a-z][a-z0-9_]{0,8}\.[a-z][a-z0-9_]{0,8}", fullmatch=True),
    st.text(max_size=24),
    st.sampled_from(["st; drop table victim; --", "x.y; drop table victim; --", 'a"; drop table victim; --',
                     "a\"b", "select", "as", "Order", "a$b", "_", "x" * 64, "pg_x", "information_schema",
                     "1abc", "a b", "a-b", "é", "tiktok_state\n", "`x`", "[x]"]),
)
# Names every warehouse must accept: lower case, not reserved.
PLAIN = re.compile(r"[a-z][a-z0-9_]{0,40}")


def is_plain(name: str) -> bool:
    # A plain name the warehouses keep for themselves (any case) is refused too: see identifiers.RESERVED.
    return (bool(PLAIN.fullmatch(name)) and not name.lower().startswith("pg_")
            and name.lower() not in ("information_schema", "pg_catalog", "system", "temp"))


def tables_in(target: Target, schema: str) -> set[str]:
    if target.dialect == "duckdb":
        rows = target.query("select table_name from duckdb_tables() where lower(schema_name) = lower(?)", [schema])
    else:
        rows = target.query("select table_name from information_schema.tables where table_schema = ?",
                            [schema.lower()])
    return {row[0] for row in rows}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_state_schema_is_refused_or_holds_the_tables_and_never_runs_as_sql(dialect, tmp_path, capsys,
                                                                          fake_tiktok) -> None:
    with target_for(dialect, tmp_path) as target:
        root = project_on(target, tmp_path / "project")
        target.run("create table victim (x integer)", "insert into victim values (1)")
        config = yaml.safe_load((root / "connector.yml").read_text())
        # On the shared PostgreSQL server every name gets a prefix of its own, so no example touches a schema
        # another test (or another run) uses; the prefix keeps plain names plain and the rest what they are.
        prefix = f"h3{uuid.uuid4().hex[:6]}_" if dialect == "postgresql" else ""
        created: set[str] = set()

        @SETTINGS
        @given(generated=SCHEMA_NAMES)
        @example(generated="st; drop table victim; --")
        @example(generated="tiktok_state")
        @example(generated="Select")
        def check(generated: str) -> None:
            name = prefix + generated
            config["state"] = {"schema": name}
            write_yaml(root / "connector.yml", config)
            # A real sync: dry runs create no state tables.
            code, out, err = cli(capsys, "sync", "--project", str(root))
            if code == 2:
                error_line(code, out, err, f"{root.resolve() / 'connector.yml'}: state.schema")
                assert not is_plain(name), err
            else:
                assert code == 0, (name, err)
                schema = name.strip() or "main"  # a blank value is no value: the default schema
                created.add(schema)
                assert {"tiktok_watermarks", "tiktok_runs", "tiktok_ledger"} <= tables_in(target, schema)
            assert target.query("select count(*) from victim") == [(1,)]

        try:
            check()
        finally:
            if dialect == "postgresql":
                for name in created:
                    target.run(f'drop schema if exists "{name.lower()}" cascade')
        assert created, "no generated name was accepted"


def test_state_an_unquoted_schema_name_made_before_is_still_found(tmp_path, capsys) -> None:
    """Quoting does not move the tables: the state tables an earlier version made with the name unquoted
    (PostgreSQL folds it to lower case) hold the watermark this version reads."""
    with target_for("postgresql", tmp_path) as target, fake_tiktok_env() as fake:
        schema = f"H3Old_{uuid.uuid4().hex[:6]}"
        root = project_on(target, tmp_path / "project")
        old = [f"create schema {schema}", _VERSION_TABLE.format(p=f"{schema}.tiktok_"),
               *(sql.format(p=f"{schema}.tiktok_") for sql in _V1),
               f"insert into {schema}.tiktok_state_version values (1)",  # V1 tables: later migrations run
               f"insert into {schema}.tiktok_watermarks values ('orders', 'updated_at', '2999-01-01T00:00:00+00:00', "
               "'timestamptz', null, null)"]
        try:
            target.run(*(sql.replace("{", "{{").replace("}", "}}") for sql in old))
            config = yaml.safe_load((root / "connector.yml").read_text())
            config["state"] = {"schema": schema}
            write_yaml(root / "connector.yml", config)
            code, _, err = cli(capsys, "sync", "--project", str(root))
            assert code == 0, err
            assert fake.accepted_event_ids() == []  # ORD-1 is behind the stored watermark
            assert target.query(f"select count(*) from {schema}.tiktok_runs") == [(1,)]
        finally:
            target.run(f"drop schema if exists {schema} cascade")


# ---------------------------------------------------------------- a changed cursor column (class 9)

def watermark_rows(target: Target) -> list[tuple[Any, ...]]:
    return target.query("select sync_name, cursor_column, watermark, watermark_type from tiktok_watermarks")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_changed_cursor_column_is_refused_before_anything_is_sent(dialect, tmp_path, capsys) -> None:
    with target_for(dialect, tmp_path) as target, fake_tiktok_env() as fake:
        root = project_on(target, tmp_path / "project", rows=2)
        code, _, err = cli(capsys, "sync", "--project", str(root))
        assert code == 0, err
        assert sorted(fake.accepted_event_ids()) == ["ORD-1", "ORD-2"]
        before = watermark_rows(target)
        assert [row[1] for row in before] == ["updated_at"]

        at = now() - dt.timedelta(hours=1)
        with target.session() as con:
            con.execute(INSERT_ORDER, ("ORD-3", at, at, at, "c3@example.com"))
        requests = len(fake.requests())
        write_config(root, target, {"orders": orders_sync("changed_at")}, target.state)
        for command in (["sync"], ["sync", "--dry-run"], ["sync", "--test-event-code", "TEST1"],
                        ["backfill", "orders", "--start", "2020-01-01", "--end", "2099-01-01"],
                        ["retry", "orders"]):
            code, out, err = cli(capsys, *command, "--project", str(root))
            error_line(code, out, err, "connector.yml: syncs.orders.cursor", "'updated_at'",
                       "tiktok-connector reset orders")
        assert len(fake.requests()) == requests  # nothing sent
        assert watermark_rows(target) == before  # nor written

        # The same column spelled in another case is the same column.
        write_config(root, target, {"orders": orders_sync("UPDATED_AT")}, target.state)
        code, _, err = cli(capsys, "sync", "--project", str(root))
        assert code == 0, err
        assert sorted(fake.accepted_event_ids()) == ["ORD-1", "ORD-2", "ORD-3"]

        # After a reset the new column starts over.
        write_config(root, target, {"orders": orders_sync("changed_at")}, target.state)
        code, _, err = cli(capsys, "reset", "orders", "--yes", "--project", str(root))
        assert code == 0, err
        code, _, err = cli(capsys, "sync", "--project", str(root))
        assert code == 0, err
        assert [row[1] for row in watermark_rows(target)] == ["changed_at"]


# ---------------------------------------------------------------- text cursors (class 9)

CURSOR_TABLE = "create table {table} (order_id varchar(40), event_name varchar(40), ordered_at {tz}, " \
               "email varchar(200), seq varchar(20))"
CAST_QUERY = "select order_id, event_name, ordered_at, email, cast(seq as bigint) as seq from {table}\n"
# Types the warehouse does not report as text (the connector learns the kind from the first value).
UNREPORTED_TEXT = {"duckdb": "cast(seq as json)", "postgresql": "cast(seq as char(20))"}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_text_cursor_is_refused_and_its_cast_sends_every_row(dialect, tmp_path, capsys) -> None:
    """Numbers kept as text sort as text ('10' < '9'): refused, nothing sent. Cast in the query as the hint
    says, every row is sent, also rows whose text sorts below the watermark's."""
    root = tmp_path / "project"
    (root / "queries").mkdir(parents=True)
    write_yaml(root / "mappings" / "orders.yml", MAPPING)
    with target_for(dialect, tmp_path) as target, fake_tiktok_env() as fake:
        numbers = itertools.count(1)

        def sync(name: str, query: str) -> tuple[int, str, str]:
            (root / "queries" / f"{name}.sql").write_text(query, encoding="utf-8")
            write_config(root, target, {name: {**orders_sync("seq", f"{name}.sql")}}, target.state)
            return cli(capsys, "sync", "--project", str(root))

        def insert(table: str, values: list[int]) -> None:
            at = now() - dt.timedelta(hours=2)
            with target.session() as con:
                con.executemany(f"insert into {table} values (?, 'purchase', ?, ?, ?)",
                                [(f"{table}-{v}", at, f"{v}@example.com", str(v)) for v in values])

        @settings(SETTINGS, max_examples=5)
        @given(first=st.lists(st.integers(min_value=0, max_value=10 ** 6), min_size=1, max_size=4, unique=True),
               steps=st.lists(st.integers(min_value=1, max_value=10 ** 7), min_size=1, max_size=4, unique=True))
        @example(first=[9], steps=[1])  # '10' sorts before '9'
        @example(first=[5, 99], steps=[1, 901])  # '100' and '1000' sort before '99'
        def check(first: list[int], steps: list[int]) -> None:
            n = next(numbers)
            table, name = f"t{n}", f"s{n}"
            target.run(CURSOR_TABLE.format(table=table, tz="{tz}"))
            insert(table, first)
            requests = len(fake.requests())
            code, out, err = sync(name, f"select * from {table}\n")
            error_line(code, out, err, f"syncs.{name}.cursor", "'seq' is text", "cast(seq as")
            assert len(fake.requests()) == requests

            code, _, err = sync(name, CAST_QUERY.format(table=table))
            assert code == 0, err
            second = [max(first) + step for step in steps]
            insert(table, second)
            code, _, err = sync(name, CAST_QUERY.format(table=table))
            assert code == 0, err
            sent = {i for i in fake.accepted_event_ids() if i.startswith(f"{table}-")}
            assert sent == {f"{table}-{v}" for v in first + second}

        check()

        # A type the warehouse does not name: the first value is looked at before anything is sent.
        target.run(CURSOR_TABLE.format(table="unreported", tz="{tz}"))
        insert("unreported", [9, 10])
        requests = len(fake.requests())
        query = f"select order_id, event_name, ordered_at, email, {UNREPORTED_TEXT[dialect]} as seq from unreported\n"
        code, out, err = sync("unreported", query)
        error_line(code, out, err, "syncs.unreported.cursor", "'seq' is text")
        assert len(fake.requests()) == requests


def test_a_watermark_stored_as_text_is_read_as_the_cast_column(make_project, fake_tiktok, order) -> None:
    """A text cursor of an earlier version left an ISO text watermark: once the query casts the column, the
    sync goes on from it; a watermark of a kind the column cannot hold is refused."""
    at = dt.datetime(2024, 6, 1, 12, tzinfo=dt.timezone.utc)
    rows = [order(n, now=at) for n in (1, 2, 3)]
    project = make_project(rows)
    assert project.run(now=at).events_sent == 3
    middle = rows[1]["updated_at"].astimezone(dt.timezone.utc).replace(tzinfo=None).isoformat(sep=" ")
    con = duckdb.connect(str(project.db))
    con.execute("update tiktok_watermarks set watermark = ?, watermark_type = 'str'", [middle])
    con.execute("delete from tiktok_ledger where event_id = 'ORD-00001'")  # would be re-sent if re-read
    con.close()
    report = project.run(now=at)
    assert report.ok, report.error
    assert report.rows_read == 2 and report.events_sent == 0  # from the watermark: rows 2 and 3, both sent

    con = duckdb.connect(str(project.db))
    con.execute("update tiktok_watermarks set watermark = '12', watermark_type = 'int'")
    con.close()
    with pytest.raises(ConfigError) as refused:
        project.run(now=at)
    assert "syncs.orders.cursor" in str(refused.value) and "is int" in str(refused.value)
    assert "reset orders" in str(refused.value)
