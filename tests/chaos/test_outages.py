"""Outages of what shipmate depends on, for real: Redis gone for 30 s, the Docker daemon
stopped in the middle of a deploy, Slack answering 429 to every chat.update for 30 s.

shipmate's real web and worker run in this process (bot.local.stack, the same code as the
processes) against a private redis-server, the Slack emulator over real HTTP and, for
Docker, the machine's real dockerd. Waits are on conditions with deadlines; the only
durations are the outages themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from bot.adapters.keys import JOBS_GROUP
from bot.config.loader import load_config
from bot.domain.models import Release, ReleaseState
from bot.domain.render import render_release
from bot.local.demo import PEOPLE, DemoRepo
from bot.local.slackemu import SlackEmulator, payloads
from bot.local.stack import start_stack
from bot.runtime.app import connect_redis
from bot.services.renderer import options_for
from tests.chaos.conftest import report
from tests.conftest import RedisServer, free_port
from tests.dockerkit import DockerKit
from tests.e2e.harness import (
    ALICE,
    BOB,
    CAROL,
    CHANNEL,
    MALLORY,
    ONCALL,
    Team,
    rendered,
    write_config,
)

pytestmark = pytest.mark.chaos

OUTAGE = 30.0
#: how Slack (and the person waiting) sees a slash command: answered within this or failed
ACK_LIMIT = 3.0

GATED_DEPLOY = '''\
"""Deploy after the test opens the gate: a deploy that is running when the outage starts."""
import os, sys, time
from pathlib import Path
here = Path(__file__).resolve().parent
print("waiting for the gate", flush=True)
while not (here / "gate-open").exists():
    time.sleep(0.02)
os.execv(sys.executable, [sys.executable, str(here / "deploy.py"), *sys.argv[1:]])
'''

GATED_ENV = """\
  gated:
    approval: none
    backend:
      kind: shell
      deploy: ["{python}", "./gated.py", "{{sha}}", "{{env}}"]
      timeout: 2m
      env: {{DEMO_PORT: "{port}"}}
    health: {{http: "http://127.0.0.1:{port}/healthz", timeout: 5s, interval: 100ms}}
"""


# -- an in-process team on a production-like Redis client ----------------------------------


@dataclass
class Crew:
    team: Team
    redis: Redis
    redis_server: RedisServer
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    @property
    def emu(self) -> SlackEmulator:
        return self.team.emu

    async def release(self, release_id: str) -> Release:
        return await self.team.release_state(release_id)

    async def message_is_right(self, release_id: str) -> bool:
        """The release's Slack message is exactly the rendering of its state in Redis."""
        store = self.team.stack.store
        release = await store.release(release_id)
        if release is None or release.message_ts is None:
            return False
        env = await store.env(release.env)
        expected = render_release(release, options_for(self.team.config), lock=env.lock)
        shown = self.emu.message(CHANNEL, release.message_ts)
        return (
            shown is not None
            and shown.text == expected.text
            and json.dumps(shown.blocks, sort_keys=True)
            == json.dumps(expected.blocks, sort_keys=True)
        )


async def start_crew(
    workdir: Path, server: RedisServer, *, poll_every: str = "1h", extra: str = ""
) -> Crew:
    """The e2e team (same config, people, repo), on a Redis client made like production's
    (short timeouts: bot.runtime.app.connect_redis) so an outage looks the way it does in `web`."""
    repo = DemoRepo(workdir / "repo")
    repo.commit(ALICE, "Initial shop", {"app/health": "ok\n"})
    write_config(workdir, port=free_port(), staging_port=free_port(), extra=extra)
    path = workdir / "shipmate.yml"
    path.write_text(path.read_text().replace("poll_every: 1h", f"poll_every: {poll_every}"))
    config = load_config(path)
    emulator = SlackEmulator(signing_secret="test-signing-secret", bot_token="xoxb-test")
    await emulator.start()
    for user, (name, real, email) in PEOPLE.items():
        emulator.add_user(user, name=name, email=email, real_name=real)
    emulator.add_user(MALLORY, name="mallory", email="mallory@example.com", real_name="Mallory")
    emulator.add_channel(CHANNEL, name="releases")
    redis = connect_redis(server.url)
    stack = await start_stack(config, redis, emulator)
    team = Team(workdir=workdir, repo=repo, config=config, emulator=emulator, stack=stack)
    return Crew(team=team, redis=redis, redis_server=server)


async def stop_crew(crew: Crew, workdir: Path) -> None:
    for cleanup in reversed(crew.cleanups):
        with contextlib.suppress(Exception):
            await cleanup()
    await crew.team.stack.stop()
    await crew.team.emulator.stop()
    await crew.redis.aclose()
    for pidfile in list(workdir.glob("*.pid")):  # noqa: ASYNC240 - teardown, a few files
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pidfile.read_text()), signal.SIGTERM)


async def until(
    check: Callable[[], Awaitable[Any]], *, within: float, what: str, every: float = 0.05
) -> Any:
    """Poll an async condition until it is truthy; its value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = await check()
        if value:
            return value
        if loop.time() >= deadline:
            raise TimeoutError(f"not within {within:g}s: {what}")
        await asyncio.sleep(every)


async def state_is(crew: Crew, release_id: str, state: ReleaseState, within: float) -> float:
    """Wait until the release is in ``state``; the monotonic time it was seen."""

    async def reached() -> bool:
        return (await crew.release(release_id)).state is state

    try:
        await until(reached, within=within, what=f"{release_id} to be {state.value}")
    except TimeoutError as err:
        # what it did instead, for whoever reads a failure
        release = await crew.release(release_id)
        steps = "; ".join(f"{s.name} {s.status.value} {s.detail}" for s in release.steps)
        raise TimeoutError(
            f"{err}; it is {release.state.value} (fence {release.fence}, reason "
            f"{release.reason!r}); steps: {steps or 'none'}"
        ) from None
    return time.monotonic()


async def frozen_sandbox(team: Team) -> str:
    """Two authors' commits in a frozen sandbox release (sandbox-1); its message ts."""
    team.commit(ALICE, "Add cart page")
    team.commit(BOB, "Fix rounding")
    await team.collect()
    batch = await team.batch_message(containing="Fix rounding")
    answer = await team.emu.slash_command(ALICE, CHANNEL, "/release", "sandbox")
    assert "waiting for its authors" in answer.text, answer.text
    await team.wait_text(batch.ts, "waiting for approval")
    return batch.ts


def reaction_envelope(
    team: Team, kind: str, user: str, ts: str, name: str = "white_check_mark"
) -> bytes:
    message = team.emu.message(CHANNEL, ts)
    assert message is not None
    event = payloads.reaction_event(
        kind, user=user, name=name, msg=message, event_ts=team.emu.workspace.next_ts()
    )
    envelope = payloads.event_envelope(team.emu.identity, event, payloads.new_event_id())
    return json.dumps(envelope).encode()


async def deliver(team: Team, body: bytes, retry: int = 0) -> tuple[int, float]:
    """One signed delivery of an event body, as Slack's n-th retry; (status, seconds)."""
    headers = team.emu.signed_headers(body)
    if retry:
        headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_error"}
    started = time.monotonic()
    status, _ = await team.emu.send_raw(body, headers)
    return status, time.monotonic() - started


async def web_get(team: Team, path: str) -> tuple[int, str]:
    web = team.stack.web
    assert web is not None
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{web.port}{path}") as response,
    ):
        return response.status, await response.text()


async def durable_state(redis: Redis, *, skip: str) -> dict[str, Any]:
    """Every environment and release document, the message index and the id sequences
    (keys containing ``skip`` left out: a deploy the worker may resume at any moment)."""
    out: dict[str, Any] = {}
    for pattern in ("*:env:*", "*:release:*", "*:msg:*", "*:seq:*"):
        async for key in redis.scan_iter(pattern):
            if skip not in key:
                out[key] = await redis.get(key)
    return out


def worker_loops() -> dict[str, asyncio.Task[Any]]:
    """The worker's long-lived loops by kind; there is one consume loop per job stream."""
    loops: dict[str, asyncio.Task[Any]] = {}
    for t in asyncio.all_tasks():
        kind = t.get_name().split(" ", 1)[0]
        if kind in ("consume", "poll", "reclaim"):
            loops[t.get_name()] = t
    return loops


# -- 3. Redis unreachable for 30 s -----------------------------------------------------------


@pytest.fixture
async def redis_crew(tmp_path: Path, chaos_redis: RedisServer) -> AsyncIterator[Crew]:
    port = free_port()
    (tmp_path / "gated.py").write_text(GATED_DEPLOY)
    extra = GATED_ENV.format(python=sys.executable, port=port)
    crew = await start_crew(tmp_path, chaos_redis, poll_every="1s", extra=extra)
    try:
        yield crew
    finally:
        if chaos_redis.process is None:
            chaos_redis.start()
        await stop_crew(crew, tmp_path)


COMMANDS_DURING_OUTAGE = [
    # each would change something if it were applied
    (ALICE, "/release", "staging"),
    (ALICE, "/lock", "sandbox chaos drill"),
    (ONCALL, "/rollback", "sandbox"),
    (BOB, "/release", "sandbox"),
    (ALICE, "/unlock", "gated"),
]


async def test_redis_down_30s_answers_refuses_and_recovers(redis_crew: Crew) -> None:
    """Redis stopped for 30 s while a deploy runs and people keep typing and reacting:
    every slash command is answered within 3 s saying so, every event gets a 5xx, nothing
    is half-applied, and web and worker carry on by themselves once Redis is back."""
    crew, team, server = redis_crew, redis_crew.team, redis_crew.redis_server
    sandbox_ts = await frozen_sandbox(team)
    status, _ = await deliver(team, reaction_envelope(team, "reaction_added", ALICE, sandbox_ts))
    assert status == 200
    assert (await crew.release("sandbox-1")).approvals == {ALICE}

    # a deploy in flight: gated-1 is running its deploy command when Redis goes away
    gated_batch = await team.batch_message(containing="Fix rounding", env="gated")
    answer = await team.emu.slash_command(ALICE, CHANNEL, "/release", "gated")
    assert "deploying now" in answer.text, answer.text
    await team.wait_text(gated_batch.ts, "gated.py")
    assert (await crew.release("gated-1")).state is ReleaseState.DEPLOYING
    before = await durable_state(crew.redis, skip="gated")
    loops = worker_loops()
    assert sorted({name.split(" ", 1)[0] for name in loops}) == ["consume", "poll", "reclaim"]

    await asyncio.to_thread(server.stop)
    down_at = time.monotonic()
    (team.workdir / "gate-open").touch()  # the deploy finishes while Redis is away

    latencies: list[float] = []
    event_results: list[tuple[int, float]] = []
    events = [
        reaction_envelope(team, "reaction_added", CAROL, sandbox_ts),  # not involved
        reaction_envelope(team, "reaction_removed", CAROL, sandbox_ts),
        reaction_envelope(team, "reaction_added", BOB, sandbox_ts),  # the last approval
    ]
    health = await web_get(team, "/healthz")
    metrics = await web_get(team, "/metrics")
    i = 0
    while time.monotonic() - down_at < OUTAGE:
        user, command, text = COMMANDS_DURING_OUTAGE[i % len(COMMANDS_DURING_OUTAGE)]
        started = time.monotonic()
        answer = await team.emu.slash_command(user, CHANNEL, command, text)
        latencies.append(time.monotonic() - started)
        assert answer.status == 200 and answer.error is None, answer
        assert answer.response_type == "ephemeral", answer
        assert "database (Redis) is unreachable" in answer.text, answer.text
        assert "Nothing was changed" in answer.text, answer.text
        if i % 3 == 0:
            # a first delivery, then Slack's immediate retry, of one event per round
            body = events[(i // 3) % len(events)]
            event_results.append(await deliver(team, body))
            event_results.append(await deliver(team, body, retry=1))
        i += 1
        # pacing of the load (about two requests a second), not a wait for a condition
        await asyncio.sleep(0.5)
    assert health[0] == 503 and "shipmate_redis_up 0" in metrics[1]

    await asyncio.to_thread(server.start)
    up_at = time.monotonic()
    outage = up_at - down_at

    # nothing half-applied: every document is as it was when Redis went away
    assert await durable_state(crew.redis, skip="gated") == before
    assert all(status >= 500 for status, _ in event_results), event_results
    assert max(latencies) < ACK_LIMIT, max(latencies)
    assert max(s for _, s in event_results) < ACK_LIMIT

    # web: the next command is decided again
    attempts = 0

    async def web_answers() -> bool:
        nonlocal attempts
        attempts += 1
        answer = await team.emu.slash_command(BOB, CHANNEL, "/release", "sandbox")
        return "already awaiting approval" in answer.text

    await until(web_answers, within=10, what="web to decide with Redis again", every=0.1)
    web_back = time.monotonic() - up_at

    # Slack's later retries (about 1 and 5 minutes on) now land, each exactly once
    redelivered = [await deliver(team, body, retry=2) for body in events]
    again = [await deliver(team, body, retry=3) for body in events]
    assert [s for s, _ in redelivered + again] == [200] * (2 * len(events))
    await team.wait_ephemeral(CAROL, "has no commits in release sandbox-1")

    # the worker: the interrupted deploy is reclaimed and finishes; the approval deploys
    gated_live, sandbox_live = await asyncio.gather(
        state_is(crew, "gated-1", ReleaseState.LIVE, within=45),
        state_is(crew, "sandbox-1", ReleaseState.LIVE, within=45),
    )
    for release_id in ("gated-1", "sandbox-1"):
        await until(
            lambda rid=release_id: crew.message_is_right(rid),  # type: ignore[misc]
            within=20,
            what=f"the {release_id} message to show its final state",
        )
    message_right = time.monotonic() - up_at
    assert all(not t.done() for t in loops.values()), "consume, poll and reclaim survived"

    # each release went live once; the commands typed during the outage left no trace
    for env in ("gated", "sandbox"):
        history = (await team.stack.store.env(env)).history
        assert [h.release_id for h in history] == [f"{env}-1"], history
    staging = await team.stack.store.env("staging")
    sandbox = await team.stack.store.env("sandbox")
    assert staging.active_release is None and staging.live_sha is None
    assert sandbox.lock is None and staging.lock is None
    assert (await crew.release("sandbox-1")).approvals == {ALICE, BOB}
    assert team.thread_text(sandbox_ts).count("Deploying `") == 1

    # the poll loop collects by itself (no collect job is queued for this commit)
    collects = team.stack.store.keys.collects
    last_job: Any = await crew.redis.xinfo_stream(collects)
    team.commit(CAROL, "Chaos follow-up")
    await team.batch_message(containing="Chaos follow-up")
    later: Any = await crew.redis.xrange(collects, min=f"({last_job['last-generated-id']}")
    assert not [f for _, f in later if f.get("kind") == "collect"], "the poll loop collected"
    groups: Any = await crew.redis.xinfo_groups(team.stack.store.keys.jobs)
    assert next(g for g in groups if g["name"] == JOBS_GROUP)["consumers"] >= 1

    report(
        f"Redis down {outage:.0f} s: {len(latencies)} commands answered in max "
        f"{max(latencies):.2f} s (all 'unreachable, nothing changed'), {len(event_results)} "
        f"event deliveries -> 5xx, 0 half-applied; web deciding again after "
        f"{web_back:.2f} s ({attempts} try), in-flight deploy resumed and live "
        f"{gated_live - up_at:.1f} s after, redelivered approval live "
        f"{sandbox_live - up_at:.1f} s after, messages right after {message_right:.1f} s; "
        "consume/poll/reclaim alive"
    )


# -- 7. Slack answers 429 to every chat.update for 30 s -------------------------------------


@pytest.fixture
async def crew(tmp_path: Path, chaos_redis: RedisServer) -> AsyncIterator[Crew]:
    crew = await start_crew(tmp_path, chaos_redis)
    try:
        yield crew
    finally:
        await stop_crew(crew, tmp_path)


async def test_chat_update_429_for_30s_waits_and_ends_right(crew: Crew) -> None:
    """Every chat.update is refused with 429 for 30 s from the /release on: no chat.update
    before its Retry-After, the deploy is not held up by Slack, and the message ends right."""
    team = crew.team
    team.commit(BOB, "Faster search")
    await team.collect()
    batch = await team.batch_message(containing="Faster search", env="staging")

    team.emu.force_ratelimit("chat.update", OUTAGE)
    limited_at = time.monotonic()
    answer = await team.emu.slash_command(ALICE, CHANNEL, "/release", "staging")
    assert "deploying now" in answer.text, answer.text
    live_at = await state_is(crew, "staging-1", ReleaseState.LIVE, within=OUTAGE)
    await team.emu.wait_for(
        lambda: team.emu.find_message(CHANNEL, "Release staging-1 is live"),
        timeout=15,
        what="the thread to say it is live",
    )
    await until(
        lambda: crew.message_is_right("staging-1"),
        within=OUTAGE + 15,
        what="the release message to show the final state",
    )
    right_at = time.monotonic()

    updates = team.emu.calls_to("chat.update")
    limited = [c for c in updates if c.status == 429]
    assert limited, "the forced rate limit was hit"
    early = [
        (call, later)
        for call in limited
        for later in updates
        if call.retry_after is not None and call.at < later.at < call.at + call.retry_after - 0.05
    ]
    assert not early, f"chat.update before Retry-After: {early}"
    message = team.emu.message(CHANNEL, batch.ts)
    assert message is not None and "is live" in rendered(message)
    report(
        f"chat.update 429 for {OUTAGE:.0f} s: {len(limited)} x 429 (Retry-After "
        f"{max(c.retry_after or 0 for c in limited)} s), {len(updates)} chat.update calls, "
        f"0 before Retry-After; live in Redis after {live_at - limited_at:.1f} s, "
        f"message right after {right_at - limited_at:.1f} s"
    )


# -- 4. The Docker daemon stopped during a deploy (runs last: it stops the real dockerd) ------

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER_UP = REPO_ROOT / "scripts" / "docker-up.sh"
#: how scripts/docker-up.sh starts the engine; a dockerd started otherwise is not touched
DOCKERD_ARGV = ["dockerd", "--bridge=none", "--iptables=false", "--ip-masq=false"]

DOCKER_ENVS = """\
  box:
    approval: authors
    backend:
      kind: docker
      image: "{repository}:{{sha}}"
      container: {container}
      network: host
      env: {{PORT: "{port}"}}
      stop_timeout: 1s
    health: {{http: "http://127.0.0.1:{port}/healthz", timeout: 5s, interval: 100ms}}
  spare:
    approval: none
    backend:
      kind: docker
      image: "{repository}:{{sha}}"
      container: {container}-spare
      network: host
      env: {{PORT: "{spare_port}"}}
      stop_timeout: 1s
    health: {{http: "http://127.0.0.1:{spare_port}/healthz", timeout: 5s, interval: 100ms}}
"""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"  # an orphan nobody reaped yet has stopped all the same


def _dockerd_pids() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if (proc / "comm").read_text().strip() == "dockerd" and _running(int(proc.name)):
                    pids.append(int(proc.name))
    return pids


class Dockerd:
    """The machine's dockerd, stopped for real (SIGTERM: it stops its containers and
    exits) and started again exactly as scripts/docker-up.sh starts it, in a session of
    its own so that a Ctrl-C of pytest does not reach it."""

    def __init__(self) -> None:
        self.stops = 0

    @staticmethod
    def usable() -> str | None:
        """Why this machine's engine must not be stopped here, or None."""
        if os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock") not in (
            "unix:///var/run/docker.sock",
            "",
        ):
            return "DOCKER_HOST points at another engine"
        if os.geteuid() != 0:
            return "stopping and starting dockerd needs root"
        pids = _dockerd_pids()
        if len(pids) != 1:
            return f"expected one local dockerd, found {len(pids)}"
        argv = Path(f"/proc/{pids[0]}/cmdline").read_bytes().split(b"\0")
        if [a.decode() for a in argv if a] != DOCKERD_ARGV:
            return "dockerd was not started by scripts/docker-up.sh, so it is not restarted here"
        return None

    async def stop(self) -> float:
        """SIGTERM and wait for the process to exit; the seconds it took."""
        (pid,) = _dockerd_pids()
        started = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        self.stops += 1

        async def gone() -> bool:
            return not _running(pid)

        await until(gone, within=90, what="dockerd to exit", every=0.1)
        return time.monotonic() - started

    async def start(self) -> float:
        """scripts/docker-up.sh: starts dockerd, waits for `docker info` and swarm."""
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            str(DOCKER_UP),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, out.decode(errors="replace")
        return time.monotonic() - started

    def ensure_running(self) -> None:
        """For teardown, whatever happened: the engine is up again when the test ends."""
        if not _dockerd_pids():
            subprocess.run([str(DOCKER_UP)], check=True, timeout=120, start_new_session=True)


#: opt-in outside CI: stopping dockerd breaks Docker work in every other session on the machine
STOP_DOCKERD = "SHIPMATE_STOP_DOCKERD"
#: one test at a time stops dockerd, across pytest processes on this machine
DOCKERD_LOCK = Path("/tmp/shipmate-chaos-dockerd.lock")


@pytest.fixture
def dockerd(dockerkit: DockerKit) -> Iterator[Dockerd]:
    if os.environ.get("CI", "").lower() != "true" and os.environ.get(STOP_DOCKERD) != "1":
        pytest.skip(
            f"stops this machine's dockerd for about 30 s; run with {STOP_DOCKERD}=1 "
            "(CI runs it) when nothing else on the machine uses Docker"
        )
    reason = Dockerd.usable()
    if reason is not None:
        pytest.skip(reason)
    with DOCKERD_LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run of this test waits its turn
        daemon = Dockerd()
        try:
            yield daemon
        finally:
            daemon.ensure_running()


@pytest.fixture
async def docker_crew(
    tmp_path: Path, chaos_redis: RedisServer, dockerkit: DockerKit, dockerd: Dockerd
) -> AsyncIterator[tuple[Crew, DockerKit, str, int]]:
    repository, port = dockerkit.name("shop"), free_port()
    extra = DOCKER_ENVS.format(
        repository=repository,
        container=dockerkit.name("box"),
        port=port,
        spare_port=free_port(),
    )
    crew = await start_crew(tmp_path, chaos_redis, extra=extra)
    try:
        yield crew, dockerkit, repository, port
    finally:
        await stop_crew(crew, tmp_path)
        # the containers the engine stopped are shipmate's to remove, not this machine's
        await asyncio.to_thread(dockerd.ensure_running)


async def _version(port: int) -> str | None:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"http://127.0.0.1:{port}/version", timeout=aiohttp.ClientTimeout(total=1)
            ) as response,
        ):
            return (await response.text()).strip()
    except (aiohttp.ClientError, TimeoutError):
        return None


async def _released(team: Team, env: str, containing: str) -> str:
    await team.collect()
    batch = await team.batch_message(containing=containing, env=env)
    answer = await team.emu.slash_command(ALICE, CHANNEL, "/release", env)
    assert ":warning:" not in answer.text, answer.text
    return batch.ts


async def test_docker_stopped_during_a_deploy_waits_resumes_or_fails_clearly(
    docker_crew: tuple[Crew, DockerKit, str, int],
    dockerd: Dockerd,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real dockerd stopped while releases deploy. Back within the wait: the deploy says
    it is waiting and then goes live. Away longer: the release fails saying where Docker
    was expected, nothing is marked live, and /release works again once Docker is back."""
    crew, kit, repository, port = docker_crew
    team = crew.team
    first = team.commit(ALICE, "Cart page")
    kit.build(repository, first)
    ts = await _released(team, "box", "Cart page")
    await team.emu.add_reaction(ALICE, CHANNEL, ts, "white_check_mark")
    await state_is(crew, "box-1", ReleaseState.LIVE, within=30)
    assert await _version(port) == first[:7]

    # A: stopped after /release, before the last approval starts the deploy; back in ~10 s
    second = team.commit(BOB, "Faster search")
    kit.build(repository, second)
    ts = await _released(team, "box", "Faster search")
    stop_took = await dockerd.stop()
    down_at = time.monotonic()
    assert await _version(port) is None, "the engine took the containers down with it"

    started = time.monotonic()
    refused = await team.emu.slash_command(ALICE, CHANNEL, "/release", "spare")
    refused_in = time.monotonic() - started
    assert refused_in < ACK_LIMIT and refused.response_type == "ephemeral", refused
    assert "Docker is not reachable at unix:///var/run/docker.sock" in refused.text, refused
    assert (await team.stack.store.env("spare")).active_release is None

    await team.emu.add_reaction(BOB, CHANNEL, ts, "white_check_mark")  # box-2 is Bob's alone
    waiting = await team.wait_text(ts, "waiting up to 120s for it to come back")
    said_in = time.monotonic() - down_at
    assert "Docker is not reachable at unix:///var/run/docker.sock" in rendered(waiting)
    assert (await crew.release("box-2")).state is ReleaseState.DEPLOYING
    assert (await team.stack.store.env("box")).live_sha == first, "no false live"

    start_took = await dockerd.start()
    back_at = time.monotonic()
    live_at = await state_is(crew, "box-2", ReleaseState.LIVE, within=60)
    assert await _version(port) == second[:7]
    await until(lambda: crew.message_is_right("box-2"), within=15, what="box-2 message final")
    thread = team.thread_text(ts)
    assert thread.index("Docker is back (waited") < thread.index("Release box-2 is live")

    # B: away for longer than a deploy waits (4 s here): failed, said so, retried after
    monkeypatch.setattr("deployer.docker.RECONNECT_WAIT", 4.0)
    third = team.commit(CAROL, "New payment API")
    kit.build(repository, third)
    ts = await _released(team, "box", "New payment API")
    await dockerd.stop()
    await team.emu.add_reaction(CAROL, CHANNEL, ts, "white_check_mark")
    done = await team.wait_text(ts, "failed and the rollback is unhealthy too")
    await team.emu.wait_for(
        lambda: "Nothing on *box* is healthy" in team.thread_text(ts), what="the thread's verdict"
    )
    text = rendered(done) + "\n" + team.thread_text(ts)
    assert "Docker is not reachable at unix:///var/run/docker.sock" in text, text
    assert "gave up after waiting 4s for it" in text, text
    assert "is live" not in text, "no false live"
    failed = await crew.release("box-3")
    assert failed.state in (ReleaseState.ROLLED_BACK, ReleaseState.FAILED), failed.state
    box = await team.stack.store.env("box")
    assert box.live_sha == second and [h.release_id for h in box.history] == ["box-1", "box-2"]
    await dockerd.start()

    unlocked = await team.emu.slash_command(ALICE, CHANNEL, "/unlock", "box")
    assert "unlocked" in unlocked.text, unlocked.text
    retry_ts = await _released(team, "box", "New payment API")
    await team.emu.add_reaction(CAROL, CHANNEL, retry_ts, "white_check_mark")
    await state_is(crew, "box-4", ReleaseState.LIVE, within=60)
    assert await _version(port) == third[:7]
    await until(lambda: crew.message_is_right("box-4"), within=15, what="box-4 message final")

    report(
        f"Docker stopped during a deploy ({dockerd.stops} real dockerd stops, SIGTERM took "
        f"{stop_took:.1f} s): /release answered in {refused_in:.2f} s naming the socket; the "
        f"deploy said it was waiting {said_in:.2f} s after the stop, engine back in "
        f"{start_took:.1f} s, live {live_at - back_at:.1f} s later; a 4 s wait ran out -> "
        "release failed naming the socket, live sha unchanged, /unlock + /release went live "
        "after Docker was back; 0 false 'live'"
    )
