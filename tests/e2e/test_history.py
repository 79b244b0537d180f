"""/history and the audit stream through real Slack requests, a real worker and real Redis."""

from __future__ import annotations

import re
import time

import pytest

from bot.domain.audit import SHIPMATE, Kind
from tests.conftest import RedisServer
from tests.e2e.harness import ALICE, BOB, CAROL, CHANNEL, Team, rendered


async def test_a_live_release_shows_in_history_and_the_audit_stream(team: Team) -> None:
    """A blocked, approved, deployed release: /history shows it to the asker alone, with who
    asked, who approved, how long approval and deploy took; the stream holds each decision."""
    emu = team.emu
    team.commit(ALICE, "Add cart page (#123)")
    head = team.commit(BOB, "Fix <price> rounding")
    await team.collect()
    batch = await team.batch_message(containing="Fix <price> rounding")

    empty = await emu.slash_command(CAROL, CHANNEL, "/history", "sandbox")
    assert empty.status == 200 and empty.response_type == "ephemeral"
    assert empty.text == "No releases to sandbox yet."
    assert "No releases to `sandbox` yet." in rendered(
        await team.wait_ephemeral(CAROL, "No releases to `sandbox` yet")
    )

    await emu.slash_command(ALICE, CHANNEL, "/release", "sandbox")
    await team.wait_text(batch.ts, "waiting for approval")
    await emu.add_reaction(BOB, CHANNEL, batch.ts, "no_entry")
    await emu.add_reaction(ALICE, CHANNEL, batch.ts, "white_check_mark")
    await emu.add_reaction(BOB, CHANNEL, batch.ts, "white_check_mark")
    await emu.remove_reaction(BOB, CHANNEL, batch.ts, "no_entry")
    await team.wait_text(batch.ts, "Release sandbox-1 is live")

    in_channel = len(emu.messages(CHANNEL))
    answer = await emu.slash_command(CAROL, CHANNEL, "/history", "sandbox")
    assert answer.status == 200 and answer.response_type == "ephemeral"
    assert answer.text == "Recent releases to sandbox: sandbox-1 live"
    assert len(emu.messages(CHANNEL)) == in_channel, "nobody else sees the answer"
    shown = await team.wait_ephemeral(CAROL, "Release history of `sandbox`")
    text = rendered(shown)
    assert f"Runs `{head[:7]}` (release sandbox-1)" in text
    assert re.search(rf"\*sandbox-1\* · \*live\* · up to `{head[:7]}` \(first release\)", text)
    assert "3 commits" in text
    assert re.search(r"Requested by @alice · approved by @alice, @bob after [0-9.]+s", text)
    assert re.search(r"Deployed and healthy in [0-9.]+s", text)
    assert "Fix <price> rounding — Bob Builder" in text, "escaped for Slack, shown as typed"
    assert "Add cart page (#123 (https://github.com/acme/shop/pull/123))" in text
    assert not emu.ephemerals(ALICE, CHANNEL) or all(
        "Release history" not in rendered(m) for m in emu.ephemerals(ALICE, CHANNEL)
    )

    entries = [e for e in await team.stack.store.audit_log() if e.env == "sandbox"]
    assert [(e.kind, e.actor) for e in entries] == [
        (Kind.REQUESTED, ALICE),
        (Kind.BLOCKED, BOB),
        (Kind.APPROVAL_GIVEN, ALICE),
        (Kind.APPROVAL_GIVEN, BOB),
        (Kind.BLOCK_LIFTED, BOB),
        (Kind.APPROVED, BOB),
        (Kind.DEPLOY_STARTED, SHIPMATE),
        (Kind.DEPLOYED, SHIPMATE),
        (Kind.LIVE, SHIPMATE),
    ]
    assert {e.release for e in entries} == {"sandbox-1"}
    assert entries[0].detail["commits"] == 3 and entries[0].detail["to"] == head
    assert entries[-1].detail["sha"] == head
    assert [e.at for e in entries] == sorted(e.at for e in entries)
    counts = await team.stack.redis.hgetall(team.stack.store.keys.state_counts)
    assert counts["sandbox|live"] == "1" and counts["sandbox|approved"] == "1"


async def test_history_needs_a_known_environment(team: Team) -> None:
    """/history with several environments asks which; help and a bad name say what to type."""
    which = await team.emu.slash_command(ALICE, CHANNEL, "/history", "")
    assert which.response_type == "ephemeral"
    assert "Which environment?" in which.text and "`/history <environment>`" in which.text
    unknown = await team.emu.slash_command(ALICE, CHANNEL, "/history", "prod")
    assert "Unknown environment `prod`" in unknown.text
    helped = await team.emu.slash_command(ALICE, CHANNEL, "/history", "help")
    assert "`/history <env>` lists its recent releases" in helped.text


@pytest.mark.http_only  # one transport is enough to show the answer; Redis is shared
async def test_history_with_redis_down_says_so_in_time(
    team: Team, redis_server: RedisServer
) -> None:
    """With Redis gone /history answers within 3 s that it cannot read, and works again after."""
    team.commit(ALICE, "Add cart page")
    await team.collect()
    await team.batch_message(containing="Add cart page")  # the worker is up and consuming
    redis_server.stop()
    try:
        started = time.monotonic()
        answer = await team.emu.slash_command(ALICE, CHANNEL, "/history", "sandbox")
        assert time.monotonic() - started < 3.0
        assert answer.response_type == "ephemeral"
        assert "could not read the release history" in answer.text
    finally:
        redis_server.start()
    await team.stack.redis.connection_pool.disconnect()
    again = await team.emu.slash_command(ALICE, CHANNEL, "/history", "sandbox")
    assert again.text == "No releases to sandbox yet."
