"""Composition root: wire config, Redis, Slack, git and backends into `web` and `worker`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from redis.asyncio import Redis
from redis.backoff import ExponentialBackoff
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.gitrepo import GitMirror
from bot.adapters.keys import Keys
from bot.adapters.locks import DeployLocks
from bot.adapters.redisconn import RETRY_BUDGET, BoundedRetry
from bot.adapters.slackapi import SlackGateway
from bot.adapters.store import Store
from bot.config.loader import Config
from bot.runtime.backends import Backends, build_backends
from bot.runtime.socketmode import SocketMode, start_socket_mode
from bot.runtime.web import Workspace, create_bolt_app, create_web_app
from bot.runtime.worker import Worker, consumer_name
from bot.services.collector import Collector
from bot.services.deploys import DeployRunner
from bot.services.people import PeopleDirectory
from bot.services.renderer import Renderer
from handlers.github import github_webhook
from handlers.slack import Deps

#: how often `web` refreshes its view of each environment (it stays correct without)
WARM_EVERY = 2.0


def connect_redis(url: str) -> Redis:
    # short timeouts: a web request must answer Slack within 3 s even when Redis is gone.
    # After Redis restarts, every pooled connection is dead, and for a while the server
    # answers LOADING while it replays its AOF; after a failover the old primary answers
    # READONLY. Those are retried on a fresh connection for at most RETRY_BUDGET
    # (twice that when the connect itself fails too: redis-py nests the two retries), so
    # a restart is waited out and a longer outage still answers "try again" in time.
    # Timeouts are not retried: a hung Redis must not stretch a Slack answer past 3 s.
    return Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=1.0,
        socket_timeout=2.0,
        health_check_interval=15,
        retry=BoundedRetry(ExponentialBackoff(cap=0.2, base=0.05), budget=RETRY_BUDGET),
    )


def slack_client(token: str, api_url: str) -> AsyncWebClient:
    return AsyncWebClient(token=token, base_url=api_url)


@dataclass
class WebServer:
    runner: web.AppRunner
    port: int
    backends: Backends | None = None
    warming: asyncio.Task[None] | None = None
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    #: the Socket Mode connection, when `web` runs with an app-level token
    socket: SocketMode | None = None

    async def stop(self) -> None:
        self.stopping.set()
        if self.socket is not None:
            await self.socket.stop()
        if self.warming is not None:
            await self.warming
        await self.runner.cleanup()
        if self.backends is not None:
            await self.backends.close()


async def start_web(
    config: Config,
    store: Store,
    client: AsyncWebClient,
    *,
    signing_secret: str,
    host: str,
    port: int,
    clock: Callable[[], float] = time.time,
    github_webhook_secret: str | None = None,
    app_token: str | None = None,
) -> WebServer:
    """HTTP mode, or Socket Mode when ``app_token`` (``xapp-…``) is given; either way the
    HTTP server on ``port`` serves /healthz, /metrics and /github/webhook."""
    await store.ensure_group()
    # web only asks backends whether an image exists (a quick local call), never deploys
    backends = build_backends(config)
    check = backends.check_artifact if backends.checks_artifacts else None
    # web decides on remembered state when it can: one Redis round trip per intent
    cached = Store(store.redis, store.keys, cache=True)
    # requests from another team, app, enterprise or channel are refused at the edge (and
    # in bolt, for Socket Mode); a single-workspace install learns its team here
    workspace = Workspace(config, client)
    await workspace.learn()
    bolt = create_bolt_app(
        client=client,
        signing_secret=signing_secret,
        deps=Deps(cached, config, clock, check_artifact=check),
        workspace=workspace,
    )
    github = github_webhook(
        store,
        secret=github_webhook_secret,
        branch=config.repo.branch,
        # any environment routes the write (all keys share one hash slot)
        env=next(iter(config.environments), "default"),
        clock=clock,
    )
    # without a signing secret (Socket Mode) bolt could not verify requests to /slack/events
    web_app = create_web_app(
        bolt,
        store,
        github=github,
        serve_slack_events=bool(signing_secret),
        environments=list(config.environments),
        signing_secret=signing_secret,
        workspace=workspace,
    )
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = port
    for address in runner.addresses:
        bound = int(address[1])
        break
    server = WebServer(runner, bound, backends)
    if app_token is not None:
        try:
            server.socket = await start_socket_mode(bolt, app_token)
        except BaseException:
            await server.stop()
            raise
    server.warming = asyncio.create_task(
        cached.keep_warm(list(config.environments), every=WARM_EVERY, stop=server.stopping)
    )
    return server


def build_worker(
    config: Config,
    store: Store,
    client: AsyncWebClient,
    *,
    name: str | None = None,
    reclaim_idle: float = 30.0,
    lock_ttl: float = 30.0,
    max_deliveries: int = 5,
) -> Worker:
    """``lock_ttl``: the deploy lock's lifetime (renewed while a deploy runs);
    ``reclaim_idle``: how long a job may sit unclaimed before another worker takes it;
    ``max_deliveries``: tries before a job goes to the dead-letter stream. A dead worker's
    jobs and locks are taken over sooner, once its liveness key is gone (bot.adapters.locks)."""
    name = name or consumer_name()
    gateway = SlackGateway(client, redis=store.redis, keys=store.keys)
    mirror = GitMirror(config.repo.url, config.repo.branch, config.state_dir / "mirror.git")
    people = PeopleDirectory(config.people, store.redis, store.keys, gateway)
    renderer = Renderer(store, gateway, config)
    backends = build_backends(config)
    deploys = DeployRunner(
        store,
        DeployLocks(store.redis, store.keys, ttl=lock_ttl, holder=name),
        renderer,
        gateway,
        backends.runtimes,
    )
    return Worker(
        store=store,
        config=config,
        slack=gateway,
        collector=Collector(store, mirror, config, people),
        renderer=renderer,
        deploys=deploys,
        name=name,
        reclaim_idle=reclaim_idle,
        max_deliveries=max_deliveries,
        on_stop=backends.close,
    )


def make_store(redis: Redis, namespace: str = "default") -> Store:
    return Store(redis, Keys(namespace))
