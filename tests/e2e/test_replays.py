"""Captured, correctly signed Slack requests sent again: refused, nothing recorded.

A replay is the same bytes with the same signature inside Slack's 300 s window. Every kind
shipmate acts on is replayed here over real HTTP into the real `web`: slash commands,
events, button clicks and view submissions. Slack's own retry of a request `web` answered
with a non-2xx carries the same signature too, and must still be taken.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.adapters.keys import Keys
from bot.domain.render import APPROVE_ACTION, BLOCK_REASON_INPUT, BLOCK_REASON_VIEW
from bot.local.slackemu import payloads
from bot.runtime.web import Replays
from tests.conftest import RedisServer
from tests.e2e.harness import ALICE, BOB, CHANNEL, Team, rendered
from tests.e2e.test_hostile import FORM, _frozen, _reaction, event_body, settled, slash_body

#: every request here is a signed HTTP delivery (Socket Mode requests carry no signature)
pytestmark = pytest.mark.http_only


async def send(team: Team, body: bytes, headers: dict[str, str]) -> int:
    status, _ = await team.emu.send_raw(body, headers)
    return status


async def audit_length(team: Team) -> int:
    return int(await team.stack.redis.xlen(team.stack.store.keys.audit))


async def replayed(team: Team, body: bytes, headers: dict[str, str]) -> None:
    """Sends the captured request again: 401, and not one key or audit entry changes."""
    before, audited = await settled(team), await audit_length(team)
    assert await send(team, body, headers) == 401
    assert await settled(team) == before
    assert await audit_length(team) == audited


def button_body(team: Team, ts: str, user: str, action_id: str) -> bytes:
    message = team.emu.message(CHANNEL, ts)
    assert message is not None
    button = next(b for _, b in message.buttons() if b.get("action_id") == action_id)
    payload = payloads.block_actions_payload(
        team.emu.identity,
        user=team.emu.workspace.users[user],
        channel=team.emu.workspace.channels[CHANNEL],
        msg=message,
        message_json=team.emu.workspace.message_json(message),
        block_id=None,
        button=button,
        value=button.get("value"),
        action_ts=f"{time.time():.6f}",
        response_url="http://127.0.0.1:9/actions/none",
    )
    return payloads.form_payload(payload)


def block_reason_body(team: Team, ts: str, user: str, reason: str) -> bytes:
    ident = team.emu.identity
    values = {
        BLOCK_REASON_INPUT: {BLOCK_REASON_INPUT: {"type": "plain_text_input", "value": reason}}
    }
    view: dict[str, Any] = {
        "id": "V0REPLAY",
        "type": "modal",
        "team_id": ident.team_id,
        "app_id": ident.app_id,
        "callback_id": BLOCK_REASON_VIEW,
        "private_metadata": f"{CHANNEL}|{ts}|sandbox-1",
        "state": {"values": values},
    }
    payload = {
        "type": "view_submission",
        "team": {"id": ident.team_id, "bot.domain": ident.team_domain},
        "user": {"id": user, "team_id": ident.team_id},
        "api_app_id": ident.app_id,
        "token": payloads.VERIFICATION_TOKEN,
        "trigger_id": payloads.trigger_id(),
        "view": view,
        "is_enterprise_install": False,
        "enterprise": None,
    }
    return payloads.form_payload(payload)


async def test_a_replayed_lock_after_an_unlock_is_refused(team: Team) -> None:
    body = slash_body("sandbox%20freeze", command="/lock")
    captured = team.emu.signed_headers(body, FORM)
    assert await send(team, body, captured) == 200
    assert (await team.stack.store.env("sandbox")).lock is not None
    unlock = await team.emu.slash_command(ALICE, CHANNEL, "/unlock", "sandbox")
    assert "unlocked" in unlock.text, unlock
    await replayed(team, body, captured)
    assert (await team.stack.store.env("sandbox")).lock is None


async def test_a_replayed_release_is_refused(team: Team) -> None:
    team.commit(BOB, "Fix rounding")
    await team.collect()
    await team.batch_message(containing="Fix rounding", env="staging")
    body = slash_body("staging")
    captured = team.emu.signed_headers(body, FORM)
    assert await send(team, body, captured) == 200
    await team.wait_message(lambda m: "is live on `staging`" in rendered(m), what="staging live")
    await replayed(team, body, captured)
    env = await team.stack.store.env("staging")
    assert len(env.history) == 1


async def test_a_replayed_event_after_its_undo_is_refused(team: Team) -> None:
    ts = await _frozen(team)
    added = event_body(team, _reaction("reaction_added", ALICE, ts), "Ev0REPLAYADD")
    captured = team.emu.signed_headers(added)
    assert await send(team, added, captured) == 200
    removed = event_body(team, _reaction("reaction_removed", ALICE, ts), "Ev0REPLAYREM")
    assert await send(team, removed, team.emu.signed_headers(removed)) == 200
    await replayed(team, added, captured)
    assert (await team.release_state("sandbox-1")).approvals == frozenset()


async def test_a_replayed_button_click_is_refused(team: Team) -> None:
    ts = await _frozen(team)
    body = button_body(team, ts, BOB, APPROVE_ACTION)
    captured = team.emu.signed_headers(body, FORM)
    assert await send(team, body, captured) == 200
    assert (await team.release_state("sandbox-1")).approvals == {BOB}
    await replayed(team, body, captured)


async def test_a_replayed_block_form_is_refused(team: Team) -> None:
    ts = await _frozen(team)
    body = block_reason_body(team, ts, BOB, "tests are red")
    captured = team.emu.signed_headers(body, FORM)
    assert await send(team, body, captured) == 200
    assert (await team.release_state("sandbox-1")).state.value == "blocked"
    await replayed(team, body, captured)


async def test_an_event_answered_503_is_taken_when_slack_retries_it(
    team: Team, redis_server: RedisServer
) -> None:
    """Redis down: the event is refused for redelivery; the retry, with the very same
    signature (Slack re-signs within the same second), is recorded once Redis is back."""
    ts = await _frozen(team)
    body = event_body(team, _reaction("reaction_added", ALICE, ts), "Ev0AFTER503")
    captured = team.emu.signed_headers(body)
    redis_server.stop()
    try:
        assert await send(team, body, captured) == 503
    finally:
        redis_server.start()
    retry = captured | {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_error"}
    assert await send(team, body, retry) == 200
    assert (await team.release_state("sandbox-1")).approvals == {ALICE}
    assert await send(team, body, captured) == 401, "once taken, the same bytes are a replay"


async def test_a_claim_is_dropped_after_a_non_2xx_and_kept_after_a_2xx(redis: Redis) -> None:
    """The guard itself on a real redis-server: what a retry finds after each answer."""
    replays = Replays(redis, Keys("replay-test"))
    signature = "v0=" + "ab" * 32
    assert await replays.claim(signature) is None
    assert await replays.claim(signature) == "claimed", "a copy arriving meanwhile is refused"
    await replays.settle(signature, 500)
    assert await replays.claim(signature) is None, "Slack's retry of a failed answer is taken"
    await replays.settle(signature, 200)
    assert await replays.claim(signature) == "done"
    assert 300 < await redis.ttl(replays.key(signature)) <= 610
