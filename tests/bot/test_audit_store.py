"""The audit stream on a real redis-server: written with its decision or not at all."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from bot.adapters.keys import Keys
from bot.adapters.store import Duplicate, Snapshot, Store, Write
from bot.domain import environment
from bot.domain import release as rel
from bot.domain.audit import Kind
from bot.domain.errors import NothingToRelease
from bot.domain.models import Author, Commit, Person, Release, ReleaseState

ALICE = "U0ALICE"
BOB = "U0BOB"
PEOPLE = (
    Person(email="alice@example.com", name="Alice", slack_user=ALICE),
    Person(email="bob@example.com", name="Bob", slack_user=BOB),
)
COMMIT = Commit(sha="a" * 40, title="Add cart", author=Author("Alice", "alice@example.com"))


@pytest.fixture
def store(redis: Redis) -> Store:
    return Store(redis, Keys("test"), clock=lambda: 5.0)


async def _seed_batch(store: Store, env: str = "sandbox") -> Release:
    release_id = await store.next_release_id(env)

    def decide(snap: Snapshot) -> tuple[Write, Release]:
        change = environment.new_batch(snap.env, release_id, at=1.0)
        batch = rel.apply(change.releases[0], rel.Collect((COMMIT,), PEOPLE, None), at=1.0)
        return Write(env=change.env, releases=[batch]), batch

    return await store.update(env, decide)


def _freeze(snap: Snapshot) -> tuple[Write, Release]:
    change = environment.request_release(
        snap.env, snap.batch, snap.active, by=ALICE, approval_required=True, stand_ins=(), at=2.0
    )
    return Write(env=change.env, releases=change.releases), change.releases[0]


def _react(
    release_id: str, user: str, *, at: float = 3.0
) -> Callable[[Snapshot], tuple[Write, Release]]:
    def decide(snap: Snapshot) -> tuple[Write, Release]:
        current = snap.get(release_id)
        assert current is not None
        new = rel.apply(current, rel.React(user, rel.Verdict.APPROVE, added=True), at=at)
        return Write(releases=[new]), new

    return decide


async def _kinds(store: Store) -> list[tuple[Kind, str]]:
    return [(e.kind, e.actor) for e in await store.audit_log()]


async def _counts(store: Store) -> dict[str, str]:
    raw = await store.redis.hgetall(store.keys.state_counts)
    return {str(k): str(v) for k, v in raw.items()}


async def test_a_decision_and_its_entry_land_together(store: Store) -> None:
    """/release writes the frozen release, its audit entry and its state count in one step."""
    batch = await _seed_batch(store)
    assert await store.audit_log() == [], "collecting commits is not a decision"
    frozen = await store.update("sandbox", _freeze)
    [entry] = await store.audit_log()
    assert (entry.kind, entry.actor, entry.env, entry.release) == (
        Kind.REQUESTED,
        ALICE,
        "sandbox",
        batch.id,
    )
    assert entry.at == 2.0, "the decision's own time, not the store's clock"
    assert entry.detail == {"commits": 1, "from": None, "to": "a" * 40, "approval": "authors"}
    assert frozen.state is ReleaseState.AWAITING_APPROVAL
    assert await _counts(store) == {"sandbox|collecting": "1", "sandbox|awaiting_approval": "1"}
    assert store.keys.audit == "shipmate:{test}:audit"


async def test_a_stale_write_adds_no_entry(store: Store) -> None:
    """A write refused as stale writes no audit entry and counts nothing."""
    batch = await _seed_batch(store)
    await store.update("sandbox", _freeze)
    stale = await store.snapshot("sandbox")
    assert stale is not None
    await store.update("sandbox", _react(batch.id, ALICE))
    before_counts = await _counts(store)
    current = stale.get(batch.id)
    assert current is not None
    approved_by_bob = rel.apply(current, rel.React(BOB, rel.Verdict.APPROVE, added=True), at=4.0)
    outcome, _ = await store._commit(
        stale, Write(releases=[approved_by_bob]), None, "sandbox", (), None
    )
    assert outcome == "conflict"
    assert await _kinds(store) == [(Kind.REQUESTED, ALICE), (Kind.APPROVAL_GIVEN, ALICE)]
    assert await _counts(store) == before_counts


async def test_a_decision_redone_after_a_conflict_is_audited_once(redis: Redis) -> None:
    """A cached store decides on old state, is refused, decides again: only what was written
    is in the stream, once, and the approval completing the set says so."""
    plain = Store(redis, Keys("test"))
    batch = await _seed_batch(plain)
    await plain.update("sandbox", _freeze)
    cached = Store(redis, Keys("test"), cache=True)
    await cached.snapshot("sandbox")
    await plain.update("sandbox", _react(batch.id, ALICE))  # behind the cache's back
    approved = await cached.update("sandbox", _react(batch.id, BOB))
    assert approved.state is ReleaseState.APPROVED
    assert await _kinds(plain) == [
        (Kind.REQUESTED, ALICE),
        (Kind.APPROVAL_GIVEN, ALICE),
        (Kind.APPROVAL_GIVEN, BOB),
        (Kind.APPROVED, BOB),
    ]
    assert (await _counts(plain))["sandbox|approved"] == "1"


async def test_a_duplicate_delivery_adds_no_entry(store: Store) -> None:
    """The same reaction event twice: one approval, one entry."""
    batch = await _seed_batch(store)
    await store.update("sandbox", _freeze)
    key = store.keys.dedupe("slack", "Ev1")
    await store.update("sandbox", _react(batch.id, ALICE), dedupe=key)
    with pytest.raises(Duplicate):
        await store.update("sandbox", _react(batch.id, ALICE), dedupe=key)
    assert await _kinds(store) == [(Kind.REQUESTED, ALICE), (Kind.APPROVAL_GIVEN, ALICE)]


async def test_a_refused_decision_adds_no_entry(store: Store) -> None:
    """/release with nothing to release: refused by the rules, nothing audited."""
    with pytest.raises(NothingToRelease):
        await store.update("sandbox", _freeze)
    assert not await store.redis.exists(store.keys.audit)


async def test_when_the_entry_cannot_be_written_neither_is_the_decision(store: Store) -> None:
    """If the audit key cannot take the entry, the script fails before writing anything."""
    batch = await _seed_batch(store)
    await store.redis.set(store.keys.audit, "not a stream")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await store.update("sandbox", _freeze)
    unchanged = await store.release(batch.id)
    assert unchanged is not None and unchanged.state is ReleaseState.COLLECTING
    assert (await store.env("sandbox")).batch_release == batch.id
    assert "sandbox|awaiting_approval" not in await _counts(store)


async def test_unlock_is_attributed_to_the_writes_actor(store: Store) -> None:
    """Lock and unlock: the lock names its holder, the unlock names whoever the write says."""

    def lock(snap: Snapshot) -> tuple[Write, None]:
        return Write(env=environment.lock(snap.env, by=BOB, reason="migration", at=7.0)), None

    def unlock(snap: Snapshot) -> tuple[Write, None]:
        return Write(env=environment.unlock(snap.env), actor=ALICE), None

    await store.update("sandbox", lock)
    await store.update("sandbox", unlock)
    locked, unlocked = await store.audit_log()
    assert (locked.kind, locked.actor, locked.at, locked.release) == (Kind.LOCKED, BOB, 7.0, "")
    assert (unlocked.kind, unlocked.actor, unlocked.at) == (Kind.UNLOCKED, ALICE, 5.0)
    assert unlocked.detail == {"locked_by": BOB, "reason": "migration"}


async def test_append_only_unless_retention_is_asked_for(redis: Redis) -> None:
    """By default nothing is trimmed; audit_maxlen trims (approximately) when configured."""
    keep_all = Store(redis, Keys("all"))
    trimmed = Store(redis, Keys("trim"), audit_maxlen=1)
    for store in (keep_all, trimmed):

        def flip(snap: Snapshot) -> tuple[Write, None]:
            env = snap.env
            if env.lock is None:
                return Write(env=environment.lock(env, by=BOB, reason="", at=1.0)), None
            return Write(env=environment.unlock(env), actor=BOB), None

        for _ in range(300):
            await store.update("sandbox", flip)
    assert await redis.xlen(keep_all.keys.audit) == 300
    assert await redis.xlen(trimmed.keys.audit) < 300


async def test_recent_walks_back_from_the_counter(store: Store) -> None:
    """/history's read: the newest documents first, skipping ids never written, in one script."""
    first = await _seed_batch(store)
    await store.update("sandbox", _freeze)
    await store.next_release_id("sandbox")  # a refused /rollback leaves a gap
    second = await _seed_batch(store)
    recent = await store.recent("sandbox", 5)
    assert [r.id for r in recent.releases] == [second.id, first.id]
    assert recent.total == 3
    assert recent.env.active_release == first.id
    assert [r.id for r in (await store.recent("sandbox", 1)).releases] == [second.id]
    empty = await store.recent("nowhere", 5)
    assert (empty.releases, empty.total, empty.env.name) == ([], 0, "nowhere")
