"""Warehouse adapters: stream a query's rows in chunks, and run the small statements of the state store.

DuckDB URLs (`duckdb:///file.duckdb`) use DuckDB's own driver; any other URL goes through SQLAlchemy
with server-side cursors. SQL given to `Connection` uses `:name` bind parameters everywhere.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import (ConfigError, MissingDatabase, QueryError, SyncLocked, WarehouseBusy, WarehouseError,
                     mask_literals)

log = logging.getLogger("connector.warehouse")
# SQLAlchemy logs an error while closing a cursor with its traceback, SQL and all. That is the driver's
# record, not the connector's output: it reaches an application's own logging when it set some up, and
# never stderr through Python's last-resort handler.
logging.getLogger("sqlalchemy").addHandler(logging.NullHandler())

DRIVER_HINTS = {
    "postgresql": "pip install 'tiktok-connector[postgres]' (psycopg2)",
    "snowflake": "pip install snowflake-sqlalchemy",
}


# DuckDB's LIST of STRUCT columns (items): column index → each field's name and DuckDB type, in order.
StructLists = dict[int, tuple[tuple[str, str], ...]]


@dataclass
class ResultStream:
    columns: list[str]
    chunks: Iterator[list[tuple[Any, ...]]]
    release: Callable[[], None]
    # One kind per column: timestamptz, timestamp, date, decimal, int, float, text or other.
    kinds: list[str] = field(default_factory=list)
    struct_lists: StructLists = field(default_factory=dict)

    def close(self) -> None:
        """Stop reading: frees the cursor even when the chunks were never (or not fully) read."""
        close_chunks = getattr(self.chunks, "close", None)
        if close_chunks:
            close_chunks()
        self.release()

    def __enter__(self) -> ResultStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Connection(Protocol):
    dialect: str
    insert_is_atomic: bool  # insert_many is one statement: outside transaction() it commits alone, whole
    max_in_values: int | None  # values one in_values list may hold (None: any number, bound as one parameter)
    events_per_commit: int  # acknowledged events a state commit may wait for (0: each batch commits at once)
    commits_in_background: bool  # another process (a server): state commits run on a helper thread

    def in_values(self, name: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]: ...

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> None: ...
    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]: ...
    def insert_many(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                    constants: dict[str, Any] | None = None) -> None: ...
    def transaction(self) -> Any: ...
    def sibling(self) -> Connection: ...  # another connection to the same store, for another thread
    def close(self) -> None: ...


class Warehouse(Protocol):
    dialect: str

    def stream(self, sql: str, params: dict[str, Any], chunk_size: int) -> ResultStream: ...
    def connect(self) -> Connection: ...
    def close(self) -> None: ...


def open_warehouse(url: str, options: dict[str, Any] | None = None, *, read_only: bool = False) -> Warehouse:
    """`read_only`: open a DuckDB file read-only (MissingDatabase when there is none, so none is created);
    other warehouses are opened as always, and the caller runs no DDL or writes on them."""
    if url.startswith("duckdb://"):
        options = options or {}
        return DuckDBWarehouse(url[len("duckdb:///"):] or ":memory:", options.get("memory_limit"),
                               options.get("threads"), read_only=read_only)
    if url.startswith("snowflake://"):
        from .snowflake_warehouse import SnowflakeWarehouse
        return SnowflakeWarehouse(url, options or {})
    return SQLAlchemyWarehouse(url)


_NAMED_MARKER = re.compile(r"(?<![:\w]):([A-Za-z_][A-Za-z0-9_]*)")


def bind_named(sql: str, params: dict[str, Any] | None, placeholder: str) -> str:
    """Rewrite the `:name` markers of the given parameters (and only those) to a driver's style,
    e.g. `$name` or `%(name)s`; any other colon in the SQL is left alone."""
    if not params:
        return sql
    return _NAMED_MARKER.sub(
        lambda m: placeholder.format(m.group(1)) if m.group(1) in params else m.group(0), sql)


POSTGRES_KINDS = {1184: "timestamptz", 1114: "timestamp", 1082: "date", 1700: "decimal", 20: "int", 21: "int",
                  23: "int", 700: "float", 701: "float", 25: "text", 1043: "text"}


def duckdb_kind(type_name: str) -> str:
    name = type_name.upper()
    if name.endswith("]"):
        return "other"
    if name in ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"):
        return "timestamptz"
    if name.startswith("TIMESTAMP"):
        return "timestamp"
    if name == "DATE":
        return "date"
    if name.startswith("DECIMAL"):
        return "decimal"
    if name in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
                "UBIGINT", "UHUGEINT"):
        return "int"
    if name in ("DOUBLE", "FLOAT", "REAL"):
        return "float"
    if name == "VARCHAR":
        return "text"
    return "other"


def _struct_list(duckdb_type: Any) -> tuple[tuple[str, str], ...] | None:
    """A LIST of STRUCT type's fields (name, DuckDB type), or None for any other type."""
    try:
        if duckdb_type.id != "list":
            return None
        [(_, element)] = duckdb_type.children
        if element.id != "struct":
            return None
        return tuple((name, str(field_type)) for name, field_type in element.children)
    except (AttributeError, ValueError):  # a driver whose types do not describe themselves
        return None


_UNITS = {"kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}  # as DuckDB reads them


def _memory_bytes(text: str) -> int:
    """A size like 256MB or 2GB, in bytes; anything else is refused before it reaches SQL."""
    size = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(KB|MB|GB|KiB|MiB|GiB)", text.strip(), flags=re.I)
    if size is None:
        raise ConfigError("connector.yml: warehouse.memory_limit", f"{text!r} is not a size", "e.g. 256MB or 2GB")
    return int(float(size.group(1)) * _UNITS[size.group(2).lower()])


class _FileMemory:
    """DuckDB keeps one database per file in a process, with one memory_limit: the warehouses open on one file
    at once (the jobs of `sync --threads N`) each hold a share of it, and the file's limit is their sum."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._shares: dict[str, dict[int, int]] = {}  # file → id(warehouse) → bytes

    def hold(self, con: Any, file: str, owner: object, size: int) -> None:
        """Give `owner` `size` bytes of the file's limit (its share until then is replaced)."""
        with self._lock:
            shares = self._shares.setdefault(file, {})
            others = sum(held for key, held in shares.items() if key != id(owner))
            con.execute(f"set memory_limit = '{others + size}B'")
            shares[id(owner)] = size

    def release(self, con: Any, file: str, owner: object) -> None:
        with self._lock:
            shares = self._shares.get(file, {})
            shares.pop(id(owner), None)
            if shares:
                con.execute(f"set memory_limit = '{sum(shares.values())}B'")
            else:
                self._shares.pop(file, None)


_FILE_MEMORY = _FileMemory()


def _thread_count(value: Any) -> int:
    """A positive whole number of threads; anything else is refused before it reaches SQL."""
    text = str(value).strip()
    if text.isascii() and text.isdigit() and int(text) >= 1:
        return int(text)
    raise ConfigError("connector.yml: warehouse.threads", f"{value!r} is not a number of threads",
                      "e.g. threads: 1 (DuckDB's default is one per core)")


def _duckdb_text(exc: Exception) -> str:
    """DuckDB's message. It may cut a value it quotes inside a character, and Python then fails to decode
    the message (UnicodeDecodeError, holding its bytes): decoded here, what cannot be replaced."""
    if isinstance(exc, UnicodeDecodeError) and isinstance(exc.object, bytes):
        return exc.object.decode("utf-8", "replace")
    return str(exc)


def _memory_hint(exc: Exception) -> str:
    """DuckDB's own advice names SQL settings; the connector's is a key in connector.yml."""
    if "out of memory" not in str(exc).lower():
        return ""
    return (f"\nThe connector runs DuckDB in its own process, with memory_limit {DEFAULT_MEMORY_LIMIT} "
            f"({ITEM_ROWS_MEMORY_LIMIT} for one row per item) and threads {DEFAULT_THREADS} unless connector.yml says "
            "otherwise: raise warehouse.memory_limit in connector.yml to "
            "give it more memory (each of warehouse.threads needs its share)")


def in_list(name: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """`(:name_0, :name_1, …)` and its parameters: an IN list with every value bound."""
    params = {f"{name}_{i}": value for i, value in enumerate(values)}
    return "(" + ", ".join(f":{key}" for key in params) + ")", params


_UNIT_SEPARATOR = "\x1f"


def _bound_list(name: str, values: Sequence[Any]) -> tuple[str, Any]:
    """A list bound as one parameter, and the SQL that reads it from column `tiktok_bound.<name>` (see
    `_bound_row`). Strings and integers travel as one joined string that DuckDB splits: binding a Python
    list converts every element on its own, which costs more than the insert itself."""
    column = f"{_BOUND}.{name}"
    kinds = set(map(type, values))
    if kinds == {str}:
        joined = _UNIT_SEPARATOR.join(values)
        if joined.count(_UNIT_SEPARATOR) == len(values) - 1:  # no value holds the separator itself
            return f"string_split({column}, chr(31))", joined
    elif kinds == {int}:
        return f"cast(string_split({column}, ',') as bigint[])", ",".join(map(str, values))
    return column, list(values)


_BOUND = "tiktok_bound"


def _bound_row(names: Sequence[str]) -> str:
    """The one-row subquery the bound lists are read from. Read as columns, DuckDB splits them as it runs;
    read as parameters, it folds them into constant lists first, one value at a time (about 15 % slower)."""
    return f"(select {', '.join(f':{name} as {name}' for name in names)}) as {_BOUND}"


class DuckDBConnection:
    dialect = "duckdb"
    insert_is_atomic = True
    max_in_values = None
    events_per_commit = 0
    commits_in_background = False  # DuckDB commits on this process's cores: no gain measured from a thread

    def __init__(self, con: Any) -> None:
        self._con = con

    @staticmethod
    def in_values(name: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
        # One parameter: far cheaper for DuckDB to plan than a thousand scalar ones.
        expression, bound = _bound_list(name, values)
        return f"(select unnest({expression}) from {_bound_row([name])})", {name: bound}

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self._run(sql, params)

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return self._run(sql, params).fetchall()  # state queries only: small, bounded results

    def _run(self, sql: str, params: dict[str, Any] | None) -> Any:
        import duckdb
        bound = bind_named(sql, params, "${}")
        try:
            return self._con.execute(bound, params or {})
        except (duckdb.Error, UnicodeDecodeError) as exc:
            raise driver_error(WarehouseError, "DuckDB", _duckdb_text(exc), bound, _memory_hint(exc)) from exc

    def insert_many(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                    constants: dict[str, Any] | None = None) -> None:
        if not rows:
            return
        # One statement over bound lists: DuckDB's executemany runs row by row and is slow. Values shared by
        # every row are bound once.
        constants = constants or {}
        params: dict[str, Any] = {}
        selects = []
        for i, values in enumerate(zip(*rows)):
            expression, params[f"c{i}"] = _bound_list(f"c{i}", values)
            selects.append(f"unnest({expression})")
        lists = list(params)
        for i, value in enumerate(constants.values()):
            params[f"k{i}"] = value
            selects.append(f":k{i}")
        names = ", ".join([*columns, *constants])
        self._run(f"insert into {table} ({names}) select {', '.join(selects)} from {_bound_row(lists)}", params)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self._run("begin transaction", None)
        try:
            yield
        except BaseException:
            quietly(lambda: self._con.execute("rollback"), "rolling back")
            raise
        try:
            self._run("commit", None)
        except WarehouseError:
            quietly(lambda: self._con.execute("rollback"), "rolling back")
            raise

    def sibling(self) -> Connection:
        return DuckDBConnection(self._con.cursor())

    def close(self) -> None:
        quietly(self._con.close, "closing a DuckDB connection")


# DuckDB runs inside the connector's process, where by default it would take 80 % of the machine's memory and
# keep every block it has read cached up to that, so a sync's memory grew with the table and its ledger. A
# page of rows sorts in well under this; a heavier query spills to a temporary directory next to the DuckDB
# file (`<file>.tmp`). One thread: DuckDB needs its share of memory per thread to spill, and shares the cores
# with the senders and the state commits.
DEFAULT_MEMORY_LIMIT = "64MB"
DEFAULT_THREADS = 1
# One row per item is one query sorting the whole result (query._rendered_groups_sql): at 64MB its merge runs
# out of memory between 2M and 3M item rows; with this, 5M item rows ran with 445 MB peak RSS.
ITEM_ROWS_MEMORY_LIMIT = "256MB"


class DuckDBWarehouse:
    dialect = "duckdb"

    def __init__(self, path: str, memory_limit: str | None = None, threads: int | str | None = None,
                 read_only: bool = False) -> None:
        import duckdb
        self.path = path
        self.memory_limit_configured = memory_limit is not None
        # Settings are checked before DuckDB opens the file: a mistake in them creates nothing.
        self._memory = _memory_bytes(memory_limit or DEFAULT_MEMORY_LIMIT)
        self._file = f":memory:{id(self)}" if path == ":memory:" else os.path.realpath(path)
        thread_count = _thread_count(threads) if threads is not None else DEFAULT_THREADS
        read_only = read_only and path != ":memory:"
        if read_only and not os.path.exists(path):
            raise MissingDatabase(f"the DuckDB file {path} does not exist")
        try:
            self._con = duckdb.connect(path, read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                holder = re.search(r"PID (\d+)", str(exc))
                pid = f" (PID {holder.group(1)})" if holder else ""
                if read_only:  # DuckDB lets no other process read a file while one writes it
                    raise WarehouseBusy(f"the DuckDB file {path} is open for writing in another process{pid}, "
                                        "most likely a sync of this project; DuckDB lets no other process read "
                                        "it meanwhile: try again when it has finished") from exc
                raise SyncLocked(f"the DuckDB file {path} is open in another process{pid}, most likely a run of "
                                 "this project; nothing was done, try again when it has finished") from exc
            raise driver_error(WarehouseError, f"cannot open DuckDB file {path}", str(exc)) from exc
        self._con.execute("set TimeZone = 'UTC'")
        # DuckDB runs in this process: its sort of the result counts in the connector's memory.
        try:
            _FILE_MEMORY.hold(self._con, self._file, self, self._memory)
        except duckdb.Error as exc:
            self._con.close()
            raise ConfigError("connector.yml: warehouse.memory_limit", str(exc), "e.g. memory_limit: 256MB") from None
        # The query reads pages ahead while this process hashes, sends and commits state on the same cores.
        self._con.execute(f"set threads = {thread_count}")

    def sort_items(self) -> None:
        """The next queries sort rows with items: the whole result of one row per item, or pages of events with
        their items' JSON (a LIST column), which spill at the default. Unless connector.yml sets memory_limit,
        DuckDB gets ITEM_ROWS_MEMORY_LIMIT instead (the other jobs on the file keep their share)."""
        if not self.memory_limit_configured:
            _FILE_MEMORY.hold(self._con, self._file, self, _memory_bytes(ITEM_ROWS_MEMORY_LIMIT))

    def stream(self, sql: str, params: dict[str, Any], chunk_size: int) -> ResultStream:
        import duckdb
        cursor = self._con.cursor()
        bound = bind_named(sql, params, "${}")
        try:
            cursor.execute(bound, params)
        except (duckdb.Error, UnicodeDecodeError) as exc:
            quietly(cursor.close, "closing a DuckDB cursor")
            raise driver_error(QueryError, "the query failed in DuckDB", _duckdb_text(exc), bound,
                               _memory_hint(exc)) from exc
        columns = [d[0] for d in cursor.description]
        kinds = [duckdb_kind(str(d[1])) for d in cursor.description]
        struct_lists = {index: fields for index, d in enumerate(cursor.description)
                        if (fields := _struct_list(d[1])) is not None}

        def chunks() -> Iterator[list[tuple[Any, ...]]]:
            try:
                while rows := cursor.fetchmany(chunk_size):
                    yield rows
            except (duckdb.Error, UnicodeDecodeError) as exc:
                raise driver_error(QueryError, "reading the query result from DuckDB failed", _duckdb_text(exc),
                                   bound, _memory_hint(exc)) from exc
            finally:
                quietly(cursor.close, "closing a DuckDB cursor")

        return ResultStream(columns, chunks(), lambda: quietly(cursor.close, "closing a DuckDB cursor"), kinds,
                            struct_lists)

    def connect(self) -> Connection:
        con = self._con.cursor()
        con.execute("set TimeZone = 'UTC'")
        return DuckDBConnection(con)

    def close(self) -> None:
        quietly(lambda: _FILE_MEMORY.release(self._con, self._file, self), "returning DuckDB memory")
        quietly(self._con.close, "closing a DuckDB connection")


class SQLAlchemyConnection:
    insert_is_atomic = False  # insert_many runs in a transaction of its own when it is not inside one
    events_per_commit = 0
    commits_in_background = True  # on a connection of their own (sibling)

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.dialect = conn.dialect.name
        self._in_transaction = False

    @property
    def max_in_values(self) -> int | None:
        return None if self.dialect == "postgresql" else 5000

    def in_values(self, name: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
        if self.dialect == "postgresql":
            joined = _UNIT_SEPARATOR.join(values) if all(type(v) is str and v for v in values) else None
            if joined is not None and joined.count(_UNIT_SEPARATOR) == len(values) - 1:
                # One string split by PostgreSQL: psycopg2 quotes a list value by value, and the planner then
                # reads a literal array of them (5,000 ids: 14 → 9 ms a lookup)
                return f"(select unnest(string_to_array(:{name}, chr(31))))", {name: joined}
            return f"(select unnest(cast(:{name} as text[])))", {name: list(values)}
        return in_list(name, values)

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self._run(sql, params)
        self._autocommit()

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        rows = [tuple(row) for row in self._run(sql, params)]
        self._autocommit()
        return rows

    def _autocommit(self) -> None:
        # SQLAlchemy 2 begins a transaction implicitly; outside transaction() each statement stands alone.
        if not self._in_transaction:
            self._settle(self._conn.commit, "commit")

    def insert_many(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                    constants: dict[str, Any] | None = None) -> None:
        """One statement for all rows where the driver allows it: a textual INSERT given to executemany
        is one statement (one round trip) per row on psycopg2."""
        if not rows:
            return
        if self._in_transaction:
            self._insert(table, columns, rows, constants or {})
            return
        with self.transaction():
            self._insert(table, columns, rows, constants or {})

    def _insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                constants: dict[str, Any]) -> None:
        if self._conn.dialect.driver == "psycopg2":
            try:
                _copy_rows(self._conn.connection.dbapi_connection, table, [*columns, *constants], rows,
                           list(constants.values()))
            except WarehouseError as exc:
                if exc.connection_lost:  # SQLAlchemy did not see it: the next statement must connect again
                    quietly(self._conn.invalidate, "dropping a lost connection")
                raise
            return
        from sqlalchemy import column, insert, table as table_clause
        from sqlalchemy.sql.elements import quoted_name
        schema, _, name = table.rpartition(".")
        # Core insert(): SQLAlchemy sends its rows as multi-row VALUES (insertmanyvalues). Names as written
        # in the other state statements, unquoted.
        names = (column(quoted_name(c, False)) for c in [*columns, *constants])
        clause = table_clause(quoted_name(name, False), *names, schema=quoted_name(schema, False) if schema else None)
        self._run_statement(insert(clause), [{**dict(zip(columns, row)), **constants} for row in rows])

    def _run(self, sql: str, params: Any) -> Any:
        from sqlalchemy import text
        return self._run_statement(text(sql), params or {})

    def _run_statement(self, statement: Any, params: Any) -> Any:
        from sqlalchemy import exc as sa_exc
        try:
            return self._conn.execute(statement, params)
        except sa_exc.SQLAlchemyError as exc:
            if not self._in_transaction:  # the implicit transaction failed: end it, so the next statement runs
                quietly(self._conn.rollback, "rolling back")
            raise _sqlalchemy_failure(WarehouseError, self.dialect, exc, str(statement)) from exc

    def _settle(self, action: Callable[[], Any], what: str) -> Any:
        from sqlalchemy import exc as sa_exc
        try:
            return action()
        except sa_exc.SQLAlchemyError as exc:
            raise _sqlalchemy_failure(WarehouseError, self.dialect, exc, what) from exc

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self._in_transaction = True
        try:
            transaction = self._settle(self._conn.begin, "begin")
            try:
                yield
            except BaseException:
                quietly(transaction.rollback, "rolling back")  # a lost connection must not hide the first error
                raise
            try:
                self._settle(transaction.commit, "commit")
            except WarehouseError:
                quietly(transaction.rollback, "rolling back")  # frees the connection for a retry
                raise
        finally:
            self._in_transaction = False

    def sibling(self) -> Connection:
        from sqlalchemy import exc as sa_exc
        try:
            return SQLAlchemyConnection(self._conn.engine.connect())
        except sa_exc.SQLAlchemyError as exc:
            raise WarehouseError(f"cannot connect to the {self.dialect} warehouse: {_first_line(exc)}") from exc

    def close(self) -> None:
        quietly(self._conn.close, "closing a connection")


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")


def _copy_text(value: Any) -> str:
    """A value in PostgreSQL's COPY text format: NULL is \\N; backslash, tab and line breaks are escaped."""
    return "\\N" if value is None else str(value).translate(_COPY_ESCAPES)


def _copy_lines(rows: Sequence[Sequence[Any]], constants: Sequence[Any]) -> str:
    """The rows in COPY text format, each followed by the constants."""
    shared = "".join("\t" + _copy_text(value) for value in constants).replace("%", "%%") + "\n"
    texts = [None if value is None else str(value) for row in rows for value in row]
    if _COPY_SPECIAL.search("".join(text for text in texts if text is not None)):
        texts = [None if text is None else text.translate(_COPY_ESCAPES) for text in texts]
    line = "\t".join(["%s"] * len(rows[0])) + shared
    return (line * len(rows)) % tuple("\\N" if text is None else text for text in texts)


def _copy_rows(raw: Any, table: str, names: Sequence[str], rows: Sequence[Sequence[Any]],
               constants: Sequence[Any]) -> None:
    """Rows through psycopg2's COPY FROM STDIN: one statement, and PostgreSQL inserts them in bulk (half the
    time of an INSERT of the same rows from unnested arrays). The values travel as data, never as SQL."""
    import io

    import psycopg2
    text = _copy_lines(rows, constants)
    cursor = raw.cursor()
    try:
        cursor.copy_expert(f"copy {table} ({', '.join(names)}) from stdin", io.StringIO(text))
    except psycopg2.Error as exc:
        raise WarehouseError(f"postgresql: {exc.__class__.__name__}: {_first_line(exc)}",
                             connection_lost=bool(raw.closed)) from exc
    finally:
        cursor.close()


class SQLAlchemyWarehouse:
    def __init__(self, url: str) -> None:
        from sqlalchemy import create_engine, exc as sa_exc
        scheme = url.split(":", 1)[0].split("+", 1)[0]
        try:
            # hide_parameters: a driver error names the SQL only; its values (ledger ids, rows) stay out.
            self._engine = create_engine(url, pool_pre_ping=True, hide_parameters=True)
        except sa_exc.NoSuchModuleError:
            raise ConfigError("connector.yml: warehouse.url", f"no SQLAlchemy dialect for {scheme!r}",
                              DRIVER_HINTS.get(scheme, "install the SQLAlchemy dialect for it")) from None
        except ModuleNotFoundError as exc:
            raise ConfigError("connector.yml: warehouse.url", f"the driver for {scheme!r} is not installed ({exc.name})",
                              DRIVER_HINTS.get(scheme, f"pip install {exc.name}")) from None
        except sa_exc.ArgumentError as exc:
            raise ConfigError("connector.yml: warehouse.url", f"not a database URL: {exc}",
                              "e.g. postgresql://user@host:5432/db or duckdb:///warehouse.duckdb") from None
        self.dialect = self._engine.dialect.name

    def _connect(self) -> Any:
        from sqlalchemy import exc as sa_exc
        try:
            return self._engine.connect()
        except sa_exc.SQLAlchemyError as exc:
            raise driver_error(WarehouseError, f"cannot connect to the {self.dialect} warehouse", _first_line(exc)) from exc

    def stream(self, sql: str, params: dict[str, Any], chunk_size: int) -> ResultStream:
        from sqlalchemy import exc as sa_exc, text
        conn = self._connect().execution_options(stream_results=True, yield_per=chunk_size)
        try:
            result = conn.execute(text(sql), params)
        except sa_exc.SQLAlchemyError as exc:
            quietly(conn.close, "closing a connection")
            raise _sqlalchemy_failure(QueryError, f"the query failed in {self.dialect}", exc, sql) from exc
        columns = list(result.keys())
        description = getattr(getattr(result, "cursor", None), "description", None) or []
        kinds = [POSTGRES_KINDS.get(d[1], "other") if self.dialect == "postgresql" else "other"
                 for d in description] or ["other"] * len(columns)

        def chunks() -> Iterator[list[tuple[Any, ...]]]:
            try:
                for part in result.partitions(chunk_size):
                    yield [tuple(row) for row in part]
            except sa_exc.SQLAlchemyError as exc:
                raise _sqlalchemy_failure(QueryError, f"reading the query result from {self.dialect} failed",
                                          exc, sql) from exc
            finally:
                release()

        def release() -> None:
            # After a lost connection, closing the cursor fails too: that must not replace the first error.
            quietly(result.close, "closing a result")
            quietly(conn.close, "closing a connection")

        return ResultStream(columns, chunks(), release, kinds)

    def connect(self) -> Connection:
        return SQLAlchemyConnection(self._connect())

    def close(self) -> None:
        quietly(self._engine.dispose, "closing the connection pool")


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).strip().splitlines()[0] if str(orig).strip() else exc.__class__.__name__


def driver_error(kind: type[WarehouseError], context: str, driver_text: str, sql: str | None = None,
                 hint: str = "") -> WarehouseError:
    """`kind` with the driver's text masked (see mask_literals), and in full for -v."""
    error = kind(f"{context}: {mask_literals(driver_text, sql)}{hint}", f"{context}: {driver_text}{hint}")
    error.sql = sql
    return error


def _sqlalchemy_failure(kind: type[WarehouseError], context: str, exc: Any, sql: str) -> WarehouseError:
    """The error class and the server's primary message (PostgreSQL's DETAIL and CONTEXT lines quote values),
    with the line of the SQL it points at."""
    orig = getattr(exc, "orig", None) or exc
    diag = getattr(orig, "diag", None)
    primary = getattr(diag, "message_primary", None) or _first_line(exc)
    position = getattr(diag, "statement_position", None)
    where = f" (line {sql[:int(position) - 1].count(chr(10)) + 1} of the SQL sent)" if position else ""
    context = f"{context}: {exc.__class__.__name__}"
    error = kind(f"{context}: {mask_literals(primary)}{where}", f"{context}: {str(orig).strip()}",
                 bool(getattr(exc, "connection_invalidated", False)))
    error.sql = sql
    return error


def quietly(close: Callable[[], Any], what: str) -> None:
    """Cleanup after a failure (or at the end of a read): its own error is logged, never raised over the first."""
    try:
        close()
    except Exception as exc:  # noqa: BLE001 - any driver error while closing
        log.debug("%s failed: %s", what, exc.__class__.__name__)
