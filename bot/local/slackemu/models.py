"""Plain records of what happened in the emulated workspace."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.local.slackemu import blockkit

JSONDict = dict[str, Any]


@dataclass
class User:
    id: str
    name: str
    real_name: str = ""
    email: str | None = None
    is_bot: bool = False
    tz: str = "Etc/UTC"
    deleted: bool = False

    @property
    def display_name(self) -> str:
        return self.name


@dataclass
class Channel:
    id: str
    name: str
    is_private: bool = False
    is_im: bool = False
    is_archived: bool = False
    bot_is_member: bool = True
    #: None means "everyone in the workspace", which is what most tests want.
    members: set[str] | None = None
    topic: str = ""
    purpose: str = ""
    created: int = 0
    creator: str = ""

    def has_member(self, user_id: str) -> bool:
        return self.members is None or user_id in self.members


@dataclass
class Message:
    """One message as stored by the workspace; its fields are the *current* version."""

    ts: str
    channel: str
    user: str | None
    text: str = ""
    blocks: list[JSONDict] = field(default_factory=list)
    attachments: list[JSONDict] = field(default_factory=list)
    bot_id: str | None = None
    app_id: str | None = None
    thread_ts: str | None = None
    reply_broadcast: bool = False
    #: emoji name -> reacting user ids, in the order they reacted
    reactions: dict[str, list[str]] = field(default_factory=dict)
    #: number of edits; truthy once edited
    edited: int = 0
    edited_ts: str | None = None
    #: previous versions, oldest first, as (text, blocks)
    history: list[tuple[str, list[JSONDict]]] = field(default_factory=list)
    #: set for ephemeral messages: the only user who can see it
    ephemeral_for: str | None = None
    username: str | None = None
    subtype: str | None = None
    metadata: JSONDict | None = None

    @property
    def is_reply(self) -> bool:
        return self.thread_ts is not None and self.thread_ts != self.ts

    @property
    def is_ephemeral(self) -> bool:
        return self.ephemeral_for is not None

    def render(self, names: Mapping[str, str] | None = None) -> str:
        """The body as a person reads it (Block Kit and mrkdwn flattened to text)."""
        return blockkit.render_message(self.text, self.blocks, self.attachments, names or {})

    def buttons(self) -> Iterator[tuple[str | None, JSONDict]]:
        """(block_id, button element) for every clickable button, in display order."""
        return blockkit.iter_buttons(self.blocks)

    def reaction_count(self, name: str) -> int:
        return len(self.reactions.get(name, []))

    def to_json(self, team_id: str) -> JSONDict:
        """The message object Slack returns from the Web API and puts in payloads."""
        out: JSONDict = {"type": "message", "text": self.text, "ts": self.ts}
        if self.subtype:
            out["subtype"] = self.subtype
        if self.user:
            out["user"] = self.user
        if self.bot_id:
            out["bot_id"] = self.bot_id
        if self.app_id:
            out["app_id"] = self.app_id
        out["team"] = team_id
        if self.blocks:
            out["blocks"] = self.blocks
        if self.attachments:
            out["attachments"] = self.attachments
        if self.thread_ts:
            out["thread_ts"] = self.thread_ts
        if self.edited:
            out["edited"] = {"user": self.user, "ts": self.edited_ts}
        if self.reactions:
            out["reactions"] = [
                {"name": n, "users": list(us), "count": len(us)} for n, us in self.reactions.items()
            ]
        if self.metadata:
            out["metadata"] = self.metadata
        return out


@dataclass(frozen=True)
class ApiCall:
    """One Web API request the emulator received, including rejected ones."""

    method: str
    args: JSONDict
    status: int
    at: float
    http_method: str = "POST"
    ok: bool = True
    error: str | None = None
    response: JSONDict = field(default_factory=dict)
    #: the Retry-After the emulator answered with a 429, in seconds
    retry_after: int | None = None


@dataclass(frozen=True)
class ViewResult:
    """What a person saw after pressing a modal's submit button."""

    status: int
    #: the modal closed (the app acked without errors)
    closed: bool
    #: errors shown under the inputs, by block_id (from the client or the app)
    errors: dict[str, str]
    #: the delivery failed (the app did not answer); Slack keeps the modal open
    failure: str | None = None


@dataclass(frozen=True)
class SlashResult:
    """What the invoker of a slash command saw right after pressing enter."""

    status: int
    text: str
    response_type: str | None
    body: str
    blocks: list[JSONDict] = field(default_factory=list)
    #: Slack's client-side error ("operation_timeout", "http_service_error"), if any
    error: str | None = None
    response_url: str = ""
    trigger_id: str = ""


@dataclass(frozen=True)
class Delivery:
    """One attempt at delivering something to the bot, over HTTP or a Socket Mode connection.

    Over Socket Mode, ``status`` is 200 when the envelope was acked in time (else None),
    ``response_body`` is the ack's ``payload`` as JSON, and ``attempt`` is the envelope's
    ``retry_attempt``.
    """

    #: "event" | "slash_command" | "block_actions" | "view_submission" | "url_verification" | "raw"
    kind: str
    attempt: int  # 0 for the first delivery, then the X-Slack-Retry-Num we sent
    status: int | None  # None when there was no HTTP answer (timeout, connection failure)
    failure: str | None  # the X-Slack-Retry-Reason this attempt would cause, if it failed
    at: float
    event_id: str | None = None
    response_body: str = ""
    response_headers: Mapping[str, str] = field(default_factory=dict)
    transport: str = "http"  # "http" | "socket"
    envelope_id: str | None = None
