"""Bodies of what Slack sends to the app: slash commands, event envelopes, block_actions."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any
from urllib.parse import quote, urlencode

from bot.local.slackemu.models import Channel, JSONDict, Message, User
from bot.local.slackemu.workspace import Identity

#: The deprecated verification token Slack still puts in every body; bolt ignores it.
VERIFICATION_TOKEN = "emulatorVerificationTok"


def trigger_id() -> str:
    return f"{int(time.time())}.{secrets.randbelow(10**12)}.{secrets.token_hex(16)}"


def slash_command_body(
    ident: Identity, *, user: User, channel: Channel, command: str, text: str, response_url: str
) -> tuple[bytes, str]:
    """Form-encoded body (§2) and its trigger_id.

    bolt's parse_body treats any form body containing the substring "payload" as an
    interactivity body (§2 gotcha), so a command text like "payload v1" never reaches a
    listener. Real Slack has the same effect, so the emulator does not hide it.
    """
    trig = trigger_id()
    fields = {
        "token": VERIFICATION_TOKEN,
        "team_id": ident.team_id,
        "team_domain": ident.team_domain,
        "channel_id": channel.id,
        "channel_name": "directmessage" if channel.is_im else channel.name,
        "user_id": user.id,
        "user_name": user.name,
        "command": command,
        "text": text,
        "api_app_id": ident.app_id,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trig,
    }
    return urlencode(fields).encode(), trig


def event_envelope(ident: Identity, event: JSONDict, event_id: str) -> JSONDict:
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": ident.team_id,
        "enterprise_id": None,
        "api_app_id": ident.app_id,
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(time.time()),
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": ident.team_id,
                "user_id": ident.bot_user_id,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
        "event_context": "4-" + secrets.token_urlsafe(24),
        "context_team_id": ident.team_id,
        "context_enterprise_id": None,
    }


def new_event_id() -> str:
    return "Ev" + secrets.token_hex(5).upper()


def reaction_event(kind: str, *, user: str, name: str, msg: Message, event_ts: str) -> JSONDict:
    event: JSONDict = {
        "type": kind,
        "user": user,
        "reaction": name,
        "item": {"type": "message", "channel": msg.channel, "ts": msg.ts},
        "event_ts": event_ts,
    }
    # Slack omits item_user for messages without a user author (e.g. webhook posts).
    if msg.user:
        event["item_user"] = msg.user
    return event


def message_event(msg: Message, *, channel_type: str) -> JSONDict:
    event: JSONDict = {
        "type": "message",
        "channel": msg.channel,
        "user": msg.user,
        "text": msg.text,
        "ts": msg.ts,
        "event_ts": msg.ts,
        "channel_type": channel_type,
    }
    if msg.blocks:
        event["blocks"] = msg.blocks
    if msg.thread_ts:
        event["thread_ts"] = msg.thread_ts
    return event


def block_actions_payload(
    ident: Identity,
    *,
    user: User,
    channel: Channel,
    msg: Message,
    message_json: JSONDict,
    block_id: str | None,
    button: JSONDict,
    value: str | None,
    action_ts: str,
    response_url: str,
) -> JSONDict:
    action: JSONDict = {
        "type": "button",
        "action_id": button.get("action_id", ""),
        "block_id": block_id or "",
        "text": button.get("text", {"type": "plain_text", "text": ""}),
        "action_ts": action_ts,
    }
    if value is not None:
        action["value"] = value
    for optional in ("style", "url"):
        if optional in button:
            action[optional] = button[optional]
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": user.id, "username": user.name, "name": user.name, "team_id": ident.team_id},
        "api_app_id": ident.app_id,
        "token": VERIFICATION_TOKEN,
        "container": {
            "type": "message",
            "message_ts": msg.ts,
            "channel_id": channel.id,
            "is_ephemeral": msg.is_ephemeral,
        },
        "trigger_id": trigger_id(),
        "team": {"id": ident.team_id, "bot.domain": ident.team_domain},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel.id, "name": channel.name},
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [action],
    }
    if msg.is_reply:
        payload["container"]["thread_ts"] = msg.thread_ts
    # Slack does not echo an ephemeral message's content back to the app.
    if not msg.is_ephemeral:
        payload["message"] = message_json
    return payload


def form_payload(payload: JSONDict) -> bytes:
    return ("payload=" + quote(json.dumps(payload), safe="")).encode()
