"""Decisions that involve an environment and its releases together.

Each function takes the current environment state and releases and returns the new
ones; the store writes them back in one Redis transaction. What a function decides
travels on the values it returns (``decisions``), for the store to audit with the write.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from bot.domain import decisions as decided
from bot.domain import release as rel
from bot.domain.errors import (
    AlreadyLocked,
    BatchOutdated,
    NothingToRelease,
    NothingToRollBackTo,
    NotLocked,
    ReleaseInProgress,
)
from bot.domain.models import (
    EnvLock,
    EnvState,
    LiveEntry,
    Release,
    ReleaseKind,
    ReleaseState,
)


@dataclass(frozen=True, slots=True)
class Change:
    """The outcome of one decision: what to write and what to do next."""

    env: EnvState
    releases: tuple[Release, ...] = ()
    #: release ids that a worker should deploy
    deploy: tuple[str, ...] = ()


def batch_base(env: EnvState, active: Release | None) -> str | None:
    """The sha new commits are counted from: the frozen release's head, else what runs."""
    if active is not None and active.is_active and active.head_sha:
        return active.head_sha
    return env.live_sha


def new_batch(env: EnvState, release_id: str, *, at: float) -> Change:
    batch = Release(id=release_id, env=env.name, state=ReleaseState.COLLECTING, created_at=at)
    return Change(env=replace(env, batch_release=release_id), releases=(batch,))


def request_release(
    env: EnvState,
    batch: Release | None,
    active: Release | None,
    *,
    by: str,
    approval_required: bool,
    stand_ins: tuple[str, ...],
    at: float,
) -> Change:
    """``/release env``: freeze the batch; deploy at once when no approval is needed."""
    if active is not None and active.is_active:
        raise ReleaseInProgress(env.name, active.id, active.state.value)
    if batch is None or not batch.commits:
        raise NothingToRelease(env.name)
    if batch.base_sha != env.live_sha:
        # a rollback or failure changed what runs; releasing this batch would skip commits
        raise BatchOutdated(env.name)
    frozen = rel.apply(
        batch,
        rel.Freeze(by=by, approval_required=approval_required, stand_ins=stand_ins),
        at=at,
    )
    new_env = replace(env, active_release=frozen.id, batch_release=None)
    deploy = (frozen.id,) if frozen.state is ReleaseState.APPROVED else ()
    return Change(env=new_env, releases=(frozen,), deploy=deploy)


def rollback_target(env: EnvState) -> LiveEntry | None:
    """The last release that was live before the current one and was not itself rolled back from."""
    for entry in reversed(env.history):
        if entry.sha == env.live_sha or entry.sha in env.rolled_back_shas:
            continue
        return entry
    return None


def request_rollback(
    env: EnvState,
    active: Release | None,
    *,
    release_id: str,
    by: str,
    at: float,
) -> Change:
    """``/rollback env``: a release of the previous good sha that needs no approvals.

    A release still waiting for approvals is superseded: it was built on top of what
    is being rolled back. One that is already deploying is left to finish (it rolls
    back on its own when unhealthy), so two deploys never race.
    """
    if active is not None and active.state in (
        ReleaseState.DEPLOYING,
        ReleaseState.VERIFYING,
        ReleaseState.ROLLING_BACK,
    ):
        raise ReleaseInProgress(env.name, active.id, active.state.value)
    if active is not None and active.kind is ReleaseKind.ROLLBACK and active.is_active:
        raise ReleaseInProgress(env.name, active.id, active.state.value)
    target = rollback_target(env)
    if target is None:
        raise NothingToRollBackTo(env.name)
    changed: list[Release] = []
    if active is not None and active.is_active:
        changed.append(
            rel.apply(
                active,
                rel.Supersede(reason=f"superseded by rollback {release_id}", by=by),
                at=at,
            )
        )
    rollback = Release(
        id=release_id,
        env=env.name,
        kind=ReleaseKind.ROLLBACK,
        state=ReleaseState.APPROVED,
        created_at=at,
        head_sha=target.sha,
        base_sha=env.live_sha,
        approval_required=False,
        requested_by=by,
        rollback_target=target.release_id,
        frozen_at=at,
        approved_at=at,
    )
    changed.append(replace(rollback, decisions=(decided.rollback_requested(rollback),)))
    new_env = replace(env, active_release=release_id)
    return Change(env=new_env, releases=tuple(changed), deploy=(release_id,))


def went_live(env: EnvState, release: Release, *, at: float) -> EnvState:
    """Record a release that passed its health check as what the environment runs."""
    assert release.head_sha is not None
    rolled_back = env.rolled_back_shas
    if release.kind is ReleaseKind.ROLLBACK and env.live_sha:
        rolled_back = rolled_back | {env.live_sha}
    entry = LiveEntry(release_id=release.id, sha=release.head_sha, at=at)
    return replace(
        env,
        live_sha=release.head_sha,
        live_release=release.id,
        active_release=_clear(env.active_release, release.id),
        history=(*env.history, entry)[-50:],
        rolled_back_shas=rolled_back - {release.head_sha},
    )


def finished_unhealthy(env: EnvState, release: Release) -> EnvState:
    """A release that failed or was rolled back: the environment runs its previous sha again."""
    rolled_back = env.rolled_back_shas
    if release.head_sha and release.head_sha != env.live_sha:
        rolled_back = rolled_back | {release.head_sha}
    return replace(
        env, active_release=_clear(env.active_release, release.id), rolled_back_shas=rolled_back
    )


def cancel(env: EnvState, release: Release, *, by: str, at: float) -> Change:
    """Cancel a batch or a release that has not started deploying, and free the environment."""
    cancelled = rel.apply(release, rel.Cancel(by=by), at=at)
    new_env = replace(
        env,
        active_release=_clear(env.active_release, release.id),
        batch_release=_clear(env.batch_release, release.id),
    )
    return Change(env=new_env, releases=(cancelled,))


def _clear(current: str | None, release_id: str) -> str | None:
    return None if current == release_id else current


def lock(env: EnvState, *, by: str, reason: str, at: float) -> EnvState:
    """``/lock env reason``: releases wait until ``/unlock``; rollbacks still go through."""
    if env.lock is not None:
        raise AlreadyLocked(env.name, env.lock.by, env.lock.reason)
    return _locked(env, EnvLock(by=by, reason=reason, at=at))


def unlock(env: EnvState, *, by: str | None = None) -> EnvState:
    """``/unlock env``; ``by`` None leaves naming who did it to the write (``Write.actor``)."""
    if env.lock is None:
        raise NotLocked(env.name)
    return replace(env, lock=None, decisions=(*env.decisions, decided.unlocked(env.lock, by)))


def _locked(env: EnvState, lock: EnvLock) -> EnvState:
    return replace(env, lock=lock, decisions=(*env.decisions, decided.locked(lock)))


def lock_after_failure(env: EnvState, release: Release, *, at: float) -> EnvState:
    """Hold the environment after a failed release so nobody re-releases the bad batch by accident."""
    if env.lock is not None:
        return env
    reason = f"release {release.id} failed and was rolled back automatically"
    return _locked(env, EnvLock(by=decided.SHIPMATE, reason=reason, at=at, automatic=True))


def waits_for_lock(env: EnvState, release: Release) -> bool:
    return env.lock is not None and release.kind is ReleaseKind.RELEASE
