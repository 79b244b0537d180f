"""``/history [env]``: an environment's recent releases, answered only to whoever asked.

A read, not an intent: one Lua script fetches the environment and its newest release
documents, ``bot.domain.history`` renders them, and the ack carries the answer, well inside
Slack's 3 s. Nothing is written, so a Redis outage only means "try again".
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.exceptions import RedisError
from slack_bolt.async_app import AsyncAck, AsyncApp

from bot.domain import commands
from bot.domain.errors import ShipmateError
from bot.domain.history import MAX_RELEASES, render_history
from bot.services.renderer import options_for
from handlers.deps import Deps, log_redis_failure, redis_errors_counted

log = logging.getLogger(__name__)

#: of the 3 s Slack gives a slash command, what reading the history may take
READ_SECONDS = 2.0

UNAVAILABLE = (
    ":warning: shipmate could not read the release history: its database (Redis) is "
    "unreachable or not ready right now. Please try again in a minute."
)


def register_history(app: AsyncApp, deps: Deps) -> None:
    async def on_history(ack: AsyncAck, command: dict[str, Any]) -> None:
        await answer_history(ack, command, deps)

    app.command("/history")(on_history)


async def answer_history(ack: AsyncAck, command: dict[str, Any], deps: Deps) -> None:
    environments = list(deps.config.environments)
    try:
        parsed = commands.parse("history", str(command.get("text", "")), environments)
    except ShipmateError as err:
        await ack(f":warning: {err}")
        return
    if parsed.action is commands.Action.HELP or parsed.env is None:
        await ack(commands.usage("history", environments))
        return
    try:
        async with asyncio.timeout(READ_SECONDS):
            with redis_errors_counted("history"):
                # one more than shown: the batch still collecting may be the newest document
                recent = await deps.store.recent(parsed.env, MAX_RELEASES + 1)
    except RedisError as err:
        log_redis_failure(err, f"/history {parsed.env}")
        await ack(UNAVAILABLE)
        return
    except TimeoutError:
        log.warning("Redis too slow for /history %s (over %.1f s)", parsed.env, READ_SECONDS)
        await ack(UNAVAILABLE)
        return
    rendered = render_history(recent.env, recent.releases, options_for(deps.config))
    await ack(text=rendered.text, blocks=rendered.blocks, response_type="ephemeral")
