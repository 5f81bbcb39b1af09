"""properties.contents from a LIST of STRUCT column, rendered by DuckDB (sql_events._Renderer.contents): every row
renders as the very event the Python builder makes, to the order of its keys, or goes to Python, which builds it
or rejects it with the same reason. Tables are real DuckDB files; values are listed and generated."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from cli_helpers import cli, json_lines
from warehouse_helpers import duckdb_rendering, rendered_rows
from connector.events import Event
from connector.mapping import FieldSpec, Mapping
from connector.sql_events import JSON_COLUMNS, RenderedEvents
from connector.warehouse import DuckDBWarehouse

NOW = dt.datetime(2026, 6, 1, 12, tzinfo=dt.timezone.utc)
SOURCE_ID = "7654321098765432109"
EVENT_TYPES = {"event_id": "varchar", "event": "varchar", "timestamp": "timestamptz", "updated_at": "timestamptz",
               "email": "varchar", "value": "decimal(12, 2)", "currency": "varchar",
               "content_type": "varchar", "content_ids": "varchar", "num_items": "bigint"}
ITEMS = "STRUCT(content_id VARCHAR, content_name VARCHAR, price DECIMAL(12, 2), quantity INTEGER)[]"
EVENT_FIELDS = (("event", "event"), ("event_id", "event_id"), ("event_time", "timestamp"), ("user.email", "email"),
                ("properties.value", "value"), ("properties.currency", "currency"))


def _row(number: int, items: Any, **values: Any) -> dict[str, Any]:
    return {"event_id": f"EV-{number}", "event": "Purchase", "timestamp": NOW - dt.timedelta(hours=3),
            "updated_at": NOW - dt.timedelta(seconds=number), "email": f"u{number}@example.com",
            "value": Decimal("19.99"), "currency": "USD", "items": items, **values}


def _item(number: int, **values: Any) -> dict[str, Any]:
    return {"content_id": f"SKU-{number}", "content_name": f"Artikel für {number}", "price": Decimal("9.50"),
            "quantity": number % 3 + 1, **values}


def _items_literal(items: list[dict[str, Any] | None] | None, items_type: str) -> str:
    """The list as SQL text of its type: DuckDB's Python binding infers one type for a list's values (a UHUGEINT
    after an INTEGER fails), so each value is cast from its text to its field's type."""
    if items is None:
        return f"cast(null as {items_type})"
    element = items_type.removesuffix("[]")

    def value(field_value: Any) -> str:
        if field_value is None:
            return "null"
        return "'" + str(field_value).replace("'", "''") + "'"

    def struct(item: dict[str, Any] | None) -> str:
        if item is None:
            return f"cast(null as {element})"
        return f"cast({{{', '.join(f'{key!r}: {value(v)}' for key, v in item.items())}}} as {element})"

    return f"cast([{', '.join(map(struct, items))}] as {items_type})"


def _table(path: Path, rows: list[dict[str, Any]], items_type: str = ITEMS) -> None:
    con = duckdb.connect(str(path))
    try:
        con.execute("set TimeZone = 'UTC'")
        con.execute("drop table if exists t")
        con.execute(f"create table t ({', '.join(f'{c} {k}' for c, k in EVENT_TYPES.items())}, items {items_type})")
        for row in rows:
            con.execute(f"insert into t values ({', '.join(f'cast(? as {k})' for k in EVENT_TYPES.values())}, "
                        f"{_items_literal(row['items'], items_type)})", [row.get(c) for c in EVENT_TYPES])
    finally:
        con.close()


def _mapping(given_columns: tuple[str, ...] = (), constants: dict[str, Any] | None = None,
             contents_first: bool = False) -> Mapping:
    """The event fields, properties.contents from `items` (before the other properties with `contents_first`),
    and content_type / content_ids / num_items from their columns (`given_columns`) or `constants`."""
    contents = [("properties.contents", "items")]
    fields = [*EVENT_FIELDS[:4], *(contents if contents_first else []), *EVENT_FIELDS[4:],
              *([] if contents_first else contents), *((f"properties.{c}", c) for c in given_columns)]
    specs = [FieldSpec(path, column) for path, column in fields]
    specs += [FieldSpec(path, constant=value) for path, value in (constants or {}).items()]
    return Mapping("contents.yml", tuple(specs))


def _ordered(value: Any) -> Any:
    """A JSON value with its keys in order and its scalars' types."""
    if isinstance(value, dict):
        return ("dict", [(key, _ordered(item)) for key, item in value.items()])
    if isinstance(value, list):
        return ("list", [_ordered(item) for item in value])
    return (type(value).__name__, value)


def _outcome(built: Any) -> tuple:
    if isinstance(built, Event):
        return ("event", built.event_id, built.event_source_id, built.event_time, built.cursor,
                _ordered(built.document()))
    return ("reject", built.reason, built.detail, built.event_id, built.event_time, built.cursor)


def _both_paths(path: Path, mapping: Mapping, bodies: list[Any] | None = None) -> tuple[int, int]:
    """Every row of table `t` through DuckDB's rendering and through the Python builder: the same outcome.
    Returns (rows DuckDB rendered, rows left to Python); `bodies` gets the rendered bodies."""
    warehouse = DuckDBWarehouse(str(path))
    try:
        plan, builder, rendering = duckdb_rendering(warehouse, mapping, SOURCE_ID, NOW)
        renderer = RenderedEvents(builder, len(plan.items), plan.cursor_index, SOURCE_ID)
        rendered = fallback = 0
        for row in rendered_rows(warehouse, rendering):
            python, got = builder.build([row]), renderer.build([[row]])[0]
            assert _outcome(got) == _outcome(python), row
            if row[len(plan.items)] is None:
                fallback += 1
            else:
                rendered += 1
                assert isinstance(got.body, bytes)  # DuckDB's JSON, as it is
                if bodies is not None:
                    bodies.append(got.body)
        return rendered, fallback
    finally:
        warehouse.close()


def test_orders_with_item_lists_render_as_python_builds_them(tmp_path) -> None:
    """Valid orders, in the struct's field order, with what contents[] derives (content_type, content_ids,
    num_items) after the other properties; an empty or NULL list sends no contents."""
    rows = [_row(n, [_item(10 * n + k) for k in range(n % 5 + 1)]) for n in range(20)]
    rows += [_row(20, []), _row(21, None), _row(22, [{"content_id": None, "content_name": " ", "price": None,
                                                      "quantity": None}])]
    _table(tmp_path / "wh.duckdb", rows)
    assert _both_paths(tmp_path / "wh.duckdb", _mapping()) == (23, 0)
    assert _both_paths(tmp_path / "wh.duckdb", _mapping(contents_first=True)) == (23, 0)


def test_a_rendered_item_list_is_the_json_tiktok_expects(tmp_path) -> None:
    """Not only equal to Python's: the body is what the contract asks for, keys in order (a check of both)."""
    _table(tmp_path / "wh.duckdb", [_row(1, [_item(1, quantity=2), _item(2, price=Decimal("12.00"))])])
    bodies: list[Any] = []
    assert _both_paths(tmp_path / "wh.duckdb", _mapping(), bodies) == (1, 0)
    properties = orjson.loads(bodies[0])["properties"]
    assert list(properties) == ["value", "currency", "contents", "content_type", "content_ids", "num_items"]
    assert properties["contents"] == [
        {"content_id": "SKU-1", "content_name": "Artikel für 1", "price": 9.5, "quantity": 2},
        {"content_id": "SKU-2", "content_name": "Artikel für 2", "price": 12, "quantity": 3}]
    assert [properties[k] for k in ("content_type", "content_ids", "num_items")] == ["product", ["SKU-1", "SKU-2"], 5]


# An item value SQL must render exactly as Python or leave to it; (struct type, the list).
POISON: list[tuple[str, Any]] = [
    (ITEMS, [_item(1), None]),  # a NULL item: Python rejects the row
    (ITEMS, [_item(1, quantity=-1)]), (ITEMS, [_item(1, quantity=0)]), (ITEMS, [_item(1, quantity=None)]),
    (ITEMS, [_item(1, quantity=None), _item(2)]),  # not every item counted: no num_items
    (ITEMS, [_item(1, price=Decimal("-0.01"))]), (ITEMS, [_item(1, price=Decimal("0.00"))]),
    (ITEMS, [_item(1, content_id=None)]), (ITEMS, [_item(1, content_id="")]), (ITEMS, [_item(1, content_id=" \t ")]),
    (ITEMS, [_item(1, content_id="x" * 257)]), (ITEMS, [_item(1, content_id="é" * 256)]),
    (ITEMS, [_item(1, content_id="\u00a0SKU-1\u3000")]), (ITEMS, [_item(1, content_id='S"K\\U\n')]),
    (ITEMS, [_item(1, content_name="n" * 1001)]), (ITEMS, [_item(1, content_name="\u2003 Ärmel 👕 \t")]),
    (ITEMS, [{"content_id": None, "content_name": None, "price": None, "quantity": None}, _item(2)]),
    ("STRUCT(quantity HUGEINT, content_id VARCHAR)[]", [{"quantity": 2 ** 62, "content_id": "A"},
                                                        {"quantity": 2 ** 62, "content_id": "B"}]),  # sum ≥ 2^63
    ("STRUCT(quantity HUGEINT, content_id VARCHAR)[]", [{"quantity": 2 ** 63, "content_id": "A"}]),
    ("STRUCT(quantity HUGEINT)[]", [{"quantity": 2 ** 126}] * 3),  # a sum past HUGEINT: no SQL error either
    ("STRUCT(quantity UHUGEINT)[]", [{"quantity": 2 ** 128 - 1}]),  # no HUGEINT holds it
    ("STRUCT(quantity UBIGINT)[]", [{"quantity": 2 ** 64 - 1}, {"quantity": 3}]),
    ("STRUCT(quantity DOUBLE)[]", [{"quantity": 2.5}]), ("STRUCT(quantity DOUBLE)[]", [{"quantity": 3.0}]),
    ("STRUCT(quantity DOUBLE)[]", [{"quantity": float("nan")}]), ("STRUCT(quantity DOUBLE)[]", [{"quantity": -0.0}]),
    ("STRUCT(quantity DECIMAL(10, 2))[]", [{"quantity": Decimal("2.00")}]),
    ("STRUCT(quantity DECIMAL(10, 2))[]", [{"quantity": Decimal("2.50")}]),
    ("STRUCT(price DOUBLE)[]", [{"price": float("inf")}]), ("STRUCT(price DOUBLE)[]", [{"price": 0.1}]),
    ("STRUCT(price DOUBLE)[]", [{"price": 1e300}]), ("STRUCT(price BIGINT)[]", [{"price": 12}]),
    ("STRUCT(price DECIMAL(38, 10))[]", [{"price": Decimal("123456789.0123456789")}]),  # beyond 53 bits: Python
    ("STRUCT(price DECIMAL(38, 10))[]", [{"price": Decimal("12345678901234567890.0000000000")}]),
    ("STRUCT(price DECIMAL(38, 0))[]", [{"price": Decimal(2 ** 63)}]),
    ("STRUCT(price DECIMAL(18, 3))[]", [{"price": Decimal("0.001")}, {"price": Decimal("9007199254740.991")}]),
    ("STRUCT(price DECIMAL(38, 3))[]", [{"price": Decimal("9007199254740993.000")}]),  # whole: exact
    ("STRUCT(content_id BIGINT)[]", [{"content_id": -42}, {"content_id": 2 ** 63 - 1}]),
    ("STRUCT(Content_Id VARCHAR, sku VARCHAR, quantity INTEGER)[]", [{"Content_Id": "A", "sku": "B", "quantity": 1}]),
    ("STRUCT(note VARCHAR)[]", [{"note": "not a TikTok key"}]),
    ("STRUCT(brand VARCHAR, content_category VARCHAR, quantity INTEGER, content_id VARCHAR)[]",
     [{"brand": " Acme ", "content_category": "Hüte", "quantity": 1, "content_id": "Z"}]),
]


@pytest.mark.parametrize(("items_type", "items"), POISON, ids=[f"{i}-{repr(v)[:40]}" for i, (_, v) in enumerate(POISON)])
def test_poison_item_lists_render_as_python_builds_them(tmp_path, items_type, items) -> None:
    """The poisoned list in a row between valid ones: each row is Python's event or Python's reject."""
    names = re.findall(r"(\w+) [A-Z]+", items_type.removeprefix("STRUCT"))
    valid = [{name: {"content_id": 7 if "content_id BIGINT" in items_type else "SKU-7", "quantity": 1,
                     "price": 1}.get(name, "x") for name in names}]
    rows = [_row(0, valid), _row(1, items), _row(2, valid)]
    _table(tmp_path / "wh.duckdb", rows, items_type)
    rendered, fallback = _both_paths(tmp_path / "wh.duckdb", _mapping())
    assert rendered + fallback == 3 and rendered >= 2


@pytest.mark.parametrize("given_columns", [(), ("content_type",), ("content_ids", "num_items"),
                                           ("content_type", "content_ids", "num_items")])
def test_fields_the_mapping_gives_are_not_derived(tmp_path, given_columns) -> None:
    """content_type, content_ids and num_items from their columns stay where the mapping puts them and are not
    derived; a NULL in the column lets contents[] derive it (as Python does)."""
    rows = []
    for n in range(8):
        values = {"content_type": ["product_group", None][n % 2], "content_ids": ["A, B", None][n // 2 % 2],
                  "num_items": [7, None][n // 4 % 2]}
        rows.append(_row(n, [_item(n), _item(n + 1)], **values))
    _table(tmp_path / "wh.duckdb", rows)
    assert _both_paths(tmp_path / "wh.duckdb", _mapping(given_columns)) == (8, 0)
    constants = {"properties.content_type": "product", "properties.num_items": 3}
    assert _both_paths(tmp_path / "wh.duckdb", _mapping(constants=constants)) == (8, 0)


TEXT = st.text(st.sampled_from(["a", "Z", "é", "👕", " ", "\t", "\u00a0", "\u3000", '"', "\\", ",", "\n", "0"]),
               max_size=8) | st.none()
NUMBER_TYPES = {"DECIMAL(12, 2)": st.decimals(min_value=Decimal("-2"), max_value=Decimal("9999999999.99"), places=2),
                "DECIMAL(38, 6)": st.decimals(min_value=Decimal("-1"), max_value=Decimal("10") ** 31, places=6),
                "DOUBLE": st.floats(allow_nan=True, allow_infinity=True),
                "BIGINT": st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1),
                "HUGEINT": st.integers(min_value=-(2 ** 127), max_value=2 ** 127 - 1),
                "UHUGEINT": st.integers(min_value=0, max_value=2 ** 128 - 1)}


@st.composite
def _item_lists(draw: st.DrawFn) -> tuple[str, list[list[dict[str, Any] | None] | None]]:
    """A struct type (TikTok's keys in any order, some left out, an unknown one) and rows of lists of it."""
    keys = draw(st.permutations(["content_id", "content_name", "brand", "price", "quantity", "color"]))
    keys = keys[:draw(st.integers(min_value=1, max_value=len(keys)))]
    types = {key: (draw(st.sampled_from(["VARCHAR", "BIGINT"])) if key == "content_id" else
                   draw(st.sampled_from(list(NUMBER_TYPES))) if key in ("price", "quantity") else "VARCHAR")
             for key in keys}
    values = {key: (TEXT if kind == "VARCHAR" else NUMBER_TYPES[kind] | st.none()) for key, kind in types.items()}
    item = st.fixed_dictionaries(values) | st.none() if draw(st.booleans()) else st.fixed_dictionaries(values)
    lists = draw(st.lists(st.lists(item, max_size=4) | st.none(), min_size=1, max_size=6))
    return f"STRUCT({', '.join(f'{key} {kind}' for key, kind in types.items())})[]", lists


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_item_lists())
def test_generated_item_lists_render_as_python_builds_them(tmp_path, generated) -> None:
    items_type, lists = generated
    _table(tmp_path / "wh.duckdb", [_row(n, items) for n, items in enumerate(lists)], items_type)
    rendered, fallback = _both_paths(tmp_path / "wh.duckdb", _mapping())
    assert rendered + fallback == len(lists)


def test_a_sync_renders_an_item_list_column_in_duckdb(make_project, order, now, fake_tiktok, capsys) -> None:
    """Through the CLI: the sync's query renders contents[], TikTok gets every order with its items in the list's
    order, and a second run sends nothing. DuckDB sorts its pages of wide rows in 256MB (they spill at 64MB)."""
    rows = [order(n, now - dt.timedelta(hours=2)) for n in range(1, 31)]
    mapping = {"fields": {"event": "event_name", "event_id": "order_id", "event_time": "ordered_at",
                          "user.email": "email", "properties.value": "total", "properties.currency": "currency",
                          "properties.contents": "items", "properties.description": "memory"},
               "events": {"purchase": "Purchase"}}
    query = ("select o.*, [{'content_id': 'SKU-' || o.order_id, 'price': 1.5, 'quantity': 2}, "
             "{'content_id': 'GIFT', 'price': 0.0, 'quantity': 1}] as items, "
             "current_setting('memory_limit') as memory from orders o\n")
    project = make_project(rows, mapping=mapping, query=query)
    code, out, err = cli(capsys, "preview", "orders", "--project", str(project.root), "--json", "--limit", "1")
    assert code == 0, out + err
    [preview] = json_lines(out)
    assert "struct_extract_at" in preview["sql"] and JSON_COLUMNS[0] in preview["sql"]
    code, out, err = cli(capsys, "sync", "--project", str(project.root), "--json")
    assert code == 0, out + err
    assert [r["events_sent"] for r in json_lines(out)] == [30]
    sent = {e.event["event_id"]: e.event["properties"] for e in fake_tiktok.accepted()}
    assert len(sent) == 30
    assert sent["ORD-00007"]["contents"] == [{"content_id": "SKU-ORD-00007", "price": 1.5, "quantity": 2},
                                             {"content_id": "GIFT", "price": 0, "quantity": 1}]
    assert sent["ORD-00007"]["content_ids"] == ["SKU-ORD-00007", "GIFT"] and sent["ORD-00007"]["num_items"] == 3
    assert {properties["description"] for properties in sent.values()} == {"244.1 MiB"}  # 256MB
    code, out, err = cli(capsys, "sync", "--project", str(project.root), "--json")
    assert code == 0 and [r["events_sent"] for r in json_lines(out)] == [0], out + err


def test_an_item_list_sql_cannot_render_goes_through_python(make_project, order, now, fake_tiktok, capsys) -> None:
    """A struct field of a type SQL does not render for its key (a quantity as text, a content id as a list) sends
    the whole sync through the Python builder, which converts it as always."""
    rows = [order(n, now - dt.timedelta(hours=2)) for n in range(1, 6)]
    mapping = {"fields": {"event": "event_name", "event_id": "order_id", "event_time": "ordered_at",
                          "user.email": "email", "properties.contents": "items"}, "events": {"purchase": "Purchase"}}
    query = "select o.*, [{'content_id': 'A', 'quantity': ' 2 '}] as items from orders o\n"
    project = make_project(rows, mapping=mapping, query=query)
    code, out, err = cli(capsys, "preview", "orders", "--project", str(project.root), "--json", "--limit", "1")
    assert code == 0, out + err
    assert JSON_COLUMNS[0] not in json_lines(out)[0]["sql"]
    code, out, err = cli(capsys, "sync", "--project", str(project.root), "--json")
    assert code == 0 and [r["events_sent"] for r in json_lines(out)] == [5], out + err
    assert {str(e.event["properties"]["contents"]) for e in fake_tiktok.accepted()} == \
        {"[{'content_id': 'A', 'quantity': 2}]"}
