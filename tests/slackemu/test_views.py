"""Modals: an unmodified bolt app opens one with the click's trigger_id; the person submits.

Over signed HTTP and over Socket Mode, the same wire format: ``views.open`` with a
single-use trigger that expires after 3 s, ``view_submission`` with ``state.values``,
and the app's ack deciding whether the modal closes or shows errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.local.slackemu import SlackEmulator
from bot.local.slackemu.views import TRIGGER_LIFETIME

from .conftest import REASON_MODAL, TOKEN, make_emulator, modal_app, populate, serve
from .test_bolt import APPROVAL_BLOCKS

APP_TOKEN = "xapp-1-A0APP-1-emulator"


@asynccontextmanager
async def over(transport: str) -> AsyncIterator[tuple[SlackEmulator, list[tuple[str, str, str]]]]:
    extra = {"app_token": APP_TOKEN} if transport == "socket" else {}
    async with make_emulator(**extra) as emu:
        populate(emu)
        submitted: list[tuple[str, str, str]] = []
        app = modal_app(emu, submitted)
        if transport == "socket":
            handler = AsyncSocketModeHandler(app, APP_TOKEN)
            await handler.connect_async()  # type: ignore[no-untyped-call]
            try:
                await emu.wait_for(lambda: emu.socket_connections == 1, timeout=5)
                yield emu, submitted
            finally:
                await handler.close_async()  # type: ignore[no-untyped-call]
        else:
            async with serve(app.web_app(path="/slack/events")) as url:
                emu.request_url = url
                yield emu, submitted


@pytest.mark.parametrize("transport", ["http", "socket"])
async def test_button_opens_a_modal_and_submit_reaches_the_app(transport: str) -> None:
    async with over(transport) as (emu, submitted):
        client = AsyncWebClient(token=TOKEN, base_url=emu.api_url)
        posted = await client.chat_postMessage(
            channel="C0RELEASES", text="approve?", blocks=APPROVAL_BLOCKS
        )
        assert await emu.click_button("U0BOB", "C0RELEASES", posted["ts"], "reject") == 200
        view = await emu.wait_for(lambda: emu.open_view("U0BOB"))
        assert view is not None
        assert (view.title, view.submit_label, view.callback_id) == (
            "Block release",
            "Block",
            "why",
        )
        assert emu.open_view("U0ALICE") is None

        empty = await emu.submit_view("U0BOB", {})
        assert (empty.closed, empty.errors) == (
            False,
            {"reason": "Please complete this required field."},
        )
        assert submitted == []  # the client never sent it

        refused = await emu.submit_view("U0BOB", {"text": "because"})
        assert (refused.status, refused.closed, refused.errors) == (
            200,
            False,
            {"reason": "Say a bit more."},
        )
        assert emu.open_view("U0BOB") is view

        done = await emu.submit_view("U0BOB", {"text": "the migration is not reversible"})
        assert (done.status, done.closed, done.errors) == (200, True, {})
        assert submitted == [("U0BOB", "rel-1", "the migration is not reversible")]
        assert emu.open_view("U0BOB") is None
        submissions = [d for d in emu.deliveries if d.kind == "view_submission"]
        assert [d.transport for d in submissions] == [transport, transport]


async def test_a_trigger_opens_one_modal_once_within_three_seconds() -> None:
    now = [1000.0]
    async with make_emulator() as emu:
        populate(emu)
        emu.workspace.views._clock = lambda: now[0]
        client = AsyncWebClient(token=TOKEN, base_url=emu.api_url)

        async def open_with(trigger: str) -> str:
            try:
                await client.views_open(trigger_id=trigger, view=REASON_MODAL)
            except SlackApiError as err:
                return str(err.response["error"])
            return "ok"

        assert await open_with("123.456.nope") == "invalid_trigger_id"
        fresh = emu.workspace.views.issue("1.2.fresh", "U0ALICE")
        assert await open_with(fresh) == "ok"
        assert await open_with(fresh) == "exchanged_trigger_id"
        stale = emu.workspace.views.issue("1.2.stale", "U0ALICE")
        now[0] += TRIGGER_LIFETIME + 0.1
        assert await open_with(stale) == "expired_trigger_id"


async def test_views_open_checks_the_view_like_slack() -> None:
    async with make_emulator() as emu:
        populate(emu)
        client = AsyncWebClient(token=TOKEN, base_url=emu.api_url)
        for broken in (
            {**REASON_MODAL, "type": "home"},
            {**REASON_MODAL, "title": {"type": "plain_text", "text": "x" * 25}},
            {**REASON_MODAL, "submit": None},
            {**REASON_MODAL, "blocks": []},
        ):
            trigger = emu.workspace.views.issue(f"1.2.{len(str(broken))}", "U0ALICE")
            with pytest.raises(SlackApiError) as err:
                await client.views_open(trigger_id=trigger, view=broken)
            assert err.value.response["error"] == "invalid_arguments"
