"""What every listener needs, and the answers they share when Redis cannot take a write."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from bot.adapters.metrics import RECORDER
from bot.adapters.redisconn import describe, redis_not_ready
from bot.adapters.store import Store
from bot.config.loader import Config
from bot.services import intents

log = logging.getLogger(__name__)

UNAVAILABLE = (
    ":warning: shipmate could not record that: its database (Redis) is unreachable or not "
    "ready right now. Nothing was changed; please try again in a minute."
)
BUSY = (
    ":warning: Too many changes to that environment at once; nothing was changed. Please try again."
)


@dataclass(frozen=True, slots=True)
class Deps:
    store: Store
    config: Config
    clock: Callable[[], float] = field(default=time.time)
    #: checks that the batch head's artifact exists before a /release (docker, swarm)
    check_artifact: intents.ArtifactCheck | None = None


@contextmanager
def redis_errors_counted(op: str) -> Iterator[None]:
    """Count a failed Redis command for /metrics, and let it go on to whoever answers."""
    try:
        yield
    except RedisError:
        RECORDER.redis_error("web", op)
        raise


def log_redis_failure(error: RedisError, what: str) -> None:
    """One warning line when Redis is not ready (a restart, a failover: expected, and the
    person or Slack tries again); any other Redis error is a bug and keeps its traceback."""
    if redis_not_ready(error):
        log.warning(
            "Redis not ready while handling %s (%s); nothing recorded", what, describe(error)
        )
    else:
        log.error("Redis refused %s; nothing recorded", what, exc_info=error)
