"""Keep each release's Slack message equal to its state in Redis.

The message is a view. A render reads the release, renders it whole and edits the
message only if the result differs from what was last shown; bursts of changes
collapse into one edit. One worker renders a given release at a time; the others
mark it dirty, and the renderer looks again before it lets go, so no change is missed.
The render lock is a short lease its holder keeps renewing (also while it waits out a
429's Retry-After), so a holder that died leaves the message alone for seconds, not for
as long as the longest wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
from dataclasses import replace

from redis.exceptions import RedisError

from bot.adapters.slackapi import RateLimited, SlackGateway
from bot.adapters.store import Snapshot, Store, Write
from bot.config.loader import Config
from bot.domain.models import Release, ReleaseState
from bot.domain.render import Rendered, RenderOptions, render_release

log = logging.getLogger(__name__)

#: the render lock's lease; its holder renews it every third of that
LOCK_MS = 5_000
#: how long a "render again" mark lives: longer than any one render, Retry-After included
DIRTY_MS = 120_000
_RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_RENEW_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


def options_for(config: Config) -> RenderOptions:
    return RenderOptions(
        pr_url=config.repo.pr_url,
        approve_reaction=config.slack.approve_reactions[0],
        block_reaction=config.slack.block_reactions[0],
    )


def channel_for(config: Config, env: str) -> str:
    env_config = config.environments.get(env)
    return (
        env_config.channel if env_config and env_config.channel else None
    ) or config.slack.channel


def fingerprint(rendered: Rendered) -> str:
    raw = json.dumps([rendered.text, rendered.blocks], sort_keys=True).encode()
    return hashlib.sha256(raw).hexdigest()[:32]


class Renderer:
    def __init__(self, store: Store, slack: SlackGateway, config: Config) -> None:
        self.store = store
        self.slack = slack
        self.config = config
        self.options = options_for(config)
        self._release_lock = store.redis.register_script(_RELEASE_LOCK)
        self._renew_lock = store.redis.register_script(_RENEW_LOCK)

    def _edit_delay_ms(self) -> int:
        """How long the next chat.update must wait for a Retry-After, in ms."""
        return int(self.slack.delay("chat.update") * 1000)

    def _dirty_key(self, release_id: str) -> str:
        return self.store.keys.render_lock(release_id) + ":dirty"

    async def render(self, release_id: str) -> None:
        redis = self.store.redis
        await redis.set(self._dirty_key(release_id), "1", px=DIRTY_MS)
        while True:
            token = secrets.token_hex(8)
            lock = self.store.keys.render_lock(release_id)
            try:
                acquired = await redis.set(lock, token, nx=True, px=LOCK_MS)
            except BaseException:
                # stopped (or cut off) while the SET was on its way: it may have landed, and
                # a lock left behind would make every render give way to a holder that is
                # gone; releasing is a no-op unless the token is ours
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._release_lock(keys=[lock], args=[token]))
                raise
            if not acquired:
                # the holder sees the dirty mark before it lets go; if it died holding the
                # lock, nobody would: one render (not all of them) waits for the mark to be
                # taken or for the lock to expire
                if await self._holder_took_it(release_id, lock):
                    return
                continue
            renewing = asyncio.create_task(self._keep_lock(lock, token))
            try:
                while await redis.getdel(self._dirty_key(release_id)):
                    await self._render_once(release_id)
            finally:
                renewing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewing
                # shielded: a worker stopped right now still lets go of the lock
                await asyncio.shield(self._release_lock(keys=[lock], args=[token]))
            if not await redis.exists(self._dirty_key(release_id)):
                return

    async def _holder_took_it(self, release_id: str, lock: str) -> bool:
        """True once the lock holder consumed the dirty mark (or another render is already
        watching for that); False if the lock went away first: render it ourselves."""
        redis = self.store.redis
        watcher = lock + ":watch"
        window = LOCK_MS + 1000 + self._edit_delay_ms()
        if not await redis.set(watcher, "1", nx=True, px=window):
            return True
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + window / 1000
            while loop.time() < deadline:
                if not await redis.exists(self._dirty_key(release_id)):
                    return True
                if not await redis.exists(lock):
                    return False
                await asyncio.sleep(0.02)
            return False
        finally:
            await redis.delete(watcher)

    async def _keep_lock(self, lock: str, token: str) -> None:
        """Renew the render lock while this task holds it; a failed renewal is retried."""
        while True:
            await asyncio.sleep(LOCK_MS / 3000)
            try:
                if not await self._renew_lock(keys=[lock], args=[token, LOCK_MS]):
                    return  # lost (the worker was paused past the lease): nothing to keep
            except RedisError as err:
                log.warning("could not renew the render lock %s: %s", lock, err)

    async def ensure_posted(self, release_id: str, *, wait: float = 15.0) -> Release | None:
        """The release once its message exists (deploy details go in its thread).

        Another task may hold the render lock and be posting right now, so this waits
        for the message rather than posting a second one. A message that exists is not
        edited here: every change queues its own render, and a deploy must not wait for
        an edit Slack is rate-limiting.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            release = await self.store.release(release_id)
            if release is None or release.message_ts is not None:
                return release
            await self.render(release_id)
            release = await self.store.release(release_id)
            if release is None or release.message_ts is not None or loop.time() >= deadline:
                return release
            await asyncio.sleep(0.01)

    async def _render_once(self, release_id: str) -> None:
        release = await self.store.release(release_id)
        if release is not None and release.message_ts is not None and self._edit_delay_ms():
            # Slack refused an edit with a Retry-After: wait it out, then show what is
            # current by then (not what was current when the wait began)
            await asyncio.sleep(self._edit_delay_ms() / 1000)
            release = await self.store.release(release_id)
        if release is None:
            return
        if (
            release.message_ts is None
            and release.state is ReleaseState.COLLECTING
            and not release.commits
        ):
            return
        env = await self.store.env(release.env)
        rendered = render_release(release, self.options, lock=env.lock)
        shown_key = self.store.keys.rendered(release_id)
        digest = fingerprint(rendered)
        if release.message_ts is None:
            await self._post(release, rendered)
        else:
            shown = await self.store.redis.get(shown_key)
            if (
                shown is not None
                and (shown.decode() if isinstance(shown, bytes) else shown) == digest
            ):
                return
            try:
                channel = release.channel or self.config.channel_for(release.env)
                await self.slack.update(channel, release.message_ts, rendered.text, rendered.blocks)
            except RateLimited:
                # the next pass (after Retry-After) renders whatever is current by then; the
                # mark must outlive the wait
                await self.store.redis.set(
                    self._dirty_key(release_id), "1", px=DIRTY_MS + self._edit_delay_ms()
                )
                return
        await self.store.redis.set(shown_key, digest)

    async def _post(self, release: Release, rendered: Rendered) -> None:
        channel = self.config.channel_for(release.env)
        response = await self.slack.post(channel, rendered.text, blocks=rendered.blocks)
        ts = str(response["ts"])
        posted_channel = str(response.get("channel") or channel)

        def decide(snap: Snapshot) -> tuple[Write | None, None]:
            current = snap.get(release.id)
            if current is None or current.message_ts is not None:
                return None, None
            return Write(
                releases=[replace(current, channel=posted_channel, message_ts=ts)],
                messages=[(posted_channel, ts, release.id)],
            ), None

        await self.store.update(release.env, decide, extra=[release.id])
