"""An unmodified bolt AsyncApp in HTTP mode against the emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.local.slackemu import SlackEmulator

from .conftest import SECRET, TOKEN, serve

APPROVAL_BLOCKS: list[dict[str, Any]] = [
    {"type": "section", "text": {"type": "mrkdwn", "text": "Release *rel-1* needs approval"}},
    {
        "type": "actions",
        "block_id": "rel_actions",
        "elements": [
            {
                "type": "button",
                "action_id": "approve",
                "text": {"type": "plain_text", "text": "Approve"},
                "value": "rel-1",
                "style": "primary",
            },
            {
                "type": "button",
                "action_id": "reject",
                "text": {"type": "plain_text", "text": "Reject"},
                "value": "rel-1",
                "style": "danger",
            },
        ],
    },
]


def new_app(emu: SlackEmulator, *, secret: str = SECRET, **kwargs: Any) -> AsyncApp:
    return AsyncApp(
        client=AsyncWebClient(token=TOKEN, base_url=emu.api_url), signing_secret=secret, **kwargs
    )


@asynccontextmanager
async def running(emu: SlackEmulator, app: AsyncApp) -> AsyncIterator[None]:
    async with serve(app.web_app(path="/slack/events")) as url:
        emu.request_url = url
        yield


async def test_slash_command_ephemeral_then_respond_in_channel(emu: SlackEmulator) -> None:
    app = new_app(emu)

    @app.command("/release")
    async def release(ack: AsyncAck, respond: AsyncRespond, command: dict[str, Any]) -> None:
        await ack(f"Preparing {command['text']}...")
        await respond(text=f"Release to *{command['text']}* started", response_type="in_channel")

    async with running(emu, app):
        res = await emu.slash_command(
            user="U0ALICE", channel="C0RELEASES", command="/release", text="sandbox"
        )
        assert (res.status, res.response_type, res.text) == (
            200,
            "ephemeral",
            "Preparing sandbox...",
        )
        assert [m.text for m in emu.ephemerals("U0ALICE")] == ["Preparing sandbox..."]
        await emu.wait_for(lambda: len(emu.messages("C0RELEASES")) == 2)
    echo, posted = emu.messages("C0RELEASES")
    assert (echo.user, echo.text) == ("U0ALICE", "/release sandbox")
    assert posted.user == "U0BOT" and posted.text == "Release to *sandbox* started"
    assert emu.response_url_posts[0].answer == "ok"


async def test_slash_command_in_channel_ack(emu: SlackEmulator) -> None:
    app = new_app(emu)

    @app.command("/release")
    async def release(ack: AsyncAck) -> None:
        await ack(text="Release started", response_type="in_channel")

    async with running(emu, app):
        res = await emu.slash_command("U0ALICE", "C0RELEASES", "/release", "prod")
    assert (res.response_type, res.text) == ("in_channel", "Release started")
    assert [(m.user, m.text) for m in emu.messages("C0RELEASES")] == [
        ("U0ALICE", "/release prod"),
        ("U0BOT", "Release started"),
    ]
    assert emu.ephemerals("U0ALICE") == []


async def test_reaction_event_reaches_listener(emu: SlackEmulator) -> None:
    app = new_app(emu)
    client = app.client

    @app.event("reaction_added")
    async def on_reaction(event: dict[str, Any]) -> None:
        item = event["item"]
        await client.chat_postMessage(
            channel=item["channel"],
            thread_ts=item["ts"],
            text=f"<@{event['user']}> reacted :{event['reaction']}:",
        )

    posted = await client.chat_postMessage(channel="C0RELEASES", text="Release rel-1")
    async with running(emu, app):
        status = await emu.add_reaction("U0BOB", "C0RELEASES", posted["ts"], "white_check_mark")
        assert status == 200
        replies = await emu.wait_for(lambda: emu.thread("C0RELEASES", posted["ts"]))
    assert replies[0].render(emu.workspace.names()) == "@bob reacted :white_check_mark:"


async def test_own_reaction_event_is_dropped_by_bolt(emu: SlackEmulator) -> None:
    app = new_app(emu)
    seen: list[str] = []

    @app.event("reaction_added")
    async def on_reaction(event: dict[str, Any]) -> None:
        seen.append(event["user"])

    posted = await app.client.chat_postMessage(channel="C0RELEASES", text="x")
    async with running(emu, app):
        await app.client.reactions_add(channel="C0RELEASES", name="eyes", timestamp=posted["ts"])
        delivered = await emu.wait_for(lambda: [d for d in emu.deliveries if d.kind == "event"])
        assert delivered[0].status == 200
        await emu.add_reaction("U0ALICE", "C0RELEASES", posted["ts"], "eyes")
        await emu.wait_for(lambda: seen)
    assert seen == ["U0ALICE"]


async def test_button_click_and_respond_replace_original(emu: SlackEmulator) -> None:
    app = new_app(emu)

    @app.action("approve")
    async def approve(ack: AsyncAck, respond: AsyncRespond, body: dict[str, Any]) -> None:
        await ack()
        assert body["message"]["blocks"][1]["block_id"] == "rel_actions"
        await respond(
            replace_original=True,
            text=f"Approved by <@{body['user']['id']}> ({body['actions'][0]['value']})",
        )

    posted = await app.client.chat_postMessage(
        channel="C0RELEASES", text="approve?", blocks=APPROVAL_BLOCKS
    )
    async with running(emu, app):
        status = await emu.click_button("U0ALICE", "C0RELEASES", posted["ts"], "approve")
        assert status == 200
        msg = emu.message("C0RELEASES", posted["ts"])
        assert msg is not None
        await emu.wait_for(lambda: msg.edited)
    assert msg.blocks == [] and msg.render(emu.workspace.names()) == "Approved by @alice (rel-1)"
    assert msg.history[0][1] == APPROVAL_BLOCKS


async def test_failing_listener_triggers_retries(emu: SlackEmulator) -> None:
    # process_before_response makes bolt answer 500 when the listener raises.
    app = new_app(emu, process_before_response=True)
    calls: list[tuple[str, str | None, str | None]] = []

    @app.event("reaction_added")
    async def flaky(body: dict[str, Any], request: Any) -> None:
        num = request.headers.get("x-slack-retry-num", [None])[0]
        reason = request.headers.get("x-slack-retry-reason", [None])[0]
        calls.append((body["event_id"], num, reason))
        if len(calls) < 3:
            raise RuntimeError("transient")

    msg = emu.workspace.post("C0RELEASES", user="U0BOT", text="x")
    async with running(emu, app):
        assert await emu.add_reaction("U0BOB", "C0RELEASES", msg.ts, "eyes") == 200
    assert len({c[0] for c in calls}) == 1
    assert [c[1:] for c in calls] == [(None, None), ("1", "http_error"), ("2", "http_error")]
    assert [d.status for d in emu.deliveries] == [500, 500, 200]


async def test_unhandled_event_is_retried_three_times(emu: SlackEmulator) -> None:
    app = new_app(emu)
    msg = emu.workspace.post("C0RELEASES", user="U0BOT", text="x")
    async with running(emu, app):
        assert await emu.add_reaction("U0BOB", "C0RELEASES", msg.ts, "eyes") == 404
    assert [d.attempt for d in emu.deliveries] == [0, 1, 2, 3]


async def test_wrong_signing_secret_is_rejected(emu: SlackEmulator) -> None:
    app = new_app(emu, secret="another-secret")

    @app.command("/release")
    async def release(ack: AsyncAck) -> None:
        await ack("never")

    async with running(emu, app):
        res = await emu.slash_command("U0ALICE", "C0RELEASES", "/release", "x")
        assert res.status == 401 and res.error == "dispatch_failed"
        body = b"token=x&command=%2Frelease"
        status, text = await emu.send_raw(
            body, emu.signed_headers(body, "application/x-www-form-urlencoded", secret="nope")
        )
    assert status == 401 and "invalid request" in text
