"""What `web` records for each request: one atomic write, no slow work.

Each function decides with ``domain`` inside ``Store.update`` and returns what to tell
the user. Deploys, message edits and notices become jobs for the worker.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from bot.adapters.keys import JOBS_MAXLEN
from bot.adapters.metrics import NOTICES, RECORDER
from bot.adapters.store import Conflict, Duplicate, Snapshot, Store, Write
from bot.config.loader import Config
from bot.domain import approvals, environment
from bot.domain import release as rel
from bot.domain.errors import (
    InvalidTransition,
    NotAllowedToCancel,
    NotInvolved,
    NotPermitted,
    ShipmateError,
)
from bot.domain.jobs import (
    Job,
    approvals_job,
    collect_job,
    deploy_job,
    notice_job,
    render_job,
    thread_job,
)
from bot.domain.models import Release, ReleaseKind, ReleaseState
from bot.domain.render import clip, escape
from deployer.base import interactive

#: the same notice to the same person about the same release is queued once in this window:
#: a member reacting 2,000 times on a release they are not part of gets one explanation
NOTICE_COALESCE_SECONDS = 60.0

# KEYS: the notice's mark, the jobs stream; ARGV: window ms, stream maxlen, the job's fields.
# The mark and the job land together: a notice is never marked sent without being queued.
_QUEUE_NOTICE = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
return 1
"""


async def queue_notice(store: Store, channel: str, user: str, text: str, *, about: str) -> bool:
    """Queue a notice for ``user`` unless the same one (about the same release) was queued
    within NOTICE_COALESCE_SECONDS; False when it was coalesced into that one."""
    digest = hashlib.sha256("\0".join((channel, user, about, text)).encode()).hexdigest()[:32]
    mark = f"{store.keys.prefix}notice:{digest}"
    fields = notice_job(channel, user, text).flat()
    queued = await store.redis.register_script(_QUEUE_NOTICE)(
        keys=[mark, store.keys.jobs],
        args=[int(NOTICE_COALESCE_SECONDS * 1000), JOBS_MAXLEN, *fields],
    )
    if not queued:
        RECORDER.inc(NOTICES, outcome="coalesced")
    return bool(queued)


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
        return Write(env=unlocked, jobs=jobs, actor=user), None

    await store.update(env, decide)


def _rerender(snap: Snapshot) -> list[Job]:
    return [render_job(r) for r in (snap.batch, snap.active) if r is not None]


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
    #: the decision was already recorded (a second click on Approve); the person is told
    UNCHANGED = "unchanged"
    #: the reactor is not involved; they are told why
    NOT_INVOLVED = "not_involved"
    #: the release is past deciding (or not frozen yet); the reactor is told
    TOO_LATE = "too_late"
    DUPLICATE = "duplicate"


#: outcomes after which nothing was recorded and the person should read ``Decided.message``
REFUSED = frozenset(
    {ReactionOutcome.UNCHANGED, ReactionOutcome.NOT_INVOLVED, ReactionOutcome.TOO_LATE}
)


@dataclass(frozen=True, slots=True)
class Reaction:
    channel: str
    ts: str
    user: str
    name: str
    added: bool
    event_id: str


@dataclass(frozen=True, slots=True)
class Decision:
    """An approve or block, added or withdrawn, on the release behind a message.

    Reactions, the message's buttons and the block-reason modal all arrive as one of
    these, so the rules (only involved people; a block can be lifted) are the same.
    """

    channel: str
    ts: str
    user: str
    verdict: rel.Verdict
    added: bool
    reason: str = ""
    #: a reaction: the emoji, so the thread can name it; a button: ""
    emoji: str = ""
    #: Slack's event_id: a redelivered event is recorded once
    event_id: str = ""
    #: tell the person in the channel (ephemeral) when nothing changed; a modal shows it itself
    notify: bool = True


@dataclass(frozen=True, slots=True)
class Decided:
    outcome: ReactionOutcome
    #: what to tell the person when nothing was recorded
    message: str = ""
    release_id: str | None = None


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
    decision = Decision(
        channel=reaction.channel,
        ts=reaction.ts,
        user=reaction.user,
        verdict=verdict,
        added=reaction.added,
        emoji=reaction.name,
        event_id=reaction.event_id,
    )
    return (await record_decision(store, decision, at=at)).outcome


async def record_decision(store: Store, decision: Decision, *, at: float) -> Decided:
    """Apply an approve/block to the message's release in one atomic write."""
    d = decision

    def refuse(
        outcome: ReactionOutcome, text: str, release: Release
    ) -> tuple[Write | None, Decided]:
        # withdrawing something that never counted is not worth a message
        if not d.added and d.emoji:
            return None, Decided(ReactionOutcome.IGNORED)
        # nothing is recorded; the notice is queued after the decision, coalesced
        return None, Decided(outcome, text, release_id=release.id)

    def decide(snap: Snapshot) -> tuple[Write | None, Decided]:
        current = snap.get(snap.message_release)
        if current is None:
            return None, Decided(ReactionOutcome.IGNORED)
        event = rel.React(user=d.user, verdict=d.verdict, added=d.added, reason=d.reason)
        try:
            new = rel.apply(current, event, at=at)
        except NotInvolved as err:
            return refuse(ReactionOutcome.NOT_INVOLVED, str(err), current)
        except InvalidTransition:
            return refuse(ReactionOutcome.TOO_LATE, _too_late(current), current)
        if (new.approvals, new.blocks, new.block_reasons) == (
            current.approvals,
            current.blocks,
            current.block_reasons,
        ):
            if d.emoji:  # a reaction mirrors one already given by button: nothing to say
                return None, Decided(ReactionOutcome.UNCHANGED, release_id=current.id)
            return refuse(ReactionOutcome.UNCHANGED, _unchanged(current, d), current)
        jobs: list[Job] = []
        if new.state is ReleaseState.APPROVED and current.state is not ReleaseState.APPROVED:
            jobs.append(deploy_job(new))
        note = _block_note(current, new, d)
        if note:
            jobs.append(thread_job(new, note))
        return Write(releases=[new], jobs=jobs), Decided(ReactionOutcome.CHANGED, release_id=new.id)

    try:
        decided = await store.update(
            "",
            decide,
            message=(d.channel, d.ts),
            dedupe=store.keys.dedupe("slack", d.event_id) if d.event_id else None,
        )
    except Duplicate:
        return Decided(ReactionOutcome.DUPLICATE)
    if d.notify and decided.outcome in REFUSED and decided.message:
        await queue_notice(
            store, d.channel, d.user, decided.message, about=decided.release_id or ""
        )
    return decided


async def may_block(
    store: Store, *, channel: str, ts: str, user: str
) -> tuple[Release | None, str | None]:
    """Before the Block button opens its modal: the release, and why ``user`` could not
    block it (None: they may). Only a read; the reason is checked again when recorded."""
    snap = await store.snapshot("", message=(channel, ts))
    current = snap.get(snap.message_release) if snap is not None else None
    if current is None:
        return None, "That message is not a release shipmate knows about."
    probe = rel.React(user=user, verdict=rel.Verdict.BLOCK, added=True, reason="?")
    try:
        rel.apply(current, probe, at=current.updated_at)
    except NotInvolved as err:
        return current, str(err)
    except InvalidTransition:
        return current, _too_late(current)
    return current, None


def _block_note(before: Release, after: Release, d: Decision) -> str | None:
    """What the thread says when a block comes or goes, so everyone sees why."""
    if d.verdict is not rel.Verdict.BLOCK:
        return None
    who = f"<@{d.user}>"
    if not d.added:
        return f":arrow_forward: {who} lifted their block on release {after.id}."
    reason = after.block_reason.get(d.user)
    if reason:
        quoted = "\n".join(f"> {line}" for line in escape(clip(reason, 1500)).splitlines())
        return f":no_entry: {who} blocked release {after.id}:\n{quoted}"
    if d.user in before.blocks:
        return None
    how = f" with :{d.emoji}:" if d.emoji else ""
    return (
        f":no_entry: {who} blocked release {after.id}{how}. {who}, please say why here in the "
        f"thread (or use the *Block* button on the message to give a reason everyone sees there)."
    )


def _unchanged(release: Release, d: Decision) -> str:
    if d.verdict is rel.Verdict.APPROVE:
        return f"You already approved release {release.id}."
    if d.added:
        return f"You already blocked release {release.id}."
    return f"You have not blocked release {release.id}, so there is no block of yours to lift."


#: a release may be called off until its deploy starts
_CANCELLABLE = frozenset(
    {ReleaseState.AWAITING_APPROVAL, ReleaseState.BLOCKED, ReleaseState.APPROVED}
)


async def cancel_release(store: Store, *, channel: str, ts: str, user: str, at: float) -> Decided:
    """The Cancel button: the release ends, its commits go back into the next batch."""

    def decide(snap: Snapshot) -> tuple[Write | None, Decided]:
        current = snap.get(snap.message_release)
        if current is None or current.kind is not ReleaseKind.RELEASE:
            return None, Decided(ReactionOutcome.IGNORED)
        if not approvals.can_cancel(current, user):
            text = str(NotAllowedToCancel(user, current.id, current.requested_by))
            return None, Decided(ReactionOutcome.NOT_INVOLVED, text, current.id)
        if current.state not in _CANCELLABLE:
            state = current.state.value.replace("_", " ")
            text = f"Release {current.id} is already {state}; it can no longer be cancelled."
            return None, Decided(ReactionOutcome.TOO_LATE, text, current.id)
        change = environment.cancel(snap.env, current, by=user, at=at)
        cancelled = change.releases[0]
        # the batch is counted from what runs again: collect at once rather than at the next poll
        jobs = [
            collect_job("cancel"),
            thread_job(
                cancelled,
                f":heavy_multiplication_x: <@{user}> cancelled release {cancelled.id}; "
                "its commits go back into the next batch.",
            ),
        ]
        return Write(env=change.env, releases=change.releases, jobs=jobs, actor=user), Decided(
            ReactionOutcome.CHANGED, release_id=cancelled.id
        )

    decided = await store.update("", decide, message=(channel, ts))
    if decided.outcome in REFUSED and decided.message:
        await queue_notice(store, channel, user, decided.message, about=decided.release_id or "")
    return decided


def _too_late(release: Release) -> str:
    if release.state is ReleaseState.COLLECTING:
        return (
            f"This batch is not frozen yet, so reactions do not count. "
            f"Type `/release {release.env}` first, then approve."
        )
    if not release.approval_required:
        return f"Release {release.id} needs no approvals."
    return f"Release {release.id} is already {release.state.value.replace('_', ' ')}; your reaction does not change it."
