"""Redis killed (kill -9) while approvals arrive: every approval `web` acknowledged is there
after the restart, because `web` acks only once the write is in Redis and Redis (AOF,
appendfsync always) answers only once it is on disk."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from functools import partial

import pytest

from bot.domain.models import Release, ReleaseState
from tests.chaos.conftest import CHANNEL, Rig, RigFactory, report

pytestmark = pytest.mark.chaos

AUTHORS = 30
#: after how many acknowledged approvals Redis is killed, one run each
KILL_AFTER = (1, 7, 14, 21, 28)
#: approvals in flight at once (Slack sends reactions from many people concurrently)
IN_FLIGHT = 4
REACTION = "white_check_mark"


async def _posted(rig: Rig, release_id: str) -> Release | None:
    release = await rig.store.release(release_id)
    return release if release is not None and release.message_ts is not None else None


async def _approve_again(rig: Rig, user: str, ts: str) -> bool:
    """What the person does when their reaction did not count: take it back and react again."""
    await rig.emulator.remove_reaction(user, CHANNEL, ts, REACTION)
    status = await rig.emulator.add_reaction(user, CHANNEL, ts, REACTION)
    return 200 <= status < 300


@dataclass
class Approvals:
    """One run: who was acknowledged, who was refused while Redis was down."""

    acked: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)
    killed: asyncio.Event = field(default_factory=asyncio.Event)


async def _approve_all(rig: Rig, approvers: list[str], ts: str, kill_after: int) -> Approvals:
    """Send every approval, IN_FLIGHT at a time; kill -9 Redis once ``kill_after`` were
    acknowledged (others still in flight) and restart it once some are being refused."""
    seen = Approvals()
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def approve(user: str) -> None:
        async with slots:
            status = await rig.emulator.add_reaction(user, CHANNEL, ts, REACTION)
        (seen.acked if 200 <= status < 300 else seen.refused).add(user)
        if len(seen.acked) >= kill_after and not seen.killed.is_set():
            seen.killed.set()
            rig.redis_server.kill()

    tasks = [asyncio.create_task(approve(user)) for user in approvers]
    await seen.killed.wait()
    await rig.until(
        lambda: len(seen.refused) >= 3 or all(t.done() for t in tasks),
        what="approvals to be refused while Redis is down",
    )
    await asyncio.to_thread(rig.redis_server.start)
    await asyncio.gather(*tasks)
    return seen


async def test_kill_9_redis_while_approvals_arrive(make_rig: RigFactory) -> None:
    rig = await make_rig(lock_ttl="1s", reclaim_idle="1s")
    await rig.start(workers=1)
    sent = acked_total = refused_total = recorded_anyway = lost_total = 0
    for run, kill_after in enumerate(KILL_AFTER):
        for i in range(AUTHORS):
            rig.commit(f"Run {run} change {i}", email=f"dev{i + 1:02d}@example.com")
        assert rig.repo is not None
        head = rig.repo.head()
        await rig.collected("sandbox", head)
        since = rig.log_size()
        release_id = await rig.release("sandbox")
        release = await rig.wait(partial(_posted, rig, release_id), what="the release message")
        assert release.state is ReleaseState.AWAITING_APPROVAL
        ts = release.message_ts
        assert ts is not None
        approvers = sorted(release.involved_users)
        assert len(approvers) >= AUTHORS

        seen = await _approve_all(rig, approvers, ts, kill_after)

        after = await rig.wait(partial(rig.store.release, release_id), what="Redis back")
        lost = seen.acked - after.approvals
        assert not lost, f"run {run}: acknowledged approvals lost after the restart: {lost}"
        sent += len(approvers)
        acked_total += len(seen.acked)
        refused_total += len(seen.refused)
        recorded_anyway += len(seen.refused & after.approvals)
        lost_total += len(lost)

        for user in sorted(seen.refused):
            await rig.wait(
                partial(_approve_again, rig, user, ts), what=f"{user}'s approval to be acked"
            )
        final = await rig.finished(release_id)
        assert final.state is ReleaseState.LIVE, (final.state, final.reason)
        assert final.approvals >= set(approvers)
        starts = [d for d in rig.deploys(since) if d.what == "start" and d.sha == head]
        assert len(starts) == 1, starts
    await rig.drained()
    report(
        f"kill -9 Redis while approvals arrive (AOF, appendfsync always): {len(KILL_AFTER)} runs, "
        f"{sent} approvals sent, {acked_total} acknowledged, {acked_total - lost_total} of them "
        f"there after the restart ({lost_total} lost); {refused_total} refused while Redis was down "
        f"({recorded_anyway} of those recorded anyway), all re-sent; {len(KILL_AFTER)} releases "
        f"live, each deployed once"
    )
