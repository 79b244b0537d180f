"""What `web` records for each request: one atomic write, no slow work.

Each function decides with ``domain`` inside ``Store.update`` and returns what to tell
the user. Deploys, message edits and notices become jobs for the worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from bot.config import Config
from bot.store import Conflict, Duplicate, Job, Snapshot, Store, Write, render_job
from deployer.base import interactive
from domain import environment
from domain import release as rel
from domain.errors import InvalidTransition, NotInvolved, NotPermitted, ShipmateError
from domain.models import Release, ReleaseState


def deploy_job(release: Release) -> Job:
    return Job("deploy", {"release": release.id, "env": release.env})


def notice_job(channel: str, user: str, text: str) -> Job:
    return Job("notice", {"channel": channel, "user": user, "text": text})


def approvals_job(release: Release) -> Job:
    return Job("ask_approvals", {"release": release.id})


ArtifactCheck = Callable[[str, str], Awaitable[None]]

#: of the 3 s Slack gives a slash command, what the artifact check may take (a hung Docker
#: engine would otherwise hold the answer until docker-py's own timeout)
ARTIFACT_CHECK_SECONDS = 2.0


class ArtifactUnchecked(ShipmateError):
    """The artifact could not be checked in time; nothing was changed."""


class BatchMoved(Exception):
    """New commits arrived between the artifact check and the freeze: check the new head."""


async def request_release(
    store: Store,
    config: Config,
    *,
    env: str,
    user: str,
    at: float,
    check_artifact: ArtifactCheck | None = None,
) -> Release:
    """``/release env``: freeze the batch; raises a DomainError the user should read.

    With ``check_artifact`` the batch head's artifact (its image) must exist first: a
    release never builds images, so a missing one is refused before anyone is asked.
    """
    if not config.environments[env].permissions.allows("release", user):
        raise NotPermitted(user, "release", env)
    for _ in range(3):
        checked = None
        if check_artifact is not None:
            snap = await store.snapshot(env)
            checked = snap.batch.head_sha if snap and snap.batch else None
            if checked:
                await _check_in_time(check_artifact, env, checked)
        try:
            return await _freeze(store, config, env=env, user=user, at=at, checked=checked)
        except BatchMoved:
            continue
    raise Conflict(f"the batch for {env} kept changing while its image was checked")


async def _check_in_time(check: ArtifactCheck, env: str, sha: str) -> None:
    """The artifact check for a person waiting: the backend fails fast (an unreachable engine
    is named, not waited for) and the whole check takes at most ARTIFACT_CHECK_SECONDS."""
    try:
        with interactive():
            async with asyncio.timeout(ARTIFACT_CHECK_SECONDS):
                await check(env, sha)
    except TimeoutError:
        raise ArtifactUnchecked(
            f"Could not check the image for `{sha[:7]}` within {ARTIFACT_CHECK_SECONDS:g}s "
            f"(the Docker engine is slow to answer), so nothing was changed. "
            f"Try `/release {env}` again in a minute."
        ) from None


async def _freeze(
    store: Store, config: Config, *, env: str, user: str, at: float, checked: str | None
) -> Release:
    env_config = config.environments[env]

    def decide(snap: Snapshot) -> tuple[Write, Release]:
        if checked is not None and snap.batch is not None and snap.batch.head_sha != checked:
            raise BatchMoved()
        change = environment.request_release(
            snap.env,
            snap.batch,
            snap.active,
            by=user,
            approval_required=env_config.approval == "authors",
            stand_ins=tuple(config.slack.stand_ins),
            at=at,
        )
        frozen = change.releases[0]
        jobs = [deploy_job(frozen)] if change.deploy else [approvals_job(frozen)]
        return Write(env=change.env, releases=change.releases, jobs=jobs), frozen

    return await store.update(env, decide)


async def lock_env(
    store: Store, config: Config, *, env: str, user: str, reason: str, at: float
) -> None:
    """``/lock env reason``: approved releases wait; the messages say who locked it and why."""
    if not config.environments[env].permissions.allows("lock", user):
        raise NotPermitted(user, "lock", env)

    def decide(snap: Snapshot) -> tuple[Write, None]:
        locked = environment.lock(snap.env, by=user, reason=reason, at=at)
        return Write(env=locked, jobs=_rerender(snap)), None

    await store.update(env, decide)


async def unlock_env(store: Store, config: Config, *, env: str, user: str) -> None:
    """``/unlock env``: lift the lock; an approved release that was waiting deploys now."""
    if not config.environments[env].permissions.allows("lock", user):
        raise NotPermitted(user, "lock", env)

    def decide(snap: Snapshot) -> tuple[Write, None]:
        unlocked = environment.unlock(snap.env)
        jobs = _rerender(snap)
        active = snap.active
        if active is not None and active.state is ReleaseState.APPROVED:
            jobs.append(deploy_job(active))
        return Write(env=unlocked, jobs=jobs), None

    await store.update(env, decide)


def _rerender(snap: Snapshot) -> list[Job]:
    return [render_job(r.id) for r in (snap.batch, snap.active) if r is not None]


async def request_rollback(
    store: Store, config: Config, *, env: str, user: str, at: float
) -> Release:
    """``/rollback env``: a rollback release, approved at once, for permitted users."""
    if not config.environments[env].permissions.allows("rollback", user):
        raise NotPermitted(user, "rollback", env)
    release_id = await store.next_release_id(env)

    def decide(snap: Snapshot) -> tuple[Write, Release]:
        change = environment.request_rollback(
            snap.env, snap.active, release_id=release_id, by=user, at=at
        )
        rollback = next(r for r in change.releases if r.id == release_id)
        return Write(
            env=change.env, releases=change.releases, jobs=[deploy_job(rollback)]
        ), rollback

    return await store.update(env, decide)


class ReactionOutcome(StrEnum):
    #: not an approve/block emoji, or not on a release message
    IGNORED = "ignored"
    CHANGED = "changed"
    #: the reactor is not involved; they are told why
    NOT_INVOLVED = "not_involved"
    #: the release is past deciding (or not frozen yet); the reactor is told
    TOO_LATE = "too_late"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class Reaction:
    channel: str
    ts: str
    user: str
    name: str
    added: bool
    event_id: str


def verdict_for(config: Config, name: str) -> rel.Verdict | None:
    # skin tones arrive as "+1::skin-tone-2"; the base emoji is what people configure
    base = name.split("::", 1)[0]
    if base in config.slack.approve_reactions:
        return rel.Verdict.APPROVE
    if base in config.slack.block_reactions:
        return rel.Verdict.BLOCK
    return None


async def record_reaction(
    store: Store, config: Config, reaction: Reaction, *, at: float
) -> ReactionOutcome:
    verdict = verdict_for(config, reaction.name)
    if verdict is None:
        return ReactionOutcome.IGNORED

    def decide(snap: Snapshot) -> tuple[Write | None, ReactionOutcome]:
        current = snap.get(snap.message_release)
        if current is None:
            return None, ReactionOutcome.IGNORED
        event = rel.React(user=reaction.user, verdict=verdict, added=reaction.added)
        try:
            new = rel.apply(current, event, at=at)
        except NotInvolved as err:
            if not reaction.added:
                return None, ReactionOutcome.IGNORED
            return Write(
                jobs=[notice_job(reaction.channel, reaction.user, str(err))]
            ), ReactionOutcome.NOT_INVOLVED
        except InvalidTransition:
            if not reaction.added:
                return None, ReactionOutcome.IGNORED
            return Write(
                jobs=[notice_job(reaction.channel, reaction.user, _too_late(current))]
            ), ReactionOutcome.TOO_LATE
        jobs = (
            [deploy_job(new)]
            if new.state is ReleaseState.APPROVED and current.state is not ReleaseState.APPROVED
            else []
        )
        return Write(releases=[new], jobs=jobs), ReactionOutcome.CHANGED

    try:
        return await store.update(
            "",
            decide,
            message=(reaction.channel, reaction.ts),
            dedupe=store.keys.dedupe("slack", reaction.event_id) if reaction.event_id else None,
        )
    except Duplicate:
        return ReactionOutcome.DUPLICATE


def _too_late(release: Release) -> str:
    if release.state is ReleaseState.COLLECTING:
        return (
            f"This batch is not frozen yet, so reactions do not count. "
            f"Type `/release {release.env}` first, then approve."
        )
    if not release.approval_required:
        return f"Release {release.id} needs no approvals."
    return f"Release {release.id} is already {release.state.value.replace('_', ' ')}; your reaction does not change it."
