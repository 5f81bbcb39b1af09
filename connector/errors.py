"""The connector's exceptions, and the exit code each one maps to.

ConnectorError                      exit 1 unless said otherwise
├── ConfigError                     exit 2: a user mistake in connector.yml, a mapping or a query file
├── WarehouseError                  the warehouse could not be reached or a query failed
├── StateError                      the state tables could not be read or written
├── SyncLocked                      another run of the same sync holds the lease (exit 0: nothing to do)
├── MassDeleteRefused               exit 3: an audience run would remove more than max_delete_fraction
└── TikTokError                     the Events API refused or could not be reached
    ├── FatalAPIError               auth, permission or HTTP 4xx: stop at once, retrying cannot help
    └── RetriableAPIError           throttling or server trouble that outlasted every retry
Row problems are not exceptions: they become Rejection values, counted and stored.
"""

from __future__ import annotations


class ConnectorError(Exception):
    exit_code = 1


class ConfigError(ConnectorError):
    """A configuration problem, always named by file, key and what to do."""

    exit_code = 2

    def __init__(self, where: str, problem: str, hint: str = "") -> None:
        self.where, self.problem, self.hint = where, problem, hint
        text = f"{where}: {problem}"
        super().__init__(f"{text} ({hint})" if hint else text)


class WarehouseError(ConnectorError):
    pass


class StateError(ConnectorError):
    pass


class SyncLocked(ConnectorError):
    exit_code = 0


class MassDeleteRefused(ConnectorError):
    exit_code = 3


class TikTokError(ConnectorError):
    def __init__(self, message: str, code: int | None = None) -> None:
        self.code = code
        super().__init__(message)


class FatalAPIError(TikTokError):
    pass


class RetriableAPIError(TikTokError):
    pass
