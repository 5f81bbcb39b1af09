"""Events rendered by DuckDB and PostgreSQL (connector/sql_events.py) must be exactly the events Python builds.

Every row of an adversarial table goes through both: where SQL renders a row, its JSON must parse to
Python's body (same values, same JSON types) with the same id, time and event source id; where it does
not, the Python builder decides. Both paths must be exercised, or the test proves nothing. The tables are
real: a DuckDB file, and a table in a fresh PostgreSQL schema (skipped when PostgreSQL is not reachable)."""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import orjson
import phonenumbers
import pytest
from hypothesis import given, settings, strategies as st
from phonenumbers import PhoneNumberFormat, PhoneNumberType
from warehouse_helpers import (
    SOURCE_ID, Target, duckdb_rendering, fake_tiktok_env, open_recording, postgres_target, rendered_rows, write_project)

from connector import query as sqlq, sql_phones
from connector.config import load_project
from connector.dialects import Dialect
from connector.events import Event, EventBuilder
from connector.mapping import FieldSpec, Mapping, compile_mapping, find_column
from connector.report import SyncReport
from connector.rows import grouped
from connector.runner import RunOptions, run_sync
from connector.sql_events import RenderedEvents, RenderedItems, rendered_select
from connector.sql_functions import FUNCTIONS
from connector.timeutil import attribution_window
from connector.warehouse import DuckDBWarehouse, Warehouse, open_warehouse

NOW = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.timezone.utc)
HEX = "A" * 32 + "b" * 32

EMAILS = [None, "", "  ", "Jane.Doe@Example.COM", " jane@example.com\t", "\u00a0jane@example.com\u3000",
          "a@b.c,d@e.f", "no-at-sign", HEX, " " + HEX.lower() + " ", "ünï@exämple.com", "x@y.z\n", "@"]
PHONES = [None, "", "+14155550101", " +14155550101 ", "+44 20 7946 0958", "+4402079460958", "+390612345678",
          "4155550101", "+1 (415) 555-0101", "+1415555010", "+1415", "0044 20 7946 0958", "+1415555\u0661",
          HEX, "+14155550101,+14155550102", "\t+14155550101", "+10155550101", "+70123456789"]
VALUES = [None, Decimal("0"), Decimal("12.50"), Decimal("100.00"), Decimal("-1.00"), Decimal("0.10"),
          Decimal("123456789.99"), Decimal("1E+15")]
CURRENCY = [None, "USD", " usd ", "usd", "XXX", "", "ınr", "Eur\u00a0"]
EVENTS = [None, "", "Purchase", " Purchase ", "purchase", "PURCHASE", "CompletePayment", "order_completed",
          "bogus", "Subscribe", "ViewContent\t", "NotAThing"]
TIMES = [NOW - dt.timedelta(days=1), NOW - dt.timedelta(days=29), NOW + dt.timedelta(days=2), None]
IDS = ["ORD-1", " ORD-2 ", "", None, "\u3000ORD-3", "ÖRD-4", 'ORD"5\\x']


def _rows() -> list[tuple]:
    rows = []
    combos = itertools.product(EMAILS, PHONES)
    for n, (email, phone) in enumerate(combos):
        rows.append((IDS[n % len(IDS)] if n % 5 == 0 else f"E{n}", EVENTS[n % len(EVENTS)],
                     TIMES[n % len(TIMES)] if n % 3 == 0 else NOW - dt.timedelta(hours=n),
                     None if n % 97 == 0 else NOW - dt.timedelta(seconds=n), email, phone,
                     VALUES[n % len(VALUES)], CURRENCY[n % len(CURRENCY)], f"O{n}" if n % 4 else f" o{n}\t",
                     None if n % 7 == 0 else "7654321098765432109"))
    valid = itertools.product(["Purchase", " purchase", "order_completed", "CompletePayment"],
                              [" Jane@Example.com ", None, HEX], ["+14155550199", None, " +447946095800 "],
                              [Decimal("9.99"), Decimal("100.00"), None], ["USD", " eur "])
    for n, (event, email, phone, value, currency) in enumerate(valid):  # rows SQL should render
        if email or phone:
            rows.append((f"C{n}", event, NOW - dt.timedelta(hours=1), NOW, email, phone, value, currency,
                         f"CO{n}" if n % 2 else None, "7654321098765432109"))
    # Otherwise valid rows with whitespace SQL's trim keeps (a tab, a no-break space…) on one side of one value,
    # or on both (DuckDB's trim() keeps control whitespace, NEL and the line separators: only the trim of
    # every whitespace character removes them, from both ends).
    lead = ("L", "Purchase", NOW - dt.timedelta(hours=1), NOW, "jane@example.com", "+14155550199", Decimal("9.99"),
            "USD", "LO", "7654321098765432109")
    for column in (0, 1, 4, 5, 7, 8):
        for n, (before, after) in enumerate((("\t", ""), ("\u00a0", ""), ("", "\u2003"), ("\u3000", ""),
                                             ("\t", "\n"), ("\x85", "\u2028"), ("\x1f \u00a0", "\u3000\x1c"))):
            row = list(lead)
            row[0] = f"L{column}-{n}"
            row[column] = before + str(row[column]) + after
            rows.append(tuple(row))
    return rows


TABLE_T = ("create table t (event_id varchar, event varchar, timestamp timestamptz, updated_at timestamptz, "
           "email varchar, phone varchar, value decimal(18, 2), currency varchar, order_id varchar, "
           "event_set_id varchar)")
COLUMNS = ("event_id", "event", "timestamp", "updated_at", "email", "phone", "value", "currency", "order_id",
           "event_set_id")
MAPPING = Mapping("test.yml", tuple(FieldSpec(path, column) for path, column in (
    ("event", "event"), ("event_id", "event_id"), ("event_time", "timestamp"), ("event_source_id", "event_set_id"),
    ("user.email", "email"), ("user.phone", "phone"), ("properties.value", "value"),
    ("properties.currency", "currency"), ("properties.order_id", "order_id"))),
    events={"order_completed": "Purchase", "bogus": "NotAnEvent"})
WAREHOUSES = ("duckdb", "postgresql")
DEFAULT_TYPES = {"event_id": "varchar", "event": "varchar", "timestamp": "timestamptz", "updated_at": "timestamptz",
                 "email": "varchar", "phone": "varchar", "value": "decimal(18, 2)", "currency": "varchar",
                 "order_id": "varchar", "event_set_id": "varchar"}


def _postgres_type(kind: str) -> str:
    return {"double": "double precision"}.get(kind, kind.replace("decimal", "numeric"))


class Tables:
    """Tables in a fresh DuckDB file or PostgreSQL schema, and the connector's warehouse reading them."""

    def __init__(self, dialect: str, root: Path, target: Target | None = None) -> None:
        self.dialect, self.root, self.target = dialect, root, target

    def _connect(self) -> Any:
        if self.target is not None:
            return self.target.connect()
        con = duckdb.connect(str(self.root / "wh.duckdb"))
        con.execute("set TimeZone = 'UTC'")
        return con

    def ddl_type(self, kind: str) -> str:
        return _postgres_type(kind) if self.dialect == "postgresql" else kind

    def create(self, rows: list[dict[str, Any]], types: dict[str, str] | None = None, name: str = "t") -> None:
        """Table `name` (replaced) with COLUMNS of DEFAULT_TYPES but `types`, holding `rows`."""
        kinds = {**DEFAULT_TYPES, **(types or {})}
        mark = "%s" if self.target is not None else "?"
        con = self._connect()
        try:
            cursor = con.cursor()
            cursor.execute(f"drop table if exists {name}")
            cursor.execute(f"create table {name} ({', '.join(f'{c} {self.ddl_type(kinds[c])}' for c in COLUMNS)})")
            # cast from text: HUGEINT/UBIGINT values do not bind as Python ints
            insert = (f"insert into {name} values "
                      f"({', '.join(f'cast({mark} as {self.ddl_type(kinds[c])})' for c in COLUMNS)})")
            if rows:
                cursor.executemany(insert, [[None if row[c] is None else row[c] if isinstance(row[c], (dt.date, float))
                                             else str(row[c]) for c in COLUMNS] for row in rows])
            if self.target is not None:
                con.commit()
        finally:
            con.close()

    def open(self) -> Warehouse:
        if self.target is not None:
            return open_warehouse(self.target.url)
        return DuckDBWarehouse(str(self.root / "wh.duckdb"))


@contextmanager
def _tables(dialect: str, root: Path) -> Iterator[Tables]:
    if dialect == "duckdb":
        yield Tables(dialect, root)
        return
    with postgres_target() as target:  # skips the test when PostgreSQL is not reachable
        yield Tables(dialect, root, target)


@pytest.fixture(params=WAREHOUSES)
def tables(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Tables]:
    with _tables(request.param, tmp_path) as made:
        yield made


def _rendering_plan(warehouse: Warehouse, region: str | None = None, hash_in_warehouse: bool = False,
                    default_source: str | None = None) -> tuple[sqlq.SelectPlan, EventBuilder, RenderedEvents]:
    """Table `t` planned as the runner plans it: the select plan with the warehouse's rendering, the Python
    builder over the same rows, and the renderer that picks between them."""
    with warehouse.stream("select * from t where 1 = 0", {}, 1) as probe:
        columns, kinds = probe.columns, probe.kinds
    compiled = compile_mapping(MAPPING, list(columns), "offline")
    cursor_index = find_column(columns, "updated_at")
    dialect = Dialect(warehouse.dialect)
    hashing = {"user.email": dialect.hashed_email,
               "user.phone": lambda c: dialect.hashed_phone(c, region)} if hash_in_warehouse else None
    plan = sqlq.plan_select(compiled, columns, kinds, cursor_index, dialect, hashing)
    window = attribution_window(NOW, 28, 300)
    builder = EventBuilder(plan.mapping, "offline", default_source, window, plan.cursor_index, region)
    fast = rendered_select(compiled, columns, kinds, cursor_index, "offline", default_source, window, builder,
                           dialect)
    assert fast is not None
    renderer = RenderedEvents(builder, len(plan.items), plan.cursor_index, default_source)
    return plan.rendering(fast.items, fast.params, fast.prepared), builder, renderer


def _same_json_types(a: object, b: object) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_json_types(a[k], b[k]) for k in a)  # type: ignore[union-attr]
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_json_types(x, y) for x, y in zip(a, b))  # type: ignore[arg-type]
    return True


def _both_paths(tables: Tables, region: str | None = None, hash_in_warehouse: bool = False,
                default_source: str | None = None) -> tuple[int, int]:
    """Every row of table `t` through the warehouse's rendering and through the Python builder: a row SQL
    renders must be the very event Python builds. Returns (rows rendered, rows left to Python)."""
    warehouse = tables.open()
    try:
        plan, builder, renderer = _rendering_plan(warehouse, region, hash_in_warehouse, default_source)
        rendered = fallback = 0
        for row in rendered_rows(warehouse, plan):
            python = builder.build([row])
            got = renderer.build([[row]])[0]
            if row[len(plan.items) - 4] is None:
                fallback += 1
                assert got == python  # Python decides: the same event or the same reject
                continue
            rendered += 1
            assert isinstance(python, Event), (row, python)
            assert isinstance(got, Event)
            # DuckDB hands the JSON over as its UTF-8 bytes: no decoding and re-encoding per event
            assert type(got.body) is (bytes if warehouse.dialect == "duckdb" else str), type(got.body)
            body = orjson.loads(got.body)
            assert body == python.body and _same_json_types(body, python.body), (row, body, python.body)
            assert (got.event_id, got.event_time, got.event_source_id, got.cursor) == \
                (python.event_id, python.event_time, python.event_source_id, python.cursor)
        return rendered, fallback
    finally:
        warehouse.close()


@pytest.mark.parametrize("region", [None, "GB"])
@pytest.mark.parametrize("hash_in_warehouse", [False, True])
@pytest.mark.parametrize("default_source", [None, "1234567890"])
def test_sql_rendered_events_equal_python_built_events(tables, region, hash_in_warehouse, default_source) -> None:
    tables.create([dict(zip(COLUMNS, row)) for row in _rows()])
    rendered, fallback = _both_paths(tables, region, hash_in_warehouse, default_source)
    total = len(_rows())
    assert rendered + fallback == total
    assert rendered >= total // 5 and fallback >= total // 5, (rendered, fallback)  # both paths ran


# ---------------------------------------------------------------- poison rows: other column types, both paths

# Column types SQL renders from (ids as text or integers, times as integers in any unit or timestamps, values
# as integers, doubles or decimals), with the values that must never be rendered differently from Python.
TYPED_COLUMNS = {
    "duckdb": {
        "event_id": ["varchar", "bigint", "hugeint"],
        "timestamp": ["timestamptz", "timestamp", "date", "bigint", "hugeint", "ubigint"],
        "value": ["decimal(18, 2)", "double", "bigint", "hugeint", "decimal(38, 0)"],
    },
    "postgresql": {  # PostgreSQL's integers are at most 64 bits; a REAL reaches Python as its shortest text
        "event_id": ["varchar", "text", "bigint", "integer"],
        "timestamp": ["timestamptz", "timestamp", "date", "bigint", "integer"],
        "value": ["decimal(18, 2)", "double", "real", "bigint", "integer", "decimal(38, 0)"],
    },
}
T_SECONDS = int(NOW.timestamp())
INT_RANGES = {"bigint": (-2 ** 63, 2 ** 63 - 1), "hugeint": (-2 ** 127 + 1, 2 ** 127 - 1), "ubigint": (0, 2 ** 64 - 1),
              "integer": (-2 ** 31, 2 ** 31 - 1)}
UNIT_FACTORS = (1, 1_000, 1_000_000, 1_000_000_000)


def _in_range(values: list[Any], kind: str) -> list[Any]:
    low, high = INT_RANGES.get(kind, (None, None))
    return [value for value in values if low is None or low <= value <= high]


def _valid_row(n: int, types: dict[str, str]) -> dict[str, Any]:
    times = _in_window_times(types.get("timestamp", "timestamptz"))
    return {"event_id": f"V{n}" if types.get("event_id", "varchar") in ("varchar", "text") else 900_000 + n,
            "event": "Purchase", "timestamp": times[n % len(times)],
            "updated_at": NOW, "email": f"u{n}@example.com", "phone": "+14155550199",
            "value": 10 if types.get("value") in INT_RANGES else Decimal("9.99"),  # DuckDB rounds it to 10 too
            "currency": "USD", "order_id": f"O{n}", "event_set_id": "7654321098765432109"}


def _in_window_times(kind: str) -> list[Any]:
    """A time of the attribution window as each column type holds it (integers in every unit)."""
    seconds = T_SECONDS - 7200
    if kind in INT_RANGES:
        return _in_range([seconds * unit + unit // 3 for unit in UNIT_FACTORS], kind)
    if kind == "date":
        return [NOW.date() - dt.timedelta(days=1)]
    return [NOW - dt.timedelta(hours=2, microseconds=1)]


def _poison(column: str, kind: str, dialect: str = "duckdb") -> list[Any]:
    """The issue's values, for one column of one type."""
    if column == "event_id":
        if kind in ("varchar", "text"):
            from connector.values import MAX_ID_LENGTH
            return ["x" * MAX_ID_LENGTH, "y" * (MAX_ID_LENGTH + 1), "é" * (MAX_ID_LENGTH // 2 + 1), "z" * 100_000,
                    "é" * MAX_ID_LENGTH, "", " "]
        return _in_range([0, -1, 2 ** 31 - 1, -2 ** 31, 2 ** 63 - 1, -2 ** 63]
                         + ([2 ** 127 - 1, -2 ** 127 + 1] if kind == "hugeint" else []), kind)
    if column == "timestamp":
        if kind in INT_RANGES:
            extremes = [0, 1, 2 ** 63 - 1, 253_402_300_799, 253_402_300_800, 10 ** 18, 10 ** 19 - 1]
            if kind != "ubigint":
                extremes += [-1, -2 ** 63, -62_135_596_800, -62_135_596_801, -(T_SECONDS - 7200) * 1000]
            if kind == "hugeint":
                extremes += [2 ** 127 - 1, -2 ** 127 + 1, 253_402_300_800 * 10 ** 9, 253_402_300_800 * 10 ** 9 - 1]
            if kind == "ubigint":
                extremes += [2 ** 64 - 1]
            return _in_range(extremes + [2 ** 31 - 1, -2 ** 31], kind)
        first = dt.date(1, 1, 1) if kind == "date" else dt.datetime(1, 1, 1, tzinfo=dt.timezone.utc)
        last = dt.date(9999, 12, 31) if kind == "date" else dt.datetime(9999, 12, 31, 23, 59, 59, 999999,
                                                                          tzinfo=dt.timezone.utc)
        if kind == "timestamp":
            first, last = first.replace(tzinfo=None), last.replace(tzinfo=None)
        infinite = ["infinity", "-infinity"] if dialect == "postgresql" else []  # PostgreSQL's own times
        return [first, last, NOW + dt.timedelta(days=1), NOW - dt.timedelta(days=30), *infinite]
    if column == "value":
        if kind == "double":
            return [float("nan"), float("inf"), -float("inf"), 2.0 ** 63, 2.0 ** 63 - 1024, 1e300, -0.0, 1e-300,
                    9007199254740993.0, 0.1, 1 / 3, 123456.789]
        if kind == "real":  # doubles as Python reads them: 0.1 is not the REAL 0.1 widened
            return [float("nan"), float("inf"), 2.0 ** 63, 2.0 ** 62, 3.4e38, -0.0, 1e-40, 0.1, 1 / 3, 16777217.0,
                    123456.789, 9.99]
        if kind in ("bigint", "hugeint", "integer", "decimal(38, 0)"):
            return _in_range([2 ** 63 - 1, 2 ** 31 - 1, -1, 0] + ([2 ** 63, 2 ** 126] if kind == "hugeint" else []) +
                             ([10 ** 37, 2 ** 63] if kind == "decimal(38, 0)" else []), kind)
        return [Decimal("-0.01"), Decimal("9999999999999999.99")] + (["NaN"] if dialect == "postgresql" else [])
    raise AssertionError(column)


@pytest.mark.parametrize(("dialect", "column", "kind"), [(d, c, k) for d, typed in TYPED_COLUMNS.items()
                                                         for c, kinds in typed.items() for k in kinds])
def test_poison_values_of_every_column_type_render_as_python_builds_them(tmp_path, dialect: str, column: str,
                                                                         kind: str) -> None:
    values = _poison(column, kind, dialect) + (_in_window_times(kind) if column == "timestamp" else [])
    rows = [_valid_row(n, {column: kind}) for n in range(3)]
    rows += [{**_valid_row(10 + n, {column: kind}), column: value} for n, value in enumerate(values)]
    with _tables(dialect, tmp_path) as tables:
        tables.create(rows, {column: kind})
        rendered, fallback = _both_paths(tables)
    assert rendered + fallback == len(rows)
    assert rendered >= 3, (rendered, fallback)  # the valid rows at least
    if column == "timestamp" and kind in INT_RANGES:
        assert rendered >= 3 + len(_in_window_times(kind))  # a time in any unit, inside the window, is rendered
    if kind == "real":
        assert rendered >= 3 + 4, (rendered, fallback)  # 2^62, 0.1, 1/3…: a REAL is rendered as Python reads it


@st.composite
def _typed_rows(draw: st.DrawFn, dialect: str = "duckdb") -> tuple[dict[str, str], list[dict[str, Any]]]:
    types = {column: draw(st.sampled_from(kinds)) for column, kinds in TYPED_COLUMNS[dialect].items()}
    text = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=12)  # DuckDB text is UTF-8
    long_text = st.builds(lambda c, n: c * n, st.sampled_from(["a", "é", " ", "7"]), st.integers(240, 1100))
    generated = {
        "event_id": (text | long_text | st.integers(-2 ** 63, 2 ** 63 - 1))
        if types["event_id"] in ("varchar", "text") else st.integers(*INT_RANGES[types["event_id"]]),
        "timestamp": st.sampled_from(_in_window_times(types["timestamp"])
                                     + _poison("timestamp", types["timestamp"], dialect))
        | (st.integers(*INT_RANGES[types["timestamp"]]) if types["timestamp"] in INT_RANGES
           else st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30))
           .map(lambda at: at.date() if types["timestamp"] == "date" else at)),
        "value": {"double": st.floats(), "real": st.floats(width=32), "bigint": st.integers(*INT_RANGES["bigint"]),
                  "integer": st.integers(*INT_RANGES["integer"]), "hugeint": st.integers(*INT_RANGES["hugeint"]),
                  "decimal(38, 0)": st.integers(-10 ** 37, 10 ** 37)}.get(
            types["value"], st.decimals(-10 ** 15, 10 ** 15, places=2, allow_nan=False)),
        "email": text | long_text | st.emails(),
        "phone": text | st.from_regex(r"\+[0-9]{1,16}", fullmatch=True),
        "currency": text | st.sampled_from(["USD", " usd", "EUR"]),
        "event": text | st.sampled_from(["Purchase", "purchase ", "order_completed"]),
        "order_id": text | long_text,
    }
    rows = []
    for n in range(draw(st.integers(1, 6))):
        poisoned = draw(st.lists(st.sampled_from(sorted(generated)), max_size=2, unique=True))
        rows.append({**_valid_row(n, types), **{column: draw(st.none() | generated[column]) for column in poisoned}})
    return types, rows


@pytest.mark.parametrize("dialect", WAREHOUSES)
def test_generated_values_render_as_python_builds_them(tmp_path, dialect: str) -> None:
    with _tables(dialect, tmp_path) as tables:
        @settings(max_examples=30, deadline=None)
        @given(typed=_typed_rows(dialect))
        def check(typed: tuple[dict[str, str], list[dict[str, Any]]]) -> None:
            types, rows = typed
            tables.create(rows, types)
            rendered, fallback = _both_paths(tables)
            assert rendered + fallback == len(rows)

        check()


# Column types never rendered: Python decodes bytes and refuses non-scalars (SQL would cast them to text),
# a blank-padded CHAR(n) is not the text Python reads, and a DOUBLE event_time's unit would be guessed.
UNRENDERED_TYPES = {
    "duckdb": ("blob", "varchar[]", "struct(a varchar)", "map(varchar, varchar)", "json"),
    "postgresql": ("bytea", "text[]", "json", "jsonb", "char(12)", "uuid", "xml"),
}


@pytest.mark.parametrize("dialect", WAREHOUSES)
def test_columns_sql_cannot_render_leave_every_row_to_python(tmp_path, dialect: str) -> None:
    cases = [(column, kind) for kind in UNRENDERED_TYPES[dialect]
             for column in ("event_id", "email", "currency", "order_id", "timestamp")] + [("timestamp", "double")]
    window = attribution_window(NOW, 28, 300)
    with _tables(dialect, tmp_path) as tables:
        for n, (column, kind) in enumerate(cases):
            tables.create([], {column: kind}, name=f"t{n}")
        warehouse = tables.open()
        try:
            for n, case in enumerate(cases):
                with warehouse.stream(f"select * from t{n} where 1 = 0", {}, 1) as probe:
                    columns, kinds = probe.columns, probe.kinds
                compiled = compile_mapping(MAPPING, list(columns), "offline")
                builder = EventBuilder(compiled, "offline", None, window, 3)
                assert rendered_select(compiled, columns, kinds, 3, "offline", None, window, builder,
                                       Dialect(dialect)) is None, case
        finally:
            warehouse.close()


def test_the_rendering_query_plans_no_hash_join_per_column(tmp_path) -> None:
    """DuckDB plans a check against a list of values as a hash join, with its own hash table (several MB
    each, for every page): the whitespace checks of each column must not become one each."""
    path = tmp_path / "wh.duckdb"
    con = duckdb.connect(str(path))
    con.execute(TABLE_T)
    con.close()
    warehouse = DuckDBWarehouse(str(path))
    try:
        plan, _, _ = _rendering_plan(warehouse)
        sql, params = sqlq.incremental_sql("select * from t", plan, "updated_at", sqlq.ReadWindow(), None)
        with warehouse.stream("explain " + sql, params, 100) as stream:
            text = "\n".join(str(row[-1]) for chunk in stream.chunks for row in chunk)
        # One each for the event names, the currencies and the trunk-zero country codes.
        assert text.count("Join Type: MARK") <= 3, text
    finally:
        warehouse.close()


def test_mappings_sql_cannot_render_use_python_for_every_row(tmp_path) -> None:
    """Other event sources, fields outside the rendered set and contents[] from a JSON column: no SQL
    rendering at all."""
    dialect = Dialect("duckdb")
    columns = ["event", "event_id", "timestamp", "email", "page_url"]
    kinds = ["text", "text", "timestamptz", "text", "text"]
    window = attribution_window(NOW, 28, 300)
    for source, fields in (("web", {"page.url": "page_url"}), ("offline", {"properties.event_channel": "page_url"}),
                           ("offline", {"properties.contents": "page_url"})):
        mapping = Mapping("m.yml", tuple(FieldSpec(p, c) for p, c in {
            "event": "event", "event_id": "event_id", "event_time": "timestamp", "user.email": "email",
            **fields}.items()))
        compiled = compile_mapping(mapping, columns, source)
        builder = EventBuilder(compiled, source, "1", window, 0)
        assert rendered_select(compiled, columns, kinds, 1, source, "1", window, builder, dialect) is None
    mapping = Mapping("m.yml", tuple(FieldSpec(p, c) for p, c in {
        "event": "event", "event_id": "event_id", "event_time": "timestamp", "user.email": "email"}.items()))
    compiled = compile_mapping(mapping, columns, "offline")
    builder = EventBuilder(compiled, "offline", "1", window, 0)
    for other in ("snowflake", "mysql", "mssql"):  # only DuckDB and PostgreSQL render; other warehouses use Python
        assert rendered_select(compiled, columns, kinds, 1, "offline", "1", window, builder, Dialect(other)) is None
    for rendering in WAREHOUSES:
        assert rendered_select(compiled, columns, kinds, 1, "offline", "1", window, builder,
                               Dialect(rendering)) is not None


def test_rendered_rows_come_in_cursor_order_across_parallel_reads(tmp_path) -> None:
    """Several row groups are read in parallel: the cursor order must hold over the whole result."""
    path = tmp_path / "big.duckdb"
    con = duckdb.connect(str(path))
    con.execute("set TimeZone = 'UTC'")
    con.execute("""create table t as select 'E' || i as event_id, 'Purchase' as event,
        timestamptz '2026-11-01 00:00:00+00' - to_seconds(i % 86400) as timestamp,
        timestamptz '2026-01-01 00:00:00+00' + to_microseconds(((i * 7919) % 400000) * 1000) as updated_at,
        'u' || i || '@example.com' as email, null::varchar as phone, 1.5::decimal(18, 2) as value,
        'USD' as currency, 'O' || i as order_id, '1' as event_set_id from range(400000) r(i)""")
    con.close()
    warehouse = DuckDBWarehouse(str(path))
    try:
        plan, _, renderer = _rendering_plan(warehouse)
        json_index = renderer.json_index
        sql, params = sqlq.incremental_sql("select * from t", plan, "updated_at", sqlq.ReadWindow(), None)
        previous, count = None, 0
        with warehouse.stream(sql, params, 5000) as stream:
            for chunk in stream.chunks:
                for row in chunk:
                    assert row[json_index] is not None
                    assert all(value is None for value in row[1:json_index])  # not needed: not fetched
                    assert previous is None or row[0] >= previous
                    previous = row[0]
                    count += 1
        assert count == 400000
    finally:
        warehouse.close()


# ---------------------------------------------------------------- messy phones, whitespace and non-ASCII text

_PUNCTUATION = st.sampled_from(["", " ", "-", ".", "/", "(", ")", " (0)", "(0)"])
_CODES = ["1", "44", "49", "33", "39", "34", "31", "91", "86", "81", "61", "55", "7", "353", "358", "380", "971",
          "262", "290", "599", "1268", "0", "999"]


@st.composite
def _messy_phone(draw: st.DrawFn) -> str:
    """Phones as CRM tables hold them: a country code after '+', '00' or nothing, national numbers with
    a trunk prefix, punctuation between the digits, whitespace around."""
    digits = draw(st.text("0123456789", min_size=0, max_size=14))
    start = draw(st.sampled_from(["+", "00", "", "0", "1", "(+", "+0"]))
    code = draw(st.sampled_from(_CODES)) if start and start not in ("0", "1") else ""
    parts = [start + code + (")" if start == "(+" else "")]
    while digits:
        cut = draw(st.integers(1, max(1, len(digits))))
        parts.append(draw(_PUNCTUATION) + digits[:cut])
        digits = digits[cut:]
    space = st.sampled_from(["", " ", "\t", "\u00a0", "\u3000", "\u2003", "\x1c"])
    return draw(space) + "".join(parts) + draw(space)


_MESSY_TEXT = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=8)  # DuckDB text is UTF-8
_SPACE = st.sampled_from(["", " ", "\t", "\n", "\u00a0", "\u3000", "\u2003", "\u200b", "\x85", "\x1f"])


@pytest.mark.parametrize("dialect", WAREHOUSES)
def test_messy_phones_whitespace_and_non_ascii_render_as_python_builds_them(tmp_path, dialect: str) -> None:
    """Every class the rendered path takes from Python: phones with punctuation, '00' or national digits
    (with and without default_phone_region), Unicode whitespace around any value, non-ASCII ids and text."""
    with _tables(dialect, tmp_path) as tables:
        @settings(max_examples=40, deadline=None)
        @given(region=st.sampled_from([None, "US", "GB", "DE", "FR", "IN", "CA", "AU", "gb"]),
               phones=st.lists(_messy_phone(), min_size=1, max_size=40),
               pads=st.lists(st.tuples(_SPACE, _SPACE), min_size=4, max_size=4),
               names=st.lists(_MESSY_TEXT, min_size=2, max_size=2))
        def check(region: str | None, phones: list[str], pads: list[tuple[str, str]], names: list[str]) -> None:
            rows = []
            for n, phone in enumerate(phones):
                row = _valid_row(n, {})
                (a, b), (c, d), (e, f), (g, h) = pads
                row.update(phone=phone, email=f"{a}User{n}@Example.COM{b}", event=f"{c}Purchase{d}",
                           currency=f"{e}usd{f}", order_id=f"{g}{names[n % 2]}ÖRDER-{n}{h}",
                           event_id=f"{a}ÉV-{n}{names[0]}{d}")
                rows.append(row)
            tables.create(rows)
            rendered, fallback = _both_paths(tables, region)
            assert rendered + fallback == len(rows)

        check()


@pytest.mark.parametrize("region", [None, "US", "GB", "DE"])
def test_messy_phones_are_rendered_not_left_to_python(tables, region) -> None:
    """The classes the issue names are rendered by the warehouse, not only equal where rendered."""
    phones = ["+1 (212) 555-0142", "(+1) 212.555.0142", "+44 20 7946 0958", "+44 (0)20 7946 0958",
              "0044 20 7946 0958", "0049 30 901820", "+49 (0)30 901820", "+33 1 42 68 53 00",
              "\u00a0+1 212 555 0142\u3000"]
    national = {"US": ["(212) 555-0142", "212.555.0142", "1-212-555-0142"], "GB": ["020 7946 0958", "07700 900123"],
                "DE": ["030 901820", "0151 23456789"]}.get(region or "", [])
    rows = [{**_valid_row(n, {}), "phone": phone, "email": None,
             "order_id": f"  Bestellung-ÄÖÜ-{n} ", "event_id": f"#{n}-ß"}
            for n, phone in enumerate(phones + national)]
    tables.create(rows)
    rendered, fallback = _both_paths(tables, region)
    assert (rendered, fallback) == (len(rows), 0)


# ---------------------------------------------------------------- one row per item: rendered groups vs Python

ITEM_TYPES = {"event_id": "varchar", "event": "varchar", "timestamp": "timestamptz", "updated_at": "timestamptz",
              "email": "varchar", "phone": "varchar", "value": "decimal(18, 2)", "currency": "varchar",
              "order_id": "varchar", "content_type": "varchar", "content_ids": "varchar", "num_items": "bigint",
              "content_id": "varchar", "content_name": "varchar", "price": "decimal(12, 2)", "quantity": "integer"}
ITEM_FIELDS = (("event", "event"), ("event_id", "event_id"), ("event_time", "timestamp"), ("user.email", "email"),
               ("user.phone", "phone"), ("properties.value", "value"), ("properties.currency", "currency"),
               ("properties.order_id", "order_id"))
ITEM_SLOTS = (("properties.contents[].content_id", "content_id"), ("properties.contents[].content_name", "content_name"),
              ("properties.contents[].price", "price"), ("properties.contents[].quantity", "quantity"))
GIVEN = ("content_type", "content_ids", "num_items")


def _item_mapping(given: tuple[str, ...] = (), constants: dict[str, Any] | None = None) -> Mapping:
    """The event fields, `given` of content_type/content_ids/num_items from their columns, then the item fields;
    `constants` replace a field's column by a constant."""
    fields = [*ITEM_FIELDS, *((f"properties.{name}", name) for name in given), *ITEM_SLOTS]
    constants = constants or {}
    return Mapping("items.yml", tuple(FieldSpec(path, constant=constants[path]) if path in constants
                                      else FieldSpec(path, column) for path, column in fields))


def _item_table(path: Path, types: dict[str, str], rows: list[dict[str, Any]]) -> None:
    kinds = {**ITEM_TYPES, **types}
    con = duckdb.connect(str(path))
    try:
        con.execute("set TimeZone = 'UTC'")
        con.execute(f"create table t ({', '.join(f'{c} {k}' for c, k in kinds.items())})")
        for row in rows:  # cast from text: HUGEINT values do not bind as Python ints
            if kinds["content_id"] != "varchar" and str(row["content_id"]).startswith("SKU-"):
                row = {**row, "content_id": int(re.sub("[^0-9]", "", row["content_id"]))}  # a numeric SKU
            con.execute(f"insert into t values ({', '.join(f'cast(? as {k})' for k in kinds.values())})",
                        [None if row.get(c) is None else row[c] if isinstance(row[c], (dt.date, float)) else str(row[c])
                         for c in kinds])
    finally:
        con.close()


def _ordered(value: Any) -> Any:
    """A JSON value with its keys in order and its scalars' types: two bodies compare equal only if the very
    same JSON (up to spacing and number spelling) was sent."""
    if isinstance(value, dict):
        return ("dict", [(key, _ordered(item)) for key, item in value.items()])
    if isinstance(value, list):
        return ("list", [_ordered(item) for item in value])
    return (type(value).__name__, value)


def _outcome(event_id: str | None, built: Event | Any) -> str:
    if isinstance(built, Event):
        return repr(("event", event_id, built.event_id, built.event_source_id, built.event_time, built.cursor,
                     _ordered(built.document())))
    detail = re.sub(r" \(row [0-9a-f]{16}\)$", "", built.detail)  # a fingerprint of the rows each path reads
    return repr(("reject", event_id, built.reason, detail, built.event_id, built.event_time, built.cursor))


def _item_groups(warehouse: DuckDBWarehouse, plan: sqlq.SelectPlan, group_index: int) -> list[list[tuple]]:
    sql, params = sqlq.incremental_sql("select * from t", plan, "updated_at", sqlq.ReadWindow(), "event_id")
    with warehouse.stream(sql, params, 7) as stream:  # small chunks: groups straddle them
        return [group for groups in grouped(stream.chunks, group_index, SyncReport("s", "sync"), 0, None)
                for group in groups]


def _both_item_paths(path: Path, mapping: Mapping, region: str | None = None,
                     default_source: str | None = "7654321098765432109") -> dict[str, int]:
    """Every event of table `t` (one row per item) through DuckDB's rendering and through the Python builder:
    the same events and rejects, event ids, bodies to their keys' order. Returns how many groups RenderedItems
    joined from SQL's texts alone, completed with Python's items ("finished") or left to Python ("python")."""
    warehouse = DuckDBWarehouse(str(path))
    try:
        plan, builder, rendering = duckdb_rendering(warehouse, mapping, default_source, NOW, region)
        renderer = RenderedItems(builder, rendering, default_source)
        groups = _item_groups(warehouse, plan, len(plan.items))
        python = [_outcome(i, built) for i, built in zip(builder.event_ids(groups), builder.build_all(groups))]
        groups = _item_groups(warehouse, rendering, RenderedItems.GROUP)
        got = [_outcome(i, built) for i, built in zip(renderer.event_ids(groups), renderer.build(groups))]
        assert sorted(got) == sorted(python)  # the order of events sharing a cursor may differ
        paths = {"joined": 0, "finished": 0, "python": 0}
        for group, built in zip(groups, renderer.build(groups)):
            whole = None not in [row[RenderedItems.ITEM] for row in group]
            paths["python" if group[0][RenderedItems.HEAD] is None else
                  "joined" if whole and isinstance(built, Event) and isinstance(built.body, bytes) else "finished"] += 1
        return paths
    finally:
        warehouse.close()


def _item_row(number: int, item: int, /, **values: Any) -> dict[str, Any]:
    """Item `item` of valid order `number`, with `values` replaced."""
    return {"event_id": f"EV-{number}", "event": "Purchase", "timestamp": NOW - dt.timedelta(hours=3),
            "updated_at": NOW - dt.timedelta(hours=1, seconds=number * 10 + item), "email": f"u{number}@example.com",
            "phone": "+14155550199", "value": Decimal("19.99"), "currency": "USD", "order_id": f"O-{number}",
            "content_id": f"SKU-{number}-{item}", "content_name": f"Artikel für {item}", "price": Decimal("9.50"),
            "quantity": item + 1, **values}


def test_item_events_render_as_python_builds_them(tmp_path) -> None:
    """Valid multi-item orders are joined from SQL's texts alone, in the order of their rows."""
    rows = [_item_row(event, item) for event in range(12) for item in range(event % 4 + 1)]
    _item_table(tmp_path / "wh.duckdb", {}, rows)
    paths = _both_item_paths(tmp_path / "wh.duckdb", _item_mapping())
    assert paths == {"joined": 12, "finished": 0, "python": 0}


# Item values SQL must render exactly as Python or leave to it, by column type.
ITEM_POISON: list[tuple[dict[str, str], dict[str, Any]]] = [
    ({}, {"quantity": -1}), ({}, {"quantity": 0}), ({}, {"quantity": None}), ({}, {"price": Decimal("-0.01")}),
    ({}, {"price": None}), ({}, {"content_id": None}), ({}, {"content_id": ""}), ({}, {"content_id": " \t "}),
    ({}, {"content_id": "x" * 257}), ({}, {"content_id": "é" * 256}), ({}, {"content_id": "\u00a0SKU-1\u3000"}),
    ({}, {"content_id": 'S"K\\U\n'}), ({}, {"content_name": "n" * 1001}), ({}, {"content_name": "ü" * 1000}),
    ({}, {"content_name": "\u2003 Ärmel 👕 \t"}), ({}, {"content_name": None}),
    ({"quantity": "hugeint"}, {"quantity": 2 ** 63}), ({"quantity": "hugeint"}, {"quantity": 2 ** 63 - 1}),
    ({"quantity": "double"}, {"quantity": 2.5}), ({"quantity": "double"}, {"quantity": 3.0}),
    ({"quantity": "double"}, {"quantity": float("nan")}), ({"quantity": "double"}, {"quantity": -0.0}),
    ({"quantity": "double"}, {"quantity": 1e19}), ({"quantity": "double"}, {"quantity": 2.0 ** 62}),
    ({"quantity": "decimal(10, 2)"}, {"quantity": Decimal("2.00")}),
    ({"quantity": "decimal(10, 2)"}, {"quantity": Decimal("2.50")}),
    ({"quantity": "decimal(38, 0)"}, {"quantity": 10 ** 30}),
    ({"price": "double"}, {"price": float("inf")}), ({"price": "double"}, {"price": 0.1}),
    ({"price": "double"}, {"price": 1e300}), ({"price": "bigint"}, {"price": 12}),
    ({"content_id": "bigint"}, {"content_id": -42}), ({"content_id": "bigint"}, {"content_id": 2 ** 63 - 1}),
]


@pytest.mark.parametrize(("types", "values"), ITEM_POISON, ids=[repr(v)[:40] for _, v in ITEM_POISON])
def test_poison_item_values_render_as_python_builds_them(tmp_path, types, values) -> None:
    """One poisoned item beside valid ones, an event of only that item, and valid events around them."""
    rows = [_item_row(0, 0), _item_row(0, 1), _item_row(1, 0), _item_row(1, 1, **values), _item_row(1, 2),
            _item_row(2, 0, **values), _item_row(3, 0)]
    _item_table(tmp_path / "wh.duckdb", types, rows)
    paths = _both_item_paths(tmp_path / "wh.duckdb", _item_mapping())
    assert paths["joined"] >= 2, paths


def test_empty_items_huge_totals_and_heads_left_to_python(tmp_path) -> None:
    """Empty items are dropped (an event of only empty items has no contents), quantities adding up to 2^63
    are refused by Python, an item SQL leaves to Python completes a rendered head, a head SQL leaves to Python
    (a national phone without default_phone_region) takes SQL's items, and an event whose first row is
    valid renders whatever its other rows hold in their event fields."""
    empty = {"content_id": None, "content_name": " ", "price": None, "quantity": None}
    rows = [_item_row(0, 0, **empty), _item_row(0, 1), _item_row(0, 2, **empty),            # empty items dropped
            _item_row(1, 0, **empty), _item_row(1, 1, **empty),                               # all items empty
            _item_row(2, 0, quantity=2 ** 62), _item_row(2, 1, quantity=2 ** 62),             # num_items too large
            _item_row(3, 0, quantity=2 ** 62), _item_row(3, 1, quantity=2 ** 62 - 1),         # just below
            _item_row(4, 0), _item_row(4, 1, content_name="n" * 1200),                        # Python cuts it
            _item_row(5, 0), _item_row(5, 1, quantity=-3),                                    # Python refuses it
            _item_row(6, 0, phone="(415) 555-0199", email=None), _item_row(6, 1),              # head to Python
            _item_row(7, 0, phone="(415) 555-0199", email=None), _item_row(7, 1, quantity=-1),  # both to Python
            _item_row(8, 0), _item_row(8, 1, email="not an email", phone="x", event="bogus"),  # only row 1 counts
            _item_row(9, 0, quantity=None), _item_row(9, 1),                                  # no num_items
            _item_row(10, 0, content_id=None), _item_row(10, 1)]                              # one content id
    _item_table(tmp_path / "wh.duckdb", {"quantity": "hugeint"}, rows)
    paths = _both_item_paths(tmp_path / "wh.duckdb", _item_mapping())
    assert paths == {"joined": 6, "finished": 3, "python": 2}, paths


@pytest.mark.parametrize("given", [GIVEN, ("content_type",), ("content_ids",), ("num_items",)])
def test_mapped_content_type_content_ids_and_num_items_render_as_python_builds_them(tmp_path, given) -> None:
    """Fields contents[] derives are derived only where the mapping gives none (or gives NULL)."""
    values = [{}, {"content_type": "product_group"}, {"content_type": " product "}, {"content_type": "bogus"},
              {"content_type": None}, {"content_ids": "a, b,,c "}, {"content_ids": " "}, {"content_ids": "é,x"},
              {"content_ids": ",".join(["y" * 200] * 2)}, {"content_ids": None}, {"num_items": 7},
              {"num_items": -1}, {"num_items": None}, {"num_items": 2 ** 62}]
    rows = [_item_row(n, item, **value) for n, value in enumerate(values) for item in range(2)]
    _item_table(tmp_path / "wh.duckdb", {}, rows)
    paths = _both_item_paths(tmp_path / "wh.duckdb", _item_mapping(given))
    assert paths["joined"] >= len(values) // 2, paths
    constants = {"properties.content_type": "product_group", "properties.num_items": 3,
                 "properties.contents[].quantity": 2, "properties.contents[].price": 1.5}
    paths = _both_item_paths(tmp_path / "wh.duckdb", _item_mapping(given, constants))
    assert paths["joined"] >= len(values) // 2, paths


_ITEM_TEXT = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=10)


@st.composite
def _item_events(draw: st.DrawFn) -> tuple[dict[str, str], list[dict[str, Any]]]:
    types = {"quantity": draw(st.sampled_from(["integer", "hugeint", "double", "decimal(10, 2)"])),
             "price": draw(st.sampled_from(["decimal(12, 2)", "double", "bigint"])),
             "content_id": draw(st.sampled_from(["varchar", "bigint"]))}
    long_text = st.builds(lambda c, n: c * n, st.sampled_from(["a", "é", " ", "7"]), st.integers(250, 1100))
    quantity = {"integer": st.integers(-3, 2 ** 31 - 1), "hugeint": st.integers(-2 ** 64, 2 ** 64),
                "double": st.floats(), "decimal(10, 2)": st.decimals(-10 ** 6, 10 ** 6, places=2, allow_nan=False)}
    price = {"double": st.floats(), "bigint": st.integers(-10, 2 ** 63 - 1)}.get(
        types["price"], st.decimals(-10 ** 6, 10 ** 6, places=2, allow_nan=False))
    item_values = {
        "content_id": (_ITEM_TEXT | long_text | st.sampled_from([" SKU-1 ", "\u3000SKU\u00a0"]))
        if types["content_id"] == "varchar" else st.integers(-2 ** 63, 2 ** 63 - 1),
        "content_name": _ITEM_TEXT | long_text, "quantity": quantity[types["quantity"]], "price": price}
    event_values = {"email": _ITEM_TEXT | st.emails(), "phone": _ITEM_TEXT | _messy_phone(),
                    "event": st.sampled_from(["Purchase", " purchase", "bogus", ""]), "event_id": _ITEM_TEXT,
                    "currency": st.sampled_from(["USD", "eur ", "XYZ"]), "order_id": _ITEM_TEXT | long_text}
    rows = []
    for event in range(draw(st.integers(1, 5))):
        head = {column: draw(st.none() | event_values[column])
                for column in draw(st.lists(st.sampled_from(sorted(event_values)), max_size=2, unique=True))}
        for item in range(draw(st.integers(1, 4))):
            poisoned = draw(st.lists(st.sampled_from(sorted(item_values)), max_size=2, unique=True))
            rows.append(_item_row(event, item, **head, **{column: draw(st.none() | item_values[column])
                                                           for column in poisoned}))
    return types, rows


@settings(max_examples=30, deadline=None)
@given(events=_item_events(), given_fields=st.sampled_from([(), GIVEN]), region=st.sampled_from([None, "US"]))
def test_generated_item_rows_render_as_python_builds_them(tmp_path_factory, events, given_fields, region) -> None:
    types, rows = events
    path = tmp_path_factory.mktemp("items") / "wh.duckdb"
    _item_table(path, types, rows)
    _both_item_paths(path, _item_mapping(given_fields), region)


def test_an_item_sync_takes_the_rendered_path(make_project, fake_tiktok) -> None:
    """A sync of one row per item on DuckDB reads the rendered columns, and what reaches TikTok is each order
    with its items in the query's order, content_type, content_ids and num_items derived."""
    rows = [_item_row(number, item) for number in range(3) for item in range(number + 1)]
    rows[1]["quantity"] = None  # order 1 has an item without a quantity: no num_items
    fields = {path: column for path, column in (*ITEM_FIELDS, *ITEM_SLOTS)}
    project = make_project(mapping={"fields": fields}, ddl=[f"create table t ({', '.join(f'{c} {k}' for c, k in ITEM_TYPES.items())})"],
                           tables={"t": rows}, query="select * from t\n", sync_overrides={"cursor": "updated_at"})
    report = project.run(now=NOW)
    assert report.ok, report.error
    assert report.sql is not None and "tiktok_event_head" in report.sql and "tiktok_item_json" in report.sql
    sent = {e.event["event_id"]: e.event["properties"] for e in fake_tiktok.accepted()}
    assert sent["EV-0"] == {"value": 19.99, "currency": "USD", "order_id": "O-0",
                            "contents": [{"content_id": "SKU-0-0", "content_name": "Artikel für 0", "price": 9.5,
                                          "quantity": 1}],
                            "content_type": "product", "content_ids": ["SKU-0-0"], "num_items": 1}
    assert [c["content_id"] for c in sent["EV-2"]["contents"]] == ["SKU-2-0", "SKU-2-1", "SKU-2-2"]
    assert sent["EV-2"]["num_items"] == 6 and "num_items" not in sent["EV-1"]


def test_an_item_sync_stopped_early_closes_its_read_ahead(make_project, fake_tiktok) -> None:
    """A preview stops reading after its first chunks while the helper thread fetches the next one: the run
    ends cleanly, and the warehouse can be read again."""
    rows = [_item_row(number, item) for number in range(10_000) for item in range(2)]
    fields = {path: column for path, column in (*ITEM_FIELDS, *ITEM_SLOTS)}
    project = make_project(mapping={"fields": fields}, ddl=[f"create table t ({', '.join(f'{c} {k}' for c, k in ITEM_TYPES.items())})"],
                           tables={"t": rows}, query="select * from t\n", sync_overrides={"cursor": "updated_at"})
    report = project.run(now=NOW, dry_run=True, preview_limit=1)
    assert report.ok, report.error
    assert 1 <= report.events_built < 10_000 and report.rows_read < 20_000
    assert project.query("select count(*) from t") == [(20_000,)]


def test_a_streamed_item_sync_looks_its_ids_up_once_per_window(make_project, fake_tiktok, monkeypatch) -> None:
    """One row per item is one streamed query: its event ids are looked up in the ledger once per half page
    of rows (each lookup scans the sync's ledger), not once per chunk, and every event is still sent once."""
    from connector.state import StateStore
    lookups: list[int] = []
    acknowledged = StateStore.acknowledged

    def counted(self, sync_name, event_ids):
        lookups.append(len(event_ids))
        return acknowledged(self, sync_name, event_ids)

    monkeypatch.setattr(StateStore, "acknowledged", counted)
    rows = [_item_row(number, item) for number in range(12_000) for item in range(2)]
    fields = {path: column for path, column in (*ITEM_FIELDS, *ITEM_SLOTS)}
    project = make_project(mapping={"fields": fields}, ddl=[f"create table t ({', '.join(f'{c} {k}' for c, k in ITEM_TYPES.items())})"],
                           tables={"t": rows}, query="select * from t\n", sync_overrides={"cursor": "updated_at"})
    report = project.run(now=NOW)
    assert report.ok, report.error
    assert report.events_sent == 12_000 and len(set(fake_tiktok.accepted_event_ids())) == 12_000
    assert sum(lookups) == 12_000 and len(lookups) == 1  # 24,000 rows: within one window of 25,000


def test_rendered_item_rows_keep_their_order_across_parallel_reads(tmp_path) -> None:
    """Item rows are rendered above DuckDB's sort: with four threads the events still come in cursor order,
    each event's rows together, its first row first."""
    path = tmp_path / "items.duckdb"
    con = duckdb.connect(str(path))
    con.execute("set TimeZone = 'UTC'")
    con.execute("""create table t as select 'E' || (i // 3) as event_id, 'Purchase' as event,
        timestamptz '2026-11-01 00:00:00+00' - to_seconds((i // 3) % 86400) as timestamp,
        timestamptz '2026-01-01 00:00:00+00' + to_microseconds(((i * 7919) % 400000) * 1000) as updated_at,
        'u' || (i // 3) || '@example.com' as email, null::varchar as phone, 1.5::decimal(18, 2) as value,
        'USD' as currency, 'O' || (i // 3) as order_id, null::varchar as content_type, null::varchar as content_ids,
        null::bigint as num_items, 'SKU-' || (i % 3) as content_id, 'Name ' || i as content_name,
        2.5::decimal(12, 2) as price, 1 + i % 3 as quantity from range(300000) r(i)""")
    con.close()
    warehouse = DuckDBWarehouse(str(path), memory_limit="1GB", threads=4)
    try:
        with warehouse.stream("select * from t where 1 = 0", {}, 1) as probe:
            columns, kinds = list(probe.columns), probe.kinds
        compiled = compile_mapping(_item_mapping(), columns, "offline")
        cursor_index = find_column(columns, "updated_at")
        plan = sqlq.plan_select(compiled, columns, kinds, cursor_index, Dialect("duckdb"))
        window = attribution_window(NOW, 28, 300)
        builder = EventBuilder(plan.mapping, "offline", "1", window, plan.cursor_index)
        fast = rendered_select(compiled, columns, kinds, cursor_index, "offline", "1", window, builder, Dialect("duckdb"))
        assert fast is not None
        rendering = plan.rendering(fast.items, fast.params, fast.prepared)
        sql, params = sqlq.incremental_sql("select * from t", rendering, "updated_at", sqlq.ReadWindow(), "event_id")
        seen: set[int] = set()
        previous, group, rows = None, None, 0
        with warehouse.stream(sql, params, 5000) as stream:
            for chunk in stream.chunks:
                for row in chunk:
                    rows += 1
                    if row[RenderedItems.GROUP] != group:  # a new event: its first row, with the cursor
                        group = row[RenderedItems.GROUP]
                        assert group not in seen and row[RenderedItems.HEAD] is not None
                        seen.add(group)
                        assert previous is None or row[0] >= previous
                        previous = row[0]
                    else:
                        assert row[0] is None and row[RenderedItems.HEAD] is None
                    assert row[RenderedItems.ITEM] is not None and row[RenderedItems.SOURCE] is None
        assert rows == 300000 and len(seen) == 100000
    finally:
        warehouse.close()


# ---------------------------------------------------------------- a PostgreSQL sync takes the rendered path

SYNC_MAPPING = {"fields": {"event": "event", "event_id": "event_id", "event_time": "timestamp",
                           "user.email": "email", "user.phone": "phone", "properties.value": "value",
                           "properties.currency": "currency", "properties.order_id": "order_id"},
                "events": {"order_completed": "Purchase"}}


def test_a_postgres_sync_sends_the_events_postgres_rendered(tmp_path) -> None:
    """A normal sync from PostgreSQL reads the events' JSON rendered by PostgreSQL, in cursor order, and sends
    those very bodies; a row SQL cannot prove still goes to Python (and is rejected with its reason). Fails if
    rendering silently turned off, for the mapping or for every row."""
    valid = [{**_valid_row(n, {}), "updated_at": NOW - dt.timedelta(minutes=300 - n), "currency": " usd ",
              "phone": ["+14155550199", " +44 20 7946 0958 ", None][n % 3],
              "email": [f" User{n}@Example.COM", None, f"u{n}@example.com"][n % 3],
              "event": ["Purchase", "order_completed"][n % 2]} for n in range(120)]
    # Rows SQL does not render: two emails (Python sends it), a negative value, an unknown event name, a time
    # outside the attribution window (Python rejects those).
    unproven = [{**_valid_row(500 + n, {}), "updated_at": NOW - dt.timedelta(minutes=100 - n), **poison}
                for n, poison in enumerate([{"email": "a@b.c,d@e.f", "phone": None}, {"value": Decimal("-1.00")},
                                            {"event": "NotAThing"}, {"timestamp": NOW - dt.timedelta(days=60)}])]
    with postgres_target() as target, fake_tiktok_env() as server:
        tables = Tables("postgresql", tmp_path, target)
        tables.create(valid + unproven, name="orders")
        root = write_project(tmp_path / "project", target, {"orders": {
            "query": "orders.sql", "mapping": "orders.yml", "event_source": "offline", "event_source_id": SOURCE_ID,
            "cursor": "updated_at", "safety_margin_seconds": 0}},
            queries={"orders.sql": "select * from orders\n"}, mappings={"orders.yml": SYNC_MAPPING})
        recorder = open_recording(root)
        try:
            project = load_project(root)
            report = run_sync(project, project.syncs["orders"], RunOptions(now=NOW), warehouse=recorder)
        finally:
            recorder.close()
        sent = b"".join(request.raw for request in server.requests())
    assert report.ok, report.error
    [columns] = [c for c in recorder.columns if "tiktok_event_json" in c]
    json_index, cursor = columns.index("tiktok_event_json"), recorder.rows[0][0]
    rendered = [row[json_index] for row in recorder.rows if row[json_index] is not None]
    assert len(rendered) == len(valid), (len(rendered), len(recorder.rows))  # every valid row, none of the others
    assert all(row[0] >= cursor for row in recorder.rows) and \
        [row[0] for row in recorder.rows] == sorted(row[0] for row in recorder.rows)
    assert report.events_sent == len(valid) + 1, report.rejected_by_reason
    assert sum(report.rejected_by_reason.values()) == len(unproven) - 1, report.rejected_by_reason
    assert all(text.encode() in sent for text in rendered)  # sent as PostgreSQL wrote them


def test_postgres_computes_each_layer_once_and_sorts_once(tmp_path) -> None:
    """PostgreSQL would inline the layers' columns into each use of them (exponentially: planning a 1M-row
    sync took 16 GB); each layer must stay a subquery scan, with one sort of the user's rows below them."""
    with _tables("postgresql", tmp_path) as tables:
        tables.create([_valid_row(n, {}) for n in range(50)])
        warehouse = tables.open()
        try:
            plan, _, _ = _rendering_plan(warehouse, region="GB")
            sql, params = sqlq.incremental_sql("select * from t", plan, "updated_at", sqlq.ReadWindow(), None)
            con = warehouse.connect()
            try:
                con.execute("set statement_timeout = '10s'")
                text = "\n".join(str(row[0]) for row in con.query("explain " + sql, params))
            finally:
                con.close()
        finally:
            warehouse.close()
    assert len(plan.prepared) >= 5
    assert text.count("Subquery Scan") == len(plan.prepared) + 2, text  # the layers, the items, their wrapper
    assert text.count("Sort Key") == 1, text


def _example_phones(region: str) -> list[str]:
    """phonenumbers' example numbers of the region, written nationally (with its trunk prefix), with
    punctuation, and internationally."""
    phones = []
    for kind in (PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE, PhoneNumberType.TOLL_FREE,
                 PhoneNumberType.VOIP, PhoneNumberType.UAN):
        number = phonenumbers.example_number_for_type(region, kind)
        if number is not None:
            national = phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL)
            e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
            phones += [national, "".join(c for c in national if c.isdigit()), e164, "00" + e164[1:],
                       phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL)]
    return phones


@pytest.mark.parametrize("dialect", WAREHOUSES)
def test_every_regions_phone_patterns_render_as_python_builds_them(tmp_path, dialect: str) -> None:
    """Each region's number pattern (phonenumbers' metadata, written for Python's re) read by the warehouse's
    regular expressions (RE2, PostgreSQL's): national numbers of every region SQL follows, with its
    default_phone_region, give the events Python builds."""
    regions = sorted(region for region in phonenumbers.SUPPORTED_REGIONS
                     if sql_phones.national("d", region, lambda expr, _: expr, FUNCTIONS[dialect]) is not None)
    assert len(regions) >= 100, len(regions)
    rendered = fallback = 0
    with _tables(dialect, tmp_path) as tables:
        for region in regions:
            rows = [{**_valid_row(n, {}), "phone": phone, "email": None}
                    for n, phone in enumerate(_example_phones(region))]
            tables.create(rows)
            counts = _both_paths(tables, region)
            rendered, fallback = rendered + counts[0], fallback + counts[1]
    assert rendered > 3 * fallback, (rendered, fallback)  # mostly rendered: the patterns were exercised
