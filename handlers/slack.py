"""bolt listeners: parse, record the intent durably, then ack with what happened.

The app runs with ``process_before_response=True``: a listener acks only after its
write reached Redis. If Redis is not ready (down, restarting, LOADING, READONLY: see
bot.adapters.redisconn) an event listener raises, the app's error handler answers 503 with one
log line and Slack delivers the event again; a slash command gets a clear "try again".
"""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import RedisError
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_bolt.response import BoltResponse

from bot.adapters.logs import bind
from bot.adapters.store import Conflict
from bot.domain import commands
from bot.domain.errors import ShipmateError
from bot.domain.models import Release, ReleaseState
from bot.domain.render import escape
from bot.services import intents
from handlers import buttons
from handlers.deps import BUSY, UNAVAILABLE, Deps, log_redis_failure, redis_errors_counted
from handlers.history import register_history

__all__ = ["BUSY", "UNAVAILABLE", "Deps", "register"]

log = logging.getLogger(__name__)


def register(app: AsyncApp, deps: Deps) -> None:
    async def on_release(ack: AsyncAck, command: dict[str, Any]) -> None:
        await _slash(ack, command, deps, "release")

    async def on_rollback(ack: AsyncAck, command: dict[str, Any]) -> None:
        await _slash(ack, command, deps, "rollback")

    async def on_reaction_added(ack: AsyncAck, event: dict[str, Any], body: dict[str, Any]) -> None:
        await _reaction(event, body, deps, added=True)
        await ack()

    async def on_reaction_removed(
        ack: AsyncAck, event: dict[str, Any], body: dict[str, Any]
    ) -> None:
        await _reaction(event, body, deps, added=False)
        await ack()

    async def on_lock(ack: AsyncAck, command: dict[str, Any]) -> None:
        await _slash(ack, command, deps, "lock")

    async def on_unlock(ack: AsyncAck, command: dict[str, Any]) -> None:
        await _slash(ack, command, deps, "unlock")

    app.command("/release")(on_release)
    app.command("/rollback")(on_rollback)
    app.command("/lock")(on_lock)
    app.command("/unlock")(on_unlock)
    app.event("reaction_added")(on_reaction_added)
    app.event("reaction_removed")(on_reaction_removed)
    buttons.register(app, deps)
    register_history(app, deps)
    app.error(on_listener_error)


async def on_listener_error(error: Exception, body: dict[str, Any]) -> BoltResponse | None:
    """What bolt answers when a listener (or middleware) raised.

    A Redis error means nothing was recorded: 503, so Slack delivers an event again (in
    Socket Mode any non-200 leaves the envelope unacked, to the same effect), with one log
    line rather than a traceback per delivery while Redis restarts. Anything else keeps
    bolt's 500 and its traceback: that is a bug to see.
    """
    if isinstance(error, RedisError):
        log_redis_failure(error, _request_kind(body))
        return BoltResponse(status=503, body="")
    log.error("unexpected error while handling %s", _request_kind(body), exc_info=error)
    return None


def _request_kind(body: dict[str, Any]) -> str:
    event = body.get("event")
    kind = event.get("type") if isinstance(event, dict) else None
    return str(body.get("command") or kind or body.get("type") or "a request")


async def _slash(ack: AsyncAck, command: dict[str, Any], deps: Deps, verb: str) -> None:
    environments = list(deps.config.environments)
    user = str(command.get("user_id", ""))
    try:
        parsed = commands.parse(verb, str(command.get("text", "")), environments)
        if parsed.action is commands.Action.HELP:
            await ack(commands.usage(verb, environments))
            return
        assert parsed.env is not None
        with bind(env=parsed.env, command=verb), redis_errors_counted(verb):
            text = await _perform(parsed, deps, user)
        await ack(text=text, response_type="in_channel")
    except ShipmateError as err:  # refusals from the rules, or a missing artifact
        await ack(f":warning: {err}")
    except RedisError as err:
        log_redis_failure(err, f"/{verb}")
        await ack(UNAVAILABLE)
    except Conflict:
        await ack(BUSY)


async def _perform(parsed: commands.Command, deps: Deps, user: str) -> str:
    """Do what the command asks; the text everyone in the channel sees."""
    env, at = parsed.env or "", deps.clock()
    match parsed.action:
        case commands.Action.RELEASE:
            release = await intents.request_release(
                deps.store,
                deps.config,
                env=env,
                user=user,
                at=at,
                check_artifact=deps.check_artifact,
            )
            return _released_text(release, user)
        case commands.Action.ROLLBACK:
            release = await intents.request_rollback(
                deps.store, deps.config, env=env, user=user, at=at
            )
            return _rollback_text(release, user)
        case commands.Action.LOCK:
            await intents.lock_env(
                deps.store, deps.config, env=env, user=user, reason=parsed.reason, at=at
            )
            why = f": {escape(parsed.reason)}" if parsed.reason else ""
            return f":lock: <@{user}> locked *{env}*{why}. Releases wait until `/unlock {env}`."
        case _:
            await intents.unlock_env(deps.store, deps.config, env=env, user=user)
            return f":unlock: <@{user}> unlocked *{env}*."


def _released_text(release: Release, user: str) -> str:
    n = len(release.commits)
    what = f"{n} commit{'s' if n != 1 else ''}"
    if release.state is ReleaseState.APPROVED:
        return f"<@{user}> released {what} to *{release.env}* (release {release.id}); no approvals needed, deploying now."
    return f"<@{user}> asked to release {what} to *{release.env}* (release {release.id}); waiting for its authors to approve."


def _rollback_text(release: Release, user: str) -> str:
    target = (release.head_sha or "")[:7]
    return f"<@{user}> is rolling *{release.env}* back to `{target}` (release {release.rollback_target})."


async def _reaction(
    event: dict[str, Any], body: dict[str, Any], deps: Deps, *, added: bool
) -> None:
    item = event.get("item") or {}
    if item.get("type") != "message":
        return
    reaction = intents.Reaction(
        channel=str(item.get("channel", "")),
        ts=str(item.get("ts", "")),
        user=str(event.get("user", "")),
        name=str(event.get("reaction", "")),
        added=added,
        event_id=str(body.get("event_id", "")),
    )
    # Redis errors propagate on purpose: on_listener_error answers 503, Slack retries the event.
    with redis_errors_counted("reaction"):
        outcome = await intents.record_reaction(deps.store, deps.config, reaction, at=deps.clock())
    log.debug("reaction %s: %s", reaction.name, outcome.value)
