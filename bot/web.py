"""The `web` process: bolt on aiohttp at POST /slack/events, plus /healthz and /metrics.

In Socket Mode bolt receives over a WebSocket (bot/socketmode.py) and this HTTP app still
serves /healthz, /metrics and /github/webhook.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_internals import build_async_context
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient

from bot.exposition import scrape
from bot.metrics import FLUSH_EVERY, RECORDER, Flusher, Recorder
from bot.store import Store
from handlers.github import GITHUB_PATH
from handlers.slack import Deps, register

log = logging.getLogger(__name__)

SLACK_PATH = "/slack/events"
#: Slack's replay window: a request signed more than this many seconds away from now is refused
MAX_SKEW_SECONDS = 300


def verify_slack_signature(
    body: bytes, timestamp: str | None, signature: str | None, secret: str, *, now: float
) -> bool:
    """Slack's v0 request signature over the raw ``body`` bytes, strictly.

    The timestamp must be plain decimal digits (``int()`` alone accepts " 1", "+1" and
    "1_0", and raises on "1.5") within :data:`MAX_SKEW_SECONDS` of ``now`` in either
    direction; the signature is compared in constant time as bytes, so a header with odd
    characters is a mismatch, never an exception. No secret means nothing verifies.
    """
    timestamp, signature = timestamp or "", signature or ""
    if not secret or not signature or len(timestamp) > 15:
        return False
    if not (timestamp.isascii() and timestamp.isdigit()):
        return False
    if abs(now - int(timestamp)) > MAX_SKEW_SECONDS:
        return False
    base = b"v0:" + timestamp.encode() + b":" + body
    expected = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "surrogateescape"))


class StrictRequestVerification(AsyncMiddleware):
    """bolt's request verification, minus its crashes: a timestamp that is not an integer or
    a signature with non-ASCII characters made bolt's check raise (a 500, which Slack
    retries) instead of answering 401. Runs where bolt's own check would (before auth.test),
    and like it skips Socket Mode, whose requests are not signed."""

    def __init__(self, signing_secret: str, clock: Callable[[], float] = time.time) -> None:
        self._secret = signing_secret
        self._clock = clock

    async def async_process(
        self,
        *,
        req: AsyncBoltRequest,
        resp: BoltResponse,
        next: Callable[[], Awaitable[BoltResponse]],  # bolt passes it by this name
    ) -> BoltResponse | None:
        if req.mode == "socket_mode":
            return await next()
        timestamp = req.headers.get("x-slack-request-timestamp", [""])[0]
        signature = req.headers.get("x-slack-signature", [""])[0]
        body = req.raw_body.encode("utf-8", "surrogateescape")
        if verify_slack_signature(body, timestamp, signature, self._secret, now=self._clock()):
            return await next()
        return BoltResponse(status=401, body={"error": "invalid request"})


def slack_request(raw: bytes, query: str, headers: Mapping[str, str]) -> AsyncBoltRequest:
    """The bolt request for an HTTP delivery, read from the raw bytes.

    A body that is not UTF-8 is never from Slack (it percent-encodes); it is decoded with
    replacement characters, so its signature cannot match and bolt answers 401 instead of
    aiohttp failing with a 500. bolt reads any form body containing "payload" (in the text,
    a channel name, …) as an interaction and finds nothing in it, so the command would
    never reach its listener; such a slash-command body is parsed as the form it is.
    """
    text = raw.decode("utf-8", "replace")
    request = AsyncBoltRequest(body=text, query=query, headers=dict(headers))
    if request.body or "payload" not in text or request.content_type == "application/json":
        return request
    form = dict(parse_qsl(text, keep_blank_values=True))
    if "command" in form and "payload" not in form:
        request.body = form
        request.context = build_async_context(AsyncBoltContext({}), form)
    return request


def create_bolt_app(*, client: AsyncWebClient, signing_secret: str, deps: Deps) -> AsyncApp:
    # process_before_response: ack only after the intent is in Redis (bolt's default acks
    # first and would lose an event whose write then failed)
    # bolt's own signature check raises on a malformed timestamp or signature (a 500 Slack
    # retries); the strict one takes its place in the chain and answers 401 instead
    app = AsyncApp(
        client=client,
        signing_secret=signing_secret,
        process_before_response=True,
        request_verification_enabled=False,
        before_authorize=StrictRequestVerification(signing_secret),
    )
    register(app, deps)
    return app


def create_web_app(
    bolt: AsyncApp,
    store: Store,
    *,
    github: Handler | None = None,
    serve_slack_events: bool = True,
    environments: Sequence[str] = (),
    metrics: Recorder | None = None,
    flush_every: float = FLUSH_EVERY,
) -> web.Application:
    """``serve_slack_events=False`` leaves POST /slack/events out (Socket Mode without a signing
    secret, where bolt could not verify a request). /metrics shows the current releases of
    ``environments`` and of every environment a release ever changed state in."""
    recorder = metrics or RECORDER

    async def slack_events(request: web.Request) -> web.Response:
        bolt_request = slack_request(await request.read(), request.query_string, request.headers)
        return await to_aiohttp_response(await bolt.async_dispatch(bolt_request))

    async def healthz(_: web.Request) -> web.Response:
        try:
            await store.redis.ping()
        except RedisError as err:
            recorder.redis_error("web", "healthz")
            return web.json_response({"ok": False, "redis": str(err)}, status=503)
        return web.json_response({"ok": True, "redis": "ok"})

    async def exposition(_: web.Request) -> web.Response:
        body = await scrape(
            store.redis, store.keys, environments=environments, recorder=recorder, process="web"
        )
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def flushing(_: web.Application) -> AsyncIterator[None]:
        # what this process counted (its Redis errors, for now) reaches the shared figures
        stop = asyncio.Event()
        flusher = Flusher(
            store.redis, store.keys, process="web", recorder=recorder, every=flush_every
        )
        task = asyncio.create_task(flusher.run(stop), name="metrics-flush")
        yield
        stop.set()
        await task

    app = web.Application()
    app.cleanup_ctx.append(flushing)
    if serve_slack_events:
        app.router.add_post(SLACK_PATH, slack_events)
    if github is not None:
        app.router.add_post(GITHUB_PATH, github)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", exposition)
    return app
