"""The CLI with checkpoint writes (ledger, rejects, watermark) switched off: bench/run.py measures what state
costs by running a sync without them. An instrument only: a sync run this way keeps no state and re-sends
everything next time."""

from __future__ import annotations

import runpy
from datetime import datetime

from connector.state import Checkpoint, StateStore


def _skip(self: StateStore, checkpoint: Checkpoint, now: datetime) -> None:
    return None


StateStore.checkpoint = _skip  # type: ignore[method-assign]
runpy.run_module("connector", run_name="__main__", alter_sys=True)
