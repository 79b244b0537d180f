from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest_asyncio
from aiohttp import web
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.local.slackemu import SlackEmulator

SECRET = "s3cret"
TOKEN = "xoxb-test"


@asynccontextmanager
async def serve(app: web.Application, path: str = "/slack/events") -> AsyncIterator[str]:
    """Runs an aiohttp app on a free 127.0.0.1 port and yields the URL of ``path``."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}{path}"
    finally:
        await runner.cleanup()


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


Responder = Callable[[Received], Awaitable[web.Response]]


async def _ok(_: Received) -> web.Response:
    return web.Response(status=200)


@dataclass
class Receiver:
    """A stand-in app that records exactly what the emulator sent."""

    requests: list[Received] = field(default_factory=list)
    responder: Responder = _ok

    async def handle(self, request: web.Request) -> web.Response:
        rec = Received(dict(request.headers), await request.read())
        self.requests.append(rec)
        return await self.responder(rec)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/slack/events", self.handle)
        return app


def make_emulator(**kwargs: Any) -> SlackEmulator:
    return SlackEmulator(
        signing_secret=SECRET,
        bot_token=TOKEN,
        team_id="T0001",
        bot_user_id="U0BOT",
        bot_id="B0BOT",
        app_id="A0APP",
        **kwargs,
    )


def populate(emu: SlackEmulator) -> None:
    emu.add_user("U0ALICE", name="alice", email="alice@example.com", real_name="Alice Liddell")
    emu.add_user("U0BOB", name="bob", email="bob@example.com", real_name="Bob Builder")
    emu.add_channel("C0RELEASES", name="releases")


@pytest_asyncio.fixture
async def emu() -> AsyncIterator[SlackEmulator]:
    async with make_emulator() as emulator:
        populate(emulator)
        yield emulator


@pytest_asyncio.fixture
async def receiver(emu: SlackEmulator) -> AsyncIterator[Receiver]:
    rcv = Receiver()
    async with serve(rcv.app()) as url:
        emu.request_url = url
        yield rcv


@pytest_asyncio.fixture
async def client(emu: SlackEmulator) -> AsyncWebClient:
    return AsyncWebClient(token=TOKEN, base_url=emu.api_url)


#: the form an app opens from a message button: one required reason
REASON_MODAL: dict[str, Any] = {
    "type": "modal",
    "callback_id": "why",
    "private_metadata": "rel-1",
    "title": {"type": "plain_text", "text": "Block release"},
    "submit": {"type": "plain_text", "text": "Block"},
    "close": {"type": "plain_text", "text": "Cancel"},
    "blocks": [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": "Release *rel-1* waits while you block it."},
        },
        {
            "type": "input",
            "block_id": "reason",
            "label": {"type": "plain_text", "text": "Why?"},
            "element": {
                "type": "plain_text_input",
                "action_id": "text",
                "multiline": True,
                "max_length": 200,
            },
        },
    ],
}


def modal_app(emu: SlackEmulator, submitted: list[tuple[str, str, str]]) -> AsyncApp:
    """Reject opens the reason modal; "because" is refused as Slack apps refuse input."""
    app = AsyncApp(
        client=AsyncWebClient(token=TOKEN, base_url=emu.api_url),
        signing_secret=SECRET,
        process_before_response=True,
    )

    @app.action("reject")
    async def reject(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        await client.views_open(trigger_id=body["trigger_id"], view=REASON_MODAL)

    @app.view("why")
    async def why(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        text = view["state"]["values"]["reason"]["text"]["value"]
        if text == "because":
            await ack(response_action="errors", errors={"reason": "Say a bit more."})
            return
        submitted.append((body["user"]["id"], view["private_metadata"], text))
        await ack()

    return app
