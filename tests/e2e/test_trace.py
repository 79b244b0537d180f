"""The runtime's trace events for a real deploy: what bench.rollback subscribes to."""

from __future__ import annotations

import pytest

from bot import trace
from tests.e2e.harness import ALICE, CHANNEL, Team


@pytest.mark.http_only
async def test_a_release_emits_its_milestones_in_order(team: Team) -> None:
    head = team.commit(ALICE, "Add cart page (#123)")
    await team.collect()
    await team.batch_message(containing="Add cart page", env="staging")
    with trace.Recording() as rec:
        answer = await team.emu.slash_command(ALICE, CHANNEL, "/release", "staging")
        assert "deploying now" in answer.text
        await team.emu.wait_for(lambda: rec.named("live") or None, timeout=15, what="live")
    names = [e.name for e in rec.events if e.fields.get("env", "staging") == "staging"]
    milestones = [
        "web.request.received",
        "web.request.answered",
        "deploy.lock.acquired",
        "deploy.claimed",
        "deploy.backend.start",
        "deploy.backend.end",
        "health.start",
        "health.end",
        "health.ok",
        "live",
    ]
    positions = [names.index(name) for name in milestones]
    assert positions == sorted(positions), names
    (live,) = rec.named("live")
    assert live.fields == {"release": "staging-1", "env": "staging", "sha": head}
    assert rec.named("deploy.backend.end")[0].fields["ok"] is True
    times = [e.at_ns for e in rec.events]
    assert times == sorted(times)
