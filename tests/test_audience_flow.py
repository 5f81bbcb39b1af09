"""The audience modules together, as the run skeleton is to use them (tests/audience_helpers.AudienceDriver):
a real warehouse (DuckDB, PostgreSQL, fakesnow), the membership tables in it, and the fake TikTok over HTTP.

The audience in the fake must equal the query's hashes after every run; a run with nothing changed sends
nothing; the requests are the same whatever the warehouse, the diff (merge-join or in the warehouse) and
where the hashing happens; and a run stopped at any step converges on the next one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from connector.errors import MassDeleteRefused
from connector.membership import MembershipStore
from connector.testing.fake_tiktok import FakeTikTok
from connector.warehouse import open_warehouse

from audience_helpers import (
    ADVERTISER, AUDIENCE_TOKEN, FIRST, IDFA, SECOND, SECOND_EXPECTED, AudienceDriver, Crash,
    apply_membership_migration, expected_hashes, people_table,
)
from warehouse_helpers import DIALECTS, Target, target_for

pytest.importorskip("fakesnow")

SNOWFLAKE = "snowflake://me:pw@acct/DEMO/PUBLIC?warehouse=WH&role=R"


@contextmanager
def audience_world(dialect: str, root: Path) -> Iterator[tuple[Target, Any, MembershipStore]]:
    with target_for(dialect, root) as target:
        url = SNOWFLAKE if dialect == "snowflake" else (
            f"duckdb:///{root / 'project' / 'warehouse.duckdb'}" if dialect == "duckdb" else target.url)
        with target.session() as con:
            people_table(con, dialect, [])
        warehouse = open_warehouse(url)
        conn = warehouse.connect()
        apply_membership_migration(conn)
        try:
            yield target, warehouse, MembershipStore(conn)
        finally:
            conn.close()
            warehouse.close()


def load(target: Target, rows: list[tuple[Any, ...]]) -> None:
    with target.session() as con:
        con.execute("delete from people")
        if rows:
            con.executemany("insert into people values (?, ?, ?, ?, ?)", rows)


def bodies(fake: FakeTikTok, seen: int) -> list[str]:
    return [json.dumps(r.body, sort_keys=True) for r in fake.audiences.requests()[seen:] if r.path.endswith("/mapping/")]


def scenario(target: Target, driver: AudienceDriver, fake: FakeTikTok) -> list[list[str]]:
    """FIRST, again, SECOND, again: the mapping requests of each run."""
    runs = []
    for rows, expected in ((FIRST, FIRST), (FIRST, FIRST), (SECOND, SECOND_EXPECTED), (SECOND, SECOND_EXPECTED)):
        load(target, rows)
        seen = len(fake.audiences.requests())
        result = driver.run()
        audience_id = driver.store.audience(driver.name).audience_id  # type: ignore[union-attr]
        assert fake.audiences.members(audience_id) == expected_hashes(expected, driver.hasher)
        assert driver.store.pending_deletes(driver.name) == 0
        runs.append(bodies(fake, seen))
        if rows is SECOND:
            assert result.counts.rejected == {"duplicate_member_id": 2, "no_match_keys": 1}
    assert runs[1] == [] and runs[3] == []  # nothing changed: nothing sent
    return runs


VARIANTS = [("merge", False), ("in_warehouse", False), ("in_warehouse", True)]


def test_every_warehouse_diff_and_hashing_sends_the_same_requests(tmp_path: Path) -> None:
    results: dict[tuple[str, str, bool], list[list[str]]] = {}
    with FakeTikTok(audience_access_token=AUDIENCE_TOKEN, advertiser_ids={ADVERTISER}) as fake:
        for dialect in DIALECTS:
            try:
                with audience_world(dialect, tmp_path / dialect) as (target, warehouse, store):
                    # fakesnow re-parses every statement, slowly: there, one variant per hashing place
                    variants = {"duckdb": VARIANTS + [("merge", True)], "postgresql": VARIANTS,
                                "snowflake": [VARIANTS[0], VARIANTS[2]]}[dialect]
                    for diff_path, in_sql in variants:
                        name = f"{diff_path}_{in_sql}"
                        driver = AudienceDriver(warehouse, store, fake, name=name, hash_in_warehouse=in_sql,
                                                in_warehouse_diff=diff_path == "in_warehouse", batch_size=3)
                        results[(dialect, diff_path, in_sql)] = scenario(target, driver, fake)
            except pytest.skip.Exception:
                assert dialect == "postgresql"  # only PostgreSQL may be missing
    reference = results[("duckdb", "merge", False)]
    assert [[json.loads(b)["action"] for b in run] for run in reference] == [
        ["add"] * 3, [], ["add", "delete", "delete"], []]  # 7 people by 3; c2 and c8, then two owed deletes
    for key, runs in results.items():
        assert _without_audience_ids(runs) == _without_audience_ids(reference), key


def _without_audience_ids(runs: list[list[str]]) -> list[list[str]]:
    """Each variant writes to its own audience: compare the bodies with the audience id left out."""
    out = []
    for run in runs:
        cleaned = []
        for text in run:
            body = json.loads(text)
            for person in body["batch_data"]:
                for entry in person:
                    entry.pop("audience_ids", None)
            cleaned.append(json.dumps(body, sort_keys=True))
        out.append(cleaned)
    return out


@pytest.fixture(scope="module")
def duckdb_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Target, Any, MembershipStore, FakeTikTok]]:
    with audience_world("duckdb", tmp_path_factory.mktemp("flow")) as (target, warehouse, store), \
            FakeTikTok(audience_access_token=AUDIENCE_TOKEN, advertiser_ids={ADVERTISER}) as fake:
        yield target, warehouse, store, fake


_names = iter(range(10**9))


def fresh_driver(world: tuple[Target, Any, MembershipStore, FakeTikTok], **options: Any) -> AudienceDriver:
    _, warehouse, store, fake = world
    return AudienceDriver(warehouse, store, fake, name=f"a{next(_names)}", **options)


ROWS = st.lists(
    st.tuples(st.sampled_from([f"c{i}" for i in range(8)]),
              st.sampled_from([None, "a@x.com", "b@x.com", "c@x.com", "d@x.com", "no email"]),
              st.sampled_from([None, "4155550100", "4155550101", "+1 415 555 0102", "12"]),
              st.sampled_from([None, IDFA.format(1), IDFA.format(2)]),
              st.sampled_from([None, IDFA.format(3)])),
    max_size=8, unique_by=lambda r: r[0])


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=ROWS, after=ROWS, crash_at=st.integers(0, 12), crash_first=st.booleans(), in_warehouse=st.booleans(),
       batch_size=st.integers(1, 3))
def test_a_run_stopped_at_any_step_converges_on_the_next(
        duckdb_world: tuple[Target, Any, MembershipStore, FakeTikTok], before: list[tuple[Any, ...]],
        after: list[tuple[Any, ...]], crash_at: int, crash_first: bool, in_warehouse: bool, batch_size: int) -> None:
    target, _, store, fake = duckdb_world
    driver = fresh_driver(duckdb_world, in_warehouse_diff=in_warehouse, batch_size=batch_size)
    steps = iter(range(10**6))

    def crash(point: str) -> None:
        if next(steps) == crash_at:
            raise Crash(point)

    for rows, stop in ((before, crash_first), (after, not crash_first)):
        load(target, rows)
        if stop:
            try:
                driver.run(crash)
            except Crash:
                pass
        driver.run()
        audience_id = store.audience(driver.name).audience_id  # type: ignore[union-attr]
        assert fake.audiences.members(audience_id) == expected_hashes(rows, driver.hasher)
        assert store.count(driver.name) == sum(1 for r in rows if expected_hashes([r], driver.hasher))
        assert store.pending_deletes(driver.name) == 0
        seen = len(fake.audiences.requests())
        assert driver.run().requests == [] and len(fake.audiences.requests()) == seen


def test_the_mass_delete_guard_stops_a_run_before_it_sends(duckdb_world: Any) -> None:
    target, _, store, fake = duckdb_world
    driver = fresh_driver(duckdb_world, max_delete_fraction=0.5)
    load(target, FIRST)
    driver.run()
    load(target, FIRST[:3])  # 4 of 7 would go
    seen = len(fake.audiences.requests())
    with pytest.raises(MassDeleteRefused, match="remove 4 of 7 members"):
        driver.run()
    assert len(fake.audiences.requests()) == seen and store.count(driver.name) == 7
    driver.max_delete_fraction = 0.6
    driver.run()
    assert store.count(driver.name) == 3


def test_an_identifier_no_longer_mapped_leaves_tiktok(duckdb_world: Any) -> None:
    target, _, store, fake = duckdb_world
    driver = fresh_driver(duckdb_world)
    load(target, FIRST)
    driver.run()
    audience_id = store.audience(driver.name).audience_id  # type: ignore[union-attr]
    driver.identifiers = {"email": "email", "idfa": "idfa"}
    result = driver.run()
    assert [r.action for r in result.requests] == ["delete"]
    assert result.requests[0].id_schema == ("EMAIL_SHA256", "PHONE_SHA256", "IDFA_SHA256")
    members = fake.audiences.members(audience_id)
    assert "PHONE_SHA256" not in members and members == {
        k: v for k, v in expected_hashes(FIRST, driver.hasher).items() if k != "PHONE_SHA256"}
    assert store.audience(driver.name).id_schema == ("EMAIL_SHA256", "IDFA_SHA256")  # type: ignore[union-attr]
    assert driver.run().requests == []


def test_add_only_keeps_people_who_left(duckdb_world: Any) -> None:
    target, _, store, fake = duckdb_world
    driver = fresh_driver(duckdb_world, mode="add_only")
    load(target, FIRST)
    driver.run()
    load(target, SECOND)
    result = driver.run()
    assert {r.action for r in result.requests} == {"add"}
    audience_id = store.audience(driver.name).audience_id  # type: ignore[union-attr]
    both = expected_hashes(FIRST + SECOND_EXPECTED, driver.hasher)
    assert fake.audiences.members(audience_id) == both
    assert driver.run().requests == []


def test_hash_in_warehouse_keeps_plain_identifiers_and_member_ids_out_of_python(duckdb_world: Any) -> None:
    from warehouse_helpers import RecordingWarehouse
    target, warehouse, store, fake = duckdb_world
    recorder = RecordingWarehouse(warehouse)
    for in_warehouse_diff in (False, True):
        driver = AudienceDriver(recorder, store, fake, name=f"plain{in_warehouse_diff}", hash_in_warehouse=True,
                                in_warehouse_diff=in_warehouse_diff)
        load(target, FIRST)
        driver.run()
        audience_id = store.audience(driver.name).audience_id  # type: ignore[union-attr]
        assert fake.audiences.members(audience_id) == expected_hashes(FIRST, driver.hasher)
    plain = {str(v).strip().lower() for row in FIRST for v in row if v is not None}
    assert len(recorder.rows) >= 4 * len(FIRST)  # two passes each, and the probe read no row
    for row in recorder.rows:
        assert not {str(v).strip().lower() for v in row if v is not None} & plain, row
