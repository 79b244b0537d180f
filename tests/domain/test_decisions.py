"""Each event says what it decided, on the value it returns, for the store to audit."""

from __future__ import annotations

import pytest

from bot.domain import audit, environment
from bot.domain import release as rel
from bot.domain.models import DecisionKind, Release, ReleaseState
from tests.domain.factories import ALICE, BOB, REQUESTER, env_state, release, sha
from tests.domain.test_release import ALLOWED, EVENTS

S = ReleaseState
AT = 1_700_002_000.0
K = DecisionKind


def _decided_part(r: Release) -> tuple[object, ...]:
    """What an audit entry is about: the state, the votes, the blocks' reasons, the fence."""
    return (r.state, r.approvals, r.blocks, r.block_reasons, r.fence)


@pytest.mark.parametrize(
    ("name", "state"),
    [
        pytest.param(name, state, id=f"{name}-from-{state.value}")
        for name, moves in ALLOWED.items()
        for state in moves
    ],
)
def test_every_transition_records_what_it_changed(name: str, state: ReleaseState) -> None:
    """An event that changes what the audit is about records at least one decision about it;
    one that changes nothing of it (new commits, progress, a repeated vote) records none."""
    before = release(state)
    after = rel.apply(before, EVENTS[name], at=AT)
    assert bool(after.decisions) == (_decided_part(before) != _decided_part(after))
    assert all(d.at == AT for d in after.decisions)


def test_decisions_of_one_write_add_up() -> None:
    """A deploy started over after its worker died is two decisions in one write, in order."""
    deploying = release(S.DEPLOYING)
    retried = rel.apply(deploying, rel.Retry(reason="the previous worker stopped"), at=AT)
    started = rel.apply(retried, rel.StartDeploy(fence=9, previous_sha=sha(0)), at=AT)
    assert [d.kind for d in started.decisions] == [K.DEPLOY_RETRIED, K.DEPLOY_STARTED]
    entries = audit.entries([started], at=AT)
    assert [(e.kind, e.release) for e in entries] == [
        (K.DEPLOY_RETRIED, started.id),
        (K.DEPLOY_STARTED, started.id),
    ]


def test_the_actor_is_who_the_event_names() -> None:
    """Votes are their voter's, a cancel its canceller's, a rollback's supersede its requester's."""
    awaiting = release(S.AWAITING_APPROVAL)
    vote = rel.apply(awaiting, rel.React(BOB, rel.Verdict.BLOCK, added=True, reason="no"), at=AT)
    assert [(d.kind, d.by) for d in vote.decisions] == [(K.BLOCKED, BOB)]
    cancelled = rel.apply(awaiting, rel.Cancel(by=ALICE), at=AT)
    assert [(d.kind, d.by) for d in cancelled.decisions] == [(K.CANCELLED, ALICE)]
    env = env_state(("prod-1", sha(1)), ("prod-2", sha(2)), active_release=awaiting.id)
    change = environment.request_rollback(env, awaiting, release_id="prod-9", by=REQUESTER, at=AT)
    assert [(d.kind, d.by) for r in change.releases for d in r.decisions] == [
        (K.SUPERSEDED, REQUESTER),
        (K.ROLLBACK_REQUESTED, REQUESTER),
    ]


def test_cancel_stores_who_not_a_mention() -> None:
    """The canceller is an id in the state; the stored reason names nobody."""
    cancelled = rel.apply(release(S.COLLECTING), rel.Cancel(by=ALICE), at=AT)
    assert (cancelled.cancelled_by, cancelled.reason) == (ALICE, None)
