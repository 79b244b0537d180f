"""The chaos rig: `shipmate web` and `shipmate worker` as real processes against a private
redis-server (AOF on, appendfsync always) and the Slack emulator over real HTTP.

Processes are real so that ``kill -9`` and SIGSTOP are real. Each worker gets its own
config file and state directory (its own git mirror, as on its own machine). Deploys
go through the shell backend to a script that appends ``start <worker pid> <sha> <env>``
and ``done <worker pid> <sha> <env>`` to a log, waits while a gate file exists, and
takes ``deploy_seconds``; the health command fails for shas the test marked bad.
Every wait is on a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import RedisError

from bot.adapters.keys import JOBS_GROUP
from bot.adapters.store import Store
from bot.domain.jobs import collect_job
from bot.domain.models import EnvState, Release, ReleaseState
from bot.local.demo import DemoRepo
from bot.local.slackemu import SlackEmulator
from bot.runtime.app import make_store
from tests.conftest import RedisServer, free_port

T = TypeVar("T")

SHIPMATE = str(Path(sys.executable).with_name("shipmate"))
CHANNEL = "C0RELEASES"
SIGNING_SECRET = "chaos-signing-secret"
BOT_TOKEN = "xoxb-chaos"
RELEASER = "U0ALICE"
WAIT = 30.0
TERMINAL = frozenset(
    {ReleaseState.LIVE, ReleaseState.ROLLED_BACK, ReleaseState.FAILED, ReleaseState.SUPERSEDED}
)

#: authors with Slack users: (user id, name, e-mail)
PEOPLE = [("U0ALICE", "alice", "alice@example.com")] + [
    (f"U0DEV{i:02d}", f"dev{i:02d}", f"dev{i:02d}@example.com") for i in range(1, 41)
]

DEPLOY_SH = """#!/bin/sh
# chaos deploy: who (the worker's pid) starts and finishes which sha; waits while the gate
# file exists; takes a moment so a kill lands in the middle. The parent is the supervisor
# (deployer/supervise.py); the worker is its parent. Each script's own pid goes to a file,
# so a test can see whether a killed worker's script still runs.
worker=$(awk '{{print $4}}' /proc/$PPID/stat)
echo "$worker $$" >> {pids}
echo "start $worker $1 $2" >> {log}
while [ -e {gate} ]; do sleep 0.01; done
sleep {seconds}
echo "done $worker $1 $2" >> {log}
"""

HEALTH_SH = """#!/bin/sh
# unhealthy exactly when the test marked the sha bad
[ ! -e {bad}/"$1" ]
"""

CONFIG = """\
repo:
  url: {repo}
  branch: main
  poll_every: 1h
state_dir: {state}
slack:
  channel: {channel}
people:
{people}
permissions:
  release: [everyone]
  rollback: [everyone]
environments:
  staging:
    approval: none
    lock_on_failure: false
    backend: &shell
      kind: shell
      deploy: ["/bin/sh", "{deploy}", "{{sha}}", "{{env}}"]
      timeout: 60s
    health: &health
      command: ["/bin/sh", "{health}", "{{sha}}"]
      timeout: 300ms
      interval: 50ms
  sandbox:
    approval: authors
    lock_on_failure: false
    backend: *shell
    health: *health
{extra}"""


@dataclass(frozen=True, slots=True)
class DeployLine:
    what: str  # "start" | "done"
    pid: int
    sha: str
    env: str


@dataclass
class Proc:
    role: str
    popen: subprocess.Popen[bytes]
    log: Path
    killed: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def consumer(self) -> str:
        """Its name in the jobs consumer group (bot.runtime.worker.consumer_name)."""
        return f"{socket.gethostname()}-{self.pid}"

    def text(self, since: int = 0) -> str:
        return self.log.read_bytes()[since:].decode(errors="replace")

    def size(self) -> int:
        return self.log.stat().st_size

    def kill9(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait()
        self.killed = True

    def pause(self) -> None:
        self.popen.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.popen.send_signal(signal.SIGCONT)

    async def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGCONT)
            self.popen.terminate()
        try:
            await asyncio.to_thread(self.popen.wait, 15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            await asyncio.to_thread(self.popen.wait)


@dataclass
class Rig:
    workdir: Path
    redis_server: RedisServer
    emulator: SlackEmulator
    redis: Redis
    store: Store
    deploy_seconds: float = 0.2
    extra_envs: str = ""
    knobs: dict[str, str] = field(default_factory=dict)
    web: Proc | None = None
    workers: list[Proc] = field(default_factory=list)
    repo: DemoRepo | None = None
    _n: int = 0

    # -- files ------------------------------------------------------------------------
    @property
    def deploy_log(self) -> Path:
        return self.workdir / "deploys.log"

    @property
    def script_pids(self) -> Path:
        return self.workdir / "deploy-pids.log"

    def scripts_running(self, worker_pid: int) -> list[int]:
        """Deploy scripts started by ``worker_pid`` that still run (zombies count as gone)."""
        out = []
        for line in self.script_pids.read_text().splitlines():
            worker, script = (int(n) for n in line.split())
            if worker == worker_pid and _runs(script, "deploy.sh"):
                out.append(script)
        return out

    @property
    def gate(self) -> Path:
        return self.workdir / "gate"

    @property
    def bad(self) -> Path:
        return self.workdir / "bad"

    def config_text(self, state: Path) -> str:
        people = "\n".join(f"  {email}: {uid}" for uid, _, email in PEOPLE)
        return CONFIG.format(
            repo=self.workdir / "repo",
            state=state,
            channel=CHANNEL,
            people=people,
            deploy=self.workdir / "deploy.sh",
            health=self.workdir / "health.sh",
            extra=self.extra_envs,
        )

    def prepare(self) -> None:
        self.repo = DemoRepo(self.workdir / "repo")
        self.commit("Initial shop")
        self.bad.mkdir()
        self.deploy_log.touch()
        self.script_pids.touch()
        (self.workdir / "deploy.sh").write_text(
            DEPLOY_SH.format(
                log=self.deploy_log,
                gate=self.gate,
                seconds=self.deploy_seconds,
                pids=self.script_pids,
            )
        )
        (self.workdir / "health.sh").write_text(HEALTH_SH.format(bad=self.bad))
        (self.workdir / "shipmate.yml").write_text(self.config_text(self.workdir / "state-web"))

    # -- processes --------------------------------------------------------------------
    def process_env(self, config: Path) -> dict[str, str]:
        return {
            **os.environ,
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": self.emulator.api_url,
            "REDIS_URL": self.redis_server.url,
            "SHIPMATE_CONFIG": str(config),
            "HOST": "127.0.0.1",
            "LOG_LEVEL": "INFO",
        }

    def _spawn(self, role: str, args: list[str], env: dict[str, str]) -> Proc:
        log = self.workdir / f"{role}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [SHIPMATE, *args], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        return Proc(role, popen, log)

    async def start_web(self) -> Proc:
        port = free_port()
        env = {**self.process_env(self.workdir / "shipmate.yml"), "PORT": str(port)}
        self.web = self._spawn("web", ["web"], env)
        url = f"http://127.0.0.1:{port}"

        async def answers() -> bool:
            try:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"{url}/healthz", timeout=aiohttp.ClientTimeout(total=1)),
                ):
                    return True
            except (aiohttp.ClientError, TimeoutError):
                return False

        await self.wait(answers, what="`shipmate web` to answer /healthz")
        assert self.web.popen.poll() is None, f"`shipmate web` exited:\n{self.web.text()}"
        self.emulator.request_url = f"{url}/slack/events"
        return self.web

    def spawn_worker(self) -> Proc:
        """Start one more `shipmate worker` (its own config and state directory)."""
        self._n += 1
        config = self.workdir / f"shipmate-w{self._n}.yml"
        config.write_text(self.config_text(self.workdir / f"state-w{self._n}"))
        env = self.process_env(config)
        for knob, value in self.knobs.items():
            env[f"SHIPMATE_{knob.upper()}"] = value
        worker = self._spawn(f"worker-{self._n}", ["worker"], env)
        self.workers.append(worker)
        return worker

    async def start(self, *, workers: int) -> None:
        await self.start_web()
        for _ in range(workers):
            self.spawn_worker()

    def worker(self, pid: int) -> Proc:
        return next(w for w in self.workers if w.pid == pid)

    def alive_workers(self) -> list[Proc]:
        return [w for w in self.workers if not w.killed]

    async def stop(self) -> None:
        self.open_gate()
        procs = [*self.workers, *([self.web] if self.web else [])]
        await asyncio.gather(*(p.stop() for p in procs))

    # -- git and releases -------------------------------------------------------------
    def commit(self, message: str, *, email: str = "alice@example.com", bad: bool = False) -> str:
        assert self.repo is not None
        name = email.split("@", 1)[0]
        self.repo._git(
            "commit",
            "--allow-empty",
            "-q",
            "-m",
            message,
            env={"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email},
        )
        sha = self.repo.head()
        if bad:
            (self.bad / sha).touch()
        return sha

    async def collected(self, env: str, sha: str) -> Release:
        """Ask a worker to collect and wait until ``env``'s batch ends at ``sha``."""
        await self.store.enqueue(collect_job())

        async def batch() -> Release | None:
            snap = await self.store.snapshot(env)
            if snap is None or snap.batch is None:
                return None
            found = snap.batch
            return found if found.head_sha == sha and found.base_sha == snap.env.live_sha else None

        return await self.wait(batch, what=f"the {env} batch to end at {sha[:7]}")

    async def slash(self, command: str, env: str, user: str = RELEASER) -> str:
        answer = await self.emulator.slash_command(user, CHANNEL, command, env)
        return answer.text

    async def release(self, env: str, user: str = RELEASER) -> str:
        """`/release env` through signed HTTP into `shipmate web`; the new release's id."""
        text = await self.slash("/release", env, user)
        found = RELEASE_ID.search(text)
        assert found is not None, f"/release {env} was refused: {text}"
        return found.group(1)

    async def release_doc(self, release_id: str) -> Release:
        release = await self.store.release(release_id)
        assert release is not None, release_id
        return release

    async def env_doc(self, env: str) -> EnvState:
        return await self.store.env(env)

    async def finished(self, release_id: str, *, within: float = WAIT) -> Release:
        async def done() -> Release | None:
            release = await self.store.release(release_id)
            return release if release is not None and release.state in TERMINAL else None

        return await self.wait(done, what=f"release {release_id} to finish", within=within)

    async def first_live(self, env: str) -> Release:
        """Release the initial commit so later runs have something to roll back to."""
        head = self.repo.head() if self.repo else ""
        await self.collected(env, head)
        release = await self.finished(await self.release(env))
        assert release.state is ReleaseState.LIVE, release
        return release

    # -- the deploy log ---------------------------------------------------------------
    def log_size(self) -> int:
        return self.deploy_log.stat().st_size

    def deploys(self, since: int = 0) -> list[DeployLine]:
        out = []
        for line in self.deploy_log.read_bytes()[since:].decode().splitlines():
            what, pid, sha, env = line.split()
            out.append(DeployLine(what, int(pid), sha, env))
        return out

    async def deploy_line(
        self, what: str, sha: str, since: int, *, not_pid: int | None = None
    ) -> DeployLine:
        def find() -> DeployLine | None:
            return next(
                (
                    d
                    for d in self.deploys(since)
                    if d.what == what and d.sha == sha and d.pid != not_pid
                ),
                None,
            )

        return await self.until(find, what=f"a deploy log line '{what} * {sha[:7]}'")

    def close_gate(self) -> None:
        self.gate.touch()

    def open_gate(self) -> None:
        self.gate.unlink(missing_ok=True)

    # -- the jobs stream --------------------------------------------------------------
    async def pending(self) -> list[dict[str, Any]]:
        rows: Any = await self.redis.xpending_range(
            self.store.keys.jobs, JOBS_GROUP, "-", "+", 1000
        )
        return list(rows)

    async def job_id(self, kind: str, release_id: str) -> str:
        entries: Any = await self.redis.xrevrange(self.store.keys.jobs, count=2000)
        return str(
            next(
                entry_id
                for entry_id, fields in entries
                if fields.get("kind") == kind and fields.get("release") == release_id
            )
        )

    async def dead_letters(self) -> list[dict[str, str]]:
        entries: Any = await self.redis.xrange(self.store.keys.dead_letters)
        return [dict(fields) for _, fields in entries]

    async def drained(self) -> None:
        """Wait until every job was acknowledged (nothing pending, nothing waiting)."""

        async def empty() -> bool:
            for stream in self.store.streams:
                info: Any = await self.redis.xinfo_groups(stream)
                group = next(g for g in info if g["name"] == JOBS_GROUP)
                if int(group["pending"]) or int(group.get("lag") or 0):
                    return False
            return True

        await self.wait(empty, what="every job to be acknowledged")

    # -- Slack ------------------------------------------------------------------------
    def posts(self, contains: str) -> list[str]:
        """Texts of successful chat.postMessage calls containing ``contains``."""
        return [
            str(c.args.get("text"))
            for c in self.emulator.calls_to("chat.postMessage")
            if c.ok and contains in str(c.args.get("text"))
        ]

    # -- waiting ----------------------------------------------------------------------
    async def wait(
        self,
        predicate: Callable[[], Awaitable[T | None]],
        *,
        what: str,
        within: float = WAIT,
        interval: float = 0.02,
    ) -> T:
        """Poll an async ``predicate`` until truthy; its value. Fails with the process logs."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            with contextlib.suppress(RedisError):
                result = await predicate()
                if result:
                    return result
            if loop.time() >= deadline:
                pytest.fail(f"condition not met within {within}s: {what}\n{self.diagnostics()}")
            await asyncio.sleep(interval)

    async def until(
        self, predicate: Callable[[], T | None], *, what: str, within: float = WAIT
    ) -> T:
        """``wait`` for a plain (not async) predicate."""

        async def check() -> T | None:
            return predicate()

        return await self.wait(check, what=what, within=within)

    def diagnostics(self) -> str:
        parts = ["--- deploy log (tail) ---", *self.deploy_log.read_text().splitlines()[-20:]]
        for proc in [*([self.web] if self.web else []), *self.workers]:
            tail = proc.text().splitlines()[-25:]
            state = "killed" if proc.killed else f"exit={proc.popen.poll()}"
            parts += [f"--- {proc.role} pid {proc.pid} ({state}) ---", *tail]
        return "\n".join(parts)


RELEASE_ID = re.compile(r"\(release ([a-z0-9_-]+-\d+)\)")


def _runs(pid: int, program: str) -> bool:
    """``pid`` runs ``program`` (not a zombie, not a reused pid)."""
    proc = Path(f"/proc/{pid}")
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = (proc / "cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z" and program.encode() in cmdline


def accepted(worker: Proc, pattern: str) -> bool:
    return pattern in worker.text()


# -- fixtures ---------------------------------------------------------------------------


def _serves_from(server: RedisServer, directory: Path) -> bool:
    """True if the server on ``server.port`` is ours (another process may have taken the
    port between free_port() and the bind, and then answers in its place)."""
    client = SyncRedis(port=server.port, socket_timeout=2, decode_responses=True)
    try:
        return bool(client.config_get("dir").get("dir") == str(directory))
    except RedisError:
        return False
    finally:
        client.close()


@pytest.fixture
def chaos_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server (tests here kill it), AOF on with appendfsync always."""
    directory = tmp_path / "redis"
    directory.mkdir()
    for _ in range(5):
        server = RedisServer(port=free_port(), directory=directory)
        server.start()
        if server.process is not None and _serves_from(server, directory):
            break
        server.stop()
    else:
        pytest.fail("could not start a private redis-server on a free port")
    yield server
    server.stop()


@pytest.fixture
async def emulator() -> AsyncIterator[SlackEmulator]:
    emu = SlackEmulator(signing_secret=SIGNING_SECRET, bot_token=BOT_TOKEN)
    await emu.start()
    for uid, name, email in PEOPLE:
        emu.add_user(uid, name=name, email=email, real_name=name.title())
    emu.add_channel(CHANNEL, name="releases")
    emu.add_channel("C0ARCHIVED", name="old-releases", is_archived=True)
    yield emu
    await emu.stop()


RigFactory = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def make_rig(
    tmp_path: Path, chaos_redis: RedisServer, emulator: SlackEmulator
) -> AsyncIterator[RigFactory]:
    rigs: list[Rig] = []
    clients: list[Redis] = []

    async def make(*, deploy_seconds: float = 0.2, extra_envs: str = "", **knobs: str) -> Rig:
        redis = Redis.from_url(chaos_redis.url, decode_responses=True)
        clients.append(redis)
        rig = Rig(
            workdir=tmp_path,
            redis_server=chaos_redis,
            emulator=emulator,
            redis=redis,
            store=make_store(redis),
            deploy_seconds=deploy_seconds,
            extra_envs=extra_envs,
            knobs=dict(knobs),
        )
        rig.prepare()
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        await rig.stop()
    for client in clients:
        await client.aclose()


# -- the summary lines, quoted at the end of the run -------------------------------------

_SUMMARY: list[str] = []


def report(line: str) -> None:
    """One line per scenario with its counts; printed now and again at the end of the run."""
    print(line)
    _SUMMARY.append(line)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _SUMMARY:
        terminalreporter.section("chaos summary")
        for line in _SUMMARY:
            terminalreporter.write_line(line)
