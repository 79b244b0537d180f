"""A channel rendered the way a person scrolling through it would read it."""

from __future__ import annotations

import time

from bot.local.slackemu.models import Message
from bot.local.slackemu.workspace import Workspace

INDENT = "    "


def _clock(ts: str) -> str:
    # UTC so that transcripts in failure messages don't depend on the machine's zone.
    return time.strftime("%H:%M:%S", time.gmtime(float(ts)))


def render_message(
    ws: Workspace, msg: Message, *, first: str = "", rest: str = INDENT
) -> list[str]:
    names = ws.names()
    who = ws.author_name(msg)
    if msg.ephemeral_for is not None:
        who += f" (only visible to {names.get(msg.ephemeral_for, msg.ephemeral_for)})"
    if msg.reply_broadcast and msg.is_reply:
        who += " (also sent to the channel)"
    rendered = msg.render(names)
    body = rendered.split("\n") if rendered else ["(no text)"]
    if msg.edited:
        body[-1] += " (edited)"
    lines = [f"{first}[{_clock(msg.ts)}] {who}: {body[0]}"]
    lines.extend(f"{rest}{line}" for line in body[1:])
    if msg.reactions:
        parts = [
            f":{name}: {len(users)} ({', '.join(names.get(u, u) for u in users)})"
            for name, users in msg.reactions.items()
        ]
        lines.append(rest + "  ".join(parts))
    return lines


def render_channel(ws: Workspace, channel: str, include_ephemeral_for: str | None = None) -> str:
    ch = ws.channels.get(channel)
    lines = [f"#{ch.name} ({channel})" if ch else f"{channel} (unknown channel)"]
    ephemerals = ws.ephemerals(include_ephemeral_for, channel) if include_ephemeral_for else []
    top = ws.messages(channel) + [e for e in ephemerals if not e.thread_ts]
    for msg in sorted(top, key=lambda m: m.ts):
        lines.extend(render_message(ws, msg))
        if msg.is_reply:
            continue  # a broadcast reply; it is also shown inside its thread
        replies = ws.thread(channel, msg.ts) + [e for e in ephemerals if e.thread_ts == msg.ts]
        for reply in sorted(replies, key=lambda m: m.ts):
            lines.extend(render_message(ws, reply, first=INDENT + "↳ ", rest=INDENT * 2))
    if len(lines) == 1:
        lines.append("(no messages)")
    return "\n".join(lines)
