"""Approve / Block / Cancel buttons, block reasons, and the modal that asks for one."""

from __future__ import annotations

from typing import Any

import pytest

from bot.domain import approvals
from bot.domain import release as rel
from bot.domain.errors import InvalidTransition, NotInvolved
from bot.domain.models import EnvLock, ReleaseState
from bot.domain.render import (
    APPROVE_ACTION,
    BLOCK_ACTION,
    BLOCK_REASON_INPUT,
    BLOCK_REASON_VIEW,
    CANCEL_ACTION,
    UNBLOCK_ACTION,
    RenderOptions,
    block_reason_modal,
    render_release,
)
from tests.domain.factories import ALICE, BOB, OUTSIDER, REQUESTER, release, rollback_release

S = ReleaseState
OPTIONS = RenderOptions()
LOCK = EnvLock(by=ALICE, reason="db migration", at=1_700_000_000.0)


def buttons(r: Any, lock: EnvLock | None = None) -> list[tuple[str, str]]:
    found = []
    for block in render_release(r, OPTIONS, lock=lock).blocks:
        if block["type"] == "actions":
            found += [(b["action_id"], b["value"]) for b in block["elements"]]
    return found


def approvals_text(r: Any) -> str:
    blocks = render_release(r, OPTIONS).blocks
    return str(
        next(
            b["text"]["text"]
            for b in blocks
            if b["type"] == "section" and b["text"]["text"].startswith("*Approvals:*")
        )
    )


def test_awaiting_approval_shows_approve_block_cancel() -> None:
    r = release(S.AWAITING_APPROVAL)
    assert buttons(r) == [
        (APPROVE_ACTION, "prod-1"),
        (BLOCK_ACTION, "prod-1"),
        (CANCEL_ACTION, "prod-1"),
    ]


def test_blocked_adds_lift_my_block() -> None:
    assert [a for a, _ in buttons(release(S.BLOCKED))] == [
        APPROVE_ACTION,
        BLOCK_ACTION,
        UNBLOCK_ACTION,
        CANCEL_ACTION,
    ]


def test_cancel_asks_for_confirmation() -> None:
    blocks = render_release(release(S.AWAITING_APPROVAL), OPTIONS).blocks
    cancel = next(
        e
        for b in blocks
        if b["type"] == "actions"
        for e in b["elements"]
        if e["action_id"] == CANCEL_ACTION
    )
    assert cancel["confirm"]["deny"]["text"] == "Keep it"


@pytest.mark.parametrize(
    "state",
    [S.COLLECTING, S.APPROVED, S.DEPLOYING, S.VERIFYING, S.LIVE, S.FAILED, S.CANCELLED],
)
def test_no_decision_buttons_once_decided_or_before_freeze(state: ReleaseState) -> None:
    assert buttons(release(state)) == []


def test_approved_release_waiting_for_a_lock_can_be_cancelled() -> None:
    assert buttons(release(S.APPROVED), lock=LOCK) == [(CANCEL_ACTION, "prod-1")]


def test_no_buttons_without_approvals_or_on_rollbacks() -> None:
    assert buttons(release(S.AWAITING_APPROVAL, approval_required=False)) == []
    assert buttons(rollback_release(S.APPROVED)) == []


def test_block_ids_are_unique_within_the_message() -> None:
    blocks = render_release(release(S.BLOCKED), OPTIONS).blocks
    ids = [b["block_id"] for b in blocks if "block_id" in b]
    assert len(ids) == len(set(ids))


def test_block_reason_is_shown_escaped_to_everyone() -> None:
    r = release(S.BLOCKED, block_reasons=((BOB, "<!channel> breaks & burns"),))
    text = approvals_text(r)
    assert "<@UBOB>: “&lt;!channel&gt; breaks &amp; burns”" in text


def test_reason_of_a_lifted_block_is_not_shown() -> None:
    r = release(S.AWAITING_APPROVAL, block_reasons=((BOB, "stale"),))
    assert "stale" not in approvals_text(r)


def test_block_with_reason_then_reaction_keeps_reason_and_unblock_clears_it() -> None:
    r = release(S.AWAITING_APPROVAL)
    blocked = rel.apply(
        r, rel.React(user=BOB, verdict=rel.Verdict.BLOCK, added=True, reason=" not yet "), at=1.0
    )
    assert (blocked.state, blocked.block_reason) == (S.BLOCKED, {BOB: "not yet"})
    again = rel.apply(blocked, rel.React(user=BOB, verdict=rel.Verdict.BLOCK, added=True), at=2.0)
    assert again.block_reason == {BOB: "not yet"}
    lifted = rel.apply(again, rel.React(user=BOB, verdict=rel.Verdict.BLOCK, added=False), at=3.0)
    assert (lifted.state, lifted.blocks, lifted.block_reasons) == (
        S.AWAITING_APPROVAL,
        frozenset(),
        (),
    )


def test_outsider_cannot_block_with_a_reason_either() -> None:
    with pytest.raises(NotInvolved):
        rel.apply(
            release(S.AWAITING_APPROVAL),
            rel.React(user=OUTSIDER, verdict=rel.Verdict.BLOCK, added=True, reason="no"),
            at=1.0,
        )


def test_deploy_start_is_recorded_for_durations() -> None:
    started = rel.apply(release(S.APPROVED), rel.StartDeploy(fence=3, previous_sha=None), at=42.0)
    assert started.deploy_started_at == 42.0


def test_who_may_cancel() -> None:
    r = release(S.AWAITING_APPROVAL)
    assert approvals.can_cancel(r, REQUESTER)
    assert approvals.can_cancel(r, ALICE)
    assert not approvals.can_cancel(r, OUTSIDER)


def test_cancel_refused_once_deploying() -> None:
    with pytest.raises(InvalidTransition):
        rel.apply(release(S.DEPLOYING), rel.Cancel(by=REQUESTER), at=1.0)


def test_block_reason_modal_round_trips_where_the_decision_goes() -> None:
    modal = block_reason_modal(release(S.AWAITING_APPROVAL), "C1", "123.456")
    assert modal["callback_id"] == BLOCK_REASON_VIEW
    assert modal["private_metadata"] == "C1|123.456|prod-1"
    inputs = [b for b in modal["blocks"] if b["type"] == "input"]
    assert [(b["block_id"], b["element"]["action_id"]) for b in inputs] == [
        (BLOCK_REASON_INPUT, BLOCK_REASON_INPUT)
    ]
    assert len(modal["title"]["text"]) <= 24
