"""The Web API as an unmodified slack_sdk AsyncWebClient sees it."""

from __future__ import annotations

import json
import re
from typing import Any

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from bot.local.slackemu import SlackEmulator

from .conftest import TOKEN, make_emulator

TS = re.compile(r"^\d{10}\.\d{6}$")
BLOCKS: list[dict[str, Any]] = [
    {"type": "section", "text": {"type": "mrkdwn", "text": "*Release* `v1.4`"}},
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
    },
]


async def error_of(call: Any) -> str:
    with pytest.raises(SlackApiError) as info:
        await call
    return str(info.value.response["error"])


async def test_auth_test_matches_identity(client: AsyncWebClient) -> None:
    resp = await client.auth_test()
    assert resp["user_id"] == "U0BOT"
    assert resp["bot_id"] == "B0BOT"
    assert resp["team_id"] == "T0001"
    assert resp["url"].startswith("https://")
    assert "chat:write" in resp.headers["x-oauth-scopes"]


async def test_post_message_shape_and_increasing_ts(
    emu: SlackEmulator, client: AsyncWebClient
) -> None:
    first = await client.chat_postMessage(channel="C0RELEASES", text="one")
    second = await client.chat_postMessage(channel="#releases", text="fallback", blocks=BLOCKS)
    assert first["ok"] and first["channel"] == "C0RELEASES" and second["channel"] == "C0RELEASES"
    assert TS.match(first["ts"]) and TS.match(second["ts"])
    assert float(second["ts"]) > float(first["ts"])
    msg = second["message"]
    assert msg["user"] == "U0BOT" and msg["bot_id"] == "B0BOT" and msg["app_id"] == "A0APP"
    assert msg["blocks"] == BLOCKS and msg["text"] == "fallback" and msg["ts"] == second["ts"]
    assert msg["bot_profile"]["id"] == "B0BOT"
    stored = emu.messages("C0RELEASES")
    assert [m.ts for m in stored] == [first["ts"], second["ts"]]
    assert stored[1].blocks == BLOCKS


async def test_thread_reply(emu: SlackEmulator, client: AsyncWebClient) -> None:
    parent = await client.chat_postMessage(channel="C0RELEASES", text="parent")
    reply = await client.chat_postMessage(channel="C0RELEASES", text="r", thread_ts=parent["ts"])
    assert reply["message"]["thread_ts"] == parent["ts"]
    assert reply["message"]["parent_user_id"] == "U0BOT"
    assert [m.text for m in emu.thread("C0RELEASES", parent["ts"])] == ["r"]
    assert [m.text for m in emu.messages("C0RELEASES")] == ["parent"]
    replies = await client.conversations_replies(channel="C0RELEASES", ts=parent["ts"])
    assert [m["text"] for m in replies["messages"]] == ["parent", "r"]
    assert replies["messages"][0]["reply_count"] == 1


async def test_post_message_errors(client: AsyncWebClient) -> None:
    assert await error_of(client.chat_postMessage(channel="C0NOPE", text="x")) == (
        "channel_not_found"
    )
    # api_call bypasses slack_sdk's client-side "missing text" warning.
    empty = client.api_call("chat.postMessage", json={"channel": "C0RELEASES"})
    assert await error_of(empty) == "no_text"
    bad = client.chat_postMessage(channel="C0RELEASES", text="x", thread_ts="1.000001")
    assert await error_of(bad) == "thread_not_found"


async def test_update_keeps_blocks_and_marks_edited(
    emu: SlackEmulator, client: AsyncWebClient
) -> None:
    posted = await client.chat_postMessage(channel="C0RELEASES", text="v1", blocks=BLOCKS)
    resp = await client.chat_update(channel="C0RELEASES", ts=posted["ts"], text="v2")
    assert resp["ok"] and resp["ts"] == posted["ts"] and resp["text"] == "v2"
    assert resp["message"]["edited"]["user"] == "U0BOT"
    msg = emu.message("C0RELEASES", posted["ts"])
    assert msg is not None
    assert msg.text == "v2" and msg.blocks == BLOCKS and msg.edited == 1
    assert msg.history == [("v1", BLOCKS)]
    await client.chat_update(channel="C0RELEASES", ts=posted["ts"], text="v3", blocks=[])
    assert msg.blocks == [] and msg.edited == 2


async def test_update_errors(emu: SlackEmulator, client: AsyncWebClient) -> None:
    missing = client.chat_update(channel="C0RELEASES", ts="1700000000.000001", text="x")
    assert await error_of(missing) == "message_not_found"
    alice = emu.workspace.post("C0RELEASES", user="U0ALICE", text="mine")
    theirs = client.chat_update(channel="C0RELEASES", ts=alice.ts, text="hijack")
    assert await error_of(theirs) == "cant_update_message"


async def test_post_ephemeral(emu: SlackEmulator, client: AsyncWebClient) -> None:
    resp = await client.chat_postEphemeral(channel="C0RELEASES", user="U0ALICE", text="psst")
    assert TS.match(resp["message_ts"])
    assert [m.text for m in emu.ephemerals("U0ALICE")] == ["psst"]
    assert emu.ephemerals("U0BOB") == [] and emu.messages("C0RELEASES") == []
    nobody = client.chat_postEphemeral(channel="C0RELEASES", user="U0NOBODY", text="x")
    assert await error_of(nobody) == "user_not_in_channel"


async def test_permalink(client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel="C0RELEASES", text="x")
    resp = await client.chat_getPermalink(channel="C0RELEASES", message_ts=posted["ts"])
    assert resp["permalink"].endswith(f"/archives/C0RELEASES/p{posted['ts'].replace('.', '')}")
    bad = client.chat_getPermalink(channel="C0RELEASES", message_ts="1.000001")
    assert await error_of(bad) == "message_not_found"


async def test_reactions(emu: SlackEmulator, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel="C0RELEASES", text="x")
    assert (await client.reactions_add(channel="C0RELEASES", name="eyes", timestamp=posted["ts"]))[
        "ok"
    ]
    again = client.reactions_add(channel="C0RELEASES", name="eyes", timestamp=posted["ts"])
    assert await error_of(again) == "already_reacted"
    gone = client.reactions_add(channel="C0RELEASES", name="eyes", timestamp="1.000001")
    assert await error_of(gone) == "message_not_found"
    got = await client.reactions_get(channel="C0RELEASES", timestamp=posted["ts"])
    assert got["type"] == "message" and got["channel"] == "C0RELEASES"
    assert got["message"]["reactions"] == [{"name": "eyes", "users": ["U0BOT"], "count": 1}]
    assert "permalink" in got["message"]
    msg = emu.message("C0RELEASES", posted["ts"])
    assert msg is not None and msg.reactions == {"eyes": ["U0BOT"]}
    # reactions.add arrives as a POST with the args in the query string (slack-wire.md §5).
    call = emu.calls_to("reactions.add")[0]
    assert call.http_method == "POST" and call.args["name"] == "eyes"


async def test_users_and_conversations(client: AsyncWebClient) -> None:
    info = await client.users_info(user="U0ALICE")
    assert info["user"]["name"] == "alice"
    assert info["user"]["profile"]["email"] == "alice@example.com"
    assert info["user"]["real_name"] == "Alice Liddell"
    by_mail = await client.users_lookupByEmail(email="bob@example.com")
    assert by_mail["user"]["id"] == "U0BOB"
    assert await error_of(client.users_info(user="U0NOPE")) == "user_not_found"
    assert await error_of(client.users_lookupByEmail(email="x@y.z")) == "users_not_found"
    conv = await client.conversations_info(channel="C0RELEASES")
    assert conv["channel"]["name"] == "releases" and conv["channel"]["is_member"] is True
    assert await error_of(client.conversations_info(channel="C0NOPE")) == "channel_not_found"


async def test_auth_errors_and_unknown_method(emu: SlackEmulator) -> None:
    anonymous = AsyncWebClient(base_url=emu.api_url)
    assert await error_of(anonymous.auth_test()) == "not_authed"
    wrong = AsyncWebClient(token="xoxb-wrong", base_url=emu.api_url)
    assert await error_of(wrong.auth_test()) == "invalid_auth"
    right = AsyncWebClient(token=TOKEN, base_url=emu.api_url)
    assert await error_of(right.api_call("no.suchMethod")) == "unknown_method"


async def test_form_and_get_transport(emu: SlackEmulator) -> None:
    """The sync WebClient form-encodes everything, blocks as a JSON string."""
    async with aiohttp.ClientSession() as http:
        form = {"token": TOKEN, "channel": "C0RELEASES", "text": "f", "blocks": json.dumps(BLOCKS)}
        async with http.post(emu.api_url + "chat.postMessage", data=form) as resp:
            assert resp.status == 200
            assert resp.content_type == "application/json"
            body = await resp.json()
        assert body["ok"] and body["message"]["blocks"] == BLOCKS
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with http.get(
            emu.api_url + "users.info", params={"user": "U0BOB"}, headers=headers
        ) as resp:
            assert (await resp.json())["user"]["name"] == "bob"
        async with http.post(
            emu.api_url + "chat.postMessage",
            data="{not json",
            headers={**headers, "Content-Type": "application/json"},
        ) as resp:
            assert (await resp.json()) == {"ok": False, "error": "invalid_json"}


async def test_ratelimited_is_429_with_integer_retry_after(
    emu: SlackEmulator, client: AsyncWebClient
) -> None:
    emu.set_rate_limit("users.info", per_minute=2)
    await client.users_info(user="U0ALICE")
    await client.users_info(user="U0ALICE")
    with pytest.raises(SlackApiError) as info:
        await client.users_info(user="U0ALICE")
    resp = info.value.response
    assert resp.status_code == 429 and resp["error"] == "ratelimited"
    assert 1 <= int(resp.headers["Retry-After"]) <= 60
    assert [c.status for c in emu.calls_to("users.info")] == [200, 200, 429]


async def test_retry_handler_succeeds_after_forced_ratelimit(
    emu: SlackEmulator, client: AsyncWebClient
) -> None:
    posted = await client.chat_postMessage(channel="C0RELEASES", text="v1")
    emu.force_ratelimit("chat.update", seconds=1)
    client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=2))
    resp = await client.chat_update(channel="C0RELEASES", ts=posted["ts"], text="v2")
    assert resp["ok"]
    statuses = [c.status for c in emu.calls_to("chat.update")]
    assert statuses[0] == 429 and statuses[-1] == 200


async def test_strict_limits_use_slack_tiers() -> None:
    async with make_emulator(strict_rate_limits=True) as strict:
        assert strict.limiter.limit("chat.update") == 50
        assert strict.limiter.limit("users.info") == 100
    lenient = make_emulator()
    assert lenient.limiter.limit("chat.update") == 500
    custom = make_emulator(rate_limits={"chat.update": 7})
    assert custom.limiter.limit("chat.update") == 7
