"""Bad input gets a clear answer and changes nothing."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from redis.exceptions import RedisError

from bot.local.slackemu import Message
from tests.conftest import RedisServer
from tests.e2e.harness import ALICE, BOB, CAROL, CHANNEL, MALLORY, ONCALL, Team, rendered


async def _frozen_batch(team: Team, *, by: str = ALICE) -> Message:
    team.commit(ALICE, "Add cart page")
    team.commit(BOB, "Fix rounding")
    await team.collect()
    batch = await team.batch_message(containing="Fix rounding")
    await team.emu.slash_command(by, CHANNEL, "/release", "sandbox")
    await team.wait_text(batch.ts, "waiting for approval")
    return batch


async def _keys(team: Team) -> list[str]:
    keys = await team.stack.redis.keys("shipmate:*release:*")
    return sorted(k.decode() if isinstance(k, bytes) else k for k in keys)


async def test_unknown_environment_is_explained(team: Team) -> None:
    """An unknown environment gets an ephemeral answer listing the real ones; nothing is created."""
    before = await _keys(team)
    answer = await team.emu.slash_command(ALICE, CHANNEL, "/release", "prod")
    assert answer.status == 200 and answer.response_type == "ephemeral"
    assert "Unknown environment `prod`" in answer.text
    assert "`sandbox`, `staging`" in answer.text
    assert await _keys(team) == before


async def test_shell_metacharacters_and_huge_text_are_refused(team: Team) -> None:
    """User text never becomes anything but a configured environment name."""
    for text in ("sandbox; rm -rf /", "$(id)", "`whoami`", "sandbox && true", "x" * 10_000):
        answer = await team.emu.slash_command(ALICE, CHANNEL, "/release", text)
        assert answer.status == 200 and answer.response_type == "ephemeral", text
        assert "Usage: `/release <environment>`" in answer.text, text
    assert await _keys(team) == []


async def test_help_says_what_to_type(team: Team) -> None:
    """`/release help` explains both commands and lists environments."""
    answer = await team.emu.slash_command(ALICE, CHANNEL, "/release", "help")
    assert "`/rollback <env>` puts the last good release back" in answer.text


async def test_empty_batch_is_refused(team: Team) -> None:
    """Releasing when the environment already runs the branch head says so."""
    await team.collect()
    await team.batch_message(containing="Initial shop", env="staging")
    await team.emu.slash_command(ALICE, CHANNEL, "/release", "staging")
    await team.wait_message(lambda m: "is live on `staging`" in rendered(m), what="staging live")
    answer = await team.emu.slash_command(ALICE, CHANNEL, "/release", "staging")
    assert "Nothing to release to *staging*" in answer.text


async def test_release_already_running_is_refused(team: Team) -> None:
    """A second /release while one awaits approval is refused and names the first."""
    await _frozen_batch(team)
    answer = await team.emu.slash_command(BOB, CHANNEL, "/release", "sandbox")
    assert answer.response_type == "ephemeral"
    assert "Release sandbox-1 to *sandbox* is already awaiting approval" in answer.text


async def test_rollback_needs_permission(team: Team) -> None:
    """/rollback by someone not listed under permissions.rollback is refused, visibly."""
    answer = await team.emu.slash_command(MALLORY, CHANNEL, "/rollback", "sandbox")
    assert answer.response_type == "ephemeral"
    assert "is not allowed to roll back *sandbox*" in answer.text
    answer = await team.emu.slash_command(ONCALL, CHANNEL, "/rollback", "sandbox")
    assert "Nothing to roll *sandbox* back to" in answer.text


async def test_uninvolved_reaction_is_ignored_and_explained(team: Team) -> None:
    """Someone with no commits in the release cannot approve it, and is told why."""
    batch = await _frozen_batch(team)
    status = await team.emu.add_reaction(MALLORY, CHANNEL, batch.ts, "white_check_mark")
    assert status == 200
    notice = await team.wait_ephemeral(MALLORY, "has no commits in release sandbox-1")
    assert notice.channel == CHANNEL
    release = await team.release_state("sandbox-1")
    assert release.approvals == frozenset()


async def test_removing_a_reaction_withdraws_the_approval(team: Team) -> None:
    """An approval taken back is no longer counted, and the message shows it."""
    batch = await _frozen_batch(team)
    await team.emu.add_reaction(ALICE, CHANNEL, batch.ts, "white_check_mark")
    assert (await team.release_state("sandbox-1")).approvals == {ALICE}
    await team.emu.remove_reaction(ALICE, CHANNEL, batch.ts, "white_check_mark")
    assert (await team.release_state("sandbox-1")).approvals == frozenset()
    await team.wait_text(batch.ts, ":hourglass_flowing_sand: @alice")


async def test_reaction_before_release_is_explained(team: Team) -> None:
    """Approving a batch nobody has released yet does nothing and says what to type."""
    team.commit(BOB, "Fix rounding")
    await team.collect()
    batch = await team.batch_message(containing="Fix rounding")
    await team.emu.add_reaction(BOB, CHANNEL, batch.ts, "white_check_mark")
    await team.wait_ephemeral(BOB, "Type `/release sandbox` first")


async def test_author_without_slack_user_gets_a_stand_in(team: Team) -> None:
    """An author who maps to nobody is named, and the requester can approve for them."""
    team.repo._git(
        "commit",
        "--allow-empty",
        "-q",
        "-m",
        "Vendor patch",
        env={"GIT_AUTHOR_NAME": "Dave Contractor", "GIT_AUTHOR_EMAIL": "dave@contractor.example"},
    )
    await team.collect()
    batch = await team.batch_message(containing="Vendor patch")
    await team.emu.slash_command(CAROL, CHANNEL, "/release", "sandbox")
    waiting = await team.wait_text(batch.ts, "waiting for approval")
    assert (
        "Dave Contractor (dave@contractor.example) has no Slack user; @carol can approve for them"
        in rendered(waiting)
    )
    await team.emu.add_reaction(ALICE, CHANNEL, batch.ts, "white_check_mark")
    await team.emu.add_reaction(CAROL, CHANNEL, batch.ts, "white_check_mark")
    await team.wait_text(batch.ts, "is live")


@pytest.mark.http_only  # Socket Mode requests are not signed
async def test_forged_and_stale_requests_are_rejected(team: Team) -> None:
    """A bad signature or an old timestamp gets 401 and records nothing."""
    body = b"command=%2Frelease&text=sandbox&user_id=U0ALICE&channel_id=C0RELEASES&team_id=T0001"
    forged = team.emu.signed_headers(
        body, "application/x-www-form-urlencoded", secret="not-the-secret"
    )
    assert (await team.emu.send_raw(body, forged))[0] == 401
    stale = team.emu.signed_headers(
        body, "application/x-www-form-urlencoded", timestamp=int(time.time()) - 301
    )
    assert (await team.emu.send_raw(body, stale))[0] == 401
    assert await _keys(team) == []


@pytest.mark.http_only  # raw signed requests
async def test_a_redelivered_event_has_one_effect(team: Team) -> None:
    """Slack retries carry the same event_id; the second delivery changes nothing."""
    batch = await _frozen_batch(team)
    envelope = {
        "token": "x",
        "team_id": "T0001",
        "api_app_id": "A0APP",
        "type": "event_callback",
        "event_id": "Ev0DUPLICATE",
        "event_time": int(time.time()),
        "event": {
            "type": "reaction_added",
            "user": ALICE,
            "reaction": "white_check_mark",
            "item": {"type": "message", "channel": CHANNEL, "ts": batch.ts},
            "event_ts": batch.ts,
        },
    }
    body = json.dumps(envelope).encode()
    assert (await team.emu.send_raw(body, team.emu.signed_headers(body)))[0] == 200
    first = await team.release_state("sandbox-1")
    retry = {
        **team.emu.signed_headers(body),
        "X-Slack-Retry-Num": "1",
        "X-Slack-Retry-Reason": "http_timeout",
    }
    assert (await team.emu.send_raw(body, retry))[0] == 200
    again = await team.release_state("sandbox-1")
    assert again.version == first.version and again.approvals == {ALICE}


@pytest.mark.http_only  # raw signed requests; see the Socket Mode version below
async def test_redis_down_gets_a_clear_answer_and_recovers(
    team: Team, redis_server: RedisServer
) -> None:
    """With Redis gone a command says so within 3 s, an event is refused for redelivery, and all recovers."""
    batch = await _frozen_batch(team)
    redis_server.stop()
    try:
        started = time.monotonic()
        answer = await team.emu.slash_command(ONCALL, CHANNEL, "/rollback", "sandbox")
        assert time.monotonic() - started < 3.0
        assert (
            "database (Redis) is unreachable" in answer.text
            and "Nothing was changed" in answer.text
        )
        body = json.dumps(
            {
                "type": "event_callback",
                "team_id": "T0001",
                "api_app_id": "A0APP",
                "event_id": "Ev0DOWN",
                "event_time": int(time.time()),
                "event": {
                    "type": "reaction_added",
                    "user": ALICE,
                    "reaction": "white_check_mark",
                    "item": {"type": "message", "channel": CHANNEL, "ts": batch.ts},
                    "event_ts": batch.ts,
                },
            }
        ).encode()
        status, _ = await team.emu.send_raw(body, team.emu.signed_headers(body))
        assert status >= 500, "a non-2xx makes Slack deliver the event again"
    finally:
        redis_server.start()
    status, _ = await team.emu.send_raw(body, team.emu.signed_headers(body))
    assert status == 200
    assert (await team.release_state("sandbox-1")).approvals == {ALICE}


@pytest.mark.socket_only
async def test_redis_down_in_socket_mode_leaves_the_event_unacked_until_recorded(
    team: Team, redis_server: RedisServer
) -> None:
    """With Redis gone a command still says so at once; a reaction is not acked (bolt sends
    no ack for a failed dispatch), so Slack redelivers it and the retry is recorded."""
    batch = await _frozen_batch(team)
    emu = team.emu
    redis_server.stop()
    try:
        answer = await emu.slash_command(ONCALL, CHANNEL, "/rollback", "sandbox")
        assert answer.status == 200 and "database (Redis) is unreachable" in answer.text
        reacting = asyncio.create_task(
            emu.add_reaction(ALICE, CHANNEL, batch.ts, "white_check_mark")
        )
        await emu.wait_for(
            lambda: any(d.kind == "event" and d.failure == "timeout" for d in emu.deliveries),
            timeout=10,
            what="the reaction envelope to go unacked",
        )
    finally:
        redis_server.start()
    assert await reacting == 200
    events = [d for d in emu.deliveries if d.kind == "event"]
    assert events[0].failure == "timeout" and events[-1].status == 200
    assert len({d.event_id for d in events}) == 1 and events[-1].attempt >= 1
    # a just-restarted redis-server may still drop a pooled connection or two
    await _redis_answers(team)
    assert (await team.release_state("sandbox-1")).approvals == {ALICE}


async def _redis_answers(team: Team) -> None:
    async with asyncio.timeout(10):
        while True:
            try:
                if await team.stack.redis.ping():
                    return
            except RedisError:
                pass
            await asyncio.sleep(0.05)  # polling a condition, bounded by the timeout above


async def test_rate_limited_updates_wait_and_end_right(team: Team) -> None:
    """While Slack answers 429 to chat.update, nothing is sent before Retry-After; the message ends right."""
    batch = await _frozen_batch(team)
    team.emu.force_ratelimit("chat.update", 2.0)
    await team.emu.add_reaction(ALICE, CHANNEL, batch.ts, "white_check_mark")
    await team.emu.add_reaction(BOB, CHANNEL, batch.ts, "white_check_mark")
    await team.wait_text(batch.ts, "Release sandbox-1 is live")
    updates = team.emu.calls_to("chat.update")
    limited = [c for c in updates if c.status == 429]
    assert limited, "the forced rate limit was hit"
    for call in limited:
        assert call.retry_after is not None
        later = [c for c in updates if c.at > call.at]
        if later:
            assert later[0].at - call.at >= call.retry_after - 0.05, (
                "a call came before Retry-After"
            )


async def test_restart_of_web_and_worker_mid_approval_keeps_everything(team: Team) -> None:
    """Approvals survive a restart of web and worker; the release goes on afterwards."""
    batch = await _frozen_batch(team)
    await team.emu.add_reaction(ALICE, CHANNEL, batch.ts, "white_check_mark")
    await team.stack.stop()
    await team.stack.start_web()
    team.stack.start_worker()
    assert (await team.release_state("sandbox-1")).approvals == {ALICE}
    await team.emu.add_reaction(BOB, CHANNEL, batch.ts, "white_check_mark")
    await team.wait_text(batch.ts, "is live")
