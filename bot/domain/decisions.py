"""What an event decided, recorded where the event is applied: the audit trail's raw material.

``release.apply`` and the ``environment`` functions attach a :class:`Decision` for each
thing they decide to the value they return (``Release.decisions``, ``EnvState.decisions``).
The store turns a written value's decisions into audit entries (``bot.domain.audit``) in the
same atomic write, and never stores the decisions themselves. So an entry names the actor
the event named, and nothing has to be worked out afterwards by comparing two states.

Each function below takes the value right after its decision and keeps the few facts
the audit stream has always kept about that kind of decision, under the stream's names.
"""

from __future__ import annotations

from bot.domain.models import Decision, DecisionKind, EnvLock, Release, ReleaseState

#: the actor of everything shipmate decides on its own (deploys, automatic rollbacks)
SHIPMATE = "shipmate"

# releases -------------------------------------------------------------------------------


def requested(after: Release, at: float) -> Decision:
    """``/release`` froze the batch ``after`` shows."""
    return Decision(
        DecisionKind.REQUESTED,
        after.requested_by,
        at,
        {
            "commits": len(after.commits),
            "from": after.base_sha,
            "to": after.head_sha,
            "approval": "authors" if after.approval_required else "none",
        },
    )


def rollback_requested(rollback: Release) -> Decision:
    return Decision(
        DecisionKind.ROLLBACK_REQUESTED,
        rollback.requested_by,
        rollback.created_at,
        {"to": rollback.head_sha, "target": rollback.rollback_target, "from": rollback.base_sha},
    )


def approval(user: str, *, given: bool, at: float) -> Decision:
    return Decision(
        DecisionKind.APPROVAL_GIVEN if given else DecisionKind.APPROVAL_WITHDRAWN, user, at
    )


def approved(after: Release, by: str, at: float) -> Decision:
    """The approval that completed the set (``by`` is its giver, or shipmate at a freeze)."""
    return Decision(
        DecisionKind.APPROVED,
        by,
        at,
        {
            "approvals": sorted(after.approvals),
            "waited": seconds(after.frozen_at, after.approved_at),
        },
    )


def blocked(user: str, reason: str | None, at: float) -> Decision:
    return Decision(DecisionKind.BLOCKED, user, at, {"reason": reason})


def block_lifted(after: Release, user: str, at: float) -> Decision:
    return Decision(DecisionKind.BLOCK_LIFTED, user, at, {"still_blocked": sorted(after.blocks)})


def cancelled(by: str, at: float) -> Decision:
    # the stream has always said it in these words; its readers may match on them
    return Decision(DecisionKind.CANCELLED, by, at, {"reason": f"cancelled by <@{by}>"})


def superseded(after: Release, by: str | None, at: float) -> Decision:
    return Decision(DecisionKind.SUPERSEDED, by or SHIPMATE, at, {"reason": after.reason})


def deploy_started(after: Release, at: float) -> Decision:
    return Decision(
        DecisionKind.DEPLOY_STARTED,
        SHIPMATE,
        at,
        {"sha": after.head_sha, "fence": after.fence, "previous": after.previous_sha},
    )


def deploy_retried(after: Release, at: float) -> Decision:
    return Decision(DecisionKind.DEPLOY_RETRIED, SHIPMATE, at, {"reason": after.reason})


def deployed(after: Release, at: float) -> Decision:
    return Decision(DecisionKind.DEPLOYED, SHIPMATE, at, {"sha": after.head_sha})


def live(after: Release, at: float) -> Decision:
    took = seconds(after.deploy_started_at, after.finished_at)
    return Decision(DecisionKind.LIVE, SHIPMATE, at, {"sha": after.head_sha, "seconds": took})


def failed(after: Release, left: ReleaseState, at: float) -> Decision:
    return Decision(
        DecisionKind.FAILED, SHIPMATE, at, {"reason": after.reason, "previous_state": left.value}
    )


def rolling_back(after: Release, at: float) -> Decision:
    return Decision(
        DecisionKind.ROLLING_BACK,
        SHIPMATE,
        at,
        {"to": after.previous_sha, "reason": after.reason, "automatic": True},
    )


def rollback_resumed(after: Release, at: float) -> Decision:
    return Decision(DecisionKind.ROLLBACK_RESUMED, SHIPMATE, at, {"fence": after.fence})


def rolled_back(after: Release, at: float) -> Decision:
    return Decision(
        DecisionKind.ROLLED_BACK,
        SHIPMATE,
        at,
        {
            "to": after.previous_sha,
            "healthy": after.healthy_after_rollback,
            "reason": after.reason,
            "automatic": True,
        },
    )


# environments ---------------------------------------------------------------------------


def locked(lock: EnvLock) -> Decision:
    return Decision(
        DecisionKind.LOCKED,
        holder(lock),
        lock.at or None,
        {"reason": lock.reason, "automatic": lock.automatic},
    )


def unlocked(lock: EnvLock, by: str | None) -> Decision:
    """``by`` None: whoever asked for the write (only the caller knows who typed /unlock)."""
    return Decision(
        DecisionKind.UNLOCKED, by, None, {"locked_by": holder(lock), "reason": lock.reason}
    )


def holder(lock: EnvLock) -> str:
    return SHIPMATE if lock.automatic else lock.by


def seconds(start: float | None, end: float | None) -> float | None:
    if start is None or end is None or end < start:
        return None
    return round(end - start, 3)
