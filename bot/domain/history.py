"""``/history env``: an environment's recent releases as Block Kit, for one person to read.

Pure, like the release message: the same releases always render the same way. Everything
shown comes from the release documents themselves (requester, approvals, blocks and their
reasons, timestamps, the outcome), so answering needs one Redis read and no audit scan.
Times use Slack's ``<!date^...>``; durations are differences of stored timestamps, so no
clock is read here.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.domain.models import EnvState, Release, ReleaseKind, ReleaseState
from bot.domain.render import (
    Block,
    Rendered,
    RenderOptions,
    clip,
    commit_line,
    escape,
    mention,
    reason_text,
    short,
    slack_date,
)

S = ReleaseState

#: releases listed; ten sections (plus dividers) stay far under Slack's 50 blocks
MAX_RELEASES = 10
#: commit titles shown per release; the count says how many more there are
MAX_TITLES = 3
MAX_TITLE = 160
MAX_REASON = 300
#: people named per role; the rest are counted, so a big batch cannot crowd the section out
MAX_NAMED = 8
MAX_BLOCKERS = 4
MAX_BLOCK_REASON = 200
#: a section's text may be 3000 characters; stay under it with room for the ellipsis
SECTION_LIMIT = 2900
#: the notification / fallback text
TEXT_LIMIT = 1000

_MARK = {
    S.AWAITING_APPROVAL: ":hourglass_flowing_sand:",
    S.BLOCKED: ":no_entry:",
    S.APPROVED: ":white_check_mark:",
    S.DEPLOYING: ":gear:",
    S.VERIFYING: ":stethoscope:",
    S.LIVE: ":rocket:",
    S.FAILED: ":x:",
    S.ROLLING_BACK: ":rewind:",
    S.ROLLED_BACK: ":leftwards_arrow_with_hook:",
    S.CANCELLED: ":heavy_multiplication_x:",
    S.SUPERSEDED: ":fast_forward:",
    S.COLLECTING: ":package:",
}


def sequence_number(release_id: str) -> int:
    """The n of ``<env>-<n>``: release ids count up per environment."""
    tail = release_id.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def recent(releases: Sequence[Release], limit: int = MAX_RELEASES) -> list[Release]:
    """The newest ``limit`` releases that were asked for (not the batch still collecting)."""
    asked = [r for r in releases if r.state is not S.COLLECTING]
    asked.sort(key=lambda r: (sequence_number(r.id), r.created_at), reverse=True)
    return asked[:limit]


def render_history(
    env: EnvState,
    releases: Sequence[Release],
    options: RenderOptions,
    *,
    limit: int = MAX_RELEASES,
) -> Rendered:
    """The ephemeral answer to ``/history``: a header, then one section per release."""
    shown = recent(releases, limit)
    batch = next((r for r in releases if r.state is S.COLLECTING and r.commits), None)
    blocks: list[Block] = [_section(_title(env, shown, limit))]
    context = _context_line(env, batch)
    if context:
        blocks.append(_context(context))
    rolled_back_by = _manual_rollbacks(shown)
    for release in shown:
        blocks.append({"type": "divider"})
        blocks.append(_section(_release_text(release, options, rolled_back_by.get(release.id))))
    return Rendered(text=_fallback(env.name, shown), blocks=blocks)


def _title(env: EnvState, shown: Sequence[Release], limit: int) -> str:
    name = f"`{env.name}`"
    if not shown:
        return (
            f":scroll: *No releases to {name} yet.* Type `/release {env.name}` to ship the batch."
        )
    n = len(shown)
    what = f"the last {n}" if n == limit else f"{n} release{'s' if n != 1 else ''}"
    return f":scroll: *Release history of {name}* · {what}, newest first"


def _context_line(env: EnvState, batch: Release | None) -> str:
    parts: list[str] = []
    if env.live_sha:
        via = f" (release {env.live_release})" if env.live_release else ""
        parts.append(f"Runs {short(env.live_sha)}{via}")
    if env.lock is not None:
        who = "shipmate" if env.lock.automatic else mention(env.lock.by)
        why = f": {escape(clip(env.lock.reason, MAX_REASON))}" if env.lock.reason else ""
        parts.append(f":lock: locked by {who}{why}")
    if batch is not None:
        parts.append(f"next batch: {_count(len(batch.commits))} not released yet")
    return " · ".join(parts)


def _release_text(release: Release, options: RenderOptions, rolled_back: Release | None) -> str:
    lines = [_headline(release), _people_line(release)]
    timing = _timing_line(release)
    if timing:
        lines.append(timing)
    lines.extend(_titles(release, options))
    outcome = _outcome_line(release, rolled_back)
    if outcome:
        lines.append(outcome)
    return clip("\n".join(line for line in lines if line), SECTION_LIMIT)


def _headline(release: Release) -> str:
    mark = _MARK[release.state]
    if release.state is S.ROLLED_BACK and release.healthy_after_rollback is False:
        mark = ":rotating_light:"
    if release.kind is ReleaseKind.ROLLBACK:
        target = f" (release {release.rollback_target})" if release.rollback_target else ""
        what = f"rollback to {short(release.head_sha)}{target}"
    else:
        what = f"{_range(release)} · {_count(len(release.commits))}"
    when = slack_date(release.frozen_at or release.created_at)
    return f"{mark} *{release.id}* · *{_state(release.state)}* · {what} · {when}"


def _range(release: Release) -> str:
    if release.base_sha is None:
        return f"up to {short(release.head_sha)} (first release)"
    return f"{short(release.base_sha)}…{short(release.head_sha)}"


def _people_line(release: Release) -> str:
    parts: list[str] = []
    by = mention(release.requested_by) if release.requested_by else "nobody"
    if release.kind is ReleaseKind.ROLLBACK:
        parts.append(f"Rolled back by {by}")
    else:
        parts.append(f"Requested by {by}")
        parts.append(_approval_part(release))
    blockers = sorted(release.blocks)
    for user in blockers[:MAX_BLOCKERS]:
        reason = release.block_reason.get(user)
        why = f" (“{escape(clip(reason, MAX_BLOCK_REASON))}”)" if reason else ""
        parts.append(f"blocked by {mention(user)}{why}")
    if len(blockers) > MAX_BLOCKERS:
        parts.append(f"and {len(blockers) - MAX_BLOCKERS} more blocking")
    return " · ".join(part for part in parts if part)


def _approval_part(release: Release) -> str:
    if not release.approval_required:
        return "no approval needed"
    approvers = _names(release.approvals)
    if release.approved_at is not None:
        waited = _between(release.frozen_at, release.approved_at)
        after = f" after {waited}" if waited else ""
        return f"approved by {approvers or 'nobody needed'}{after}"
    if approvers:
        return f"approvals so far: {approvers}"
    return "no approvals yet"


def _names(users: frozenset[str]) -> str:
    listed = sorted(users)
    names = ", ".join(mention(u) for u in listed[:MAX_NAMED])
    hidden = len(listed) - MAX_NAMED
    return f"{names} and {hidden} more" if hidden > 0 else names


def _timing_line(release: Release) -> str:
    started, finished = release.deploy_started_at, release.finished_at
    took = _between(started, finished)
    if release.state is S.LIVE and took:
        return f"Deployed and healthy in {took}"
    if release.state in (S.FAILED, S.ROLLED_BACK) and took:
        return f"Deploy started {slack_date(started or 0.0, '{time}')}, ended after {took}"
    if release.state in (S.DEPLOYING, S.VERIFYING, S.ROLLING_BACK) and started is not None:
        return f"Deploying since {slack_date(started, '{time}')}"
    return ""


def _titles(release: Release, options: RenderOptions) -> list[str]:
    if release.kind is ReleaseKind.ROLLBACK or not release.commits:
        return []
    newest = list(reversed(release.commits))[:MAX_TITLES]
    lines = [f"• {clip(commit_line(c, options), MAX_TITLE)}" for c in newest]
    hidden = len(release.commits) - len(newest)
    if hidden:
        lines.append(f"_… and {hidden} earlier commit{'s' if hidden != 1 else ''}_")
    return lines


def _outcome_line(release: Release, rolled_back: Release | None) -> str:
    # mrkdwn: whoever wrote the reason escaped it, and a cancel names its canceller
    why = reason_text(release)
    reason = clip(why, MAX_REASON) if why else ""
    match release.state:
        case S.FAILED:
            return f"*Failed:* {reason or 'no reason recorded'}"
        case S.ROLLING_BACK | S.ROLLED_BACK:
            healthy = ""
            if release.healthy_after_rollback is False:
                healthy = "; *nothing healthy after the rollback*"
            to = short(release.previous_sha)
            return f"*Rolled back automatically* to {to}{healthy}. Why: {reason or 'unknown'}"
        case S.CANCELLED | S.SUPERSEDED:
            return f"_{_state(release.state).capitalize()}:_ {reason}" if reason else ""
        case S.LIVE if rolled_back is not None:
            by = mention(rolled_back.requested_by) if rolled_back.requested_by else "someone"
            return f"Later rolled back by {by} ({rolled_back.id})"
    return ""


def _manual_rollbacks(releases: Sequence[Release]) -> dict[str, Release]:
    """For a live release that a later ``/rollback`` replaced: that rollback, by release id.

    A rollback's ``base_sha`` is what ran when it was asked for; the newest earlier release
    that went live with that sha is the one it undid.
    """
    found: dict[str, Release] = {}
    ordered = sorted(releases, key=lambda r: sequence_number(r.id))
    for i, rollback in enumerate(ordered):
        if rollback.kind is not ReleaseKind.ROLLBACK or rollback.state is not S.LIVE:
            continue
        for earlier in reversed(ordered[:i]):
            if earlier.state is S.LIVE and earlier.head_sha == rollback.base_sha:
                found.setdefault(earlier.id, rollback)
                break
    return found


def _fallback(env: str, shown: Sequence[Release]) -> str:
    if not shown:
        return f"No releases to {env} yet."
    items = ", ".join(f"{r.id} {_state(r.state)}" for r in shown)
    return clip(f"Recent releases to {env}: {items}", TEXT_LIMIT)


def _state(state: ReleaseState) -> str:
    return state.value.replace("_", " ")


def _count(n: int) -> str:
    return f"{n} commit{'s' if n != 1 else ''}"


def _between(start: float | None, end: float | None) -> str:
    if start is None or end is None or end < start:
        return ""
    return format_span(end - start)


def format_span(seconds: float) -> str:
    """A short duration for people: "0.4s", "12s", "1m30s", "2h05m", "3d4h"."""
    if seconds < 10:
        return f"{seconds:.1f}s".replace(".0s", "s")
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        minutes, secs = divmod(whole, 60)
        return f"{minutes}m{secs:02d}s" if secs else f"{minutes}m"
    if whole < 86400:
        hours, rest = divmod(whole, 3600)
        minutes = rest // 60
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    days, rest = divmod(whole, 86400)
    hours = rest // 3600
    return f"{days}d{hours}h" if hours else f"{days}d"


def _section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _context(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": clip(text, SECTION_LIMIT)}]}
