"""The whole loop through real HTTP, real Redis and real git: what a team sees in Slack."""

from __future__ import annotations

import aiohttp
import pytest

from bot.domain.models import ReleaseKind, ReleaseState
from tests.e2e.harness import ALICE, BOB, CAROL, CHANNEL, ONCALL, Team, rendered


async def _healthz(port: str) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/healthz") as response,
    ):
        return await response.text()


async def test_collect_release_approve_deploy_rollback(team: Team) -> None:
    """Commits become a batch, /release asks their authors, approvals deploy it, /rollback undoes."""
    emu = team.emu
    port = team.config.environments["sandbox"].backend.env["DEMO_PORT"]
    team.commit(ALICE, "Add cart page (#123)")
    team.commit(BOB, "Fix price rounding\n\nCo-authored-by: Carol Danvers <carol@example.com>")
    first_head = team.commit(CAROL, "Explain checkout")
    await team.collect()

    batch = await team.batch_message(containing="Explain checkout")
    text = rendered(batch)
    assert "Add cart page (#123 (https://github.com/acme/shop/pull/123))" in text
    assert "Fix price rounding — Bob Builder, Carol Danvers" in text

    answer = await emu.slash_command(ALICE, CHANNEL, "/release", "sandbox")
    assert answer.status == 200 and answer.response_type == "in_channel"
    assert "asked to release 4 commits to *sandbox*" in answer.text
    await team.wait_text(batch.ts, "waiting for approval")
    thread = await emu.wait_for(
        lambda: team.thread_text(batch.ts), timeout=10, what="the approval request"
    )
    assert "@alice, @bob, @carol: please review release sandbox-1" in thread

    await emu.add_reaction(BOB, CHANNEL, batch.ts, "no_entry")
    await team.wait_text(batch.ts, "is blocked* by @bob")
    await emu.add_reaction(ALICE, CHANNEL, batch.ts, "white_check_mark")
    await emu.add_reaction(CAROL, CHANNEL, batch.ts, "white_check_mark")
    await emu.add_reaction(BOB, CHANNEL, batch.ts, "white_check_mark")
    # each reaction was acked only after it was recorded, so the state is settled now
    blocked = await team.release_state("sandbox-1")
    assert blocked.state is ReleaseState.BLOCKED
    assert blocked.approvals == {ALICE, BOB, CAROL} and blocked.blocks == {BOB}
    await emu.remove_reaction(BOB, CHANNEL, batch.ts, "no_entry")

    live = await team.wait_text(batch.ts, "Release sandbox-1 is live on `sandbox`")
    assert ":white_check_mark: deploy" in rendered(
        live
    ) and ":white_check_mark: health" in rendered(live)
    assert (await _healthz(port)).startswith(f"ok {first_head[:7]}")
    assert live.edited, "the release message is edited in place, not re-posted"

    team.commit(BOB, "Speed up search (#124)")
    second_head = team.commit(BOB, "Cache product images")
    await team.collect()
    second = await team.batch_message(containing="Cache product images")
    assert second.ts != batch.ts and "2 commits" in rendered(second)
    await emu.slash_command(BOB, CHANNEL, "/release", "sandbox")
    await team.wait_text(second.ts, "waiting for approval")
    await emu.add_reaction(BOB, CHANNEL, second.ts, "+1")
    await team.wait_text(second.ts, "Release sandbox-2 is live")
    assert (await _healthz(port)).startswith(f"ok {second_head[:7]}")

    answer = await emu.slash_command(ONCALL, CHANNEL, "/rollback", "sandbox")
    assert f"rolling *sandbox* back to `{first_head[:7]}` (release sandbox-1)" in answer.text
    rollback = await team.wait_message(
        lambda m: "Rolled `sandbox` back to" in rendered(m), what="the rollback"
    )
    assert (await _healthz(port)).startswith(f"ok {first_head[:7]}")
    state = await team.release_state("sandbox-3")
    assert (state.kind, state.state, state.head_sha) == (
        ReleaseKind.ROLLBACK,
        ReleaseState.LIVE,
        first_head,
    )
    assert "Rollback sandbox-3 is done" in team.thread_text(rollback.ts)
    env = await team.stack.store.env("sandbox")
    assert env.live_sha == first_head and second_head in env.rolled_back_shas


async def test_unhealthy_release_rolls_back_on_its_own(team: Team) -> None:
    """A release whose health check fails is rolled back automatically and the channel says why."""
    emu = team.emu
    team.commit(ALICE, "Add cart page")
    good = team.repo._git("rev-parse", "HEAD")
    await team.collect()
    first = await team.batch_message(containing="Add cart page")
    await emu.slash_command(ALICE, CHANNEL, "/release", "sandbox")
    await team.wait_text(first.ts, "waiting for approval")
    await emu.add_reaction(ALICE, CHANNEL, first.ts, "white_check_mark")
    await team.wait_text(first.ts, "is live")

    team.commit(CAROL, "Switch payment API", {"app/health": "broken\n"})
    await team.collect()
    bad = await team.batch_message(containing="Switch payment API")
    await emu.slash_command(CAROL, CHANNEL, "/release", "sandbox")
    await team.wait_text(bad.ts, "waiting for approval")
    await emu.add_reaction(CAROL, CHANNEL, bad.ts, "white_check_mark")

    done = await team.wait_text(bad.ts, "was rolled back")
    text = rendered(done)
    assert f"`sandbox` runs `{good[:7]}` again" in text
    assert "health check failed: GET http://127.0.0.1:" in text and "-> 500" in text
    assert "Rolling back to" in team.thread_text(bad.ts)
    env = await team.stack.store.env("sandbox")
    assert env.live_sha == good and env.active_release is None


async def test_first_release_failing_has_nothing_to_roll_back_to(team: Team) -> None:
    """A failing first release says there was nothing to roll back to."""
    team.commit(CAROL, "Broken from the start", {"app/health": "broken\n"})
    await team.collect()
    batch = await team.batch_message(containing="Broken from the start", env="staging")
    answer = await team.emu.slash_command(CAROL, CHANNEL, "/release", "staging")
    assert "no approvals needed, deploying now" in answer.text
    failed = await team.wait_text(batch.ts, "failed")
    assert "health check failed" in rendered(failed)

    def thread_says() -> str | None:
        text = team.thread_text(batch.ts)
        return text if "Nothing to roll back to" in text else None

    thread: str | None = await team.emu.wait_for(
        thread_says, timeout=10, what="the thread to say there is nothing to roll back to"
    )
    assert thread is not None
    assert "first release there" in thread


async def test_force_push_is_reported_and_the_batch_follows_the_new_history(team: Team) -> None:
    """A force-pushed branch is reported in the channel and the batch is recomputed, not crashed on."""
    team.commit(BOB, "Experimental search")
    await team.collect()
    await team.batch_message(containing="Experimental search")
    team.repo._git("reset", "-q", "--hard", "HEAD~1")
    team.commit(CAROL, "Stable search")
    await team.collect()
    notice = await team.wait_message(
        lambda m: "was force-pushed" in rendered(m), what="the force-push notice"
    )
    assert "`main` was force-pushed" in rendered(notice)
    batch = await team.batch_message(containing="Stable search")
    assert "Experimental search" not in rendered(batch)


@pytest.mark.socket_only
async def test_socket_mode_reconnects_when_slack_asks_and_the_release_goes_on(team: Team) -> None:
    """Slack's `disconnect` (refresh_requested) makes web open a new connection; nothing is lost."""
    emu = team.emu
    team.commit(ALICE, "Add cart page")
    await team.collect()
    batch = await team.batch_message(containing="Add cart page")
    await emu.disconnect_socket("refresh_requested")
    await emu.wait_for(
        lambda: emu.socket_connections_opened == 2 and emu.socket_connections == 1,
        timeout=10,
        what="web to reconnect over Socket Mode",
    )
    assert len(emu.calls_to("apps.connections.open")) == 2
    answer = await emu.slash_command(ALICE, CHANNEL, "/release", "sandbox")
    assert answer.status == 200 and "asked to release 2 commits" in answer.text
    await team.wait_text(batch.ts, "waiting for approval")
    assert await emu.add_reaction(ALICE, CHANNEL, batch.ts, "white_check_mark") == 200
    await team.wait_text(batch.ts, "is live")
    assert {d.transport for d in emu.deliveries} == {"socket"}
