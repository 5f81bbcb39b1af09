"""State tables: created once, versioned, and refused when newer than this connector."""

from __future__ import annotations

import datetime as dt

import pytest

from connector.errors import StateError
from connector.state import SCHEMA_VERSION, StateStore
from connector.warehouse import open_warehouse

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.timezone.utc)


def store_for(path: str, schema: str | None = None) -> StateStore:
    return StateStore(open_warehouse(f"duckdb:///{path}").connect(), schema)


def test_tables_are_created_once_and_versioned(tmp_path) -> None:
    path = str(tmp_path / "state.duckdb")
    store = store_for(path, "tiktok_state")
    store.ensure_tables()
    store.ensure_tables()  # idempotent
    tables = {row[0] for row in store.conn.query(
        "select table_name from information_schema.tables where table_schema = 'tiktok_state'")}
    assert {"tiktok_watermarks", "tiktok_ledger", "tiktok_rejects", "tiktok_runs", "tiktok_leases",
            "tiktok_state_version", "tiktok_audiences", "tiktok_audience_members", "tiktok_audience_deletes"} <= tables
    assert store.conn.query("select version from tiktok_state.tiktok_state_version") == [(SCHEMA_VERSION,)]
    assert SCHEMA_VERSION == 4


def test_newer_state_tables_are_refused_with_a_hint(tmp_path) -> None:
    path = str(tmp_path / "state.duckdb")
    store = store_for(path)
    store.ensure_tables()
    store.conn.execute("update tiktok_state_version set version = :v", {"v": SCHEMA_VERSION + 1})
    with pytest.raises(StateError, match="upgrade tiktok-connector"):
        store.ensure_tables()


def test_a_migration_runs_once_in_order(tmp_path, monkeypatch) -> None:
    import connector.state as state
    path = str(tmp_path / "state.duckdb")
    store = store_for(path)
    store.ensure_tables()
    extra = (SCHEMA_VERSION + 1, ["alter table {p}runs add column note varchar"])
    monkeypatch.setattr(state, "MIGRATIONS", [*state.MIGRATIONS, extra])
    monkeypatch.setattr(state, "SCHEMA_VERSION", extra[0])
    store.ensure_tables()
    store.ensure_tables()  # the second call must not add the column again
    columns = [row[0] for row in store.conn.query(
        "select column_name from information_schema.columns where table_name = 'tiktok_runs'")]
    assert columns.count("note") == 1
    assert store.conn.query("select version from tiktok_state_version") == [(extra[0],)]


def test_rejects_export_pages_through_every_row(tmp_path, make_project, capsys) -> None:
    from cli_helpers import cli
    project = make_project([])
    store = store_for(str(project.root / "warehouse.duckdb"))
    store.ensure_tables()
    store.conn.execute(
        "insert into tiktok_rejects (run_id, sync_name, event_id, cursor_value, event_time, reason, detail, "
        "recorded_at) select 'r', 'orders', 'E' || i, null, 1, 'no_match_keys', 'user: no usable email or phone', "
        "timestamp '2026-01-01' + to_seconds(cast(i % 7 as bigint)) from range(25000) t(i)")
    store.conn.close()
    out_file = tmp_path / "rejects.json"
    code, _, err = cli(capsys, "rejects", "orders", "--export", str(out_file), "--project", str(project.root))
    assert code == 0, err
    import json
    rows = json.loads(out_file.read_text())
    assert len(rows) == 25000 and len({r["event_id"] for r in rows}) == 25000  # pages neither skip nor repeat


def test_two_runs_racing_for_the_lease_on_postgres_get_exactly_one_winner() -> None:
    """Both runs read 'no lease' and insert; the primary key refuses one, which must back off cleanly."""
    import threading
    import uuid

    from warehouse_helpers import PG_DSN, require_postgres

    require_postgres()
    schema = f"tt_lease_{uuid.uuid4().hex[:8]}"
    stores = [StateStore(open_warehouse(PG_DSN).connect(), schema) for _ in range(2)]
    stores[0].ensure_tables()
    try:
        for round_ in range(15):
            barrier = threading.Barrier(2)
            results: list[str | None] = [None, None]

            def take(i: int) -> None:
                barrier.wait()
                results[i] = stores[i].acquire_lease("orders", f"otherhost:{i}:r{round_}", NOW, 600)

            threads = [threading.Thread(target=take, args=(i,)) for i in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert results.count(None) == 1, results  # one took it, the other names the holder
            winner = results.index(None)
            assert results[1 - winner] == f"otherhost:{winner}:r{round_}"
            stores[winner].release_lease("orders", f"otherhost:{winner}:r{round_}")
    finally:
        stores[0].conn.execute(f"drop schema {schema} cascade")
        for store in stores:
            store.conn.close()


@pytest.mark.parametrize("schema", [None, "tiktok_state"])
def test_version_1_duckdb_ledger_is_rebuilt_without_its_key_and_keeps_its_rows(tmp_path, monkeypatch,
                                                                               schema) -> None:
    import connector.state as state
    path = str(tmp_path / "state.duckdb")
    store = store_for(path, schema)
    p = f"{schema}.tiktok_" if schema else "tiktok_"
    monkeypatch.setattr(state, "MIGRATIONS", state.MIGRATIONS[:1])
    monkeypatch.setattr(state, "SCHEMA_VERSION", 1)
    store.ensure_tables()
    row = {"s": "orders", "e": "ORD-1", "t": 1_790_000_000, "a": dt.datetime(2026, 11, 1), "r": "run"}
    insert = f"insert into {p}ledger values (:s, :e, :t, :a, :r)"
    store.conn.execute(insert, row)
    with pytest.raises(Exception):
        store.conn.execute(insert, row)  # version 1: the primary key refuses a second row
    monkeypatch.undo()
    store.ensure_tables()
    assert store.conn.query(f"select version from {p}state_version") == [(state.SCHEMA_VERSION,)]
    assert store.conn.query(f"select sync_name, event_id, event_time from {p}ledger") == [
        ("orders", "ORD-1", 1_790_000_000)]
    assert store.acknowledged("orders", ["ORD-1", "ORD-2"]) == {"ORD-1"}
    store.conn.execute(insert, {**row, "e": "ORD-2"})  # and the table still takes rows
    assert store.acknowledged("orders", ["ORD-1", "ORD-2"]) == {"ORD-1", "ORD-2"}
