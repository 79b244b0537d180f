"""The Procfile contract: `shipmate web` and `shipmate worker` as real processes, configured by env."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot.local.demo import PEOPLE, DemoRepo
from bot.local.slackemu import SlackEmulator
from tests.conftest import RedisServer, free_port
from tests.e2e.harness import ALICE, BOB, CHANNEL, rendered, write_config

SHIPMATE = str(Path(sys.executable).with_name("shipmate"))


@pytest.fixture
async def emulator() -> AsyncIterator[SlackEmulator]:
    emu = SlackEmulator(signing_secret="proc-secret", bot_token="xoxb-proc")
    await emu.start()
    for user, (name, real, email) in PEOPLE.items():
        emu.add_user(user, name=name, email=email, real_name=real)
    emu.add_channel(CHANNEL, name="releases")
    yield emu
    await emu.stop()


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([SHIPMATE, *args], env=env, stdout=out, stderr=subprocess.STDOUT)


async def test_web_and_worker_processes_release_from_env_config(
    tmp_path: Path, redis_server: RedisServer, emulator: SlackEmulator
) -> None:
    """Started as the Procfile does, from environment variables only, they run a release."""
    await _flush(redis_server)
    repo = DemoRepo(tmp_path / "repo")
    repo.commit(ALICE, "Initial shop", {"app/health": "ok\n"})
    repo.commit(BOB, "Fix rounding", {"app/price": "even\n"})
    port = free_port()
    write_config(tmp_path, port=free_port(), staging_port=free_port())
    env = {
        **os.environ,
        "SLACK_BOT_TOKEN": "xoxb-proc",
        "SLACK_SIGNING_SECRET": "proc-secret",
        "SLACK_API_URL": emulator.api_url,
        "REDIS_URL": redis_server.url,
        "SHIPMATE_CONFIG": str(tmp_path / "shipmate.yml"),
        "PORT": str(port),
        "HOST": "127.0.0.1",
    }
    web = _spawn(["web"], env, tmp_path / "web.log")
    worker = _spawn(["worker"], env, tmp_path / "worker.log")
    try:
        emulator.request_url = f"http://127.0.0.1:{port}/slack/events"
        # the worker may post its batch before web listens: a person types only once
        # web is up (otherwise Slack itself would answer dispatch_failed)
        await _wait_serving(port, web, tmp_path / "web.log")
        # the worker polls on start; the batch appears without any trigger
        batch = await emulator.wait_for(
            lambda: next(
                (
                    m
                    for m in emulator.messages(CHANNEL)
                    if "Next release to `staging`" in rendered(m) and "Fix rounding" in rendered(m)
                ),
                None,
            ),
            timeout=20,
            what="the staging batch posted by the worker process",
        )
        assert batch is not None
        answer = await emulator.slash_command(ALICE, CHANNEL, "/release", "staging")
        assert "deploying now" in answer.text, answer
        await emulator.wait_for(
            lambda: any("is live on `staging`" in rendered(m) for m in emulator.messages(CHANNEL)),
            timeout=20,
            what="the release to go live",
        )
    finally:
        for process in (web, worker):
            process.terminate()
        # both are reaped before either is judged: an unreaped one would warn in a later test
        codes = {"web": await asyncio.to_thread(web.wait, 10)}
        codes["worker"] = await asyncio.to_thread(worker.wait, 10)
        _stop_demo_service(tmp_path)
        for name, code in codes.items():
            assert code == 0, f"{name} exited {code}:\n{(tmp_path / f'{name}.log').read_text()}"


async def test_web_process_in_socket_mode_still_serves_http(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """With SLACK_APP_TOKEN (and no signing secret) `shipmate web` takes Slack's requests over
    Socket Mode and still serves /healthz and /metrics; /slack/events is not served."""
    await _flush(redis_server)
    DemoRepo(tmp_path / "repo").commit(ALICE, "Initial shop", {"app/health": "ok\n"})
    write_config(tmp_path, port=free_port(), staging_port=free_port())
    port = free_port()
    async with SlackEmulator(bot_token="xoxb-proc", app_token="xapp-1-A0APP-1-proc") as emu:
        for user, (name, real, email) in PEOPLE.items():
            emu.add_user(user, name=name, email=email, real_name=real)
        emu.add_channel(CHANNEL, name="releases")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
        env |= {
            "SLACK_BOT_TOKEN": "xoxb-proc",
            "SLACK_APP_TOKEN": "xapp-1-A0APP-1-proc",
            "SLACK_API_URL": emu.api_url,
            "REDIS_URL": redis_server.url,
            "SHIPMATE_CONFIG": str(tmp_path / "shipmate.yml"),
            "PORT": str(port),
            "HOST": "127.0.0.1",
        }
        web = _spawn(["web"], env, tmp_path / "web.log")
        try:
            await emu.wait_for(
                lambda: emu.socket_connections == 1 or web.poll() is not None,
                timeout=20,
                what="the web process to connect over Socket Mode",
            )
            assert web.poll() is None, (tmp_path / "web.log").read_text()
            answer = await emu.slash_command(ALICE, CHANNEL, "/release", "help")
            assert answer.status == 200 and "`/rollback <env>`" in answer.text, answer
            assert emu.deliveries[-1].transport == "socket"
            async with aiohttp.ClientSession() as session:
                base = f"http://127.0.0.1:{port}"
                async with session.get(base + "/healthz") as response:
                    assert response.status == 200
                async with session.get(base + "/metrics") as response:
                    assert "shipmate_up 1" in await response.text()
                async with session.post(base + "/slack/events", data=b"x") as response:
                    assert response.status == 404
        finally:
            web.terminate()
            code = await asyncio.to_thread(web.wait, 10)
        assert code == 0, (tmp_path / "web.log").read_text()


async def _wait_serving(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    """Until ``process`` answers GET /healthz on ``port``; fails at once if it exits (the
    log is read only then, for the failure message)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    async with aiohttp.ClientSession() as session:
        while True:
            assert process.poll() is None, f"exited {process.returncode}: {log.read_text()}"  # noqa: ASYNC240
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass  # not listening yet
            assert loop.time() < deadline, f"not serving after 20 s: {log.read_text()}"  # noqa: ASYNC240
            await asyncio.sleep(0.05)


async def _flush(server: RedisServer) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(server.url)
    await client.flushall()
    await client.aclose()


def _stop_demo_service(workdir: Path) -> None:
    for pidfile in workdir.glob("*.pid"):
        subprocess.run(["kill", pidfile.read_text().strip()], check=False, capture_output=True)


def test_missing_settings_are_named() -> None:
    """`shipmate web` without a bot token says which variable is missing and exits 2."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    done = subprocess.run([SHIPMATE, "web"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "missing environment variables: SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET" in done.stderr


def test_check_config_reports_file_line_and_key(tmp_path: Path) -> None:
    """`shipmate check-config` prints each problem with file, line and key, and exits non-zero."""
    bad = tmp_path / "shipmate.yml"
    bad.write_text(
        "repo:\n  url: ./repo\n  brnch: main\nslack:\n  channel: C0RELEASES\n"
        "environments:\n  sandbox:\n    backend: {kind: k8s}\n"
    )
    done = subprocess.run(
        [SHIPMATE, "check-config", str(bad)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 1
    assert f"{bad}:3: repo.brnch: unknown key, did you mean 'branch'?" in done.stdout
    assert (
        "environments.sandbox.backend.kind: expected one of docker, swarm, shell, got 'k8s'"
        in done.stdout
    )


def test_check_config_accepts_the_design_example(tmp_path: Path) -> None:
    """The example configuration from the design document is valid."""
    design = Path(__file__).resolve().parents[3] / "shared" / "design.md"
    if not design.exists():
        pytest.skip("shared/design.md is not beside this checkout")
    text = design.read_text()
    example = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "shipmate.yml"
    path.write_text(example)
    done = subprocess.run(
        [SHIPMATE, "check-config", str(path)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout
    assert "3 environments: staging (docker), production (swarm), sandbox (shell)" in done.stdout
