"""The release message's buttons, clicked by people on the local workspace.

Same rules as reactions: only involved people count, a block can be lifted, and a
block asks why (a modal for the button, the thread for a reaction), shown to everyone.
"""

from __future__ import annotations

from bot.domain.models import ReleaseState
from bot.domain.render import APPROVE_ACTION, BLOCK_ACTION, CANCEL_ACTION, UNBLOCK_ACTION
from bot.local.slackemu import Message
from tests.conftest import RedisServer
from tests.e2e.harness import ALICE, BOB, CHANNEL, MALLORY, Team, rendered


async def _frozen(team: Team) -> Message:
    team.commit(ALICE, "Add cart page")
    team.commit(BOB, "Fix rounding")
    await team.collect()
    batch = await team.batch_message(containing="Fix rounding")
    await team.emu.slash_command(ALICE, CHANNEL, "/release", "sandbox")
    return await team.wait_text(batch.ts, "waiting for approval")


async def _click(team: Team, user: str, msg: Message, action: str) -> None:
    assert await team.emu.click_button(user, CHANNEL, msg.ts, action) == 200


async def _wait_thread(team: Team, ts: str, text: str) -> None:
    await team.emu.wait_for(
        lambda: text in team.thread_text(ts), timeout=15, what=f"the thread to say {text!r}"
    )


async def test_approve_buttons_deploy_the_release(team: Team) -> None:
    msg = await _frozen(team)
    await _click(team, ALICE, msg, APPROVE_ACTION)
    # the click is acked only once it is recorded
    assert (await team.release_state("sandbox-1")).approvals == {ALICE}
    await _click(team, ALICE, msg, APPROVE_ACTION)
    await team.wait_ephemeral(ALICE, "You already approved release sandbox-1")
    await _click(team, BOB, msg, APPROVE_ACTION)
    await team.wait_text(msg.ts, "is live on `sandbox`")
    live = team.emu.message(CHANNEL, msg.ts)
    assert live is not None and not list(live.buttons()), "a live release offers no buttons"


async def test_block_button_asks_why_and_everyone_sees_it(team: Team) -> None:
    msg = await _frozen(team)
    await _click(team, BOB, msg, BLOCK_ACTION)
    view = await team.emu.wait_for(lambda: team.emu.open_view(BOB), timeout=15)
    assert view is not None and view.title == "Block release"
    assert (await team.release_state("sandbox-1")).state is ReleaseState.AWAITING_APPROVAL

    empty = await team.emu.submit_view(BOB, {})
    assert not empty.closed and empty.errors
    done = await team.emu.submit_view(BOB, {"reason": "The <migration> is not reversible"})
    assert done.closed, done
    blocked = await team.release_state("sandbox-1")
    assert blocked.state is ReleaseState.BLOCKED
    assert blocked.block_reasons == ((BOB, "The <migration> is not reversible"),)
    entry = [e for e in await team.stack.store.audit_log() if e.kind.value == "blocked"][-1]
    assert (entry.actor, entry.detail.get("reason")) == (BOB, "The <migration> is not reversible")
    shown = await team.wait_text(msg.ts, ":no_entry: @bob: “The <migration> is not reversible”")
    assert "is blocked" in rendered(shown)
    assert "The &lt;migration&gt;" in str(shown.blocks), "user text reaches Slack escaped"
    await _wait_thread(team, msg.ts, "blocked release sandbox-1:")

    # approvals while blocked are kept, but nothing deploys
    await _click(team, ALICE, msg, APPROVE_ACTION)
    await _click(team, BOB, msg, APPROVE_ACTION)
    assert (await team.release_state("sandbox-1")).state is ReleaseState.BLOCKED

    await _click(team, BOB, msg, UNBLOCK_ACTION)
    await _wait_thread(team, msg.ts, "lifted their block on release sandbox-1")
    await team.wait_text(msg.ts, "is live on `sandbox`")


async def test_outsiders_buttons_count_for_nothing(team: Team) -> None:
    msg = await _frozen(team)
    await _click(team, MALLORY, msg, APPROVE_ACTION)
    await team.wait_ephemeral(MALLORY, "has no commits in release sandbox-1")
    await _click(team, MALLORY, msg, BLOCK_ACTION)
    await team.emu.wait_for(
        lambda: len([m for m in team.emu.ephemerals(MALLORY) if "no commits" in rendered(m)]) == 2,
        timeout=15,
    )
    assert team.emu.open_view(MALLORY) is None
    await _click(team, MALLORY, msg, CANCEL_ACTION)
    await team.wait_ephemeral(MALLORY, "can cancel it")
    after = await team.release_state("sandbox-1")
    assert (after.state, after.approvals, after.blocks) == (
        ReleaseState.AWAITING_APPROVAL,
        frozenset(),
        frozenset(),
    )


async def test_cancel_puts_the_commits_back_into_the_next_batch(team: Team) -> None:
    msg = await _frozen(team)
    await _click(team, BOB, msg, CANCEL_ACTION)  # an author may call it off
    await team.wait_text(msg.ts, "was cancelled")
    await _wait_thread(team, msg.ts, "cancelled release sandbox-1")
    cancelled = await team.release_state("sandbox-1")
    assert cancelled.state is ReleaseState.CANCELLED
    log = await team.stack.store.audit_log()
    assert [(e.kind.value, e.actor) for e in log if e.release == "sandbox-1"][-1] == (
        "cancelled",
        BOB,
    )
    # the next batch counts from what runs, so the cancelled commits are in it again
    again = await team.wait_message(
        lambda m: (
            m.ts != msg.ts
            and "Next release to `sandbox`" in rendered(m)
            and "Add cart page" in rendered(m)
            and "Fix rounding" in rendered(m)
        ),
        what="a new batch with the cancelled commits",
    )
    answer = await team.emu.slash_command(ALICE, CHANNEL, "/release", "sandbox")
    assert answer.status == 200
    await team.wait_text(again.ts, "waiting for approval")


async def test_block_reaction_asks_for_the_reason_in_the_thread(team: Team) -> None:
    msg = await _frozen(team)
    assert await team.emu.add_reaction(BOB, CHANNEL, msg.ts, "no_entry") == 200
    await _wait_thread(team, msg.ts, "please say why here in the thread")
    assert (await team.release_state("sandbox-1")).state is ReleaseState.BLOCKED


async def test_block_form_with_redis_down_stays_open_and_loses_nothing(
    team: Team, redis_server: RedisServer
) -> None:
    msg = await _frozen(team)
    await _click(team, BOB, msg, BLOCK_ACTION)
    await team.emu.wait_for(lambda: team.emu.open_view(BOB), timeout=15)
    redis_server.stop()
    try:
        refused = await team.emu.submit_view(BOB, {"reason": "flaky checkout test"})
        assert not refused.closed
        assert "Redis) is unreachable" in refused.errors["reason"]
    finally:
        redis_server.start()
    done = await team.emu.submit_view(BOB, {"reason": "flaky checkout test"})
    assert done.closed, done
    assert (await team.release_state("sandbox-1")).block_reason == {BOB: "flaky checkout test"}


async def test_an_expired_trigger_says_how_to_block_anyway(team: Team) -> None:
    msg = await _frozen(team)
    # Slack's client took too long to hand the click over: views.open is refused
    team.emu.workspace.views.trigger_lifetime = -1.0
    await _click(team, BOB, msg, BLOCK_ACTION)
    await team.wait_ephemeral(BOB, "Could not open the block form")
    assert team.emu.open_view(BOB) is None
    assert (await team.release_state("sandbox-1")).blocks == frozenset()


async def test_an_approved_release_waiting_for_a_lock_can_be_cancelled(team: Team) -> None:
    lock = await team.emu.slash_command(ALICE, CHANNEL, "/lock", "sandbox payments freeze")
    assert "locked *sandbox*" in lock.text
    msg = await _frozen(team)
    await _click(team, ALICE, msg, APPROVE_ACTION)
    await _click(team, BOB, msg, APPROVE_ACTION)
    waiting = await team.wait_text(msg.ts, "is approved")
    assert "is locked" in rendered(waiting)
    assert [b.get("action_id") for _, b in waiting.buttons()] == [CANCEL_ACTION]
    await _click(team, ALICE, msg, CANCEL_ACTION)
    await team.wait_text(msg.ts, "was cancelled")
    await team.emu.slash_command(ALICE, CHANNEL, "/unlock", "sandbox")
    # nothing deploys after the unlock: the cancelled release stays cancelled
    env = await team.stack.store.env("sandbox")
    assert (env.active_release, env.live_sha) == (None, None)
    assert (await team.release_state("sandbox-1")).state is ReleaseState.CANCELLED
