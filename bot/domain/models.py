"""The nouns of a release: commits, the people behind them, releases and environments.

Everything here is immutable and plain so that it can be stored as JSON in Redis,
compared in tests and rendered without any I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class Author:
    """A git identity: the name and e-mail of a commit author or co-author."""

    name: str
    email: str


@dataclass(frozen=True, slots=True)
class Commit:
    """One first-parent commit on the release branch."""

    sha: str
    title: str
    author: Author
    co_authors: tuple[Author, ...] = ()
    #: the pull request number from "(#123)" in a squash title or a merge commit
    pr: int | None = None
    #: authors of the commits a merge commit brought in (not the merger)
    merged_authors: tuple[Author, ...] = ()

    @property
    def short_sha(self) -> str:
        return self.sha[:7]

    def involved(self) -> tuple[Author, ...]:
        """Everyone whose work is in this commit, author first, without repeats."""
        seen: dict[str, Author] = {}
        for person in (self.author, *self.merged_authors, *self.co_authors):
            seen.setdefault(person.email.lower(), person)
        return tuple(seen.values())


@dataclass(frozen=True, slots=True)
class Person:
    """An involved author and the Slack user they map to (None: nobody found)."""

    email: str
    name: str
    slack_user: str | None


class DecisionKind(StrEnum):
    """What one event decided; the ``kind`` of its audit entry."""

    #: ``/release``: a batch was frozen and its authors asked to approve
    REQUESTED = "requested"
    #: ``/rollback``: a release of an earlier sha that needs no approvals
    ROLLBACK_REQUESTED = "rollback_requested"
    APPROVAL_GIVEN = "approval_given"
    APPROVAL_WITHDRAWN = "approval_withdrawn"
    #: every approval needed is in; a worker will deploy it
    APPROVED = "approved"
    BLOCKED = "blocked"
    BLOCK_LIFTED = "block_lifted"
    CANCELLED = "cancelled"
    SUPERSEDED = "superseded"
    DEPLOY_STARTED = "deploy_started"
    #: the worker running the deploy stopped; another one deploys again
    DEPLOY_RETRIED = "deploy_retried"
    #: the backend started the new version; its health is checked next
    DEPLOYED = "deployed"
    LIVE = "live"
    FAILED = "failed"
    #: the automatic rollback after an unhealthy deploy began
    ROLLING_BACK = "rolling_back"
    #: another worker took over an automatic rollback whose worker stopped
    ROLLBACK_RESUMED = "rollback_resumed"
    ROLLED_BACK = "rolled_back"
    LOCKED = "locked"
    UNLOCKED = "unlocked"


#: a fact kept about a decision, JSON-plain so any reader of the audit stream can decode it
DetailValue = str | int | float | bool | None | list[str]


@dataclass(frozen=True, slots=True)
class Decision:
    """One thing an event decided (built in ``bot.domain.decisions``, audited by ``bot.domain.audit``)."""

    kind: DecisionKind
    #: who decided; None when only the caller knows (the core is not told who typed /unlock)
    by: str | None
    #: when; None when nothing in the state says, so the moment of the write is used
    at: float | None
    detail: Mapping[str, DetailValue] = field(default_factory=dict)


class ReleaseState(StrEnum):
    #: the visible batch: commits gather here until someone types /release
    COLLECTING = "collecting"
    #: frozen; waiting for every involved author to approve
    AWAITING_APPROVAL = "awaiting_approval"
    #: an involved author reacted with a block reaction; removing it resumes
    BLOCKED = "blocked"
    #: every approval is in; a worker will deploy it
    APPROVED = "approved"
    DEPLOYING = "deploying"
    VERIFYING = "verifying"
    LIVE = "live"
    #: the deploy or its health check failed
    FAILED = "failed"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    CANCELLED = "cancelled"
    #: replaced before it deployed (a manual rollback happened meanwhile)
    SUPERSEDED = "superseded"


#: states from which nothing else happens to a release
TERMINAL_STATES = frozenset(
    {
        ReleaseState.LIVE,
        ReleaseState.ROLLED_BACK,
        ReleaseState.CANCELLED,
        ReleaseState.SUPERSEDED,
        ReleaseState.FAILED,
    }
)
#: states in which a release owns its environment: no other release may start
ACTIVE_STATES = frozenset(
    {
        ReleaseState.AWAITING_APPROVAL,
        ReleaseState.BLOCKED,
        ReleaseState.APPROVED,
        ReleaseState.DEPLOYING,
        ReleaseState.VERIFYING,
        ReleaseState.ROLLING_BACK,
    }
)


class ReleaseKind(StrEnum):
    RELEASE = "release"
    #: a manual /rollback: deploys an earlier sha with no approvals
    ROLLBACK = "rollback"


class StepStatus(StrEnum):
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Step:
    """One line of deploy progress shown in the release message."""

    name: str
    status: StepStatus
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Release:
    """A batch of commits on its way to one environment.

    ``version`` grows with every change so that a renderer can tell whether the
    Slack message already shows the latest state (views are re-rendered, never patched).
    """

    id: str
    env: str
    state: ReleaseState
    created_at: float
    kind: ReleaseKind = ReleaseKind.RELEASE
    version: int = 1
    commits: tuple[Commit, ...] = ()
    people: tuple[Person, ...] = ()
    #: the sha this release deploys (the batch head, or a rollback's target)
    head_sha: str | None = None
    #: the sha the environment ran when the release was frozen
    base_sha: str | None = None
    approval_required: bool = True
    requested_by: str | None = None
    #: users who may approve for involved authors that map to no Slack user
    stand_ins: tuple[str, ...] = ()
    approvals: frozenset[str] = frozenset()
    blocks: frozenset[str] = frozenset()
    #: why each blocker blocked, as (user, reason), when they said (the Block button asks)
    block_reasons: tuple[tuple[str, str], ...] = ()
    channel: str | None = None
    message_ts: str | None = None
    steps: tuple[Step, ...] = ()
    #: mrkdwn shown under "Why:"; whoever builds it escapes text from outside (backend output).
    #: It names nobody: who cancelled is ``cancelled_by``, and rendering makes the mention
    #: (documents written before that field existed say "cancelled by <@U…>" here)
    reason: str | None = None
    #: the Slack user who cancelled the release
    cancelled_by: str | None = None
    #: for a rollback: the release whose sha is put back
    rollback_target: str | None = None
    #: the sha to go back to automatically if this release is unhealthy
    previous_sha: str | None = None
    #: fencing token of the deploy lock held while deploying
    fence: int | None = None
    #: False when an automatic rollback left nothing healthy
    healthy_after_rollback: bool | None = None
    updated_at: float = 0.0
    frozen_at: float | None = None
    finished_at: float | None = None
    approved_at: float | None = None
    #: when the (last) deploy of this release started; durations are measured from here
    deploy_started_at: float | None = None
    #: what the events applied since this value was read decided; the store audits them in
    #: the same write and never stores them, so equality and the documents ignore them
    decisions: tuple[Decision, ...] = field(default=(), compare=False, repr=False)

    @property
    def block_reason(self) -> dict[str, str]:
        return dict(self.block_reasons)

    @property
    def involved_users(self) -> frozenset[str]:
        return frozenset(p.slack_user for p in self.people if p.slack_user)

    @property
    def unmapped(self) -> tuple[Person, ...]:
        return tuple(p for p in self.people if p.slack_user is None)

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES


@dataclass(frozen=True, slots=True)
class LiveEntry:
    """A release that went live in an environment, kept in its history."""

    release_id: str
    sha: str
    at: float


@dataclass(frozen=True, slots=True)
class EnvLock:
    """A person (or shipmate itself, after a failed release) holding an environment still."""

    by: str
    reason: str
    at: float
    #: set by shipmate after an automatic rollback, so nobody re-releases the bad batch by accident
    automatic: bool = False


@dataclass(frozen=True, slots=True)
class EnvState:
    """What an environment runs and which releases own it right now."""

    name: str
    #: grows with every write; the store refuses a write based on an older version
    version: int = 0
    live_sha: str | None = None
    live_release: str | None = None
    #: the release that is frozen and on its way (at most one per environment)
    active_release: str | None = None
    #: the collecting batch shown in the channel
    batch_release: str | None = None
    history: tuple[LiveEntry, ...] = ()
    #: shas that were rolled back from, so a second /rollback does not return to them
    rolled_back_shas: frozenset[str] = field(default_factory=frozenset)
    #: releases wait while an environment is locked; rollbacks do not
    lock: EnvLock | None = None
    #: what was decided about the environment since it was read (locks); never stored
    decisions: tuple[Decision, ...] = field(default=(), compare=False, repr=False)
