"""Membership state (connector.membership) on DuckDB, PostgreSQL and Snowflake (fakesnow): the version-4
migration, the audience record, members read in member-key order by pages, one batch's changes per
transaction, and the deletes owed for hashes no member holds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from connector.audience_ids import ID_TYPE_NAMES, Hashes
from connector.audience_plan import Change, Member
from connector.errors import WarehouseError
from connector.membership import MEMBERSHIP_MIGRATION, AudienceRecord, DeletePage, MembershipStore
from connector.state import StateStore
from connector.warehouse import Connection, open_warehouse

from audience_helpers import apply_membership_migration
from warehouse_helpers import DIALECTS, postgres_target

pytest.importorskip("fakesnow")

NOW = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.timezone.utc)
SNOWFLAKE = "snowflake://me:pw@acct/DEMO/PUBLIC?warehouse=WH&role=R"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def hashes(email: str | None = None, phone: str | None = None, idfa_md5: str | None = None) -> Hashes:
    return (email, phone, None, None, idfa_md5, None)


@contextmanager
def state_connection(dialect: str, root: Path) -> Iterator[Connection]:
    """A fresh state Connection (what `Warehouse.connect()` gives the state store) on the warehouse."""
    if dialect == "duckdb":
        warehouse = open_warehouse(f"duckdb:///{root / 'state.duckdb'}")
        yield warehouse.connect()
        warehouse.close()
    elif dialect == "postgresql":
        with postgres_target() as target:
            warehouse = open_warehouse(target.url)
            conn = warehouse.connect()
            yield conn
            conn.close()
            warehouse.close()
    else:
        import fakesnow
        with fakesnow.patch():
            warehouse = open_warehouse(SNOWFLAKE)
            yield warehouse.connect()


@pytest.fixture(params=DIALECTS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MembershipStore]:
    with state_connection(request.param, tmp_path) as conn:
        apply_membership_migration(conn)
        yield MembershipStore(conn)


def test_migration_is_state_version_4_after_the_existing_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import connector.state as state
    conn = open_warehouse(f"duckdb:///{tmp_path / 's.duckdb'}").connect()
    assert state.MIGRATIONS[-1] is MEMBERSHIP_MIGRATION and state.SCHEMA_VERSION == 4
    with monkeypatch.context() as before:  # version 3's tables first, as an existing install has them
        before.setattr(state, "MIGRATIONS", state.MIGRATIONS[:3])
        before.setattr(state, "SCHEMA_VERSION", 3)
        StateStore(conn, "st").ensure_tables()
    assert conn.query("select version from st.tiktok_state_version") == [(3,)]
    StateStore(conn, "st").ensure_tables()
    StateStore(conn, "st").ensure_tables()  # once only
    assert conn.query("select version from st.tiktok_state_version") == [(4,)]
    members = MembershipStore(conn, "st")
    members.apply("vip", [Change("add", sha256("a"), hashes(sha256("e")), hashes(sha256("e")))], "r1", NOW)
    assert [m.member_key for m in members.members("vip")] == [sha256("a")]
    # DuckDB's members table has no primary key index (it would sit in memory, as the ledger's did)
    assert not conn.query("select * from duckdb_constraints() where table_name = 'tiktok_audience_members' "
                          "and constraint_type = 'PRIMARY KEY'")


def test_postgresql_keeps_the_primary_key_and_byte_order(tmp_path: Path) -> None:
    with state_connection("postgresql", tmp_path) as conn:
        apply_membership_migration(conn)
        apply_membership_migration(conn)  # idempotent, as a replayed migration must be
        store = MembershipStore(conn)
        store.apply("vip", [Change("add", sha256("a"), hashes(sha256("e")), hashes(sha256("e")))], "r1", NOW)
        # the member key compares byte-wise whatever the database's collation
        assert conn.query("select 'a' < 'B' collate \"C\", (select collation_name from information_schema.columns "
                          "where table_schema = current_schema() and table_name = 'tiktok_audience_members' "
                          "and column_name = 'member_key')") == [(False, "C")]
        with pytest.raises(WarehouseError):
            conn.execute("insert into tiktok_audience_members (audience, member_key, updated_at) "
                         "values ('vip', :k, current_timestamp)", {"k": sha256("a")})


def test_audience_record_is_kept_and_updated(store: MembershipStore) -> None:
    assert store.audience("vip") is None
    record = AudienceRecord("vip", "7001", "1800", "VIP buyers", ("PHONE_SHA256", "EMAIL_SHA256"))
    store.record_audience(record, NOW)
    assert store.audience("vip") == AudienceRecord("vip", "7001", "1800", "VIP buyers", ("EMAIL_SHA256", "PHONE_SHA256"))
    store.record_audience(AudienceRecord("vip", "7001", "1800", None, ("EMAIL_SHA256",)), NOW + dt.timedelta(days=1))
    assert store.audience("vip") == AudienceRecord("vip", "7001", "1800", None, ("EMAIL_SHA256",))
    created, updated = store.conn.query("select created_at, updated_at from tiktok_audiences")[0]
    assert created < updated
    assert store.audience("other") is None


def test_members_come_in_member_key_order_page_by_page(store: MembershipStore) -> None:
    rng = random.Random(7)
    keys = [sha256(f"m{i}") for i in range(300)]
    rng.shuffle(keys)  # inserted in no order at all, in several transactions
    for start in range(0, len(keys), 70):
        store.apply("vip", [Change("add", k, hashes(sha256("e" + k), None, k[:32]), hashes(sha256("e" + k)), digest="d")
                            for k in keys[start:start + 70]], "r1", NOW)
    store.apply("other", [Change("add", keys[0], hashes(sha256("x")), hashes(sha256("x")))], "r1", NOW)
    for page_size in (23, 10_000):
        members = list(store.members("vip", page_size))
        assert [m.member_key for m in members] == sorted(keys), page_size
    assert members[0] == Member(min(keys), hashes(sha256("e" + min(keys)), None, min(keys)[:32]), "d")
    assert store.count("vip") == 300 and store.count("other") == 1 and store.count("none") == 0
    assert list(store.members("none")) == []


def test_a_batch_applies_adds_replaces_and_removes_and_records_what_is_owed(store: MembershipStore) -> None:
    a, b, c, d = sorted(sha256(x) for x in "abcd")
    e1, e2, p1 = sha256("e1"), sha256("e2"), sha256("p1")
    store.apply("vip", [Change("add", a, hashes(e1, p1), hashes(e1, p1)), Change("add", b, hashes(e2), hashes(e2)),
                        Change("add", c, hashes(e1), hashes(e1))], "r1", NOW)
    store.apply("vip", [Change("replace", a, hashes(e2, p1), hashes(e2), hashes(e1), "d2"),
                        Change("remove", b, None, dropped=hashes(e2)),
                        Change("add", d, hashes(None, p1), hashes(None, p1))], "r2", NOW)
    assert list(store.members("vip")) == [Member(a, hashes(e2, p1), "d2"), Member(c, hashes(e1)),
                                           Member(d, hashes(None, p1))]
    assert store.pending_deletes("vip") == 2
    # e1 is still held by c and e2 by a: nothing is owed once the held hashes are pruned
    store.prune_held_deletes("vip")
    assert store.pending_deletes("vip") == 0 and list(store.unheld_deletes("vip")) == []


def test_owed_deletes_come_distinct_by_id_type_in_pages_and_clear(store: MembershipStore) -> None:
    keys = sorted(sha256(f"k{i}") for i in range(12))
    emails = [sha256(f"e{i}") for i in range(12)]
    md5s = [sha256(f"i{i}")[:32] for i in range(12)]
    store.apply("vip", [Change("add", k, hashes(e, None, m), hashes(e, None, m)) for k, e, m in zip(keys, emails, md5s)],
                "r1", NOW)
    gone = [Change("remove", k, None, dropped=hashes(e, None, m)) for k, e, m in zip(keys[:10], emails, md5s)]
    store.apply("vip", gone[:5], "r2", NOW)
    store.apply("vip", gone[5:], "r2", NOW)
    # another member takes one dropped email: it must stay in TikTok
    store.apply("vip", [Change("add", sha256("new"), hashes(emails[3]), hashes(emails[3]))], "r2", NOW)
    store.apply("vip", [Change("remove", sha256("x"), None, dropped=hashes(emails[0]))], "r2", NOW)  # owed twice
    store.prune_held_deletes("vip")
    pages = list(store.unheld_deletes("vip", page_size=4))
    # about 4 a page: the hash space is cut into ceil(owed / 4) equal slices, empty ones skipped
    kinds = Counter(p.id_type for p in pages)
    assert set(kinds) == {"EMAIL_SHA256", "IDFA_MD5"} and 2 <= kinds["EMAIL_SHA256"] <= 3 and 2 <= kinds["IDFA_MD5"] <= 3
    assert [p.id_type for p in pages] == sorted(p.id_type for p in pages)  # one id type after the other
    assert [h for p in pages if p.id_type == "EMAIL_SHA256" for h in p.hashes] == sorted(set(emails[:10]) - {emails[3]})
    assert [h for p in pages if p.id_type == "IDFA_MD5" for h in p.hashes] == sorted(md5s[:10])
    for page in pages:
        store.clear_deletes("vip", page)
    assert store.pending_deletes("vip") == 0
    store.clear_deletes("vip", DeletePage("EMAIL_SHA256", (emails[11],)))  # clearing what is not owed: no-op
    assert store.count("vip") == 3


def test_forget_drops_the_audience_and_nothing_else(store: MembershipStore) -> None:
    for name in ("vip", "other"):
        store.record_audience(AudienceRecord(name, "7001", "1800", name, ("EMAIL_SHA256",)), NOW)
        store.apply(name, [Change("add", sha256(name), hashes(sha256("e")), hashes(sha256("e"))),
                           Change("remove", sha256("x"), None, dropped=hashes(sha256("f")))], "r1", NOW)
    store.forget("vip")
    assert store.audience("vip") is None and store.count("vip") == 0 and store.pending_deletes("vip") == 0
    assert store.audience("other") is not None and store.count("other") == 1 and store.pending_deletes("other") == 1


def test_a_failed_batch_leaves_no_part_of_it(tmp_path: Path) -> None:
    with state_connection("duckdb", tmp_path) as conn:
        apply_membership_migration(conn)
        store = MembershipStore(conn)
        good = Change("add", sha256("a"), hashes(sha256("e")), hashes(sha256("e")))
        bad = Change("add", None, hashes(sha256("f")), hashes(sha256("f")))  # type: ignore[arg-type]  # NOT NULL
        with pytest.raises(WarehouseError):
            store.apply("vip", [good, bad], "r1", NOW)
        assert store.count("vip") == 0


def test_hash_columns_follow_the_id_types() -> None:
    ddl = MEMBERSHIP_MIGRATION[1][1]
    assert all(f"{name.lower()} varchar" in ddl for name in ID_TYPE_NAMES)  # type: ignore[operator]
