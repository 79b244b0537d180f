"""The `web` process: bolt on aiohttp at POST /slack/events, plus /healthz and /metrics.

In Socket Mode bolt receives over a WebSocket (bot/runtime/socketmode.py) and this HTTP app still
serves /healthz, /metrics and /github/webhook.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST
from redis.asyncio import Redis
from redis.exceptions import RedisError
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_internals import build_async_context
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot import trace
from bot.adapters.exposition import scrape
from bot.adapters.keys import Keys
from bot.adapters.metrics import FLUSH_EVERY, RECORDER, Flusher, Recorder
from bot.adapters.store import Store
from bot.config.loader import Config
from bot.domain.render import BLOCK_REASON_INPUT, BLOCK_REASON_VIEW
from handlers.deps import UNAVAILABLE
from handlers.github import GITHUB_PATH, read_limited
from handlers.history import UNAVAILABLE as HISTORY_UNAVAILABLE
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


# -- junk is cheap: size, signature, then the shape of what the handlers read -------------

#: Slack's requests are a few KB; anything over this is refused before it is read in full
MAX_BODY_BYTES = 1024 * 1024
#: Slack payloads nest about a dozen levels (a message's blocks in a block_actions payload);
#: far below where json.loads would raise RecursionError
MAX_NESTING = 64
_JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')

_STR, _NONE = (str,), type(None)
#: every field a handler or bolt's own routing reads, with the types it may have. A path
#: segment "[]" is each item of a list, "*" each value of an object; parents come first.
FIELD_TYPES: tuple[tuple[str, tuple[type, ...]], ...] = (
    ("type", _STR),
    ("token", _STR),
    ("team_id", _STR),
    ("api_app_id", _STR),
    ("enterprise_id", (str, _NONE)),
    ("context_team_id", (str, _NONE)),
    ("context_enterprise_id", (str, _NONE)),
    ("is_enterprise_install", (bool, str)),
    ("is_ext_shared_channel", (bool,)),
    ("team", (dict, str, _NONE)),
    ("team.id", _STR),
    ("team.enterprise_id", (str, _NONE)),
    ("enterprise", (dict, str, _NONE)),
    ("enterprise.id", _STR),
    ("authorizations", (list,)),
    ("authorizations[]", (dict,)),
    ("authorizations[].team_id", (str, _NONE)),
    ("authorizations[].enterprise_id", (str, _NONE)),
    ("authorizations[].is_enterprise_install", (bool,)),
    ("command", _STR),
    ("user_id", _STR),
    ("channel_id", _STR),
    ("text", _STR),
    ("trigger_id", _STR),
    ("response_url", _STR),
    ("challenge", _STR),
    ("event_id", _STR),
    ("event", (dict,)),
    ("event.type", _STR),
    ("event.user", (str, dict)),
    ("event.user_team", _STR),
    ("event.team", _STR),
    ("event.reaction", _STR),
    ("event.channel", (str, dict)),
    ("event.item", (dict,)),
    ("event.item.type", _STR),
    ("event.item.channel", _STR),
    ("event.item.ts", _STR),
    ("event.message", (dict,)),
    ("event.previous_message", (dict,)),
    ("user", (dict,)),
    ("user.id", _STR),
    ("user.team_id", _STR),
    ("channel", (dict,)),
    ("channel.id", _STR),
    ("container", (dict,)),
    ("container.channel_id", _STR),
    ("container.message_ts", _STR),
    ("message", (dict,)),
    ("actions", (list,)),
    ("actions[]", (dict,)),
    ("actions[].action_id", _STR),
    ("actions[].block_id", _STR),
    ("actions[].value", _STR),
    ("view", (dict,)),
    ("view.id", _STR),
    ("view.type", _STR),
    ("view.team_id", _STR),
    ("view.app_id", _STR),
    ("view.app_installed_team_id", (str, _NONE)),
    ("view.callback_id", _STR),
    ("view.private_metadata", _STR),
    ("view.state", (dict,)),
    ("view.state.values", (dict,)),
    ("view.state.values.*", (dict,)),
    ("view.state.values.*.*", (dict,)),
    ("view.state.values.*.*.value", (str, _NONE)),
)
#: what bolt's routing indexes without looking, by request type
REQUIRED: Mapping[str, tuple[str, ...]] = {
    "event_callback": ("event", "event.type"),
    "block_actions": ("actions",),
    "interactive_message": ("actions",),
    "view_submission": ("view", "view.type", "view.callback_id"),
}
_TYPE_NAMES = {str: "a string", dict: "an object", list: "a list", bool: "a boolean"}


class Malformed(ValueError):
    """A request that passed the signature check but is not what Slack sends."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field


def nested_too_deep(text: str, limit: int = MAX_NESTING) -> bool:
    """Whether the JSON ``text`` nests arrays/objects deeper than ``limit`` (brackets
    inside strings do not count); linear, and cheap when there are few brackets."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for token in _JSON_TOKENS.finditer(text):
        char = token.group()
        if char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("body", "is not UTF-8 (Slack percent-encodes)") from None


def json_object(text: str, field: str) -> dict[str, Any]:
    if nested_too_deep(text):
        raise Malformed(field, f"nests deeper than {MAX_NESTING} levels")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # ValueError also covers 4,300-digit integers
        raise Malformed(field, "is not valid JSON") from None
    if not isinstance(data, dict):
        raise Malformed(field, "must be a JSON object")
    return data


def parse_slack_body(text: str, content_type: str | None) -> tuple[dict[str, Any], str]:
    """The body as bolt reads it (JSON, a form, or a form's ``payload`` JSON) and the prefix
    that names its fields; raises Malformed instead of what json.loads would raise.

    A slash-command form whose text merely contains "payload" stays the form it is (bolt
    would read it as an interaction and the command would never reach its listener)."""
    if content_type == "application/json" or text.startswith("{"):
        return json_object(text, "body"), ""
    form = dict(parse_qsl(text, keep_blank_values=True))
    if "payload" in form:
        return json_object(form["payload"], "payload"), "payload."
    if "payload" in text and "command" not in form:
        return {}, ""  # what bolt makes of it: matches nothing, answered 404
    return form, ""


def _at(data: Any, path: Sequence[str], name: str) -> Iterator[tuple[str, Any]]:
    """(dotted name, value) of every value present at ``path`` below ``data``."""
    if not path:
        yield name, data
        return
    head, rest = path[0], path[1:]
    if head == "[]":
        if isinstance(data, list):
            for i, item in enumerate(data):
                yield from _at(item, rest, f"{name}[{i}]")
    elif head == "*":
        if isinstance(data, dict):
            for key, item in data.items():
                yield from _at(item, rest, f"{name}.{key}")
    elif isinstance(data, dict) and head in data:
        yield from _at(data[head], rest, f"{name}.{head}" if name else head)


def _split(path: str) -> list[str]:
    return [part for part in re.split(r"\.|(\[\])", path) if part]


def check_fields(body: Mapping[str, Any], prefix: str = "") -> None:
    """Raises Malformed naming the first field a handler reads that has the wrong type."""
    for path, types in FIELD_TYPES:
        for name, value in _at(body, _split(path), ""):
            if not isinstance(value, types):
                wanted = " or ".join(_TYPE_NAMES.get(t, "null") for t in types)
                raise Malformed(prefix + name, f"must be {wanted}")
    kind = body.get("type")
    for path in REQUIRED.get(kind, ()) if isinstance(kind, str) else ():
        if not any(value not in (None, [], "") for _, value in _at(body, _split(path), "")):
            raise Malformed(prefix + path, f"is required in a {kind} request")


class QuietLog:
    """At most one line per reason every ``every`` seconds: a flood of junk costs a line,
    not a line per request. The next line says how many were held back."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        every: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger, self._every, self._clock = logger, every, clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, reason: str, message: str, *args: object) -> None:
        now, last = self._clock(), self._last.get(reason)
        if last is not None and now - last < self._every:
            self._held[reason] = self._held.get(reason, 0) + 1
            return
        self._last[reason] = now
        held = self._held.pop(reason, 0)
        more = f" ({held} more like it since the last such line)" if held else ""
        self._logger.warning(message + more, *args)


EDGE_LOG = QuietLog(log)


# -- only our team, our app, our channels ------------------------------------------------

#: answered when the team cannot be learned (auth.test fails): the request is not checked
UNCONFIRMED = (
    ":warning: shipmate cannot confirm its Slack workspace right now (auth.test failed). "
    "Nothing was changed; please try again in a minute."
)


def request_kind(body: Mapping[str, Any]) -> str:
    """ "command", "event", "interaction" or "other" (url_verification, ssl_check, …)."""
    if "command" in body:
        return "command"
    if body.get("type") == "event_callback":
        return "event"
    if body.get("type") in ("block_actions", "view_submission", "interactive_message"):
        return "interaction"
    return "other"


def _ids(body: Mapping[str, Any], paths: Sequence[str]) -> set[str]:
    return {
        value
        for path in paths
        for _, value in _at(body, _split(path), "")
        if isinstance(value, str) and value
    }


_TEAM_PATHS = (
    "team_id",
    "team.id",
    "user.team_id",
    "authorizations[].team_id",
    "context_team_id",
    "view.team_id",
    "view.app_installed_team_id",
    "event.user_team",
    "event.team",
)
_ENTERPRISE_PATHS = (
    "enterprise_id",
    "enterprise.id",
    "team.enterprise_id",
    "authorizations[].enterprise_id",
    "context_enterprise_id",
)


def _channel(body: Mapping[str, Any], kind: str) -> str | None:
    """The channel the handlers act in, read the way they read it."""
    if kind == "command":
        return str(body.get("channel_id") or "")
    if kind == "event":
        event = body.get("event") or {}
        item = event.get("item")
        where = item.get("channel") if isinstance(item, dict) else event.get("channel")
        return where if isinstance(where, str) else None
    container, channel = body.get("container") or {}, body.get("channel")
    found = container.get("channel_id") or (
        channel.get("id") if isinstance(channel, dict) else None
    )
    if found is None and isinstance(body.get("view"), dict):
        parts = str(body["view"].get("private_metadata", "")).split("|")
        found = parts[0] if len(parts) == 3 else None
    return str(found) if found is not None else None


def _enterprise_install(body: Mapping[str, Any]) -> bool:
    flags = [body.get("is_enterprise_install")]
    flags += [a.get("is_enterprise_install") for a in body.get("authorizations") or []]
    return any(flag is True or flag == "true" for flag in flags)


class Workspace:
    """Who shipmate obeys: its team (configured, or learned from auth.test), its app and
    enterprise when configured, and the channels the config names."""

    def __init__(self, config: Config, client: AsyncWebClient) -> None:
        self.team_id = config.slack.team_id
        self.app_id = config.slack.app_id
        self.enterprise_id = config.slack.enterprise_id
        channels = [config.slack.channel] + [config.channel_for(e) for e in config.environments]
        self.channels = tuple(dict.fromkeys(channels))
        self._client = client

    async def learn(self) -> str | None:
        """The team this install belongs to (auth.test, once it answers)."""
        if self.team_id is None:
            try:
                answer = await self._client.auth_test()
            except (SlackClientError, aiohttp.ClientError, OSError, TimeoutError) as err:
                EDGE_LOG.warning("auth_test", "cannot learn shipmate's team (auth.test): %s", err)
                return None
            team = answer.get("team_id")
            self.team_id = team if isinstance(team, str) and team else None
            log.info("shipmate serves Slack team %s", self.team_id)
        return self.team_id

    def _foreign(self, body: Mapping[str, Any], kind: str, team: str) -> str | None:
        """Why the request is not ours to obey, or None."""
        if _ids(body, _TEAM_PATHS) - {team}:
            return f"team {sorted(_ids(body, _TEAM_PATHS) - {team})}"
        enterprises = _ids(body, _ENTERPRISE_PATHS)
        if self.enterprise_id is None and (enterprises or _enterprise_install(body)):
            return f"enterprise {sorted(enterprises)}"
        if self.enterprise_id is not None and enterprises - {self.enterprise_id}:
            return f"enterprise {sorted(enterprises - {self.enterprise_id})}"
        if self.app_id is not None and body.get("api_app_id") != self.app_id:
            return f"app {body.get('api_app_id')!r}"
        channel = _channel(body, kind)
        if channel is not None and channel not in self.channels:
            return f"channel {channel!r}"
        if kind == "command" and not body.get("user_id"):
            return "a command with no user_id"
        return None

    async def refusal(self, body: Mapping[str, Any]) -> BoltResponse | None:
        """The answer to a request from elsewhere; None when it is ours to obey."""
        kind = request_kind(body)
        if kind == "other":
            return None
        team = self.team_id or await self.learn()
        if team is None:
            return _unavailable(kind, UNCONFIRMED)
        why = self._foreign(body, kind, team)
        if why is None:
            return None
        EDGE_LOG.warning(f"foreign {kind}", "refused a %s from elsewhere: %s", kind, why)
        if kind == "command":
            where = ", ".join(f"<#{c}>" for c in self.channels)
            text = (
                f":no_entry: shipmate only works in {where} of its own workspace, for its "
                "members; nothing was done."
            )
            return BoltResponse(status=200, body={"response_type": "ephemeral", "text": text})
        return BoltResponse(status=200, body="")


def _unavailable(kind: str, text: str) -> BoltResponse:
    """What a request gets when it cannot be checked: a command hears "try again" (Slack
    never retries one), anything else a 503 so Slack delivers it again."""
    if kind == "command":
        return BoltResponse(status=200, body={"response_type": "ephemeral", "text": text})
    return BoltResponse(status=503, body={"error": "try again"})


def unchecked(body: Mapping[str, Any]) -> BoltResponse:
    """The answer when Redis cannot say whether a request is a replay: what its handler
    answers when Redis is down (the request is not dispatched: were Redis back a moment
    later, a replay would act)."""
    kind = request_kind(body)
    if body.get("command") == "/history":
        return _unavailable(kind, HISTORY_UNAVAILABLE)
    view = body.get("view")
    if isinstance(view, dict) and view.get("callback_id") == BLOCK_REASON_VIEW:
        # the modal stays open and says why, as the block form's own handler does
        error = {BLOCK_REASON_INPUT: UNAVAILABLE.removeprefix(":warning: ")}
        return BoltResponse(status=200, body={"response_action": "errors", "errors": error})
    return _unavailable(kind, UNAVAILABLE)


class ForeignRequests(AsyncMiddleware):
    """The workspace check inside bolt, for Socket Mode (HTTP requests met it at the edge)."""

    def __init__(self, workspace: Workspace) -> None:
        self._workspace = workspace

    async def async_process(
        self,
        *,
        req: AsyncBoltRequest,
        resp: BoltResponse,
        next: Callable[[], Awaitable[BoltResponse]],  # bolt passes it by this name
    ) -> BoltResponse | None:
        refused = await self._workspace.refusal(req.body)
        return refused if refused is not None else await next()


# -- replays refused ---------------------------------------------------------------------

#: a signature is remembered as long as its timestamp could still verify, and a little more
REPLAY_TTL_SECONDS = 2 * MAX_SKEW_SECONDS + 10
#: while a request is being answered (Slack waits 3 s); a crash mid-answer frees it after this
CLAIM_TTL_SECONDS = 30
_CLAIMED, _DONE = "claimed", "done"


class Replays:
    """Each signed request acts once. Its signature is claimed (SET NX) before it is
    dispatched and kept for the replay window only if the answer was 2xx; after a non-2xx
    the claim is dropped, so Slack's retry of that same body (re-signed within the same
    second, the same signature) is accepted."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis, self._keys = redis, keys

    def key(self, signature: str) -> str:
        return self._keys.dedupe("slack-request", signature.removeprefix("v0="))

    async def claim(self, signature: str) -> str | None:
        """None when claimed; otherwise what the signature's earlier request left."""
        key = self.key(signature)
        if await self._redis.set(key, _CLAIMED, nx=True, ex=CLAIM_TTL_SECONDS):
            return None
        return str(await self._redis.get(key) or _CLAIMED)

    async def settle(self, signature: str, status: int) -> None:
        key = self.key(signature)
        try:
            if 200 <= status < 300:
                await self._redis.set(key, _DONE, ex=REPLAY_TTL_SECONDS)
            else:
                await self._redis.delete(key)
        except RedisError as err:
            # the claim expires on its own; until then a retry is refused and retried again
            RECORDER.redis_error("web", "replay")
            EDGE_LOG.warning("replay settle", "cannot settle a request's signature: %s", err)


def _replayed(kind: str, earlier: str, retried: bool) -> web.Response:
    """A signature seen before. Slack's own retry of an event we already answered (its
    first answer reached Slack late) is told it is done; one still being answered is
    told to come back; anything else is a replay."""
    if kind == "event" and retried:
        if earlier == _DONE:
            return web.json_response({"ok": True, "duplicate": True})
        return web.json_response({"error": "still being answered"}, status=503)
    EDGE_LOG.warning("replay", "refused a replayed %s (its signature was seen before)", kind)
    return web.json_response({"error": "request already received"}, status=401)


def parsed_request(
    text: str, body: dict[str, Any], query: str, headers: Mapping[str, str]
) -> AsyncBoltRequest:
    """The bolt request for a body the edge already parsed and checked: bolt's own parse
    (of the empty string) is skipped, so nothing unchecked is parsed twice."""
    request = AsyncBoltRequest(body="", query=query, headers=dict(headers))
    request.raw_body = text
    request.body = body
    request.context = build_async_context(AsyncBoltContext({}), body)
    return request


def create_bolt_app(
    *,
    client: AsyncWebClient,
    signing_secret: str,
    deps: Deps,
    workspace: Workspace | None = None,
) -> AsyncApp:
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
    if workspace is not None:
        # Socket Mode requests never pass the HTTP edge, so the same check runs in bolt too
        app.use(ForeignRequests(workspace))
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
    signing_secret: str = "",
    workspace: Workspace | None = None,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """``serve_slack_events=False`` leaves POST /slack/events out (Socket Mode without a signing
    secret, where bolt could not verify a request). /metrics shows the current releases of
    ``environments`` and of every environment a release ever changed state in.

    POST /slack/events checks, cheapest first: the size, the signature over the raw bytes,
    the shape of the fields the handlers read, where the request comes from (``workspace``),
    and that its signature was not seen before; only then does bolt see it."""
    recorder = metrics or RECORDER
    replays = Replays(store.redis, store.keys)

    async def slack_events(request: web.Request) -> web.Response:
        raw = await read_limited(request, MAX_BODY_BYTES)
        if raw is None:
            EDGE_LOG.warning("too large", "refused a request over %d bytes", MAX_BODY_BYTES)
            return web.json_response({"error": "request body too large"}, status=413)
        signature = request.headers.get("X-Slack-Signature")
        timestamp = request.headers.get("X-Slack-Request-Timestamp")
        if signature is None or not verify_slack_signature(
            raw, timestamp, signature, signing_secret, now=clock()
        ):
            EDGE_LOG.warning("unsigned", "refused a request without a valid Slack signature")
            return web.json_response({"error": "invalid request"}, status=401)
        try:
            text = _utf8(raw)
            body, prefix = parse_slack_body(text, request.content_type)
            check_fields(body, prefix)
        except Malformed as err:
            EDGE_LOG.warning("malformed", "refused a signed but malformed request: %s", err)
            answer = {"ok": False, "error": f"malformed request: {err}", "field": err.field}
            return web.json_response(answer, status=400)
        kind = request_kind(body)
        trace.emit("web.request.received", kind=kind)
        refused = await workspace.refusal(body) if workspace is not None else None
        if refused is not None:
            return await to_aiohttp_response(refused)
        try:
            earlier = await replays.claim(signature)
        except RedisError as err:
            recorder.redis_error("web", "replay")
            EDGE_LOG.warning("replay check", "cannot check a %s for replay: %s", kind, err)
            return await to_aiohttp_response(unchecked(body))
        if earlier is not None:
            return _replayed(kind, earlier, "X-Slack-Retry-Num" in request.headers)
        status = 500
        try:
            bolt_request = parsed_request(text, body, request.query_string, request.headers)
            response = await bolt.async_dispatch(bolt_request)
            status = response.status
        finally:
            await replays.settle(signature, status)
        trace.emit("web.request.answered", kind=kind, status=status)
        return await to_aiohttp_response(response)

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
