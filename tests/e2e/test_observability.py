"""What an operator sees: /metrics after real releases, and JSON log lines naming the release."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from bot.adapters.logs import JsonFormatter
from bot.local.demo import DemoRepo
from bot.local.slackemu import SlackEmulator
from tests.conftest import RedisServer, free_port
from tests.e2e.harness import ALICE, BOB, CAROL, CHANNEL, WAIT, Team, write_config

SHIPMATE = str(Path(sys.executable).with_name("shipmate"))

T = TypeVar("T")
Figures = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(port: int) -> tuple[str, Figures]:
    """GET /metrics: its content type and every sample, parsed as Prometheus parses it."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        assert response.status == 200
        text = await response.text()
        content_type = response.headers["Content-Type"]
    figures = {
        (s.name, frozenset(s.labels.items())): float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return content_type, figures


def at(figures: Figures, name: str, **labels: str) -> float:
    return figures.get((name, frozenset(labels.items())), 0.0)


@contextmanager
def json_lines(logger_name: str) -> Iterator[io.StringIO]:
    """Everything ``logger_name`` logs at INFO and up, formatted as `shipmate worker` does."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield out
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.mark.http_only
async def test_metrics_and_logs_after_a_release_goes_live_and_another_rolls_back(
    team: Team,
) -> None:
    """A release goes live on staging, the next fails its health check and is rolled back;
    /metrics (from `web`, fed by the worker through Redis) shows both, and every log line
    about them names its release."""
    emu = team.emu
    with json_lines("bot") as logged:
        team.commit(BOB, "Fix price rounding")
        await team.collect()
        good = await team.batch_message(containing="Fix price rounding", env="staging")
        answer = await emu.slash_command(ALICE, CHANNEL, "/release", "staging")
        assert "deploying now" in answer.text, answer.text
        await team.wait_text(good.ts, "is live on `staging`")

        team.commit(CAROL, "Switch payment API", {"app/health": "broken\n"})
        await team.collect()
        bad = await team.batch_message(containing="Switch payment API", env="staging")
        await emu.slash_command(CAROL, CHANNEL, "/release", "staging")
        await team.wait_text(bad.ts, "was rolled back")

        web = team.stack.web
        assert web is not None

        # the worker flushes what it counted every couple of seconds
        async def rolled_back_counted() -> Figures | None:
            _, figures = await scrape(web.port)
            done = at(
                figures,
                "shipmate_rollback_duration_seconds_count",
                env="staging",
                trigger="automatic",
                outcome="healthy",
            )
            return figures if done >= 1 else None

        figures = await _until(rolled_back_counted, what="the rollback in /metrics")
        assert figures is not None
    content_type, _ = await scrape(web.port)
    assert content_type.startswith("text/plain; version=")

    deploys = "shipmate_deploy_duration_seconds_count"
    assert at(figures, deploys, env="staging", outcome="live") >= 1
    assert at(figures, deploys, env="staging", outcome="failed") >= 1
    assert at(figures, "shipmate_deploys_total", env="staging", outcome="live") >= 1
    assert at(figures, "shipmate_deploys_total", env="staging", outcome="failed") >= 1
    assert at(figures, "shipmate_deploy_duration_seconds_sum", env="staging", outcome="live") > 0
    assert at(figures, "shipmate_approval_wait_seconds_count", env="staging") >= 2
    assert at(figures, "shipmate_slack_api_calls_total", method="chat.postMessage") >= 2
    assert at(figures, "shipmate_slack_api_calls_total", method="chat.update") >= 1
    assert at(figures, "shipmate_jobs_total", kind="deploy", outcome="ok") >= 2
    assert ("shipmate_jobs_queue_depth", frozenset({("state", "waiting")})) in figures
    assert ("shipmate_jobs_queue_depth", frozenset({("state", "pending")})) in figures
    assert ("shipmate_jobs_oldest_age_seconds", frozenset()) in figures
    assert at(figures, "shipmate_redis_up") == 1
    # counted by the store in the write that changed the state
    entered = "shipmate_releases_entered_total"
    assert at(figures, entered, env="staging", state="live") >= 1
    assert at(figures, entered, env="staging", state="rolled_back") >= 1
    assert ("shipmate_releases", frozenset({("env", "staging"), ("state", "deploying")})) in figures

    lines = [json.loads(line) for line in logged.getvalue().splitlines()]
    live = _one(lines, "release staging-1 is live")
    assert (live["release"], live["env"], live["kind"]) == ("staging-1", "staging", "deploy")
    assert live["logger"] == "bot.services.deploys" and live["job"]
    rolled = _one(lines, "release staging-2: rolled back to")
    assert (rolled["release"], rolled["env"]) == ("staging-2", "staging")


def _one(lines: list[dict[str, Any]], text: str) -> dict[str, Any]:
    found = [line for line in lines if text in line["message"]]
    assert len(found) == 1, (text, [line["message"] for line in lines])
    return found[0]


async def _until(check: Callable[[], Awaitable[T]], *, what: str) -> T:
    """Poll ``check`` until it gives something truthy; fail after the harness' WAIT."""
    try:
        async with asyncio.timeout(WAIT):
            while True:
                result = await check()
                if result:
                    return result
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out after {WAIT:g}s waiting for {what}") from None


# -- `shipmate web` as the Procfile starts it ----------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "text"])
async def test_shipmate_web_logs_in_the_chosen_format_and_serves_metrics(
    tmp_path: Path, redis_server: RedisServer, redis: Redis, fmt: str
) -> None:
    DemoRepo(tmp_path / "repo").commit(ALICE, "Initial shop", {"app/health": "ok\n"})
    write_config(tmp_path, port=free_port(), staging_port=free_port())
    port = free_port()
    log = tmp_path / "web.log"
    async with SlackEmulator(signing_secret="proc-secret", bot_token="xoxb-proc") as emu:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "SHIPMATE_"))}
        env |= {
            "SLACK_BOT_TOKEN": "xoxb-proc",
            "SLACK_SIGNING_SECRET": "proc-secret",
            "SLACK_API_URL": emu.api_url,
            "REDIS_URL": redis_server.url,
            "SHIPMATE_CONFIG": str(tmp_path / "shipmate.yml"),
            "PORT": str(port),
            "HOST": "127.0.0.1",
            **({"SHIPMATE_LOG_FORMAT": "text"} if fmt == "text" else {}),
        }
        web = _spawn_web(env, log)
        try:
            await _wait_listening(port, web, log)
            content_type, figures = await scrape(port)
        finally:
            web.terminate()
            code = await asyncio.to_thread(web.wait, 10)
    text = _read(log)
    assert code == 0, text
    assert content_type.startswith("text/plain; version=")
    assert at(figures, "shipmate_redis_up") == 1
    if fmt == "text":
        assert " INFO shipmate: web (HTTP mode) listening on 127.0.0.1:" in text, text
        return
    lines = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    started = _one(lines, "web (HTTP mode) listening on")
    assert (started["level"], started["logger"]) == ("INFO", "shipmate")
    assert started["time"]


def _spawn_web(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([SHIPMATE, "web"], env=env, stdout=out, stderr=subprocess.STDOUT)


def _read(log: Path) -> str:
    return log.read_text()


async def _wait_listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    async def accepts() -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            assert process.poll() is None, _read(log)
            return False
        writer.close()
        await writer.wait_closed()
        return True

    await _until(accepts, what=f"`shipmate web` to listen on {port}")
