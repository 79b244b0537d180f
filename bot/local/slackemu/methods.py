"""Web API methods over the workspace, with Slack's response and error shapes (§5).

Each method takes the merged request args and returns the JSON body, or raises
``ApiError``; transport concerns (auth, rate limits, HTTP) live in ``webapi``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.local.slackemu import payloads
from bot.local.slackemu.models import Channel, JSONDict, Message, User
from bot.local.slackemu.views import ViewError
from bot.local.slackemu.workspace import Workspace

Args = dict[str, Any]
MAX_TEXT = 40_000
MAX_BLOCKS = 50
_EMOJI_NAME = re.compile(r"^[a-z0-9_+\-']+(::skin-tone-[2-6])?$")


class ApiError(Exception):
    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


@dataclass
class MethodContext:
    ws: Workspace
    #: hands an event to the delivery machinery (fire and forget)
    emit_event: Callable[[JSONDict], None]


Method = Callable[[MethodContext, Args], JSONDict]


# -- argument parsing -------------------------------------------------------------------
def _str(args: Args, key: str) -> str | None:
    value = args.get(key)
    if value is None or value == "":
        return None
    return str(value)


def _bool(args: Args, key: str) -> bool:
    return str(args.get(key, "")).lower() in ("1", "true")


def _json_list(args: Args, key: str, error: str) -> list[JSONDict] | None:
    """Clients send blocks either as a JSON array (AsyncWebClient) or a JSON string (forms)."""
    value = args.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ApiError(error) from None
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ApiError(error)
    return value


def _blocks(args: Args) -> list[JSONDict] | None:
    blocks = _json_list(args, "blocks", "invalid_blocks")
    if blocks is not None and (
        len(blocks) > MAX_BLOCKS or not all(isinstance(b.get("type"), str) for b in blocks)
    ):
        raise ApiError("invalid_blocks")
    return blocks


def _text(args: Args) -> str | None:
    text = _str(args, "text")
    return None if text is None else text[:MAX_TEXT]


def _channel(ctx: MethodContext, args: Args, key: str = "channel") -> Channel:
    ref = _str(args, key)
    channel = ctx.ws.resolve_channel(ref) if ref else None
    if channel is None:
        raise ApiError("channel_not_found")
    return channel


def _message(ctx: MethodContext, channel: Channel, ts: str | None) -> Message:
    msg = ctx.ws.get(channel.id, ts) if ts else None
    if msg is None:
        raise ApiError("message_not_found")
    return msg


def _writable(channel: Channel) -> None:
    if channel.is_archived:
        raise ApiError("is_archived")
    if not channel.bot_is_member:
        raise ApiError("not_in_channel")


# -- JSON views -------------------------------------------------------------------------
def user_json(ws: Workspace, user: User) -> JSONDict:
    profile: JSONDict = {
        "real_name": user.real_name,
        "display_name": user.name,
        "real_name_normalized": user.real_name,
        "display_name_normalized": user.name,
        "image_48": f"https://avatars.slack-edge.com/{user.id}_48.png",
        "team": ws.identity.team_id,
    }
    if user.email:
        profile["email"] = user.email
    out: JSONDict = {
        "id": user.id,
        "team_id": ws.identity.team_id,
        "name": user.name,
        "deleted": user.deleted,
        "real_name": user.real_name,
        "tz": user.tz,
        "tz_label": "Coordinated Universal Time",
        "tz_offset": 0,
        "profile": profile,
        "is_admin": False,
        "is_owner": False,
        "is_bot": user.is_bot,
        "is_app_user": False,
        "updated": 1700000000,
    }
    if user.id == ws.identity.bot_user_id:
        profile["bot_id"] = ws.identity.bot_id
        profile["api_app_id"] = ws.identity.app_id
    return out


def channel_json(ws: Workspace, ch: Channel) -> JSONDict:
    members = ch.members if ch.members is not None else set(ws.users)
    return {
        "id": ch.id,
        "name": ch.name,
        "is_channel": not ch.is_private and not ch.is_im,
        "is_group": ch.is_private,
        "is_im": ch.is_im,
        "is_mpim": False,
        "is_private": ch.is_private or ch.is_im,
        "created": ch.created,
        "creator": ch.creator,
        "is_archived": ch.is_archived,
        "is_general": ch.name == "general",
        "is_member": ch.bot_is_member,
        "is_shared": False,
        "is_ext_shared": False,
        "is_org_shared": False,
        "name_normalized": ch.name,
        "topic": {"value": ch.topic, "creator": ch.creator, "last_set": ch.created},
        "purpose": {"value": ch.purpose, "creator": ch.creator, "last_set": ch.created},
        "previous_names": [],
        "num_members": len(members),
    }


# -- methods ----------------------------------------------------------------------------
def auth_test(ctx: MethodContext, args: Args) -> JSONDict:
    ident = ctx.ws.identity
    return {
        "ok": True,
        "url": f"https://{ident.team_domain}.slack.com/",
        "team": ident.team_name,
        "user": ident.bot_name,
        "team_id": ident.team_id,
        "user_id": ident.bot_user_id,
        "bot_id": ident.bot_id,
        "is_enterprise_install": False,
    }


def chat_post_message(ctx: MethodContext, args: Args) -> JSONDict:
    channel = _channel(ctx, args)
    _writable(channel)
    text, blocks = _text(args), _blocks(args)
    attachments = _json_list(args, "attachments", "invalid_attachments")
    if not text and not blocks and not attachments:
        raise ApiError("no_text")
    thread_ts = _str(args, "thread_ts")
    if thread_ts:
        parent = ctx.ws.get(channel.id, thread_ts)
        if parent is None:
            # Slack's exact behaviour here is undocumented; failing loudly catches bot bugs.
            raise ApiError("thread_not_found")
        thread_ts = parent.thread_ts if parent.is_reply else parent.ts
    msg = ctx.ws.post(
        channel.id,
        user=ctx.ws.identity.bot_user_id,
        text=text or "",
        blocks=blocks,
        attachments=attachments,
        thread_ts=thread_ts,
        reply_broadcast=bool(thread_ts) and _bool(args, "reply_broadcast"),
        username=_str(args, "username"),
        metadata=args.get("metadata") if isinstance(args.get("metadata"), dict) else None,
    )
    return {"ok": True, "channel": channel.id, "ts": msg.ts, "message": ctx.ws.message_json(msg)}


def chat_update(ctx: MethodContext, args: Args) -> JSONDict:
    channel = _channel(ctx, args)
    msg = _message(ctx, channel, _str(args, "ts"))
    if msg.user != ctx.ws.identity.bot_user_id:
        raise ApiError("cant_update_message")
    text, blocks = _text(args), _blocks(args)
    attachments = _json_list(args, "attachments", "invalid_attachments")
    if text is None and blocks is None and attachments is None:
        raise ApiError("no_text")
    ctx.ws.edit(msg, text=text, blocks=blocks, attachments=attachments)
    return {
        "ok": True,
        "channel": channel.id,
        "ts": msg.ts,
        "text": msg.text,
        "message": ctx.ws.message_json(msg),
    }


def chat_post_ephemeral(ctx: MethodContext, args: Args) -> JSONDict:
    channel = _channel(ctx, args)
    user_id = _str(args, "user")
    if user_id is None or user_id not in ctx.ws.users or not channel.has_member(user_id):
        raise ApiError("user_not_in_channel")
    if channel.is_archived:
        raise ApiError("is_archived")
    text, blocks = _text(args), _blocks(args)
    attachments = _json_list(args, "attachments", "invalid_attachments")
    if not text and not blocks and not attachments:
        raise ApiError("no_text")
    msg = ctx.ws.post_ephemeral(
        channel.id,
        to=user_id,
        user=ctx.ws.identity.bot_user_id,
        text=text or "",
        blocks=blocks,
        attachments=attachments,
        thread_ts=_str(args, "thread_ts"),
    )
    return {"ok": True, "message_ts": msg.ts}


def chat_delete(ctx: MethodContext, args: Args) -> JSONDict:
    channel = _channel(ctx, args)
    msg = _message(ctx, channel, _str(args, "ts"))
    if msg.user != ctx.ws.identity.bot_user_id:
        raise ApiError("cant_delete_message")
    ctx.ws.delete(msg)
    return {"ok": True, "channel": channel.id, "ts": msg.ts}


def chat_get_permalink(ctx: MethodContext, args: Args) -> JSONDict:
    channel = _channel(ctx, args)
    msg = _message(ctx, channel, _str(args, "message_ts"))
    return {"ok": True, "channel": channel.id, "permalink": ctx.ws.permalink(msg)}


def _reaction_target(ctx: MethodContext, args: Args) -> Message:
    if not _str(args, "channel") or not _str(args, "timestamp"):
        raise ApiError("no_item_specified")
    channel = _channel(ctx, args)
    return _message(ctx, channel, _str(args, "timestamp"))


def _reaction_name(args: Args) -> str:
    name = _str(args, "name") or ""
    if not _EMOJI_NAME.match(name):
        raise ApiError("invalid_name")
    return name


def reactions_add(ctx: MethodContext, args: Args) -> JSONDict:
    msg = _reaction_target(ctx, args)
    name = _reaction_name(args)
    bot = ctx.ws.identity.bot_user_id
    if not ctx.ws.react(msg, bot, name):
        raise ApiError("already_reacted")
    # Real Slack emits this for the app's own reaction too; bolt then drops it as a self event.
    ctx.emit_event(
        payloads.reaction_event(
            "reaction_added", user=bot, name=name, msg=msg, event_ts=ctx.ws.next_ts()
        )
    )
    return {"ok": True}


def reactions_remove(ctx: MethodContext, args: Args) -> JSONDict:
    msg = _reaction_target(ctx, args)
    name = _reaction_name(args)
    bot = ctx.ws.identity.bot_user_id
    if not ctx.ws.unreact(msg, bot, name):
        raise ApiError("no_reaction")
    ctx.emit_event(
        payloads.reaction_event(
            "reaction_removed", user=bot, name=name, msg=msg, event_ts=ctx.ws.next_ts()
        )
    )
    return {"ok": True}


def reactions_get(ctx: MethodContext, args: Args) -> JSONDict:
    msg = _reaction_target(ctx, args)
    message = ctx.ws.message_json(msg)
    message["permalink"] = ctx.ws.permalink(msg)
    return {"ok": True, "type": "message", "channel": msg.channel, "message": message}


def users_info(ctx: MethodContext, args: Args) -> JSONDict:
    user = ctx.ws.users.get(_str(args, "user") or "")
    if user is None:
        raise ApiError("user_not_found")
    return {"ok": True, "user": user_json(ctx.ws, user)}


def users_lookup_by_email(ctx: MethodContext, args: Args) -> JSONDict:
    user = ctx.ws.user_by_email(_str(args, "email") or "")
    if user is None:
        raise ApiError("users_not_found")
    return {"ok": True, "user": user_json(ctx.ws, user)}


def conversations_info(ctx: MethodContext, args: Args) -> JSONDict:
    return {"ok": True, "channel": channel_json(ctx.ws, _channel(ctx, args))}


def conversations_history(ctx: MethodContext, args: Args) -> JSONDict:
    channel = _channel(ctx, args)
    limit = int(_str(args, "limit") or 100)
    newest_first = list(reversed(ctx.ws.messages(channel.id)))
    return {
        "ok": True,
        "messages": [ctx.ws.message_json(m) for m in newest_first[:limit]],
        "has_more": len(newest_first) > limit,
        "pin_count": 0,
        "response_metadata": {"next_cursor": ""},
    }


def conversations_replies(ctx: MethodContext, args: Args) -> JSONDict:
    channel = _channel(ctx, args)
    parent = ctx.ws.get(channel.id, _str(args, "ts") or "")
    if parent is None:
        raise ApiError("thread_not_found")
    root = parent.thread_ts if parent.is_reply and parent.thread_ts else parent.ts
    root_msg = ctx.ws.get(channel.id, root) or parent
    thread = [root_msg, *ctx.ws.thread(channel.id, root)]
    return {
        "ok": True,
        "messages": [ctx.ws.message_json(m) for m in thread],
        "has_more": False,
        "response_metadata": {"next_cursor": ""},
    }


def views_open(ctx: MethodContext, args: Args) -> JSONDict:
    try:
        view = ctx.ws.views.open_view(_str(args, "trigger_id"), args.get("view"))
    except ViewError as exc:
        extra = {"response_metadata": {"messages": [exc.detail]}} if exc.detail else {}
        raise ApiError(exc.error, **extra) from None
    ident = ctx.ws.identity
    return {"ok": True, "view": view.to_json(ident.team_id, ident.app_id, ident.bot_id, {})}


METHODS: dict[str, Method] = {
    "auth.test": auth_test,
    "chat.postMessage": chat_post_message,
    "chat.update": chat_update,
    "chat.postEphemeral": chat_post_ephemeral,
    "chat.delete": chat_delete,
    "chat.getPermalink": chat_get_permalink,
    "reactions.add": reactions_add,
    "reactions.remove": reactions_remove,
    "reactions.get": reactions_get,
    "users.info": users_info,
    "users.lookupByEmail": users_lookup_by_email,
    "conversations.info": conversations_info,
    "conversations.history": conversations_history,
    "conversations.replies": conversations_replies,
    "views.open": views_open,
}
