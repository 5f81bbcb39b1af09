"""The state schema from connector.yml as SQL: a plain identifier, checked, then quoted per warehouse.

Quoting makes a name that happens to be an SQL keyword (`as`, `select`) work; the quoted name is spelled as
the warehouse folds an unquoted one (PostgreSQL lower case, Snowflake upper case, DuckDB as written), so
the tables are the very ones an unquoted name created before.
"""

from __future__ import annotations

import re

# PostgreSQL cuts names longer than 63 bytes: the tables would land in a schema with another name.
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")
# `database.schema` puts the state in another database of the same account; DuckDB attaches no other
# database (catalog) to write to, and PostgreSQL has no cross-database names: state.url does that there.
QUALIFIED_DIALECTS = ("snowflake",)
# Names the warehouses keep for themselves (DuckDB: catalogs, a schema of that name is ambiguous).
RESERVED = frozenset({"information_schema", "pg_catalog", "system", "temp"})
SCHEMA_HINT = "a plain name such as tiktok_state: letters, digits, _ and $, not starting with a digit"


def schema_problem(schema: str, dialect: str) -> str | None:
    """Why `schema` cannot hold the state tables on `dialect`, or None when it can."""
    parts = schema.split(".")
    if len(parts) > 2 or (len(parts) == 2 and dialect not in QUALIFIED_DIALECTS):
        return (f"{schema!r} is not a schema name" if dialect in QUALIFIED_DIALECTS
                else f"{schema!r} is not a schema name (database.schema is for Snowflake; "
                     "to keep the state in another database, set state.url)")
    for part in parts:
        if not IDENTIFIER.fullmatch(part):
            return f"{schema!r} is not a schema name"
        if part.lower() in RESERVED or part.lower().startswith("pg_"):
            return f"{schema!r} is reserved by the warehouse"
    return None


def quoted_schema(schema: str, dialect: str) -> str:
    """`schema` (checked by schema_problem) as SQL for `dialect`."""
    return ".".join(_quoted(part, dialect) for part in schema.split("."))


def _quoted(name: str, dialect: str) -> str:
    if dialect == "postgresql":
        return f'"{name.lower()}"'
    if dialect == "snowflake":
        return f'"{name.upper()}"'
    if dialect == "duckdb":
        return f'"{name}"'
    return name  # a warehouse whose quoting is not known here: the checked name, unquoted as before
