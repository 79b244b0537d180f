"""One environment driven through random histories, exactly as the store and worker drive it.

Every step calls ``bot.domain.release.apply`` or a ``bot.domain.environment`` function the way
``bot.services.intents``, ``bot.services.collector`` and ``bot.services.deploys`` do, treating a DomainError as
a refusal, and checks each outcome against a small reference model of who must approve.
The collector is lazy, as in production: batches are recounted only when it runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from bot.domain import audit, environment
from bot.domain import release as rel
from bot.domain.codec import env_to_doc, release_to_doc
from bot.domain.errors import (
    AlreadyLocked,
    BatchOutdated,
    DomainError,
    InvalidTransition,
    NothingToRelease,
    NothingToRollBackTo,
    NotInvolved,
    NotLocked,
    ReleaseInProgress,
)
from bot.domain.models import (
    Author,
    Commit,
    EnvState,
    Person,
    Release,
    ReleaseKind,
    ReleaseState,
    Step,
    StepStatus,
)

S = ReleaseState
ENV = "prod"
ALICE, BOB, CAROL, STAND_IN, OUTSIDER = "UALICE", "UBOB", "UCAROL", "USTAND", "UOUT"
AUTHORS = (
    Author("Alice", "alice@example.com"),
    Author("Alice", "Alice@Work.example.com"),
    Author("Bob", "bob@example.com"),
    Author("Carol", "carol@example.com"),
    Author("Dave", "dave@example.com"),
    Author("Erin", "erin@example.com"),
)
#: the people directory: lower-cased e-mail -> Slack user (Dave and Erin have none)
SLACK = {
    "alice@example.com": ALICE,
    "alice@work.example.com": ALICE,
    "bob@example.com": BOB,
    "carol@example.com": CAROL,
}
USERS = (ALICE, BOB, CAROL, STAND_IN, OUTSIDER)
DECIDING = frozenset({S.AWAITING_APPROVAL, S.BLOCKED, S.APPROVED})
DEPLOY_STATES = frozenset({S.DEPLOYING, S.VERIFYING, S.ROLLING_BACK})

users = st.sampled_from(USERS)
#: -1 picks the active release (what people mostly react to); any other number picks any release
picks = st.one_of(st.just(-1), st.integers(min_value=0, max_value=1_000))


@dataclass
class Frozen:
    """What the reference model knows about a frozen release, computed from its commits."""

    required: bool
    involved: frozenset[str]
    unmapped: bool
    stand_ins: frozenset[str]
    approvals: set[str] = field(default_factory=set)
    blocks: set[str] = field(default_factory=set)

    def can_decide(self, user: str) -> bool:
        return user in self.involved or (self.unmapped and user in self.stand_ins)

    def approved(self) -> bool:
        if not self.required:
            return True
        stand_in_ok = not self.unmapped or bool(self.approvals & self.stand_ins)
        return self.involved <= self.approvals and stand_in_ok and not self.blocks


def involved_of(commits: tuple[Commit, ...]) -> tuple[frozenset[str], bool]:
    """The Slack users behind the commits, and whether anyone maps to no Slack user."""
    authors = [a for c in commits for a in c.involved()]
    mapped = frozenset(SLACK[a.email.lower()] for a in authors if a.email.lower() in SLACK)
    return mapped, any(a.email.lower() not in SLACK for a in authors)


def resolve(commits: tuple[Commit, ...]) -> tuple[Person, ...]:
    """What bot.services.people.resolve returns: one Person per e-mail, in order of appearance."""
    people: dict[str, Person] = {}
    for c in commits:
        for a in c.involved():
            key = a.email.lower()
            people.setdefault(key, Person(email=a.email, name=a.name, slack_user=SLACK.get(key)))
    return tuple(people.values())


class ReleaseModel(RuleBasedStateMachine):
    """The environment, its releases, the branch, the deploy lock and a reference model."""

    def __init__(self) -> None:
        super().__init__()
        self.env = EnvState(name=ENV)
        self.releases: dict[str, Release] = {}
        self.branch: list[Commit] = []
        self.clock = 1_700_000_000.0
        self.ids = 0
        self.fence = 0
        self.approval_required = True
        self.stand_ins: tuple[str, ...] = ()
        self.lock_on_failure = False
        self.frozen: dict[str, Frozen] = {}
        self.deployed: set[str] = set()
        #: the release whose deploy (and automatic rollback) holds the deploy lock
        self.lock: str | None = None
        #: reference bookkeeping for rollbacks: shas that were live, and shas rolled away from
        self.was_live: set[str] = set()
        self.bad: set[str] = set()

    # helpers -------------------------------------------------------------------------------

    def now(self) -> float:
        self.clock += 1.0
        return self.clock

    def new_id(self) -> str:
        self.ids += 1
        return f"{ENV}-{self.ids}"

    def get(self, release_id: str | None) -> Release | None:
        return self.releases.get(release_id) if release_id else None

    def pick(self, n: int) -> Release | None:
        active = self.get(self.env.active_release)
        if n < 0 and active is not None:
            return active
        ids = sorted(self.releases)
        return self.releases[ids[n % len(ids)]] if ids else None

    def active_state(self) -> ReleaseState | None:
        active = self.get(self.env.active_release)
        return active.state if active is not None else None

    def apply(self, release: Release, event: rel.Event) -> Release:
        new = rel.apply(release, event, at=self.now())
        assert new.version == release.version + 1
        assert new.id == release.id
        return new

    def commits_after(self, base: str | None, head: str | None = None) -> tuple[Commit, ...]:
        shas = [c.sha for c in self.branch]
        start = shas.index(base) + 1 if base is not None else 0
        end = shas.index(head) + 1 if head is not None else len(shas)
        return tuple(self.branch[start:end])

    def pending(self) -> tuple[Commit, ...]:
        return self.commits_after(
            environment.batch_base(self.env, self.get(self.env.active_release))
        )

    def batch_is_stale(self) -> bool:
        batch = self.get(self.env.batch_release)
        if batch is None:
            return bool(self.pending())
        return batch.commits != self.pending()

    def write(self, *releases: Release, env: EnvState | None = None) -> None:
        """What Store.update writes, with the invariants every write must keep.

        Like the store, it audits the decisions a value carries and stores it without them."""
        for new in releases:
            old = self.releases.get(new.id)
            if old is not None and old.is_terminal:
                raise AssertionError(f"terminal release {old.id} ({old.state}) became {new.state}")
            if new.state is S.DEPLOYING and (old is None or old.state is not S.DEPLOYING):
                self.check_may_deploy(new)
            self.check_recorded(old, new)
            self.releases[new.id] = replace(new, decisions=())
        if env is not None:
            if env.lock != self.env.lock:
                assert env.decisions, f"the lock of {ENV} changed without a decision"
            self.env = replace(env, decisions=())

    @staticmethod
    def check_recorded(old: Release | None, new: Release) -> None:
        """Every transition leaves an audit record, and every record but /unlock names who."""
        entered = new.state is not (old.state if old is not None else S.COLLECTING)
        assert not entered or new.decisions, f"{new.id} became {new.state} with no decision"
        for entry in audit.entries([new], at=0.0):
            assert entry.actor != audit.UNKNOWN, f"{new.id}: {entry.kind} names nobody"

    def check_may_deploy(self, r: Release) -> None:
        assert r.id not in self.deployed, f"{r.id} entered deploying twice"
        self.deployed.add(r.id)
        if r.kind is ReleaseKind.ROLLBACK:
            assert r.head_sha in self.was_live
            assert r.head_sha not in self.bad, "a rollback returns to a sha rolled away from"
            assert r.head_sha != self.env.live_sha
            return
        assert self.env.lock is None, f"{r.id} deploys while {ENV} is locked"
        info = self.frozen[r.id]
        assert info.approved(), f"{r.id} deploys without every approval: {info}"
        assert not info.blocks
        # what really ships is everything between what runs and the head
        shipped = self.commits_after(self.env.live_sha, r.head_sha)
        assert r.commits == shipped, f"{r.id} ships commits its approvers never saw"
        mapped, unmapped = involved_of(shipped)
        if info.required:
            assert mapped <= info.approvals
            assert not unmapped or info.approvals & info.stand_ins

    def collect(self) -> None:
        """bot.services.collector.Collector.collect_env and _decide, for one environment."""
        active = self.get(self.env.active_release)
        base = environment.batch_base(self.env, active)
        commits = self.commits_after(base)
        people = resolve(commits)
        batch = self.get(self.env.batch_release)
        env_state = None
        if batch is None:
            if not commits:
                return
            change = environment.new_batch(self.env, self.new_id(), at=self.now())
            batch, env_state = change.releases[0], change.env
        elif (batch.commits, batch.people, batch.base_sha) == (commits, people, base):
            return
        updated = self.apply(batch, rel.Collect(commits=commits, people=people, base_sha=base))
        self.write(updated, env=env_state)

    # configuration -------------------------------------------------------------------------

    @initialize(
        approval_required=st.sampled_from([True, True, True, False]),
        stand_ins=st.sampled_from([(), (), (STAND_IN,), (BOB, STAND_IN)]),
        lock_on_failure=st.booleans(),
    )
    def configure(
        self, approval_required: bool, stand_ins: tuple[str, ...], lock_on_failure: bool
    ) -> None:
        self.approval_required = approval_required
        self.stand_ins = stand_ins
        self.lock_on_failure = lock_on_failure

    # the branch and the collector ----------------------------------------------------------

    @precondition(lambda self: len(self.pending()) < 4)
    @rule(
        who=st.sampled_from(AUTHORS),
        co=st.lists(st.sampled_from(AUTHORS), max_size=2),
        and_collect=st.booleans(),
    )
    def merge_commit(self, who: Author, co: list[Author], and_collect: bool) -> None:
        """A commit lands on the branch; the collector may or may not run right away."""
        n = len(self.branch) + 1
        self.branch.append(
            Commit(sha=f"{n:040x}", title=f"Change {n}", author=who, co_authors=tuple(co))
        )
        if and_collect:
            self.collect()

    @precondition(lambda self: self.batch_is_stale())
    @rule()
    def run_collector(self) -> None:
        self.collect()

    # people in Slack -----------------------------------------------------------------------

    @precondition(lambda self: self.env.batch_release is not None)
    @rule(user=users, then_approve=st.booleans())
    def slash_release(self, user: str, then_approve: bool) -> None:
        """bot.services.intents.request_release, maybe followed by everyone's approve reactions."""
        self.request_release(user)
        if then_approve and self.active_state() in (S.AWAITING_APPROVAL, S.BLOCKED):
            self.everyone_approves()

    def request_release(self, user: str) -> None:
        active = self.get(self.env.active_release)
        batch = self.get(self.env.batch_release)
        try:
            change = environment.request_release(
                self.env,
                batch,
                active,
                by=user,
                approval_required=self.approval_required,
                stand_ins=self.stand_ins,
                at=self.now(),
            )
        except ReleaseInProgress:
            assert active is not None and active.is_active
            return
        except NothingToRelease:
            assert batch is None or not batch.commits
            return
        except BatchOutdated:
            assert batch is not None and batch.commits != self.pending()
            return
        assert active is None or not active.is_active
        (frozen,) = change.releases
        assert batch is not None and frozen.id == batch.id
        mapped, unmapped = involved_of(frozen.commits)
        info = Frozen(
            required=self.approval_required,
            involved=mapped,
            unmapped=unmapped,
            stand_ins=frozenset(self.stand_ins or (user,)),
        )
        self.frozen[frozen.id] = info
        assert (frozen.state is S.APPROVED) == info.approved()
        assert (change.deploy == (frozen.id,)) == info.approved()
        self.write(frozen, env=change.env)

    @precondition(lambda self: self.frozen)
    @rule(
        n=picks,
        user=users,
        verdict=st.sampled_from([rel.Verdict.APPROVE, rel.Verdict.APPROVE, rel.Verdict.BLOCK]),
        added=st.sampled_from([True, True, False]),
    )
    def react(self, n: int, user: str, verdict: rel.Verdict, added: bool) -> None:
        """bot.services.intents.record_reaction on the message of any release."""
        current = self.pick(n)
        if current is None:
            return
        info = self.frozen.get(current.id)
        deciding = current.state in DECIDING and info is not None and info.required
        try:
            new = self.apply(current, rel.React(user=user, verdict=verdict, added=added))
        except NotInvolved:
            assert deciding and info is not None and not info.can_decide(user)
            return
        except InvalidTransition:
            assert not deciding
            return
        assert deciding and info is not None and info.can_decide(user)
        votes = info.approvals if verdict is rel.Verdict.APPROVE else info.blocks
        if added:
            votes.add(user)
        else:
            votes.discard(user)
        assert new.approvals == info.approvals and new.blocks == info.blocks
        assert (new.state is S.BLOCKED) == bool(info.blocks)
        assert (new.state is S.APPROVED) == info.approved()
        self.write(new)

    @precondition(lambda self: self.active_state() in (S.AWAITING_APPROVAL, S.BLOCKED))
    @rule()
    def everyone_approves(self) -> None:
        """Each involved user (and a stand-in) of the active release adds an approve reaction."""
        active = self.get(self.env.active_release)
        info = self.frozen.get(active.id) if active is not None else None
        if info is None:
            return
        for user in sorted(info.involved) + sorted(info.stand_ins)[:1]:
            self.react(-1, user, rel.Verdict.APPROVE, True)

    @precondition(lambda self: self.releases)
    @rule(
        what=st.sampled_from(["cancel", "lock", "stale job"]),
        n=picks,
        user=users,
    )
    def interfere(self, what: str, n: int, user: str) -> None:
        """Something that interrupts the flow: a cancel, a /lock, or a stale deploy job."""
        if what == "cancel":
            self.cancel(n, user)
        elif what == "lock":
            self.slash_lock(user)
        elif self.lock is None:
            self.worker_tries_any(n)

    def cancel(self, n: int, user: str) -> None:
        """Someone cancels a release or the batch."""
        current = self.pick(n)
        if current is None:
            return
        try:
            change = environment.cancel(self.env, current, by=user, at=self.now())
        except InvalidTransition:
            assert current.state not in DECIDING | {S.COLLECTING}
            return
        assert current.state in DECIDING | {S.COLLECTING}
        (cancelled,) = change.releases
        assert cancelled.state is S.CANCELLED and cancelled.version == current.version + 1
        self.write(cancelled, env=change.env)

    @precondition(lambda self: self.env.history)
    @rule(user=users, then_deploy=st.booleans())
    def slash_rollback(self, user: str, then_deploy: bool) -> None:
        """bot.services.intents.request_rollback, maybe followed by a worker deploying it."""
        self.request_rollback(user)
        if then_deploy and self.lock is None and self.model_approved():
            self.whole_deploy(True)

    def request_rollback(self, user: str) -> None:
        active = self.get(self.env.active_release)
        release_id = self.new_id()
        try:
            change = environment.request_rollback(
                self.env, active, release_id=release_id, by=user, at=self.now()
            )
        except ReleaseInProgress:
            assert active is not None
            assert active.state in DEPLOY_STATES or (
                active.kind is ReleaseKind.ROLLBACK and active.is_active
            )
            return
        except NothingToRollBackTo:
            assert not (self.was_live - self.bad - {self.env.live_sha})
            return
        rollback = change.releases[-1]
        assert rollback.id == release_id and rollback.state is S.APPROVED
        for other in change.releases[:-1]:
            assert other.id == self.env.active_release and other.state is S.SUPERSEDED
        self.write(*change.releases, env=change.env)

    def slash_lock(self, user: str) -> None:
        """bot.services.intents: /lock (a second /lock is refused)."""
        if self.env.lock is not None:
            with pytest.raises(AlreadyLocked):
                environment.lock(self.env, by=user, reason="again", at=self.now())
            return
        env = environment.lock(self.env, by=user, reason="freeze", at=self.now())
        assert env.lock is not None and env.lock.by == user
        with pytest.raises(AlreadyLocked):
            environment.lock(env, by=user, reason="again", at=self.now())
        self.write(env=env)

    @precondition(lambda self: self.env.lock is not None)
    @rule()
    def slash_unlock(self) -> None:
        """bot.services.intents: /unlock (a second /unlock is refused)."""
        env = environment.unlock(self.env)
        assert env.lock is None
        with pytest.raises(NotLocked):
            environment.unlock(env)
        self.write(env=env)

    # the deploy worker ---------------------------------------------------------------------

    def model_approved(self) -> list[Release]:
        """Releases the reference model says a worker may deploy now."""
        ready = []
        for r in self.releases.values():
            if r.state not in DECIDING or environment.waits_for_lock(self.env, r):
                continue
            if r.kind is ReleaseKind.ROLLBACK or self.frozen[r.id].approved():
                ready.append(r)
        return sorted(ready, key=lambda r: r.id)

    def start_deploy(self, current: Release) -> Release | None:
        """bot.services.deploys.DeployRunner._claim under a fresh deploy lock (None: not claimed)."""
        if current.state is not S.APPROVED or environment.waits_for_lock(self.env, current):
            return None
        self.fence += 1
        previous = self.env.live_sha if current.kind is ReleaseKind.RELEASE else current.base_sha
        started = self.apply(current, rel.StartDeploy(fence=self.fence, previous_sha=previous))
        self.write(started)
        self.lock = started.id
        return started

    @precondition(lambda self: self.lock is None and self.model_approved())
    @rule(n=st.integers(min_value=0, max_value=10))
    def worker_deploys(self, n: int) -> None:
        """A worker takes the deploy lock and starts a release the model says is approved."""
        ready = self.model_approved()
        current = ready[n % len(ready)]
        assert current.state is S.APPROVED, f"{current.id} is approved but {current.state}"
        assert self.start_deploy(current) is not None

    def worker_tries_any(self, n: int) -> None:
        """A deploy job for any release: only approved ones start, and the domain agrees."""
        current = self.pick(n)
        assert current is not None
        if self.start_deploy(current) is None and current.state is not S.APPROVED:
            with pytest.raises(DomainError):
                rel.apply(current, rel.StartDeploy(fence=0, previous_sha=None), at=self.clock)

    def holder(self, *states: ReleaseState) -> Release | None:
        current = self.get(self.lock)
        return current if current is not None and current.state in states else None

    @precondition(lambda self: self.holder(*DEPLOY_STATES))
    @rule(
        name=st.sampled_from(["pull", "start", "health"]),
        status=st.sampled_from(list(StepStatus)),
    )
    def progress(self, name: str, status: StepStatus) -> None:
        current = self.holder(*DEPLOY_STATES)
        assert current is not None
        self.write(self.apply(current, rel.Progress(step=Step(name, status))))

    @precondition(lambda self: self.holder(S.DEPLOYING))
    @rule(ok=st.sampled_from([True, True, False]))
    def deploy_finished(self, ok: bool) -> None:
        """The backend finished the deploy (or failed it, which skips the health check)."""
        current = self.holder(S.DEPLOYING)
        assert current is not None
        if ok:
            self.write(self.apply(current, rel.DeployFinished()))
        else:
            self.fail(current)

    @precondition(lambda self: self.holder(S.VERIFYING))
    @rule(healthy=st.sampled_from([True, True, False]))
    def health_checked(self, healthy: bool) -> None:
        current = self.holder(S.VERIFYING)
        assert current is not None
        if healthy:
            self.went_live(current)
        else:
            self.fail(current)

    @precondition(lambda self: self.holder(S.ROLLING_BACK))
    @rule(healthy=st.booleans())
    def rollback_finished(self, healthy: bool) -> None:
        current = self.holder(S.ROLLING_BACK)
        assert current is not None
        done = self.apply(current, rel.FinishRollback(healthy=healthy, detail="502"))
        self.finished_unhealthy(done)

    @precondition(lambda self: self.lock is None and self.model_approved())
    @rule(healthy=st.sampled_from([True, True, False]))
    def whole_deploy(self, healthy: bool) -> None:
        """A worker runs one approved release start to finish, each step its own write."""
        self.worker_deploys(0)
        current = self.holder(S.DEPLOYING)
        assert current is not None
        self.write(self.apply(current, rel.DeployFinished()))
        current = self.holder(S.VERIFYING)
        assert current is not None
        if healthy:
            self.went_live(current)
            return
        self.fail(current)
        if self.holder(S.ROLLING_BACK):
            self.rollback_finished(True)

    def went_live(self, current: Release) -> None:
        live = self.apply(current, rel.MarkHealthy())
        assert live.head_sha is not None
        if live.kind is ReleaseKind.ROLLBACK and self.env.live_sha:
            self.bad.add(self.env.live_sha)
        self.bad.discard(live.head_sha)
        self.was_live.add(live.head_sha)
        self.write(live, env=environment.went_live(self.env, live, at=self.clock))
        assert self.env.live_sha == live.head_sha
        self.lock = None

    def fail(self, current: Release) -> None:
        """bot.services.deploys: failed and rolling back in one write when there is a previous sha."""
        if current.kind is ReleaseKind.ROLLBACK or current.previous_sha is None:
            self.finished_unhealthy(
                self.apply(current, rel.MarkFailed(reason="health check failed: 503"))
            )
        else:
            self.write(self.apply(current, rel.StartRollback(reason="health check failed: 503")))

    def finished_unhealthy(self, done: Release) -> None:
        """bot.services.deploys.DeployRunner._after_failure."""
        if done.head_sha and done.head_sha != self.env.live_sha:
            self.bad.add(done.head_sha)
        env = environment.finished_unhealthy(self.env, done)
        if done.kind is ReleaseKind.RELEASE and self.lock_on_failure:
            env = environment.lock_after_failure(env, done, at=self.clock)
        self.write(done, env=env)
        self.lock = None

    # invariants ----------------------------------------------------------------------------

    @invariant()
    def at_most_one_active_release(self) -> None:
        active = sorted(r.id for r in self.releases.values() if r.is_active)
        assert len(active) <= 1, f"several active releases: {active}"
        if active:
            assert self.env.active_release == active[0]

    @invariant()
    def batch_is_collecting(self) -> None:
        batch = self.get(self.env.batch_release)
        assert self.env.batch_release is None or (batch is not None and batch.state is S.COLLECTING)
        collecting = [r.id for r in self.releases.values() if r.state is S.COLLECTING]
        assert collecting == ([self.env.batch_release] if self.env.batch_release else [])

    @invariant()
    def nothing_stored_mentions_anyone(self) -> None:
        """Stored state is plain data: mentions are made when rendering, never kept."""
        docs = [env_to_doc(self.env), *(release_to_doc(r) for r in self.releases.values())]
        for doc in docs:
            stored = json.dumps(doc)
            assert "<@" not in stored and "<#" not in stored, stored

    @invariant()
    def lock_holder_is_deploying(self) -> None:
        if self.lock is not None:
            assert self.releases[self.lock].state in DEPLOY_STATES

    @invariant()
    def approved_means_reference_approved(self) -> None:
        for rid, info in self.frozen.items():
            state = self.releases[rid].state
            if state in DECIDING:
                assert (state is S.APPROVED) == info.approved(), rid


FAST = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_release_state_machine() -> None:
    """Random histories keep every approval, single-deploy and single-active-release invariant."""
    run_state_machine_as_test(ReleaseModel, settings=FAST)


def test_scripted_history_reaches_every_path() -> None:
    """A scripted history drives the model through approval, live, rollback and stale batches."""
    m = ReleaseModel()
    m.configure(approval_required=True, stand_ins=(), lock_on_failure=False)
    m.merge_commit(AUTHORS[0], [], True)
    m.slash_release(BOB, False)
    first = m.env.active_release
    assert first is not None and m.releases[first].state is S.AWAITING_APPROVAL
    m.react(-1, ALICE, rel.Verdict.APPROVE, True)
    assert m.releases[first].state is S.APPROVED
    m.worker_deploys(0)
    m.deploy_finished(True)
    m.health_checked(True)
    m.merge_commit(AUTHORS[4], [AUTHORS[2]], True)
    m.slash_release(CAROL, False)
    second = m.env.active_release
    assert second is not None
    m.react(-1, OUTSIDER, rel.Verdict.BLOCK, True)  # refused: not involved
    m.react(-1, BOB, rel.Verdict.BLOCK, True)
    assert m.releases[second].state is S.BLOCKED
    m.everyone_approves()
    assert m.releases[second].state is S.BLOCKED
    m.react(-1, BOB, rel.Verdict.BLOCK, False)
    assert m.releases[second].state is S.APPROVED
    m.merge_commit(AUTHORS[3], [], True)  # counted on top of the frozen release
    third = m.env.batch_release
    m.whole_deploy(True)
    m.slash_rollback(ALICE, False)
    rollback = m.env.active_release
    assert rollback is not None and m.releases[rollback].kind is ReleaseKind.ROLLBACK
    m.whole_deploy(True)
    assert m.env.live_sha == m.branch[0].sha
    m.slash_release(CAROL, False)  # the batch still counts from the rolled-back sha: refused
    assert m.env.batch_release == third and m.env.active_release is None
    m.run_collector()
    m.slash_release(CAROL, False)
    assert m.env.active_release == third
    assert m.deployed == {first, second, rollback}
    m.at_most_one_active_release()
    m.batch_is_collecting()
    m.approved_means_reference_approved()
