"""Render a sync's Jinja query and wrap it with the read window, with every value a bound parameter."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jinja2

from . import payload
from .dialects import Dialect, MacroError
from .errors import ConfigError
from .files import read_utf8
from .mapping import CompiledMapping, Slot
from .state import CursorForm

SOURCE_ALIAS = "tiktok_source"
ROW_NUMBER_COLUMN = "tiktok_row_number"
# Item rows rendered by DuckDB: each row's event cursor and the row number of its event's first row, beside
# the user's columns; the item's JSON among the rendered columns.
EVENT_CURSOR_COLUMN = "tiktok_event_cursor"
EVENT_FIRST_COLUMN = "tiktok_event_first"
FIRST_ROW_COLUMN = "tiktok_first_row"  # true on the event's first row
ITEM_JSON_COLUMN = "tiktok_item_json"


@dataclass(frozen=True)
class ReadWindow:
    """Rows to read: `start <= cursor` (closed: ties at the watermark are re-read, the ledger drops the
    ones already sent); no start on a first run."""

    start: Any = None


@dataclass(frozen=True)
class Page:
    """A slice of the read window by cursor, read with its own ORDER BY so the warehouse never sorts more
    than a page (embedded DuckDB sorts in the connector's memory). No bounds: the whole window."""

    lower: Any = None
    lower_inclusive: bool = True
    upper: Any = None
    upper_inclusive: bool = False  # an upper bound equal to `lower`: one page of ties
    # A page of ties holds more rows than a page: it is read in `parts` slices by a hash of the event id,
    # each small enough to fetch whole, and none sorted (every row has the same cursor).
    part: int = 0
    parts: int = 1

    @property
    def first(self) -> bool:
        return self.lower is None  # rows with a NULL cursor come first, with the first page

    @property
    def ties(self) -> bool:
        return self.upper_inclusive

    def following(self) -> Page | None:
        """The next slice of a page of ties, or the page after this one (None after the last page)."""
        if self.ties and self.part + 1 < self.parts:
            return replace(self, part=self.part + 1)
        return None if self.upper is None else Page(lower=self.upper, lower_inclusive=not self.upper_inclusive)


def _cursor_conditions(column: str, window: ReadWindow, page: Page,
                       tie_key: str | None = None) -> tuple[list[str], dict[str, Any]]:
    conditions: list[str] = []
    params: dict[str, Any] = {}
    if window.start is not None:
        conditions.append(f"{column} >= :window_start")
        params["window_start"] = window.start
    if page.ties:
        conditions.append(f"{column} = :page_lower")
        params["page_lower"] = page.lower
        if page.parts > 1:  # DuckDB's hash(), 64 bits: only DuckDB reads page by page
            assert tie_key is not None, "a page of ties is sliced by its event id column"
            # A range of hashes, not a remainder: DuckDB filters a range while it scans, reading the other
            # columns only for the rows in the slice (each slice reads every tie; a remainder took 2× longer).
            hashed = f"hash({SOURCE_ALIAS}.{quote(tie_key)})"
            conditions.append(f"{hashed} >= :tie_from")
            params["tie_from"] = page.part * 2**64 // page.parts
            if page.part + 1 < page.parts:
                conditions.append(f"{hashed} < :tie_to")
                params["tie_to"] = (page.part + 1) * 2**64 // page.parts
        return conditions, params
    if page.lower is not None:
        conditions.append(f"{column} {'>=' if page.lower_inclusive else '>'} :page_lower")
        params["page_lower"] = page.lower
    if page.upper is not None:
        below = f"{column} {'<=' if page.upper_inclusive else '<'} :page_upper"
        conditions.append(f"({below} or {column} is null)" if page.first else below)
        params["page_upper"] = page.upper
    return conditions, params


def page_boundary_sql(rendered: str, cursor: str, window: ReadWindow, page: Page,
                      page_rows: int) -> tuple[str, dict[str, Any]]:
    """The cursor `page_rows` rows into the page's remaining rows (no row: this is the last page)."""
    column = f"{SOURCE_ALIAS}.{quote(cursor)}"
    conditions, params = _cursor_conditions(column, window, replace(page, upper=None))
    conditions.append(f"{column} is not null")
    params["page_rows"] = page_rows
    return (f"select {column}\nfrom (\n{rendered}\n) as {SOURCE_ALIAS}\nwhere {' and '.join(conditions)}"
            f"\norder by {column}\nlimit 1 offset :page_rows", params)


class _Utf8Loader(jinja2.FileSystemLoader):
    """Query files, included ones too: a file that is not UTF-8 is a ConfigError naming it."""

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str | None, Callable[[], bool]]:
        try:
            return super().get_source(environment, template)
        except jinja2.TemplateNotFound:  # an OSError too
            raise
        except (UnicodeDecodeError, OSError):
            read_utf8(Path(self.searchpath[0], *template.split("/")))  # raises the ConfigError
            raise


def tie_count_sql(rendered: str, cursor: str, window: ReadWindow, page: Page) -> tuple[str, dict[str, Any]]:
    """The number of rows of a page of ties (every row with the cursor `page.lower`)."""
    column = f"{SOURCE_ALIAS}.{quote(cursor)}"
    conditions, params = _cursor_conditions(column, window, replace(page, parts=1))
    return f"select count(*)\nfrom (\n{rendered}\n) as {SOURCE_ALIAS}\nwhere {' and '.join(conditions)}", params


def render(queries_dir: Path, name: str, dialect: str, context: dict[str, Any]) -> str:
    """Render `queries/<dialect>/<name>` if it exists, else `queries/<name>`, with the dialect's macros."""
    loader = _Utf8Loader(str(queries_dir))
    env = jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.globals.update(Dialect(dialect).macros(), dialect=dialect)
    candidates = [f"{dialect}/{name}", name]
    try:
        template = env.select_template(candidates)
        return template.render(**context).strip().rstrip(";").strip()
    except jinja2.TemplatesNotFound:
        raise ConfigError(str(queries_dir / name), "query file not found",
                          "create it, or fix 'query:' in connector.yml") from None
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{exc.filename or queries_dir / name}:{exc.lineno}", f"Jinja syntax error: {exc.message}",
                          "fix the template") from None
    except jinja2.UndefinedError as exc:
        raise ConfigError(str(queries_dir / name), f"Jinja: {exc.message}",
                          "define it under the sync's 'vars:' in connector.yml") from None
    except MacroError as exc:
        raise ConfigError(str(queries_dir / name), f"Jinja: {exc}", exc.hint) from None
    except (jinja2.TemplateError, ArithmeticError, LookupError, RecursionError, TypeError, ValueError) as exc:
        # A template that fails while it renders (a macro called wrongly, arithmetic on text) is the
        # query file's mistake, not the connector's.
        raise ConfigError(str(queries_dir / name), f"Jinja: {exc.__class__.__name__}: {str(exc)[:300]}",
                          "fix the template") from None


_NO_DEFAULT = object()


def env_var_function(env: Mapping[str, str]) -> Callable[..., Any]:
    """`{{ env_var('REGION', 'US') }}` in a template: the project's environment (the process's, then its .env),
    as dbt's env_var. Without a default an unset variable is the template's mistake."""
    def env_var(name: str, default: Any = _NO_DEFAULT) -> Any:
        value = env.get(str(name))
        if value is not None:
            return value
        if default is _NO_DEFAULT:
            raise MacroError(f"env_var({name!r}): the environment variable is not set",
                             f"export {name}=..., put it in the project's .env, or give a default: "
                             f"env_var('{name}', 'default')")
        return default
    return env_var


def quote(identifier: str) -> str:
    """A column name exactly as the warehouse reported it."""
    return '"' + identifier.replace('"', '""') + '"'


@dataclass(frozen=True)
class SelectPlan:
    """What the wrapped query selects: only the columns the mapping and cursor use, each converted in
    SQL where the warehouse does it faster than Python (epoch seconds, doubles) or must (hashing)."""

    items: tuple[tuple[str, str], ...]  # (alias, SQL expression over the user's query)
    mapping: CompiledMapping  # slots re-pointed at `items`
    cursor_index: int = 0
    cursor_form: CursorForm = CursorForm()
    params: dict[str, Any] = field(default_factory=dict)  # bound by the items' expressions
    # Columns added to the user's query for the items to use, in layers: each layer may use the ones below.
    prepared: tuple[tuple[tuple[str, str], ...], ...] = ()
    rendered_from: int | None = None  # index of the warehouse-rendered event JSON among the items
    dialect: str = ""
    # What each item's value is (a warehouse kind: text, int, decimal, float, timestamp…), once converted.
    value_kinds: tuple[str, ...] = ()

    def rendering(self, items: tuple[tuple[str, str], ...], params: dict[str, Any],
                  prepared: tuple[tuple[tuple[str, str], ...], ...]) -> SelectPlan:
        """The plan plus the items of events the warehouse renders (`items[0]` is their JSON)."""
        return replace(self, items=self.items + items, params={**self.params, **params},
                       prepared=self.prepared + prepared, rendered_from=len(self.items))


TIME_KINDS = frozenset({"timestamptz", "timestamp", "date"})


def plan_select(compiled: CompiledMapping, columns: list[str], kinds: list[str], cursor_index: int,
                dialect: Dialect, hashing: dict[str, Callable[[str], str]] | None = None) -> SelectPlan:
    items: list[tuple[str, str]] = []
    value_kinds: list[str] = []
    positions: dict[tuple[int, str], int] = {}

    def select(index: int, conversion: str = "") -> int:
        key = (index, conversion)
        if key not in positions:
            source = f"{SOURCE_ALIAS}.{quote(columns[index])}"
            expression = {"": source, "epoch": dialect.epoch_seconds(source), "double": dialect.as_double(source),
                          "utc": f"cast({source} as timestamp)",  # the session time zone is UTC
                          "hash": hashing[conversion_path[index]](source) if hashing and index in conversion_path
                          else source}[conversion]
            positions[key] = len(items)
            items.append((quote(f"{columns[index]}__{conversion}" if conversion else columns[index]), expression))
            value_kinds.append({"epoch": "int", "double": "float", "utc": "timestamp", "hash": "text"}.get(
                conversion, kinds[index] if index < len(kinds) else "other"))
        return positions[key]

    conversion_path: dict[int, str] = {}
    utc_naive = dialect.name == "duckdb" and kinds[cursor_index:cursor_index + 1] == ["timestamptz"]
    select(cursor_index, "utc" if utc_naive else "")

    def repoint(slot: Slot) -> Slot:
        if slot.index is None:
            return slot
        kind, column_kind = payload.FIELDS[slot.path][0], kinds[slot.index] if slot.index < len(kinds) else "other"
        if hashing and slot.path in hashing:
            conversion_path[slot.index] = slot.path
            return replace(slot, index=select(slot.index, "hash"))
        if kind == "time" and column_kind in TIME_KINDS:
            return replace(slot, index=select(slot.index, "epoch"), unix_seconds=True)
        if kind in ("money", "number") and column_kind == "decimal":
            return replace(slot, index=select(slot.index, "double"))
        return replace(slot, index=select(slot.index))

    mapping = replace(compiled, slots=tuple(repoint(s) for s in compiled.slots),
                      item_slots=tuple(repoint(s) for s in compiled.item_slots))
    return SelectPlan(tuple(items), mapping, 0, CursorForm(utc_naive), dialect=dialect.name,
                      value_kinds=tuple(value_kinds))


def incremental_sql(rendered: str, plan: SelectPlan, cursor: str, window: ReadWindow,
                    group_by: str | None, page: Page = Page(),
                    tie_key: str | None = None) -> tuple[str, dict[str, Any]]:
    """The user's query as a subquery, filtered by the window and ordered by cursor (a page of ties, whose
    rows share one cursor, is not sorted; `tie_key` is the column its slices are hashed by).

    With `group_by` (the event id column of one-row-per-item queries) the rows of one event stay together
    and in the query's order: they share the event's newest cursor, and sort by it, the event id, then
    their position in the query's result."""
    if group_by:
        return _grouped_sql(rendered, plan, cursor, window, group_by)
    column = f"{SOURCE_ALIAS}.{quote(cursor)}"
    select = ",\n       ".join(f"{expression} as {alias}" for alias, expression in plan.items)
    conditions, params = _cursor_conditions(column, window, page, tie_key)
    params.update(plan.params)
    # PostgreSQL inlines a subquery's columns into each use of them: every layer's expressions would be
    # copied into every one above (exponentially). An ordered subquery stays one, so there each layer is
    # ordered by the cursor: the rows are sorted once, below the layers, and stream through them.
    order = f"\norder by {column} nulls first" if plan.dialect == "postgresql" and plan.prepared else ""
    if conditions or order:  # on the user's rows, below the columns computed from them: DuckDB does not push a
        # slice of ties (a hash) down through them, and would render every tie for each slice
        where = f"\nwhere {' and '.join(conditions)}" if conditions else ""
        rendered = f"select *\nfrom (\n{rendered}\n) as {SOURCE_ALIAS}{where}{order}"
    rendered = _with_layers(rendered, plan.prepared, order)  # DuckDB's ORDER BY stays outermost
    sql = f"select {select}\nfrom (\n{rendered}\n) as {SOURCE_ALIAS}"
    if plan.rendered_from is not None:
        sql, column = _without_rendered_columns(sql + order, plan), f"tiktok_rows.{plan.items[0][0]}"
    if page.ties:
        return sql, params
    # NULL cursors first: they are rejected, never hidden behind the upper bound. Outermost, because
    # DuckDB does not keep a subquery's order when it reads in parallel.
    return sql + f"\norder by {column} nulls first", params


def _with_layers(source: str, prepared: tuple[tuple[tuple[str, str], ...], ...], order: str = "") -> str:
    """`source` with the columns the rendered items share, each computed once per row, a layer per subquery."""
    for layer in prepared:
        extra = ", ".join(f"{expression} as {alias}" for alias, expression in layer)
        source = f"select {SOURCE_ALIAS}.*, {extra}\nfrom (\n{source}\n) as {SOURCE_ALIAS}{order}"
    return source


def _numbered(rendered: str) -> str:
    """The query's rows with their place in its result."""
    return f"select *, row_number() over () as {ROW_NUMBER_COLUMN}\nfrom (\n{rendered}\n) as tiktok_query"


def _without_rendered_columns(sql: str, plan: SelectPlan) -> str:
    """Rows the warehouse rendered need no source columns: NULL is cheaper to sort and to fetch."""
    assert plan.rendered_from is not None
    json_alias = plan.items[plan.rendered_from][0]
    columns = [f"tiktok_rows.{alias}" if i == plan.cursor_index or i >= plan.rendered_from
               else f"case when tiktok_rows.{json_alias} is null then tiktok_rows.{alias} end as {alias}"
               for i, (alias, _) in enumerate(plan.items)]
    return "select " + ",\n       ".join(columns) + f"\nfrom (\n{sql}\n) as tiktok_rows"


def _grouped_sql(rendered: str, plan: SelectPlan, cursor: str, window: ReadWindow,
                 group_by: str) -> tuple[str, dict[str, Any]]:
    if plan.rendered_from is not None:
        return _rendered_groups_sql(rendered, plan, window, group_by)
    (cursor_alias, cursor_expression), *others = plan.items
    key = f"{SOURCE_ALIAS}.{quote(group_by)}"
    source = f"(\n{_numbered(rendered)}\n) as {SOURCE_ALIAS}"
    event_cursor = f"max({cursor_expression}) over (partition by {key})"
    if plan.dialect == "duckdb":
        # Embedded DuckDB sorts in this process: an aggregate joined back spills to disk within memory_limit,
        # where a second window over the same rows runs out of memory (5M item rows: 64MB on one thread).
        events = (f"select {key} as tiktok_event_key, max({cursor_expression}) as tiktok_event_cursor\n"
                  f"from (\n{rendered}\n) as {SOURCE_ALIAS}\ngroup by 1")
        source += f"\njoin (\n{events}\n) as tiktok_events on tiktok_events.tiktok_event_key is not distinct from {key}"
        event_cursor = "tiktok_events.tiktok_event_cursor"
    select = ",\n       ".join([f"{event_cursor} as {cursor_alias}",
                                *(f"{expression} as {alias}" for alias, expression in others),
                                f"{key} as tiktok_event_key", f"{SOURCE_ALIAS}.{ROW_NUMBER_COLUMN}"])
    sql = f"select * from (\nselect {select}\nfrom {source}\n) as tiktok_rows"
    params: dict[str, Any] = dict(plan.params)
    if window.start is not None:
        sql += f"\nwhere tiktok_rows.{cursor_alias} >= :window_start"
        params["window_start"] = window.start
    sql += f"\norder by tiktok_rows.{cursor_alias} nulls first, tiktok_event_key, {ROW_NUMBER_COLUMN}"
    return sql, params


# The kinds of value _rendered_groups_sql passes to Python as text (connector/sql_events.py reads them back).
TEXT_PASSED_KINDS = frozenset({"text", "int", "decimal", "float"})


def _rendered_groups_sql(rendered: str, plan: SelectPlan, window: ReadWindow,
                         group_by: str) -> tuple[str, dict[str, Any]]:
    """Item rows DuckDB renders (connector/sql_events.py): (event cursor, head, item JSON, content id,
    quantity, source values, event's first row number) in the order of the event cursor, then the event,
    then the row's place in the query. The query's rows are numbered once (a materialized CTE: read twice
    in parallel they could be numbered differently), joined to their event's newest cursor and first row
    number, and sorted; the rendered columns (the plan's prepared layers first) are computed on the sorted
    rows, whose order projections keep.

    DuckDB sorts in this process, within memory_limit: it sorts the query's columns, shorter than the JSON
    rendered from them (hashes are 64 characters). Python gets the cursor on an event's first row only, and
    the source values (`plan.items` but the cursor and the rendered ones, as a list of text) only on the rows
    it reads: a first row whose head SQL left to Python, a row whose item it left."""
    assert plan.rendered_from is not None
    cursor_alias, cursor_expression = plan.items[0]
    key = f"{SOURCE_ALIAS}.{quote(group_by)}"
    params: dict[str, Any] = dict(plan.params)
    having = ""
    if window.start is not None:
        having = f"\nhaving max({cursor_expression}) >= :window_start"
        params["window_start"] = window.start
    events = (f"select {key} as tiktok_event_key, max({cursor_expression}) as {EVENT_CURSOR_COLUMN}, "
              f"min({SOURCE_ALIAS}.{ROW_NUMBER_COLUMN}) as {EVENT_FIRST_COLUMN}\n"
              f"from tiktok_numbered as {SOURCE_ALIAS}\ngroup by 1{having}")
    source = (f"select {SOURCE_ALIAS}.*, tiktok_events.{EVENT_CURSOR_COLUMN}, tiktok_events.{EVENT_FIRST_COLUMN}, "
              f"{SOURCE_ALIAS}.{ROW_NUMBER_COLUMN} = tiktok_events.{EVENT_FIRST_COLUMN} as {FIRST_ROW_COLUMN}\n"
              f"from tiktok_numbered as {SOURCE_ALIAS}\njoin (\n{events}\n) as tiktok_events "
              f"on tiktok_events.tiktok_event_key is not distinct from {key}\n"
              f"order by tiktok_events.{EVENT_CURSOR_COLUMN} nulls first, tiktok_events.{EVENT_FIRST_COLUMN}, "
              f"{SOURCE_ALIAS}.{ROW_NUMBER_COLUMN}")
    source = _with_layers(source, plan.prepared)
    rendered_items = plan.items[plan.rendered_from:]
    source = (f"select {SOURCE_ALIAS}.*, {', '.join(f'{expression} as {alias}' for alias, expression in rendered_items)}"
              f"\nfrom (\n{source}\n) as {SOURCE_ALIAS}")
    head, item, content_id, quantity = (f"{SOURCE_ALIAS}.{alias}" for alias, _ in rendered_items)
    # The plan's source items, as text: computed on the rows Python reads only
    texts = ", ".join(f"cast(cast({expression} as double) as varchar)" if kind == "float"
                      else f"cast({expression} as varchar)"
                      for (_, expression), kind in zip(plan.items[1:plan.rendered_from], plan.value_kinds[1:]))
    read_by_python = f"({SOURCE_ALIAS}.{FIRST_ROW_COLUMN} and {head} is null) or {item} is null"
    listed = ",\n       ".join([
        f"case when {SOURCE_ALIAS}.{FIRST_ROW_COLUMN} then {SOURCE_ALIAS}.{EVENT_CURSOR_COLUMN} end as {cursor_alias}",
        head, item, content_id, quantity,
        f"case when {read_by_python} then [{texts}] end as tiktok_source_values",
        f"{SOURCE_ALIAS}.{EVENT_FIRST_COLUMN}"])
    sql = f"with tiktok_numbered as materialized (\n{_numbered(rendered)}\n)\nselect {listed}\nfrom (\n{source}\n) as {SOURCE_ALIAS}"
    return sql, params
