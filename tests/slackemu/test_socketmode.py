"""Socket Mode (§6): apps.connections.open, hello, envelopes, acks, redelivery, reconnects.

The wire format is checked with a bare aiohttp WebSocket client; the last tests run an
unmodified bolt AsyncSocketModeHandler against the emulator.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.local.slackemu import SlackEmulator

from .conftest import TOKEN, make_emulator, populate

APP_TOKEN = "xapp-1-A0APP-1-emulator"


@asynccontextmanager
async def socket_emulator(**kwargs: Any) -> AsyncIterator[SlackEmulator]:
    async with make_emulator(app_token=APP_TOKEN, **kwargs) as emu:
        populate(emu)
        yield emu


@asynccontextmanager
async def raw_socket(emu: SlackEmulator) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    """A connection made by hand: apps.connections.open, then the WebSocket."""
    client = AsyncWebClient(token=TOKEN, base_url=emu.api_url)
    url = (await client.apps_connections_open(app_token=APP_TOKEN))["url"]
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        await emu.wait_for(lambda: emu.socket_connections == 1, timeout=5)
        yield ws


async def receive(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    frame: dict[str, Any] = await asyncio.wait_for(ws.receive_json(), 5)
    return frame


async def test_apps_connections_open_needs_the_app_token_in_the_header() -> None:
    async with socket_emulator() as emu:
        url = (
            await AsyncWebClient(token=TOKEN, base_url=emu.api_url).apps_connections_open(
                app_token=APP_TOKEN
            )
        )["url"]
        parts = urlsplit(url)
        assert (parts.scheme, parts.netloc, parts.path) == (
            "ws",
            emu.base_url.removeprefix("http://"),
            "/link/",
        )
        query = parse_qs(parts.query)
        assert query["app_id"] == ["A0APP"] and query["ticket"][0]

        async def error_for(token: str) -> str:
            client = AsyncWebClient(token=TOKEN, base_url=emu.api_url)
            with pytest.raises(SlackApiError) as err:
                await client.apps_connections_open(app_token=token)
            return str(err.value.response["error"])

        assert await error_for(TOKEN) == "not_allowed_token_type"
        assert await error_for("xapp-1-A0APP-1-wrong") == "invalid_auth"

        async with aiohttp.ClientSession() as session:
            for data in (b"", f"token={APP_TOKEN}".encode()):  # none, or as a POST param
                async with session.post(
                    emu.api_url + "apps.connections.open",
                    data=data,
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                ) as resp:
                    assert (resp.status, await resp.json()) == (
                        200,
                        {"ok": False, "error": "not_authed"},
                    )
            # a ticket is good once
            async with session.ws_connect(url) as ws:
                assert (await receive(ws))["type"] == "hello"
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(url)
            assert refused.value.status == 401

        emu.force_ratelimit("apps.connections.open", 7)
        client = AsyncWebClient(token=TOKEN, base_url=emu.api_url)
        with pytest.raises(SlackApiError) as limited:
            await client.apps_connections_open(app_token=APP_TOKEN)
        assert limited.value.response.status_code == 429
        assert limited.value.response.headers["Retry-After"] == "7"
        assert limited.value.response["error"] == "ratelimited"


async def test_without_app_token_socket_mode_is_off(emu: SlackEmulator) -> None:
    client = AsyncWebClient(token=TOKEN, base_url=emu.api_url)
    with pytest.raises(SlackApiError) as err:
        await client.apps_connections_open(app_token=APP_TOKEN)
    assert err.value.response["error"] == "invalid_auth"
    assert not emu.socket_mode


async def test_hello_then_slash_command_envelope_and_ack_payload() -> None:
    async with socket_emulator() as emu, raw_socket(emu) as ws:
        hello = await receive(ws)
        assert hello == {
            "type": "hello",
            "num_connections": 1,
            "debug_info": hello["debug_info"],
            "connection_info": {"app_id": "A0APP"},
        }
        assert emu.socket_mode
        pressed = asyncio.create_task(
            emu.slash_command("U0ALICE", "C0RELEASES", "/release", "sandbox")
        )
        envelope = await receive(ws)
        assert set(envelope) == {"envelope_id", "type", "payload", "accepts_response_payload"}
        assert envelope["type"] == "slash_commands" and envelope["accepts_response_payload"]
        payload = envelope["payload"]
        assert payload["command"] == "/release" and payload["text"] == "sandbox"
        assert payload["user_id"] == "U0ALICE" and payload["channel_id"] == "C0RELEASES"
        assert payload["team_id"] == "T0001" and payload["api_app_id"] == "A0APP"
        assert payload["response_url"].startswith(emu.base_url + "/commands/T0001/")
        await ws.send_json(
            {
                "envelope_id": envelope["envelope_id"],
                "payload": {"text": "working", "response_type": "in_channel"},
            }
        )
        res = await pressed
        assert (res.status, res.response_type, res.text) == (200, "in_channel", "working")
        echo, posted = emu.messages("C0RELEASES")
        assert (echo.user, echo.text) == ("U0ALICE", "/release sandbox")
        assert posted.text == "working"
        last = emu.deliveries[-1]
        assert (last.transport, last.kind, last.status) == ("socket", "slash_command", 200)
        assert last.envelope_id == envelope["envelope_id"]

        # bolt turns ack("text") into {"text": …}: shown to the invoker only
        pressed = asyncio.create_task(emu.slash_command("U0ALICE", "C0RELEASES", "/release"))
        envelope = await receive(ws)
        await ws.send_json({"envelope_id": envelope["envelope_id"], "payload": {"text": "hi"}})
        res = await pressed
        assert (res.status, res.response_type, res.text) == (200, "ephemeral", "hi")
        assert [m.text for m in emu.ephemerals("U0ALICE")] == ["hi"]

        # an empty ack shows nothing
        pressed = asyncio.create_task(emu.slash_command("U0BOB", "C0RELEASES", "/release"))
        await ws.send_json({"envelope_id": (await receive(ws))["envelope_id"]})
        res = await pressed
        assert (res.status, res.text, res.response_type) == (200, "", None)
        assert emu.ephemerals("U0BOB") == []


async def test_unacked_slash_command_is_an_operation_timeout() -> None:
    async with socket_emulator(ack_timeout=0.2) as emu, raw_socket(emu) as ws:
        await receive(ws)  # hello
        res = await emu.slash_command("U0ALICE", "C0RELEASES", "/release", "x")
        assert (res.status, res.error) == (0, "operation_timeout")
        assert (await receive(ws))["type"] == "slash_commands"  # it was sent, just not acked
        assert emu.ephemerals("U0ALICE")[-1].user == "USLACKBOT"


async def test_event_envelope_is_redelivered_until_acked() -> None:
    async with socket_emulator(ack_timeout=0.2) as emu, raw_socket(emu) as ws:
        await receive(ws)  # hello
        msg = emu.workspace.post("C0RELEASES", user="U0BOT", text="release")
        reacted = asyncio.create_task(emu.add_reaction("U0BOB", "C0RELEASES", msg.ts, "eyes"))
        first = await receive(ws)
        assert first["type"] == "events_api" and first["accepts_response_payload"] is False
        assert (first["retry_attempt"], first["retry_reason"]) == (0, "")
        body = first["payload"]
        assert body["type"] == "event_callback" and body["event_id"].startswith("Ev")
        assert body["event"]["type"] == "reaction_added" and body["event"]["user"] == "U0BOB"
        second = await receive(ws)  # not acked within 0.2 s
        assert (second["retry_attempt"], second["retry_reason"]) == (1, "timeout")
        assert second["payload"] == body and second["envelope_id"] != first["envelope_id"]
        await ws.send_json({"envelope_id": second["envelope_id"]})
        assert await reacted == 200
        assert [(d.attempt, d.failure, d.status) for d in emu.deliveries] == [
            (0, "timeout", None),
            (1, None, 200),
        ]


async def test_event_never_acked_gives_up_after_three_retries() -> None:
    async with socket_emulator(ack_timeout=0.05) as emu, raw_socket(emu):
        assert await emu.send_event({"type": "app_mention", "user": "U0ALICE"}) == 0
        assert [d.attempt for d in emu.deliveries] == [0, 1, 2, 3]
        assert len({d.event_id for d in emu.deliveries}) == 1


async def test_button_click_is_an_interactive_envelope() -> None:
    blocks = [
        {
            "type": "actions",
            "block_id": "rel",
            "elements": [
                {
                    "type": "button",
                    "action_id": "approve",
                    "text": {"type": "plain_text", "text": "Approve"},
                    "value": "rel-1",
                }
            ],
        }
    ]
    async with socket_emulator() as emu, raw_socket(emu) as ws:
        await receive(ws)  # hello
        msg = emu.workspace.post("C0RELEASES", user="U0BOT", text="fallback", blocks=blocks)
        clicked = asyncio.create_task(emu.click_button("U0ALICE", "C0RELEASES", msg.ts, "approve"))
        envelope = await receive(ws)
        assert envelope["type"] == "interactive" and not envelope["accepts_response_payload"]
        payload = envelope["payload"]
        assert payload["type"] == "block_actions" and payload["actions"][0]["value"] == "rel-1"
        assert payload["container"]["message_ts"] == msg.ts
        await ws.send_json({"envelope_id": envelope["envelope_id"]})
        assert await clicked == 200


async def test_disconnect_sends_the_reason_and_closes() -> None:
    async with socket_emulator() as emu, raw_socket(emu) as ws:
        await receive(ws)  # hello
        closing = asyncio.create_task(emu.disconnect_socket("link_disabled", grace=0.05))
        frame = await receive(ws)
        assert frame == {
            "type": "disconnect",
            "reason": "link_disabled",
            "debug_info": frame["debug_info"],
        }
        closed = await asyncio.wait_for(ws.receive(), 5)
        assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        await closing
        assert emu.socket_connections == 0


async def test_no_connection_and_no_request_url_fails_the_delivery() -> None:
    async with socket_emulator(ack_timeout=0.05) as emu:
        assert emu.socket_mode  # Socket Mode on, nobody connected yet
        res = await emu.slash_command("U0ALICE", "C0RELEASES", "/release")
        assert (res.status, res.error) == (0, "dispatch_failed")


# -- an unmodified bolt app ----------------------------------------------------------
def bolt_app(emu: SlackEmulator) -> AsyncApp:
    return AsyncApp(
        client=AsyncWebClient(token=TOKEN, base_url=emu.api_url),
        signing_secret="unused-in-socket-mode",
        process_before_response=True,
    )


@asynccontextmanager
async def connected(app: AsyncApp) -> AsyncIterator[AsyncSocketModeHandler]:
    handler = AsyncSocketModeHandler(app, APP_TOKEN)
    await handler.connect_async()  # type: ignore[no-untyped-call]
    try:
        yield handler
    finally:
        await handler.close_async()  # type: ignore[no-untyped-call]


async def test_bolt_socket_mode_handler_works_unmodified() -> None:
    async with socket_emulator(ack_timeout=0.5) as emu:
        app = bolt_app(emu)
        seen: list[tuple[str, str | None, str | None]] = []

        @app.command("/release")
        async def release(ack: AsyncAck, command: dict[str, Any]) -> None:
            await ack(text=f"releasing {command['text']}", response_type="in_channel")

        @app.command("/help")
        async def help_(ack: AsyncAck) -> None:
            await ack("Try /release")

        @app.event("reaction_added")
        async def flaky(body: dict[str, Any], request: Any) -> None:
            num = request.headers.get("x-slack-retry-num", [None])[0]
            reason = request.headers.get("x-slack-retry-reason", [None])[0]
            seen.append((body["event_id"], num, reason))
            if len(seen) == 1:
                raise RuntimeError("transient")  # bolt answers 500: no ack is sent

        async with connected(app):
            await emu.wait_for(lambda: emu.socket_connections == 1, timeout=5)
            res = await emu.slash_command("U0ALICE", "C0RELEASES", "/release", "sandbox")
            assert (res.status, res.response_type, res.text) == (
                200,
                "in_channel",
                "releasing sandbox",
            )
            res = await emu.slash_command("U0ALICE", "C0RELEASES", "/help")
            assert (res.response_type, res.text) == ("ephemeral", "Try /release")

            msg = emu.workspace.post("C0RELEASES", user="U0BOT", text="x")
            assert await emu.add_reaction("U0BOB", "C0RELEASES", msg.ts, "eyes") == 200
            assert len({event_id for event_id, _, _ in seen}) == 1
            assert [s[1:] for s in seen] == [("0", ""), ("1", "timeout")]
            events = [d for d in emu.deliveries if d.kind == "event"]
            assert [(d.attempt, d.status) for d in events] == [(0, None), (1, 200)]
            # the bot's own reaction comes back as an event that bolt acks and drops
            await app.client.reactions_add(channel="C0RELEASES", timestamp=msg.ts, name="tada")
            await emu.wait_for(lambda: len([d for d in emu.deliveries if d.kind == "event"]) == 3)
            assert emu.deliveries[-1].status == 200 and len(seen) == 2

            await emu.disconnect_socket("refresh_requested")
            await emu.wait_for(
                lambda: emu.socket_connections_opened == 2 and emu.socket_connections == 1,
                timeout=10,
                what="bolt to reconnect",
            )
            assert len(emu.calls_to("apps.connections.open")) == 2
            res = await emu.slash_command("U0BOB", "C0RELEASES", "/release", "staging")
            assert (res.status, res.text) == (200, "releasing staging")
        assert emu.socket_connections_opened == 2


def test_envelope_payload_is_the_http_body_as_json() -> None:
    from bot.local.slackemu.socketmode import envelope_payload

    form = b"command=%2Frelease&text=a+b&token=t"
    assert envelope_payload("slash_command", form) == {
        "command": "/release",
        "text": "a b",
        "token": "t",
    }
    payload = {"type": "block_actions", "actions": []}
    from bot.local.slackemu.payloads import form_payload

    assert envelope_payload("block_actions", form_payload(payload)) == payload
    assert envelope_payload("event", json.dumps({"type": "event_callback"}).encode()) == {
        "type": "event_callback"
    }
