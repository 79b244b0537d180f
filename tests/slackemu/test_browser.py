"""The local workspace in a browser: Debian chromium, headless, driven by Playwright.

The page is served by the emulator on 127.0.0.1 and acts through the emulator's own
facade, so the bolt app on the other side receives what Slack would send. Without chromium
or playwright these tests skip, except in CI (CI=true) where they fail.
"""

from __future__ import annotations

import contextlib
import html
import importlib.util
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from redis.asyncio import Redis
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.local.demo import PEOPLE, DemoRepo
from bot.local.slackemu import SlackEmulator
from bot.local.slackemu.browser import (
    FAILURE_TEXT,
    button_html,
    confirm_json,
    modal_json,
    mrkdwn_html,
)
from bot.local.slackemu.views import View
from bot.local.stack import start_stack
from tests.conftest import IN_CI, free_port
from tests.e2e.harness import ALICE, BOB, CHANNEL, write_config

from .conftest import REASON_MODAL, SECRET, TOKEN, make_emulator, modal_app, populate, serve

if TYPE_CHECKING:
    from playwright.async_api import Page

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Playwright's own waits (condition-based) give up after this many milliseconds
WAIT_MS = 10_000


def _missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install -e '.[dev]')"
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (apt-get install chromium; make test installs it)"
    return None


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    missing = _missing()
    if missing is not None:
        if IN_CI:
            pytest.fail(missing)
        pytest.skip(missing)
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        context = await browser.new_context(viewport={"width": 1200, "height": 900})
        context.set_default_timeout(WAIT_MS)
        tab = await context.new_page()
        errors: list[str] = []
        tab.on("pageerror", lambda err: errors.append(str(err)))
        try:
            yield tab
        finally:
            await browser.close()
        assert errors == [], f"errors in the page: {errors}"


@pytest.fixture
async def emu() -> AsyncIterator[SlackEmulator]:
    emulator = make_emulator()
    emulator.enable_browser()
    async with emulator:
        populate(emulator)
        yield emulator


def new_app(emu: SlackEmulator) -> AsyncApp:
    return AsyncApp(
        client=AsyncWebClient(token=TOKEN, base_url=emu.api_url),
        signing_secret=SECRET,
        process_before_response=True,
    )


@contextlib.asynccontextmanager
async def running(emu: SlackEmulator, app: AsyncApp) -> AsyncIterator[AsyncWebClient]:
    async with serve(app.web_app(path="/slack/events")) as url:
        emu.request_url = url
        yield AsyncWebClient(token=TOKEN, base_url=emu.api_url)


def button(action_id: str, label: str, value: str, style: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": label},
        "value": value,
    }
    if style:
        out["style"] = style
    return out


RELEASE_BLOCKS: list[dict[str, Any]] = [
    {"type": "header", "text": {"type": "plain_text", "text": "Release rel-1 :rocket:"}},
    {
        "type": "section",
        "text": {
            "type": "mrkdwn",
            "text": (
                "*Release* _rel-1_ ~old~ `abc1234` by <@U0ALICE> in <#C0RELEASES> "
                "<https://example.com/pull/1|PR #1> :white_check_mark: :no_such_emoji: "
                "<!date^1700000000^{date_short}|Nov 14, 2023> 5 &lt; 6 &amp;&amp; 7 &gt; 6"
            ),
        },
        "fields": [{"type": "mrkdwn", "text": "*Env*\nsandbox"}],
        "accessory": button("details", "Details <b>", "rel-1"),
    },
    {
        "type": "context",
        "elements": [
            {"type": "mrkdwn", "text": "&lt;img src=x onerror=window.__xss=1&gt;"},
            {"type": "mrkdwn", "text": "<script>window.__xss=2</script>"},
            {"type": "image", "image_url": "https://example.com/a.png", "alt_text": "avatar"},
        ],
    },
    {"type": "divider"},
    {"type": "section", "text": {"type": "mrkdwn", "text": "> a quote\n```pre *not bold*```"}},
    {
        "type": "actions",
        "block_id": "rel_actions",
        "elements": [
            button("approve", "Approve", "rel-1", "primary"),
            button("reject", "Reject", "rel-1", "danger"),
        ],
    },
]


CANCEL_CONFIRM: dict[str, Any] = {
    "title": {"type": "plain_text", "text": "Cancel this release?"},
    "text": {"type": "mrkdwn", "text": "Release *rel-1* will not deploy. <img src=x>"},
    "confirm": {"type": "plain_text", "text": "Cancel release"},
    "deny": {"type": "plain_text", "text": "Keep it"},
    "style": "danger",
}


# -- without a browser: the HTML the page inserts --------------------------------------------
def test_mrkdwn_is_formatted_and_escaped() -> None:
    names = {"U1": "alice <admin>", "C1": "releases"}
    html = mrkdwn_html(
        "*b* _i_ ~s~ `c_d *e*` <@U1> <#C1> <https://x.test/?a=1&amp;b=2|a &lt;b&gt;> "
        "<javascript:alert(1)|x> &lt;script&gt; <!here> :+1: :nope: 10:30:00",
        names,
        me="U1",
    )
    assert "<b>b</b> <i>i</i> <s>s</s>" in html
    assert '<code class="mrk-code">c_d *e*</code>' in html
    assert '<span class="mention me" data-user="U1">@alice &lt;admin&gt;</span>' in html
    assert '<span class="channel-ref">#releases</span>' in html
    assert '<a href="https://x.test/?a=1&amp;b=2" target="_blank"' in html
    assert ">a &lt;b&gt;</a>" in html
    assert "&lt;javascript:alert(1)|x&gt;" in html and 'href="javascript' not in html
    assert "&lt;script&gt;" in html and "<script" not in html
    assert '<span class="mention broadcast">@here</span>' in html
    assert "👍" in html and ":nope:" in html and "10:30:00" in html


def test_quotes_and_preformatted_blocks() -> None:
    html = mrkdwn_html("&gt; quoted *b*\nplain\n```x *y*\n<@U1>```\nafter", {"U1": "bob"})
    assert html == (
        '<blockquote class="mrk-quote">quoted <b>b</b></blockquote>'
        '<span class="mrk">plain</span>'
        '<pre class="mrk-pre">x *y*\n<span class="mention" data-user="U1">@bob</span></pre>'
        '<span class="mrk">after</span>'
    )


def test_modal_is_described_with_plain_values_for_its_fields() -> None:
    spec: dict[str, Any] = {
        "type": "modal",
        "title": {"type": "plain_text", "text": "Ship it :rocket:"},
        "submit": {"type": "plain_text", "text": "Go"},
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": "*why* <@U1> <script>"}},
            {
                "type": "input",
                "block_id": "note",
                "optional": True,
                "label": {"type": "plain_text", "text": "Note <b>"},
                "hint": {"type": "plain_text", "text": "Shown in the thread"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": "note_text",
                    "placeholder": {"type": "plain_text", "text": "optional"},
                    "initial_value": "hi",
                },
            },
            {
                "type": "input",
                "block_id": "env",
                "label": {"type": "plain_text", "text": "Env"},
                "element": {"type": "static_select", "action_id": "pick", "options": []},
            },
        ],
    }
    view = View(id="V1", user="U1", spec=spec)
    shown = modal_json(view, {"U1": "bob"}, "U1", {"note": "Too short <x>"}, "http_timeout")
    assert (shown["id"], shown["title"], shown["submit"], shown["close"]) == (
        "V1",
        "Ship it 🚀",
        "Go",
        "Cancel",
    )
    section, note, select = shown["blocks"]
    assert section["type"] == "html"
    assert "<b>why</b>" in section["html"] and '<span class="mention me"' in section["html"]
    assert "&lt;script&gt;" in section["html"] and "<script" not in section["html"]
    assert note == {
        "type": "input",
        "block_id": "note",
        "action_id": "note_text",
        "label": "Note <b>",  # a plain value: the page sets it as text
        "hint": "Shown in the thread",
        "optional": True,
        "multiline": False,
        "max_length": None,
        "placeholder": "optional",
        "initial_value": "hi",
    }
    assert select["type"] == "html" and "static_select is not emulated" in select["html"]
    assert shown["errors"] == {"note": "Too short <x>"}
    assert shown["failure"] == f"{FAILURE_TEXT} (http_timeout)"
    closing = modal_json(View(id="V2", user="U1", spec={**spec, "submit": None}), {})
    assert (closing["submit"], closing["errors"], closing["failure"]) == (None, {}, None)


def test_a_buttons_confirm_reaches_the_page_escaped() -> None:
    shown = confirm_json(CANCEL_CONFIRM, {})
    assert shown == {
        "title": "Cancel this release?",
        "html": '<span class="mrk">Release <b>rel-1</b> will not deploy. &lt;img src=x&gt;</span>',
        "confirm": "Cancel release",
        "deny": "Keep it",
        "style": "danger",
    }
    bare = confirm_json({"title": {"type": "plain_text", "text": "Sure?"}}, {})
    assert bare is not None and (bare["confirm"], bare["deny"], bare["style"]) == (
        "Yes",
        "Cancel",
        "primary",
    )
    assert confirm_json(None, {}) is None

    rendered = button_html(
        {**button("cancel", "Cancel release", "rel-1", "danger"), "confirm": CANCEL_CONFIRM},
        "rel_actions",
        {},
    )
    assert 'class="bk-button danger"' in rendered and 'aria-haspopup="dialog"' in rendered
    attribute = rendered.split('data-confirm="', 1)[1].split('"', 1)[0]
    assert "<" not in attribute  # the JSON stays inside its attribute
    assert json.loads(html.unescape(attribute)) == shown
    assert "data-confirm" not in button_html(button("approve", "Approve", "rel-1"), None, {})


async def test_ui_view_answers_for_the_member_whose_modal_it_is(emu: SlackEmulator) -> None:
    """Without a browser: the modal in /ui/state, refusals, and errors kept until closed."""
    views = emu.workspace.views
    view = views.open_view(views.issue("1.2.bob", BOB), REASON_MODAL)
    emu.request_url = f"http://127.0.0.1:{free_port()}/slack/events"  # an app that is down

    async with aiohttp.ClientSession(emu.base_url) as http:

        async def state(user: str) -> Any:
            async with http.get("/ui/state", params={"user": user}) as resp:
                return (await resp.json())["modal"]

        async def act(**body: Any) -> tuple[int, Any]:
            async with http.post("/ui/view", json=body) as resp:
                return resp.status, await resp.json()

        assert await state(ALICE) is None
        modal = await state(BOB)
        assert (modal["id"], modal["title"], modal["errors"]) == (view.id, "Block release", {})
        assert [b["type"] for b in modal["blocks"]] == ["html", "input"]
        assert modal["blocks"][1]["multiline"] is True
        assert modal["blocks"][1]["max_length"] == 200

        assert (await act(user=ALICE, action="submit"))[0] == 409
        assert (await act(user=BOB, action="submit", view_id="V0GONE"))[0] == 409
        assert (await act(user=BOB, action="open"))[0] == 400
        assert (await act(user=BOB, action="submit", values={"text": 1}))[0] == 400

        status, empty = await act(user=BOB, action="submit", view_id=view.id, values={})
        assert (status, empty["closed"], empty["errors"]) == (
            200,
            False,
            {"reason": "Please complete this required field."},
        )
        assert (await state(BOB))["errors"] == empty["errors"]
        status, down = await act(user=BOB, action="submit", values={"text": "flaky"})
        assert (status, down["closed"], down["failure"]) == (
            200,
            False,
            f"{FAILURE_TEXT} (connection_failed)",
        )
        assert ((await state(BOB))["errors"], (await state(BOB))["failure"]) == (
            {},
            down["failure"],
        )

        status, closed = await act(user=BOB, action="close", view_id=view.id)
        assert (status, closed["closed"]) == (200, True)
        assert emu.open_view(BOB) is None and await state(BOB) is None
        assert [d.kind for d in emu.deliveries] == ["view_submission"]  # only the one it sent


# -- in chromium -----------------------------------------------------------------------------
async def test_block_kit_renders_as_slack_would(emu: SlackEmulator, page: Page) -> None:
    from playwright.async_api import expect

    async with running(emu, new_app(emu)) as client:
        posted = await client.chat_postMessage(
            channel=CHANNEL, text="Release rel-1", blocks=RELEASE_BLOCKS
        )
        await client.chat_postMessage(
            channel=CHANNEL, thread_ts=posted["ts"], text="deploy output: *ok*"
        )
        note = await client.chat_postMessage(channel=CHANNEL, text="first version")
        await client.chat_update(channel=CHANNEL, ts=note["ts"], text="second version")
        ask = [RELEASE_BLOCKS[1], RELEASE_BLOCKS[-1]]
        asked = await client.chat_postMessage(channel=CHANNEL, text="approve?", blocks=ask)
        await client.chat_update(channel=CHANNEL, ts=asked["ts"], text="approve?", blocks=ask)

        await page.goto(emu.base_url + "/?user=U0BOB")
        message = page.locator(f'.msg[data-ts="{posted["ts"]}"]')
        await expect(message.locator(".bk-header")).to_have_text("Release rel-1 🚀")
        text = message.locator(".bk-section .bk-text").first
        await expect(text.locator("b")).to_have_text("Release")
        await expect(text.locator("i")).to_have_text("rel-1")
        await expect(text.locator("s")).to_have_text("old")
        await expect(text.locator("code")).to_have_text("abc1234")
        await expect(text.locator(".mention")).to_have_text("@alice")
        await expect(text.locator(".channel-ref")).to_have_text("#releases")
        await expect(text.locator('a[href="https://example.com/pull/1"]')).to_have_text("PR #1")
        await expect(text).to_contain_text("✅ :no_such_emoji: Nov 14, 2023 5 < 6 && 7 > 6")
        await expect(message.locator(".bk-fields b")).to_have_text("Env")
        await expect(message.locator(".bk-accessory .bk-button")).to_have_text("Details <b>")
        await expect(message.locator(".bk-button.primary")).to_have_text("Approve")
        await expect(message.locator(".bk-button.danger")).to_have_text("Reject")
        await expect(message.locator(".bk-divider")).to_have_count(1)
        await expect(message.locator(".mrk-quote")).to_have_text("a quote")
        await expect(message.locator(".mrk-pre")).to_have_text("pre *not bold*")
        context = message.locator(".bk-context")
        await expect(context).to_contain_text("<img src=x onerror=window.__xss=1>")
        await expect(context).to_contain_text("<script>window.__xss=2</script>")
        await expect(context).to_contain_text("avatar")
        await expect(page.locator("#messages img, #messages script")).to_have_count(0)
        assert await page.evaluate("window.__xss") is None

        await expect(message.locator(".thread-toggle")).to_have_text("▾ 1 reply")
        reply = message.locator(".thread .msg.reply")
        await expect(reply.locator(".msg-body b")).to_have_text("ok")
        await expect(reply.locator(".author")).to_have_text("shipmate")
        await message.locator(".thread-toggle").click()
        await expect(message.locator(".thread .msg.reply")).to_have_count(0)

        edited = page.locator(f'.msg[data-ts="{note["ts"]}"]')
        await expect(edited.locator(".msg-body")).to_have_text("second version (edited)")
        # after the last text, never inside a button that ends the message
        marked = page.locator(f'.msg[data-ts="{asked["ts"]}"] .msg-body .edited')
        await expect(marked).to_have_count(1)
        await expect(page.locator(".bk-button .edited")).to_have_count(0)
        await expect(marked.locator("xpath=..")).to_have_text("Env\nsandbox (edited)")


async def test_slash_command_typed_in_the_box_reaches_the_app(
    emu: SlackEmulator, page: Page
) -> None:
    from playwright.async_api import expect

    app = new_app(emu)
    commands: list[dict[str, Any]] = []

    @app.command("/release")
    async def release(ack: AsyncAck, respond: AsyncRespond, command: dict[str, Any]) -> None:
        commands.append(command)
        await ack(f"Preparing *{command['text']}*…")
        await respond(
            response_type="in_channel",
            text="Release started",
            blocks=[
                {
                    "type": "section",
                    "text": {
                        "type": "mrkdwn",
                        "text": f"<@{command['user_id']}> started a release",
                    },
                },
                {"type": "actions", "elements": [button("approve", "Approve", "rel-1", "primary")]},
            ],
        )

    async with running(emu, app):
        await page.goto(emu.base_url + "/")
        await expect(page.locator("#acting-name")).to_have_text("alice")
        await page.select_option("#act-as", "U0BOB")
        await expect(page.locator("#acting-name")).to_have_text("bob")
        await page.fill("#composer-input", "/release sandbox")
        await page.press("#composer-input", "Enter")

        ephemeral = page.locator(".msg.ephemeral")
        await expect(ephemeral.locator(".ephemeral-note")).to_have_text("👁 Only visible to you")
        await expect(ephemeral.locator(".msg-body")).to_have_text("Preparing sandbox…")
        await expect(ephemeral.locator(".msg-body b")).to_have_text("sandbox")
        started = page.locator(".msg", has_text="started a release")
        await expect(started.locator(".mention.me")).to_have_text("@bob")
        await expect(started.locator(".bk-button.primary")).to_have_text("Approve")
        echo = page.locator(".msg", has_text="/release sandbox")
        await expect(echo.locator(".author")).to_have_text("bob")
        assert [(c["user_id"], c["command"], c["text"]) for c in commands] == [
            ("U0BOB", "/release", "sandbox")
        ]
        await expect(page.locator("#composer-input")).to_have_value("")

        await page.select_option("#act-as", "U0ALICE")
        await expect(page.locator("#acting-name")).to_have_text("alice")
        await expect(page.locator(".msg.ephemeral")).to_have_count(0)
        await expect(started.locator(".mention")).to_have_text("@bob")
        await expect(started.locator(".mention.me")).to_have_count(0)


async def test_reactions_are_added_and_removed_by_clicking(emu: SlackEmulator, page: Page) -> None:
    from playwright.async_api import expect

    app = new_app(emu)
    events: list[dict[str, Any]] = []

    @app.event("reaction_added")
    async def added(event: dict[str, Any]) -> None:
        events.append(event)

    @app.event("reaction_removed")
    async def removed(event: dict[str, Any]) -> None:
        events.append(event)

    async with running(emu, app) as client:
        posted = await client.chat_postMessage(channel=CHANNEL, text="React to approve")
        ts = posted["ts"]
        await page.goto(emu.base_url + "/?user=U0BOB")
        message = page.locator(f'.msg[data-ts="{ts}"]')
        await message.locator(".add-reaction").click()
        await expect(page.locator("#picker .pick")).to_have_count(6)
        await page.locator('#picker .pick[data-name="white_check_mark"]').click()

        await emu.wait_for(
            lambda: (m := emu.message(CHANNEL, ts)) and m.reactions == {"white_check_mark": [BOB]}
        )
        await emu.wait_for(lambda: len(events) == 1)
        assert events[0]["type"] == "reaction_added"
        assert (events[0]["user"], events[0]["reaction"], events[0]["item"]["ts"]) == (
            BOB,
            "white_check_mark",
            ts,
        )
        chip = message.locator('.reaction[data-name="white_check_mark"]')
        await expect(chip).to_have_class("reaction mine")
        await expect(chip).to_have_text("✅1")
        await expect(chip).to_have_attribute("title", "bob reacted with :white_check_mark:")

        await page.select_option("#act-as", "U0ALICE")
        await expect(chip).to_have_class("reaction")
        await chip.click()
        await expect(chip).to_have_text("✅2")
        await expect(chip).to_have_class("reaction mine")
        await chip.click()
        await expect(chip).to_have_text("✅1")
        await emu.wait_for(lambda: len(events) == 3)
        assert [(e["type"], e["user"]) for e in events] == [
            ("reaction_added", BOB),
            ("reaction_added", ALICE),
            ("reaction_removed", ALICE),
        ]
        final = emu.message(CHANNEL, ts)
        assert final is not None and final.reactions == {"white_check_mark": [BOB]}


async def test_clicking_a_button_delivers_block_actions(emu: SlackEmulator, page: Page) -> None:
    from playwright.async_api import expect

    app = new_app(emu)
    actions: list[dict[str, Any]] = []

    @app.action("approve")
    async def approve(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        actions.append(body)
        await respond(
            replace_original=True, text=f":white_check_mark: Approved by <@{body['user']['id']}>"
        )

    async with running(emu, app) as client:
        posted = await client.chat_postMessage(
            channel=CHANNEL, text="Release rel-1", blocks=RELEASE_BLOCKS
        )
        await page.goto(emu.base_url + "/?user=U0BOB")
        message = page.locator(f'.msg[data-ts="{posted["ts"]}"]')
        await message.locator(".bk-button.primary").click()

        await emu.wait_for(lambda: len(actions) == 1)
        action = actions[0]
        assert action["type"] == "block_actions"
        assert (action["user"]["id"], action["channel"]["id"]) == (BOB, CHANNEL)
        assert [(a["action_id"], a["value"], a["block_id"]) for a in action["actions"]] == [
            ("approve", "rel-1", "rel_actions")
        ]
        await expect(message.locator(".msg-body")).to_have_text("✅ Approved by @bob (edited)")
        await expect(message.locator(".bk-button")).to_have_count(0)


# -- shipmate itself, released from the browser ----------------------------------------------
async def test_a_shipmate_release_from_the_browser(
    tmp_path: Path, redis: Redis, page: Page
) -> None:
    """The real web + worker, a real redis-server and git: /release and approvals by clicking."""
    from playwright.async_api import expect

    repo = DemoRepo(tmp_path / "repo")
    repo.commit(ALICE, "Initial shop", {"app/health": "ok\n"})
    repo.commit(BOB, "Fix price rounding (#7)", {"app/price": "even\n"})
    config = write_config(tmp_path, port=free_port(), staging_port=free_port())
    emulator = SlackEmulator(signing_secret="test-signing-secret", bot_token="xoxb-test")
    emulator.enable_browser([*config.slack.approve_reactions, *config.slack.block_reactions])
    # undone in reverse, whatever fails on the way: web and worker (which share the fixture's
    # Redis client, closed by the fixture once they are stopped), the emulator, the services
    async with contextlib.AsyncExitStack() as cleanup:
        cleanup.callback(_stop_services, tmp_path)
        await emulator.start()
        cleanup.push_async_callback(emulator.stop)
        for user, (name, real, email) in PEOPLE.items():
            emulator.add_user(user, name=name, email=email, real_name=real)
        emulator.add_channel(CHANNEL, name="releases")
        stack = await start_stack(config, redis, emulator)
        cleanup.push_async_callback(stack.stop)
        await stack.trigger_collect()
        found = await emulator.wait_for(
            lambda: next((m for m in emulator.messages(CHANNEL) if m.user), None),
            what="the batch message",
        )
        assert found is not None
        await page.goto(emulator.base_url + f"/?user={ALICE}")
        batch = page.locator(f'.msg[data-ts="{found.ts}"]')
        await expect(batch).to_contain_text("Next release to sandbox")
        await expect(batch).to_contain_text("2 commits")
        await expect(batch.locator("a")).to_have_text("#7")

        await page.fill("#composer-input", "/release sandbox")
        await page.press("#composer-input", "Enter")
        await expect(batch).to_contain_text("Release sandbox-1 to sandbox is waiting for approval")
        await expect(batch.locator(".thread .msg.reply")).to_contain_text("please review")

        for user in (ALICE, BOB):
            await page.select_option("#act-as", user)
            await expect(batch.locator(".add-reaction").first).to_be_visible()
            await batch.locator(".reactions .add-reaction").first.click()
            await page.locator('#picker .pick[data-name="white_check_mark"]').click()
            await expect(batch.locator(".reaction.mine")).to_have_count(1)
        await expect(batch).to_contain_text("Release sandbox-1 is live on sandbox", timeout=20_000)
        await expect(batch.locator(".edited").first).to_be_visible()


def _stop_services(workdir: Path) -> None:
    for pidfile in workdir.glob("*.pid"):
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pidfile.read_text()), signal.SIGTERM)


# -- modals and confirmations ----------------------------------------------------------------
async def test_a_modal_opened_by_a_button_is_filled_in_and_submitted(
    emu: SlackEmulator, page: Page
) -> None:
    from playwright.async_api import expect

    submitted: list[tuple[str, str, str]] = []

    def submissions() -> int:
        return sum(d.kind == "view_submission" for d in emu.deliveries)

    async with running(emu, modal_app(emu, submitted)) as client:
        posted = await client.chat_postMessage(
            channel=CHANNEL, text="Release rel-1", blocks=RELEASE_BLOCKS
        )
        await page.goto(emu.base_url + "/?user=U0BOB")
        message = page.locator(f'.msg[data-ts="{posted["ts"]}"]')
        dialog = page.get_by_role("dialog", name="Block release")
        field = dialog.get_by_role("textbox", name="Why?")
        error = dialog.locator(".field-error")
        submit = dialog.get_by_role("button", name="Block", exact=True)

        await message.locator(".bk-button.danger").click()
        await expect(dialog).to_be_visible()
        await expect(dialog).to_have_attribute("aria-modal", "true")
        await expect(dialog.locator(".bk-text b")).to_have_text("rel-1")
        await expect(field).to_be_focused()
        await expect(dialog.locator(".field-count")).to_have_text("0/200")
        await expect(error).to_be_hidden()

        # it is Bob's: acting as Alice shows the channel, and Bob gets his half-typed text back
        await field.fill("half")
        await page.select_option("#act-as", "U0ALICE")
        await expect(dialog).to_be_hidden()
        await expect(page.locator("#acting-name")).to_have_text("alice")
        assert emu.open_view(ALICE) is None
        await page.select_option("#act-as", "U0BOB")
        await expect(dialog).to_be_visible()
        await expect(field).to_have_value("half")

        await field.fill("")
        await submit.click()
        await expect(error).to_have_text("Please complete this required field.")
        await expect(field).to_have_attribute("aria-invalid", "true")
        await expect(field).to_be_focused()
        assert submissions() == 0  # Slack's client never sends it

        await field.fill("because")
        await submit.click()
        await expect(error).to_have_text("Say a bit more.")
        await expect(dialog).to_be_visible()
        assert submissions() == 1 and submitted == []

        await field.fill("the migration is not reversible")
        await submit.click()
        await expect(dialog).to_be_hidden()
        assert submitted == [(BOB, "rel-1", "the migration is not reversible")]
        assert emu.open_view(BOB) is None

        # a new modal starts empty; Escape closes it and nothing reaches the app
        await message.locator(".bk-button.danger").click()
        await expect(dialog).to_be_visible()
        await expect(field).to_have_value("")
        await expect(error).to_be_hidden()
        await field.fill("never mind")
        await page.keyboard.press("Escape")
        await expect(dialog).to_be_hidden()
        await emu.wait_for(lambda: emu.open_view(BOB) is None, what="the modal to close")
        await expect(message.locator(".bk-button.danger")).to_be_focused()
        await expect(dialog).to_be_hidden()
        assert submissions() == 2 and len(submitted) == 1


async def test_a_button_with_confirm_asks_before_it_is_sent(emu: SlackEmulator, page: Page) -> None:
    from playwright.async_api import expect

    app = new_app(emu)
    clicks: list[str] = []

    @app.action("cancel")
    async def cancel(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        clicks.append(body["user"]["id"])
        await respond(replace_original=True, text=f"Release rel-1 cancelled by <@{clicks[-1]}>")

    blocks = [
        {
            "type": "actions",
            "block_id": "rel_actions",
            "elements": [
                button("approve", "Approve", "rel-1", "primary"),
                {**button("cancel", "Cancel release", "rel-1"), "confirm": CANCEL_CONFIRM},
            ],
        }
    ]
    async with running(emu, app) as client:
        posted = await client.chat_postMessage(channel=CHANNEL, text="rel-1", blocks=blocks)
        await page.goto(emu.base_url + "/?user=U0BOB")
        message = page.locator(f'.msg[data-ts="{posted["ts"]}"]')
        ask = page.get_by_role("alertdialog", name="Cancel this release?")
        cancel_button = message.get_by_role("button", name="Cancel release")
        deny = ask.get_by_role("button", name="Keep it")
        accept = ask.get_by_role("button", name="Cancel release")

        await cancel_button.click()
        await expect(ask).to_be_visible()
        await expect(ask).to_have_attribute("aria-modal", "true")
        await expect(ask.locator("#confirm-text b")).to_have_text("rel-1")
        await expect(ask.locator("#confirm-text")).to_have_text(
            "Release rel-1 will not deploy. <img src=x>"
        )
        await expect(accept).to_have_class("dialog-button danger")
        await expect(deny).to_be_focused()
        await deny.click()
        await expect(ask).to_be_hidden()
        await expect(cancel_button).to_be_focused()

        await cancel_button.click()
        await expect(ask).to_be_visible()
        await page.keyboard.press("Escape")
        await expect(ask).to_be_hidden()

        await cancel_button.click()
        await accept.click()
        await expect(ask).to_be_hidden()
        await expect(message.locator(".msg-body")).to_have_text(
            "Release rel-1 cancelled by @bob (edited)"
        )
        # had deny or Escape sent the click, it would have reached the app before this one
        assert clicks == [BOB]
        assert [d.kind for d in emu.deliveries] == ["block_actions"]
        await expect(page.locator("#messages img")).to_have_count(0)
