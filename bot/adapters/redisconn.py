"""Redis "not ready": one condition for every way Redis can briefly refuse to work.

A Redis replaying its AOF after a restart answers ``LOADING`` (redis-py's
BusyLoadingError, a ConnectionError), the old primary after a failover answers
``READONLY``, a replica cut off from its primary ``MASTERDOWN``; a restart resets
connections and a stalled server times out. For shipmate these all mean the same: nothing
was recorded and trying again shortly will work. So `web` answers "try again" (an event
gets a 503, which Slack delivers again) with one log line, and the worker waits. Anything
else Redis says (WRONGTYPE, a script error) is a bug and keeps its traceback.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio.retry import Retry
from redis.backoff import AbstractBackoff
from redis.exceptions import (
    ConnectionError,
    MasterDownError,
    ReadOnlyError,
    TimeoutError,
    TryAgainError,
)

__all__ = [
    "REDIS_NOT_READY",
    "RETRIED",
    "RETRY_BUDGET",
    "BoundedRetry",
    "describe",
    "redis_not_ready",
]

T = TypeVar("T")

REDIS_NOT_READY: tuple[type[Exception], ...] = (
    ConnectionError,  # refused, reset, closed; and LOADING (BusyLoadingError subclasses it)
    TimeoutError,
    ReadOnlyError,
    MasterDownError,
    TryAgainError,
)

#: what a client may send again on a fresh connection: Redis refused these before running
#: the command (LOADING, READONLY, MASTERDOWN) or the connection broke. A timeout is not
#: among them: the command may still run, and a stalled Redis would only stall us longer.
RETRIED: tuple[type[Exception], ...] = (ConnectionError, ReadOnlyError, MasterDownError)

#: how long a command keeps retrying a Redis that is not ready before it fails: long enough
#: to wait out a small AOF replay, well inside the 3 s Slack gives an answer
RETRY_BUDGET = 0.6


def redis_not_ready(error: BaseException) -> bool:
    return isinstance(error, REDIS_NOT_READY)


def describe(error: BaseException) -> str:
    """The error on one line, for a log message that needs no traceback."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class BoundedRetry(Retry):
    """redis-py's Retry, but no new attempt starts once ``budget`` seconds have passed
    since the first. A count alone cannot bound the wait: redis-py nests a connect retry
    inside the command retry, and a Redis still LOADING refuses every attempt."""

    def __init__(
        self,
        backoff: AbstractBackoff,
        *,
        budget: float,
        supported_errors: tuple[type[Exception], ...] = RETRIED,
    ) -> None:
        # the count is only a backstop; the budget is what stops retrying
        super().__init__(backoff, retries=64, supported_errors=supported_errors)
        self.budget = budget

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[T]],
        fail: Callable[[Exception], object] | Callable[[Exception, int], object],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        deadline = time.monotonic() + self.budget

        def within_budget(error: Exception) -> bool:
            if is_retryable is not None and not is_retryable(error):
                return False
            return time.monotonic() < deadline

        return await super().call_with_retry(do, fail, within_budget, with_failure_count)
