"""The SQL functions the rendered path (sql_events, sql_phones) writes differently on DuckDB and PostgreSQL.

`SqlFunctions` spells them for DuckDB, `PostgresFunctions` for PostgreSQL, with the same results on the
values the rendered path gives them: text is compared byte by byte (PostgreSQL text is cast to the "C"
collation, so lower/upper touch ASCII letters only and a column's case-insensitive collation changes
nothing), regular expressions only use what RE2 and PostgreSQL read alike (bracket classes, groups,
alternation, counted repeats; phonenumbers' `\\d` only ever sees ASCII digits), and nothing raises on a
row's value (PostgreSQL has no try_cast: a CASE checks first). Other warehouses get None: Python builds
their events.
"""

from __future__ import annotations

from collections.abc import Callable

from .dialects import Dialect


def quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class SqlFunctions:
    """DuckDB's spelling."""

    name = "duckdb"

    def text(self, expr: str) -> str:
        return f"cast({expr} as varchar)"

    def strlen(self, expr: str) -> str:  # bytes (UTF-8)
        return f"strlen({expr})"

    def length(self, expr: str) -> str:  # code points
        return f"length({expr})"

    def full_match(self, expr: str, pattern: str) -> str:
        return f"regexp_full_match({expr}, {quoted(pattern)})"

    def starts_matching(self, expr: str, pattern: str) -> str:
        return f"regexp_matches({expr}, {quoted('^(?:' + pattern + ')')})"

    def contains(self, text: str, part: str) -> str:
        return f"contains({text}, {part})"

    def sha256(self, expr: str) -> str:  # lowercase hex of the UTF-8 bytes
        return f"sha256({expr})"

    def utf8(self, expr: str) -> str:
        """The text's UTF-8 bytes, as the driver hands them over: a request body is bytes, and non-ASCII text
        read as a Python str is decoded, then encoded again (about 1 µs an event for a name with an accent)."""
        return f"encode({expr})"

    def trim_spaces(self, expr: str) -> str:
        return f"trim({expr})"

    def edge_whitespace(self, text: str) -> str:
        """Whether `text` (trimmed of spaces, not empty) may start or end with other whitespace; `:tiktok_ws_other`
        binds that whitespace."""
        # A string search, not list_contains: DuckDB plans that as a hash join, about 3.5 MB each per query.
        # s[1] and s[-1] are the first and last code points, as left(s, 1) and right(s, 1), 10 times faster.
        return (f"({self.contains(':tiktok_ws_other', f'{text}[1]')} "
                f"or {self.contains(':tiktok_ws_other', f'{text}[-1]')})")

    def trim_whitespace(self, expr: str) -> str:
        """`expr` without the whitespace `:tiktok_ws` binds (whitespace_params) at either end."""
        # One regular expression costs a third of trim() with the 29 characters (messy emails, 1M rows).
        return f"regexp_replace({expr}, :tiktok_ws, '', 'g')"

    def whitespace_params(self, whitespace: str) -> dict[str, str]:
        """What trim_whitespace binds, for the characters of `whitespace`."""
        characters = "".join(f"\\x{{{ord(c):x}}}" for c in whitespace)
        return {"tiktok_ws": f"^[{characters}]+|[{characters}]+$"}

    def in_list(self, expr: str, values: str) -> str:
        """`values` binds a list."""
        return f"list_contains({values}, {expr})"

    def lookup(self, expr: str, keys: str, values: str) -> str:
        """The value at `expr`'s position in `keys` (bound lists), NULL when it is not there."""
        return f"list_extract({values}, list_position({keys}, {expr}))"

    def json_string(self, expr: str) -> str:
        """The text of a JSON string."""
        return f"json_extract_string({expr}, '$')"

    def epoch_seconds(self, expr: str) -> str:
        return f"cast(floor(epoch({expr})) as bigint)"

    def not_finite(self, expr: str) -> str:
        return f"isnan({expr}) or isinf({expr})"

    def driver_double(self, expr: str, kind: str, prepare: Callable[[str, str], str]) -> str:
        """The double Python reads for a number column of `kind` (decimals are read as doubles); `prepare`
        computes an expression once per row."""
        return f"cast({expr} as double)"

    def integer_division(self, expr: str, divisor: int) -> str:
        return f"{expr} // {divisor}"

    def three_digits(self, expr: str) -> str:
        """The integer of the first three characters, NULL unless they are ASCII digits."""
        return f"try_cast(left({expr}, 3) as integer)"

    def slice(self, text: str, start: str, length: int) -> str:
        """`length` characters of the bound ASCII text `text` from `start`."""
        return f"substr({text}, {start}, {length})"

    def slice_digit(self, text: str, start: str, length: int, position: int) -> str:
        """The digit at `position` of slice(text, start, length), as an integer."""
        return f"cast(substr({self.slice(text, start, length)}, {position}, 1) as integer)"

    def once(self, expr: str, name: str, prepare: Callable[[str, str], str]) -> str:
        """`expr`, used more than once: PostgreSQL computes it once per row as a column of its own."""
        return expr

    def row_guard(self) -> str | None:
        """A condition under which no row is rendered."""
        return None


class PostgresFunctions(SqlFunctions):
    name = "postgresql"

    def text(self, expr: str) -> str:
        return f'cast({expr} as text) collate "C"'

    def strlen(self, expr: str) -> str:  # bytes of the server encoding: UTF-8 (row_guard)
        return f"octet_length({expr})"

    def length(self, expr: str) -> str:
        return f"char_length({expr})"

    def full_match(self, expr: str, pattern: str) -> str:
        # A capturing group: "(?:" would read as a bind parameter ":…" to SQLAlchemy. An E'' string reads
        # backslashes alike whatever standard_conforming_strings says. `$` is the end of the text only.
        return f"({expr} ~ {_regex_literal('^(' + pattern + ')$')})"

    def starts_matching(self, expr: str, pattern: str) -> str:
        return f"({expr} ~ {_regex_literal('^(' + pattern + ')')})"

    def contains(self, text: str, part: str) -> str:
        return f"(strpos({text}, {part}) > 0)"

    def sha256(self, expr: str) -> str:
        return Dialect("postgresql").sha256(expr)

    def utf8(self, expr: str) -> str:  # psycopg2 hands bytea over as a memoryview, which a body cannot embed
        return expr

    def trim_spaces(self, expr: str) -> str:
        return expr  # edge_whitespace counts spaces too: one btrim, only where needed

    def edge_whitespace(self, text: str) -> str:
        # Every whitespace character is below '!' or above U+0084: a cheap test first, then btrim.
        return f"(ascii({text}) not between 33 and 132 or ascii(right({text}, 1)) not between 33 and 132)"

    def trim_whitespace(self, expr: str) -> str:
        return f"btrim({expr}, :tiktok_ws)"

    def whitespace_params(self, whitespace: str) -> dict[str, str]:
        return {"tiktok_ws": whitespace}

    def in_list(self, expr: str, values: str) -> str:
        return f"({expr} = any({values}))"

    def lookup(self, expr: str, keys: str, values: str) -> str:
        # An object of constants, built once when the query is planned: a key is found without a scan.
        return f"(jsonb_object({keys}, {values}) ->> {expr})"

    def json_string(self, expr: str) -> str:
        # Without a backslash a JSON string is its text between the quotes (a quote inside is escaped).
        return f"case when strpos({expr}, chr(92)) = 0 then btrim({expr}, '\"') else cast({expr} as json) #>> '{{}}' end"

    def epoch_seconds(self, expr: str) -> str:
        return Dialect("postgresql").epoch_seconds(expr)  # as plan_select gives Python the time

    def not_finite(self, expr: str) -> str:
        return f"{expr} in ('NaN', 'Infinity', '-Infinity')"

    def driver_double(self, expr: str, kind: str, prepare: Callable[[str, str], str]) -> str:
        # psycopg2 parses the text PostgreSQL prints: a double's shortest exact text (extra_float_digits
        # of 1 or more, row_guard), but a REAL's shortest text is not the double it widens to. Once per row:
        # a NUMERIC becomes a double through its text.
        if kind == "decimal":
            return prepare(f"cast({expr} as double precision)", "double")
        return prepare(f"cast(cast({expr} as text) as double precision)", "double")

    def integer_division(self, expr: str, divisor: int) -> str:
        return f"{expr} / {divisor}"  # integers: towards zero, like DuckDB's //

    def three_digits(self, expr: str) -> str:
        digits = " and ".join(f"ascii(substr({expr}, {n}, 1)) between 48 and 57" for n in (1, 2, 3))
        return f"case when {digits} then cast(left({expr}, 3) as integer) end"

    def slice(self, text: str, start: str, length: int) -> str:
        # substr() of UTF-8 text walks it from the start (0.1 ms into 32 kB); bytea slices at once.
        return f"convert_from(substr(cast({text} as bytea), {start}, {length}), 'UTF8')"

    def slice_digit(self, text: str, start: str, length: int, position: int) -> str:
        return f"(get_byte(cast({text} as bytea), {start} + {position - 2}) - 48)"  # get_byte counts from 0

    def once(self, expr: str, name: str, prepare: Callable[[str, str], str]) -> str:
        return prepare(expr, name)  # PostgreSQL computes an expression each time it is written

    def row_guard(self) -> str | None:
        # Once per query (a subquery of constants): byte lengths are UTF-8 lengths; doubles print exactly.
        return ("(select current_setting('server_encoding') <> 'UTF8' "
                "or cast(current_setting('extra_float_digits') as integer) < 1)")


def _regex_literal(pattern: str) -> str:
    pattern = pattern.replace("(?:", "(")
    assert ":" not in pattern, pattern  # SQLAlchemy would bind it
    return "E'" + pattern.replace("\\", "\\\\").replace("'", "\\'") + "'"


FUNCTIONS = {"duckdb": SqlFunctions(), "postgresql": PostgresFunctions()}
