"""The channel as a person reads it."""

from __future__ import annotations

import re
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.local.slackemu import SlackEmulator
from bot.local.slackemu.blockkit import render_blocks, render_mrkdwn

NAMES = {"U0ALICE": "alice", "C0RELEASES": "releases"}


def test_mrkdwn_links_and_mentions() -> None:
    text = "by <@U0ALICE> in <#C0RELEASES> see <https://ci.example/1|build 1> <!here> a &lt;b&gt; &amp;"
    assert render_mrkdwn(text, NAMES) == (
        "by @alice in #releases see build 1 (https://ci.example/1) @here a <b> &"
    )
    assert render_mrkdwn("<https://x.example>", NAMES) == "https://x.example"
    assert render_mrkdwn("<@U0NOBODY>", NAMES) == "@U0NOBODY"


def test_blocks() -> None:
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": "Release rel-1"}},
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": "*Env:* sandbox"},
            "fields": [{"type": "mrkdwn", "text": "*By* <@U0ALICE>"}],
            "accessory": {
                "type": "button",
                "action_id": "log",
                "text": {"type": "plain_text", "text": "Log"},
            },
        },
        {"type": "divider"},
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": "<https://g.example/pr/7|#7>"}],
        },
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "action_id": "a",
                    "text": {"type": "plain_text", "text": "Approve"},
                },
                {
                    "type": "button",
                    "action_id": "r",
                    "text": {"type": "plain_text", "text": "Reject"},
                },
            ],
        },
    ]
    assert render_blocks(blocks, NAMES) == [
        "Release rel-1",
        "*Env:* sandbox",
        "*By* @alice [Log]",
        "---",
        "#7 (https://g.example/pr/7)",
        "[Approve] [Reject]",
    ]


async def test_transcript_shows_edits_threads_reactions_and_ephemerals(
    emu: SlackEmulator, client: AsyncWebClient
) -> None:
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": "Release *rel-1* for <@U0ALICE>"}},
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "action_id": "approve",
                    "text": {"type": "plain_text", "text": "Approve"},
                }
            ],
        },
    ]
    parent = await client.chat_postMessage(channel="C0RELEASES", text="fallback", blocks=blocks)
    await client.chat_postMessage(channel="C0RELEASES", text="deploying", thread_ts=parent["ts"])
    await client.chat_update(channel="C0RELEASES", ts=parent["ts"], text="fallback 2")
    emu.workspace.react(emu.messages("C0RELEASES")[0], "U0ALICE", "white_check_mark")
    emu.workspace.react(emu.messages("C0RELEASES")[0], "U0BOB", "white_check_mark")
    await client.chat_postEphemeral(channel="C0RELEASES", user="U0ALICE", text="only you")
    await client.chat_postMessage(channel="C0RELEASES", text="done")

    text = emu.transcript("C0RELEASES")
    assert re.sub(r"\[\d\d:\d\d:\d\d\] ", "", text).splitlines() == [
        "#releases (C0RELEASES)",
        "shipmate: Release *rel-1* for @alice",
        "    [Approve] (edited)",
        "    :white_check_mark: 2 (alice, bob)",
        "    ↳ shipmate: deploying",
        "shipmate: done",
    ]
    assert "only you" not in text
    with_mine = emu.transcript("C0RELEASES", include_ephemeral_for="U0ALICE")
    assert "shipmate (only visible to alice): only you" in with_mine


async def test_find_message_and_wait_for_timeout(
    emu: SlackEmulator, client: AsyncWebClient
) -> None:
    posted = await client.chat_postMessage(channel="C0RELEASES", text="Release <@U0ALICE>")
    found = emu.find_message("C0RELEASES", "Release @alice")
    assert found is not None and found.ts == posted["ts"]
    assert emu.find_message("releases", lambda m: m.user == "U0BOT") is found
    assert emu.find_message("C0RELEASES", "nope") is None
    with pytest.raises(TimeoutError) as info:
        await emu.wait_for(lambda: emu.find_message("C0RELEASES", "never"), timeout=0.05)
    report = str(info.value)
    assert "never" in report and "Release @alice" in report and "chat.postMessage" in report
