"""Snowflake through snowflake-connector-python: password or key-pair auth, results streamed by fetchmany."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .errors import ConfigError, QueryError, WarehouseError
from .warehouse import ResultStream, bind_named, driver_error, in_list, quietly

PYFORMAT = "%({})s"
URL_FORM = "snowflake://USER:${SNOWFLAKE_PASSWORD}@ACCOUNT/DATABASE/SCHEMA?warehouse=WH&role=ROLE"


def connect_args(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """snowflake-sqlalchemy's URL form, plus `private_key_path`/`private_key_passphrase`/`authenticator`."""
    parts = urlsplit(url)
    if not parts.hostname or not parts.username:
        raise ConfigError("connector.yml: warehouse.url", "a Snowflake URL needs a user and an account",
                          f"e.g. {URL_FORM}")
    path = [unquote(p) for p in parts.path.split("/") if p]
    args: dict[str, Any] = {"account": unquote(parts.netloc.rsplit("@", 1)[1]), "user": unquote(parts.username)}
    if parts.password:
        args["password"] = unquote(parts.password)
    if path:
        args["database"] = path[0]
    if len(path) > 1:
        args["schema"] = path[1]
    args.update(dict(parse_qsl(parts.query)))
    if options.get("private_key_path"):
        args["private_key_file"] = str(options["private_key_path"])
        if options.get("private_key_passphrase"):
            args["private_key_file_pwd"] = str(options["private_key_passphrase"])
        args.setdefault("authenticator", "SNOWFLAKE_JWT")
    if options.get("authenticator"):
        args["authenticator"] = str(options["authenticator"])
    if "password" not in args and "private_key_file" not in args and "authenticator" not in args:
        raise ConfigError("connector.yml: warehouse.url", "no Snowflake password or key",
                          "put ${SNOWFLAKE_PASSWORD} in the URL, or set warehouse.private_key_path")
    return args


def _snowflake_kind(column: Any) -> str:
    """snowflake.connector type codes: 0 FIXED (NUMBER), 1 REAL, 2 TEXT, 3 DATE, 6/7/8 TIMESTAMP_LTZ/TZ/NTZ."""
    code = column[1]
    if code == 0:
        return "decimal" if (column[5] or 0) > 0 else "int"
    return {1: "float", 2: "text", 3: "date", 6: "timestamptz", 7: "timestamptz", 8: "timestamp"}.get(code, "other")


INSERT_ROWS = 10_000  # rows per INSERT statement: a VALUES list holds at most 16,384
INSERT_TEXT_BYTES = 256_000  # ...and their values, well under Snowflake's 1 MB of statement text


def _parts(rows: Sequence[Sequence[Any]], most_rows: int, text_bytes: int) -> Iterator[Sequence[Sequence[Any]]]:
    """`rows` in consecutive parts of at most `most_rows` rows whose values print to about `text_bytes`."""
    start, size = 0, 0
    for end, row in enumerate(rows):
        size += sum(len(str(value)) + 8 for value in row)  # a value, its quotes, cast and separator
        if size >= text_bytes or end + 1 - start >= most_rows:
            yield rows[start:end + 1]
            start, size = end + 1, 0
    if start < len(rows):
        yield rows[start:]


def _sql(sql: str, params: dict[str, Any] | None) -> str:
    if not params:
        return sql
    # pyformat binding treats every % as a directive once parameters are given.
    return bind_named(sql.replace("%", "%%"), params, PYFORMAT)


class SnowflakeConnection:
    dialect = "snowflake"
    insert_is_atomic = False  # a large insert_many is several statements
    max_in_values = 5000
    # Every statement is a round trip to a remote warehouse: acknowledged batches are committed ten at a time
    # (README, Delivery guarantees: a crash may re-send them).
    events_per_commit = 10_000
    commits_in_background = True  # on a connection of their own (sibling)

    def __init__(self, con: Any, connect: Callable[[], Any]) -> None:
        self._con, self._connect = con, connect

    @staticmethod
    def in_values(name: str, values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
        return in_list(name, values)

    def _run(self, sql: str, params: dict[str, Any] | None) -> Any:
        return self._run_pyformat(_sql(sql, params), params)

    def _run_pyformat(self, sql: str, params: dict[str, Any] | None) -> Any:
        from snowflake.connector import errors
        cursor = self._con.cursor()
        try:
            cursor.execute(sql, params or None)
        except errors.Error as exc:
            quietly(cursor.close, "closing a Snowflake cursor")
            raise driver_error(WarehouseError, "Snowflake", str(exc)) from exc
        return cursor

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self._run(sql, params).close()

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        cursor = self._run(sql, params)
        rows = []
        while chunk := cursor.fetchmany(1000):  # state queries only: small, bounded results
            rows.extend(tuple(row) for row in chunk)
        cursor.close()
        return rows

    def insert_many(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
                    constants: dict[str, Any] | None = None) -> None:
        """INSERT ... SELECT from a VALUES list of many rows, the values shared by every row bound once: each
        statement is a round trip to a remote warehouse, so one carries up to INSERT_ROWS rows or about
        INSERT_TEXT_BYTES of values (Snowflake refuses or truncates statements much over 1 MB)."""
        constants = constants or {}
        select = ", ".join([*(f"column{i + 1}" for i in range(len(columns))),
                            *(PYFORMAT.format(f"k{i}") for i in range(len(constants)))])
        head = f"insert into {table} ({', '.join([*columns, *constants])}) select {select} from values "
        for part in _parts(rows, INSERT_ROWS, INSERT_TEXT_BYTES):
            params: dict[str, Any] = {f"k{i}": value for i, value in enumerate(constants.values())}
            tuples = []
            for n, row in enumerate(part):
                markers = []
                for i, value in enumerate(row):
                    params[f"r{n}_{i}"] = value
                    markers.append(PYFORMAT.format(f"r{n}_{i}"))
                tuples.append(f"({', '.join(markers)})")
            self._run_pyformat(head + ", ".join(tuples), params).close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.execute("begin")
        try:
            yield
        except BaseException:
            quietly(lambda: self.execute("rollback"), "rolling back")
            raise
        self.execute("commit")

    def sibling(self) -> SnowflakeConnection:
        return SnowflakeConnection(self._connect(), self._connect)

    def close(self) -> None:
        quietly(self._con.close, "closing a Snowflake connection")


class SnowflakeWarehouse:
    dialect = "snowflake"

    def __init__(self, url: str, options: dict[str, Any]) -> None:
        try:
            import snowflake.connector  # noqa: F401
        except ModuleNotFoundError:
            raise ConfigError("connector.yml: warehouse.url",
                              "a snowflake:// URL needs snowflake-connector-python, which is not installed",
                              "pip install 'tiktok-connector[snowflake]'") from None
        self._args = connect_args(url, options)
        self._con = self._connect()

    def _connect(self) -> Any:
        import snowflake.connector
        try:
            con = snowflake.connector.connect(**self._args, session_parameters={"TIMEZONE": "UTC"})
        except snowflake.connector.errors.Error as exc:
            raise driver_error(WarehouseError, f"cannot connect to Snowflake account {self._args['account']}",
                               str(exc).splitlines()[0]) from exc
        return con

    def stream(self, sql: str, params: dict[str, Any], chunk_size: int) -> ResultStream:
        from snowflake.connector import errors
        cursor = self._con.cursor()
        try:
            cursor.execute(_sql(sql, params), params or None)
        except errors.Error as exc:
            quietly(cursor.close, "closing a Snowflake cursor")
            raise driver_error(QueryError, "the query failed in Snowflake", str(exc)) from exc
        columns = [d[0] for d in cursor.description]
        kinds = [_snowflake_kind(d) for d in cursor.description]

        def chunks() -> Iterator[list[tuple[Any, ...]]]:
            try:
                while rows := cursor.fetchmany(chunk_size):
                    yield [tuple(row) for row in rows]
            except errors.Error as exc:
                raise driver_error(QueryError, "reading the query result from Snowflake failed", str(exc)) from exc
            finally:
                quietly(cursor.close, "closing a Snowflake cursor")

        return ResultStream(columns, chunks(), lambda: quietly(cursor.close, "closing a Snowflake cursor"), kinds)

    def connect(self) -> SnowflakeConnection:
        return SnowflakeConnection(self._connect(), self._connect)

    def close(self) -> None:
        quietly(self._con.close, "closing a Snowflake connection")
