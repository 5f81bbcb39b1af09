"""The CLI with the smallest ledger there could be: each checkpoint only appends the acknowledged event ids
to a one-column table (no sync name, event time, acked_at or run id; no rejects, no watermark). An
instrument for bench/ledger_floor.py, which measures what even that adds to a sync; a sync run this way
keeps no usable state."""

from __future__ import annotations

import runpy
from datetime import datetime

from connector.state import Checkpoint, StateStore
from connector.warehouse import _bound_list, _bound_row

TABLE = "tiktok_bench_bare_ids"
_ensure_state_tables = StateStore.ensure_tables


def _ensure_tables(self: StateStore) -> None:
    _ensure_state_tables(self)
    self.conn.execute(f"create table if not exists {TABLE} (event_id varchar)")


def _append_ids(self: StateStore, checkpoint: Checkpoint, now: datetime) -> None:
    if checkpoint.acked:
        expression, joined = _bound_list("ids", [event.event_id for event in checkpoint.acked])
        self.conn.execute(f"insert into {TABLE} select unnest({expression}) from {_bound_row(['ids'])}",
                          {"ids": joined})


StateStore.ensure_tables = _ensure_tables  # type: ignore[method-assign]
StateStore.checkpoint = _append_ids  # type: ignore[method-assign]
runpy.run_module("connector", run_name="__main__", alter_sys=True)
