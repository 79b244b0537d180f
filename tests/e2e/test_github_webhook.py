"""The GitHub push webhook through real HTTP into shipmate's web, with a real redis-server.

A push is only a trigger: it makes the batch appear now instead of at the next poll, and
releases work the same without any webhook at all.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.local.demo import DemoRepo
from bot.local.slackemu import SlackEmulator
from handlers.github import NOT_CONFIGURED, sign
from tests.conftest import RedisServer, free_port
from tests.e2e.harness import ALICE, BOB, CHANNEL, Team, rendered, write_config

SECRET = "It's a Secret to Everybody"
SHIPMATE = str(Path(sys.executable).with_name("shipmate"))


@pytest.fixture
async def hooked(team: Team) -> Team:
    """The team's web restarted with a webhook secret (what GITHUB_WEBHOOK_SECRET does)."""
    team.stack.github_webhook_secret = SECRET
    await team.stack.stop_web()
    await team.stack.start_web()
    return team


def push_body(sha: str, ref: str = "refs/heads/main") -> bytes:
    return json.dumps(
        {
            "ref": ref,
            "before": "0" * 39 + "1",
            "after": sha,
            "repository": {
                "full_name": "acme/shop",
                "clone_url": "https://github.com/acme/shop.git",
            },
        }
    ).encode()


async def deliver(
    port: int,
    body: bytes,
    *,
    event: str = "push",
    delivery: str | None = None,
    secret: str = SECRET,
) -> tuple[int, dict[str, Any]]:
    """POST as GitHub does: raw JSON body, signed with the shared secret."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/e2e",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(secret.encode(), body),
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"http://127.0.0.1:{port}/github/webhook", data=body, headers=headers
        ) as response,
    ):
        return response.status, await response.json()


def web_port(team: Team) -> int:
    assert team.stack.web is not None
    return team.stack.web.port


async def collect_jobs(team: Team) -> list[dict[str, str]]:
    """The collect jobs a push queued (a deploy queues its own collect afterwards)."""
    keys = team.stack.store.keys
    entries: Any = await team.stack.redis.xrange(keys.collects)
    entries += await team.stack.redis.xrange(keys.jobs)
    jobs = [{_text(k): _text(v) for k, v in fields.items()} for _, fields in entries]
    return [job for job in jobs if job.get("kind") == "collect" and job.get("reason") == "push"]


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def test_ping_is_answered_with_zen(hooked: Team) -> None:
    """GitHub's first delivery after the hook is created."""
    body = json.dumps({"zen": "Approachable is better than simple.", "hook_id": 1}).encode()
    status, answer = await deliver(web_port(hooked), body, event="ping")
    assert (status, answer) == (200, {"ok": True, "zen": "Approachable is better than simple."})
    assert await collect_jobs(hooked) == []


async def test_bad_signature_is_refused_and_queues_nothing(hooked: Team) -> None:
    """A forged push gets 401, and its delivery id is not burnt for the real one."""
    delivery = str(uuid.uuid4())
    body = push_body("c" * 40)
    status, answer = await deliver(web_port(hooked), body, delivery=delivery, secret="guess")
    assert status == 401 and "does not match" in answer["error"]
    assert await collect_jobs(hooked) == []
    seen = hooked.stack.store.keys.dedupe("github", delivery)
    assert await hooked.stack.redis.exists(seen) == 0


async def test_redelivered_push_queues_one_collect(hooked: Team) -> None:
    """GitHub's "Redeliver" (or a replay) with the same delivery id changes nothing."""
    delivery = str(uuid.uuid4())
    body = push_body("d" * 40)
    first = await deliver(web_port(hooked), body, delivery=delivery)
    second = await deliver(web_port(hooked), body, delivery=delivery)
    assert first == (200, {"ok": True, "queued": "collect"})
    assert second == (200, {"ok": True, "duplicate": True})
    jobs = await collect_jobs(hooked)
    assert len(jobs) == 1 and jobs[0]["reason"] == "push" and jobs[0]["after"] == "d" * 40


async def test_push_posts_the_batch_without_waiting_for_the_poll_timer(hooked: Team) -> None:
    """The worker polled once at start; the next poll is an hour away, so only the push can
    make the new commit appear."""
    assert hooked.config.repo.poll_every >= 3600
    # the start-up poll has run for every environment (staging is collected last)
    await hooked.batch_message(containing="Initial shop", env="staging")
    sha = hooked.commit(BOB, "Speed up search (#124)")
    status, answer = await deliver(web_port(hooked), push_body(sha))
    assert (status, answer) == (200, {"ok": True, "queued": "collect"})
    batch = await hooked.batch_message(containing="Speed up search")
    assert "Initial shop" in rendered(batch), "the batch message was edited, not re-posted"
    assert [job["after"] for job in await collect_jobs(hooked)] == [sha]


async def test_push_to_another_branch_is_ignored(hooked: Team) -> None:
    status, answer = await deliver(web_port(hooked), push_body("e" * 40, "refs/heads/feature"))
    assert status == 202 and answer["ignored"] is True
    assert "refs/heads/feature is not the release branch refs/heads/main" in answer["reason"]
    assert await collect_jobs(hooked) == []


async def test_releases_work_with_no_webhook_at_all(team: Team) -> None:
    """No GITHUB_WEBHOOK_SECRET: the endpoint says so, and polling alone drives a release."""
    status, answer = await deliver(web_port(team), push_body("f" * 40))
    assert (status, answer) == (404, {"ok": False, "error": NOT_CONFIGURED})
    await team.batch_message(containing="Initial shop", env="staging")
    reply = await team.emu.slash_command(ALICE, CHANNEL, "/release", "staging")
    assert "deploying now" in reply.text, reply
    await team.wait_message(lambda m: "is live on `staging`" in rendered(m), what="staging live")
    assert await collect_jobs(team) == []


# --- the Procfile's `shipmate web`, configured by GITHUB_WEBHOOK_SECRET -----------------------


@pytest.fixture
async def emulator() -> AsyncIterator[SlackEmulator]:
    emu = SlackEmulator(signing_secret="proc-secret", bot_token="xoxb-proc")
    await emu.start()
    emu.add_channel(CHANNEL, name="releases")
    yield emu
    await emu.stop()


def _spawn_web(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([SHIPMATE, "web"], env=env, stdout=out, stderr=subprocess.STDOUT)


def _read(log: Path) -> str:
    return log.read_text()


async def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    async def probe() -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        await writer.wait_closed()
        return True

    async with asyncio.timeout(20):
        while not await probe():
            assert process.poll() is None, _read(log)
            await asyncio.sleep(0.05)


async def test_shipmate_web_process_reads_github_webhook_secret(
    tmp_path: Path, redis_server: RedisServer, emulator: SlackEmulator
) -> None:
    DemoRepo(tmp_path / "repo").commit(ALICE, "Initial shop", {"app/health": "ok\n"})
    write_config(tmp_path, port=free_port(), staging_port=free_port())
    port = free_port()
    env = {
        **os.environ,
        "SLACK_BOT_TOKEN": "xoxb-proc",
        "SLACK_SIGNING_SECRET": "proc-secret",
        "SLACK_API_URL": emulator.api_url,
        "REDIS_URL": redis_server.url,
        "SHIPMATE_CONFIG": str(tmp_path / "shipmate.yml"),
        "GITHUB_WEBHOOK_SECRET": SECRET,
        "PORT": str(port),
        "HOST": "127.0.0.1",
    }
    log = tmp_path / "web.log"
    web = _spawn_web(env, log)
    try:
        await _wait_listening(port, web, log)
        ping = json.dumps({"zen": "Speak like a human."}).encode()
        assert await deliver(port, ping, event="ping") == (
            200,
            {"ok": True, "zen": "Speak like a human."},
        )
        status, answer = await deliver(port, ping, event="ping", secret="wrong")
        assert status == 401, answer
    finally:
        web.terminate()
        code = await asyncio.to_thread(web.wait, 10)
    assert code == 0, _read(log)


async def test_a_push_replayed_a_thousand_times_with_fresh_ids_queues_one_collect(
    hooked: Team,
) -> None:
    """The delivery id is not signed: a captured push sent again under 1,000 new ids is
    still one push, recognised by its signed ref/before/after."""
    body = push_body("a" * 40)
    url = f"http://127.0.0.1:{web_port(hooked)}/github/webhook"
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-Hub-Signature-256": sign(SECRET.encode(), body),
    }
    answers: dict[str, int] = {}
    async with aiohttp.ClientSession() as session:
        for _ in range(1_000):
            fresh = headers | {"X-GitHub-Delivery": str(uuid.uuid4())}
            async with session.post(url, data=body, headers=fresh) as response:
                assert response.status == 200
                answer = await response.json()
                key = "queued" if answer.get("queued") else "duplicate"
                answers[key] = answers.get(key, 0) + 1
    assert answers == {"queued": 1, "duplicate": 999}
    assert [job["after"] for job in await collect_jobs(hooked)] == ["a" * 40]
