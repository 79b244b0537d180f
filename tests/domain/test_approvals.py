"""Who must approve, who may, and whether they all have."""

from __future__ import annotations

import pytest

from bot.domain import approvals
from bot.domain.models import Person, ReleaseState
from tests.domain.factories import (
    ALICE,
    BOB,
    DAVE_UNMAPPED,
    OUTSIDER,
    REQUESTER,
    STAND_IN,
    person,
    release,
)

S = ReleaseState
A = person(ALICE, "Alice")
A_WORK = person(ALICE, "Alice", "alice@work.example.com")
B = person(BOB, "Bob")
D = DAVE_UNMAPPED
E = person(None, "Eve")


@pytest.mark.parametrize(
    ("people", "given", "expected"),
    [
        pytest.param((), set(), (), id="nobody"),
        pytest.param((A, B), set(), (ALICE, BOB), id="in-order"),
        pytest.param((B, A), set(), (BOB, ALICE), id="order-of-people"),
        pytest.param((A, B), {ALICE}, (BOB,), id="one-approved"),
        pytest.param((A, B), {ALICE, BOB}, (), id="all-approved"),
        pytest.param((A, A_WORK, B), set(), (ALICE, BOB), id="two-emails-one-user"),
        pytest.param((D, A), set(), (ALICE,), id="unmapped-not-awaited"),
        pytest.param((D, E), set(), (), id="only-unmapped"),
        pytest.param((A,), {OUTSIDER}, (ALICE,), id="stray-approval-ignored"),
    ],
)
def test_awaited(people: tuple[Person, ...], given: set[str], expected: tuple[str, ...]) -> None:
    """awaited() lists involved Slack users without an approval, once each, in people order."""
    r = release(S.AWAITING_APPROVAL, people=people, approvals=frozenset(given))
    assert approvals.awaited(r) == expected


@pytest.mark.parametrize(
    ("people", "given", "required", "stand_ins", "expected"),
    [
        pytest.param((A, B), set(), True, (), False, id="none-yet"),
        pytest.param((A, B), {ALICE}, True, (), False, id="one-of-two"),
        pytest.param((A, B), {ALICE, BOB}, True, (), True, id="both"),
        pytest.param((A, B), set(), False, (), True, id="not-required"),
        pytest.param((A, D), {ALICE}, True, (), False, id="unmapped-without-stand-in"),
        pytest.param((A, D), {ALICE, REQUESTER}, True, (), True, id="requester-stands-in"),
        pytest.param(
            (A, D), {ALICE, REQUESTER}, True, (STAND_IN,), False, id="requester-not-configured"
        ),
        pytest.param((A, D), {ALICE, STAND_IN}, True, (STAND_IN,), True, id="configured-stand-in"),
        pytest.param((A, D), {STAND_IN}, True, (STAND_IN,), False, id="stand-in-not-author"),
        pytest.param((D, E), {REQUESTER}, True, (), True, id="one-stand-in-covers-all"),
        pytest.param((A, D), {ALICE}, True, (ALICE,), True, id="author-is-stand-in"),
        pytest.param((A, A_WORK), {ALICE}, True, (), True, id="one-user-two-emails"),
    ],
)
def test_is_fully_approved(
    people: tuple[Person, ...],
    given: set[str],
    required: bool,
    stand_ins: tuple[str, ...],
    expected: bool,
) -> None:
    """A release is fully approved when every mapped author and a stand-in (if needed) approved."""
    r = release(
        S.AWAITING_APPROVAL,
        people=people,
        approvals=frozenset(given),
        approval_required=required,
        stand_ins=stand_ins,
    )
    assert approvals.is_fully_approved(r) is expected


@pytest.mark.parametrize(
    ("people", "user", "stand_ins", "requested_by", "expected"),
    [
        pytest.param((A, B), ALICE, (), REQUESTER, True, id="author"),
        pytest.param((A, B), OUTSIDER, (), REQUESTER, False, id="outsider"),
        pytest.param((A, B), REQUESTER, (), REQUESTER, False, id="requester-no-unmapped"),
        pytest.param((A, D), REQUESTER, (), REQUESTER, True, id="requester-stands-in"),
        pytest.param((A, D), REQUESTER, (STAND_IN,), REQUESTER, False, id="requester-overridden"),
        pytest.param((A, D), STAND_IN, (STAND_IN,), REQUESTER, True, id="configured-stand-in"),
        pytest.param((A, B), STAND_IN, (STAND_IN,), REQUESTER, False, id="stand-in-not-needed"),
        pytest.param((A, D), OUTSIDER, (), None, False, id="no-requester-no-stand-in"),
        pytest.param((D,), BOB, (STAND_IN, BOB), REQUESTER, True, id="second-stand-in"),
    ],
)
def test_can_decide(
    people: tuple[Person, ...],
    user: str,
    stand_ins: tuple[str, ...],
    requested_by: str | None,
    expected: bool,
) -> None:
    """can_decide() admits involved users and, when an author is unmapped, the stand-ins."""
    r = release(S.AWAITING_APPROVAL, people=people, stand_ins=stand_ins, requested_by=requested_by)
    assert approvals.can_decide(r, user) is expected


@pytest.mark.parametrize(
    ("stand_ins", "requested_by", "expected"),
    [
        pytest.param((STAND_IN,), REQUESTER, {STAND_IN}, id="configured"),
        pytest.param((), REQUESTER, {REQUESTER}, id="requester"),
        pytest.param((), None, set(), id="nobody"),
    ],
)
def test_stand_ins(
    stand_ins: tuple[str, ...], requested_by: str | None, expected: set[str]
) -> None:
    """Configured stand-ins win; else the requester; else nobody."""
    r = release(S.AWAITING_APPROVAL, stand_ins=stand_ins, requested_by=requested_by)
    assert approvals.stand_ins(r) == expected


@pytest.mark.parametrize(
    ("people", "given", "expected"),
    [
        pytest.param((A, B), set(), True, id="no-unmapped"),
        pytest.param((A, D), set(), False, id="missing"),
        pytest.param((A, D), {REQUESTER}, True, id="given"),
        pytest.param((A, D), {ALICE}, False, id="author-is-not-stand-in"),
    ],
)
def test_stand_in_given(people: tuple[Person, ...], given: set[str], expected: bool) -> None:
    """stand_in_given() is true when no stand-in is needed or one approved."""
    r = release(S.AWAITING_APPROVAL, people=people, approvals=frozenset(given))
    assert approvals.stand_in_given(r) is expected
