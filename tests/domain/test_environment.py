"""Decisions about an environment and its releases together."""

from __future__ import annotations

import pytest

from bot.domain import environment
from bot.domain import release as rel
from bot.domain.errors import (
    AlreadyLocked,
    BatchOutdated,
    InvalidTransition,
    NothingToRelease,
    NothingToRollBackTo,
    NotLocked,
    ReleaseInProgress,
)
from bot.domain.models import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    EnvState,
    LiveEntry,
    Release,
    ReleaseKind,
    ReleaseState,
)
from tests.domain.factories import (
    ALICE,
    BOB,
    ENV,
    REQUESTER,
    commit,
    env_state,
    release,
    rollback_release,
    sha,
)

S = ReleaseState
AT = 1_700_005_000.0
A, B, C, D = sha(0xA), sha(0xB), sha(0xC), sha(0xD)


def batch(rid: str = "prod-5", base: str | None = A, n: int = 2) -> Release:
    return release(S.COLLECTING, rid=rid, n_commits=n, base_sha=base)


def ask_release(
    env: EnvState,
    the_batch: Release | None,
    active: Release | None,
    *,
    approval_required: bool = True,
) -> environment.Change:
    return environment.request_release(
        env,
        the_batch,
        active,
        by=REQUESTER,
        approval_required=approval_required,
        stand_ins=(),
        at=AT,
    )


def test_request_release_freezes_batch_and_waits() -> None:
    """/release freezes the batch, makes it the active release and deploys nothing yet."""
    env = env_state(("prod-1", A), batch_release="prod-5")
    change = ask_release(env, batch(), None)
    (frozen,) = change.releases
    assert frozen.state is S.AWAITING_APPROVAL
    assert frozen.requested_by == REQUESTER
    assert change.env.active_release == "prod-5"
    assert change.env.batch_release is None
    assert change.deploy == ()


def test_request_release_without_approval_deploys_at_once() -> None:
    """With approval none the frozen release is approved and listed for deploy."""
    env = env_state(("prod-1", A), batch_release="prod-5")
    change = ask_release(env, batch(), None, approval_required=False)
    assert change.releases[0].state is S.APPROVED
    assert change.deploy == ("prod-5",)


@pytest.mark.parametrize("the_batch", [None, batch(n=0)], ids=["no-batch", "empty-batch"])
def test_request_release_with_nothing_to_release(the_batch: Release | None) -> None:
    """No batch or an empty batch is refused with NothingToRelease naming the environment."""
    with pytest.raises(NothingToRelease) as info:
        ask_release(env_state(("prod-1", A)), the_batch, None)
    assert f"*{ENV}*" in str(info.value)


@pytest.mark.parametrize("state", sorted(ACTIVE_STATES))
def test_request_release_refused_while_another_is_active(state: ReleaseState) -> None:
    """An active release makes /release fail with ReleaseInProgress naming it and its state."""
    active = release(state, rid="prod-4")
    with pytest.raises(ReleaseInProgress) as info:
        ask_release(env_state(("prod-1", A), active_release="prod-4"), batch(), active)
    assert info.value.release_id == "prod-4"
    assert "prod-4" in str(info.value)
    assert state.value.replace("_", " ") in str(info.value)
    assert "cancel" in str(info.value)


@pytest.mark.parametrize("state", [*sorted(TERMINAL_STATES - {S.FAILED}), S.COLLECTING], ids=str)
def test_request_release_ignores_finished_active(state: ReleaseState) -> None:
    """A finished release left as active_release does not stop the next /release."""
    active = release(state, rid="prod-4")
    change = ask_release(env_state(("prod-1", A), active_release="prod-4"), batch(), active)
    assert change.env.active_release == "prod-5"


def test_request_release_refused_while_a_failed_release_rolls_back() -> None:
    """A release that failed and is rolling back still owns the environment."""
    rolling = rel.apply(release(S.DEPLOYING, rid="prod-4"), rel.StartRollback(reason="503"), at=AT)
    env = env_state(("prod-1", A), active_release="prod-4", batch_release="prod-5")
    with pytest.raises(ReleaseInProgress):
        ask_release(env, batch(), rolling)


def test_batch_base_is_active_head_else_live() -> None:
    """New commits count from the active release's head, else from what runs."""
    env = env_state(("prod-1", A))
    assert environment.batch_base(env, None) == A
    assert environment.batch_base(env, release(S.AWAITING_APPROVAL, head_sha=C)) == C
    assert environment.batch_base(env, release(S.LIVE, head_sha=C)) == A
    assert environment.batch_base(env, release(S.CANCELLED, head_sha=C)) == A
    assert environment.batch_base(env, release(S.DEPLOYING, head_sha=None)) == A
    assert environment.batch_base(env_state(), None) is None


def test_new_batch() -> None:
    """new_batch creates an empty collecting release and points the environment at it."""
    change = environment.new_batch(env_state(("prod-1", A)), "prod-2", at=AT)
    (b,) = change.releases
    assert (b.id, b.env, b.state, b.created_at) == ("prod-2", ENV, S.COLLECTING, AT)
    assert change.env.batch_release == "prod-2"


def ask_rollback(env: EnvState, active: Release | None, rid: str = "prod-9") -> environment.Change:
    return environment.request_rollback(env, active, release_id=rid, by=REQUESTER, at=AT)


def test_rollback_targets_the_previous_live_release() -> None:
    """/rollback deploys the release live before the current one, approved and unsupervised."""
    env = env_state(("prod-1", A), ("prod-2", B), ("prod-3", C))
    change = ask_rollback(env, None)
    (rb,) = change.releases
    assert rb.kind is ReleaseKind.ROLLBACK
    assert rb.state is S.APPROVED
    assert rb.approval_required is False
    assert rb.head_sha == B
    assert rb.base_sha == C
    assert rb.rollback_target == "prod-2"
    assert rb.requested_by == REQUESTER
    assert change.deploy == ("prod-9",)
    assert change.env.active_release == "prod-9"


def test_rollback_skips_rolled_back_shas() -> None:
    """A sha that was rolled back from is never a rollback target."""
    env = env_state(("prod-1", A), ("prod-2", B), ("prod-3", C), rolled_back_shas=frozenset({B}))
    assert ask_rollback(env, None).releases[0].head_sha == A


def test_second_rollback_goes_further_back() -> None:
    """After one rollback went live, the next one goes further back, not to the bad sha."""
    env = env_state(("prod-1", A), ("prod-2", B), ("prod-3", C))
    rb = ask_rollback(env, None, rid="prod-4")
    env = rb.env
    live = rel.apply(
        rel.apply(
            rel.apply(rb.releases[0], rel.StartDeploy(fence=1, previous_sha=C), at=AT),
            rel.DeployFinished(),
            at=AT,
        ),
        rel.MarkHealthy(),
        at=AT,
    )
    env = environment.went_live(env, live, at=AT)
    assert env.live_sha == B
    assert env.rolled_back_shas == {C}
    second = ask_rollback(env, None, rid="prod-5").releases[0]
    assert second.head_sha == A
    assert second.rollback_target == "prod-1"


def test_rollback_with_nothing_earlier() -> None:
    """With only the current release in history there is nothing to roll back to."""
    for env in (
        env_state(),
        env_state(("prod-1", A)),
        env_state(("prod-1", A), ("prod-2", B), rolled_back_shas=frozenset({A})),
        env_state(("prod-1", A), ("prod-2", A)),
    ):
        with pytest.raises(NothingToRollBackTo) as info:
            ask_rollback(env, None)
        assert f"*{ENV}*" in str(info.value)


@pytest.mark.parametrize("state", [S.AWAITING_APPROVAL, S.BLOCKED, S.APPROVED])
def test_rollback_supersedes_a_release_still_deciding(state: ReleaseState) -> None:
    """A release not yet deploying is superseded by the rollback, which names itself."""
    active = release(state, rid="prod-4")
    env = env_state(("prod-1", A), ("prod-2", B), active_release="prod-4")
    change = ask_rollback(env, active)
    superseded, rb = change.releases
    assert superseded.id == "prod-4"
    assert superseded.state is S.SUPERSEDED
    assert superseded.reason is not None and "prod-9" in superseded.reason
    assert superseded.version == active.version + 1
    assert rb.id == "prod-9"
    assert change.env.active_release == "prod-9"


@pytest.mark.parametrize("state", [S.DEPLOYING, S.VERIFYING, S.ROLLING_BACK])
def test_rollback_refused_while_deploying(state: ReleaseState) -> None:
    """A release that is deploying is left to finish: /rollback raises ReleaseInProgress."""
    active = release(state, rid="prod-4")
    env = env_state(("prod-1", A), ("prod-2", B), active_release="prod-4")
    with pytest.raises(ReleaseInProgress) as info:
        ask_rollback(env, active)
    assert "prod-4" in str(info.value)


def test_rollback_refused_while_another_rollback_waits() -> None:
    """A second /rollback while the first is still queued is refused."""
    active = rollback_release(S.APPROVED, rid="prod-8")
    env = env_state(("prod-1", A), ("prod-2", B), active_release="prod-8")
    with pytest.raises(ReleaseInProgress):
        ask_rollback(env, active)


def test_rollback_refused_while_a_failed_release_rolls_back() -> None:
    """/rollback while the worker puts the last good release back would go past it: refused."""
    env = env_state(("prod-1", A), ("prod-2", B), active_release="prod-3")
    deploying = release(S.DEPLOYING, rid="prod-3", head_sha=C, previous_sha=B)
    rolling = rel.apply(deploying, rel.StartRollback(reason="503"), at=AT)
    with pytest.raises(ReleaseInProgress):
        ask_rollback(env, rolling)


def test_went_live_records_history_and_clears_active() -> None:
    """went_live makes the release what runs, appends history and frees the environment."""
    env = env_state(("prod-1", A), active_release="prod-2")
    live = release(S.LIVE, rid="prod-2", head_sha=B)
    after = environment.went_live(env, live, at=AT)
    assert (after.live_sha, after.live_release, after.active_release) == (B, "prod-2", None)
    assert after.history[-1] == LiveEntry(release_id="prod-2", sha=B, at=AT)
    assert after.rolled_back_shas == frozenset()


def test_went_live_keeps_someone_elses_active_release() -> None:
    """went_live clears active_release only when it names this release."""
    env = env_state(("prod-1", A), active_release="prod-7")
    after = environment.went_live(env, release(S.LIVE, rid="prod-2", head_sha=B), at=AT)
    assert after.active_release == "prod-7"


def test_went_live_of_rollback_marks_bad_sha() -> None:
    """A rollback going live marks the sha it replaced, and un-marks the sha it restores."""
    env = env_state(("prod-1", A), ("prod-2", B), rolled_back_shas=frozenset({A}))
    rb = rollback_release(S.LIVE, head_sha=A)
    after = environment.went_live(env, rb, at=AT)
    assert after.rolled_back_shas == {B}
    assert after.live_sha == A


def test_redeploying_a_rolled_back_sha_clears_it() -> None:
    """A normal release that deploys a rolled-back sha again takes it off the list."""
    env = env_state(("prod-1", A), rolled_back_shas=frozenset({B}))
    after = environment.went_live(env, release(S.LIVE, head_sha=B), at=AT)
    assert after.rolled_back_shas == frozenset()


def test_history_is_capped_at_fifty() -> None:
    """History keeps the fifty newest entries."""
    env = env_state(*[(f"prod-{i}", sha(i)) for i in range(1, 51)])
    after = environment.went_live(env, release(S.LIVE, rid="prod-51", head_sha=sha(51)), at=AT)
    assert len(after.history) == 50
    assert after.history[0].release_id == "prod-2"
    assert after.history[-1].release_id == "prod-51"


def test_finished_unhealthy_marks_head_and_frees_env() -> None:
    """A failed release's sha is marked rolled back and the environment is freed."""
    env = env_state(("prod-1", A), active_release="prod-2")
    failed = release(S.ROLLED_BACK, rid="prod-2", head_sha=B)
    after = environment.finished_unhealthy(env, failed)
    assert after.active_release is None
    assert after.rolled_back_shas == {B}
    assert after.live_sha == A


def test_finished_unhealthy_never_marks_what_runs() -> None:
    """A failure whose head is the live sha does not mark the live sha as rolled back."""
    env = env_state(("prod-1", A), active_release="prod-2")
    after = environment.finished_unhealthy(env, release(S.FAILED, rid="prod-2", head_sha=A))
    assert after.rolled_back_shas == frozenset()


@pytest.mark.parametrize("state", [S.COLLECTING, S.AWAITING_APPROVAL, S.BLOCKED, S.APPROVED])
def test_cancel_frees_batch_or_active(state: ReleaseState) -> None:
    """cancel() ends a batch or a deciding release and clears whichever slot held it."""
    slot = "batch_release" if state is S.COLLECTING else "active_release"
    env = env_state(("prod-1", A), **{slot: "prod-5"})
    change = environment.cancel(env, release(state, rid="prod-5"), by=ALICE, at=AT)
    (cancelled,) = change.releases
    assert cancelled.state is S.CANCELLED
    assert (cancelled.cancelled_by, cancelled.reason) == (ALICE, None)
    assert change.env.batch_release is None
    assert change.env.active_release is None


@pytest.mark.parametrize("state", [S.DEPLOYING, S.VERIFYING, S.LIVE, S.ROLLING_BACK])
def test_cancel_refused_once_deploying(state: ReleaseState) -> None:
    """A release that started deploying (or finished) cannot be cancelled."""
    env = env_state(("prod-1", A), active_release="prod-5")
    with pytest.raises(InvalidTransition) as info:
        environment.cancel(env, release(state, rid="prod-5"), by=ALICE, at=AT)
    assert "prod-5" in str(info.value)


def test_lock_and_unlock() -> None:
    """/lock holds releases (not rollbacks) until /unlock; locking twice or unlocking twice is refused."""
    env = environment.lock(env_state(("prod-1", A)), by=BOB, reason="freeze", at=AT)
    assert env.lock is not None and (env.lock.by, env.lock.reason) == (BOB, "freeze")
    assert environment.waits_for_lock(env, release(S.APPROVED))
    assert not environment.waits_for_lock(env, rollback_release(S.APPROVED))
    with pytest.raises(AlreadyLocked) as info:
        environment.lock(env, by=ALICE, reason="again", at=AT)
    assert "/unlock prod" in str(info.value)
    env = environment.unlock(env)
    assert env.lock is None
    assert not environment.waits_for_lock(env, release(S.APPROVED))
    with pytest.raises(NotLocked):
        environment.unlock(env)


def test_lock_after_failure_keeps_a_human_lock() -> None:
    """An automatic lock after a failure never replaces a lock a person set."""
    failed = release(S.ROLLED_BACK, rid="prod-5")
    auto = environment.lock_after_failure(env_state(("prod-1", A)), failed, at=AT)
    assert auto.lock is not None and auto.lock.automatic and "prod-5" in auto.lock.reason
    held = environment.lock(env_state(("prod-1", A)), by=BOB, reason="mine", at=AT)
    assert environment.lock_after_failure(held, failed, at=AT) == held


def test_release_after_rollback_does_not_skip_rolled_back_commits() -> None:
    """A batch counted from the sha that was just rolled back must not be frozen as is."""
    # prod-2 (B, by BOB) is live; the batch counts C from B
    env = env_state(("prod-1", A), ("prod-2", B), batch_release="prod-5")
    stale = release(
        S.COLLECTING, rid="prod-5", commits=(commit(0xC),), head_sha=C, base_sha=B, n_commits=1
    )
    assert environment.batch_base(env, None) == stale.base_sha
    # /rollback puts A back and goes live before the collector recounts the batch
    rb = ask_rollback(env, None).releases[0]
    env = environment.went_live(env, rb, at=AT)
    assert env.live_sha == A
    assert env.batch_release == "prod-5"
    # freezing it would ship B (just rolled back) without asking B's authors again
    with pytest.raises(BatchOutdated) as info:
        ask_release(env, stale, None)
    assert "*prod*" in str(info.value) and "try again" in str(info.value)


def test_people_untouched_by_env_decisions() -> None:
    """Environment decisions keep the release's people and commits as frozen."""
    env = env_state(("prod-1", A), batch_release="prod-5")
    b = batch()
    frozen = ask_release(env, b, None).releases[0]
    assert frozen.commits == b.commits
    assert frozen.people == b.people
    assert {p.slack_user for p in frozen.people} == {ALICE, BOB}
