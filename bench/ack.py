"""Ack latency of signed Slack requests: shipmate's web next to a bare bolt AsyncApp.

    scripts/bench.sh [--requests M] [--warmup N] [--rounds R] [--envs E] [--profile KIND]

One run starts a private redis-server (AOF, fsync every second), the Slack emulator as
the Web API (bolt's auth.test), and three HTTP servers, each in its own process the way
`shipmate web` runs in production:

* ``shipmate``: ``bot.runtime.app.start_web`` with a config of ``sandbox`` plus E environments;
* ``bare bolt (default)``: an AsyncApp whose listeners only ``await ack()``;
* ``bare bolt (process_before_response)``: the same with ``process_before_response=True``
  (the mode shipmate runs in).

All three are served the same way (aiohttp, ``slack_bolt.adapter.aiohttp``) and get the
same requests from one keep-alive aiohttp client, one at a time, signed just before
sending. Latency is the wall time from send to the full response. Targets are
interleaved in R rounds so slow drift on the machine hits all of them alike.

What shipmate does for each timed request (and what is checked):

* ``/release envNNN`` always freezes a real batch of three commits by three people. The
  state is seeded by a real worker collecting from a small git repository; each
  environment is used once, then all are put back to their seeded state (untimed).
  Every answer must say "asked to release 3 commits".
* ``reaction``: ``reaction_added`` / ``reaction_removed`` of :white_check_mark: by an
  involved author on the real release message of ``sandbox`` (awaiting approval), each
  with a unique event_id, so each one changes the release. The release's version must
  grow by exactly the number of reactions sent.

Target (the issue): shipmate's p99 at most 2x the faster bare-bolt p99, per kind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp
from aiohttp import web
from redis.asyncio import Redis
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bench.common import (
    BenchError,
    ChildServer,
    OtherLoad,
    RedisServer,
    Summary,
    as_text,
    jobs_drained,
    kill_leftovers,
    machine_line,
    package_version,
    start_child,
    summarize_ns,
    wait_until,
)
from bot.config.loader import Config, load_config
from bot.domain.codec import release_from_doc
from bot.local.slackemu import Channel, Message, SlackEmulator, User, payloads
from bot.local.stack import LocalStack
from bot.runtime.app import WARM_EVERY, make_store

SECRET = "bench-signing-secret"
TOKEN = "xoxb-bench"
CHANNEL = "C0RELEASES"
ALICE, BOB, CAROL = "U0ALICE", "U0BOB", "U0CAROL"
PEOPLE = {
    ALICE: ("alice", "Alice Liddell", "alice@example.com"),
    BOB: ("bob", "Bob Builder", "bob@example.com"),
    CAROL: ("carol", "Carol Danvers", "carol@example.com"),
}
APPROVE = "white_check_mark"
FORM = "application/x-www-form-urlencoded"
JSON_TYPE = "application/json"
SLACK_PATH = "/slack/events"
SEED_TIMEOUT = 180.0
#: what every timed /release to shipmate must answer (the freeze path, not a refusal)
FROZE = "asked to release 3 commits"

KINDS = ("/release", "/release*", "reaction")
#: untimed pause after re-seeding, so shipmate's web has refreshed its view of every environment
WARM_SETTLE = WARM_EVERY + 0.5
SHIPMATE, BOLT_DEFAULT, BOLT_PBR = "shipmate", "bolt-default", "bolt-pbr"
LABELS = {
    SHIPMATE: "shipmate (web)",
    BOLT_DEFAULT: "bare bolt (default)",
    BOLT_PBR: "bare bolt (process_before_response)",
}
TARGET_RATIO = 2.0
#: CPUs kept busy by other processes above which the report warns
BUSY_CPUS = 0.2

log = logging.getLogger("bench.ack")


# ---------------------------------------------------------------------------------------------
# The servers under test (each runs in its own process: `python -m bench.ack serve ...`)


def bare_bolt_app(api_url: str, *, process_before_response: bool) -> AsyncApp:
    """The baseline: same client, secret and mode switch as shipmate's, listeners that only ack."""
    app = AsyncApp(
        client=AsyncWebClient(token=TOKEN, base_url=api_url),
        signing_secret=SECRET,
        process_before_response=process_before_response,
    )

    async def just_ack(ack: AsyncAck) -> None:
        await ack()

    app.command("/release")(just_ack)
    app.event("reaction_added")(just_ack)
    app.event("reaction_removed")(just_ack)
    return app


def bolt_web_app(bolt: AsyncApp) -> web.Application:
    """Served exactly as bot/runtime/web.py serves shipmate's bolt app."""

    async def slack_events(request: web.Request) -> web.Response:
        bolt_request = await to_bolt_request(request)
        return await to_aiohttp_response(await bolt.async_dispatch(bolt_request))

    app = web.Application()
    app.router.add_post(SLACK_PATH, slack_events)
    return app


async def serve(args: argparse.Namespace) -> None:
    from bot.runtime.app import connect_redis, slack_client, start_web

    logging.basicConfig(  # as `shipmate web` does (bot/cli.py)
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    cleanups: list[Callable[[], Any]] = []
    if args.target == SHIPMATE:
        config = load_config(args.config)
        redis = connect_redis(args.redis_url)
        server = await start_web(
            config,
            make_store(redis),
            slack_client(TOKEN, args.api_url),
            signing_secret=SECRET,
            host="127.0.0.1",
            port=0,
        )
        port = server.port
        cleanups += [server.stop, redis.aclose]
    else:
        bolt = bare_bolt_app(args.api_url, process_before_response=args.target == BOLT_PBR)
        runner = web.AppRunner(bolt_web_app(bolt), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = int(runner.addresses[0][1])
        cleanups.append(runner.cleanup)
    profiler = _Profiler(args.profile, Path(args.profile_out)) if args.profile else None
    if profiler is not None:
        profiler.start()
    print(f"READY {port}", flush=True)
    try:
        # the parent closes our stdin to stop us (and so does its death)
        await asyncio.to_thread(sys.stdin.buffer.read)
    finally:
        if profiler is not None:
            profiler.stop()
        for cleanup in reversed(cleanups):
            await cleanup()


class _Profiler:
    """cProfile (stdlib) or pyinstrument (if installed) around the serving loop."""

    def __init__(self, kind: str, out: Path) -> None:
        self.kind = kind
        self.out = out
        self._impl: Any = None

    def start(self) -> None:
        if self.kind == "pyinstrument":
            # optional: pip install pyinstrument (not a shipmate dependency)
            profiler = importlib.import_module("pyinstrument").Profiler
            self._impl = profiler(interval=0.0001, async_mode="disabled")
        else:
            import cProfile

            self._impl = cProfile.Profile()
        if self.kind == "pyinstrument":
            self._impl.start()
        else:
            self._impl.enable()

    def stop(self) -> None:
        if self.kind == "pyinstrument":
            self._impl.stop()
            text = self._impl.output_text(unicode=False, color=False, show_all=False)
            self.out.write_text(text)
            return
        import io
        import pstats

        self._impl.disable()
        stream = io.StringIO()
        stats = pstats.Stats(self._impl, stream=stream).strip_dirs()
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(45)
        self.out.write_text(stream.getvalue())


# ---------------------------------------------------------------------------------------------
# Setup: a git repository, the config, and a seeded store


CONFIG_HEAD = """\
repo:
  url: {repo}
  branch: main
  poll_every: 1h
slack:
  channel: {channel}
  approve_reactions: [{approve}, "+1"]
  block_reactions: [no_entry, x]
people:
{people}
state_dir: {state}
environments:
"""
ENVIRONMENT = """\
  {name}:
    approval: authors
    backend: {{kind: shell, deploy: ["true"]}}
"""


def environment_names(count: int) -> list[str]:
    return [f"env{i:03d}" for i in range(1, count + 1)]


def write_config(workdir: Path, repo: Path, envs: Sequence[str]) -> Path:
    people = "\n".join(f"  {email}: {user}" for user, (_, _, email) in PEOPLE.items())
    text = CONFIG_HEAD.format(
        repo=repo, channel=CHANNEL, approve=APPROVE, people=people, state=workdir / "state"
    )
    text += "".join(ENVIRONMENT.format(name=name) for name in ("sandbox", *envs))
    path = workdir / "shipmate.yml"
    path.write_text(text)
    return path


def make_repo(path: Path) -> None:
    """Three commits on main, one each by Alice, Bob and Carol."""
    path.mkdir(parents=True)
    base = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(path.parent),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_COMMITTER_NAME": "GitHub",
        "GIT_COMMITTER_EMAIL": "noreply@github.com",
    }

    def git(*args: str, env: dict[str, str] | None = None) -> None:
        subprocess.run(
            ["git", "-C", str(path), *args],
            env={**base, **(env or {})},
            check=True,
            capture_output=True,
        )

    git("init", "-q", "-b", "main")
    for n, user in enumerate((ALICE, BOB, CAROL), start=1):
        _, name, email = PEOPLE[user]
        (path / f"file{n}.txt").write_text(f"change {n}\n")
        git("add", "-A")
        git(
            "commit",
            "-q",
            "-m",
            f"Change {n} (#{n})",
            env={"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email},
        )


@dataclass
class Seed:
    #: the sandbox release awaiting approval, and its message (the reaction target)
    release_id: str
    message: Message
    #: raw env and batch documents of every envNNN, to put back after each was frozen
    batches: dict[str, str]
    #: the same, per environment
    per_env: dict[str, dict[str, str]]


async def seed_store(config: Config, redis: Redis, emu: SlackEmulator, envs: Sequence[str]) -> Seed:
    """A real worker collects every environment; /release freezes sandbox (all untimed)."""
    store = make_store(redis)
    stack = LocalStack(config=config, emulator=emu, redis=redis, store=store)
    names = ["sandbox", *envs]
    try:
        await stack.start_web()
        stack.start_worker(name="bench-seeder")  # its poll loop collects at once

        async def batches_posted() -> bool:
            for name in names:
                snap = await store.snapshot(name)
                batch = snap.batch if snap else None
                if batch is None or len(batch.commits) != 3 or batch.message_ts is None:
                    return False
            return True

        await wait_until(
            batches_posted,
            within=SEED_TIMEOUT,
            what=f"the worker to collect and post {len(names)} batches",
            every=0.2,
        )
        result = await emu.slash_command(ALICE, CHANNEL, "/release", "sandbox")
        if FROZE not in result.text:
            raise BenchError(f"seeding /release sandbox answered {result.text!r}")
        release_id = (await store.env("sandbox")).active_release
        assert release_id is not None
        await wait_until(
            lambda: jobs_drained(store),
            within=SEED_TIMEOUT,
            what="the worker to finish its jobs",
        )
    finally:
        await stack.stop()
    release = await store.release(release_id)
    if release is None or release.message_ts is None or release.channel is None:
        raise BenchError(f"release {release_id} has no Slack message after seeding")
    message = emu.message(release.channel, release.message_ts)
    indexed = as_text(await redis.get(store.keys.message(release.channel, release.message_ts)))
    if message is None or indexed != f"sandbox/{release_id}":
        raise BenchError(f"the message of {release_id} is not indexed (index says {indexed!r})")
    batches: dict[str, str] = {}
    for name in envs:
        env_raw = as_text(await redis.get(store.keys.env(name)))
        batch_id = str(json.loads(env_raw).get("batch_release") or "") if env_raw else ""
        batch_raw = as_text(await redis.get(store.keys.release(batch_id))) if batch_id else ""
        if not env_raw or not batch_raw:
            raise BenchError(f"environment {name} has no batch after seeding")
        batches[store.keys.env(name)] = env_raw
        batches[store.keys.release(batch_id)] = batch_raw
    per_env = {
        name: {store.keys.env(name): batches[store.keys.env(name)]}
        | {
            k: v
            for k, v in batches.items()
            if k.startswith(store.keys.prefix + "release:") and json.loads(v)["env"] == name
        }
        for name in envs
    }
    return Seed(release_id, message, batches, per_env)


# ---------------------------------------------------------------------------------------------
# The client


@dataclass
class Target:
    key: str
    server: ChildServer

    @property
    def url(self) -> str:
        return self.server.base_url + SLACK_PATH

    @property
    def is_shipmate(self) -> bool:
        return self.key == SHIPMATE


@dataclass
class Workload:
    """Builds the request bodies; keeps shipmate's state such that each request does real work."""

    emu: SlackEmulator
    redis: Redis
    seed: Seed
    envs: list[str]
    user: User
    channel: Channel
    next_env: dict[str, int] = field(default_factory=dict)
    added: dict[str, bool] = field(default_factory=dict)
    events: int = 0
    reseeds: int = 0
    bumps: int = 0
    warmed: set[str] = field(default_factory=set)

    async def release_body(self, target: Target, *, cold: bool = False) -> bytes:
        """A /release of the next environment; ``cold``: its state changed just before."""
        key = f"{target.key}{'*' if cold else ''}"
        i = self.next_env.get(key, 0) % len(self.envs)
        self.next_env[key] = i + 1
        if target.is_shipmate:
            if cold:
                await self._changed_just_now(self.envs[i])
            elif i == 0 and key in self.warmed:
                # every environment was frozen once: put the seeded batches back (untimed),
                # then give web the time it takes to see them, as after any collect
                await self.redis.mset(self.seed.batches)
                self.reseeds += 1
                await asyncio.sleep(WARM_SETTLE)
            self.warmed.add(key)
        body, _ = payloads.slash_command_body(
            self.emu.identity,
            user=self.user,
            channel=self.channel,
            command="/release",
            text=self.envs[i],
            response_url=f"{self.emu.base_url}/commands/T0001/bench/unused",
        )
        return body

    async def _changed_just_now(self, env: str) -> None:
        """Seeded state under a version web has never seen, as right after a collect."""
        self.bumps += 1
        docs = dict(self.seed.per_env[env])
        for key, raw in docs.items():
            doc = json.loads(raw)
            doc["version"] = doc["version"] + 1_000_000 + self.bumps
            docs[key] = json.dumps(doc)
        await self.redis.mset(docs)

    def reaction_body(self, target: Target) -> bytes:
        added = self.added.get(target.key, True)
        self.added[target.key] = not added
        self.events += 1
        event = payloads.reaction_event(
            "reaction_added" if added else "reaction_removed",
            user=ALICE,
            name=APPROVE,
            msg=self.seed.message,
            event_ts=f"{time.time():.6f}",
        )
        envelope = payloads.event_envelope(self.emu.identity, event, f"EvBENCH{self.events:09d}")
        return json.dumps(envelope).encode()


async def send(
    session: aiohttp.ClientSession, emu: SlackEmulator, url: str, body: bytes, content_type: str
) -> tuple[int, bytes]:
    """One signed request; returns (nanoseconds from send to full response, body)."""
    headers = emu.signed_headers(body, content_type)  # signed now: the timestamp is fresh
    start = time.perf_counter_ns()
    async with session.post(url, data=body, headers=headers) as response:
        answer = await response.read()
        status = response.status
    elapsed = time.perf_counter_ns() - start
    if status != 200:
        raise BenchError(f"POST {url} answered HTTP {status} (expected 200): {answer[:300]!r}")
    return elapsed, answer


async def one_request(
    session: aiohttp.ClientSession, work: Workload, target: Target, kind: str
) -> int:
    if kind.startswith("/release"):
        body = await work.release_body(target, cold=kind.endswith("*"))
        elapsed, answer = await send(session, work.emu, target.url, body, FORM)
        if target.is_shipmate and FROZE.encode() not in answer:
            raise BenchError(
                f"shipmate's /release did not freeze a batch; it answered {answer[:300]!r}"
            )
        return elapsed
    body = work.reaction_body(target)
    elapsed, _ = await send(session, work.emu, target.url, body, JSON_TYPE)
    return elapsed


async def measure(
    targets: Sequence[Target], work: Workload, *, warmup: int, requests: int, rounds: int
) -> dict[tuple[str, str], list[int]]:
    samples: dict[tuple[str, str], list[int]] = {(t.key, k): [] for t in targets for k in KINDS}
    connector = aiohttp.TCPConnector(limit=4, force_close=False)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for target in targets:
            for kind in KINDS:
                for _ in range(warmup):
                    await one_request(session, work, target, kind)
        chunks = [requests // rounds + (1 if r < requests % rounds else 0) for r in range(rounds)]
        for chunk in chunks:
            for target in targets:
                for kind in KINDS:
                    bucket = samples[(target.key, kind)]
                    for _ in range(chunk):
                        bucket.append(await one_request(session, work, target, kind))
    return samples


# ---------------------------------------------------------------------------------------------
# Report


def report(
    samples: dict[tuple[str, str], list[int]],
    *,
    redis_version: str,
    opts: argparse.Namespace,
    reseeds: int,
) -> bool:
    print(machine_line())
    busy = opts.other_cpus > BUSY_CPUS
    print(
        f"other processes on the machine kept {opts.other_cpus:.2f} CPUs busy while measuring"
        + ("  WARNING: tails are inflated by that; rerun on a quiet machine" if busy else "")
    )
    print(
        f"versions: slack_bolt {package_version('slack-bolt')}, slack_sdk "
        f"{package_version('slack-sdk')}, aiohttp {package_version('aiohttp')}, redis-py "
        f"{package_version('redis')}, redis-server {redis_version} (AOF, appendfsync everysec)"
    )
    print(
        f"load: {opts.requests} timed requests per target and kind after {opts.warmup} warm-up, "
        f"one at a time over one keep-alive connection, {opts.rounds} interleaved rounds; "
        f"each server in its own process on 127.0.0.1"
    )
    print(
        f"shipmate work: every /release froze a fresh 3-commit batch ({opts.envs} environments, "
        f"re-seeded {reseeds}x untimed); every reaction changed the sandbox release"
    )
    print(
        "/release : the batch was collected a while ago (web's view is current: one Redis "
        "round trip)\n/release*: the environment changed just before (web's view is stale: "
        "the refused write returns fresh state, then the write; two round trips)"
    )
    if opts.profile:
        print(f"NOTE: shipmate ran under {opts.profile}; its figures are inflated by profiling")
    print()
    header = f"{'target':<38}{'kind':<10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
    print(header)
    print("-" * len(header))
    summaries: dict[tuple[str, str], Summary] = {}
    for kind in KINDS:
        for key in (SHIPMATE, BOLT_DEFAULT, BOLT_PBR):
            s = summaries[(key, kind)] = summarize_ns(samples[(key, kind)])
            print(
                f"{LABELS[key]:<38}{kind:<10}{s.p50:>9.2f}{s.p90:>9.2f}{s.p99:>9.2f}{s.max:>9.2f}"
            )
    print()
    passed = True
    for kind in KINDS:
        ours = summaries[(SHIPMATE, kind)]
        best_key = min((BOLT_DEFAULT, BOLT_PBR), key=lambda k: summaries[(k, kind)].p99)
        best = summaries[(best_key, kind)]
        ratio = ours.p99 / best.p99
        ok = ratio <= TARGET_RATIO
        judged = not kind.endswith("*")  # the stale-view case is shown, not judged
        passed = passed and (ok or not judged)
        verdict = ("PASS" if ok else "FAIL") if judged else "info"
        print(
            f"ratio {kind:<9} shipmate p99 {ours.p99:.2f} ms / {LABELS[best_key]} p99 "
            f"{best.p99:.2f} ms = {ratio:.2f}x  {verdict} (target <= "
            f"{TARGET_RATIO:g}x; at p50 it is {ours.p50 / best.p50:.2f}x)"
        )
    return passed


# ---------------------------------------------------------------------------------------------
# Orchestration


async def run(opts: argparse.Namespace, workdir: Path, redis_server: RedisServer) -> bool:
    envs = environment_names(opts.envs)
    make_repo(workdir / "repo")
    config_path = write_config(workdir, workdir / "repo", envs)
    config = load_config(config_path)
    # seeding posts one message per environment; the emulator must not rate-limit that
    emu = SlackEmulator(
        signing_secret=SECRET, bot_token=TOKEN, rate_limits={"chat.postMessage": 1_000_000}
    )
    await emu.start()
    redis = Redis.from_url(redis_server.url, decode_responses=True)
    servers: list[ChildServer] = []
    try:
        users = {
            uid: emu.add_user(uid, name=name, email=email, real_name=real)
            for uid, (name, real, email) in PEOPLE.items()
        }
        channel = emu.add_channel(CHANNEL, name="releases")
        print("seeding: a worker collects 3 commits into every environment ...", flush=True)
        seed = await seed_store(config, redis, emu, envs)
        emu.request_url = None  # from here on, only the benchmark client talks to the servers
        for key in (SHIPMATE, BOLT_DEFAULT, BOLT_PBR):
            argv = [
                sys.executable,
                "-m",
                "bench.ack",
                "serve",
                "--target",
                key,
                "--api-url",
                emu.api_url,
                "--redis-url",
                redis_server.url,
                "--config",
                str(config_path),
            ]
            if opts.profile and key == SHIPMATE:
                argv += ["--profile", opts.profile, "--profile-out", str(workdir / "profile.txt")]
            servers.append(await start_child(LABELS[key], argv, workdir / f"{key}.log"))
        targets = [Target(key, server) for key, server in zip(LABELS, servers, strict=True)]
        before = await make_store(redis).release(seed.release_id)
        assert before is not None
        work = Workload(emu, redis, seed, envs, users[ALICE], channel)
        print(
            f"measuring: {opts.warmup} warm-up + {opts.requests} timed requests x "
            f"{len(targets)} targets x {len(KINDS)} kinds ...",
            flush=True,
        )
        pids = [s.process.pid for s in servers]
        other = OtherLoad([*pids, redis_server.process.pid] if redis_server.process else pids)
        other.start()
        samples = await measure(
            targets, work, warmup=opts.warmup, requests=opts.requests, rounds=opts.rounds
        )
        opts.other_cpus = other.stop()
        await _check_reactions_counted(redis, seed, before.version, opts)
        for server in servers:
            await server.stop()
        servers.clear()
        print()
        passed = report(
            samples, redis_version=redis_server.version, opts=opts, reseeds=work.reseeds
        )
        if emu.background_errors:
            raise BenchError(f"the Slack emulator failed: {emu.background_errors[0]!r}")
        if opts.profile:
            print(f"\n--- profile of shipmate's web process ({opts.profile}) ---")
            print((workdir / "profile.txt").read_text())
        return passed
    finally:
        for server in servers:
            with contextlib.suppress(BenchError):
                await server.stop()
        await redis.aclose()
        await emu.stop()


async def _check_reactions_counted(
    redis: Redis, seed: Seed, version_before: int, opts: argparse.Namespace
) -> None:
    raw = as_text(await redis.get(make_store(redis).keys.release(seed.release_id)))
    after = release_from_doc(json.loads(raw)) if raw else None
    sent = opts.warmup + opts.requests
    if after is None or after.version - version_before != sent:
        got = None if after is None else after.version - version_before
        raise BenchError(
            f"shipmate recorded {got} of {sent} reactions on {seed.release_id}; "
            "the reaction path did not do the work it was meant to"
        )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench.ack", description="Ack latency: shipmate's web next to a bare bolt AsyncApp"
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=2000,
        help="timed requests per target and kind (default 2000)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=200,
        help="untimed warm-up requests per target and kind (default 200)",
    )
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds (default 10)")
    parser.add_argument(
        "--envs", type=int, default=200, help="environments /release cycles through (default 200)"
    )
    parser.add_argument(
        "--profile",
        choices=("cprofile", "pyinstrument"),
        help="profile shipmate's web process and print the profile (figures then inflated)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when the 2x target is missed")
    opts = parser.parse_args(argv)
    if not 1 <= opts.requests <= 100_000:
        parser.error("--requests must be between 1 and 100000")
    if not 0 <= opts.warmup <= 10_000:
        parser.error("--warmup must be between 0 and 10000")
    if not 1 <= opts.rounds <= opts.requests:
        parser.error("--rounds must be between 1 and --requests")
    if not 1 <= opts.envs <= 999:
        parser.error("--envs must be between 1 and 999")
    return opts


def parse_serve_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.ack serve")
    parser.add_argument("--target", choices=(SHIPMATE, BOLT_DEFAULT, BOLT_PBR), required=True)
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--profile", choices=("cprofile", "pyinstrument"))
    parser.add_argument("--profile-out", default="profile.txt")
    return parser.parse_args(argv)


def _raise_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["serve"]:
        asyncio.run(serve(parse_serve_args(args[1:])))
        return 0
    opts = parse_args(args)
    # SIGTERM unwinds like Ctrl-C, so the finally blocks below stop what was started
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="shipmate-bench-"))
    redis_server = RedisServer(workdir / "redis")
    try:
        redis_server.directory.mkdir()
        redis_server.start()
        passed = asyncio.run(run(opts, workdir, redis_server))
    except BenchError as err:
        print(f"bench.ack: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench.ack: interrupted", file=sys.stderr)
        return 130
    finally:
        kill_leftovers()
        redis_server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if opts.strict and not passed else 0


if __name__ == "__main__":
    sys.exit(main())
