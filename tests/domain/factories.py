"""Builders for the domain's nouns, so tests spell out only what they care about."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from bot.domain.models import (
    Author,
    Commit,
    EnvState,
    LiveEntry,
    Person,
    Release,
    ReleaseKind,
    ReleaseState,
)

S = ReleaseState

ENV = "prod"
ALICE = "UALICE"
BOB = "UBOB"
CAROL = "UCAROL"
REQUESTER = "UREQ"
STAND_IN = "USTAND"
OUTSIDER = "UOUT"


def sha(n: int) -> str:
    """A deterministic 40-hex-digit sha for commit number ``n``."""
    return f"{n:040x}"


def author(name: str, email: str | None = None) -> Author:
    return Author(name=name, email=email or f"{name.lower()}@example.com")


def commit(
    n: int,
    title: str | None = None,
    *,
    by: Author | None = None,
    pr: int | None = None,
    co_authors: tuple[Author, ...] = (),
    merged_authors: tuple[Author, ...] = (),
) -> Commit:
    return Commit(
        sha=sha(n),
        title=title if title is not None else f"Change number {n}",
        author=by or author("Alice"),
        co_authors=co_authors,
        pr=pr,
        merged_authors=merged_authors,
    )


def person(user: str | None, name: str, email: str | None = None) -> Person:
    return Person(email=email or f"{name.lower()}@example.com", name=name, slack_user=user)


PEOPLE_AB = (person(ALICE, "Alice"), person(BOB, "Bob"))
DAVE_UNMAPPED = person(None, "Dave")


def release(
    state: ReleaseState = S.COLLECTING,
    *,
    rid: str = "prod-1",
    people: tuple[Person, ...] = PEOPLE_AB,
    n_commits: int = 2,
    **overrides: Any,
) -> Release:
    """A release in ``state`` whose other fields agree with that state."""
    commits = tuple(commit(i + 1) for i in range(n_commits))
    base = Release(
        id=rid,
        env=ENV,
        state=state,
        created_at=1_700_000_000.0,
        commits=commits,
        people=people,
        head_sha=commits[-1].sha if commits else None,
        base_sha=sha(0),
    )
    if state is not S.COLLECTING:
        base = replace(base, requested_by=REQUESTER, frozen_at=1_700_000_100.0)
    users = frozenset(p.slack_user for p in people if p.slack_user)
    if state is S.BLOCKED:
        base = replace(base, blocks=frozenset({BOB}))
    if state in (
        S.APPROVED,
        S.DEPLOYING,
        S.VERIFYING,
        S.LIVE,
        S.FAILED,
        S.ROLLING_BACK,
        S.ROLLED_BACK,
    ):
        base = replace(base, approvals=users, approved_at=1_700_000_200.0)
    if state in (S.DEPLOYING, S.VERIFYING, S.LIVE, S.FAILED, S.ROLLING_BACK, S.ROLLED_BACK):
        base = replace(base, fence=7, previous_sha=sha(0))
    if state in (S.FAILED, S.ROLLING_BACK, S.ROLLED_BACK):
        base = replace(base, reason="health check failed: 503")
    if state in (S.LIVE, S.FAILED, S.ROLLED_BACK, S.CANCELLED, S.SUPERSEDED):
        base = replace(base, finished_at=1_700_000_300.0)
    return replace(base, **overrides)


def rollback_release(
    state: ReleaseState = S.APPROVED, *, rid: str = "prod-9", **overrides: Any
) -> Release:
    base = Release(
        id=rid,
        env=ENV,
        state=state,
        kind=ReleaseKind.ROLLBACK,
        created_at=1_700_000_000.0,
        head_sha=sha(1),
        base_sha=sha(2),
        approval_required=False,
        requested_by=REQUESTER,
        rollback_target="prod-1",
        frozen_at=1_700_000_000.0,
        approved_at=1_700_000_000.0,
    )
    return replace(base, **overrides)


def env_state(*live: tuple[str, str], **overrides: Any) -> EnvState:
    """An environment whose history is ``live`` (release id, sha) pairs, the last one running."""
    history = tuple(
        LiveEntry(release_id=r, sha=s, at=1_700_000_000.0 + i) for i, (r, s) in enumerate(live)
    )
    base = EnvState(
        name=ENV,
        live_sha=live[-1][1] if live else None,
        live_release=live[-1][0] if live else None,
        history=history,
    )
    return replace(base, **overrides)
