"""The connector's exceptions, and the exit code each one maps to.

ConnectorError                      exit 1 unless said otherwise
├── ConfigError                     exit 2: a user mistake in connector.yml, a mapping or a query file
├── WarehouseError                  the warehouse could not be reached or a query failed; str() is masked
│   ├── QueryError                  the sync's own query failed (its SQL file is named in the report)
│   ├── MissingDatabase             a read-only command found no DuckDB file where connector.yml says
│   └── WarehouseBusy               a read-only command found the DuckDB file open for writing elsewhere
├── StateError                      the state tables could not be read or written
├── SyncLocked                      another run of the same sync holds the lease (exit 0: nothing to do)
├── LeaseHeld                       reset refused: a live run holds the sync's lease
├── MassDeleteRefused               an audience run would remove more than max_delete_fraction
└── TikTokError                     the Events API refused or could not be reached
    ├── FatalAPIError               auth, permission or HTTP 4xx: stop at once, retrying cannot help
    └── RetriableAPIError           throttling or server trouble that outlasted every retry
Row problems are not exceptions: they become Rejection values, counted and stored.
Every message is redacted (connector.redaction): when the error is made, and again when it is shown.
"""

from __future__ import annotations

import re

from .redaction import redact


class ConnectorError(Exception):
    exit_code = 1

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact(arg) if isinstance(arg, str) else arg for arg in args))

    def __str__(self) -> str:
        return redact(super().__str__())


class ConfigError(ConnectorError):
    """A configuration problem, always named by file, key and what to do."""

    exit_code = 2

    def __init__(self, where: str, problem: str, hint: str = "") -> None:
        self.where, self.problem, self.hint = redact(where), redact(problem), redact(hint)
        text = f"{where}: {problem}"
        super().__init__(f"{text} ({hint})" if hint else text)


class WarehouseError(ConnectorError):
    """A warehouse failure. Its text goes to stdout, the state tables and webhooks, so it carries the driver's
    message through `mask_literals`; `full_text` keeps the driver's own words for the terminal with -v."""

    def __init__(self, message: str, full_text: str | None = None, connection_lost: bool = False) -> None:
        super().__init__(message)
        self.full_text = full_text or message
        self.connection_lost = connection_lost  # the server closed the connection: nothing of its transaction holds
        self.sql: str | None = None  # the SQL sent, when the error is about it (its lines are the error's)


class QueryError(WarehouseError):
    pass


class MissingDatabase(WarehouseError):
    pass


class WarehouseBusy(WarehouseError):
    """Nothing could be read: another process writes the DuckDB file (check exits 4, not 1)."""


class StateError(ConnectorError):
    pass


class SyncLocked(ConnectorError):
    exit_code = 0


class LeaseHeld(ConnectorError):
    pass


class MassDeleteRefused(ConnectorError):
    """An audience run would remove more than max_delete_fraction: nothing was sent (exit 1)."""


class TikTokError(ConnectorError):
    def __init__(self, message: str, code: int | None = None) -> None:
        self.code = code
        super().__init__(message)


class FatalAPIError(TikTokError):
    pass


class RetriableAPIError(TikTokError):
    pass


_QUOTE = re.compile(r"\"|(?<!\w)'|'(?!\w)")  # an apostrophe inside a word (can't) quotes nothing
_LONG_NUMBER = re.compile(r"\d{7,}")  # a phone or an id written without quotes ("with value 14155550100")
# DuckDB ends an error with the line of SQL it points at: "\n\nLINE 3: select …\n          ^^^^".
_POSITION = re.compile(r"\n\nLINE \d+: (?P<sql>[^\n]*)\n[ ^]*\Z")


def mask_literals(text: str, sql: str | None = None) -> str:
    """A warehouse error text without the values it quotes: `Could not convert string '+1 (415) 555-0100'
    to INT32` becomes `Could not convert string '***' to INT32`. The error class and wording stay, and the
    LINE/caret lines of DuckDB when the line they show is one of `sql` (the SQL sent, which binds every value).

    Values may hold quotes and newlines, and some errors echo a value unquoted on the lines after it (DuckDB's
    strptime), so everything from the first quote to the last one is masked and nothing after that line is
    kept; long runs of digits are masked wherever they are."""
    position = ""
    found = _POSITION.search(text)
    if found and sql is not None and _shown_sql(found.group("sql")) in sql:
        text, position = text[:found.start()], found.group()
    quotes = [found.start() for found in _QUOTE.finditer(text)]
    if not quotes:
        return _LONG_NUMBER.sub("***", text.rstrip()) + position
    first, last = quotes[0], quotes[-1]
    quote = text[first]
    masked = _LONG_NUMBER.sub("***", text[:first]) + quote + "***"
    if last > first:
        masked += quote
        if "\n" not in text[first:last]:  # the value did not span lines: the rest of its line is the message's
            masked += _LONG_NUMBER.sub("***", text[last + 1:].split("\n", 1)[0])
    return masked.rstrip() + position


def _shown_sql(line: str) -> str:
    """DuckDB shortens a long line of SQL with '...' at either end."""
    core = line.removeprefix("...").removesuffix("...")
    return core if core.strip() else "\0"  # an empty line proves nothing
