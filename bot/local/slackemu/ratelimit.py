"""Per-method sliding-window rate limits with Slack's tiers (slack-wire.md §5)."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping

TIER_1, TIER_2, TIER_3, TIER_4 = 1, 20, 50, 100

#: Slack's documented per-minute allowance per method ("special" methods approximated).
SLACK_LIMITS: dict[str, int] = {
    "auth.test": 600,
    "apps.connections.open": TIER_1,
    "chat.postMessage": 60,  # really ~1/s per channel with bursts
    "chat.update": TIER_3,
    "chat.delete": TIER_3,
    "chat.postEphemeral": TIER_4,
    "chat.getPermalink": 600,
    "reactions.add": TIER_3,
    "reactions.remove": TIER_2,
    "reactions.get": TIER_3,
    "users.info": TIER_4,
    "users.lookupByEmail": TIER_3,
    "conversations.info": TIER_3,
    "conversations.history": TIER_3,
    "conversations.replies": TIER_3,
}
DEFAULT_LIMIT = TIER_3
#: Test suites hammer chat.update far harder than one human-paced release would.
LENIENT_FACTOR = 10
WINDOW = 60.0


class RateLimiter:
    def __init__(
        self,
        overrides: Mapping[str, int] | None = None,
        *,
        strict: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        factor = 1 if strict else LENIENT_FACTOR
        self._default = DEFAULT_LIMIT * factor
        self._limits = {m: n * factor for m, n in SLACK_LIMITS.items()}
        self._limits.update(overrides or {})
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._forced_until: dict[str, float] = {}

    def limit(self, method: str) -> int:
        return self._limits.get(method, self._default)

    def set_limit(self, method: str, per_minute: int) -> None:
        self._limits[method] = per_minute
        self._hits.pop(method, None)

    def force(self, method: str, seconds: float) -> None:
        self._forced_until[method] = self._clock() + seconds

    def check(self, method: str) -> int | None:
        """Record a call; None if allowed, else the integer Retry-After in seconds."""
        now = self._clock()
        forced = self._forced_until.get(method)
        if forced is not None:
            if now < forced:
                return max(1, math.ceil(forced - now))
            del self._forced_until[method]
        hits = self._hits.setdefault(method, deque())
        while hits and hits[0] <= now - WINDOW:
            hits.popleft()
        if len(hits) >= self.limit(method):
            # Rejected calls don't count: Slack frees the slot when the oldest call ages out.
            return max(1, math.ceil(hits[0] + WINDOW - now))
        hits.append(now)
        return None
