"""A team on the local Slack workspace: a git repo, shipmate's real web + worker, people.

Everything goes through real HTTP (signed Slack requests into bolt, or Socket Mode
envelopes over a real WebSocket; the Web API served by the emulator), a real redis-server
and real git. Waits are on conditions.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from redis.asyncio import Redis

from bot.config.loader import Config, load_config
from bot.domain.models import Release
from bot.local.demo import DEPLOY, PEOPLE, SERVICE, DemoRepo
from bot.local.slackemu import Message, SlackEmulator
from bot.local.stack import LocalStack, start_stack
from tests.conftest import free_port

CHANNEL = "C0RELEASES"
ALICE, BOB, CAROL, ONCALL = "U0ALICE", "U0BOB", "U0CAROL", "U0ONCALL"
MALLORY = "U0MALLORY"
WAIT = 15.0
APP_TOKEN = "xapp-1-A0APP-1-e2e"

CONFIG = """\
repo:
  url: ./repo
  branch: main
  pr_url: https://github.com/acme/shop/pull/{{number}}
  poll_every: 1h
slack:
  channel: {channel}
people:
  alice@example.com: {alice}
permissions:
  release: [everyone]
  rollback: [{alice}, {oncall}]
environments:
  sandbox:
    approval: authors
    backend:
      kind: shell
      deploy: ["{python}", "./deploy.py", "{{sha}}", "{{env}}"]
      timeout: 20s
      env: {{DEMO_PORT: "{port}"}}
    health: {{http: "http://127.0.0.1:{port}/healthz", timeout: 2s, interval: 100ms}}
  staging:
    approval: none
    backend:
      kind: shell
      deploy: ["{python}", "./deploy.py", "{{sha}}", "{{env}}"]
      env: {{DEMO_PORT: "{staging_port}"}}
    health: {{http: "http://127.0.0.1:{staging_port}/healthz", timeout: 2s, interval: 100ms}}
"""


@dataclass
class Team:
    workdir: Path
    repo: DemoRepo
    config: Config
    emulator: SlackEmulator
    stack: LocalStack
    #: "http" or "socket": how Slack reaches shipmate's web
    mode: str = "http"

    @property
    def emu(self) -> SlackEmulator:
        return self.emulator

    def commit(self, user: str, message: str, files: dict[str, str] | None = None) -> str:
        name = message.splitlines()[0].lower().replace(" ", "-")[:30]
        return self.repo.commit(user, message, files or {f"changes/{name}": message})

    async def collect(self) -> None:
        await self.stack.trigger_collect()

    async def batch_message(self, *, containing: str, env: str = "sandbox") -> Message:
        return await self.wait_message(
            lambda m: f"Next release to `{env}`" in rendered(m) and containing in rendered(m),
            what=f"a batch for {env} containing {containing!r}",
        )

    async def wait_message(self, match: Callable[[Message], bool], *, what: str) -> Message:
        def find() -> Message | None:
            return next((m for m in reversed(self.emu.messages(CHANNEL)) if match(m)), None)

        found: Message | None = await self.emu.wait_for(find, timeout=WAIT, what=what)
        assert found is not None
        return found

    async def wait_text(self, ts: str, text: str) -> Message:
        def check() -> Message | None:
            message = self.emu.message(CHANNEL, ts)
            return message if message is not None and text in rendered(message) else None

        found: Message | None = await self.emu.wait_for(
            check, timeout=WAIT, what=f"message {ts} to say {text!r}"
        )
        assert found is not None
        return found

    async def wait_ephemeral(self, user: str, text: str) -> Message:
        def check() -> Message | None:
            return next((m for m in self.emu.ephemerals(user) if text in rendered(m)), None)

        found: Message | None = await self.emu.wait_for(
            check, timeout=WAIT, what=f"an ephemeral for {user} saying {text!r}"
        )
        assert found is not None
        return found

    async def release_state(self, release_id: str) -> Release:
        release = await self.stack.store.release(release_id)
        assert release is not None, release_id
        return release

    def thread_text(self, ts: str) -> str:
        return "\n".join(rendered(m) for m in self.emu.thread(CHANNEL, ts))


NAMES = {user: name for user, (name, _, _) in PEOPLE.items()} | {MALLORY: "mallory"}


def rendered(message: Message) -> str:
    return message.render(NAMES)


def write_config(workdir: Path, *, port: int, staging_port: int, extra: str = "") -> Config:
    (workdir / "service.py").write_text(SERVICE)
    (workdir / "deploy.py").write_text(DEPLOY)
    text = CONFIG.format(
        channel=CHANNEL,
        alice=ALICE,
        oncall=ONCALL,
        python=sys.executable,
        port=port,
        staging_port=staging_port,
    )
    (workdir / "shipmate.yml").write_text(text + extra)
    return load_config(workdir / "shipmate.yml")


async def start_team(
    workdir: Path,
    redis: Redis,
    *,
    port: int,
    staging_port: int,
    extra: str = "",
    mode: str = "http",
) -> Team:
    """``extra`` is YAML for more environments, appended under ``environments:``;
    ``mode`` is "http" or "socket" (Socket Mode with an app-level token)."""
    if mode not in ("http", "socket"):
        raise ValueError(f"mode must be 'http' or 'socket', got {mode!r}")
    repo = DemoRepo(workdir / "repo")
    repo.commit(ALICE, "Initial shop", {"app/health": "ok\n"})
    config = write_config(workdir, port=port, staging_port=staging_port, extra=extra)
    emulator = SlackEmulator(
        signing_secret="test-signing-secret",
        bot_token="xoxb-test",
        app_token=APP_TOKEN if mode == "socket" else None,
    )
    await emulator.start()
    for user, (name, real, email) in PEOPLE.items():
        emulator.add_user(user, name=name, email=email, real_name=real)
    emulator.add_user(MALLORY, name="mallory", email="mallory@example.com", real_name="Mallory")
    emulator.add_channel(CHANNEL, name="releases")
    stack = await start_stack(config, redis, emulator, socket_mode=mode == "socket")
    return Team(
        workdir=workdir, repo=repo, config=config, emulator=emulator, stack=stack, mode=mode
    )


@contextlib.asynccontextmanager
async def running_team(
    workdir: Path, redis: Redis, *, extra: str = "", mode: str = "http"
) -> AsyncIterator[Team]:
    """A started team, stopped afterwards with every service its deploys left running."""
    team = await start_team(
        workdir, redis, port=free_port(), staging_port=free_port(), extra=extra, mode=mode
    )
    try:
        yield team
    finally:
        await team.stack.stop()
        await team.emulator.stop()
        for pidfile in list(workdir.glob("*.pid")):  # noqa: ASYNC240 - teardown, a few files
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pidfile.read_text()), signal.SIGTERM)
