"""Run one approved release: lock, deploy, check health, go live or roll back.

There is one path for releases, manual rollbacks and automatic rollbacks: deploy a sha
through the environment's backend, then check its health. Every state change is fenced
by the deploy lock, so a worker that lost its lock cannot mark anything live, and a
worker that finds its lease gone (it was paused, or cut off from Redis, for longer than
the lease lives) stops its own deploy at once. A worker that died mid-deploy leaves the
release to the next one that holds the lock: a deploy starts over, a rollback resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from bot import trace
from bot.adapters.locks import DeployLocks, Lease, LockLost
from bot.adapters.logs import bind
from bot.adapters.metrics import (
    APPROVAL_WAIT,
    DEPLOY_SECONDS,
    DEPLOYS,
    RECORDER,
    ROLLBACK_SECONDS,
    ROLLBACKS,
    Recorder,
)
from bot.adapters.slackapi import SlackGateway
from bot.adapters.store import Snapshot, Store, Write
from bot.domain import environment
from bot.domain import release as rel
from bot.domain.errors import ShipmateError
from bot.domain.jobs import collect_job
from bot.domain.models import EnvState, Release, ReleaseKind, ReleaseState, Step, StepStatus
from bot.domain.render import code_block, escape
from bot.services.renderer import Renderer
from deployer.base import (
    Backend,
    DeployerError,
    DeployTarget,
    Diagnostics,
    HealthResult,
    NativeHealth,
    Reporter,
)
from deployer.health import HealthSpec, check_health

log = logging.getLogger(__name__)
T = TypeVar("T")

S = ReleaseState


class Fenced(ShipmateError):
    """This worker's deploy lock was taken over; it must stop touching the release."""


#: states in which a deploy job still has work to do (the last three: its worker stopped)
_RUNNABLE = frozenset({S.APPROVED, S.DEPLOYING, S.VERIFYING, S.ROLLING_BACK})


async def _unless_lost(work: Coroutine[Any, Any, None], lost: asyncio.Event) -> None:
    """Run ``work``; cancel it and raise LockLost if ``lost`` is set first.

    Cancelling a shell deploy kills its process group, so a worker whose lease ran out
    while it was paused stops its deploy as soon as it runs again.
    """
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(lost.wait())
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # cancelled: the worker is stopping
        task.cancel()
        watch.cancel()
        await asyncio.gather(task, watch, return_exceptions=True)
        raise
    watch.cancel()
    await asyncio.gather(watch, return_exceptions=True)
    if task.done():
        task.result()  # its outcome, even if the lease ran out just as it finished
        return
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    raise LockLost("the deploy lock expired before the deploy finished")


#: characters of escaped output in one thread line, well inside the 40,000 Slack takes in a
#: message (escaping can make a batch of output grow fivefold); the newest part is kept
MAX_THREAD_OUTPUT = 12_000

#: how long a backend's own health signal (an image HEALTHCHECK) may take when none is configured
NATIVE_HEALTH_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class EnvironmentRuntime:
    backend: Backend
    health: HealthSpec | None
    #: lock the environment after an automatic rollback (config: lock_on_failure)
    lock_on_failure: bool = True


class ThreadReporter(Reporter):
    """Steps become fenced state changes (re-rendered into the message); details go to the thread.

    Both carry plain text from the backend: a step's detail is escaped when the message is
    rendered, a detail here, so nothing a deploy prints can ping or link as the bot.
    """

    def __init__(
        self, runner: DeployRunner, release: Release, lease: Lease, *, prefix: str = ""
    ) -> None:
        self.runner = runner
        self.release = release
        self.lease = lease
        self.prefix = prefix

    async def step(self, name: str, status: StepStatus, detail: str = "") -> None:
        step = Step(name=f"{self.prefix}{name}", status=status, detail=detail)
        await self.runner.transition(self.release, self.lease, rel.Progress(step=step))

    async def detail(self, text: str) -> None:
        # plain text from a script, a container or an engine: escaped, and shown as code
        await self.runner.thread(self.release, code_block(text, MAX_THREAD_OUTPUT))


class _Thread:
    """One release's thread during a deploy: lines are posted in order, after the message."""

    def __init__(self, runner: DeployRunner, release_id: str) -> None:
        self._runner = runner
        self._release_id = release_id
        self._posted = runner.background(runner.renderer.ensure_posted(release_id))
        self._last: asyncio.Future[None] | None = None

    def say(self, text: str) -> None:
        self._last = self._runner.background(self._send(self._last, text))

    async def _send(self, previous: asyncio.Future[None] | None, text: str) -> None:
        if previous is not None:
            with contextlib.suppress(Exception):
                await previous
        with contextlib.suppress(Exception):
            await self._posted
        await self._runner._post_in_thread(self._release_id, text)

    async def flush(self) -> None:
        for pending in (self._posted, self._last):
            if pending is not None:
                with contextlib.suppress(Exception):
                    await pending


class DeployRunner:
    def __init__(
        self,
        store: Store,
        locks: DeployLocks,
        renderer: Renderer,
        slack: SlackGateway,
        environments: Mapping[str, EnvironmentRuntime],
        *,
        clock: Callable[[], float] = time.time,
        lock_wait: float = 600.0,
        metrics: Recorder | None = None,
    ) -> None:
        self.metrics = metrics or RECORDER
        self.store = store
        self.locks = locks
        self.renderer = renderer
        self.slack = slack
        self.environments = environments
        self.clock = clock
        self.lock_wait = lock_wait
        self._threads: dict[str, _Thread] = {}
        self._background: set[asyncio.Future[Any]] = set()

    def background(self, work: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
        """Start ``work`` (a thread line, waiting for the message) without waiting for it;
        :meth:`close` ends whatever is still running when the worker stops."""
        future = asyncio.ensure_future(work)
        self._background.add(future)
        future.add_done_callback(self._background.discard)
        return future

    async def close(self) -> None:
        """Stop the background posts of a stopping worker: they use Redis and Slack, and
        must not outlive the connections the worker is about to close."""
        pending = list(self._background)
        for future in pending:
            future.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self._threads.clear()

    async def run(self, release_id: str, *, env: str) -> None:
        """Deploy ``release_id`` (a release of ``env``) if it still needs it.

        Raises LockLost when the lease ran out under this worker (it stopped its deploy;
        the job must stay pending so whoever holds the lock next finishes the release).
        """
        with bind(release=release_id, env=env):
            await self._run(release_id)

    async def _run(self, release_id: str) -> None:
        release = await self.store.release(release_id)
        if release is None or release.state not in _RUNNABLE:
            return  # already done or never approved: a repeated job is a no-op
        lease = await self.locks.acquire(release.env, wait=self.lock_wait)
        if lease is None:
            raise TimeoutError(
                f"deploy lock for {release.env} still held after {self.lock_wait:.0f}s"
            )
        trace.emit("deploy.lock.acquired", release=release_id, env=release.env, fence=lease.fence)
        async with self.locks.kept_alive(lease) as lost:
            # the stored release names its environment; the job's field only routes the log
            claimed = await self._claim(release_id, release.env, lease)
            if claimed is None:
                return
            trace.emit(
                "deploy.claimed", release=release_id, env=claimed.env, state=claimed.state.value
            )
            log.info(
                "release %s: %s %s under fence %d",
                release_id,
                "resuming the rollback to" if claimed.state is S.ROLLING_BACK else "deploying",
                (claimed.previous_sha if claimed.state is S.ROLLING_BACK else claimed.head_sha),
                lease.fence,
            )
            try:
                await _unless_lost(self._deploy_claimed(claimed, lease), lost)
            except Fenced:
                log.warning(
                    "lost the deploy lock for %s; another worker owns release %s",
                    release.env,
                    release_id,
                )
                return
            except LockLost:
                log.warning(
                    "the deploy lock for %s expired under this worker; stopped its deploy of %s",
                    release.env,
                    release_id,
                )
                raise
        await self.store.enqueue(collect_job())

    async def _deploy_claimed(self, claimed: Release, lease: Lease) -> None:
        # the message is posted alongside the deploy, not before it: an instant rollback
        # must not wait for Slack (thread lines queue until the message exists)
        if claimed.id not in self._threads:
            self._threads[claimed.id] = _Thread(self, claimed.id)
        try:
            await self._deploy_current(claimed, lease)
        finally:
            await self._flush_thread(claimed.id)

    async def _deploy_current(self, current: Release, lease: Lease) -> None:
        if current.state is S.ROLLING_BACK:
            await self.thread(
                current,
                ":warning: The worker rolling this release back stopped; rolling back again.",
            )
            await self._roll_back(current, lease, self.environments[current.env])
        else:
            await self._deploy_and_verify(current, lease)

    async def _claim(self, release_id: str, env: str, lease: Lease) -> Release | None:
        """Move the release to deploying under this lease; None if someone else got it.

        A release still deploying, verifying or rolling back has lost its worker: its
        lease expired, or this worker could not hold the lock now.
        """
        at = self.clock()

        def decide(snap: Snapshot) -> tuple[Write | None, tuple[Release, bool] | None]:
            """The claimed release, and whether this is its first deploy start."""
            current = snap.get(release_id)
            if current is None:
                return None, None
            if current.fence is not None and current.fence > lease.fence:
                # a newer lease claimed it while this one waited or was paused: fences only grow
                return None, None
            if current.state is S.ROLLING_BACK:
                # the previous sha must go back whatever happened to the worker doing it;
                # the rollback goes on under this lease (the fence is who owns the deploy,
                # not a state of the release)
                resumed = rel.apply(current, rel.ResumeRollback(fence=lease.fence), at=at)
                return Write(releases=[resumed]), (resumed, False)
            first = current.state is S.APPROVED
            if current.state in (S.DEPLOYING, S.VERIFYING):
                # a worker died mid-deploy: start over; deploys are idempotent
                current = rel.apply(
                    current, rel.Retry(reason="the previous worker stopped; deploying again"), at=at
                )
            if current.state is not S.APPROVED:
                return None, None
            if environment.waits_for_lock(snap.env, current):
                # /unlock enqueues this deploy again; the message shows the lock meanwhile
                return None, None
            previous = (
                snap.env.live_sha if current.kind is ReleaseKind.RELEASE else current.base_sha
            )
            started = rel.apply(
                current, rel.StartDeploy(fence=lease.fence, previous_sha=previous), at=at
            )
            return Write(releases=[started]), (started, first)

        claimed = await self.store.update(env, decide, extra=[release_id])
        if claimed is None:
            return None
        release, first = claimed
        # once per release: a deploy started over after its worker died waited no longer
        frozen, approved = release.frozen_at, release.approved_at
        measured = first and release.kind is ReleaseKind.RELEASE
        if measured and frozen is not None and approved is not None:
            self.metrics.observe(APPROVAL_WAIT, approved - frozen, env=release.env)
        return release

    async def transition(
        self,
        release: Release,
        lease: Lease,
        *events: rel.Event,
        env_change: Callable[[Snapshot, Release], Any] | None = None,
    ) -> Release:
        """Apply ``events`` in one atomic write, if this worker still holds the release's fence."""
        at = self.clock()

        def decide(snap: Snapshot) -> tuple[Write, Release]:
            current = snap.get(release.id)
            if current is None or current.fence != lease.fence:
                raise Fenced(f"release {release.id} is fenced by another worker")
            new = current
            for event in events:
                new = rel.apply(new, event, at=at)
            env = env_change(snap, new) if env_change else None
            return Write(env=env, releases=[new]), new

        return await self.store.update(release.env, decide, extra=[release.id])

    async def give_up(self, release_id: str, *, env: str, reason: str) -> Release | None:
        """A deploy job that kept failing: end its release as failed and free the environment,
        instead of leaving it deploying (which would block every later release).

        The release as it was before, or None when it had already ended: only the first dead
        job of a release changes it, so only that one is worth telling the channel about.
        ``reason`` is mrkdwn, shown as is."""
        at = self.clock()

        def decide(snap: Snapshot) -> tuple[Write | None, Release | None]:
            current = snap.get(release_id)
            if current is None or current.is_terminal or current.state is S.COLLECTING:
                return None, None
            failed = rel.apply(current, rel.GiveUp(reason=reason), at=at)
            return Write(env=self._after_failure(snap.env, failed), releases=[failed]), current

        given_up = await self.store.update(env, decide, extra=[release_id])
        if given_up is None:
            return None
        if given_up.state is S.ROLLING_BACK:
            self.metrics.inc(ROLLBACKS, env=given_up.env, trigger="automatic", outcome="gave_up")
        elif given_up.kind is ReleaseKind.ROLLBACK:
            self.metrics.inc(ROLLBACKS, env=given_up.env, trigger="manual", outcome="gave_up")
        else:
            self.metrics.inc(DEPLOYS, env=given_up.env, outcome="gave_up")
        return given_up

    async def thread(self, release: Release, text: str) -> None:
        """Queue a line for the release's thread; it goes out in order, in the background,
        once the message exists, so a deploy never waits on Slack."""
        thread = self._threads.get(release.id)
        if thread is None:
            thread = self._threads[release.id] = _Thread(self, release.id)
        thread.say(text)

    async def _post_in_thread(self, release_id: str, text: str) -> None:
        current = await self.store.release(release_id)
        if current is None or current.message_ts is None or current.channel is None:
            return
        try:
            await self.slack.post(current.channel, text, thread_ts=current.message_ts)
        except Exception:  # a lost thread line must never fail a deploy
            log.exception("could not post to the thread of %s", release_id)

    async def _flush_thread(self, release_id: str) -> None:
        thread = self._threads.pop(release_id, None)
        if thread is not None:
            await thread.flush()

    async def _deploy_and_verify(self, release: Release, lease: Lease) -> None:
        runtime = self.environments[release.env]
        assert release.head_sha is not None
        verb = "Rolling back" if release.kind is ReleaseKind.ROLLBACK else "Deploying"
        await self.thread(
            release, f"{verb} `{release.head_sha[:7]}` to *{release.env}* (release {release.id})."
        )
        ok, why = await self._ship(release, lease, release.head_sha, runtime, prefix="")
        if ok:
            await self._went_live(release, lease)
            return
        previous = release.previous_sha
        if release.kind is ReleaseKind.ROLLBACK or previous is None:
            # failing and freeing the environment is one write: no moment where it looks free
            failed = await self.transition(
                release,
                lease,
                rel.MarkFailed(reason=why),
                env_change=lambda snap, r: self._after_failure(snap.env, r),
            )
            self._deploy_ended(failed, healthy=False)
            tail = ""
            if failed.kind is ReleaseKind.RELEASE:
                tail = " Nothing to roll back to: this was the first release there."
            await self.thread(failed, f":x: Release {failed.id} failed: {why}.{tail}")
            await self._say_locked(failed)
            return
        # failed and rolling back in one write, so no /release slips in between
        rolling = await self.transition(release, lease, rel.StartRollback(reason=why))
        self._deploy_ended(rolling, healthy=False)
        await self.thread(rolling, f":x: {why}. Rolling back to `{previous[:7]}`.")
        await self._roll_back(rolling, lease, runtime)

    async def _roll_back(self, rolling: Release, lease: Lease, runtime: EnvironmentRuntime) -> None:
        """Put ``rolling.previous_sha`` back. Its duration counts from ``rolling.updated_at``:
        the failed deploy's end, or, for a rollback resumed from a worker that stopped, the
        moment this worker took it over."""
        previous = rolling.previous_sha
        assert previous is not None  # StartRollback requires it
        with trace.span("rollback", release=rolling.id, env=rolling.env, sha=previous):
            healthy, detail = await self._ship(
                rolling, lease, previous, runtime, prefix="rollback: "
            )
        done = await self.transition(
            rolling,
            lease,
            rel.FinishRollback(healthy=healthy, detail=detail),
            env_change=lambda snap, r: self._after_failure(snap.env, r),
        )
        self._rolled_back(done, started=rolling.updated_at, healthy=healthy)
        log.info(
            "release %s: rolled back to %s under fence %d (%s)",
            done.id,
            previous,
            lease.fence,
            "healthy" if healthy else "unhealthy",
        )
        if healthy:
            await self.thread(
                done,
                f":leftwards_arrow_with_hook: Rolled back: *{done.env}* runs `{previous[:7]}` again and it is healthy.",
            )
        else:
            await self.thread(
                done,
                f":rotating_light: Rolled back to `{previous[:7]}`, but it is not healthy either: {detail}. Nothing on *{done.env}* is healthy.",
            )
        await self._say_locked(done)

    async def _say_locked(self, release: Release) -> None:
        env = await self.store.env(release.env)
        if env.lock is not None and env.lock.automatic:
            await self.thread(
                release,
                f":lock: *{release.env}* is now locked so nobody re-releases this batch by accident. "
                f"Type `/unlock {release.env}` once it is fixed; `/rollback` still works.",
            )

    async def _ship(
        self, release: Release, lease: Lease, sha: str, runtime: EnvironmentRuntime, *, prefix: str
    ) -> tuple[bool, str]:
        """Deploy ``sha`` and check its health; (healthy, why not)."""
        reporter = ThreadReporter(self, release, lease, prefix=prefix)
        target = DeployTarget(env=release.env, sha=sha, fence=lease.fence, release=release.id)
        going_back = bool(prefix) or release.kind is ReleaseKind.ROLLBACK
        try:
            if not going_back:
                # a sha being gone back to already ran here; its artifact (a kept container)
                # is the deploy's own first lookup, and an instant rollback skips a second
                await runtime.backend.check_artifact(target)
            with trace.span("deploy.backend", release=release.id, env=release.env, sha=sha):
                await runtime.backend.deploy(target, reporter)
        except DeployerError as err:
            return False, escape(f"deploy of {sha[:7]} failed: {err}".splitlines()[0])
        if not prefix:
            await self.transition(release, lease, rel.DeployFinished())
            log.info("release %s: %s deployed under fence %d", release.id, sha, lease.fence)
        with trace.span("health", release=release.id, env=release.env, sha=sha):
            result = await self._health(runtime, target, reporter)
        if result.healthy:
            trace.emit("health.ok", release=release.id, env=release.env, sha=sha)
            return True, ""
        await self._diagnose(runtime, target, reporter)
        return False, escape(f"health check failed: {result.detail}")

    async def _diagnose(
        self, runtime: EnvironmentRuntime, target: DeployTarget, reporter: Reporter
    ) -> None:
        """Put what the backend knows about an unhealthy sha (its last log lines) in the thread."""
        if not isinstance(runtime.backend, Diagnostics):
            return
        try:
            text = await runtime.backend.diagnostics(target)
        except DeployerError as err:
            text = f"(could not read diagnostics: {err})"
        if text:
            await reporter.detail(f"{target.short_sha} on {target.env}:\n{text}")

    async def _health(
        self, runtime: EnvironmentRuntime, target: DeployTarget, reporter: Reporter
    ) -> HealthResult:
        if runtime.health is None and isinstance(runtime.backend, NativeHealth):
            return await runtime.backend.wait_healthy(
                target, reporter, timeout=NATIVE_HEALTH_TIMEOUT
            )
        if runtime.health is None:
            await reporter.step("health", StepStatus.OK, "no health check configured")
            return HealthResult(
                healthy=True, detail="no health check configured", attempts=0, elapsed=0.0
            )
        return await check_health(runtime.health, target, reporter)

    async def _went_live(self, release: Release, lease: Lease) -> None:
        at = self.clock()
        live = await self.transition(
            release,
            lease,
            rel.MarkHealthy(),
            env_change=lambda snap, r: environment.went_live(snap.env, r, at=at),
        )
        trace.emit("live", release=live.id, env=live.env, sha=live.head_sha)
        log.info("release %s is live (%s, fence %d)", live.id, live.head_sha, lease.fence)
        self._deploy_ended(live, healthy=True)
        sha = f"`{(live.head_sha or '')[:7]}`"
        if live.kind is ReleaseKind.ROLLBACK:
            text = f":leftwards_arrow_with_hook: Rollback {live.id} is done: *{live.env}* runs {sha} again and it is healthy."
        else:
            text = f":rocket: Release {live.id} is live on *{live.env}* ({sha})."
        await self.thread(live, text)

    def _deploy_ended(self, release: Release, *, healthy: bool) -> None:
        """Count a deploy that just ended (live, or failed with or without a rollback to
        follow): a release's in the deploy figures, a manual /rollback's in the rollback ones."""
        took = None
        if release.deploy_started_at is not None:
            took = (release.finished_at or release.updated_at) - release.deploy_started_at
        if release.kind is ReleaseKind.ROLLBACK:
            outcome = "healthy" if healthy else "unhealthy"
            self._count_rollback(release.env, "manual", outcome, took)
            return
        outcome = "live" if healthy else "failed"
        self.metrics.inc(DEPLOYS, env=release.env, outcome=outcome)
        if took is not None:
            self.metrics.observe(DEPLOY_SECONDS, took, env=release.env, outcome=outcome)

    def _rolled_back(self, done: Release, *, started: float, healthy: bool) -> None:
        took = (done.finished_at or done.updated_at) - started
        self._count_rollback(done.env, "automatic", "healthy" if healthy else "unhealthy", took)

    def _count_rollback(self, env: str, trigger: str, outcome: str, took: float | None) -> None:
        self.metrics.inc(ROLLBACKS, env=env, trigger=trigger, outcome=outcome)
        if took is not None:
            self.metrics.observe(ROLLBACK_SECONDS, took, env=env, trigger=trigger, outcome=outcome)

    def _after_failure(self, env: EnvState, release: Release) -> EnvState:
        env = environment.finished_unhealthy(env, release)
        runtime = self.environments.get(release.env)
        if release.kind is ReleaseKind.RELEASE and runtime is not None and runtime.lock_on_failure:
            env = environment.lock_after_failure(env, release, at=self.clock())
        return env
