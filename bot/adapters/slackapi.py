"""The worker's only door to the Slack Web API.

Slack answers 429 with a Retry-After; this module waits exactly that long before the
next call to the same method, so shipmate never hammers a rate-limited workspace.
Message edits are not replayed after a 429: the renderer renders the latest state
again, so an update that was refused is repaired, not repeated.

Slack limits the app per method, not per process, so with Redis the deadline is shared:
a 429 one worker earns makes every worker wait. Redis only adds to the in-memory deadline;
when it is unreachable each worker still honours the Retry-Afters it saw itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.adapters.keys import Keys
from bot.adapters.metrics import (
    NOTICES,
    RECORDER,
    SLACK_CALLS,
    SLACK_ERRORS,
    SLACK_RATE_LIMITED,
    SLACK_UNDELIVERABLE,
    Recorder,
)
from bot.domain.render import defuse

log = logging.getLogger(__name__)

#: never wait longer than this for one 429 (Slack's Retry-After is seconds, rarely minutes)
MAX_RETRY_AFTER = 120.0
#: after a failed Redis command, look at the shared deadline again only this much later: an
#: unreachable Redis must not add a failing round trip (and its reconnect tries) to every call
SHARED_PAUSE = 5.0

# Extends the shared deadline, never shortens it: workers that got 429s at about the same
# time may write in any order, and the longest Retry-After is the one Slack enforces.
# PTTL is relative, so the workers' clocks never have to agree.
_EXTEND_BACKOFF = """
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[1])
  return 1
end
return 0
"""


#: notices (ephemerals) one person may get from all workers together in NOTICE_WINDOW
#: seconds; the rest are dropped, so one member's flood of refused clicks or reactions
#: costs a Redis round trip each, not a Slack call
NOTICE_BURST = 5
NOTICE_WINDOW = 60.0

# KEYS: the person's counter; ARGV: window in ms. The window starts with the first notice.
_COUNT_NOTICE = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"""

#: errors Slack answers that no retry can fix: the person, channel or token is gone or
#: out of reach. A job that meets one is dropped (a log line and a metric), never retried.
PERMANENT_ERRORS = frozenset(
    {
        "user_not_in_channel",
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "invalid_auth",
        "account_inactive",
        "token_revoked",
        "user_not_found",
    }
)


def permanent_error(err: BaseException) -> str | None:
    """Slack's error code when ``err`` is an answer retrying cannot change, else None."""
    if not isinstance(err, SlackApiError) or err.response is None:
        return None
    code = err.response.get("error")
    return str(code) if code in PERMANENT_ERRORS else None


def _defused_blocks(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [_defused(block) for block in blocks]


def _defused(value: Any) -> Any:
    if isinstance(value, str):
        return defuse(value)
    if isinstance(value, dict):
        return {key: _defused(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_defused(item) for item in value]
    return value


class RateLimited(Exception):
    def __init__(self, method: str, retry_after: float) -> None:
        super().__init__(f"Slack rate-limited {method}; retry after {retry_after:.0f}s")
        self.method = method
        self.retry_after = retry_after


def retry_after(err: SlackApiError) -> float | None:
    """Seconds to wait when ``err`` is a 429, else None."""
    response = err.response
    if response is None or response.status_code != 429:
        return None
    raw = response.headers.get("Retry-After") or response.headers.get("retry-after") or "1"
    try:
        return min(float(raw), MAX_RETRY_AFTER)
    except ValueError:
        return 1.0


def _error_code(err: SlackApiError) -> str:
    """Slack's error code ("channel_not_found", …), a short, bounded label value."""
    response = err.response
    code = response.get("error") if response is not None else None
    return str(code)[:64] if code else f"http_{response.status_code if response is not None else 0}"


class SlackGateway:
    def __init__(
        self,
        client: AsyncWebClient,
        *,
        clock: Callable[[], float] = time.monotonic,
        metrics: Recorder | None = None,
        redis: Redis | None = None,
        keys: Keys | None = None,
    ) -> None:
        """Without ``redis`` every Retry-After stays in this process."""
        self.client = client
        self._clock = clock
        self.metrics = metrics or RECORDER
        #: per method: the monotonic time before which no call may be made
        self._not_before: dict[str, float] = {}
        self.calls = 0
        self.rate_limited = 0
        self._redis = redis
        self._keys = keys or Keys()
        self._extend: AsyncScript | None = (
            redis.register_script(_EXTEND_BACKOFF) if redis is not None else None
        )
        #: monotonic time before which the shared deadline is not looked at (Redis failed)
        self._shared_paused_until = 0.0
        self._count_notice: AsyncScript | None = (
            redis.register_script(_COUNT_NOTICE) if redis is not None else None
        )
        #: per person: (window start, notices) when Redis cannot count them
        self._local_notices: dict[str, tuple[float, int]] = {}

    def delay(self, method: str) -> float:
        """Seconds before ``method`` may be called again (0 when it may be called now)."""
        return max(0.0, self._not_before.get(method, 0.0) - self._clock())

    async def _wait_turn(self, method: str) -> None:
        delay = max(self.delay(method), await self._shared_delay(method))
        while delay > 0:
            await asyncio.sleep(delay)
            # another worker may have earned a later deadline while this one waited
            delay = await self._shared_delay(method)

    async def _shared_delay(self, method: str) -> float:
        """Seconds the shared deadline still asks of ``method`` (0 without Redis)."""
        if self._redis is None or self._clock() < self._shared_paused_until:
            return 0.0
        try:
            pttl = int(await self._redis.pttl(self._keys.slack_backoff(method)))
        except RedisError as err:
            self._shared_failed(method, err)
            return 0.0
        # -2: no deadline; -1 (no expiry) was not written here and would hold calls forever
        if pttl <= 0:
            return 0.0
        wait = min(pttl / 1000, MAX_RETRY_AFTER)
        # kept in memory too, so delay() (which the renderer asks before an edit) knows it
        deadline = self._clock() + wait
        if deadline > self._not_before.get(method, 0.0):
            self._not_before[method] = deadline
        return wait

    async def _share(self, method: str, wait: float) -> None:
        ms = math.ceil(wait * 1000)
        # tried even while checks are paused: a 429 is rare and is what the others must hear
        if self._extend is None or ms <= 0:
            return
        try:
            await self._extend(keys=[self._keys.slack_backoff(method)], args=[ms])
        except RedisError as err:
            self._shared_failed(method, err)

    def _shared_failed(self, method: str, err: RedisError) -> None:
        self.metrics.redis_error("worker", "slack_backoff")
        self._shared_paused_until = self._clock() + SHARED_PAUSE
        log.warning(
            "cannot share Slack's Retry-After through Redis (%s); this worker's own still hold",
            err,
            extra={"method": method},
        )

    async def call(
        self,
        method: str,
        fn: Callable[..., Awaitable[AsyncSlackResponse]],
        *,
        replay: bool = True,
        **kwargs: Any,
    ) -> AsyncSlackResponse:
        """Call ``fn(**kwargs)``; on 429 wait Retry-After and retry, or raise RateLimited if not ``replay``."""
        while True:
            await self._wait_turn(method)
            self.calls += 1
            self.metrics.inc(SLACK_CALLS, method=method)
            try:
                return await fn(**kwargs)
            except SlackApiError as err:
                wait = retry_after(err)
                if wait is None:
                    self.metrics.inc(SLACK_ERRORS, method=method, error=_error_code(err))
                    raise
                self.rate_limited += 1
                self.metrics.inc(SLACK_RATE_LIMITED, method=method)
                self._not_before[method] = self._clock() + wait
                await self._share(method, wait)
                log.warning("slack rate limit", extra={"method": method, "retry_after": wait})
                if not replay:
                    raise RateLimited(method, wait) from err
            except Exception as err:
                # no answer from Slack at all (connection refused, timeout): named by its type
                self.metrics.inc(SLACK_ERRORS, method=method, error=type(err).__name__)
                raise

    # Every text leaves through defuse(): whatever a path forgot to escape, the bot itself
    # never pings a whole channel.

    async def post(self, channel: str, text: str, **kwargs: Any) -> AsyncSlackResponse:
        if isinstance(kwargs.get("blocks"), list):
            kwargs["blocks"] = _defused_blocks(kwargs["blocks"])
        return await self.call(
            "chat.postMessage",
            self.client.chat_postMessage,
            channel=channel,
            text=defuse(text),
            **kwargs,
        )

    async def update(self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]]) -> None:
        await self.call(
            "chat.update",
            self.client.chat_update,
            replay=False,
            channel=channel,
            ts=ts,
            text=defuse(text),
            blocks=_defused_blocks(blocks),
        )

    async def ephemeral(self, channel: str, user: str, text: str) -> None:
        await self.call(
            "chat.postEphemeral",
            self.client.chat_postEphemeral,
            channel=channel,
            user=user,
            text=defuse(text),
        )

    async def notice(self, channel: str, user: str, text: str) -> str:
        """An ephemeral notice to ``user``: "sent", "rate_limited" (they had NOTICE_BURST in
        the window; nothing is sent) or "undeliverable" (Slack refused for good; dropped)."""
        if await self._notices_to(user) > NOTICE_BURST:
            outcome = "rate_limited"
        else:
            outcome = "sent"
            with self.dropped_if_undeliverable("notice") as dropped:
                await self.ephemeral(channel, user, text)
            if dropped:
                outcome = "undeliverable"
        self.metrics.inc(NOTICES, outcome=outcome)
        if outcome != "sent":
            log.info("notice not sent: %s", outcome, extra={"user": user[:32]})
        return outcome

    async def _notices_to(self, user: str) -> int:
        """Count one more notice to ``user``; how many they got in the current window."""
        if self._count_notice is not None:
            key = f"{self._keys.prefix}notices:{user[:64]}"
            try:
                return int(await self._count_notice(keys=[key], args=[int(NOTICE_WINDOW * 1000)]))
            except RedisError:
                self.metrics.redis_error("worker", "notice_limit")
        now = self._clock()
        start, count = self._local_notices.get(user, (now, 0))
        if now - start >= NOTICE_WINDOW:
            start, count = now, 0
        if len(self._local_notices) > 10_000:
            self._local_notices.clear()  # a bound, not an eviction policy: it is a fallback
        self._local_notices[user] = (start, count + 1)
        return count + 1

    @contextlib.contextmanager
    def dropped_if_undeliverable(self, kind: str) -> Iterator[list[str]]:
        """Swallow an error Slack says is permanent (a log line and a metric instead), so
        the job is acknowledged rather than retried and dead-lettered. The yielded list
        gets the error code when that happened."""
        dropped: list[str] = []
        try:
            yield dropped
        except SlackApiError as err:
            code = permanent_error(err)
            if code is None:
                raise
            dropped.append(code)
            self.metrics.inc(SLACK_UNDELIVERABLE, kind=kind, error=code)
            log.warning(
                "Slack refused a %s for good (%s); dropped, not retried",
                kind,
                code,
                extra={"kind": kind, "error": code},
            )

    async def lookup_by_email(self, email: str) -> str | None:
        try:
            response = await self.call(
                "users.lookupByEmail", self.client.users_lookupByEmail, email=email
            )
        except SlackApiError as err:
            if err.response is not None and err.response.get("error") == "users_not_found":
                return None
            raise
        user = response.get("user") or {}
        return str(user["id"]) if user.get("id") else None
