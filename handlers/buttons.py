"""The release message's buttons and the block-reason modal.

Approve / Lift my block / Cancel record their decision exactly like a reaction and ack;
what the person should read comes as an ephemeral notice from the worker, as for
reactions. Block opens a modal first (its trigger_id is only good for 3 seconds, so
`web` calls views.open itself); the reason arrives with the submission, and a refusal
is shown in the modal, which stays open.

When Redis is not ready nothing is recorded and nobody can be told through the worker,
so `web` answers the click itself, through the click's response_url: the same "try
again" a slash command gets, seen only by whoever clicked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import ClientError
from redis.exceptions import RedisError
from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.store import Conflict
from bot.domain import release as rel
from bot.domain.jobs import notice_job
from bot.domain.render import (
    APPROVE_ACTION,
    BLOCK_ACTION,
    BLOCK_REASON_INPUT,
    BLOCK_REASON_VIEW,
    CANCEL_ACTION,
    UNBLOCK_ACTION,
    block_reason_modal,
)
from bot.services import intents
from handlers.deps import BUSY, UNAVAILABLE, Deps, log_redis_failure, redis_errors_counted

log = logging.getLogger(__name__)

#: of the 3 s Slack gives a click, what telling the clicker "try again" may take
RESPOND_SECONDS = 1.0


def register(app: AsyncApp, deps: Deps) -> None:
    async def on_approve(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await _answered(
            ack, respond, "button", _decide(body, deps, rel.Verdict.APPROVE, added=True)
        )

    async def on_unblock(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await _answered(ack, respond, "button", _decide(body, deps, rel.Verdict.BLOCK, added=False))

    async def on_cancel(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await _answered(ack, respond, "cancel", _cancel(body, deps))

    async def on_block(
        ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond
    ) -> None:
        await _answered(ack, respond, "block_form", _open_block_modal(ack, body, client, deps))

    async def on_block_reason(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        await _block_with_reason(ack, body, view, deps)

    app.action(APPROVE_ACTION)(on_approve)
    app.action(UNBLOCK_ACTION)(on_unblock)
    app.action(CANCEL_ACTION)(on_cancel)
    app.action(BLOCK_ACTION)(on_block)
    app.view(BLOCK_REASON_VIEW)(on_block_reason)


async def _answered(
    ack: AsyncAck, respond: AsyncRespond, op: str, recording: Awaitable[None]
) -> None:
    """Record a click, then ack; if nothing could be recorded, say so to whoever clicked
    (Slack shows a bare failed click otherwise, with no hint that trying again is safe)."""
    try:
        with redis_errors_counted(op):
            await recording
    except RedisError as err:
        log_redis_failure(err, f"a {op} click")
        await _refuse(ack, respond, UNAVAILABLE)
        return
    except Conflict:
        await _refuse(ack, respond, BUSY)
        return
    if not _acked(ack):
        await ack()


def _acked(ack: AsyncAck) -> bool:
    return ack.response is not None


async def _refuse(ack: AsyncAck, respond: Callable[..., Awaitable[Any]], text: str) -> None:
    if not _acked(ack):
        await ack()
    try:
        async with asyncio.timeout(RESPOND_SECONDS):
            await respond(text=text, response_type="ephemeral", replace_original=False)
    except (ClientError, OSError, TimeoutError, ValueError) as err:
        # best effort: the click was not recorded either way, and clicking again is safe
        log.warning("could not tell the clicker to try again: %s", err)


def _message(body: dict[str, Any]) -> tuple[str, str, str] | None:
    """(channel, message ts, user) of a click on a message button."""
    container = body.get("container") or {}
    channel = str(container.get("channel_id") or (body.get("channel") or {}).get("id") or "")
    ts = str(container.get("message_ts") or "")
    user = str((body.get("user") or {}).get("id") or "")
    if not (channel and ts and user):
        return None
    return channel, ts, user


async def _decide(body: dict[str, Any], deps: Deps, verdict: rel.Verdict, *, added: bool) -> None:
    where = _message(body)
    if where is None:
        return
    channel, ts, user = where
    decision = intents.Decision(channel=channel, ts=ts, user=user, verdict=verdict, added=added)
    decided = await intents.record_decision(deps.store, decision, at=deps.clock())
    log.debug("button %s by %s: %s", verdict.value, user, decided.outcome.value)


async def _cancel(body: dict[str, Any], deps: Deps) -> None:
    where = _message(body)
    if where is None:
        return
    channel, ts, user = where
    await intents.cancel_release(deps.store, channel=channel, ts=ts, user=user, at=deps.clock())


async def _open_block_modal(
    ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient, deps: Deps
) -> None:
    where = _message(body)
    if where is None:
        await ack()
        return
    channel, ts, user = where
    release, refusal = await intents.may_block(deps.store, channel=channel, ts=ts, user=user)
    if refusal is not None or release is None:
        await deps.store.enqueue(notice_job(channel, user, refusal or ""))
        await ack()
        return
    await ack()
    try:
        await client.views_open(
            trigger_id=str(body.get("trigger_id", "")),
            view=block_reason_modal(release, channel, ts),
        )
    except SlackApiError as err:
        # an expired trigger or a Slack outage: say so, and how to block without the modal
        log.warning("views.open failed for %s: %s", user, err.response.get("error"))
        await deps.store.enqueue(
            notice_job(
                channel,
                user,
                "Could not open the block form (Slack said "
                f"`{err.response.get('error')}`). Nothing was blocked; click *Block* again, "
                "or react to the message with a block emoji and give your reason in its thread.",
            )
        )


async def _block_with_reason(
    ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], deps: Deps
) -> None:
    user = str((body.get("user") or {}).get("id") or "")
    parts = str(view.get("private_metadata", "")).split("|")
    values = (view.get("state") or {}).get("values") or {}
    reason = str(
        ((values.get(BLOCK_REASON_INPUT) or {}).get(BLOCK_REASON_INPUT) or {}).get("value") or ""
    )
    if len(parts) != 3 or not user:
        await ack(
            response_action="errors",
            errors={BLOCK_REASON_INPUT: "This form is broken; close it and click Block again."},
        )
        return
    channel, ts, _release_id = parts
    decision = intents.Decision(
        channel=channel,
        ts=ts,
        user=user,
        verdict=rel.Verdict.BLOCK,
        added=True,
        reason=reason,
        notify=False,
    )
    try:
        with redis_errors_counted("block_reason"):
            decided = await intents.record_decision(deps.store, decision, at=deps.clock())
    except RedisError as err:
        log_redis_failure(err, "the block form")
        await ack(response_action="errors", errors={BLOCK_REASON_INPUT: _plain(UNAVAILABLE)})
        return
    except Conflict:
        await ack(response_action="errors", errors={BLOCK_REASON_INPUT: _plain(BUSY)})
        return
    if decided.outcome is intents.ReactionOutcome.NOT_INVOLVED:
        text = "You have no commits in this release, so your block does not count."
        await ack(response_action="errors", errors={BLOCK_REASON_INPUT: text})
        return
    if decided.outcome in intents.REFUSED and decided.message:
        await ack(response_action="errors", errors={BLOCK_REASON_INPUT: _plain(decided.message)})
        return
    await ack()


def _plain(text: str) -> str:
    """Modal errors are plain text: no emoji codes or mentions."""
    return text.removeprefix(":warning: ")
