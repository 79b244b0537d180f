"""The audit entries a write makes: one per decision, attributed by the event that made it."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.domain import audit, environment
from bot.domain import release as rel
from bot.domain.audit import SHIPMATE, UNKNOWN, Entry, Kind
from bot.domain.errors import DomainError
from bot.domain.models import EnvState, Release, ReleaseState, Step, StepStatus
from tests.domain.factories import (
    ALICE,
    BOB,
    ENV,
    REQUESTER,
    env_state,
    release,
    rollback_release,
    sha,
)

S = ReleaseState
AT = 1_700_000_500.0


def one(before: Release | None, after: Release) -> list[Entry]:
    """The entries of writing ``after`` over ``before``: the decisions made since ``before``."""
    made = after.decisions[len(before.decisions) :] if before is not None else after.decisions
    return audit.entries([replace(after, decisions=made)], at=AT)


def as_read(env: EnvState) -> EnvState:
    """An environment as the store reads it back: what was decided is in the stream, not in it."""
    return replace(env, decisions=())


def kinds(entries: list[Entry]) -> list[tuple[Kind, str]]:
    return [(e.kind, e.actor) for e in entries]


def test_release_requested_names_who_and_what() -> None:
    """/release: who asked, how many commits, the sha range and whether authors approve."""
    batch = release(S.COLLECTING)
    frozen = rel.apply(batch, rel.Freeze(by=REQUESTER, approval_required=True), at=AT)
    [entry] = one(batch, frozen)
    assert (entry.kind, entry.actor, entry.env, entry.release) == (
        Kind.REQUESTED,
        REQUESTER,
        ENV,
        "prod-1",
    )
    assert entry.at == AT
    assert entry.detail == {"commits": 2, "from": sha(0), "to": sha(2), "approval": "authors"}


def test_release_without_approval_is_requested_only() -> None:
    """approval: none goes straight to approved; the request entry says so and nobody approved."""
    batch = release(S.COLLECTING)
    frozen = rel.apply(batch, rel.Freeze(by=REQUESTER, approval_required=False), at=AT)
    assert frozen.state is S.APPROVED
    [entry] = one(batch, frozen)
    assert entry.kind is Kind.REQUESTED and entry.detail["approval"] == "none"


def test_approvals_then_approved_by_the_last_approver() -> None:
    """Each approval is an entry; the one completing the set also says the release is approved."""
    awaiting = release(S.AWAITING_APPROVAL)
    by_alice = rel.apply(awaiting, rel.React(ALICE, rel.Verdict.APPROVE, added=True), at=AT)
    assert kinds(one(awaiting, by_alice)) == [(Kind.APPROVAL_GIVEN, ALICE)]
    by_bob = rel.apply(by_alice, rel.React(BOB, rel.Verdict.APPROVE, added=True), at=AT + 60)
    entries = one(by_alice, by_bob)
    assert kinds(entries) == [(Kind.APPROVAL_GIVEN, BOB), (Kind.APPROVED, BOB)]
    approved = entries[1]
    assert approved.detail == {
        "approvals": sorted([ALICE, BOB]),
        "waited": AT + 60 - 1_700_000_100.0,
    }
    assert approved.at == AT + 60


def test_withdrawn_approval() -> None:
    """Taking an approval back is an entry by that person, even when it un-approves the release."""
    approved = release(S.APPROVED)
    withdrawn = rel.apply(approved, rel.React(ALICE, rel.Verdict.APPROVE, added=False), at=AT)
    assert withdrawn.state is S.AWAITING_APPROVAL
    assert kinds(one(approved, withdrawn)) == [(Kind.APPROVAL_WITHDRAWN, ALICE)]


def test_block_with_reason_and_its_lifting() -> None:
    """A block names the blocker and their reason; lifting it is the blocker's entry too."""
    approved = release(S.APPROVED)
    blocked = rel.apply(
        approved, rel.React(BOB, rel.Verdict.BLOCK, added=True, reason="breaks <checkout>"), at=AT
    )
    [entry] = one(approved, blocked)
    assert (entry.kind, entry.actor, entry.detail) == (
        Kind.BLOCKED,
        BOB,
        {"reason": "breaks <checkout>"},
    )
    lifted = rel.apply(blocked, rel.React(BOB, rel.Verdict.BLOCK, added=False), at=AT + 5)
    assert lifted.state is S.APPROVED
    assert kinds(one(blocked, lifted)) == [(Kind.BLOCK_LIFTED, BOB), (Kind.APPROVED, BOB)]


def test_reason_given_later_for_an_existing_block_is_recorded() -> None:
    """A reaction block first, the Block button's reason after: the reason gets its own entry."""
    awaiting = release(S.AWAITING_APPROVAL)
    blocked = rel.apply(awaiting, rel.React(BOB, rel.Verdict.BLOCK, added=True), at=AT)
    [first] = one(awaiting, blocked)
    assert first.detail == {"reason": None}
    explained = rel.apply(
        blocked, rel.React(BOB, rel.Verdict.BLOCK, added=True, reason="flaky test"), at=AT
    )
    [second] = one(blocked, explained)
    assert (second.kind, second.detail) == (Kind.BLOCKED, {"reason": "flaky test"})


def test_a_deploy_from_start_to_live() -> None:
    """Deploy started (sha, fence, previous), deployed, live with how long it took: all shipmate."""
    approved = release(S.APPROVED)
    deploying = rel.apply(approved, rel.StartDeploy(fence=9, previous_sha=sha(0)), at=AT)
    verifying = rel.apply(deploying, rel.DeployFinished(), at=AT + 3)
    live = rel.apply(verifying, rel.MarkHealthy(), at=AT + 12.5)
    started = one(approved, deploying)
    assert kinds(started) == [(Kind.DEPLOY_STARTED, SHIPMATE)]
    assert started[0].detail == {"sha": sha(2), "fence": 9, "previous": sha(0)}
    assert kinds(one(deploying, verifying)) == [(Kind.DEPLOYED, SHIPMATE)]
    [went_live] = one(verifying, live)
    assert went_live.kind is Kind.LIVE and went_live.detail == {"sha": sha(2), "seconds": 12.5}


def test_failure_and_automatic_rollback() -> None:
    """Failed (with why), rolling back to the previous sha, rolled back (healthy or not)."""
    deploying = release(S.DEPLOYING)
    rolling = rel.apply(deploying, rel.StartRollback(reason="health check failed: 500"), at=AT)
    [start] = one(deploying, rolling)
    assert (start.kind, start.actor) == (Kind.ROLLING_BACK, SHIPMATE)
    assert start.detail == {"to": sha(0), "reason": "health check failed: 500", "automatic": True}
    done = rel.apply(rolling, rel.FinishRollback(healthy=False, detail="503"), at=AT + 4)
    [end] = one(rolling, done)
    assert end.kind is Kind.ROLLED_BACK and end.detail["healthy"] is False
    assert end.detail["reason"] == "health check failed: 500; after rolling back: 503"
    failed = rel.apply(deploying, rel.MarkFailed(reason="deploy of abc failed"), at=AT)
    [fail] = one(deploying, failed)
    assert (fail.kind, fail.detail["reason"]) == (Kind.FAILED, "deploy of abc failed")


def test_worker_takeovers() -> None:
    """A deploy started over after its worker died, a rollback resumed under a new fence,
    and a job given up on are each recorded."""
    deploying = release(S.DEPLOYING)
    retried = rel.apply(deploying, rel.Retry(reason="the previous worker stopped"), at=AT)
    assert kinds(one(deploying, retried)) == [(Kind.DEPLOY_RETRIED, SHIPMATE)]
    rolling = release(S.ROLLING_BACK)
    resumed = rel.apply(rolling, rel.ResumeRollback(fence=12), at=AT)
    [entry] = one(rolling, resumed)
    assert (entry.kind, entry.detail) == (Kind.ROLLBACK_RESUMED, {"fence": 12})
    assert one(resumed, rel.apply(resumed, rel.ResumeRollback(fence=12), at=AT)) == []
    gave_up = rel.apply(release(S.APPROVED), rel.GiveUp(reason="job kept failing"), at=AT)
    assert kinds(one(release(S.APPROVED), gave_up)) == [(Kind.FAILED, SHIPMATE)]


def test_cancel_names_who_cancelled() -> None:
    """The canceller comes from the Cancel event; the entry's reason reads as it always has."""
    awaiting = release(S.AWAITING_APPROVAL)
    change = environment.cancel(env_state(active_release=awaiting.id), awaiting, by=ALICE, at=AT)
    entries = audit.entries(change.releases, change.env, at=AT)
    assert kinds(entries) == [(Kind.CANCELLED, ALICE)]
    assert entries[0].detail == {"reason": f"cancelled by <@{ALICE}>"}


def test_manual_rollback_supersedes_what_waited() -> None:
    """/rollback: the waiting release is superseded by the person rolling back, then their rollback."""
    env = env_state(("prod-1", sha(1)), ("prod-2", sha(2)), active_release="prod-3")
    waiting = release(S.AWAITING_APPROVAL, rid="prod-3")
    change = environment.request_rollback(env, waiting, release_id="prod-4", by=ALICE, at=AT)
    entries = audit.entries(change.releases, change.env, at=AT)
    assert kinds(entries) == [(Kind.SUPERSEDED, ALICE), (Kind.ROLLBACK_REQUESTED, ALICE)]
    assert entries[1].release == "prod-4"
    assert entries[1].detail == {"to": sha(1), "target": "prod-1", "from": sha(2)}


def test_locks() -> None:
    """Locked by whom and why; unlocked by the caller's actor; the automatic lock is shipmate's."""
    env = env_state()
    locked = environment.lock(env, by=BOB, reason="db migration", at=AT)
    [lock] = audit.entries([], locked, at=AT + 1)
    assert (lock.kind, lock.actor, lock.release, lock.at) == (Kind.LOCKED, BOB, "", AT)
    assert lock.detail == {"reason": "db migration", "automatic": False}
    unlocked = environment.unlock(as_read(locked))
    [unlock] = audit.entries([], unlocked, at=AT + 1, actor=ALICE)
    assert (unlock.kind, unlock.actor, unlock.at) == (Kind.UNLOCKED, ALICE, AT + 1)
    assert unlock.detail == {"locked_by": BOB, "reason": "db migration"}
    [anonymous] = audit.entries([], unlocked, at=AT)
    assert anonymous.actor == UNKNOWN
    [named] = audit.entries([], environment.unlock(as_read(locked), by=BOB), at=AT, actor=ALICE)
    assert named.actor == BOB, "who the event names wins over who asked for the write"
    failed = release(S.ROLLED_BACK)
    auto = environment.lock_after_failure(env, failed, at=AT)
    [entry] = audit.entries([], auto, at=AT)
    assert (entry.kind, entry.actor, entry.detail["automatic"]) == (Kind.LOCKED, SHIPMATE, True)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        pytest.param(
            release(S.COLLECTING),
            rel.apply(release(S.COLLECTING), rel.Collect((), (), sha(5)), at=AT),
            id="collect",
        ),
        pytest.param(
            release(S.DEPLOYING),
            rel.apply(
                release(S.DEPLOYING),
                rel.Progress(Step("deploy", StepStatus.RUNNING)),
                at=AT,
            ),
            id="progress",
        ),
        pytest.param(
            release(S.LIVE), replace(release(S.LIVE), channel="C1", message_ts="1.0"), id="posted"
        ),
        pytest.param(None, release(S.COLLECTING), id="new-batch"),
    ],
)
def test_what_is_not_a_decision_is_not_audited(before: Release | None, after: Release) -> None:
    """Collected commits, deploy progress and message bookkeeping make no entries."""
    assert one(before, after) == []


def test_state_changes_for_the_counters() -> None:
    """A release entering a state (a new one included) counts once; anything else does not."""
    deploying = release(S.DEPLOYING)
    live = rel.apply(rel.apply(deploying, rel.DeployFinished(), at=AT), rel.MarkHealthy(), at=AT)
    pairs: list[tuple[Release | None, Release]] = [
        (None, release(S.COLLECTING, rid="prod-2")),
        (deploying, live),
        (release(S.LIVE), replace(release(S.LIVE), message_ts="1.0")),
    ]
    assert audit.state_changes(pairs) == [(ENV, "collecting"), (ENV, "live")]


def test_entry_fields_round_trip_and_stay_small() -> None:
    """Six string fields, compact JSON detail; long reasons are clipped; fields read back."""
    failed = rel.apply(release(S.DEPLOYING), rel.MarkFailed(reason="x" * 5000), at=AT)
    [entry] = one(release(S.DEPLOYING), failed)
    flat = entry.fields()
    assert flat[0::2] == ["at", "env", "release", "kind", "actor", "detail"]
    assert all(isinstance(v, str) for v in flat)
    detail = json.loads(flat[-1])
    assert len(detail["reason"]) == audit.MAX_DETAIL_TEXT
    assert flat[-1] == json.dumps(detail, separators=(",", ":"), sort_keys=True)
    assert Entry.from_fields(dict(zip(flat[0::2], flat[1::2], strict=True))) == entry


_EVENTS = [
    rel.React(ALICE, rel.Verdict.APPROVE, added=True),
    rel.React(ALICE, rel.Verdict.APPROVE, added=False),
    rel.React(BOB, rel.Verdict.APPROVE, added=True),
    rel.React(BOB, rel.Verdict.BLOCK, added=True, reason="wait"),
    rel.React(BOB, rel.Verdict.BLOCK, added=False),
    rel.Cancel(by=ALICE),
    rel.Supersede(reason="superseded by rollback prod-9"),
    rel.StartDeploy(fence=3, previous_sha=sha(0)),
    rel.DeployFinished(),
    rel.MarkHealthy(),
    rel.MarkFailed(reason="boom"),
    rel.StartRollback(reason="unhealthy"),
    rel.FinishRollback(healthy=True),
    rel.Retry(reason="worker stopped"),
    rel.GiveUp(reason="gave up"),
]


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.sampled_from(_EVENTS), max_size=12))
def test_every_decision_leaves_an_entry(steps: list[rel.Event]) -> None:
    """Whatever happens to a release, each change of state, approvals or blocks has an entry
    for that release, and a step the rules refuse (never written) is never audited."""
    current = rel.apply(
        release(S.COLLECTING), rel.Freeze(by=REQUESTER, approval_required=True), at=AT
    )
    for i, event in enumerate(steps):
        try:
            new = rel.apply(current, event, at=AT + i)
        except DomainError:
            continue
        entries = one(current, new)
        decided = (current.state, current.approvals, current.blocks, current.block_reasons) != (
            new.state,
            new.approvals,
            new.blocks,
            new.block_reasons,
        )
        assert bool(entries) == decided
        assert all(e.release == new.id and e.env == new.env for e in entries)
        current = new


def test_rollback_release_lifecycle() -> None:
    """A /rollback release deploys and goes live like any other: same entries, no approvals."""
    approved = rollback_release(S.APPROVED)
    deploying = rel.apply(approved, rel.StartDeploy(fence=1, previous_sha=sha(2)), at=AT)
    assert kinds(one(approved, deploying)) == [(Kind.DEPLOY_STARTED, SHIPMATE)]
    env = env_state(("prod-1", sha(1)), ("prod-2", sha(2)))
    change = environment.request_rollback(env, None, release_id="prod-3", by=REQUESTER, at=AT)
    entries = audit.entries(change.releases, change.env, at=AT + 5)
    assert kinds(entries) == [(Kind.ROLLBACK_REQUESTED, REQUESTER)]
    assert entries[0].at == change.releases[0].created_at == AT
