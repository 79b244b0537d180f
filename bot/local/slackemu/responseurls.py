"""response_url endpoints (§2): the emulator hands out URLs pointing at itself."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from bot.local.slackemu.models import JSONDict, Message
from bot.local.slackemu.workspace import Workspace

MAX_USES = 5
LIFETIME = 30 * 60.0


@dataclass
class ResponseUrl:
    id: str
    secret: str
    kind: str  # "commands" | "actions"
    channel: str
    user: str
    created: float
    #: the message replace_original/delete_original act on
    original_ts: str | None = None
    original_ephemeral: bool = False
    #: "/cmd text" shown in the channel with the first in_channel response
    command_echo: str | None = None
    echo_ts: str | None = None
    uses: int = 0


@dataclass(frozen=True)
class ResponsePost:
    url: str
    body: JSONDict
    status: int
    answer: str


@dataclass
class ResponseUrls:
    ws: Workspace
    base_url: Callable[[], str]
    clock: Callable[[], float] = time.monotonic
    posts: list[ResponsePost] = field(default_factory=list)
    _urls: dict[str, ResponseUrl] = field(default_factory=dict)

    def create(
        self, kind: str, *, channel: str, user: str, **extra: Any
    ) -> tuple[str, ResponseUrl]:
        rec = ResponseUrl(
            id=str(secrets.randbelow(10**13)),
            secret=secrets.token_urlsafe(18),
            kind=kind,
            channel=channel,
            user=user,
            created=self.clock(),
            **extra,
        )
        self._urls[rec.id] = rec
        url = f"{self.base_url()}/{kind}/{self.ws.identity.team_id}/{rec.id}/{rec.secret}"
        return url, rec

    def expire_all(self) -> None:
        for rec in self._urls.values():
            rec.created = self.clock() - LIFETIME - 1

    def _original(self, rec: ResponseUrl) -> Message | None:
        if rec.original_ts is None:
            return None
        if rec.original_ephemeral:
            return self.ws.get_ephemeral(rec.user, rec.original_ts)
        return self.ws.get(rec.channel, rec.original_ts)

    def apply(self, rec: ResponseUrl, body: JSONDict) -> str | None:
        """Show a response as Slack would; returns an error code if it can't be shown."""
        text = body.get("text")
        text = None if text is None else str(text)
        blocks = body.get("blocks") if isinstance(body.get("blocks"), list) else None
        attachments = body.get("attachments") if isinstance(body.get("attachments"), list) else None
        original = self._original(rec)
        if _truthy(body.get("delete_original")):
            if original is not None:
                self.ws.delete(original)
            return None
        if not text and not blocks and not attachments:
            return "no_text"
        bot = self.ws.identity.bot_user_id
        if _truthy(body.get("replace_original")) and original is not None:
            # A replacement is the whole new message: omitted blocks disappear.
            self.ws.edit(
                original, text=text or "", blocks=blocks or [], attachments=attachments or []
            )
            return None
        if body.get("response_type") == "in_channel":
            if rec.command_echo is not None:
                self.ws.post(rec.channel, user=rec.user, text=rec.command_echo, ts=rec.echo_ts)
                rec.command_echo = None
            msg = self.ws.post(
                rec.channel,
                user=bot,
                text=text or "",
                blocks=blocks,
                attachments=attachments,
                thread_ts=_thread_ts(body),
            )
        else:
            msg = self.ws.post_ephemeral(
                rec.channel,
                to=rec.user,
                user=bot,
                text=text or "",
                blocks=blocks,
                attachments=attachments,
                thread_ts=_thread_ts(body),
            )
        if rec.kind == "commands":
            rec.original_ts, rec.original_ephemeral = msg.ts, msg.is_ephemeral
        return None

    async def handle(self, request: web.Request) -> web.Response:
        url = str(request.url)
        rec = self._urls.get(request.match_info["id"])
        raw = await request.text()
        body = _parse(raw, request.content_type)
        status, answer = self._answer(rec, request, body)
        self.posts.append(ResponsePost(url, body or {}, status, answer))
        return web.Response(status=status, text=answer, content_type="text/plain")

    def _answer(
        self, rec: ResponseUrl | None, request: web.Request, body: JSONDict | None
    ) -> tuple[int, str]:
        if (
            rec is None
            or rec.secret != request.match_info["secret"]
            or rec.kind != request.match_info["kind"]
        ):
            return 404, "no_service"
        if self.clock() - rec.created > LIFETIME:
            return 404, "expired_url"
        if rec.uses >= MAX_USES:
            return 404, "used_url"
        if body is None:
            return 400, "invalid_payload"
        error = self.apply(rec, body)
        if error:
            return 400, error
        rec.uses += 1
        return 200, "ok"


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("1", "true")


def _thread_ts(body: JSONDict) -> str | None:
    ts = body.get("thread_ts")
    return str(ts) if ts else None


def _parse(raw: str, ctype: str) -> JSONDict | None:
    """JSON as slack_sdk's webhook client sends it; legacy clients form-encode ``payload=``."""
    if "json" not in ctype and raw.startswith("payload="):
        raw = dict(parse_qsl(raw)).get("payload", "")
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
