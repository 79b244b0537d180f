"""The `web` process: bolt on aiohttp at POST /slack/events, plus /healthz and /metrics."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from redis.exceptions import RedisError
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.keys import JOBS_GROUP
from bot.store import Store
from handlers.github import GITHUB_PATH
from handlers.slack import Deps, register

log = logging.getLogger(__name__)

SLACK_PATH = "/slack/events"


def create_bolt_app(*, client: AsyncWebClient, signing_secret: str, deps: Deps) -> AsyncApp:
    # process_before_response: ack only after the intent is in Redis (bolt's default acks
    # first and would lose an event whose write then failed)
    app = AsyncApp(client=client, signing_secret=signing_secret, process_before_response=True)
    register(app, deps)
    return app


def create_web_app(
    bolt: AsyncApp, store: Store, *, github: Handler | None = None
) -> web.Application:
    async def slack_events(request: web.Request) -> web.Response:
        bolt_request = await to_bolt_request(request)
        return await to_aiohttp_response(await bolt.async_dispatch(bolt_request))

    async def healthz(_: web.Request) -> web.Response:
        try:
            await store.redis.ping()
        except RedisError as err:
            return web.json_response({"ok": False, "redis": str(err)}, status=503)
        return web.json_response({"ok": True, "redis": "ok"})

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=await render_metrics(store), content_type="text/plain")

    app = web.Application()
    app.router.add_post(SLACK_PATH, slack_events)
    if github is not None:
        app.router.add_post(GITHUB_PATH, github)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


async def render_metrics(store: Store) -> str:
    lines = ["# TYPE shipmate_up gauge", "shipmate_up 1"]
    try:
        depth = await store.redis.xlen(store.keys.jobs)
        pending: Any = await store.redis.xpending(store.keys.jobs, JOBS_GROUP)
        lines += [
            "# TYPE shipmate_jobs_stream_length gauge",
            f"shipmate_jobs_stream_length {depth}",
            "# TYPE shipmate_jobs_pending gauge",
            f"shipmate_jobs_pending {pending['pending'] if pending else 0}",
            "# TYPE shipmate_redis_up gauge",
            "shipmate_redis_up 1",
        ]
    except RedisError:
        lines += ["# TYPE shipmate_redis_up gauge", "shipmate_redis_up 0"]
    return "\n".join(lines) + "\n"
