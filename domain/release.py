"""The release state machine: ``apply(release, event, at=...)`` and nothing else.

Pure and synchronous. The store runs it inside a Redis transaction, so whatever this
module refuses can never be half-applied, and whatever it allows happens exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from domain import approvals
from domain.errors import InvalidTransition, NotInvolved
from domain.models import Commit, Person, Release, ReleaseState, Step, StepStatus

S = ReleaseState


class Verdict(StrEnum):
    APPROVE = "approve"
    BLOCK = "block"


@dataclass(frozen=True, slots=True)
class Collect:
    """The batch changed: new commits on the branch (or a recomputed base)."""

    commits: tuple[Commit, ...]
    people: tuple[Person, ...]
    base_sha: str | None


@dataclass(frozen=True, slots=True)
class Freeze:
    """``/release``: stop collecting and ask for approvals."""

    by: str
    approval_required: bool
    stand_ins: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class React:
    """An approve or block (reaction or button) added or removed by ``user``.

    ``reason`` is why a block was added, when the blocker said (the Block button asks).
    """

    user: str
    verdict: Verdict
    added: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Cancel:
    by: str


@dataclass(frozen=True, slots=True)
class Supersede:
    reason: str


@dataclass(frozen=True, slots=True)
class StartDeploy:
    fence: int
    previous_sha: str | None


@dataclass(frozen=True, slots=True)
class DeployFinished:
    """The backend reports the new version started; health comes next."""


@dataclass(frozen=True, slots=True)
class MarkHealthy:
    pass


@dataclass(frozen=True, slots=True)
class MarkFailed:
    reason: str


@dataclass(frozen=True, slots=True)
class StartRollback:
    """The deploy failed and the previous sha goes back.

    Failing and starting the rollback are one step, so a release is never FAILED while
    something is still going to happen to it: FAILED is final, like every terminal state.
    """

    reason: str


@dataclass(frozen=True, slots=True)
class FinishRollback:
    healthy: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Retry:
    """Put a deploy whose worker died back to ``approved`` so another worker runs it."""

    reason: str


@dataclass(frozen=True, slots=True)
class GiveUp:
    """shipmate stopped trying (its job kept failing): the release ends failed, visibly."""

    reason: str


@dataclass(frozen=True, slots=True)
class Progress:
    step: Step


Event = (
    Collect
    | Freeze
    | React
    | Cancel
    | Supersede
    | StartDeploy
    | DeployFinished
    | MarkHealthy
    | MarkFailed
    | StartRollback
    | FinishRollback
    | Retry
    | GiveUp
    | Progress
)

_DEPLOY_STATES = frozenset({S.DEPLOYING, S.VERIFYING, S.ROLLING_BACK})
_DECIDING_STATES = frozenset({S.AWAITING_APPROVAL, S.BLOCKED, S.APPROVED})


def apply(release: Release, event: Event, *, at: float) -> Release:
    """Return the release after ``event``; raise a DomainError if the rules refuse it."""
    new = _transition(release, event, at)
    return replace(new, version=release.version + 1, updated_at=at)


def _refuse(release: Release, what: str) -> InvalidTransition:
    return InvalidTransition(release.id, release.state.value, what)


def _transition(r: Release, event: Event, at: float) -> Release:
    match event:
        case Collect(commits=commits, people=people, base_sha=base):
            if r.state is not S.COLLECTING:
                raise _refuse(r, "collect commits")
            head = commits[-1].sha if commits else None
            return replace(r, commits=commits, people=people, base_sha=base, head_sha=head)
        case Freeze():
            return _freeze(r, event, at)
        case React():
            return _react(r, event, at)
        case Cancel():
            if r.state not in _DECIDING_STATES and r.state is not S.COLLECTING:
                raise _refuse(r, "cancel")
            return replace(
                r, state=S.CANCELLED, reason=f"cancelled by <@{event.by}>", finished_at=at
            )
        case Supersede(reason=reason):
            if r.state not in _DECIDING_STATES and r.state is not S.COLLECTING:
                raise _refuse(r, "supersede")
            return replace(r, state=S.SUPERSEDED, reason=reason, finished_at=at)
        case StartDeploy(fence=fence, previous_sha=previous):
            if r.state is not S.APPROVED:
                raise _refuse(r, "deploy")
            return replace(
                r,
                state=S.DEPLOYING,
                fence=fence,
                previous_sha=previous,
                steps=(),
                deploy_started_at=at,
            )
        case DeployFinished():
            if r.state is not S.DEPLOYING:
                raise _refuse(r, "verify")
            return replace(r, state=S.VERIFYING)
        case MarkHealthy():
            if r.state is not S.VERIFYING:
                raise _refuse(r, "go live")
            return replace(r, state=S.LIVE, finished_at=at, reason=None)
        case MarkFailed(reason=reason):
            if r.state not in (S.DEPLOYING, S.VERIFYING):
                raise _refuse(r, "fail")
            return replace(r, state=S.FAILED, reason=reason, finished_at=at)
        case StartRollback(reason=reason):
            if r.state not in (S.DEPLOYING, S.VERIFYING) or r.previous_sha is None:
                raise _refuse(r, "roll back")
            return replace(r, state=S.ROLLING_BACK, reason=reason)
        case FinishRollback(healthy=healthy, detail=detail):
            if r.state is not S.ROLLING_BACK:
                raise _refuse(r, "finish rolling back")
            why = r.reason if healthy else f"{r.reason}; after rolling back: {detail}"
            return replace(
                r, state=S.ROLLED_BACK, healthy_after_rollback=healthy, reason=why, finished_at=at
            )
        case Retry(reason=reason):
            if r.state not in (S.DEPLOYING, S.VERIFYING):
                raise _refuse(r, "retry")
            return replace(r, state=S.APPROVED, fence=None, reason=reason)
        case GiveUp(reason=reason):
            if r.is_terminal or r.state is S.COLLECTING:
                raise _refuse(r, "give up")
            return replace(r, state=S.FAILED, reason=reason, finished_at=at)
        case Progress(step=step):
            if r.state not in _DEPLOY_STATES:
                raise _refuse(r, "report progress")
            return replace(r, steps=_upsert_step(r.steps, step))
    raise TypeError(f"unknown event {event!r}")  # pragma: no cover - exhaustive match


def _freeze(r: Release, event: Freeze, at: float) -> Release:
    if r.state is not S.COLLECTING:
        raise _refuse(r, "freeze")
    frozen = replace(
        r,
        state=S.AWAITING_APPROVAL,
        requested_by=event.by,
        approval_required=event.approval_required,
        stand_ins=event.stand_ins,
        frozen_at=at,
    )
    if approvals.is_fully_approved(frozen):
        return replace(frozen, state=S.APPROVED, approved_at=at)
    return frozen


def _react(r: Release, event: React, at: float) -> Release:
    if r.state not in _DECIDING_STATES or not r.approval_required:
        raise _refuse(r, f"{'take' if event.added else 'withdraw'} an {event.verdict.value}")
    if not approvals.can_decide(r, event.user):
        raise NotInvolved(event.user, r.id)
    if event.verdict is Verdict.APPROVE:
        changed = (r.approvals | {event.user}) if event.added else (r.approvals - {event.user})
        r = replace(r, approvals=changed)
    else:
        changed = (r.blocks | {event.user}) if event.added else (r.blocks - {event.user})
        reasons = tuple((u, why) for u, why in r.block_reasons if u != event.user)
        if event.added and event.reason.strip():
            reasons = (*reasons, (event.user, event.reason.strip()))
        elif event.added:
            # a second block without a reason (say, a reaction after the button) keeps the first
            reasons = r.block_reasons
        r = replace(r, blocks=changed, block_reasons=reasons)
    return _settle(r, at)


def _settle(r: Release, at: float) -> Release:
    """Derive the deciding state from blocks and approvals, so the order of reactions never matters."""
    if r.blocks:
        return replace(r, state=S.BLOCKED)
    if approvals.is_fully_approved(r):
        return replace(r, state=S.APPROVED, approved_at=r.approved_at or at)
    return replace(r, state=S.AWAITING_APPROVAL, approved_at=None)


def _upsert_step(steps: tuple[Step, ...], step: Step) -> tuple[Step, ...]:
    for i, existing in enumerate(steps):
        if existing.name == step.name and existing.status is StepStatus.RUNNING:
            return (*steps[:i], step, *steps[i + 1 :])
    return (*steps, step)
