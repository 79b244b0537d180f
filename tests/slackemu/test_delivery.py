"""What the emulator sends to the app, checked byte by byte against a bare receiver."""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import parse_qs

from aiohttp import web
from slack_sdk.signature import SignatureVerifier

from bot.local.slackemu import SlackEmulator

from .conftest import SECRET, Received, Receiver, make_emulator, populate, serve


def assert_signed(req: Received) -> None:
    assert SignatureVerifier(SECRET).is_valid(
        body=req.body,
        timestamp=req.headers["X-Slack-Request-Timestamp"],
        signature=req.headers["X-Slack-Signature"],
    )
    assert req.headers["X-Slack-Request-Timestamp"].isdigit()


async def test_slash_command_form_fields(emu: SlackEmulator, receiver: Receiver) -> None:
    async def plain(_: Received) -> web.Response:
        return web.Response(text="Got it")

    receiver.responder = plain
    res = await emu.slash_command(
        user="U0ALICE", channel="C0RELEASES", command="/release", text="a b"
    )
    req = receiver.requests[0]
    assert_signed(req)
    assert req.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert b"command=%2Frelease" in req.body
    fields = {k: v[0] for k, v in parse_qs(req.body.decode(), keep_blank_values=True).items()}
    assert fields["team_id"] == "T0001" and fields["team_domain"] == "shipmate-dev"
    assert fields["channel_id"] == "C0RELEASES" and fields["channel_name"] == "releases"
    assert fields["user_id"] == "U0ALICE" and fields["user_name"] == "alice"
    assert fields["command"] == "/release" and fields["text"] == "a b"
    assert fields["api_app_id"] == "A0APP" and fields["is_enterprise_install"] == "false"
    assert fields["response_url"].startswith(emu.base_url + "/commands/T0001/")
    assert fields["trigger_id"] and fields["token"]
    assert (res.status, res.text, res.response_type) == (200, "Got it", "ephemeral")
    assert [m.text for m in emu.ephemerals("U0ALICE")] == ["Got it"]
    assert emu.messages("C0RELEASES") == []


async def test_slash_command_empty_ack_shows_nothing(
    emu: SlackEmulator, receiver: Receiver
) -> None:
    res = await emu.slash_command(user="U0ALICE", channel="C0RELEASES", command="/release")
    assert (res.status, res.text, res.response_type, res.body) == (200, "", None, "")
    assert emu.ephemerals("U0ALICE") == []


async def test_event_envelope(emu: SlackEmulator, receiver: Receiver) -> None:
    msg = emu.workspace.post("C0RELEASES", user="U0BOT", text="release")
    status = await emu.add_reaction(
        user="U0BOB", channel="C0RELEASES", ts=msg.ts, name="white_check_mark"
    )
    assert status == 200
    req = receiver.requests[0]
    assert_signed(req)
    assert req.headers["Content-Type"] == "application/json"
    assert "X-Slack-Retry-Num" not in req.headers
    body = json.loads(req.body)
    assert body["type"] == "event_callback" and body["event_id"].startswith("Ev")
    assert body["team_id"] == "T0001" and body["api_app_id"] == "A0APP"
    assert isinstance(body["event_time"], int)
    assert body["authorizations"][0]["user_id"] == "U0BOT"
    assert body["event"] == {
        "type": "reaction_added",
        "user": "U0BOB",
        "reaction": "white_check_mark",
        "item": {"type": "message", "channel": "C0RELEASES", "ts": msg.ts},
        "item_user": "U0BOT",
        "event_ts": body["event"]["event_ts"],
    }
    assert msg.reactions == {"white_check_mark": ["U0BOB"]}


async def test_failed_event_is_retried_with_same_event_id(
    emu: SlackEmulator, receiver: Receiver
) -> None:
    async def fail_twice(req: Received) -> web.Response:
        return web.Response(status=500 if len(receiver.requests) <= 2 else 200)

    receiver.responder = fail_twice
    msg = emu.workspace.post("C0RELEASES", user="U0BOT", text="release")
    assert await emu.add_reaction("U0BOB", "C0RELEASES", msg.ts, "eyes") == 200
    ids = {json.loads(r.body)["event_id"] for r in receiver.requests}
    assert len(receiver.requests) == 3 and len(ids) == 1
    retry = [
        (r.headers.get("X-Slack-Retry-Num"), r.headers.get("X-Slack-Retry-Reason"))
        for r in receiver.requests
    ]
    assert retry == [(None, None), ("1", "http_error"), ("2", "http_error")]
    for r in receiver.requests:
        assert_signed(r)


async def test_gives_up_after_three_retries(emu: SlackEmulator, receiver: Receiver) -> None:
    async def always_fail(_: Received) -> web.Response:
        return web.Response(status=503)

    receiver.responder = always_fail
    status = await emu.send_event({"type": "app_mention", "user": "U0ALICE", "text": "hi"})
    assert status == 503
    assert [d.attempt for d in emu.deliveries] == [0, 1, 2, 3]


async def test_no_retry_header_is_honoured(emu: SlackEmulator, receiver: Receiver) -> None:
    async def refuse(_: Received) -> web.Response:
        return web.Response(status=500, headers={"X-Slack-No-Retry": "1"})

    receiver.responder = refuse
    assert await emu.send_event({"type": "app_mention", "user": "U0ALICE"}) == 500
    assert len(receiver.requests) == 1


async def test_slow_ack_is_a_timeout_and_retried() -> None:
    release = asyncio.Event()
    rcv = Receiver()

    async def slow_first(_: Received) -> web.Response:
        if len(rcv.requests) == 1:
            await release.wait()
        return web.Response(status=200)

    rcv.responder = slow_first
    async with make_emulator(ack_timeout=0.2) as emu:
        populate(emu)
        async with serve(rcv.app()) as url:
            emu.request_url = url
            try:
                assert await emu.send_event({"type": "app_mention", "user": "U0ALICE"}) == 200
            finally:
                release.set()
            assert rcv.requests[1].headers["X-Slack-Retry-Reason"] == "http_timeout"
            assert [d.failure for d in emu.deliveries] == ["http_timeout", None]
        res = await emu.slash_command("U0ALICE", "C0RELEASES", "/release")
        assert res.error == "dispatch_failed"  # the app is gone by now
        assert emu.ephemerals("U0ALICE")[-1].user == "USLACKBOT"


async def test_slash_command_timeout_is_operation_timeout() -> None:
    release = asyncio.Event()
    rcv = Receiver()

    async def hang(_: Received) -> web.Response:
        await release.wait()
        return web.Response(status=200)

    rcv.responder = hang
    async with make_emulator(ack_timeout=0.2) as emu, serve(rcv.app()) as url:
        populate(emu)
        emu.request_url = url
        try:
            res = await emu.slash_command("U0ALICE", "C0RELEASES", "/release", "x")
        finally:
            release.set()
    assert res.error == "operation_timeout"
    assert res.text == '/release failed with the error "operation_timeout"'


async def test_block_actions_payload(emu: SlackEmulator, receiver: Receiver) -> None:
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
                    "style": "primary",
                }
            ],
        }
    ]
    msg = emu.workspace.post("C0RELEASES", user="U0BOT", text="fallback", blocks=blocks)
    status = await emu.click_button("U0ALICE", "C0RELEASES", msg.ts, "approve", value="rel-1")
    assert status == 200
    req = receiver.requests[0]
    assert_signed(req)
    assert req.body.startswith(b"payload=")
    payload = json.loads(parse_qs(req.body.decode())["payload"][0])
    assert payload["type"] == "block_actions"
    assert payload["user"]["id"] == "U0ALICE" and payload["user"]["username"] == "alice"
    assert payload["container"] == {
        "type": "message",
        "message_ts": msg.ts,
        "channel_id": "C0RELEASES",
        "is_ephemeral": False,
    }
    assert payload["channel"] == {"id": "C0RELEASES", "name": "releases"}
    assert payload["message"]["blocks"] == blocks and payload["message"]["bot_id"] == "B0BOT"
    assert payload["response_url"].startswith(emu.base_url + "/actions/T0001/")
    action = payload["actions"][0]
    assert action["action_id"] == "approve" and action["block_id"] == "rel"
    assert action["value"] == "rel-1" and action["style"] == "primary"
    assert action["type"] == "button" and action["action_ts"]


async def test_forged_and_stale_requests(emu: SlackEmulator, receiver: Receiver) -> None:
    body = b'{"type":"event_callback"}'
    forged = emu.signed_headers(body, secret="not-the-secret")
    stale = emu.signed_headers(body, timestamp=int(time.time()) - 301)
    await emu.send_raw(body, forged)
    await emu.send_raw(body, stale)
    verifier = SignatureVerifier(SECRET)
    for req in receiver.requests:
        assert not verifier.is_valid(
            body=req.body,
            timestamp=req.headers["X-Slack-Request-Timestamp"],
            signature=req.headers["X-Slack-Signature"],
        )


async def test_url_verification(emu: SlackEmulator, receiver: Receiver) -> None:
    async def echo(req: Received) -> web.Response:
        return web.json_response({"challenge": json.loads(req.body)["challenge"]})

    receiver.responder = echo
    assert await emu.url_verification()
    assert_signed(receiver.requests[0])


async def test_bot_reaction_emits_event_in_background(
    emu: SlackEmulator, receiver: Receiver
) -> None:
    from slack_sdk.web.async_client import AsyncWebClient

    client = AsyncWebClient(token="xoxb-test", base_url=emu.api_url)
    posted = await client.chat_postMessage(channel="C0RELEASES", text="x")
    await client.reactions_add(channel="C0RELEASES", name="rocket", timestamp=posted["ts"])
    await emu.wait_for(lambda: receiver.requests)
    event = json.loads(receiver.requests[0].body)["event"]
    assert event["type"] == "reaction_added" and event["user"] == "U0BOT"


async def test_user_message_event(emu: SlackEmulator, receiver: Receiver) -> None:
    msg = await emu.post_as_user("U0ALICE", "releases", "ship it")
    event = json.loads(receiver.requests[0].body)["event"]
    assert event["type"] == "message" and event["channel_type"] == "channel"
    assert (event["user"], event["text"], event["ts"]) == ("U0ALICE", "ship it", msg.ts)
    assert emu.messages("C0RELEASES") == [msg]
