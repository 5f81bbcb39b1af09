"""An audience's diff: the query's people against the acknowledged members, both streamed in member-key
order (or paired by the warehouse), into changes; and changes into mapping requests.

TikTok keeps an audience as a set of hashes per id type, and one hash may belong to several members (a
household's phone, two customer accounts with one email) or move from a leaving member to a new one in the
same run. So a change deletes nothing at once: what a member no longer holds is `dropped`, recorded beside
the membership, and deleted at the end of the run only where no member holds it then
(`MembershipStore.unheld_deletes`); deleting it at once would take it from the people who keep it, or lose
it when the delete is answered after the add that re-adds it. A changed person sends and drops only the
hashes that changed, per id type: an unchanged hash needs no request, and the requests of a run stay
proportional to what changed rather than to the people it touched.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .audience_ids import ID_TYPE_NAMES, INDEX, NO_HASHES, Hashes, id_schema as ordered_schema
from .errors import MassDeleteRefused, WarehouseError
from .events import Rejection

DEFAULT_BATCH_SIZE = 5000  # people per mapping request (TikTok takes up to 10,000)
MAX_BATCH_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class Person:
    """One row of the audience query. `values` are its identifiers in the audience's id_schema order, raw or
    already hashed by the warehouse (the plan's `hashing` turns them into Hashes, only when it must);
    `digest` fingerprints them (audience_ids.source_digest_sql); `member_key` is None for an empty member id."""

    member_key: str | None
    values: tuple[Any, ...]
    digest: str | None = None


@dataclass(frozen=True, slots=True)
class Member:
    """One acknowledged member from the state tables."""

    member_key: str
    hashes: Hashes
    digest: str | None = None


@dataclass(frozen=True, slots=True)
class Pair:
    """A member key with what each side has: `rows` query rows (0: gone from the query, 2+: duplicated) and
    the person when there is exactly one; the member when the state has one."""

    member_key: str | None
    rows: int
    person: Person | None
    member: Member | None


@dataclass(frozen=True, slots=True)
class Change:
    """What one member's membership becomes.

    kind: add (new person), remove (left the query), replace (identifiers changed), refresh (same hashes,
        new digest: state only).
    hashes: the member's hashes once applied; None when it is no longer a member.
    sent: the hashes an add request carries (None where nothing is sent for that id type).
    dropped: the hashes the member no longer holds; TikTok deletes them at the end of the run unless
        another member holds them then.
    digest: the person's digest, stored with the hashes.
    """

    kind: str
    member_key: str
    hashes: Hashes | None
    sent: Hashes = NO_HASHES
    dropped: Hashes = NO_HASHES
    digest: str | None = None

    @property
    def sends(self) -> bool:
        return any(self.sent)


Item = Change | Rejection
Hashing = Callable[[tuple[Any, ...]], Hashes]


def passthrough(values: tuple[Any, ...]) -> Hashes:
    """The hashing of people whose values already are full Hashes tuples (tests, tools)."""
    return values


# ---------------------------------------------------------------- modes

class Mode(Protocol):
    """What a member who left the query, or whose identifiers changed, becomes: chosen once per run."""

    name: str

    def gone(self, member: Member) -> Change | None: ...
    def changed(self, member: Member, new: Hashes, digest: str | None) -> Change: ...


class Mirror:
    """mirror: the audience equals the query; people who left are removed, lost identifiers deleted."""

    name = "mirror"

    def gone(self, member: Member) -> Change | None:
        return Change("remove", member.member_key, None, dropped=member.hashes)

    def changed(self, member: Member, new: Hashes, digest: str | None) -> Change:
        old = member.hashes
        sent = tuple(n if n != o else None for n, o in zip(new, old))
        dropped = tuple(o if o != n else None for n, o in zip(new, old))
        return Change("replace", member.member_key, new, sent, dropped, digest)


class AddOnly(Mirror):
    """add_only: nothing is ever deleted; people who left stay members, lost identifiers stay in TikTok."""

    name = "add_only"

    def gone(self, member: Member) -> Change | None:
        return None

    def changed(self, member: Member, new: Hashes, digest: str | None) -> Change:
        change = super().changed(member, new, digest)
        return Change("replace", change.member_key, new, change.sent, NO_HASHES, digest)


MODES: dict[str, Mode] = {"mirror": Mirror(), "add_only": AddOnly()}


# ---------------------------------------------------------------- the diff

# The detail stored with each reject (reasons.AUDIENCE_REASONS names the codes).
REJECT_DETAILS = {
    "missing_member_id": "the member id column is empty",
    "duplicate_member_id": "the member id is on more than one row of the query result: none of them is "
                           "sent and the member's membership is left as it is",
    "no_match_keys": "no usable identifier (every mapped identifier is empty or invalid)",
}


@dataclass
class PlanCounts:
    """What a plan found, tallied while it streams; complete once the plan is exhausted (and, after an
    in-warehouse diff, `include_unchanged`)."""

    rows: int = 0  # query rows
    members: int = 0  # members before the run
    adds: int = 0
    removes: int = 0
    replaces: int = 0
    unchanged: int = 0
    refreshed: int = 0  # of the unchanged: same hashes from other raw values (a state write, no request)
    kept: int = 0  # members left as they are although the query no longer has them (add_only, duplicates)
    rejected: Counter[str] = field(default_factory=Counter)

    @property
    def changes(self) -> int:
        return self.adds + self.removes + self.replaces

    @property
    def has_work(self) -> bool:
        """Whether a send pass would send or store anything (changes, new digests, rejects)."""
        return bool(self.changes or self.refreshed or sum(self.rejected.values()))

    @property
    def members_after(self) -> int:
        return self.members + self.adds - self.removes

    def include_unchanged(self, total_members: int) -> None:
        """Count the members an in-warehouse diff left out (unchanged: one query row, same digest)."""
        unseen = total_members - self.members
        self.members += unseen
        self.rows += unseen
        self.unchanged += unseen


def pairs(people: Iterable[Person], members: Iterable[Member]) -> Iterator[Pair]:
    """Merge-join people (the query, sorted by member_key; rows without a key anywhere) with members (the
    state, sorted, unique). Streams both sides: memory holds one person and one member."""
    state = _Members(members)
    current: Person | None = None
    rows = 0
    for person in people:
        key = person.member_key
        if key is None:
            yield Pair(None, 1, person, None)
        elif current is not None and key == current.member_key:
            rows += 1
        else:
            if current is not None:
                _check_order(key, current.member_key, "the audience query")  # type: ignore[arg-type]
                yield from state.pair(current, rows)
            current, rows = person, 1
    if current is not None:
        yield from state.pair(current, rows)
    yield from state.rest()


class _Members:
    """The state side of the merge, read only as far as the person being paired."""

    def __init__(self, members: Iterable[Member]) -> None:
        self._members = iter(members)
        self._head = next(self._members, None)

    def _advance(self) -> None:
        previous, self._head = self._head, next(self._members, None)
        if self._head is not None:
            _check_order(self._head.member_key, previous.member_key, "the membership state", strict=True)  # type: ignore[union-attr]

    def pair(self, person: Person, rows: int) -> Iterator[Pair]:
        key: str = person.member_key  # type: ignore[assignment]
        while self._head is not None and self._head.member_key < key:
            yield Pair(self._head.member_key, 0, None, self._head)
            self._advance()
        held = None
        if self._head is not None and self._head.member_key == key:
            held = self._head
            self._advance()
        yield Pair(key, rows, person if rows == 1 else None, held)

    def rest(self) -> Iterator[Pair]:
        while self._head is not None:
            yield Pair(self._head.member_key, 0, None, self._head)
            self._advance()


def _check_order(key: str, previous: str, side: str, strict: bool = False) -> None:
    """A merge of sides in different orders would silently remove and re-add people: refuse it."""
    if key < previous or (strict and key == previous):
        raise WarehouseError(
            f"{side} did not come in member key order ({key[:12]}… after {previous[:12]}…): the keys were "
            "sorted with a collation other than byte order; nothing more was planned")


def plan(paired: Iterable[Pair], mode: Mode, hashing: Hashing = passthrough,
         counts: PlanCounts | None = None) -> Iterator[Item]:
    """Pairs (from `pairs`, or an in-warehouse diff) → changes and rejects; unchanged members are only
    counted. A person is hashed only when its digest differs from its member's."""
    counts = counts if counts is not None else PlanCounts()
    rejected = counts.rejected
    for pair in paired:
        key, member, person = pair.member_key, pair.member, pair.person
        counts.rows += pair.rows
        counts.members += member is not None
        if key is None:
            rejected["missing_member_id"] += pair.rows
            for _ in range(pair.rows):
                yield _reject("missing_member_id", None)
        elif pair.rows > 1:
            rejected["duplicate_member_id"] += pair.rows
            counts.kept += member is not None
            for _ in range(pair.rows):
                yield _reject("duplicate_member_id", key)
        elif person is None:
            yield from _gone(member, mode, counts)  # type: ignore[arg-type]
        elif member is not None and person.digest is not None and person.digest == member.digest:
            counts.unchanged += 1
        else:
            new = hashing(person.values)
            if not any(new):
                rejected["no_match_keys"] += 1
                yield _reject("no_match_keys", key)
                if member is not None:
                    yield from _gone(member, mode, counts)
            elif member is None:
                counts.adds += 1
                yield Change("add", key, new, new, NO_HASHES, person.digest)
            elif member.hashes == new:
                counts.unchanged += 1
                if person.digest != member.digest:
                    counts.refreshed += 1
                    yield Change("refresh", key, new, digest=person.digest)
            else:
                counts.replaces += 1
                yield mode.changed(member, new, person.digest)


def diff(people: Iterable[Person], members: Iterable[Member], mode: Mode, hashing: Hashing = passthrough,
         counts: PlanCounts | None = None) -> Iterator[Item]:
    """`plan` over the merge-join of two member-key-ordered streams."""
    return plan(pairs(people, members), mode, hashing, counts)


def _gone(member: Member, mode: Mode, counts: PlanCounts) -> Iterator[Change]:
    change = mode.gone(member)
    if change is None:
        counts.kept += 1
        return
    counts.removes += 1
    yield change


def _reject(reason: str, key: str | None) -> Rejection:
    return Rejection(reason, REJECT_DETAILS[reason], key, None, None)


def check_mass_delete(counts: PlanCounts, max_delete_fraction: float, audience: str) -> None:
    """Refuse a run that would remove more than `max_delete_fraction` of the members, before it sends
    anything (a broken query returning nobody must not empty the audience). `counts` from a counting pass."""
    if counts.members and counts.removes > max_delete_fraction * counts.members:
        raise MassDeleteRefused(
            f"audience {audience!r}: this run would remove {counts.removes:,} of {counts.members:,} members "
            f"({counts.removes / counts.members:.0%}), more than max_delete_fraction {max_delete_fraction:g}; "
            "nothing was sent. Check the query's result; if the removals are intended, raise "
            f"audiences.{audience}.max_delete_fraction for one run")


# ---------------------------------------------------------------- requests

@dataclass(frozen=True, slots=True)
class MappingRequest:
    """One `/segment/mapping/` call: one action, one id_schema, one row of hashes per person."""

    action: str  # add | delete
    id_schema: tuple[str, ...]
    rows: tuple[Hashes, ...]  # full hash tuples (ID_TYPES order); only id_schema's positions are sent

    def body(self, advertiser_id: str, audience_id: str) -> dict[str, Any]:
        positions = [INDEX[name] for name in self.id_schema]
        audience_ids = [audience_id]
        batch_data = []
        for row in self.rows:
            batch_data.append([{"id": row[i], "audience_ids": audience_ids} if row[i] else {} for i in positions])
        return {"advertiser_ids": [advertiser_id], "action": self.action, "id_schema": list(self.id_schema),
                "batch_data": batch_data}


@dataclass(frozen=True, slots=True)
class Batch:
    """Changes committed together: with an add request when any of them sends a hash (commit once TikTok
    acknowledged it), else state only (removes, lost identifiers: commit at once). Rejects found while the
    batch filled ride along, to be stored with its checkpoint."""

    changes: tuple[Change, ...]
    request: MappingRequest | None
    rejects: tuple[Rejection, ...] = ()

    def halves(self) -> tuple[Batch, Batch]:
        """The batch split in two (to find the people TikTok refuses); rejects stay with the first half."""
        middle = len(self.changes) // 2
        first, second = self.changes[:middle], self.changes[middle:]
        schema = self.request.id_schema if self.request else ()
        return (_batch(first, schema, self.rejects), _batch(second, schema, ()))


def _batch(changes: Sequence[Change], schema: tuple[str, ...], rejects: Sequence[Rejection]) -> Batch:
    sending = [c for c in changes if c.sends]
    request = MappingRequest("add", schema, tuple(c.sent for c in sending)) if sending else None
    return Batch(tuple(changes), request, tuple(rejects))


def batches(items: Iterable[Item], id_schema: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[Batch]:
    """Group a plan's items: up to `batch_size` sending changes per add request, state-only changes apart."""
    schema = ordered_schema(id_schema)
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size {batch_size} is not between 1 and {MAX_BATCH_SIZE}")
    sending: list[Change] = []
    quiet: list[Change] = []
    rejects: list[Rejection] = []
    for item in items:
        if type(item) is Rejection:
            rejects.append(item)
            if len(rejects) >= batch_size:
                yield Batch((), None, tuple(rejects))
                rejects = []
            continue
        pile = sending if item.sends else quiet  # type: ignore[union-attr]
        pile.append(item)  # type: ignore[arg-type]
        if len(pile) >= batch_size:
            yield _batch(pile, schema, rejects)
            pile.clear()
            rejects = []
    for pile in (sending, quiet):
        if pile:
            yield _batch(pile, schema, rejects)
            rejects = []
    if rejects:
        yield Batch((), None, tuple(rejects))


def delete_request(id_type: str, hashes: Sequence[str], id_schema: Sequence[str]) -> MappingRequest:
    """A delete request for hashes of one id type (owed deletes, see MembershipStore.unheld_deletes), one
    person-row each. Its id_schema is the audience's plus `id_type`: an identifier the user stopped mapping
    must still leave TikTok."""
    position = INDEX[id_type]
    rows = tuple(tuple(value if i == position else None for i in range(len(ID_TYPE_NAMES))) for value in hashes)
    return MappingRequest("delete", ordered_schema([*id_schema, id_type]), rows)
