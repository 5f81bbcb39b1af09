"""Keeping a run's lease while it runs: renewed every quarter of its lifetime, whatever the run is doing.

A query that runs longer than the lease would otherwise let a second run of the same sync start. The
keeper renews on a state connection of its own (DuckDB runs one transaction per connection, and a
connection is not shared between threads), in a daemon thread stopped when the run finishes.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable

from .state import StateStore
from .warehouse import quietly

log = logging.getLogger("connector.lease")


class LeaseKeeper:
    def __init__(self, connect: Callable[[], StateStore], sync_name: str, owner: str, ttl_seconds: float,
                 clock: Callable[[], dt.datetime]) -> None:
        self._connect, self.sync_name, self.owner = connect, sync_name, owner
        self.ttl_seconds, self._clock = ttl_seconds, clock
        self.lost = False  # another run took the lease, or it was removed: this run no longer holds it
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._keep, name=f"tiktok-lease-{sync_name}", daemon=True)

    def start(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop renewing (before the lease is released). A renewal stuck on a hung connection is left behind:
        it is a daemon thread, and the lease it renews expires on its own."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout=min(self.ttl_seconds, 10.0))

    def _keep(self) -> None:
        store: StateStore | None = None
        try:
            while not self._stopped.wait(self.ttl_seconds / 4):
                try:
                    store = store or self._connect()
                    if not store.keep_lease(self.sync_name, self.owner, self._clock(), self.ttl_seconds):
                        self.lost = True
                        log.warning("%s: this run no longer holds the sync's lease (it lapsed, or a reset --force "
                                    "removed it): another run may start", self.sync_name)
                        return
                except Exception as exc:  # noqa: BLE001 - a failed renewal is tried again on a new connection
                    log.debug("%s: renewing the lease failed (%s); trying again", self.sync_name,
                              exc.__class__.__name__)
                    if store is not None:
                        quietly(store.conn.close, "closing the lease connection")
                    store = None
        finally:
            if store is not None:
                quietly(store.conn.close, "closing the lease connection")
