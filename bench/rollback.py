"""Rollback speed: a signed ``/rollback`` until the previous version answers, next to bare Docker.

    scripts/bench.sh [ack options] -- [rollback options]
    .venv/bin/python -m bench.rollback [--container-runs N] [--swarm-runs N] [--warmup N]
                                      [--skip-swarm] [--trace] [--strict]

Setup (untimed): a private redis-server (AOF on), the Slack emulator, shipmate's real web and
one worker (``bot.local.stack.start_stack``, in this process, the way the end-to-end tests run
them), a git repository with commits v1 and v2, and for each a FROM-scratch busybox image
serving ``/version`` and ``/healthz`` on ``127.0.0.1:$PORT`` (``bot/local/demoimage.py``). Two
environments, both ``approval: none``, host network, ``stop_timeout: 1s``, an HTTP health
check every 50 ms: ``docker`` (one container) and ``swarm`` (one service). Both get v1 and
then v2 released through signed ``/release`` commands.

Timed, interleaved round by round so drift on the machine hits every scenario alike:

* ``shipmate``: a signed ``/rollback <env>`` through the emulator, until a fresh TCP
  connection's ``GET /version`` answers v1 (polled every 2 ms from a thread). Then, untimed,
  v2 goes back the way a person would do it: the worker re-collects the batch (v2 on top of
  v1) and a ``/release`` deploys it (for ``docker`` that starts v2's kept container). The
  next round starts only when everything is quiet again: v2 live, lock free, jobs drained,
  and, for swarm, the service's update finished (past its 5 s monitor window).
* containers, same images, same port, same host network, created by the deployer's own
  ``create_container`` from the running backend's spec (the CLI gets the flags read back
  from such a container); shipmate's container is stopped meanwhile:
  ``docker start`` of a pre-created stopped container; ``stop`` of the running v2 container
  plus ``start`` of v1 (what any rollback on one host port has to do); ``docker run``
  (create + start). Each through docker-py's low-level API and through the ``docker`` CLI.
* swarm: ``docker service update --rollback`` (CLI, detached) and the same request through
  the Engine API (``POST /services/{id}/update?rollback=previous``, what the CLI sends), on a
  service cloned from shipmate's own spec (same task template, same update and rollback
  config: stop-first, as shipmate uses on the host network), on the same port while
  shipmate's service is scaled to 0; the bare service is at v2 with v1 as its previous spec.

Each clock starts just before the command is issued and stops when the previous version
answers. Targets (the issue), on p50: shipmate at most 1.5x the faster bare ``docker start``,
and at most 1.2x the faster bare swarm rollback. A breakdown shows where shipmate's time
goes, from the emulator's Web API log, ``docker events`` and the product's own trace events
(``bot.trace``: recorded in every run, as cheap as the product's untraced path); ``--trace``
prints the median run's events as a timeline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import docker
import docker.errors
from redis.asyncio import Redis

from bench.common import (
    BenchError,
    RedisServer,
    free_port,
    jobs_drained,
    kill_leftovers,
    machine_line,
    package_version,
    percentile,
    wait_until,
)
from bot import trace
from bot.config.loader import load_config
from bot.local.demo import PEOPLE, DemoRepo
from bot.local.demoimage import LABEL, DockerKit
from bot.local.slackemu import SlackEmulator
from bot.local.stack import LocalStack, start_stack
from bot.runtime.app import connect_redis
from deployer.docker import DockerBackend, DockerSpec, create_container

SECRET = "bench-signing-secret"
TOKEN = "xoxb-bench"
CHANNEL = "C0RELEASES"
ALICE, ONCALL = "U0ALICE", "U0ONCALL"
DOCKER_ENV, SWARM_ENV = "docker", "swarm"
#: the targets of the issue: shipmate's p50 over the faster bare baseline's p50
CONTAINER_TARGET, SWARM_TARGET = 1.5, 1.2
#: how often the version is polled while a clock runs
POLL_EVERY = 0.002
#: how long one timed rollback may take before the run is declared broken
ANSWER_TIMEOUT = 60.0
#: untimed steps: releases, hand-overs of the port, swarm's monitor window
STEP_TIMEOUT = 120.0
CLI_TIMEOUT = 60.0
_SETTLED_UPDATE = frozenset({"completed", "rollback_completed"})
#: set on Ctrl-C / SIGTERM: waits running in threads give up at once
_ABORT = threading.Event()
#: every World made, so main() can remove their Docker objects if the loop itself died
_WORLDS: list[World] = []
_FAILED_UPDATE = frozenset({"paused", "rollback_paused"})

CONFIG = """\
repo:
  url: {repo}
  branch: main
  poll_every: 1h
slack:
  channel: {channel}
people:
  alice@example.com: {alice}
permissions:
  release: [everyone]
  rollback: [{oncall}]
state_dir: {state}
environments:
  {docker_env}:
    approval: none
    backend:
      kind: docker
      image: "{repository}:{{sha}}"
      container: {container}
      network: host
      env: {{PORT: "{port}"}}
      stop_timeout: 1s
    health: {{http: "http://127.0.0.1:{port}/healthz", timeout: 20s, interval: 50ms}}
  {swarm_env}:
    approval: none
    backend:
      kind: swarm
      service: {service}
      image: "{repository}:{{sha}}"
      network: host
      env: {{PORT: "{swarm_port}"}}
      stop_timeout: 1s
      update_timeout: 60s
    health: {{http: "http://127.0.0.1:{swarm_port}/healthz", timeout: 30s, interval: 50ms}}
"""

# scenario keys
SHIP_DOCKER = "ship-docker"
START_API, START_CLI = "start-api", "start-cli"
SWAP_API, SWAP_CLI = "swap-api", "swap-cli"
RUN_API, RUN_CLI = "run-api", "run-cli"
SHIP_SWARM = "ship-swarm"
ROLLBACK_CLI, ROLLBACK_API = "rollback-cli", "rollback-api"
LABELS = {
    SHIP_DOCKER: "shipmate /rollback (starts kept container)",
    START_API: "bare docker start (docker-py)",
    START_CLI: "bare docker start (CLI)",
    SWAP_API: "bare stop v2 + start v1 (docker-py)",
    SWAP_CLI: "bare stop v2 + start v1 (CLI)",
    RUN_API: "bare docker run (docker-py create+start)",
    RUN_CLI: "bare docker run (CLI)",
    SHIP_SWARM: "shipmate /rollback (service update)",
    ROLLBACK_CLI: "bare service update --rollback (CLI)",
    ROLLBACK_API: "bare service rollback (Engine API)",
}
CONTAINER_KEYS = (SHIP_DOCKER, START_API, START_CLI, SWAP_API, SWAP_CLI, RUN_API, RUN_CLI)
SWARM_KEYS = (SHIP_SWARM, ROLLBACK_CLI, ROLLBACK_API)


# ---------------------------------------------------------------------------------------------
# Probing the service: a fresh connection and GET /version, like a client after the rollback


def http_version(port: int) -> str | None:
    """What ``GET /version`` on 127.0.0.1:port answers, or None (refused, reset, not 200)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(b"GET /version HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            chunks: list[bytes] = []
            while True:
                data = s.recv(4096)
                if not data:
                    break
                chunks.append(data)
    except OSError:
        return None
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split()
    if len(status) < 2 or status[1] != b"200":
        return None
    return body.decode(errors="replace").strip()


def port_refuses(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) != 0


class VersionWatch:
    """Polls ``GET /version`` every 2 ms in its own thread until it answers ``expected``.

    Started before a clock starts, so thread start-up is not measured; the answer time is
    taken right after the full response arrived.
    """

    def __init__(self, port: int, expected: str, timeout: float = ANSWER_TIMEOUT) -> None:
        self.port = port
        self.expected = expected
        self.timeout = timeout
        self.answered_ns: int | None = None
        self.last: str | None = None
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="version-watch", daemon=True)

    def start(self) -> VersionWatch:
        self._thread.start()
        return self

    def _run(self) -> None:
        deadline = time.monotonic() + self.timeout
        while not self._stop.is_set() and not _ABORT.is_set():
            seen = http_version(self.port)
            now = time.monotonic_ns()
            self.polls += 1
            if seen == self.expected:
                self.answered_ns = now
                return
            self.last = seen
            if now / 1e9 >= deadline:
                return
            time.sleep(POLL_EVERY)

    def wait(self) -> int:
        """monotonic_ns when ``expected`` answered; BenchError if it never did."""
        self._thread.join(self.timeout + 5)
        if self.answered_ns is None:
            self.stop()
            raise BenchError(
                f"127.0.0.1:{self.port} did not answer {self.expected} within "
                f"{self.timeout:.0f}s (last answer: {self.last!r})"
            )
        return self.answered_ns

    def stop(self) -> None:
        self._stop.set()


def wait_sync(check: Callable[[], bool], *, within: float, what: str, every: float = 0.01) -> None:
    deadline = time.monotonic() + within
    while not check():
        if _ABORT.is_set():
            raise BenchError(f"interrupted while waiting for {what}")
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out after {within:.0f}s waiting for {what}")
        time.sleep(every)


def wait_answers(port: int, version: str, within: float = STEP_TIMEOUT) -> None:
    wait_sync(
        lambda: http_version(port) == version,
        within=within,
        what=f"127.0.0.1:{port} to answer {version}",
    )


def wait_free(port: int, within: float = STEP_TIMEOUT) -> None:
    wait_sync(lambda: port_refuses(port), within=within, what=f"127.0.0.1:{port} to be free")


# ---------------------------------------------------------------------------------------------
# What the engine did, and when: `docker events` in a thread for the whole run


class EventLog:
    def __init__(self, client: docker.DockerClient) -> None:
        self._stream = client.events(decode=True, filters={"type": ["container", "service"]})
        self.events: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._run, name="docker-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(Exception):  # the stream ends with an error when closed
            for event in self._stream:
                self.events.append(event)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stream.close()
        self._thread.join(2)

    def first(
        self, start_ns: int, end_ns: int, action: str, match: Callable[[dict[str, Any]], bool]
    ) -> int | None:
        """timeNano of the first ``action`` event in [start_ns, end_ns] that ``match``es."""
        for event in list(self.events):
            at = int(event.get("timeNano") or 0)
            if start_ns <= at <= end_ns and event.get("Action") == action and match(event):
                return at
        return None


def _attrs(event: dict[str, Any]) -> dict[str, str]:
    return dict((event.get("Actor") or {}).get("Attributes") or {})


# What shipmate itself says happened: bot.trace events, recorded for the whole run


class Live:
    """Resolves when the worker says a release of ``env`` went live on ``sha`` (its "live" event).

    The event is emitted right after the state write that makes it live, so the mark is
    the moment Redis says so, without polling Redis for it.
    """

    def __init__(self, env: str, sha: str) -> None:
        self.env = env
        self.sha = sha
        self.at_ns: int | None = None
        self._loop = asyncio.get_running_loop()
        self._seen = asyncio.Event()
        self._unsubscribe = trace.subscribe(self._on_event)

    def _on_event(self, event: trace.Event) -> None:
        fields = event.fields
        if event.name == "live" and fields.get("env") == self.env and fields.get("sha") == self.sha:
            if self.at_ns is None:
                self.at_ns = event.at_ns
            self._loop.call_soon_threadsafe(self._seen.set)

    async def wait(self, within: float) -> int:
        """monotonic_ns of the event; BenchError after ``within`` seconds."""
        try:
            await asyncio.wait_for(self._seen.wait(), within)
        except TimeoutError:
            raise BenchError(
                f"{self.env} did not go live on {self.sha[:7]} within {within:.0f}s"
            ) from None
        finally:
            self.close()
        assert self.at_ns is not None
        return self.at_ns

    def close(self) -> None:
        self._unsubscribe()


@dataclass
class Span:
    label: str
    start_ns: int
    end_ns: int | None


def timeline(events: Sequence[trace.Event]) -> list[Span]:
    """Spans from ``<name>.start``/``<name>.end`` pairs, points (no end) for the rest.

    Spans with the same name and fields (two render jobs of one release) may overlap;
    each end closes the oldest such span still open.
    """
    spans: list[Span] = []
    open_spans: dict[tuple[str, str], list[Span]] = {}
    for event in events:
        name, _, edge = event.name.rpartition(".")
        fields = {k: v for k, v in event.fields.items() if k != "ok"}
        detail = " ".join(f"{k}={v}" for k, v in fields.items())
        key = (name, detail)
        if edge == "start":
            span = Span(f"{name} {detail}".strip(), event.at_ns, None)
            open_spans.setdefault(key, []).append(span)
            spans.append(span)
        elif edge == "end" and open_spans.get(key):
            open_spans[key].pop(0).end_ns = event.at_ns
        else:
            spans.append(Span(f"{event.name} {detail}".strip(), event.at_ns, None))
    return spans


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class Run:
    key: str
    #: the clock's start on the wall clock (Docker's and the emulator's timestamps are wall)
    t0_wall_ns: int
    total_ns: int
    #: ms after t0 of what happened on the way (ack, Slack posts, engine events, live)
    marks: dict[str, float] = field(default_factory=dict)
    #: shipmate's own trace events during the run, and the clock's start on their clock
    events: list[trace.Event] = field(default_factory=list)
    t0_ns: int = 0


@dataclass
class Results:
    runs: dict[str, list[Run]] = field(default_factory=dict)

    def add(self, run: Run) -> None:
        self.runs.setdefault(run.key, []).append(run)

    def ms(self, key: str) -> list[float]:
        return sorted(r.total_ns / 1e6 for r in self.runs.get(key, []))


# ---------------------------------------------------------------------------------------------
# Setup


@dataclass
class World:
    """Everything one run created; ``close`` undoes it (in ``finally``)."""

    workdir: Path
    client: docker.DockerClient
    kit: DockerKit
    repository: str
    port: int
    swarm_port: int
    container: str
    service: str
    bare_service: str
    redis_url: str
    repo: DemoRepo | None = None
    v1: str = ""
    v2: str = ""
    emu: SlackEmulator | None = None
    redis: Redis | None = None
    stack: LocalStack | None = None
    events: EventLog | None = None
    closed: bool = False

    @property
    def api(self) -> Any:
        return self.client.api

    def image(self, sha: str) -> str:
        return f"{self.repository}:{sha}"

    def name(self, what: str) -> str:
        return self.kit.name(what)

    async def close(self) -> None:
        if self.stack is not None:
            with contextlib.suppress(Exception):
                await self.stack.stop()
        if self.emu is not None:
            with contextlib.suppress(Exception):
                await self.emu.stop()
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()
        if self.events is not None:
            self.events.close()
        await asyncio.to_thread(self.remove_docker_objects)

    def remove_docker_objects(self) -> None:
        if self.closed:
            return
        self.kit.cleanup()
        self.closed = True
        # cleanup() removes services without waiting for their tasks; leave nothing behind
        with contextlib.suppress(BenchError):
            if not _ABORT.is_set():
                wait_free(self.swarm_port, 30)
        self.client.close()


def docker_client() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except docker.errors.DockerException as err:
        raise BenchError(
            f"the Docker engine is not reachable ({err}); scripts/docker-up.sh starts it"
        ) from None
    return client


def swarm_active(client: docker.DockerClient) -> bool:
    return bool(client.info().get("Swarm", {}).get("LocalNodeState") == "active")


def run_cli(*argv: str) -> str:
    try:
        done = subprocess.run(
            ["docker", *argv], capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise BenchError(f"`docker {' '.join(argv)}` failed: {err}") from None
    if done.returncode != 0:
        raise BenchError(f"`docker {' '.join(argv)}` exited {done.returncode}: {done.stderr}")
    return done.stdout.strip()


def cli_flags(inspected: dict[str, Any]) -> list[str]:
    """``docker run`` flags for a container configured like ``inspected`` (labels aside).

    Read back from a container the deployer created, so the CLI baseline follows whatever
    the deployer sets, without a second copy of its settings here.
    """
    config, host = inspected["Config"], inspected["HostConfig"]
    flags = ["--init"] if host.get("Init") else []
    flags += ["--restart", (host.get("RestartPolicy") or {}).get("Name") or "no"]
    if host.get("NetworkMode") not in (None, "", "default"):
        flags += ["--network", host["NetworkMode"]]
    for variable in config.get("Env") or []:
        flags += ["-e", variable]
    if config.get("StopTimeout") is not None:
        flags += ["--stop-timeout", str(config["StopTimeout"])]
    for container_port, bindings in (host.get("PortBindings") or {}).items():
        for binding in bindings or []:
            address = f"{binding['HostIp']}:" if binding.get("HostIp") else ""
            flags += ["-p", f"{address}{binding.get('HostPort', '')}:{container_port}"]
    return flags


async def setup(world: World, *, with_swarm: bool) -> None:
    workdir = world.workdir
    repo = DemoRepo(workdir / "repo")
    repo.commit(ALICE, "Initial shop", {"README": "shop\n"})
    world.v1 = repo.commit(ALICE, "Cart page (v1)", {"app/cart": "v1\n"})
    await asyncio.to_thread(world.kit.build, world.repository, world.v1)
    world.repo = repo

    text = CONFIG.format(
        repo=workdir / "repo",
        channel=CHANNEL,
        alice=ALICE,
        oncall=ONCALL,
        state=workdir / "state",
        docker_env=DOCKER_ENV,
        swarm_env=SWARM_ENV,
        repository=world.repository,
        container=world.container,
        port=world.port,
        service=world.service,
        swarm_port=world.swarm_port,
    )
    if not with_swarm:
        text = text.split(f"  {SWARM_ENV}:")[0]
    (workdir / "shipmate.yml").write_text(text)
    config = load_config(workdir / "shipmate.yml")

    world.emu = emu = SlackEmulator(signing_secret=SECRET, bot_token=TOKEN)
    await emu.start()
    for user, (name, real, email) in PEOPLE.items():
        emu.add_user(user, name=name, email=email, real_name=real)
    emu.add_channel(CHANNEL, name="releases")
    world.redis = connect_redis(world.redis_url)
    world.stack = await start_stack(config, world.redis, emu)


# ---------------------------------------------------------------------------------------------
# shipmate, driven from Slack


class Ship:
    def __init__(self, world: World, recording: trace.Recording) -> None:
        assert world.stack is not None and world.emu is not None
        self.world = world
        self.stack = world.stack
        self.emu = world.emu
        self.store = world.stack.store
        self.recording = recording

    def docker_spec(self) -> DockerSpec:
        """The spec the running worker deploys the docker environment with."""
        backend = self.stack.workers[0].worker.deploys.environments[DOCKER_ENV].backend
        assert isinstance(backend, DockerBackend)
        return backend.spec

    def port(self, env: str) -> int:
        return self.world.port if env == DOCKER_ENV else self.world.swarm_port

    async def release(self, env: str, sha: str) -> None:
        """Collect, wait for the batch with ``sha`` on top of what runs, /release, wait quiet."""
        await self.stack.trigger_collect()

        async def batch_ready() -> bool:
            snap = await self.store.snapshot(env)
            batch = snap.batch if snap is not None else None
            return (
                snap is not None
                and batch is not None
                and snap.env.active_release is None
                and batch.head_sha == sha
                and batch.base_sha == snap.env.live_sha
            )

        await wait_until(
            batch_ready, within=STEP_TIMEOUT, what=f"a batch up to {sha[:7]} for {env}", every=0.02
        )
        answer = await self.emu.slash_command(ALICE, CHANNEL, "/release", env)
        if "deploying now" not in answer.text:
            raise BenchError(f"/release {env} answered {answer.text!r}")
        await self.settled(env, sha)

    async def settled(self, env: str, sha: str) -> None:
        """``sha`` is live and answering, nothing is running or queued, the lock is free."""
        store = self.store

        async def quiet() -> bool:
            state = await store.env(env)
            if state.live_sha != sha or state.active_release is not None:
                return False
            if await store.redis.exists(store.keys.deploy_lock(env)):
                return False
            return await jobs_drained(store)

        await wait_until(quiet, within=STEP_TIMEOUT, what=f"{env} to settle on {sha[:7]}")
        await asyncio.to_thread(wait_answers, self.port(env), sha[:7])
        if env == SWARM_ENV:
            await asyncio.to_thread(wait_update_settled, self.world, self.world.service)

    async def rollback(self, env: str) -> Run:
        """The timed part: /rollback until v1 answers; then v2 goes back (untimed)."""
        world = self.world
        key = SHIP_DOCKER if env == DOCKER_ENV else SHIP_SWARM
        expected = world.v1[:7]
        watch = VersionWatch(self.port(env), expected).start()
        live = Live(env, world.v1)
        calls_before = len(self.emu.calls)
        t0_wall = time.time_ns()
        t0 = time.monotonic_ns()
        try:
            answer = await self.emu.slash_command(ONCALL, CHANNEL, "/rollback", env)
            acked = time.monotonic_ns()
            if f"back to `{expected}`" not in answer.text:
                raise BenchError(f"/rollback {env} answered {answer.text!r}")
            answered = await asyncio.to_thread(watch.wait)
            went_live = await live.wait(STEP_TIMEOUT)
        finally:
            watch.stop()
            live.close()
        run = Run(key, t0_wall, answered - t0, t0_ns=t0)
        run.marks["ack"] = (acked - t0) / 1e6
        run.marks["live"] = (went_live - t0) / 1e6
        run.events = self.recording.between(t0, max(went_live, answered))
        for call in self.emu.calls[calls_before:]:
            at = (call.at * 1e9 - t0_wall) / 1e6
            if call.status == 429:
                run.marks["429s"] = run.marks.get("429s", 0) + 1
            if call.method != "chat.postMessage":
                continue
            if not call.args.get("thread_ts"):
                run.marks.setdefault("message", at)
            elif str(call.args.get("text", "")).startswith("Rolling back"):
                run.marks.setdefault("thread", at)
        return run


def wait_update_settled(world: World, service: str) -> None:
    def settled() -> bool:
        status = world.api.inspect_service(service).get("UpdateStatus") or {}
        state = status.get("State")
        if state in _FAILED_UPDATE:
            raise BenchError(f"the update of service {service} is {state}: {status.get('Message')}")
        return state is None or state in _SETTLED_UPDATE

    wait_sync(settled, within=STEP_TIMEOUT, what=f"service {service}'s update to finish", every=0.1)


# ---------------------------------------------------------------------------------------------
# Bare Docker: the same images, port and settings, no shipmate


def timed(world: World, key: str, expected: str, action: Callable[[], object]) -> Run:
    watch = VersionWatch(world.port if key in CONTAINER_KEYS else world.swarm_port, expected)
    watch.start()
    try:
        t0_wall = time.time_ns()
        t0 = time.monotonic_ns()
        action()
        return Run(key, t0_wall, watch.wait() - t0)
    finally:
        watch.stop()


class BareContainers:
    """Containers created by the deployer's own code from shipmate's spec, started by hand."""

    def __init__(self, world: World, spec: DockerSpec) -> None:
        self.world = world
        self.spec = spec
        self.v1 = world.name("bare-v1")
        self.v2 = world.name("bare-v2")
        self.fresh = world.name("bare-run")
        self.create(self.v1, world.v1)
        self.create(self.v2, world.v2)
        self.flags = cli_flags(world.api.inspect_container(self.v1))

    def create(self, name: str, sha: str) -> str:
        # the bench's label, not shipmate's: the deployer must never count these as its own
        labels = {LABEL: self.world.kit.prefix}
        return create_container(
            self.world.api, self.spec, self.world.image(sha), name=name, labels=labels
        )

    def cli_run_argv(self) -> list[str]:
        labels = ["--label", f"{LABEL}={self.world.kit.prefix}"]
        return [
            "run",
            "-d",
            "--name",
            self.fresh,
            *labels,
            *self.flags,
            self.world.image(self.world.v1),
        ]

    def _stop(self, name: str) -> None:
        self.world.api.stop(name, timeout=self.spec.stop_seconds)
        wait_free(self.world.port)

    def _remove_fresh(self) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self.world.api.remove_container(self.fresh, force=True)
        wait_free(self.world.port)

    def run(self, key: str) -> Run:
        """One timed scenario; the port is free before and after."""
        world, api, v1 = self.world, self.world.api, self.world.v1[:7]
        if key == START_API:
            run = timed(world, key, v1, lambda: api.start(self.v1))
            self._stop(self.v1)
        elif key == START_CLI:
            run = timed(world, key, v1, lambda: run_cli("start", self.v1))
            self._stop(self.v1)
        elif key in (SWAP_API, SWAP_CLI):
            api.start(self.v2)
            wait_answers(world.port, world.v2[:7])
            if key == SWAP_API:

                def swap() -> None:
                    api.stop(self.v2, timeout=self.spec.stop_seconds)
                    api.start(self.v1)

            else:

                def swap() -> None:
                    run_cli("stop", "-t", str(self.spec.stop_seconds), self.v2)
                    run_cli("start", self.v1)

            run = timed(world, key, v1, swap)
            self._stop(self.v1)
        elif key == RUN_API:

            def create_and_start() -> None:
                api.start(self.create(self.fresh, world.v1))

            run = timed(world, key, v1, create_and_start)
            self._remove_fresh()
        else:
            run = timed(world, key, v1, lambda: run_cli(*self.cli_run_argv()))
            self._remove_fresh()
        return run


def service_update(world: World, service: str, spec: dict[str, Any], *, rollback: bool) -> None:
    """POST /services/{id}/update with ``spec`` at the version just read (as the CLI does)."""
    api = world.api
    current = api.inspect_service(service)
    params: dict[str, Any] = {"version": current["Version"]["Index"]}
    if rollback:
        params["rollback"] = "previous"  # what `docker service update --rollback` sends
    response = api._post_json(
        api._url("/services/{0}/update", current["ID"]), data=spec, params=params
    )
    api._raise_for_status(response)


def current_spec(world: World, service: str) -> dict[str, Any]:
    return copy.deepcopy(dict(world.api.inspect_service(service)["Spec"]))


def scale(world: World, service: str, replicas: int) -> None:
    spec = current_spec(world, service)
    spec["Mode"] = {"Replicated": {"Replicas": replicas}}
    service_update(world, service, spec, rollback=False)


class BareService:
    """A service cloned from shipmate's: same task template, update and rollback config."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.name = world.bare_service
        spec = current_spec(world, world.service)
        spec["Name"] = self.name
        spec["Labels"] = {LABEL: world.kit.prefix}
        spec["Mode"] = {"Replicated": {"Replicas": 0}}
        spec["TaskTemplate"]["ContainerSpec"]["Image"] = world.image(world.v1)
        api = world.api
        response = api._post_json(api._url("/services/create"), data=spec)
        api._result(response, True)
        self.update_config = spec.get("UpdateConfig")
        self.rollback_config = spec.get("RollbackConfig")

    def set_image(self, sha: str) -> None:
        spec = current_spec(self.world, self.name)
        spec["TaskTemplate"]["ContainerSpec"]["Image"] = self.world.image(sha)
        service_update(self.world, self.name, spec, rollback=False)
        wait_answers(self.world.swarm_port, sha[:7])
        wait_update_settled(self.world, self.name)

    def take_port(self) -> None:
        """Scale up at v1, then update to v2: v2 runs, its previous spec is v1."""
        scale(self.world, self.name, 1)
        wait_answers(self.world.swarm_port, self.world.v1[:7])
        self.set_image(self.world.v2)

    def give_port(self) -> None:
        scale(self.world, self.name, 0)
        wait_free(self.world.swarm_port)

    def run(self, key: str) -> Run:
        world, v1 = self.world, self.world.v1[:7]
        if key == ROLLBACK_CLI:
            run = timed(
                world, key, v1, lambda: run_cli("service", "update", "--rollback", "-d", self.name)
            )
        else:

            def rollback() -> None:
                service_update(world, self.name, current_spec(world, self.name), rollback=True)

            run = timed(world, key, v1, rollback)
        wait_update_settled(world, self.name)
        return run


# ---------------------------------------------------------------------------------------------
# Rounds


def add_engine_marks(run: Run, events: EventLog, match: Callable[[dict[str, Any]], bool]) -> None:
    start, end = run.t0_wall_ns, run.t0_wall_ns + run.total_ns + 2_000_000_000
    for label, action in (("kill old", "kill"), ("old died", "die"), ("start new", "start")):
        at = events.first(start, end, action, match)
        if at is not None:
            run.marks[label] = (at - start) / 1e6


def add_service_mark(run: Run, events: EventLog, service: str) -> None:
    start = run.t0_wall_ns
    at = events.first(
        start, start + run.total_ns, "update", lambda e: _attrs(e).get("name") == service
    )
    if at is not None:
        run.marks["svc update"] = (at - start) / 1e6


async def container_rounds(
    world: World, ship: Ship, results: Results, *, runs: int, warmup: int
) -> None:
    bare = await asyncio.to_thread(BareContainers, world, ship.docker_spec())
    names = {bare.v1, bare.v2}
    events = world.events
    assert events is not None
    for number in range(warmup + runs):
        keep = number >= warmup
        print(f"  containers round {number + 1}/{warmup + runs}{'' if keep else ' (warm-up)'}")
        run = await ship.rollback(DOCKER_ENV)
        add_engine_marks(
            run, events, lambda e: _attrs(e).get("shipmate.container") == world.container
        )
        await ship.release(DOCKER_ENV, world.v2)  # v2 back: its kept container starts again
        if keep:
            results.add(run)
        # hand the port to the bare containers, then back
        await asyncio.to_thread(world.api.stop, world.container, timeout=bare.spec.stop_seconds)
        await asyncio.to_thread(wait_free, world.port)
        for key in CONTAINER_KEYS[1:]:
            bare_run = await asyncio.to_thread(bare.run, key)
            if key == SWAP_API:
                add_engine_marks(bare_run, events, lambda e: _attrs(e).get("name") in names)
            if keep:
                results.add(bare_run)
        await asyncio.to_thread(world.api.start, world.container)
        await ship.settled(DOCKER_ENV, world.v2)


async def swarm_rounds(
    world: World, ship: Ship, results: Results, *, runs: int, warmup: int
) -> BareService:
    bare = await asyncio.to_thread(BareService, world)
    name = bare.name
    events = world.events
    assert events is not None
    for number in range(warmup + runs):
        keep = number >= warmup
        print(f"  swarm round {number + 1}/{warmup + runs}{'' if keep else ' (warm-up)'}")
        run = await ship.rollback(SWARM_ENV)
        add_engine_marks(
            run, events, lambda e: _attrs(e).get("com.docker.swarm.service.name") == world.service
        )
        add_service_mark(run, events, world.service)
        await ship.release(SWARM_ENV, world.v2)
        if keep:
            results.add(run)
        await asyncio.to_thread(scale, world, world.service, 0)
        await asyncio.to_thread(wait_free, world.swarm_port)
        await asyncio.to_thread(bare.take_port)  # v2 runs, v1 is its previous spec
        for key in SWARM_KEYS[1:]:
            if key != SWARM_KEYS[1]:
                await asyncio.to_thread(bare.set_image, world.v2)
            bare_run = await asyncio.to_thread(bare.run, key)
            if key == ROLLBACK_API:
                add_engine_marks(
                    bare_run,
                    events,
                    lambda e: _attrs(e).get("com.docker.swarm.service.name") == name,
                )
                add_service_mark(bare_run, events, name)
            if keep:
                results.add(bare_run)
        await asyncio.to_thread(bare.give_port)
        await asyncio.to_thread(scale, world, world.service, 1)
        await ship.settled(SWARM_ENV, world.v2)
    return bare


# ---------------------------------------------------------------------------------------------
# Report


def _row(label: str, values: Sequence[float]) -> str:
    if not values:
        return f"  {label:<44}{0:>5}{'-':>9}{'-':>9}{'-':>9}"
    return (
        f"  {label:<44}{len(values):>5}{percentile(values, 50):>9.1f}"
        f"{percentile(values, 90):>9.1f}{values[-1]:>9.1f}"
    )


def _ratio_line(
    results: Results, ours: str, baselines: Sequence[str], target: float, what: str
) -> bool:
    mine = results.ms(ours)
    candidates = [(k, results.ms(k)) for k in baselines if results.ms(k)]
    if not mine or not candidates:
        print(f"  {what}: no samples")
        return False
    best_key, best = min(candidates, key=lambda kv: percentile(kv[1], 50))
    ratio = percentile(mine, 50) / percentile(best, 50)
    ratio90 = percentile(mine, 90) / percentile(best, 90)
    ok = ratio <= target
    print(
        f"  {what}: shipmate p50 {percentile(mine, 50):.1f} ms / {LABELS[best_key]} p50 "
        f"{percentile(best, 50):.1f} ms = {ratio:.2f}x  {'PASS' if ok else 'FAIL'} "
        f"(target <= {target:g}x; p90 {ratio90:.2f}x)"
    )
    return ok


def _marks_line(label: str, runs: Sequence[Run], columns: Sequence[str]) -> str:
    cells = []
    for column in columns:
        values = [r.marks[column] for r in runs if column in r.marks]
        if column == "answers":
            values = [r.total_ns / 1e6 for r in runs]
        cells.append(f"{statistics.median(values):>11.1f}" if values else f"{'-':>11}")
    return f"  {label:<38}" + "".join(cells)


def _breakdown(results: Results) -> None:
    tables = (
        (
            ("ack", "message", "thread", "kill old", "old died", "start new", "answers", "live"),
            ((SHIP_DOCKER, "shipmate docker"), (SWAP_API, "bare stop+start (docker-py)")),
        ),
        (
            (
                "ack",
                "message",
                "thread",
                "svc update",
                "kill old",
                "old died",
                "start new",
                "answers",
                "live",
            ),
            ((SHIP_SWARM, "shipmate swarm"), (ROLLBACK_API, "bare rollback (Engine API)")),
        ),
    )
    print(
        "\nwhere the time goes: median ms after the command was issued (ack: the slash command "
        "answered; message/thread: the Web API got the release message / the 'Rolling back' "
        "thread line; kill/died/start: `docker events`; live: Redis says v1 is live)"
    )
    for columns, rows in tables:
        if not any(results.runs.get(key) for key, _ in rows):
            continue
        print(f"  {'':<38}" + "".join(f"{c:>11}" for c in columns))
        for key, label in rows:
            runs = results.runs.get(key, [])
            if runs:
                print(_marks_line(label, runs, columns))


def _trace(results: Results) -> None:
    for key in (SHIP_DOCKER, SHIP_SWARM):
        runs = sorted(results.runs.get(key, []), key=lambda r: r.total_ns)
        if not runs:
            continue
        median = runs[len(runs) // 2]
        print(f"\n--trace: the median {LABELS[key]} run ({median.total_ns / 1e6:.1f} ms to answer)")
        marks = sorted(median.marks.items(), key=lambda kv: kv[1])
        items: list[tuple[float, str]] = [
            ((s.start_ns - median.t0_ns) / 1e6, f"{_duration(s)}  {s.label}")
            for s in timeline(median.events)
        ]
        items += [(at, f"{'':>8}     == {name}") for name, at in marks if name != "429s"]
        items.append((median.total_ns / 1e6, f"{'':>8}     == answers v1"))
        for at, text in sorted(items, key=lambda kv: kv[0]):
            print(f"  +{at:8.1f}  {text}")


def _duration(span: Span) -> str:
    if span.end_ns is None:
        return f"{'':>8}   "
    return f"{(span.end_ns - span.start_ns) / 1e6:8.1f} ms"


def report(results: Results, opts: argparse.Namespace, world: World, load: tuple[str, str]) -> bool:
    print()
    print(machine_line())
    print(f"load average at start / end: {load[0]} / {load[1]}")
    info = world.client.version()
    print(
        f"versions: Docker Engine {info.get('Version')} (API {info.get('ApiVersion')}), docker CLI "
        f"{run_cli('version', '--format', '{{.Client.Version}}')}, docker-py "
        f"{package_version('docker')}, slack_bolt {package_version('slack-bolt')}, "
        f"redis-py {package_version('redis')}"
    )
    print(
        "each clock: from issuing the command (a signed /rollback sent through the Slack "
        "emulator; a docker-py call; a `docker` CLI process) until a new TCP connection's "
        f"GET /version answers the previous version (polled every {POLL_EVERY * 1000:g} ms); "
        "busybox httpd images, host network, stop_timeout 1s, init"
    )
    print(
        "between shipmate runs v2 goes back through a /release of the re-collected batch "
        "(untimed); swarm runs start after the previous update left its 5 s monitor window"
    )
    print(
        "shipmate's own trace events (bot.trace) were recorded throughout; "
        + (
            "the median runs' timelines follow the breakdown"
            if opts.trace
            else "--trace prints them"
        )
    )
    header = f"  {'scenario':<44}{'runs':>5}{'p50 ms':>9}{'p90 ms':>9}{'max ms':>9}"
    print()
    print(header)
    print("  " + "-" * (len(header) - 2))
    print(f"  containers (port {world.port})")
    for key in CONTAINER_KEYS:
        print(_row(LABELS[key], results.ms(key)))
    live = sorted(r.marks["live"] for r in results.runs.get(SHIP_DOCKER, []) if "live" in r.marks)
    print(_row("  (shipmate until Redis says v1 is live)", live))
    passed = True
    if not opts.skip_swarm:
        print(f"  swarm (port {world.swarm_port}, stop-first like shipmate's service)")
        for key in SWARM_KEYS:
            print(_row(LABELS[key], results.ms(key)))
        live = sorted(
            r.marks["live"] for r in results.runs.get(SHIP_SWARM, []) if "live" in r.marks
        )
        print(_row("  (shipmate until Redis says v1 is live)", live))
    print()
    passed = _ratio_line(
        results, SHIP_DOCKER, (START_API, START_CLI), CONTAINER_TARGET, "containers vs bare start"
    )
    _ratio_line(
        results,
        SHIP_DOCKER,
        (SWAP_API, SWAP_CLI),
        CONTAINER_TARGET,
        "containers vs bare stop+start (info)",
    )
    if not opts.skip_swarm:
        ok = _ratio_line(
            results,
            SHIP_SWARM,
            (ROLLBACK_CLI, ROLLBACK_API),
            SWARM_TARGET,
            "swarm vs bare rollback",
        )
        passed = passed and ok
    throttled = sum(
        int(r.marks.get("429s", 0))
        for key in (SHIP_DOCKER, SHIP_SWARM)
        for r in results.runs.get(key, [])
    )
    if throttled:
        print(
            f"  WARNING: the emulator answered 429 to {throttled} Web API calls during timed runs"
        )
    _breakdown(results)
    if opts.trace:
        _trace(results)
    return passed


# ---------------------------------------------------------------------------------------------
# Orchestration


def _loadavg() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"


async def run(opts: argparse.Namespace, workdir: Path, redis_server: RedisServer) -> bool:
    client = await asyncio.to_thread(docker_client)
    if shutil.which("docker") is None:
        client.close()
        raise BenchError("the docker CLI is not installed (apt-get install -y docker.io)")
    if not opts.skip_swarm and not await asyncio.to_thread(swarm_active, client):
        client.close()
        raise BenchError(
            "this Docker host is not a swarm manager; run scripts/docker-up.sh (it runs "
            "`docker swarm init --advertise-addr 127.0.0.1`) or pass --skip-swarm"
        )
    kit = DockerKit(client)
    world = World(
        workdir=workdir,
        client=client,
        kit=kit,
        repository=kit.name("shop"),
        port=free_port(),
        swarm_port=free_port(),
        container=kit.name("web"),
        service=kit.name("svc"),
        bare_service=kit.name("bare-svc"),
        redis_url=redis_server.url,
    )
    _WORLDS.append(world)
    # SIGTERM cancels this task like Ctrl-C does (asyncio.run), so the finally below runs
    # with the loop alive; threads waiting on Docker or the port see _ABORT and give up
    main_task = asyncio.current_task()
    assert main_task is not None

    def abort() -> None:
        _ABORT.set()
        main_task.cancel()

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, abort)
    recording = trace.Recording()
    load_start = _loadavg()
    try:
        print(
            f"setup (Docker objects named {kit.prefix}-*): images, Slack emulator, shipmate "
            "web + worker, v1 then v2 released ...",
            flush=True,
        )
        await setup(world, with_swarm=not opts.skip_swarm)
        world.events = EventLog(client)
        recording.start()
        ship = Ship(world, recording)
        envs = [DOCKER_ENV] if opts.skip_swarm else [DOCKER_ENV, SWARM_ENV]
        for env in envs:
            await ship.release(env, world.v1)
        assert world.repo is not None
        world.v2 = world.repo.commit(ALICE, "Faster search (v2)", {"app/search": "v2\n"})
        await asyncio.to_thread(world.kit.build, world.repository, world.v2)
        for env in envs:
            await ship.release(env, world.v2)
        results = Results()
        print(
            f"measuring: {opts.warmup} warm-up + {opts.container_runs} container rounds"
            + ("" if opts.skip_swarm else f", then {opts.warmup} + {opts.swarm_runs} swarm rounds")
            + " ...",
            flush=True,
        )
        await container_rounds(world, ship, results, runs=opts.container_runs, warmup=opts.warmup)
        if not opts.skip_swarm:
            await swarm_rounds(world, ship, results, runs=opts.swarm_runs, warmup=opts.warmup)
        assert world.emu is not None
        if world.emu.background_errors:
            raise BenchError(f"the Slack emulator failed: {world.emu.background_errors[0]!r}")
        return await asyncio.to_thread(report, results, opts, world, (load_start, _loadavg()))
    finally:
        recording.stop()
        if main_task.cancelling():
            _ABORT.set()  # Ctrl-C (asyncio.run cancels this task) or SIGTERM
        print("cleaning up containers, services and images ...", flush=True)
        await world.close()


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench.rollback",
        description="Rollback speed: a signed /rollback next to bare docker start/run and "
        "docker service update --rollback",
    )
    parser.add_argument(
        "--container-runs", type=int, default=10, help="timed container rounds (default 10)"
    )
    parser.add_argument("--swarm-runs", type=int, default=5, help="timed swarm rounds (default 5)")
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed warm-up rounds of each kind (default 1)"
    )
    parser.add_argument("--skip-swarm", action="store_true", help="containers only")
    parser.add_argument(
        "--trace",
        action="store_true",
        help="also print the timeline of shipmate's trace events in its median runs",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    opts = parser.parse_args(argv)
    if not 1 <= opts.container_runs <= 1000:
        parser.error("--container-runs must be between 1 and 1000")
    if not 1 <= opts.swarm_runs <= 100:
        parser.error("--swarm-runs must be between 1 and 100")
    if not 0 <= opts.warmup <= 10:
        parser.error("--warmup must be between 0 and 10")
    return opts


def _raise_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(list(sys.argv[1:] if argv is None else argv))
    # SIGTERM unwinds like Ctrl-C, so the finally blocks remove what was started
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="shipmate-bench-rollback-"))
    redis_server = RedisServer(workdir / "redis")
    try:
        redis_server.directory.mkdir()
        redis_server.start()
        passed = asyncio.run(run(opts, workdir, redis_server))
    except BenchError as err:
        print(f"bench.rollback: {err}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("bench.rollback: interrupted", file=sys.stderr)
        return 130
    finally:
        _ABORT.set()
        for world in _WORLDS:  # normally done already, in run()'s finally
            with contextlib.suppress(Exception):
                world.remove_docker_objects()
        kill_leftovers()
        redis_server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if opts.strict and not passed else 0


if __name__ == "__main__":
    sys.exit(main())
