"""One member cannot make the bot flood anyone: 2,000 refused reactions cost a handful of calls.

A member who is not part of a release (and whom the bot cannot reach: they left the channel)
reacts again and again on it. Each signed event goes through the emulator over real HTTP into
web, Redis and the worker. The same refusal to the same person is coalesced before it becomes
a job, notices per person are rate-limited, Slack's permanent ``user_not_in_channel`` is not
retried, and nothing ever reaches the channel.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.adapters.keys import JOBS_GROUP, Keys
from bot.adapters.slackapi import NOTICE_BURST
from bot.domain.jobs import notice_job
from bot.domain.models import ReleaseState
from bot.local.slackemu import payloads
from tests.e2e.harness import ALICE, CHANNEL, MALLORY, ONCALL, Team

pytestmark = pytest.mark.http_only

EVENTS = 2_000
#: events in flight at once: a busy member's client, not a benchmark
CONCURRENCY = 8


async def _drained(redis: Redis, keys: Keys) -> bool:
    """Every job in the stream was delivered to a worker and acknowledged."""
    stream: Any = await redis.xinfo_stream(keys.jobs)
    groups: Any = await redis.xinfo_groups(keys.jobs)
    group = next(g for g in groups if g["name"] == JOBS_GROUP)
    return bool(group["pending"] == 0 and group["last-delivered-id"] == stream["last-generated-id"])


async def _wait_drained(team: Team, *, within: float) -> float:
    started = time.monotonic()
    keys, redis = team.stack.store.keys, team.stack.redis
    while not await _drained(redis, keys):
        assert time.monotonic() - started < within, "the worker did not drain its jobs"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def test_two_thousand_refused_reactions_cause_a_handful_of_slack_calls(team: Team) -> None:
    emu = team.emu
    team.commit(ALICE, "Add cart page")
    await team.collect()
    batch = await team.batch_message(containing="Add cart page")
    answer = await emu.slash_command(ALICE, CHANNEL, "/release", "sandbox")
    assert "asked to release" in answer.text
    await team.wait_text(batch.ts, "waiting for approval")
    await _wait_drained(team, within=10)
    # Mallory leaves the channel: the bot cannot reach her with an ephemeral any more
    emu.workspace.channels[CHANNEL].members = set(emu.workspace.users) - {MALLORY}

    calls_before = len(emu.calls)
    jobs_before = await team.stack.redis.xlen(team.stack.store.keys.jobs)
    posts_before = len(emu.calls_to("chat.postMessage"))
    message = emu.message(CHANNEL, batch.ts)
    assert message is not None
    emojis = ("white_check_mark", "no_entry", "+1", "x")
    slots = asyncio.Semaphore(CONCURRENCY)

    async def react(n: int) -> int:
        event = payloads.reaction_event(
            "reaction_added",
            user=MALLORY,
            name=emojis[n % len(emojis)],
            msg=message,
            event_ts=emu.workspace.next_ts(),
        )
        async with slots:
            return await emu.send_event(event)

    started = time.monotonic()
    statuses = await asyncio.gather(*(react(n) for n in range(EVENTS)))
    sent_in = time.monotonic() - started
    assert Counter(statuses) == {200: EVENTS}
    drain = await _wait_drained(team, within=10)

    during = emu.calls[calls_before:]
    by_method = Counter(call.method for call in during)
    errors = Counter(call.error for call in during if call.error)
    posts = len(emu.calls_to("chat.postMessage")) - posts_before
    jobs = await team.stack.redis.xlen(team.stack.store.keys.jobs) - jobs_before
    dead = await team.stack.redis.xlen(team.stack.store.keys.dead_letters)
    print(
        f"\n[flood] {EVENTS} reaction events from one uninvolved member in {sent_in:.1f}s: "
        f"Slack calls by method {dict(by_method)} (errors {dict(errors)}), "
        f"channel posts {posts}, jobs queued {jobs}, dead-lettered {dead}, "
        f"worker drained {drain:.2f}s after the last event"
    )
    assert posts == 0
    assert dead == 0
    assert sum(by_method.values()) <= 5, by_method
    assert set(by_method) <= {"chat.postEphemeral"}, by_method
    assert jobs <= 5, jobs
    assert drain < 5.0
    release = await team.release_state("sandbox-1")
    assert release.approvals == frozenset() and release.blocks == frozenset()


async def test_notices_to_a_member_in_the_channel_are_coalesced(team: Team) -> None:
    """A member the bot can reach gets one explanation per kind of refusal, not one per click."""
    emu = team.emu
    team.commit(ALICE, "Add cart page")
    await team.collect()
    batch = await team.batch_message(containing="Add cart page")
    await emu.slash_command(ALICE, CHANNEL, "/release", "sandbox")
    await team.wait_text(batch.ts, "waiting for approval")
    message = emu.message(CHANNEL, batch.ts)
    assert message is not None
    for n in range(200):
        event = payloads.reaction_event(
            "reaction_added",
            user=MALLORY,
            name="white_check_mark" if n % 2 else "no_entry",
            msg=message,
            event_ts=emu.workspace.next_ts(),
        )
        assert await emu.send_event(event) == 200
    await team.wait_ephemeral(MALLORY, "has no commits in release sandbox-1")
    await _wait_drained(team, within=10)
    notices = emu.ephemerals(MALLORY)
    assert len(notices) == 1, [n.text for n in notices]


async def test_notices_to_one_person_are_rate_limited(team: Team) -> None:
    """Different notices (as the buttons queue them) still reach one person at most
    NOTICE_BURST times a window; the rest are dropped, acknowledged, never retried."""
    emu = team.emu
    await team.stack.store.enqueue(
        *(notice_job(CHANNEL, ONCALL, f"notice number {n}") for n in range(30))
    )
    await _wait_drained(team, within=10)
    assert len(emu.ephemerals(ONCALL)) == NOTICE_BURST
    assert len(emu.calls_to("chat.postEphemeral")) == NOTICE_BURST
    assert await team.stack.redis.xlen(team.stack.store.keys.dead_letters) == 0


async def _dead(team: Team, fields: dict[Any, Any]) -> bool:
    """Put a job in the stream as if it had been delivered six times, and let the worker's
    dead-letter check see it (the reclaim loop would, after its idle time)."""
    redis, keys = team.stack.redis, team.stack.store.keys
    entry = str(await redis.xadd(keys.jobs, dict(fields)))
    await redis.xclaim(keys.jobs, JOBS_GROUP, "gone", 0, [entry], retrycount=6, force=True)
    worker = team.stack.workers[0].worker
    return await worker._dead_lettered(entry, fields)


async def test_a_dead_deploy_is_announced_once_and_a_dead_notice_never(team: Team) -> None:
    emu = team.emu
    team.commit(ALICE, "Add cart page")
    await team.collect()
    batch = await team.batch_message(containing="Add cart page")
    await emu.slash_command(ALICE, CHANNEL, "/release", "sandbox")
    await team.wait_text(batch.ts, "waiting for approval")
    await _wait_drained(team, within=10)
    posts_before = len(emu.calls_to("chat.postMessage"))

    hostile = {"kind": "notice", "channel": CHANNEL, "user": "<!channel>", "text": "<!here>"}
    assert await _dead(team, hostile)
    for _ in range(2):  # two dead jobs of one release: the channel hears once
        assert await _dead(team, {"kind": "deploy", "release": "sandbox-1", "env": "sandbox"})

    said = await team.wait_message(
        lambda m: "gave up deploying release sandbox-1" in m.text, what="the channel to be told"
    )
    await _wait_drained(team, within=10)
    posts = emu.calls_to("chat.postMessage")[posts_before:]
    assert [p.args.get("text") for p in posts if not p.args.get("thread_ts")] == [said.text]
    assert "<!" not in said.text and "notice" not in said.text
    assert (await team.release_state("sandbox-1")).state is ReleaseState.FAILED
