"""HTTP transport of the Web API: ``/api/<method>`` with Slack's auth, limits and shapes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from bot.local.slackemu.methods import METHODS, ApiError, MethodContext
from bot.local.slackemu.models import ApiCall, JSONDict
from bot.local.slackemu.ratelimit import RateLimiter

OAUTH_SCOPES = ",".join(
    [
        "chat:write",
        "chat:write.public",
        "commands",
        "reactions:read",
        "reactions:write",
        "users:read",
        "users:read.email",
        "channels:read",
    ]
)


class BadRequest(Exception):
    pass


async def parse_args(request: web.Request) -> tuple[dict[str, Any], str | None]:
    """Merge query string, form and JSON args; also return a token passed as a parameter.

    A ``token`` inside a JSON body is ignored, as on Slack: JSON requests must
    authenticate with the Authorization header.
    """
    args: dict[str, Any] = dict(request.query)
    param_token = args.pop("token", None)
    ctype = request.content_type
    if ctype.startswith("multipart/"):
        form = await request.post()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        param_token = fields.pop("token", param_token)
        args.update(fields)
        return args, param_token
    raw = await request.read()
    if not raw:
        return args, param_token
    if "json" in ctype:
        try:
            body = json.loads(raw)
        except ValueError:
            raise BadRequest("invalid_json") from None
        if not isinstance(body, dict):
            raise BadRequest("invalid_json")
        body.pop("token", None)
        args.update(body)
    else:
        form_fields = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        param_token = form_fields.pop("token", param_token)
        args.update(form_fields)
    return args, param_token


def bearer(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return None


#: A method called with the app-level token (``xapp-…``), e.g. apps.connections.open.
AppMethod = Callable[[dict[str, Any]], JSONDict]


class WebApi:
    def __init__(
        self,
        ctx: MethodContext,
        limiter: RateLimiter,
        token: str,
        calls: list[ApiCall],
        *,
        app_token: Callable[[], str | None] = lambda: None,
        app_methods: Mapping[str, AppMethod] | None = None,
    ) -> None:
        self.ctx = ctx
        self.limiter = limiter
        self.token = token
        self.calls = calls
        self.app_token = app_token
        self.app_methods = dict(app_methods or {})

    async def handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        headers: dict[str, str] = {}
        status = 200
        try:
            args, param_token = await parse_args(request)
        except BadRequest as exc:
            args, param_token = {}, None
            body: JSONDict = {"ok": False, "error": str(exc)}
        else:
            if method in self.app_methods:
                body, status, headers = self._dispatch_app(method, args, bearer(request))
            else:
                body, status, headers = self._dispatch(method, args, bearer(request) or param_token)
        self.calls.append(
            ApiCall(
                method=method,
                args=args,
                status=status,
                at=time.time(),
                http_method=request.method,
                ok=bool(body.get("ok")),
                error=body.get("error"),
                response=body,
                retry_after=int(headers["Retry-After"]) if "Retry-After" in headers else None,
            )
        )
        return web.json_response(body, status=status, headers=headers)

    def _dispatch(
        self, method: str, args: dict[str, Any], token: str | None
    ) -> tuple[JSONDict, int, dict[str, str]]:
        impl = METHODS.get(method)
        if impl is None:
            return {"ok": False, "error": "unknown_method"}, 200, {}
        if token is None:
            return {"ok": False, "error": "not_authed"}, 200, {}
        if token != self.token:
            return {"ok": False, "error": "invalid_auth"}, 200, {}
        retry_after = self.limiter.check(method)
        if retry_after is not None:
            return {"ok": False, "error": "ratelimited"}, 429, {"Retry-After": str(retry_after)}
        try:
            body = impl(self.ctx, args)
        except ApiError as exc:
            body = {"ok": False, "error": exc.error, **exc.extra}
        headers = {"x-oauth-scopes": OAUTH_SCOPES} if method == "auth.test" else {}
        return body, 200, headers

    def _dispatch_app(
        self, method: str, args: dict[str, Any], token: str | None
    ) -> tuple[JSONDict, int, dict[str, str]]:
        """App-level token methods (§6): the ``xapp-`` token only counts in the header;
        one passed as a parameter is refused as if there were none."""
        if token is None:
            return {"ok": False, "error": "not_authed"}, 200, {}
        if token != self.app_token():
            user_or_bot = token.startswith(("xoxb-", "xoxp-"))
            error = "not_allowed_token_type" if user_or_bot else "invalid_auth"
            return {"ok": False, "error": error}, 200, {}
        retry_after = self.limiter.check(method)
        if retry_after is not None:
            return {"ok": False, "error": "ratelimited"}, 429, {"Retry-After": str(retry_after)}
        return self.app_methods[method](args), 200, {}
