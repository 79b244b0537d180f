"""Workers dying, pausing and failing: nothing lost, nothing twice.

Workers are real `shipmate worker` processes, so kill -9 and SIGSTOP are real. An
"effective deploy" is a ``done`` line in the deploy log by a worker whose state
transition for that deploy was accepted (the worker logs it once the fenced write went
through): a killed or fenced worker's script may still finish, but it changes nothing.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from functools import partial

import pytest

from bot.domain.models import ReleaseState
from tests.chaos.conftest import (
    CHANNEL,
    DeployLine,
    Proc,
    Rig,
    RigFactory,
    accepted,
    report,
)

pytestmark = pytest.mark.chaos

#: short enough that a takeover happens in well under a second
FAST = {"lock_ttl": "500ms", "reclaim_idle": "500ms", "max_deliveries": "5"}
#: the production defaults (30 s lock lifetime and reclaim idle time): a dead worker is
#: told from a live one by its liveness key alone
PRODUCTION = {"max_deliveries": "5"}
#: a dead worker's deploy is taken over within this many seconds of its death
RECOVERY_LIMIT = 5.0

KILL_RUNS = 30
PAUSE_RUNS = 6


def _says(proc: Proc, since: int, texts: tuple[str, ...]) -> bool:
    log = proc.text(since)
    return any(text in log for text in texts)


def effective(rig: Rig, since: int, release_id: str, sha: str, *, rolled_back: bool) -> list[int]:
    """Pids of the ``done`` lines for ``sha`` whose worker's transition was accepted."""
    if rolled_back:
        mark = f"release {release_id}: rolled back to {sha} under fence"
    else:
        mark = f"release {release_id}: {sha} deployed under fence"
    winners = {w.pid for w in rig.workers if accepted(w, mark)}
    return [
        d.pid for d in rig.deploys(since) if d.what == "done" and d.sha == sha and d.pid in winners
    ]


async def test_kill_9_worker_mid_deploy(make_rig: RigFactory) -> None:
    """A worker killed in the middle of a deploy (or of the rollback after a failed health
    check), with the production timings: another worker takes the deploy over within
    RECOVERY_LIMIT seconds, the killed worker's script dies with it (before the new owner
    starts), the release ends live or rolled back, and the sha it ends on was deployed
    effectively exactly once."""
    rig = await make_rig(**PRODUCTION)
    await rig.start(workers=2)
    await rig.first_live("staging")
    outcomes: Counter[str] = Counter()
    single = orphans = overlapped = 0
    recovery: list[float] = []
    victims: list[int] = []
    for run in range(KILL_RUNS):
        # 0: kill during the deploy of a good sha -> live
        # 1: kill during the deploy of a bad sha -> redeployed, unhealthy, rolled back
        # 2: kill during the automatic rollback of a bad sha -> the rollback is resumed
        kind = run % 3
        previous = (await rig.env_doc("staging")).live_sha
        assert previous is not None
        sha = rig.commit(f"Change {run}", bad=kind > 0)
        await rig.collected("staging", sha)
        since = rig.log_size()
        release_id = await rig.release("staging")
        target = previous if kind == 2 else sha
        start = await rig.deploy_line("start", target, since)
        victim = rig.worker(start.pid)
        killed_at = time.monotonic()
        victim.kill9()
        victims.append(victim.pid)
        rig.spawn_worker()
        # the new owner's first step: its deploy script starts
        await rig.deploy_line("start", target, since, not_pid=victim.pid)
        recovery.append(time.monotonic() - killed_at)
        # a new owner never starts beside a script of the dead one
        orphans += len(rig.scripts_running(victim.pid))

        final = await rig.finished(release_id)
        expected = ReleaseState.LIVE if kind == 0 else ReleaseState.ROLLED_BACK
        assert final.state is expected, (run, final.state, final.reason, rig.diagnostics())
        assert final.state is ReleaseState.LIVE or final.healthy_after_rollback
        # the thread is told after the final write (and after the worker logs it)
        told = (
            f"Release {release_id} is live"
            if kind == 0
            else f"Rolled back: *staging* runs `{previous[:7]}` again"
        )
        await rig.until(partial(rig.posts, told), what=f"the thread to say {told!r}")
        runs_now = sha if kind == 0 else previous
        env = await rig.env_doc("staging")
        assert env.live_sha == runs_now
        winners = effective(rig, since, release_id, runs_now, rolled_back=kind > 0)
        if len(winners) != 1:
            pytest.fail(
                f"run {run}: effective deploys of {runs_now[:7]} by {winners}\n"
                f"{rig.deploys(since)}\n{rig.diagnostics()}"
            )
        assert victim.pid not in winners
        outcomes[final.state.value] += 1
        single += 1
        # the killed worker's script died with it: it never finished
        lines = rig.deploys(since)
        overlapped += sum(
            1 for d in lines if d == DeployLine("done", victim.pid, target, "staging")
        )
    await rig.drained()
    live_posts = len(rig.posts("is live on *staging*"))
    assert await rig.dead_letters() == []
    orphans += sum(len(rig.scripts_running(pid)) for pid in victims)
    report(
        f"kill -9 worker mid-deploy (production timings): {KILL_RUNS} runs, "
        f"{outcomes['live']} live, {outcomes['rolled_back']} rolled back, {single} single "
        f"effective deploys; kill to the new owner's deploy start: median "
        f"{statistics.median(recovery):.2f}s, max {max(recovery):.2f}s; {orphans} scripts of "
        f"killed workers still running, {overlapped} finished; "
        f"{live_posts} 'is live' posts for {outcomes['live'] + 1} live releases; 0 jobs pending or dead)"
    )
    assert live_posts == outcomes["live"] + 1  # + the first release
    assert (orphans, overlapped) == (0, 0)
    assert max(recovery) < RECOVERY_LIMIT, recovery


async def test_paused_worker_cannot_deploy_after_resuming(make_rig: RigFactory) -> None:
    """A worker stopped (SIGSTOP) past its lease while its deploy runs, then resumed: the
    other worker has taken the release over under a newer fence; the resumed one marks
    nothing, posts nothing false, starts no deploy, stops its own script if it still
    runs, and leaves the job (still pending) to the worker that owns it now."""
    rig = await make_rig(**FAST)
    await rig.start(workers=2)
    await rig.first_live("staging")
    stopped_scripts = finished_while_paused = 0
    for run in range(PAUSE_RUNS):
        # even runs: resume while the other worker's deploy is still running
        # odd runs: resume after the other worker has made the release live
        overlapping = run % 2 == 0
        sha = rig.commit(f"Paused change {run}")
        await rig.collected("staging", sha)
        rig.close_gate()
        since = rig.log_size()
        release_id = await rig.release("staging")
        first: DeployLine = await rig.deploy_line("start", sha, since)
        paused = rig.worker(first.pid)
        paused.pause()
        fence_before = (await rig.release_doc(release_id)).fence
        assert fence_before is not None

        other_start = await rig.deploy_line("start", sha, since, not_pid=paused.pid)
        other = rig.worker(other_start.pid)
        taken = await rig.release_doc(release_id)
        assert taken.fence is not None and taken.fence > fence_before
        assert taken.state is ReleaseState.DEPLOYING
        job = await rig.job_id("deploy", release_id)
        if not overlapping:
            rig.open_gate()
            assert (await rig.finished(release_id)).state is ReleaseState.LIVE

        resumed_at, log_mark = paused.size(), rig.log_size()
        paused.resume()
        notice = (
            f"another worker owns release {release_id}",
            f"stopped its deploy of {release_id}",
        )
        await rig.until(
            partial(_says, paused, resumed_at, notice),
            what="the resumed worker to notice it lost the lease",
        )
        if overlapping:
            # the job stayed with the worker that reclaimed it: not taken back, not acked
            rows = [row for row in await rig.pending() if row["message_id"] == job]
            assert [row["consumer"] for row in rows] == [other.consumer], rows
            rig.open_gate()
        final = await rig.finished(release_id)
        await rig.drained()

        assert final.state is ReleaseState.LIVE
        assert final.fence == taken.fence
        after = rig.deploys(log_mark)
        assert not [d for d in after if d.pid == paused.pid and d.what == "start"], after
        paused_done = [d for d in rig.deploys(since) if d.pid == paused.pid and d.what == "done"]
        if overlapping:
            assert paused_done == []  # its script was stopped the moment it resumed
            stopped_scripts += 1
        else:
            finished_while_paused += len(paused_done)
        # the release was advanced only by the other worker
        for mark in (f"release {release_id}: {sha} deployed", f"release {release_id} is live"):
            assert accepted(other, mark), mark
            assert not accepted(paused, mark), mark
        assert effective(rig, since, release_id, sha, rolled_back=False) == [other.pid]
        await rig.until(
            partial(rig.posts, f"Release {release_id} is live"), what="the thread to say live"
        )
        assert len(rig.posts(f"Release {release_id} is live")) == 1
    report(
        f"SIGSTOP worker past its lease mid-deploy, then SIGCONT: {PAUSE_RUNS} runs, "
        f"{PAUSE_RUNS} live by the other worker, 0 deploy starts and 0 state changes by the "
        f"resumed worker, {stopped_scripts} of its scripts stopped on resume, "
        f"{finished_while_paused} finished while it was paused (not effective), 1 'is live' post each"
    )


ARCHIVED_ENV = """\
  archive:
    approval: none
    channel: C0ARCHIVED
    backend: *shell
"""


async def test_a_job_that_keeps_failing_is_dead_lettered(make_rig: RigFactory) -> None:
    """An environment whose channel was archived: its batch message can never be posted,
    so that render job fails every time. After SHIPMATE_MAX_DELIVERIES tries it goes to the
    dead-letter stream, the release channel is told, and nothing is retried any more."""
    rig = await make_rig(
        extra_envs=ARCHIVED_ENV, lock_ttl="500ms", reclaim_idle="300ms", max_deliveries="3"
    )
    await rig.start(workers=2)
    # the first worker collects on start: a batch for every environment, one can't be shown

    async def dead() -> list[dict[str, str]]:
        return [d for d in await rig.dead_letters() if d.get("release", "").startswith("archive-")]

    letters = await rig.wait(dead, what="a dead letter for the archive batch")
    await rig.drained()
    letters = await dead()
    assert {d["kind"] for d in letters} == {"render"}
    assert all(d["tries"] == "3" for d in letters), letters
    tries = [
        c
        for c in rig.emulator.calls_to("chat.postMessage")
        if c.args.get("channel") == "C0ARCHIVED"
    ]
    assert all(c.error == "is_archived" for c in tries)
    assert len(tries) == 3 * len(letters)
    # no release is affected by a render job, so the channel is not told (log and metric are)
    notices = [m.text for m in rig.emulator.messages(CHANNEL) if "gave up" in m.text]
    assert notices == []
    # the other environments were not held up by it
    assert rig.posts("Next release to staging")
    report(
        f"job that always fails (render to an archived channel): {len(letters)} job(s), "
        f"{len(tries)} tries in all (max deliveries 3), {len(letters)} dead letter(s), "
        f"{len(notices)} notice(s) in the channel, 0 pending afterwards"
    )
