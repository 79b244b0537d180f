"""Collect: read the branch from shipmate's own git mirror and keep each batch current.

Webhooks and the poll timer only *trigger* a collect; the commits always come from the
repository itself, so releases keep working when GitHub is down or silent.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from bot.adapters.gitrepo import GitMirror
from bot.adapters.store import Snapshot, Store, Write
from bot.config.loader import Config
from bot.domain import environment
from bot.domain import release as rel
from bot.domain.jobs import channel_notice_job
from bot.domain.models import Commit, Person
from bot.services.people import PeopleDirectory

log = logging.getLogger(__name__)

#: commits read for one batch; a brand-new environment starts from the newest ones
MAX_BATCH_COMMITS = 200
#: (base, head) pairs whose commit lists a collector remembers
LISTED_CACHE = 64


class Collector:
    def __init__(
        self,
        store: Store,
        mirror: GitMirror,
        config: Config,
        people: PeopleDirectory,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.mirror = mirror
        self.config = config
        self.people = people
        self.clock = clock
        #: (base, head) -> the commits between them; immutable for given shas, so every
        #: environment on the same base, and every poll while nothing merged, reuses it
        self._listed: OrderedDict[tuple[str | None, str], tuple[Commit, ...]] = OrderedDict()

    async def collect(self) -> str:
        """Fetch the branch and refresh every environment's batch; returns the head sha."""
        head = await self.mirror.fetch()
        await self._report_force_push(head)
        for env in self.config.environments:
            await self.collect_env(env, head)
        return head

    async def _report_force_push(self, head: str) -> None:
        key = self.store.keys.branch_head()
        raw = await self.store.redis.getset(key, head)
        previous = raw.decode() if isinstance(raw, bytes) else raw
        if not previous or previous == head or await self.mirror.is_ancestor(previous, head):
            return
        branch = self.config.repo.branch
        text = (
            f":warning: `{branch}` was force-pushed: `{previous[:7]}` is no longer on it "
            f"(head is now `{head[:7]}`). Batches were recomputed from the new history."
        )
        await self.store.enqueue(channel_notice_job(self.config.slack.channel, text))

    async def collect_env(self, env: str, head: str) -> None:
        for _ in range(10):
            snap = await self.store.snapshot(env)
            assert snap is not None
            base = environment.batch_base(snap.env, snap.active)
            commits = await self._commits(base, head)
            people = await self.people.resolve(a for c in commits for a in c.involved())
            new_id = None
            if snap.batch is None and commits:
                new_id = await self.store.next_release_id(env)
            done = await self.store.update(
                env,
                functools.partial(
                    self._decide, base=base, commits=commits, people=people, new_id=new_id
                ),
            )
            if done:
                return
        log.warning("collect for %s kept racing with releases; will retry on the next trigger", env)

    def _decide(
        self,
        snap: Snapshot,
        *,
        base: str | None,
        commits: tuple[Commit, ...],
        people: tuple[Person, ...],
        new_id: str | None,
    ) -> tuple[Write | None, bool]:
        if environment.batch_base(snap.env, snap.active) != base:
            return None, False  # a release froze or finished meanwhile: count again
        at = self.clock()
        batch = snap.batch
        env_state = None
        if batch is None:
            if not commits:
                return None, True
            if new_id is None:
                return None, False
            change = environment.new_batch(snap.env, new_id, at=at)
            batch, env_state = change.releases[0], change.env
        if (batch.commits, batch.people, batch.base_sha) == (
            commits,
            people,
            base,
        ) and env_state is None:
            return None, True
        updated = rel.apply(
            batch, rel.Collect(commits=commits, people=people, base_sha=base), at=at
        )
        return Write(env=env_state, releases=[updated]), True

    async def _commits(self, base: str | None, head: str) -> tuple[Commit, ...]:
        if base == head:
            return ()
        key = (base, head)
        if key in self._listed:
            self._listed.move_to_end(key)
            return self._listed[key]
        if base is not None and not await self.mirror.has_commit(base):
            # not remembered: the answer depends on what the mirror holds, not on the shas
            log.warning("sha %s is not in the mirror; listing recent commits instead", base)
            return tuple(await self.mirror.commits_between(None, head, limit=MAX_BATCH_COMMITS))
        commits = tuple(await self.mirror.commits_between(base, head, limit=MAX_BATCH_COMMITS))
        self._listed[key] = commits
        if len(self._listed) > LISTED_CACHE:
            self._listed.popitem(last=False)
        return commits
