"""50 people type the same command at once, through signed HTTP into `shipmate web`:
exactly one release (or one rollback) comes of it, and it is deployed once."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest

from bot.domain.codec import release_from_doc
from bot.domain.models import Release, ReleaseKind, ReleaseState
from tests.chaos.conftest import PEOPLE, RELEASE_ID, Rig, RigFactory, report

pytestmark = pytest.mark.chaos

BURST = 50
ROUNDS = 3


async def _all_releases(rig: Rig) -> dict[str, Release]:
    keys = [k async for k in rig.redis.scan_iter(match=rig.store.keys.release("*"))]
    docs = await rig.redis.mget(keys) if keys else []
    out = {}
    for raw in docs:
        if raw:
            release = release_from_doc(json.loads(raw))
            out[release.id] = release
    return out


def _kind(answer: str) -> str:
    if "deploying now" in answer:
        return "released"
    if "is rolling" in answer:
        return "rolling back"
    if "is already" in answer:
        return "refused"
    return f"other: {answer[:80]}"


async def _burst(rig: Rig, command: str, env: str) -> list[str]:
    users = [PEOPLE[i % len(PEOPLE)][0] for i in range(BURST)]
    return list(await asyncio.gather(*(rig.slash(command, env, user) for user in users)))


async def test_50_concurrent_release_and_rollback(make_rig: RigFactory) -> None:
    rig = await make_rig(lock_ttl="5s", reclaim_idle="5s")
    await rig.start(workers=2)
    await rig.first_live("staging")
    kinds: Counter[str] = Counter()
    releases = rollbacks = 0
    for round_ in range(ROUNDS):
        # /release x 50 while nothing runs: one freezes the batch, 49 are told it is taken
        good = (await rig.env_doc("staging")).live_sha
        sha = rig.commit(f"Concurrent change {round_}")
        await rig.collected("staging", sha)
        before = await _all_releases(rig)
        rig.close_gate()  # the deploy stays running until every answer is in
        since = rig.log_size()
        answers = await _burst(rig, "/release", "staging")
        kinds.update(_kind(a) for a in answers)
        started = [a for a in answers if _kind(a) == "released"]
        assert len(started) == 1, Counter(_kind(a) for a in answers)
        assert all(_kind(a) in ("released", "refused") for a in answers), answers
        found = RELEASE_ID.search(started[0])
        assert found is not None
        release_id = found.group(1)
        # in Redis, too: one batch left collecting, no other release appeared
        after = await _all_releases(rig)
        refusals = [a for a in answers if _kind(a) == "refused"]
        assert all(f"Release {release_id} to *staging* is already" in a for a in refusals), refusals
        moved = [
            r.id
            for r in after.values()
            if r.state is not ReleaseState.COLLECTING
            and (r.id not in before or before[r.id].state is ReleaseState.COLLECTING)
        ]
        assert moved == [release_id], moved
        rig.open_gate()
        assert (await rig.finished(release_id)).state is ReleaseState.LIVE
        starts = [d for d in rig.deploys(since) if d.what == "start"]
        assert [d.sha for d in starts] == [sha], starts
        releases += 1

        # /rollback x 50 while the rollback's deploy is held: one rollback, 49 refusals
        known = set(await _all_releases(rig))
        rig.close_gate()
        since = rig.log_size()
        answers = await _burst(rig, "/rollback", "staging")
        kinds.update(_kind(a) for a in answers)
        rolling = [a for a in answers if _kind(a) == "rolling back"]
        assert len(rolling) == 1, Counter(_kind(a) for a in answers)
        assert all(_kind(a) in ("rolling back", "refused") for a in answers), answers
        new = [r for r in (await _all_releases(rig)).values() if r.id not in known]
        made = [r for r in new if r.kind is ReleaseKind.ROLLBACK]
        assert len(made) == 1, [(r.id, r.kind, r.state) for r in new]
        refusals = [a for a in answers if _kind(a) == "refused"]
        assert all(f"Release {made[0].id} to *staging* is already" in a for a in refusals), refusals
        rig.open_gate()
        done = await rig.finished(made[0].id)
        assert done.state is ReleaseState.LIVE
        assert (await rig.env_doc("staging")).live_sha == good
        starts = [d for d in rig.deploys(since) if d.what == "start"]
        assert [d.sha for d in starts] == [good], starts
        rollbacks += 1
    await rig.drained()
    report(
        f"{BURST} concurrent /release, then {BURST} concurrent /rollback, signed HTTP into "
        f"`shipmate web`: {ROUNDS} rounds, {releases} releases and {rollbacks} rollbacks "
        f"(exactly 1 per burst), each deployed once; answers: "
        + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    )
