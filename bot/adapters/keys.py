"""Every Redis key shipmate uses, in one place.

All keys share one hash tag, so on Redis Cluster a whole deployment's state lives in
one slot and every multi-key transaction stays legal. A release bot's state is small;
the cluster still buys failover.
"""

from __future__ import annotations

from dataclasses import dataclass

#: how long a Slack event_id / GitHub delivery id is remembered for de-duplication
DEDUPE_TTL_SECONDS = 24 * 3600
#: how long an e-mail -> Slack user lookup is trusted
PEOPLE_TTL_SECONDS = 3600
#: jobs stream length cap (approximate trimming)
JOBS_MAXLEN = 100_000
JOBS_GROUP = "workers"
#: a collect trigger that waits is remembered this long at most: were its job ever lost, new
#: triggers queue a collect again after that (the poll timer collects meanwhile)
COLLECT_PENDING_TTL_SECONDS = 600


@dataclass(frozen=True, slots=True)
class Keys:
    namespace: str = "default"

    @property
    def prefix(self) -> str:
        return f"shipmate:{{{self.namespace}}}:"

    def env(self, name: str) -> str:
        return f"{self.prefix}env:{name}"

    def release(self, release_id: str) -> str:
        return f"{self.prefix}release:{release_id}"

    def message(self, channel: str, ts: str) -> str:
        return f"{self.prefix}msg:{channel}:{ts}"

    def message_suffix(self, channel: str, ts: str) -> str:
        return f"{channel}:{ts}"

    def sequence(self, env: str) -> str:
        return f"{self.prefix}seq:{env}"

    @property
    def jobs(self) -> str:
        return f"{self.prefix}jobs"

    @property
    def collects(self) -> str:
        """Collect jobs, apart from ``jobs`` so a backlog of triggers never delays a deploy."""
        return f"{self.prefix}jobs:collect"

    @property
    def collect_pending(self) -> str:
        """Set while a collect job waits in ``collects``: further triggers add nothing."""
        return f"{self.prefix}collect:pending"

    def alive(self, consumer: str) -> str:
        """Exists while the worker ``consumer`` runs (short-lived, refreshed by it)."""
        return f"{self.prefix}alive:{consumer}"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}jobs:dead"

    @property
    def audit(self) -> str:
        """Every decision, append-only (a Redis stream written with the decision itself)."""
        return f"{self.prefix}audit"

    @property
    def state_counts(self) -> str:
        return f"{self.prefix}stats:states"

    def dedupe(self, source: str, delivery_id: str) -> str:
        return f"{self.prefix}seen:{source}:{delivery_id}"

    def rendered(self, release_id: str) -> str:
        return f"{self.prefix}rendered:{release_id}"

    def render_lock(self, release_id: str) -> str:
        return f"{self.prefix}renderlock:{release_id}"

    def person(self, email: str) -> str:
        return f"{self.prefix}person:{email.lower()}"

    def slack_backoff(self, method: str) -> str:
        """Slack's Retry-After for ``method``, shared by every worker: Slack limits the app
        per method, not per process. Expires when the wait is over."""
        return f"{self.prefix}slack:backoff:{method}"

    def deploy_lock(self, env: str) -> str:
        return f"{self.prefix}lock:{env}"

    def fence(self, env: str) -> str:
        return f"{self.prefix}fence:{env}"

    @property
    def collector_lease(self) -> str:
        return f"{self.prefix}collector"

    def branch_head(self) -> str:
        return f"{self.prefix}branch_head"
