"""shipmate's real `web` and `worker` wired to the local Slack workspace emulator.

Used by `shipmate demo` and by the end-to-end tests: the same code paths as production,
with Slack replaced by ``slackemu`` (which speaks Slack's wire format) and Redis by
whatever server the caller provides.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from redis.asyncio import Redis

from bot.adapters.store import Store
from bot.config.loader import Config
from bot.domain.jobs import collect_job
from bot.local.slackemu import SlackEmulator
from bot.runtime.app import WebServer, build_worker, make_store, slack_client, start_web
from bot.runtime.worker import Worker


@dataclass
class RunningWorker:
    worker: Worker
    stop: asyncio.Event
    task: asyncio.Task[None]


@dataclass
class LocalStack:
    config: Config
    emulator: SlackEmulator
    redis: Redis
    store: Store
    web: WebServer | None = None
    #: set to accept signed GitHub webhooks at POST /github/webhook (None: 404, keep polling)
    github_webhook_secret: str | None = None
    #: `web` connects over Socket Mode with the emulator's ``app_token`` instead of
    #: receiving HTTP at /slack/events
    socket_mode: bool = False
    workers: list[RunningWorker] = field(default_factory=list)

    @property
    def channel(self) -> str:
        return self.config.slack.channel

    async def start_web(self) -> WebServer:
        client = slack_client(self.emulator.bot_token, self.emulator.api_url)
        app_token = self.emulator.app_token if self.socket_mode else None
        if self.socket_mode and app_token is None:
            raise ValueError("Socket Mode needs SlackEmulator(app_token='xapp-…')")
        self.web = await start_web(
            self.config,
            self.store,
            client,
            signing_secret=self.emulator.signing_secret,
            host="127.0.0.1",
            port=0,
            github_webhook_secret=self.github_webhook_secret,
            app_token=app_token,
        )
        # in Socket Mode the emulator delivers over the connection the app opened
        slack_events = f"http://127.0.0.1:{self.web.port}/slack/events"
        self.emulator.request_url = None if self.socket_mode else slack_events
        return self.web

    async def stop_web(self) -> None:
        if self.web is not None:
            await self.web.stop()
            self.web = None

    def start_worker(
        self, *, name: str | None = None, reclaim_idle: float = 30.0, lock_ttl: float = 30.0
    ) -> Worker:
        client = slack_client(self.emulator.bot_token, self.emulator.api_url)
        worker = build_worker(
            self.config,
            self.store,
            client,
            name=name or f"worker-{len(self.workers) + 1}",
            reclaim_idle=reclaim_idle,
            lock_ttl=lock_ttl,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop), name=worker.name)
        self.workers.append(RunningWorker(worker, stop, task))
        return worker

    async def stop_workers(self) -> None:
        for running in self.workers:
            running.stop.set()
        for running in self.workers:
            with contextlib.suppress(asyncio.CancelledError):
                await running.task
        self.workers.clear()

    async def trigger_collect(self) -> None:
        """What a GitHub push webhook does: ask a worker to collect now."""
        await self.store.enqueue(collect_job())

    async def stop(self) -> None:
        await self.stop_workers()
        await self.stop_web()


async def start_stack(
    config: Config,
    redis: Redis,
    emulator: SlackEmulator,
    *,
    workers: int = 1,
    namespace: str = "default",
    github_webhook_secret: str | None = None,
    socket_mode: bool = False,
) -> LocalStack:
    stack = LocalStack(
        config=config,
        emulator=emulator,
        redis=redis,
        store=make_store(redis, namespace),
        github_webhook_secret=github_webhook_secret,
        socket_mode=socket_mode,
    )
    await stack.start_web()
    for _ in range(workers):
        stack.start_worker()
    return stack
