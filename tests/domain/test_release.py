"""The release state machine, one event at a time."""

from __future__ import annotations

import itertools
import typing
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.domain import release as rel
from bot.domain.errors import DomainError, InvalidTransition, NotInvolved
from bot.domain.models import TERMINAL_STATES, Release, ReleaseState, Step, StepStatus
from tests.domain.factories import (
    ALICE,
    BOB,
    CAROL,
    DAVE_UNMAPPED,
    OUTSIDER,
    PEOPLE_AB,
    REQUESTER,
    STAND_IN,
    commit,
    person,
    release,
    sha,
)

S = ReleaseState
AT = 1_700_001_000.0

EVENTS: dict[str, rel.Event] = {
    "collect": rel.Collect(commits=(commit(1), commit(2)), people=PEOPLE_AB, base_sha=sha(0)),
    "freeze": rel.Freeze(by=REQUESTER, approval_required=True),
    "react": rel.React(user=ALICE, verdict=rel.Verdict.APPROVE, added=True),
    "cancel": rel.Cancel(by=REQUESTER),
    "supersede": rel.Supersede(reason="superseded by rollback prod-9"),
    "start_deploy": rel.StartDeploy(fence=3, previous_sha=sha(0)),
    "deploy_finished": rel.DeployFinished(),
    "mark_healthy": rel.MarkHealthy(),
    "mark_failed": rel.MarkFailed(reason="deploy failed"),
    "start_rollback": rel.StartRollback(reason="health check failed: 503"),
    "finish_rollback": rel.FinishRollback(healthy=True),
    "resume_rollback": rel.ResumeRollback(fence=8),
    "retry": rel.Retry(reason="the previous worker stopped"),
    "give_up": rel.GiveUp(reason="shipmate gave up deploying it after 5 tries"),
    "progress": rel.Progress(step=Step("pull", StepStatus.RUNNING)),
}

DECIDING = (S.AWAITING_APPROVAL, S.BLOCKED, S.APPROVED)

#: event -> {state it is allowed in: state it leads to}; everything else is refused
ALLOWED: dict[str, dict[ReleaseState, ReleaseState]] = {
    "collect": {S.COLLECTING: S.COLLECTING},
    "freeze": {S.COLLECTING: S.AWAITING_APPROVAL},
    # ALICE approving: BOB still awaited, BOB's block still holds, an approved release stays so
    "react": {
        S.AWAITING_APPROVAL: S.AWAITING_APPROVAL,
        S.BLOCKED: S.BLOCKED,
        S.APPROVED: S.APPROVED,
    },
    "cancel": {s: S.CANCELLED for s in (S.COLLECTING, *DECIDING)},
    "supersede": {s: S.SUPERSEDED for s in (S.COLLECTING, *DECIDING)},
    "start_deploy": {S.APPROVED: S.DEPLOYING},
    "deploy_finished": {S.DEPLOYING: S.VERIFYING},
    "mark_healthy": {S.VERIFYING: S.LIVE},
    "mark_failed": {S.DEPLOYING: S.FAILED, S.VERIFYING: S.FAILED},
    "start_rollback": {S.DEPLOYING: S.ROLLING_BACK, S.VERIFYING: S.ROLLING_BACK},
    "finish_rollback": {S.ROLLING_BACK: S.ROLLED_BACK},
    "resume_rollback": {S.ROLLING_BACK: S.ROLLING_BACK},
    "retry": {S.DEPLOYING: S.APPROVED, S.VERIFYING: S.APPROVED},
    "give_up": {s: S.FAILED for s in (*DECIDING, S.DEPLOYING, S.VERIFYING, S.ROLLING_BACK)},
    "progress": {s: s for s in (S.DEPLOYING, S.VERIFYING, S.ROLLING_BACK)},
}

TABLE = [
    pytest.param(name, state, ALLOWED[name].get(state), id=f"{name}-from-{state.value}")
    for name, state in itertools.product(EVENTS, S)
]


@pytest.mark.parametrize(("name", "state", "expected"), TABLE)
def test_every_event_from_every_state(
    name: str, state: ReleaseState, expected: ReleaseState | None
) -> None:
    """Each event either leads to the tabled state or is refused naming the release and state."""
    before = release(state)
    event = EVENTS[name]
    if expected is None:
        with pytest.raises(InvalidTransition) as info:
            rel.apply(before, event, at=AT)
        assert info.value.release_id == before.id
        assert info.value.state == state.value
        message = str(info.value)
        assert before.id in message
        assert state.value.replace("_", " ") in message
        assert "cannot" in message
    else:
        after = rel.apply(before, event, at=AT)
        assert after.state is expected
        assert after.version == before.version + 1
        assert after.updated_at == AT
        assert after.id == before.id


def test_table_covers_every_state_and_event() -> None:
    """The transition table mentions only real states and every event type once."""
    assert set(ALLOWED) == set(EVENTS)
    assert {type(e) for e in EVENTS.values()} == set(typing.get_args(rel.Event))


@pytest.mark.parametrize(
    "state",
    [s for s in sorted(TERMINAL_STATES)],
)
def test_terminal_release_accepts_no_event(state: ReleaseState) -> None:
    """A release in a terminal state refuses every event, so it never changes again."""
    before = release(state)
    accepted = []
    for name, event in EVENTS.items():
        try:
            rel.apply(before, event, at=AT)
        except DomainError:
            continue
        accepted.append(name)
    assert accepted == []


def test_freeze_without_approval_goes_straight_to_approved() -> None:
    """Freezing with approval_required False approves at once and records who and when."""
    frozen = rel.apply(
        release(S.COLLECTING), rel.Freeze(by=REQUESTER, approval_required=False), at=AT
    )
    assert frozen.state is S.APPROVED
    assert frozen.approval_required is False
    assert frozen.requested_by == REQUESTER
    assert frozen.frozen_at == AT
    assert frozen.approved_at == AT


def test_freeze_with_approval_waits_and_keeps_stand_ins() -> None:
    """Freezing with approval_required waits for authors and stores the configured stand-ins."""
    frozen = rel.apply(
        release(S.COLLECTING),
        rel.Freeze(by=REQUESTER, approval_required=True, stand_ins=(STAND_IN,)),
        at=AT,
    )
    assert frozen.state is S.AWAITING_APPROVAL
    assert frozen.stand_ins == (STAND_IN,)
    assert frozen.approved_at is None
    assert frozen.frozen_at == AT


def test_collect_sets_head_to_last_commit() -> None:
    """Collect replaces the batch and points head_sha at its newest commit."""
    commits = (commit(5), commit(6), commit(7))
    after = rel.apply(
        release(S.COLLECTING), rel.Collect(commits=commits, people=(), base_sha=sha(4)), at=AT
    )
    assert after.commits == commits
    assert after.head_sha == sha(7)
    assert after.base_sha == sha(4)
    assert after.people == ()


def test_collect_nothing_clears_head() -> None:
    """Collecting an empty batch leaves no head sha."""
    after = rel.apply(
        release(S.COLLECTING), rel.Collect(commits=(), people=(), base_sha=sha(9)), at=AT
    )
    assert after.head_sha is None
    assert after.commits == ()


def react(r: Release, user: str, verdict: rel.Verdict, added: bool = True) -> Release:
    return rel.apply(r, rel.React(user=user, verdict=verdict, added=added), at=AT)


APPROVE = rel.Verdict.APPROVE
BLOCK = rel.Verdict.BLOCK


def awaiting(**overrides: Any) -> Release:
    return release(S.AWAITING_APPROVAL, **overrides)


def test_all_involved_approving_approves() -> None:
    """The release is approved once every involved Slack user approved, not before."""
    r = react(awaiting(), ALICE, APPROVE)
    assert r.state is S.AWAITING_APPROVAL
    r = react(r, BOB, APPROVE)
    assert r.state is S.APPROVED
    assert r.approvals == {ALICE, BOB}
    assert r.approved_at == AT


def test_withdrawing_an_approval_in_approved_goes_back_to_awaiting() -> None:
    """Removing an approval from an approved release makes it wait again."""
    r = react(react(awaiting(), ALICE, APPROVE), BOB, APPROVE)
    r = react(r, BOB, APPROVE, added=False)
    assert r.state is S.AWAITING_APPROVAL
    assert r.approvals == {ALICE}
    assert r.approved_at is None


def test_block_wins_over_full_approval() -> None:
    """A block holds a fully approved release; removing it approves again."""
    r = react(react(awaiting(), ALICE, APPROVE), BOB, APPROVE)
    r = react(r, ALICE, BLOCK)
    assert r.state is S.BLOCKED
    r = react(r, ALICE, BLOCK, added=False)
    assert r.state is S.APPROVED


def test_two_blocks_need_two_unblocks() -> None:
    """A release stays blocked until every block is withdrawn."""
    r = react(react(awaiting(), ALICE, BLOCK), BOB, BLOCK)
    r = react(r, ALICE, BLOCK, added=False)
    assert r.state is S.BLOCKED
    assert r.blocks == {BOB}
    r = react(r, BOB, BLOCK, added=False)
    assert r.state is S.AWAITING_APPROVAL


REACTIONS = [
    (ALICE, APPROVE, True),
    (BOB, APPROVE, True),
    (BOB, BLOCK, True),
    (BOB, BLOCK, False),
    (ALICE, APPROVE, False),
]


def expected_state(approvals: set[str], blocks: set[str], involved: set[str]) -> ReleaseState:
    if blocks:
        return S.BLOCKED
    if involved <= approvals:
        return S.APPROVED
    return S.AWAITING_APPROVAL


@pytest.mark.parametrize("order", list(itertools.permutations(REACTIONS)))
def test_reactions_in_any_order_settle(order: tuple[tuple[str, rel.Verdict, bool], ...]) -> None:
    """Whatever the order of reactions, the state follows from the final approvals and blocks."""
    r = awaiting()
    approvals: set[str] = set()
    blocks: set[str] = set()
    for user, verdict, added in order:
        r = react(r, user, verdict, added)
        target = approvals if verdict is APPROVE else blocks
        if added:
            target.add(user)
        else:
            target.discard(user)
        assert r.approvals == approvals
        assert r.blocks == blocks
        assert r.state is expected_state(approvals, blocks, {ALICE, BOB})


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([ALICE, BOB, CAROL]), st.sampled_from(list(rel.Verdict)), st.booleans()
        ),
        max_size=25,
    )
)
def test_random_reactions_match_reference(
    reactions: list[tuple[str, rel.Verdict, bool]],
) -> None:
    """Random reaction sequences by involved users always match a set-based reference model."""
    people = (*PEOPLE_AB, person(CAROL, "Carol"))
    r = awaiting(people=people)
    approvals: set[str] = set()
    blocks: set[str] = set()
    for user, verdict, added in reactions:
        before = r.version
        r = react(r, user, verdict, added)
        assert r.version == before + 1
        target = approvals if verdict is APPROVE else blocks
        (target.add if added else target.discard)(user)
        assert r.state is expected_state(approvals, blocks, {ALICE, BOB, CAROL})
        if r.state is S.APPROVED:
            assert r.approved_at is not None
        elif r.state is S.AWAITING_APPROVAL:
            assert r.approved_at is None


@pytest.mark.parametrize("state", DECIDING)
@pytest.mark.parametrize("verdict", list(rel.Verdict))
@pytest.mark.parametrize("added", [True, False])
def test_user_not_involved_is_refused(
    state: ReleaseState, verdict: rel.Verdict, added: bool
) -> None:
    """A reaction by someone with no commits raises NotInvolved naming them and the release."""
    r = release(state)
    with pytest.raises(NotInvolved) as info:
        react(r, OUTSIDER, verdict, added)
    assert info.value.user == OUTSIDER
    assert info.value.release_id == r.id
    assert f"<@{OUTSIDER}>" in str(info.value)
    assert r.id in str(info.value)


def test_requester_is_not_involved_when_all_authors_are_mapped() -> None:
    """The requester cannot approve for others when every author has a Slack user."""
    with pytest.raises(NotInvolved):
        react(awaiting(), REQUESTER, APPROVE)


def test_configured_stand_in_approves_for_unmapped_author() -> None:
    """A configured stand-in's approval covers an author without a Slack user."""
    r = awaiting(people=(person(ALICE, "Alice"), DAVE_UNMAPPED), stand_ins=(STAND_IN,))
    r = react(r, ALICE, APPROVE)
    assert r.state is S.AWAITING_APPROVAL
    r = react(r, STAND_IN, APPROVE)
    assert r.state is S.APPROVED


def test_configured_stand_in_replaces_requester() -> None:
    """With stand-ins configured, the requester is not a stand-in."""
    r = awaiting(people=(person(ALICE, "Alice"), DAVE_UNMAPPED), stand_ins=(STAND_IN,))
    with pytest.raises(NotInvolved):
        react(r, REQUESTER, APPROVE)


def test_requester_stands_in_when_none_configured() -> None:
    """Without configured stand-ins the requester approves for unmapped authors."""
    r = awaiting(people=(DAVE_UNMAPPED,))
    assert r.state is S.AWAITING_APPROVAL
    r = react(r, REQUESTER, APPROVE)
    assert r.state is S.APPROVED


def test_stand_in_alone_is_not_enough() -> None:
    """A stand-in's approval does not replace a mapped author's own approval."""
    r = awaiting(people=(person(ALICE, "Alice"), DAVE_UNMAPPED))
    r = react(r, REQUESTER, APPROVE)
    assert r.state is S.AWAITING_APPROVAL
    r = react(r, ALICE, APPROVE)
    assert r.state is S.APPROVED


def test_stand_in_can_block() -> None:
    """A stand-in's block reaction counts like an author's."""
    r = awaiting(people=(DAVE_UNMAPPED,))
    assert react(r, REQUESTER, BLOCK).state is S.BLOCKED


def test_stand_in_without_unmapped_authors_is_not_involved() -> None:
    """A configured stand-in has no say when every author is mapped."""
    with pytest.raises(NotInvolved):
        react(awaiting(stand_ins=(STAND_IN,)), STAND_IN, APPROVE)


@pytest.mark.parametrize("verdict", list(rel.Verdict))
def test_reactions_refused_when_no_approval_needed(verdict: rel.Verdict) -> None:
    """A release frozen without approvals refuses reactions as an invalid transition."""
    r = release(S.APPROVED, approval_required=False)
    with pytest.raises(InvalidTransition):
        react(r, ALICE, verdict)


def test_version_grows_by_one_on_every_apply() -> None:
    """Each applied event bumps the version by exactly one and stamps updated_at."""
    r = release(S.COLLECTING)
    events: list[rel.Event] = [
        rel.Collect(commits=(commit(1),), people=PEOPLE_AB, base_sha=sha(0)),
        rel.Freeze(by=REQUESTER, approval_required=True),
        rel.React(user=ALICE, verdict=APPROVE, added=True),
        rel.React(user=BOB, verdict=APPROVE, added=True),
        rel.StartDeploy(fence=1, previous_sha=sha(0)),
        rel.Progress(step=Step("pull", StepStatus.RUNNING)),
        rel.Progress(step=Step("pull", StepStatus.OK)),
        rel.DeployFinished(),
        rel.StartRollback(reason="503"),
        rel.FinishRollback(healthy=True),
    ]
    for i, event in enumerate(events):
        after = rel.apply(r, event, at=AT + i)
        assert after.version == r.version + 1
        assert after.updated_at == AT + i
        r = after
    assert r.state is S.ROLLED_BACK
    assert r.version == 1 + len(events)


def test_refused_apply_leaves_release_unchanged() -> None:
    """A refused event raises without changing the release it was given."""
    r = release(S.LIVE)
    copy = replace(r)
    with pytest.raises(DomainError):
        rel.apply(r, rel.StartDeploy(fence=1, previous_sha=None), at=AT)
    assert r == copy


def deploying() -> Release:
    return release(S.DEPLOYING, steps=())


def progress(r: Release, name: str, status: StepStatus, detail: str = "") -> Release:
    return rel.apply(r, rel.Progress(step=Step(name, status, detail)), at=AT)


def test_progress_upserts_running_step_by_name() -> None:
    """A step reported again while running is replaced in place, not appended."""
    r = progress(deploying(), "pull", StepStatus.RUNNING)
    r = progress(r, "start", StepStatus.RUNNING)
    r = progress(r, "pull", StepStatus.OK, "3 layers")
    assert r.steps == (
        Step("pull", StepStatus.OK, "3 layers"),
        Step("start", StepStatus.RUNNING),
    )


def test_progress_appends_after_finished_step_of_same_name() -> None:
    """A finished step stays; a new attempt with the same name is a new line."""
    r = progress(deploying(), "health", StepStatus.FAILED, "503")
    r = progress(r, "health", StepStatus.RUNNING)
    r = progress(r, "health", StepStatus.OK)
    assert r.steps == (
        Step("health", StepStatus.FAILED, "503"),
        Step("health", StepStatus.OK),
    )


def test_start_deploy_records_fence_and_clears_steps() -> None:
    """StartDeploy stores the fence and previous sha and starts with no steps."""
    r = release(S.APPROVED, steps=(Step("old", StepStatus.OK),))
    after = rel.apply(r, rel.StartDeploy(fence=42, previous_sha=sha(3)), at=AT)
    assert (after.fence, after.previous_sha, after.steps) == (42, sha(3), ())


def test_start_rollback_needs_a_previous_sha() -> None:
    """A failing first release has nothing to roll back to and refuses StartRollback."""
    r = release(S.VERIFYING, previous_sha=None)
    with pytest.raises(InvalidTransition):
        rel.apply(r, rel.StartRollback(reason="503"), at=AT)


def test_start_rollback_finishes_only_when_the_rollback_does() -> None:
    """A release rolling back is not finished until the rollback is."""
    r = rel.apply(release(S.VERIFYING), rel.StartRollback(reason="health check failed: 503"), at=AT)
    assert r.finished_at is None
    done = rel.apply(r, rel.FinishRollback(healthy=True), at=AT + 5)
    assert done.finished_at == AT + 5
    assert done.healthy_after_rollback is True
    assert done.reason == "health check failed: 503"


def test_unhealthy_rollback_explains_both_failures() -> None:
    """An unhealthy rollback keeps the first reason and adds the rollback's detail."""
    r = rel.apply(release(S.ROLLING_BACK), rel.FinishRollback(healthy=False, detail="502"), at=AT)
    assert r.healthy_after_rollback is False
    assert r.reason == "health check failed: 503; after rolling back: 502"


def test_retry_releases_the_fence() -> None:
    """Retry puts a stuck deploy back to approved without a fence."""
    r = rel.apply(release(S.VERIFYING), rel.Retry(reason="worker died"), at=AT)
    assert r.state is S.APPROVED
    assert r.fence is None
    assert r.reason == "worker died"


def test_mark_healthy_clears_reason() -> None:
    """Going live records the finish time and drops any earlier reason."""
    r = rel.apply(release(S.VERIFYING, reason="retried"), rel.MarkHealthy(), at=AT)
    assert r.reason is None
    assert r.finished_at == AT


def test_cancel_names_who_cancelled() -> None:
    """Cancelling records who cancelled (an id, not a mention) and finishes the release."""
    r = rel.apply(awaiting(), rel.Cancel(by=BOB), at=AT)
    assert (r.cancelled_by, r.reason) == (BOB, None)
    assert r.finished_at == AT
