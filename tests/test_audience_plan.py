"""The audience diff (connector.audience_plan): a streaming merge of the query's people with the members,
changes per id type, rejects, the mass-delete guard, and changes batched into mapping requests.

The property test models TikTok as a set of hashes per id type: applying a plan's add requests, then the
deletes owed at the end of the run (hashes dropped that no member holds any more), to the previous audience
gives exactly the hashes of the next membership, whatever people share, lose or swap.
"""

from __future__ import annotations

import hashlib
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from connector.audience_ids import ID_TYPE_NAMES, INDEX, Hashes
from connector.audience_plan import (
    MODES, Batch, Change, Member, PlanCounts, Person, batches, check_mass_delete, delete_request, diff,
    passthrough,
)
from connector.errors import MassDeleteRefused, WarehouseError
from connector.events import Rejection


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


KEYS = sorted(sha256(f"member-{i}") for i in range(12))
POOLS = [[sha256(f"{name}-{n}") for n in range(4)] for name in ID_TYPE_NAMES]  # few values: people share them
E1, E2, P1, P2 = POOLS[0][0], POOLS[0][1], POOLS[1][0], POOLS[1][1]


def hashes(email: str | None = None, phone: str | None = None) -> Hashes:
    return (email, phone, None, None, None, None)


def run(people: list[Person], members: list[Member], mode: str = "mirror") -> tuple[list[Any], PlanCounts]:
    counts = PlanCounts()
    return list(diff(people, members, MODES[mode], passthrough, counts)), counts


def changes_of(items: list[Any]) -> list[Change]:
    return [i for i in items if isinstance(i, Change)]


def reasons(items: list[Any]) -> Counter[str]:
    return Counter(i.reason for i in items if isinstance(i, Rejection))


# ---------------------------------------------------------------- cases

def test_add_remove_replace_and_unchanged() -> None:
    a, b, c, d = KEYS[:4]
    items, counts = run(
        [Person(a, hashes(E1, P1)), Person(b, hashes(E2, P1)), Person(d, hashes(E1))],
        [Member(a, hashes(E1, P1)), Member(b, hashes(E1, P1)), Member(c, hashes(E2))])
    by_key = {ch.member_key: ch for ch in changes_of(items)}
    assert set(by_key) == {b, c, d}  # a is unchanged: counted, not emitted
    assert by_key[d] == Change("add", d, hashes(E1), hashes(E1))
    assert by_key[c] == Change("remove", c, None, dropped=hashes(E2))
    # b changed only its email: the phone is neither sent again nor dropped
    assert by_key[b] == Change("replace", b, hashes(E2, P1), hashes(E2), hashes(E1))
    assert (counts.adds, counts.removes, counts.replaces, counts.unchanged) == (1, 1, 1, 1)
    assert (counts.rows, counts.members, counts.members_after) == (3, 3, 3)


def test_add_only_never_drops() -> None:
    a, b, c = KEYS[:3]
    items, counts = run([Person(a, hashes(E2, P1)), Person(b, hashes())],
                        [Member(a, hashes(E1, P1)), Member(b, hashes(E1)), Member(c, hashes(P2))], "add_only")
    assert changes_of(items) == [Change("replace", a, hashes(E2, P1), hashes(E2))]
    assert reasons(items) == {"no_match_keys": 1}
    assert counts.kept == 2 and counts.removes == 0  # b (no identifiers left) and c (gone) stay members


def test_duplicate_member_ids_are_rejected_and_the_member_left_as_it_is() -> None:
    a, b = KEYS[:2]
    items, counts = run([Person(a, hashes(E1)), Person(a, hashes(E1)), Person(a, hashes(E2)),
                         Person(b, hashes(E2)), Person(b, hashes(P1))],
                        [Member(a, hashes(P2))])
    assert changes_of(items) == []
    assert reasons(items) == {"duplicate_member_id": 5}
    assert {i.event_id for i in items} == {a, b}  # the member key (hashed), never the id itself
    assert counts.kept == 1 and counts.removes == 0


def test_people_without_identifiers_are_rejected_and_removed_in_mirror_mode() -> None:
    # The query still lists the person, but with no usable identifier left (erased PII, a wrong mapping):
    # keeping the old hashes would keep identifiers the source no longer has.
    a, b = KEYS[:2]
    items, counts = run([Person(a, hashes()), Person(b, hashes())], [Member(a, hashes(E1, P1))])
    assert changes_of(items) == [Change("remove", a, None, dropped=hashes(E1, P1))]
    assert reasons(items) == {"no_match_keys": 2}
    assert counts.removes == 1


def test_rows_without_a_member_id_are_rejected_wherever_they_sort() -> None:
    a = KEYS[0]
    items, counts = run([Person(None, hashes(E1)), Person(a, hashes(E1)), Person(None, hashes(P1))], [])
    assert reasons(items) == {"missing_member_id": 2}
    assert [c.member_key for c in changes_of(items)] == [a]
    assert counts.rows == 3


def test_the_digest_spares_hashing_and_a_new_digest_alone_is_a_state_change() -> None:
    a, b = KEYS[:2]

    def refuse(values: tuple[Any, ...]) -> Hashes:
        raise AssertionError("an unchanged digest must not be hashed again")

    items = list(diff([Person(a, hashes(E1), "d1")], [Member(a, hashes(E1), "d1")], MODES["mirror"], refuse))
    assert items == []
    counts = PlanCounts()
    items = list(diff([Person(b, hashes(E1), "d2")], [Member(b, hashes(E1), "d1")], MODES["mirror"], passthrough,
                      counts))
    assert items == [Change("refresh", b, hashes(E1), digest="d2")] and not items[0].sends
    assert (counts.unchanged, counts.refreshed, counts.changes, counts.has_work) == (1, 1, 0, True)


@pytest.mark.parametrize("people_keys,member_keys", [
    ([KEYS[1], KEYS[0]], []),
    ([KEYS[0]], [KEYS[2], KEYS[1]]),
    ([], [KEYS[1], KEYS[1]]),  # a member twice: the state is broken, not merged
])
def test_sides_out_of_member_key_order_are_refused(people_keys: list[str], member_keys: list[str]) -> None:
    with pytest.raises(WarehouseError, match="member key order"):
        run([Person(k, hashes(E1)) for k in people_keys], [Member(k, hashes(E1)) for k in member_keys])


def test_mass_delete_guard_counts_before_anything_is_sent() -> None:
    counts = PlanCounts(members=10, removes=6)
    with pytest.raises(MassDeleteRefused, match=r"remove 6 of 10 members \(60%\).*max_delete_fraction 0.5") as e:
        check_mass_delete(counts, 0.5, "vip")
    assert e.value.exit_code == 1 and "audiences.vip.max_delete_fraction" in str(e.value)  # the issue: exits 1
    check_mass_delete(PlanCounts(members=10, removes=5), 0.5, "vip")
    check_mass_delete(PlanCounts(members=0, removes=0), 0.0, "vip")
    # an empty query result would remove everyone
    _, counts = run([], [Member(k, hashes(E1)) for k in KEYS[:4]])
    with pytest.raises(MassDeleteRefused):
        check_mass_delete(counts, 0.5, "vip")


# ---------------------------------------------------------------- requests

def test_batches_hold_one_action_and_at_most_batch_size_people() -> None:
    adds = [Change("add", k, hashes(E1), hashes(E1)) for k in KEYS[:7]]
    removes = [Change("remove", k, None, dropped=hashes(E1)) for k in KEYS[7:9]]
    reject = Rejection("no_match_keys", "x", KEYS[9], None, None)
    out = list(batches([*adds[:2], reject, *removes, *adds[2:]], ["PHONE_SHA256", "EMAIL_SHA256"], 3))
    sending = [b for b in out if b.request is not None]
    assert [len(b.request.rows) for b in sending] == [3, 3, 1]  # type: ignore[union-attr]
    assert all(b.request.action == "add" and b.request.id_schema == ("EMAIL_SHA256", "PHONE_SHA256")
               for b in sending)  # type: ignore[union-attr]
    quiet = [b for b in out if b.request is None]
    assert [c.kind for b in quiet for c in b.changes] == ["remove", "remove"]
    assert [r for b in out for r in b.rejects] == [reject]
    assert sorted(c.member_key for b in out for c in b.changes) == sorted(KEYS[:9])
    with pytest.raises(ValueError):
        list(batches([], ["EMAIL_SHA256"], 10_001))


def test_rejects_alone_are_batched_too() -> None:
    rejects = [Rejection("missing_member_id", "x", None, None, None)] * 5
    out = list(batches(rejects, ["EMAIL_SHA256"], 2))
    assert [len(b.rejects) for b in out] == [2, 2, 1] and all(not b.changes for b in out)


def test_halves_split_a_batch_for_bisection() -> None:
    changes = [Change("add", k, hashes(E1), hashes(E1)) for k in KEYS[:5]]
    [batch] = list(batches(changes, ["EMAIL_SHA256"], 5))
    first, second = batch.halves()
    assert [c.member_key for c in first.changes + second.changes] == KEYS[:5]
    assert len(first.request.rows) == 2 and len(second.request.rows) == 3  # type: ignore[union-attr]


def test_request_body_puts_each_hash_at_its_schema_position() -> None:
    change = Change("replace", KEYS[0], hashes(E2, P1), hashes(E2), hashes(E1))
    other = Change("add", KEYS[1], hashes(None, P2), hashes(None, P2))
    [batch] = list(batches([change, other], ["EMAIL_SHA256", "PHONE_SHA256"]))
    assert batch.request.body("7001", "1800") == {  # type: ignore[union-attr]
        "advertiser_ids": ["7001"], "action": "add", "id_schema": ["EMAIL_SHA256", "PHONE_SHA256"],
        "batch_data": [[{"id": E2, "audience_ids": ["1800"]}, {}], [{}, {"id": P2, "audience_ids": ["1800"]}]],
    }


def test_delete_request_covers_an_id_type_no_longer_mapped() -> None:
    request = delete_request("PHONE_SHA256", [P1, P2], ["EMAIL_SHA256"])
    body = request.body("7001", "1800")
    assert body["action"] == "delete" and body["id_schema"] == ["EMAIL_SHA256", "PHONE_SHA256"]
    assert body["batch_data"] == [[{}, {"id": P1, "audience_ids": ["1800"]}],
                                  [{}, {"id": P2, "audience_ids": ["1800"]}]]


# ---------------------------------------------------------------- the property

HASHES = st.tuples(*[st.one_of(st.none(), st.none(), st.sampled_from(pool)) for pool in POOLS])


def digest(values: Hashes) -> str:
    return sha256(repr(values))


@settings(max_examples=150, deadline=None)
@given(data=st.data(), mode=st.sampled_from(["mirror", "add_only"]), digests=st.booleans(),
       previous=st.dictionaries(st.sampled_from(KEYS), HASHES.filter(any), max_size=10),
       rows=st.lists(st.tuples(st.sampled_from(KEYS), HASHES), max_size=16),
       missing=st.lists(HASHES, max_size=2), batch_size=st.integers(1, 4))
def test_applying_the_plan_gives_the_next_membership_and_audience(
        data: st.DataObject, mode: str, digests: bool, previous: dict[str, Hashes],
        rows: list[tuple[str, Hashes]], missing: list[Hashes], batch_size: int) -> None:
    stale = data.draw(st.sets(st.sampled_from(KEYS))) if digests else set()
    people = [Person(k, h, digest(h) if digests else None) for k, h in sorted(rows, key=lambda r: r[0])]
    for h in missing:  # rows without a member id, wherever the warehouse sorts NULL
        people.insert(data.draw(st.integers(0, len(people))), Person(None, h, None))
    members = [Member(k, h, (digest(h) if k not in stale else "stale") if digests else None)
               for k, h in sorted(previous.items())]

    # what the next membership must be
    per_key = Counter(k for k, _ in rows)
    single = {k: h for k, h in rows if per_key[k] == 1}
    expected: dict[str, Hashes] = {}
    for key in set(previous) | set(per_key):
        if per_key[key] == 1 and any(single[key]):
            expected[key] = single[key]
        elif key in previous and (per_key[key] > 1 or mode == "add_only"):
            expected[key] = previous[key]
    expected_reasons = Counter({"missing_member_id": len(missing),
                                "duplicate_member_id": sum(n for n in per_key.values() if n > 1),
                                "no_match_keys": sum(1 for h in single.values() if not any(h))})

    counts = PlanCounts()
    items = list(diff(people, members, MODES[mode], passthrough, counts))
    assert reasons(items) == +expected_reasons

    # deliver: add requests, membership per batch, dropped hashes owed; then the owed deletes
    tiktok = {(name, h) for hs in previous.values() for name, h in zip(ID_TYPE_NAMES, hs) if h}
    state, owed = dict(previous), set()
    for batch in batches(iter(items), ID_TYPE_NAMES, batch_size):
        assert_batch_is_well_formed(batch, batch_size)
        if batch.request is not None:
            for row in batch.request.rows:
                tiktok |= {(name, row[INDEX[name]]) for name in batch.request.id_schema if row[INDEX[name]]}
        for change in batch.changes:
            if change.hashes is None:
                del state[change.member_key]
            else:
                state[change.member_key] = change.hashes
            owed |= {(name, h) for name, h in zip(ID_TYPE_NAMES, change.dropped) if h}
    held = {(name, h) for hs in state.values() for name, h in zip(ID_TYPE_NAMES, hs) if h}
    for name in ID_TYPE_NAMES:
        unheld = sorted(h for n, h in owed - held if n == name)
        if unheld:
            request = delete_request(name, unheld, ["EMAIL_SHA256"])
            tiktok -= {(name, row[INDEX[name]]) for row in request.rows}

    assert state == expected
    if mode == "mirror":
        assert tiktok == held  # the audience is exactly the membership's hashes
    else:
        assert not owed and tiktok == held | {(n, h) for hs in previous.values() for n, h in zip(ID_TYPE_NAMES, hs) if h}
    assert counts.rows == len(people) and counts.members == len(previous)
    assert counts.members_after == len(state)
    assert counts.adds + counts.removes + counts.replaces == sum(1 for c in changes_of(items) if c.kind != "refresh")
    assert counts.refreshed == sum(1 for c in changes_of(items) if c.kind == "refresh")

    # a second run on its own result changes nothing (the same rows are rejected again)
    again_members = [Member(k, h, digest(h) if digests else None) for k, h in sorted(state.items())]
    again = list(diff(people, again_members, MODES[mode], passthrough))
    assert changes_of(again) == [] and reasons(again) == reasons(items)


def assert_batch_is_well_formed(batch: Batch, batch_size: int) -> None:
    sending = [c for c in batch.changes if c.sends]
    if batch.request is None:
        assert not sending
        return
    assert len(batch.request.rows) == len(sending) <= batch_size
    assert list(batch.request.rows) == [c.sent for c in sending]


# ---------------------------------------------------------------- memory

def test_the_diff_streams_without_holding_either_side() -> None:
    count = 40_000

    def people() -> Iterator[Person]:
        for i in range(count):
            yield Person(f"{i:064x}", hashes(f"{i:064x}") if i % 3 else hashes(f"{i + 1:064x}"))

    def members() -> Iterator[Member]:
        for i in range(0, count + 1000, 2):
            yield Member(f"{i:064x}", hashes(f"{i:064x}"))

    counts = PlanCounts()
    tracemalloc.start()
    try:
        for batch in batches(diff(people(), members(), MODES["mirror"], passthrough, counts), ["EMAIL_SHA256"], 500):
            pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert counts.rows == count and counts.members == (count + 1000) // 2
    assert counts.adds + counts.replaces + counts.unchanged == count
    assert peak < 2_000_000, f"{peak:,} bytes at the peak for {count:,} people: the plan held rows"


def test_every_reject_reason_is_a_documented_audience_reason() -> None:
    from pathlib import Path

    from connector.audience_plan import REJECT_DETAILS
    from connector.reasons import AUDIENCE_REASONS
    reference = (Path(__file__).resolve().parents[1] / "docs" / "mappings.md").read_text(encoding="utf-8")
    assert set(REJECT_DETAILS) == set(AUDIENCE_REASONS)
    for reason in AUDIENCE_REASONS:
        assert f"| `{reason}` |" in reference, reason
