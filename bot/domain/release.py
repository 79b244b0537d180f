"""The release state machine: ``apply(release, event, at=...)`` and nothing else.

Pure and synchronous. The store runs it inside a Redis transaction, so whatever this
module refuses can never be half-applied, and whatever it allows happens exactly once.
Each transition also says what it decided (``bot.domain.decisions``), which the returned
release carries in ``decisions`` for the store to audit with the write.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from bot.domain import approvals
from bot.domain import decisions as decided
from bot.domain.errors import InvalidTransition, NotInvolved
from bot.domain.models import Commit, Decision, Person, Release, ReleaseState, Step, StepStatus

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
    """Replaced before it deployed; ``by`` is who caused it (None: shipmate itself)."""

    reason: str
    by: str | None = None


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
class ResumeRollback:
    """Another worker takes over an automatic rollback whose worker stopped, under ``fence``."""

    fence: int


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
    | ResumeRollback
    | Retry
    | GiveUp
    | Progress
)

_DEPLOY_STATES = frozenset({S.DEPLOYING, S.VERIFYING, S.ROLLING_BACK})
_DECIDING_STATES = frozenset({S.AWAITING_APPROVAL, S.BLOCKED, S.APPROVED})


def apply(release: Release, event: Event, *, at: float) -> Release:
    """Return the release after ``event``; raise a DomainError if the rules refuse it."""
    new, what = _transition(release, event, at)
    return replace(
        new,
        version=release.version + 1,
        updated_at=at,
        decisions=(*release.decisions, *what),
    )


def _refuse(release: Release, what: str) -> InvalidTransition:
    return InvalidTransition(release.id, release.state.value, what)


Outcome = tuple[Release, list[Decision]]


def _transition(r: Release, event: Event, at: float) -> Outcome:
    match event:
        case Collect(commits=commits, people=people, base_sha=base):
            if r.state is not S.COLLECTING:
                raise _refuse(r, "collect commits")
            head = commits[-1].sha if commits else None
            collected = replace(r, commits=commits, people=people, base_sha=base, head_sha=head)
            return collected, []
        case Freeze():
            return _freeze(r, event, at)
        case React():
            return _react(r, event, at)
        case Cancel(by=by):
            if r.state not in _DECIDING_STATES and r.state is not S.COLLECTING:
                raise _refuse(r, "cancel")
            cancelled = replace(r, state=S.CANCELLED, cancelled_by=by, finished_at=at)
            return cancelled, [decided.cancelled(by, at)]
        case Supersede(reason=reason, by=by):
            if r.state not in _DECIDING_STATES and r.state is not S.COLLECTING:
                raise _refuse(r, "supersede")
            superseded = replace(r, state=S.SUPERSEDED, reason=reason, finished_at=at)
            return superseded, [decided.superseded(superseded, by, at)]
        case StartDeploy(fence=fence, previous_sha=previous):
            if r.state is not S.APPROVED:
                raise _refuse(r, "deploy")
            deploying = replace(
                r,
                state=S.DEPLOYING,
                fence=fence,
                previous_sha=previous,
                steps=(),
                deploy_started_at=at,
            )
            return deploying, [decided.deploy_started(deploying, at)]
        case DeployFinished():
            if r.state is not S.DEPLOYING:
                raise _refuse(r, "verify")
            verifying = replace(r, state=S.VERIFYING)
            return verifying, [decided.deployed(verifying, at)]
        case MarkHealthy():
            if r.state is not S.VERIFYING:
                raise _refuse(r, "go live")
            live = replace(r, state=S.LIVE, finished_at=at, reason=None)
            return live, [decided.live(live, at)]
        case MarkFailed(reason=reason):
            if r.state not in (S.DEPLOYING, S.VERIFYING):
                raise _refuse(r, "fail")
            failed = replace(r, state=S.FAILED, reason=reason, finished_at=at)
            return failed, [decided.failed(failed, r.state, at)]
        case StartRollback(reason=reason):
            if r.state not in (S.DEPLOYING, S.VERIFYING) or r.previous_sha is None:
                raise _refuse(r, "roll back")
            rolling = replace(r, state=S.ROLLING_BACK, reason=reason)
            return rolling, [decided.rolling_back(rolling, at)]
        case FinishRollback(healthy=healthy, detail=detail):
            if r.state is not S.ROLLING_BACK:
                raise _refuse(r, "finish rolling back")
            why = r.reason if healthy else f"{r.reason}; after rolling back: {detail}"
            done = replace(
                r, state=S.ROLLED_BACK, healthy_after_rollback=healthy, reason=why, finished_at=at
            )
            return done, [decided.rolled_back(done, at)]
        case ResumeRollback(fence=fence):
            if r.state is not S.ROLLING_BACK:
                raise _refuse(r, "resume rolling back")
            if fence == r.fence:
                return r, []
            resumed = replace(r, fence=fence)
            return resumed, [decided.rollback_resumed(resumed, at)]
        case Retry(reason=reason):
            if r.state not in (S.DEPLOYING, S.VERIFYING):
                raise _refuse(r, "retry")
            retried = replace(r, state=S.APPROVED, fence=None, reason=reason)
            return retried, [decided.deploy_retried(retried, at)]
        case GiveUp(reason=reason):
            if r.is_terminal or r.state is S.COLLECTING:
                raise _refuse(r, "give up")
            failed = replace(r, state=S.FAILED, reason=reason, finished_at=at)
            return failed, [decided.failed(failed, r.state, at)]
        case Progress(step=step):
            if r.state not in _DEPLOY_STATES:
                raise _refuse(r, "report progress")
            return replace(r, steps=_upsert_step(r.steps, step)), []
    raise TypeError(f"unknown event {event!r}")  # pragma: no cover - exhaustive match


def _freeze(r: Release, event: Freeze, at: float) -> Outcome:
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
    if not approvals.is_fully_approved(frozen):
        return frozen, [decided.requested(frozen, at)]
    frozen = replace(frozen, state=S.APPROVED, approved_at=at)
    what = [decided.requested(frozen, at)]
    if frozen.approval_required:
        # frozen with nobody left to ask (say, every author's approval was already given)
        what.append(decided.approved(frozen, decided.SHIPMATE, at))
    return frozen, what


def _react(r: Release, event: React, at: float) -> Outcome:
    if r.state not in _DECIDING_STATES or not r.approval_required:
        raise _refuse(r, f"{'take' if event.added else 'withdraw'} an {event.verdict.value}")
    if not approvals.can_decide(r, event.user):
        raise NotInvolved(event.user, r.id)
    if event.verdict is Verdict.APPROVE:
        voted, what = _approve(r, event, at)
    else:
        voted, what = _block(r, event, at)
    settled = _settle(voted, at)
    if settled.state is S.APPROVED and r.state is not S.APPROVED:
        what.append(decided.approved(settled, event.user, at))
    return settled, what


def _approve(r: Release, event: React, at: float) -> Outcome:
    user = event.user
    if event.added == (user in r.approvals):
        return r, []
    changed = (r.approvals | {user}) if event.added else (r.approvals - {user})
    return replace(r, approvals=changed), [decided.approval(user, given=event.added, at=at)]


def _block(r: Release, event: React, at: float) -> Outcome:
    user, why = event.user, event.reason.strip()
    others = tuple((u, said) for u, said in r.block_reasons if u != user)
    if not event.added:
        lifted = replace(r, blocks=r.blocks - {user}, block_reasons=others)
        return lifted, [decided.block_lifted(lifted, user, at)] if user in r.blocks else []
    if not why:
        # a second block without a reason (say, a reaction after the button) keeps the first
        blocked = replace(r, blocks=r.blocks | {user})
        return blocked, [] if user in r.blocks else [decided.blocked(user, None, at)]
    blocked = replace(r, blocks=r.blocks | {user}, block_reasons=(*others, (user, why)))
    if user in r.blocks and r.block_reason.get(user) == why:
        return blocked, []
    return blocked, [decided.blocked(user, why, at)]


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
