"""What the audit stream says about one write: pure diffs of state before and after.

The store computes these entries from the snapshot a decision was made on and the
documents it writes, and appends them in the same Lua script as the write itself, so a
decision is never recorded without its entry or an entry without its decision. Nothing
here knows about Redis: an entry flattens to the few string fields of one XADD.

Who did something comes from the state when the state says (an approval names its
user, a lock its holder, a request its requester); the caller's ``actor`` fills in what
the state cannot say (who typed ``/unlock``). Automatic steps are done by ``shipmate``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from domain.models import EnvLock, EnvState, Release, ReleaseKind, ReleaseState

S = ReleaseState

#: the actor of everything shipmate decides on its own (deploys, automatic rollbacks)
SHIPMATE = "shipmate"
#: the actor when neither the state nor the caller says who it was
UNKNOWN = "unknown"

#: reasons come from backend output; the stream keeps a bounded amount of it per entry
MAX_DETAIL_TEXT = 500

#: a value in an entry's detail, kept JSON-plain so any reader can decode it
DetailValue = str | int | float | bool | None | list[str]


class Kind(StrEnum):
    #: ``/release``: a batch was frozen and its authors asked to approve
    REQUESTED = "requested"
    #: ``/rollback``: a release of an earlier sha that needs no approvals
    ROLLBACK_REQUESTED = "rollback_requested"
    APPROVAL_GIVEN = "approval_given"
    APPROVAL_WITHDRAWN = "approval_withdrawn"
    #: every approval needed is in; a worker will deploy it
    APPROVED = "approved"
    BLOCKED = "blocked"
    BLOCK_LIFTED = "block_lifted"
    CANCELLED = "cancelled"
    SUPERSEDED = "superseded"
    DEPLOY_STARTED = "deploy_started"
    #: the worker running the deploy stopped; another one deploys again
    DEPLOY_RETRIED = "deploy_retried"
    #: the backend started the new version; its health is checked next
    DEPLOYED = "deployed"
    LIVE = "live"
    FAILED = "failed"
    #: the automatic rollback after an unhealthy deploy began
    ROLLING_BACK = "rolling_back"
    #: another worker took over an automatic rollback whose worker stopped
    ROLLBACK_RESUMED = "rollback_resumed"
    ROLLED_BACK = "rolled_back"
    LOCKED = "locked"
    UNLOCKED = "unlocked"


@dataclass(frozen=True, slots=True)
class Entry:
    """One decision, as kept in the audit stream.

    ``release`` is empty for entries about the environment itself (locks).
    """

    at: float
    env: str
    release: str
    kind: Kind
    actor: str
    detail: Mapping[str, DetailValue] = field(default_factory=dict)

    def fields(self) -> list[str]:
        """The flat field/value list of one XADD: six short strings, the detail as JSON."""
        return [
            "at",
            repr(self.at),
            "env",
            self.env,
            "release",
            self.release,
            "kind",
            self.kind.value,
            "actor",
            self.actor,
            "detail",
            json.dumps(self.detail, separators=(",", ":"), sort_keys=True),
        ]

    @classmethod
    def from_fields(cls, raw: Mapping[str, str]) -> Entry:
        """Read back what :meth:`fields` wrote (a stream entry's field map)."""
        detail = json.loads(raw.get("detail") or "{}")
        return cls(
            at=float(raw["at"]),
            env=raw["env"],
            release=raw.get("release", ""),
            kind=Kind(raw["kind"]),
            actor=raw.get("actor", UNKNOWN),
            detail=detail if isinstance(detail, dict) else {},
        )


def entries(
    env_before: EnvState,
    env_after: EnvState | None,
    releases: Sequence[tuple[Release | None, Release]],
    *,
    at: float,
    actor: str | None = None,
) -> list[Entry]:
    """Every decision one write makes, in the order they happened.

    ``releases`` pairs each written release with the version the decision read (None for
    a new one); ``env_after`` None means the environment is not written. ``at`` is when
    the write happens, used where the state carries no time of its own; ``actor`` is who
    asked for the write, used where the state does not say.
    """
    out: list[Entry] = []
    rollback_by = _rollback_requester(releases)
    for before, after in releases:
        out.extend(_release_entries(before, after, at=at, actor=actor, rollback_by=rollback_by))
    if env_after is not None:
        out.extend(_lock_entries(env_before, env_after, at=at, actor=actor))
    return out


def state_changes(releases: Sequence[tuple[Release | None, Release]]) -> list[tuple[str, str]]:
    """(env, state) for each written release that enters a state (a new one included)."""
    return [
        (after.env, after.state.value)
        for before, after in releases
        if before is None or before.state is not after.state
    ]


def _rollback_requester(releases: Sequence[tuple[Release | None, Release]]) -> str | None:
    """Who asked for a rollback created in this write: they superseded what was waiting."""
    for before, after in releases:
        if before is None and after.kind is ReleaseKind.ROLLBACK and after.requested_by:
            return after.requested_by
    return None


def _when(release: Release, at: float) -> float:
    # the decision's own clock when the state has it, so entries agree with the documents
    return release.updated_at or release.created_at or at


def _release_entries(
    before: Release | None,
    after: Release,
    *,
    at: float,
    actor: str | None,
    rollback_by: str | None,
) -> list[Entry]:
    when = _when(after, at)

    def entry(kind: Kind, who: str, **detail: DetailValue) -> Entry:
        return Entry(at=when, env=after.env, release=after.id, kind=kind, actor=who, detail=detail)

    out: list[Entry] = []
    old_state = before.state if before is not None else None
    if old_state in (None, S.COLLECTING) and after.state in (
        S.AWAITING_APPROVAL,
        S.BLOCKED,
        S.APPROVED,
    ):
        out.append(_requested(after, when))
        if (
            after.state is S.APPROVED
            and after.kind is ReleaseKind.RELEASE
            and after.approval_required
        ):
            # frozen with nobody left to ask (say, every author's approval was already given)
            out.append(entry(Kind.APPROVED, SHIPMATE, **_approval_detail(after)))
        return out
    causes: list[str] = []
    if before is not None:
        out.extend(_verdict_entries(before, after, entry, causes))
    if old_state is after.state:
        if (
            after.state is S.ROLLING_BACK
            and before is not None
            and before.fence != after.fence
            and after.fence is not None
        ):
            out.append(entry(Kind.ROLLBACK_RESUMED, SHIPMATE, fence=after.fence))
        return out
    cause = causes[0] if causes else (actor or SHIPMATE)
    sha = after.head_sha
    match after.state:
        case S.APPROVED if old_state in (S.DEPLOYING, S.VERIFYING):
            out.append(entry(Kind.DEPLOY_RETRIED, SHIPMATE, reason=_text(after.reason)))
        case S.APPROVED:
            out.append(entry(Kind.APPROVED, cause, **_approval_detail(after)))
        case S.DEPLOYING:
            out.append(
                entry(
                    Kind.DEPLOY_STARTED,
                    SHIPMATE,
                    sha=sha,
                    fence=after.fence,
                    previous=after.previous_sha,
                )
            )
        case S.VERIFYING:
            out.append(entry(Kind.DEPLOYED, SHIPMATE, sha=sha))
        case S.LIVE:
            out.append(
                entry(
                    Kind.LIVE,
                    SHIPMATE,
                    sha=sha,
                    seconds=_seconds(after.deploy_started_at, after.finished_at),
                )
            )
        case S.FAILED:
            out.append(
                entry(
                    Kind.FAILED,
                    SHIPMATE,
                    reason=_text(after.reason),
                    previous_state=old_state.value if old_state else None,
                )
            )
        case S.ROLLING_BACK:
            out.append(
                entry(
                    Kind.ROLLING_BACK,
                    SHIPMATE,
                    to=after.previous_sha,
                    reason=_text(after.reason),
                    automatic=True,
                )
            )
        case S.ROLLED_BACK:
            out.append(
                entry(
                    Kind.ROLLED_BACK,
                    SHIPMATE,
                    to=after.previous_sha,
                    healthy=after.healthy_after_rollback,
                    reason=_text(after.reason),
                    automatic=True,
                )
            )
        case S.CANCELLED:
            out.append(
                entry(
                    Kind.CANCELLED,
                    _mentioned(after.reason) or actor or UNKNOWN,
                    reason=_text(after.reason),
                )
            )
        case S.SUPERSEDED:
            out.append(
                entry(Kind.SUPERSEDED, rollback_by or actor or SHIPMATE, reason=_text(after.reason))
            )
        case _:
            # blocked or awaiting approval again: the verdict entries above say why
            pass
    return out


def _requested(release: Release, when: float) -> Entry:
    by = release.requested_by or UNKNOWN
    if release.kind is ReleaseKind.ROLLBACK:
        return Entry(
            at=when,
            env=release.env,
            release=release.id,
            kind=Kind.ROLLBACK_REQUESTED,
            actor=by,
            detail={
                "to": release.head_sha,
                "target": release.rollback_target,
                "from": release.base_sha,
            },
        )
    return Entry(
        at=when,
        env=release.env,
        release=release.id,
        kind=Kind.REQUESTED,
        actor=by,
        detail={
            "commits": len(release.commits),
            "from": release.base_sha,
            "to": release.head_sha,
            "approval": "authors" if release.approval_required else "none",
        },
    )


class _Make(Protocol):
    """The entry builder _release_entries hands to helpers."""

    def __call__(self, kind: Kind, who: str, **detail: DetailValue) -> Entry: ...


def _verdict_entries(
    before: Release, after: Release, entry: _Make, causes: list[str]
) -> list[Entry]:
    """Approvals and blocks given or taken back; ``causes`` collects who changed them."""
    out: list[Entry] = []
    for user in sorted(after.approvals - before.approvals):
        out.append(entry(Kind.APPROVAL_GIVEN, user))
        causes.append(user)
    for user in sorted(before.approvals - after.approvals):
        out.append(entry(Kind.APPROVAL_WITHDRAWN, user))
        causes.append(user)
    old_reasons, new_reasons = before.block_reason, after.block_reason
    for user in sorted(after.blocks):
        reason = new_reasons.get(user)
        if user not in before.blocks or (reason and reason != old_reasons.get(user)):
            out.append(entry(Kind.BLOCKED, user, reason=_text(reason) if reason else None))
            causes.append(user)
    for user in sorted(before.blocks - after.blocks):
        out.append(entry(Kind.BLOCK_LIFTED, user, still_blocked=sorted(after.blocks)))
        causes.append(user)
    return out


def _approval_detail(release: Release) -> dict[str, DetailValue]:
    return {
        "approvals": sorted(release.approvals),
        "waited": _seconds(release.frozen_at, release.approved_at),
    }


def _lock_entries(
    before: EnvState, after: EnvState, *, at: float, actor: str | None
) -> list[Entry]:
    old, new = before.lock, after.lock
    if old == new:
        return []
    out: list[Entry] = []
    if old is not None:
        out.append(
            Entry(
                at=at,
                env=after.name,
                release="",
                kind=Kind.UNLOCKED,
                actor=actor or UNKNOWN,
                detail={"locked_by": _holder(old), "reason": _text(old.reason)},
            )
        )
    if new is not None:
        out.append(
            Entry(
                at=new.at or at,
                env=after.name,
                release="",
                kind=Kind.LOCKED,
                actor=_holder(new),
                detail={"reason": _text(new.reason), "automatic": new.automatic},
            )
        )
    return out


def _holder(lock: EnvLock) -> str:
    return SHIPMATE if lock.automatic else lock.by


_MENTION = re.compile(r"<@([A-Z0-9]+)>")


def _mentioned(text: str | None) -> str | None:
    """The first user a shipmate-written reason names ("cancelled by <@U1>")."""
    match = _MENTION.search(text or "")
    return match.group(1) if match else None


def _text(value: str | None) -> str | None:
    if value is None:
        return None
    return value if len(value) <= MAX_DETAIL_TEXT else value[: MAX_DETAIL_TEXT - 1] + "…"


def _seconds(start: float | None, end: float | None) -> float | None:
    if start is None or end is None or end < start:
        return None
    return round(end - start, 3)
