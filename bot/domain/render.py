"""Block Kit for the release message, re-rendered whole from state on every change.

Pure: the same release always renders to the same blocks, so a renderer can skip an
update that would change nothing, and a lost update is repaired by the next one.
Times use Slack's ``<!date^...>`` so the reader's client formats them; no clock here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bot.domain import approvals
from bot.domain.models import (
    Commit,
    EnvLock,
    Person,
    Release,
    ReleaseKind,
    ReleaseState,
    Step,
    StepStatus,
)

Block = dict[str, Any]

#: Slack allows 3000 characters in a section; leave room for the "and N more" line
_SECTION_LIMIT = 2900
#: commits listed in full; the rest are counted, keeping the message under 50 blocks
MAX_LISTED_COMMITS = 40
#: people listed by name in the approvals line; the rest are counted
MAX_LISTED_PEOPLE = 30
#: backend output shown in the message itself; the thread has the rest
MAX_DETAIL = 300
MAX_REASON = 1500


#: an entity (``&amp;``) or a ``<…>`` link/mention left open at the end of a cut
_OPEN_AT_END = re.compile(r"(&[#a-zA-Z0-9]{0,8}|<[^<>]{0,200})$")


def clip(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters; a cut never leaves half an entity (``&am``)
    or half a mention, which Slack would show as garbage or leave open."""
    if len(text) <= limit:
        return text
    head = text[: limit - 1]
    return _OPEN_AT_END.sub("", head) + "…"


S = ReleaseState

#: action_ids of the release message's buttons; the value of each is the release id
APPROVE_ACTION = "shipmate_approve"
BLOCK_ACTION = "shipmate_block"
UNBLOCK_ACTION = "shipmate_unblock"
CANCEL_ACTION = "shipmate_cancel"
#: callback_id of the modal that asks a blocker why
BLOCK_REASON_VIEW = "shipmate_block_reason"
BLOCK_REASON_INPUT = "reason"
MAX_BLOCK_REASON = 500


@dataclass(frozen=True, slots=True)
class RenderOptions:
    pr_url: str | None = None
    approve_reaction: str = "white_check_mark"
    block_reaction: str = "no_entry"


@dataclass(frozen=True, slots=True)
class Rendered:
    text: str
    blocks: list[Block]


#: Slack's mrkdwn code fence; text inside must never contain it (it would end the block)
FENCE = "```"
#: a backtick that starts a fence; a zero-width space after it keeps the run from being one
_FENCE_START = re.compile(r"`(?=``)")


def escape(text: str) -> str:
    """Plain text for mrkdwn: the three control characters escaped, and no ``` fence, so
    a commit subject or a script's output can neither ping, link, nor open a code block
    that swallows the rest of the message (or close the one it is shown in)."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _FENCE_START.sub("`\u200b", escaped) if FENCE in escaped else escaped


def code_block(text: str, limit: int = 2900) -> str:
    """Plain ``text`` (a command's output) as a mrkdwn code block: escaped, unable to close
    the block early, and cut from the front to ``limit`` characters without splitting an
    entity. The newest output is at the end, so the end is what is kept."""
    body = escape(text)
    if len(body) > limit:
        body = _clip_front(body, limit)
    # the fences on lines of their own: a backtick at either end cannot join them
    return f"{FENCE}\n{body}\n{FENCE}"


#: an entity cut open at the start of a kept tail (``mp;``)
_CUT_AT_START = re.compile(r"^[#a-zA-Z0-9]{0,8};")


def _clip_front(body: str, limit: int) -> str:
    tail = body[len(body) - (limit - 1) :]
    cut = body[: len(body) - len(tail)]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:] and _CUT_AT_START.match(tail):
        tail = _CUT_AT_START.sub("", tail, count=1)
    return "…" + tail


#: ``<!channel>``, ``<!here>``, ``<!everyone>``, ``<!subteam^…>``: pings shipmate never means.
#: ``<!date^…>`` is the one special form it writes itself.
_BROADCAST = re.compile(r"<!(?!date\^)")
#: what may stand between ``<@`` and ``>``: an id, never markup
_USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")


def defuse(text: str) -> str:
    """Make any broadcast mention in ``text`` inert (``&lt;!channel>`` shows as text).

    Defence in depth: every part of a text should already be escaped where it is built;
    this is the last word before Slack, so a missed path still cannot ping a channel."""
    return _BROADCAST.sub("&lt;!", text)


def short(sha: str | None) -> str:
    return f"`{sha[:7]}`" if sha else "nothing yet"


def slack_date(ts: float, fmt: str = "{date_short_pretty} {time}") -> str:
    """A date each reader sees in their own time zone; the fallback is UTC."""
    fallback = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))
    return f"<!date^{int(ts)}^{fmt}|{fallback}>"


def mention(user: str) -> str:
    """A live mention of a Slack user id; anything else (a forged "user") shows as text."""
    return f"<@{user}>" if _USER_ID.fullmatch(user) else escape(user)


def person_label(person: Person) -> str:
    return mention(person.slack_user) if person.slack_user else escape(person.name)


def commit_line(commit: Commit, options: RenderOptions) -> str:
    title = commit.title
    if commit.pr is not None:
        # the squash title's own "(#123)" becomes the link instead of appearing twice
        title = title.removesuffix(f"(#{commit.pr})").rstrip()
    line = f"`{commit.short_sha}` {escape(title)}"
    if commit.pr is not None:
        if options.pr_url:
            url = options.pr_url.replace("{number}", str(commit.pr))
            line += f" (<{url}|#{commit.pr}>)"
        else:
            line += f" (#{commit.pr})"
    names = ", ".join(escape(a.name) for a in commit.involved())
    return f"{line} — {names}"


def render_release(
    release: Release, options: RenderOptions, *, lock: EnvLock | None = None
) -> Rendered:
    """The whole message; ``lock`` is the environment's lock, shown while the release would wait."""
    blocks: list[Block] = [_section(_headline(release))]
    if (
        lock is not None
        and release.kind is ReleaseKind.RELEASE
        and release.state in _WAITS_FOR_LOCK
    ):
        blocks.append(_section(lock_text(release.env, lock)))
    context = _context_line(release, options)
    if context:
        blocks.append(_context(context))
    if release.commits:
        blocks.extend(_commit_sections(release.commits, options))
    if (
        release.approval_required
        and release.frozen_at is not None
        and release.kind is ReleaseKind.RELEASE
    ):
        blocks.append(_section(_approval_text(release, options)))
    buttons = _buttons(release, lock)
    if buttons:
        blocks.append({"type": "actions", "block_id": f"decide:{release.id}", "elements": buttons})
    if release.steps:
        blocks.append(_context(_steps_text(release.steps)))
    outcome = _outcome_text(release)
    if outcome:
        blocks.append(_section(outcome))
    return Rendered(text=_fallback(release), blocks=blocks)


_WAITS_FOR_LOCK = frozenset({S.COLLECTING, S.AWAITING_APPROVAL, S.BLOCKED, S.APPROVED})


def _buttons(release: Release, lock: EnvLock | None) -> list[Block]:
    """Approve / Block / Cancel while people decide; Cancel alone while an approved
    release waits for a lock. Everyone sees the same buttons; the rules decide who counts."""
    if release.kind is not ReleaseKind.RELEASE:
        return []
    deciding = release.approval_required and release.state in (S.AWAITING_APPROVAL, S.BLOCKED)
    waiting = release.state is S.APPROVED and lock is not None
    if not deciding and not waiting:
        return []
    buttons: list[Block] = []
    if deciding:
        buttons.append(_button(APPROVE_ACTION, "Approve", release.id, style="primary"))
        buttons.append(_button(BLOCK_ACTION, "Block", release.id, style="danger"))
        if release.blocks:
            buttons.append(_button(UNBLOCK_ACTION, "Lift my block", release.id))
    cancel = _button(CANCEL_ACTION, "Cancel release", release.id)
    cancel["confirm"] = {
        "title": {"type": "plain_text", "text": "Cancel this release?"},
        "text": {
            "type": "mrkdwn",
            "text": f"Release {release.id} will not deploy; its commits go back into the next batch.",
        },
        "confirm": {"type": "plain_text", "text": "Cancel release"},
        "deny": {"type": "plain_text", "text": "Keep it"},
    }
    buttons.append(cancel)
    return buttons


def _button(action_id: str, label: str, value: str, *, style: str | None = None) -> Block:
    button: Block = {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": label},
        "value": value,
    }
    if style:
        button["style"] = style
    return button


def block_reason_modal(release: Release, channel: str, ts: str) -> Block:
    """The modal the Block button opens: a block needs a reason everyone can read."""
    return {
        "type": "modal",
        "callback_id": BLOCK_REASON_VIEW,
        # where the decision goes when the form comes back (Slack echoes this as is)
        "private_metadata": f"{channel}|{ts}|{release.id}",
        "title": {"type": "plain_text", "text": "Block release"},
        "submit": {"type": "plain_text", "text": "Block"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": (
                        f"Release {release.id} to *{release.env}* will not deploy while you "
                        "block it. Everyone in the channel sees your reason; lift the block "
                        "when it is resolved."
                    ),
                },
            },
            {
                "type": "input",
                "block_id": BLOCK_REASON_INPUT,
                "label": {"type": "plain_text", "text": "Why are you blocking it?"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": BLOCK_REASON_INPUT,
                    "multiline": True,
                    "max_length": MAX_BLOCK_REASON,
                },
            },
        ],
    }


def lock_text(env: str, lock: EnvLock) -> str:
    who = "shipmate" if lock.automatic else mention(lock.by)
    since = slack_date(lock.at, "{ago}")
    reason = f": {escape(lock.reason)}" if lock.reason else ""
    return (
        f":lock: *`{env}` is locked* by {who} ({since}){reason}. "
        f"Releases wait until someone types `/unlock {env}`; `/rollback` still works."
    )


def render_approval_request(release: Release, options: RenderOptions) -> str:
    """The thread reply that mentions everyone whose approval is needed."""
    asked = [mention(u) for u in approvals.awaited(release)]
    lines = [
        f"{', '.join(asked) or 'Nobody'}: please review release {release.id} to *{release.env}* "
        f"and react to the message above with :{options.approve_reaction}: to approve "
        f"or :{options.block_reaction}: to block, or use its buttons."
    ]
    if release.unmapped:
        lines.append(_stand_in_text(release))
    return "\n".join(lines)


def _fallback(release: Release) -> str:
    n = len(release.commits)
    commits = f"{n} commit{'s' if n != 1 else ''}"
    if release.state is S.COLLECTING:
        return f"Next release to {release.env}: {commits}"
    what = "Rollback" if release.kind is ReleaseKind.ROLLBACK else "Release"
    return (
        f"{what} {release.id} to {release.env}: {release.state.value.replace('_', ' ')} ({commits})"
    )


def _headline(release: Release) -> str:
    env = f"`{release.env}`"
    rid = release.id
    n = len(release.commits)
    count = f"{n} commit{'s' if n != 1 else ''}"
    if release.kind is ReleaseKind.ROLLBACK:
        return _rollback_headline(release)
    match release.state:
        case S.COLLECTING:
            return f":package: *Next release to {env}* · {count}"
        case S.AWAITING_APPROVAL:
            return f":hourglass_flowing_sand: *Release {rid} to {env} is waiting for approval* · {count}"
        case S.BLOCKED:
            who = ", ".join(mention(u) for u in sorted(release.blocks))
            return f":no_entry: *Release {rid} to {env} is blocked* by {who}"
        case S.APPROVED:
            return f":white_check_mark: *Release {rid} to {env} is approved*; deploying {short(release.head_sha)}"
        case S.DEPLOYING:
            return f":gear: *Deploying release {rid}* ({short(release.head_sha)}) to {env}"
        case S.VERIFYING:
            return f":stethoscope: *Checking the health of release {rid}* on {env}"
        case S.LIVE:
            return f":rocket: *Release {rid} is live on {env}* · {short(release.head_sha)}"
        case S.FAILED:
            return f":x: *Release {rid} to {env} failed*"
        case S.ROLLING_BACK:
            return f":rewind: *Release {rid} failed; rolling {env} back to {short(release.previous_sha)}*"
        case S.ROLLED_BACK:
            if release.healthy_after_rollback is False:
                return (
                    f":rotating_light: *Release {rid} failed and the rollback is unhealthy too*: "
                    f"nothing on {env} is healthy"
                )
            return f":leftwards_arrow_with_hook: *Release {rid} was rolled back*; {env} runs {short(release.previous_sha)} again"
        case S.CANCELLED:
            return f":heavy_multiplication_x: *Release {rid} to {env} was cancelled*"
        case S.SUPERSEDED:
            return f":fast_forward: *Release {rid} to {env} was superseded*"
    return f"*Release {rid}*"  # pragma: no cover - exhaustive match


def _rollback_headline(release: Release) -> str:
    env = f"`{release.env}`"
    target = f"{short(release.head_sha)}" + (
        f" (release {release.rollback_target})" if release.rollback_target else ""
    )
    by = f" by {mention(release.requested_by)}" if release.requested_by else ""
    match release.state:
        case S.LIVE:
            return f":leftwards_arrow_with_hook: *Rolled {env} back to {target}*{by}"
        case S.FAILED | S.ROLLED_BACK:
            return f":rotating_light: *Rollback of {env} to {target} is unhealthy*{by}"
        case S.SUPERSEDED | S.CANCELLED:
            return f":heavy_multiplication_x: *Rollback of {env} to {target} did not run*"
        case _:
            return f":rewind: *Rolling {env} back to {target}*{by}"


def _context_line(release: Release, options: RenderOptions) -> str:
    if release.state is S.COLLECTING:
        runs = short(release.base_sha)
        if not release.commits:
            return f"{release.env} runs {runs}; no new commits."
        return f"Since {runs}. Type `/release {release.env}` to ship {'it' if len(release.commits) == 1 else 'them'}."
    parts = []
    if release.requested_by and release.kind is ReleaseKind.RELEASE:
        parts.append(f"Requested by {mention(release.requested_by)}")
    if release.frozen_at is not None:
        parts.append(f"frozen {slack_date(release.frozen_at)}")
    if release.finished_at is not None and release.is_terminal:
        parts.append(f"finished {slack_date(release.finished_at)}")
    return " · ".join(parts)


def _commit_sections(commits: Iterable[Commit], options: RenderOptions) -> list[Block]:
    listed = list(commits)
    hidden = max(0, len(listed) - MAX_LISTED_COMMITS)
    lines = [commit_line(c, options) for c in listed[-MAX_LISTED_COMMITS:]]
    if hidden:
        lines.insert(0, f"_… and {hidden} earlier commit{'s' if hidden != 1 else ''}_")
    sections: list[Block] = []
    chunk: list[str] = []
    size = 0
    for line in lines:
        line = line if len(line) <= _SECTION_LIMIT else line[: _SECTION_LIMIT - 1] + "…"
        if chunk and size + len(line) + 1 > _SECTION_LIMIT:
            sections.append(_section("\n".join(chunk)))
            chunk, size = [], 0
        chunk.append(line)
        size += len(line) + 1
    if chunk:
        sections.append(_section("\n".join(chunk)))
    return sections


def _approval_text(release: Release, options: RenderOptions) -> str:
    marks: list[str] = []
    seen: set[str] = set()
    for person in release.people:
        user = person.slack_user
        if not user or user in seen:
            continue
        seen.add(user)
        if user in release.blocks:
            mark = ":no_entry:"
        elif user in release.approvals:
            mark = ":white_check_mark:"
        else:
            mark = ":hourglass_flowing_sand:"
        marks.append(f"{mark} {mention(user)}")
    for user in sorted(release.approvals | release.blocks):
        if user not in seen:
            seen.add(user)
            mark = ":no_entry:" if user in release.blocks else ":white_check_mark:"
            marks.append(f"{mark} {mention(user)} (for authors without Slack)")
    if release.unmapped:
        # one stand-in approval covers every author without a Slack user
        given = approvals.stand_in_given(release)
        mark = ":white_check_mark:" if given else ":hourglass_flowing_sand:"
        n = len(release.unmapped)
        marks.append(
            f"{mark} {n} author{'s' if n != 1 else ''} without Slack (a stand-in approves)"
        )
    if len(marks) > MAX_LISTED_PEOPLE:
        waiting = sum(1 for m in marks[MAX_LISTED_PEOPLE:] if m.startswith(":hourglass"))
        rest = len(marks) - MAX_LISTED_PEOPLE
        marks = [*marks[:MAX_LISTED_PEOPLE], f"and {rest} more ({waiting} still to approve)"]
    text = "*Approvals:* " + (" · ".join(marks) if marks else "none needed")
    for user, reason in release.block_reasons:
        if user in release.blocks:
            text += f"\n:no_entry: {mention(user)}: “{escape(clip(reason, MAX_BLOCK_REASON))}”"
    if release.unmapped and not approvals.stand_in_given(release):
        text += "\n" + _stand_in_text(release)
    if release.state in (S.AWAITING_APPROVAL, S.BLOCKED):
        text += (
            f"\nReact with :{options.approve_reaction}: to approve or "
            f":{options.block_reaction}: to block (or use the buttons); "
            "remove your reaction to take it back."
        )
    return text


def _stand_in_text(release: Release) -> str:
    unmapped = release.unmapped
    names = ", ".join(f"{escape(p.name)} ({escape(p.email)})" for p in unmapped[:10])
    if len(unmapped) > 10:
        names += f" and {len(unmapped) - 10} more"
    who = " or ".join(mention(u) for u in sorted(approvals.stand_ins(release))) or "a release admin"
    return f"{names} {'has' if len(release.unmapped) == 1 else 'have'} no Slack user; {who} can approve for them."


_STEP_MARK = {
    StepStatus.RUNNING: ":hourglass_flowing_sand:",
    StepStatus.OK: ":white_check_mark:",
    StepStatus.FAILED: ":x:",
}


def _steps_text(steps: tuple[Step, ...]) -> str:
    """Every step, newest kept when they do not all fit (the thread has the full story)."""
    lines = [_step_line(step) for step in steps]
    while len(lines) > 1 and sum(len(line) + 1 for line in lines) > _SECTION_LIMIT - 40:
        lines.pop(0)
    hidden = len(steps) - len(lines)
    if hidden:
        lines.insert(0, f"_… {hidden} earlier step{'s' if hidden != 1 else ''} in the thread_")
    return "\n".join(lines)


def _step_line(step: Step) -> str:
    detail = f" — {escape(clip(step.detail, MAX_DETAIL))}" if step.detail else ""
    return f"{_STEP_MARK[step.status]} {escape(step.name)}{detail}"


def reason_text(release: Release) -> str | None:
    """Why a release ended as it did, in mrkdwn: its reason, or who cancelled it.

    The stored reason names nobody (the canceller is an id in ``cancelled_by``); mentions
    are made here, where everything Slack sees is rendered."""
    if release.cancelled_by is not None:
        return f"cancelled by {mention(release.cancelled_by)}"
    return release.reason


def _outcome_text(release: Release) -> str | None:
    reason = reason_text(release)
    if reason and release.state in (
        S.FAILED,
        S.ROLLING_BACK,
        S.ROLLED_BACK,
        S.CANCELLED,
        S.SUPERSEDED,
    ):
        return f"*Why:* {clip(reason, MAX_REASON)}"
    return None


def _section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _context(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}
