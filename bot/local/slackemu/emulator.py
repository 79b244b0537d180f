"""``SlackEmulator``: the one object tests and the demo talk to."""

from __future__ import annotations

import asyncio
import inspect
import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TypeVar

from aiohttp import web

from bot.local.slackemu import payloads, transcript, views
from bot.local.slackemu.browser import DEFAULT_REACTIONS, BrowserView
from bot.local.slackemu.delivery import ACK_TIMEOUT, Deliverer
from bot.local.slackemu.methods import MethodContext
from bot.local.slackemu.models import (
    ApiCall,
    Channel,
    Delivery,
    JSONDict,
    Message,
    SlashResult,
    User,
    ViewResult,
)
from bot.local.slackemu.ratelimit import RateLimiter
from bot.local.slackemu.responseurls import ResponsePost, ResponseUrls
from bot.local.slackemu.signing import signed_headers
from bot.local.slackemu.socketmode import SocketModeServer
from bot.local.slackemu.views import View
from bot.local.slackemu.webapi import WebApi
from bot.local.slackemu.workspace import SLACKBOT_ID, Identity, Workspace

T = TypeVar("T")


class SlackEmulator:
    def __init__(
        self,
        signing_secret: str = "emulator-signing-secret",
        bot_token: str = "xoxb-emulator",
        team_id: str = "T0001",
        bot_user_id: str = "U0BOT",
        bot_id: str = "B0BOT",
        app_id: str = "A0APP",
        *,
        team_domain: str = "shipmate-dev",
        team_name: str = "Shipmate Dev",
        bot_name: str = "shipmate",
        request_url: str | None = None,
        rate_limits: Mapping[str, int] | None = None,
        strict_rate_limits: bool = False,
        retry_delays: Sequence[float] = (0.0, 0.0, 0.0),
        ack_timeout: float = ACK_TIMEOUT,
        app_token: str | None = None,
    ) -> None:
        """``app_token`` (``xapp-…``) enables Socket Mode: apps.connections.open and the
        ``/link/`` WebSocket. Deliveries then go over the socket while the app is connected
        (or whenever ``request_url`` is unset), else over HTTP."""
        self.signing_secret = signing_secret
        self.bot_token = bot_token
        self.app_token = app_token
        self.identity = Identity(
            team_id, team_domain, team_name, bot_user_id, bot_id, app_id, bot_name
        )
        self.workspace = Workspace(self.identity)
        self.calls: list[ApiCall] = []
        self.deliveries: list[Delivery] = []
        self.limiter = RateLimiter(rate_limits, strict=strict_rate_limits)
        self._sockets = SocketModeServer(
            app_id=app_id, app_token=app_token, ack_timeout=ack_timeout, log=self.deliveries
        )
        self._deliverer = Deliverer(
            signing_secret=signing_secret,
            retry_delays=retry_delays,
            ack_timeout=ack_timeout,
            log=self.deliveries,
            socket=self._sockets,
        )
        self._deliverer.request_url = request_url
        self._responses = ResponseUrls(self.workspace, lambda: self.base_url)
        self._webapi = WebApi(
            MethodContext(self.workspace, self._emit_in_background),
            self.limiter,
            bot_token,
            self.calls,
            app_token=lambda: self._sockets.app_token,
            app_methods={"apps.connections.open": lambda _: self._sockets.open_url(self.base_url)},
        )
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self._browser: BrowserView | None = None

    # -- lifecycle --------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> SlackEmulator:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._webapi.handle)
        app.router.add_post("/{kind:commands|actions}/{team}/{id}/{secret}", self._responses.handle)
        app.router.add_get("/link/", self._sockets.handle)
        if self._browser is not None:
            self._browser.install(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        self._runner = runner
        self._base_url = f"http://{host}:{runner.addresses[0][1]}"
        await self._deliverer.open()
        return self

    def enable_browser(self, reactions: Sequence[str] = DEFAULT_REACTIONS) -> None:
        """Serve the workspace as a web page at ``base_url`` (see ``bot.local.slackemu.browser``); call
        before ``start()``. ``reactions`` are offered in the page's reaction picker."""
        if self._runner is not None:
            raise RuntimeError("enable_browser() must be called before start()")
        self._browser = BrowserView(self, reactions)

    async def stop(self) -> None:
        """Cancels deliveries still waiting in the retry schedule, then shuts down."""
        await self._deliverer.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SlackEmulator:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("SlackEmulator is not started")
        return self._base_url

    @property
    def api_url(self) -> str:
        return self.base_url + "/api/"

    @property
    def request_url(self) -> str | None:
        return self._deliverer.request_url

    @request_url.setter
    def request_url(self, url: str | None) -> None:
        self._deliverer.request_url = url

    @property
    def socket_mode(self) -> bool:
        """True when deliveries go over Socket Mode: an app connection is open, or Socket
        Mode is enabled (``app_token``) and there is no ``request_url``."""
        return self._deliverer.socket_mode

    @property
    def socket_connections(self) -> int:
        """Socket Mode connections open right now."""
        return len(self._sockets.connections)

    @property
    def socket_connections_opened(self) -> int:
        """Socket Mode connections accepted so far, including closed ones."""
        return self._sockets.opened

    # -- directory --------------------------------------------------------------------
    def add_user(
        self,
        user_id: str,
        name: str,
        email: str | None = None,
        real_name: str | None = None,
        *,
        is_bot: bool = False,
        tz: str = "Etc/UTC",
    ) -> User:
        return self.workspace.add_user(
            user_id, name=name, email=email, real_name=real_name, is_bot=is_bot, tz=tz
        )

    def add_channel(
        self,
        channel_id: str,
        name: str,
        *,
        members: set[str] | None = None,
        bot_is_member: bool = True,
        is_private: bool = False,
        is_archived: bool = False,
        topic: str = "",
        purpose: str = "",
    ) -> Channel:
        """``members=None`` makes every workspace user a member."""
        return self.workspace.add_channel(
            Channel(
                channel_id,
                name,
                is_private=is_private,
                is_archived=is_archived,
                bot_is_member=bot_is_member,
                members=members,
                topic=topic,
                purpose=purpose,
                created=1700000000,
                creator=self.identity.bot_user_id,
            )
        )

    # -- acting as people -------------------------------------------------------------
    async def slash_command(
        self, user: str, channel: str, command: str, text: str = ""
    ) -> SlashResult:
        u, ch = self._user(user), self._channel(channel)
        # The echo is reserved now so that it sorts before anything the app posts meanwhile.
        url, rec = self._responses.create(
            "commands",
            channel=ch.id,
            user=u.id,
            command_echo=f"{command} {text}".strip(),
            echo_ts=self.workspace.next_ts(),
        )
        body, trigger = payloads.slash_command_body(
            self.identity, user=u, channel=ch, command=command, text=text, response_url=url
        )
        self.workspace.views.issue(trigger, u.id)
        d = await self._deliverer.deliver(
            body, "application/x-www-form-urlencoded", kind="slash_command"
        )
        if d.failure is not None:
            timed_out = d.failure in ("http_timeout", "timeout")
            error = "operation_timeout" if timed_out else "dispatch_failed"
            shown = f'{command} failed with the error "{error}"'
            self.workspace.post_ephemeral(ch.id, to=u.id, user=SLACKBOT_ID, text=shown)
            return SlashResult(
                d.status or 0, shown, "ephemeral", d.response_body, [], error, url, trigger
            )
        reply = _parse_ack(d)
        if reply is None:
            return SlashResult(d.status or 0, "", None, d.response_body, [], None, url, trigger)
        self._responses.apply(rec, reply)
        blocks = reply.get("blocks") if isinstance(reply.get("blocks"), list) else []
        return SlashResult(
            d.status or 0,
            str(reply.get("text") or ""),
            str(reply["response_type"]),
            d.response_body,
            blocks or [],
            None,
            url,
            trigger,
        )

    async def add_reaction(self, user: str, channel: str, ts: str, name: str) -> int:
        """Stores the reaction and delivers reaction_added; returns the final HTTP status
        (0 when the app never answered)."""
        msg = self._require_message(channel, ts)
        if not self.workspace.react(msg, self._user(user).id, name):
            raise ValueError(f"{user} already reacted with :{name}: to {ts}")
        event = payloads.reaction_event(
            "reaction_added", user=user, name=name, msg=msg, event_ts=self.workspace.next_ts()
        )
        return await self.send_event(event)

    async def remove_reaction(self, user: str, channel: str, ts: str, name: str) -> int:
        msg = self._require_message(channel, ts)
        if not self.workspace.unreact(msg, self._user(user).id, name):
            raise ValueError(f"{user} has no :{name}: reaction on {ts}")
        event = payloads.reaction_event(
            "reaction_removed", user=user, name=name, msg=msg, event_ts=self.workspace.next_ts()
        )
        return await self.send_event(event)

    async def click_button(
        self,
        user: str,
        channel: str,
        ts: str,
        action_id: str,
        value: str | None = None,
    ) -> int:
        """Clicks a button that is really on the message (matched by action_id, and by
        value when given); returns the HTTP status of the block_actions request."""
        u, ch = self._user(user), self._channel(channel)
        msg = self.workspace.get(ch.id, ts) or self.workspace.get_ephemeral(u.id, ts)
        if msg is None:
            raise LookupError(f"no message {ts} in {channel} visible to {user}")
        found = next(
            (
                (block_id, b)
                for block_id, b in msg.buttons()
                if b.get("action_id") == action_id and value in (None, b.get("value"))
            ),
            None,
        )
        if found is None:
            shown = [(b.get("action_id"), b.get("value")) for _, b in msg.buttons()]
            raise LookupError(f"no button {action_id}={value!r} on {ts}; buttons: {shown}")
        block_id, button = found
        url, _ = self._responses.create(
            "actions",
            channel=ch.id,
            user=u.id,
            original_ts=msg.ts,
            original_ephemeral=msg.is_ephemeral,
        )
        payload = payloads.block_actions_payload(
            self.identity,
            user=u,
            channel=ch,
            msg=msg,
            message_json=self.workspace.message_json(msg),
            block_id=block_id,
            button=button,
            value=button.get("value"),
            action_ts=self.workspace.next_ts(),
            response_url=url,
        )
        self.workspace.views.issue(str(payload["trigger_id"]), u.id)
        d = await self._deliverer.deliver(
            payloads.form_payload(payload),
            "application/x-www-form-urlencoded",
            kind="block_actions",
        )
        return d.status or 0

    def open_view(self, user: str) -> View | None:
        """The modal ``user`` has open, if the app opened one for them."""
        return self.workspace.views.open.get(self._user(user).id)

    async def submit_view(self, user: str, values: Mapping[str, str]) -> ViewResult:
        """``user`` types ``values`` (by action_id) into their open modal and presses submit.

        As in Slack, a required input left empty never leaves the client; otherwise the
        app's answer decides: an empty ack closes the modal, ``response_action: errors``
        keeps it open with the errors shown under the inputs.
        """
        u = self._user(user)
        view = self.workspace.views.open.get(u.id)
        if view is None:
            raise LookupError(f"{user} has no modal open")
        state, errors = views.state_values(view, dict(values))
        if errors:
            return ViewResult(status=0, closed=False, errors=errors)
        trigger = self.workspace.views.issue(payloads.trigger_id(), u.id)
        payload = views.view_submission_payload(
            view,
            user=u,
            team_id=self.identity.team_id,
            team_domain=self.identity.team_domain,
            app_id=self.identity.app_id,
            bot_id=self.identity.bot_id,
            values=state,
            token=payloads.VERIFICATION_TOKEN,
            trigger_id=trigger,
        )
        d = await self._deliverer.deliver(
            payloads.form_payload(payload),
            "application/x-www-form-urlencoded",
            kind="view_submission",
        )
        if d.failure is not None:
            # Slack keeps the modal open and says it could not reach the app
            return ViewResult(status=d.status or 0, closed=False, errors={}, failure=d.failure)
        answer = _json_object(d.response_body)
        action = answer.get("response_action")
        if action == "errors" and isinstance(answer.get("errors"), dict):
            shown = {str(k): str(v) for k, v in answer["errors"].items()}
            return ViewResult(status=d.status or 0, closed=False, errors=shown)
        self.workspace.views.close(u.id)
        return ViewResult(status=d.status or 0, closed=True, errors={})

    def close_view(self, user: str) -> None:
        """``user`` presses the modal's close button (no view_closed: shipmate does not ask)."""
        self.workspace.views.close(self._user(user).id)

    async def post_as_user(
        self, user: str, channel: str, text: str, *, thread_ts: str | None = None
    ) -> Message:
        """A person typing a message: stored, then delivered as a ``message`` event."""
        u, ch = self._user(user), self._channel(channel)
        msg = self.workspace.post(ch.id, user=u.id, text=text, thread_ts=thread_ts)
        kind = "im" if ch.is_im else "group" if ch.is_private else "channel"
        await self.send_event(payloads.message_event(msg, channel_type=kind))
        return msg

    async def send_event(self, event: JSONDict) -> int:
        """Wraps ``event`` in an event_callback envelope and delivers it with retries."""
        envelope = payloads.event_envelope(self.identity, event, payloads.new_event_id())
        last = await self._deliverer.deliver_event(envelope)
        return last.status or 0

    async def url_verification(self) -> bool:
        challenge = secrets.token_urlsafe(24)
        body = json.dumps(
            {
                "token": payloads.VERIFICATION_TOKEN,
                "challenge": challenge,
                "type": "url_verification",
            }
        ).encode()
        d = await self._deliverer.post(body, "application/json", kind="url_verification")
        return d.status == 200 and challenge in d.response_body

    async def send_raw(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, str]:
        """Sends exactly these bytes and headers (no signing), e.g. a forged request."""
        d = await self._deliverer.post(body, "", kind="raw", raw_headers=headers)
        return d.status or 0, d.response_body

    def signed_headers(
        self,
        body: bytes,
        content_type: str = "application/json",
        *,
        timestamp: int | None = None,
        secret: str | None = None,
    ) -> dict[str, str]:
        return signed_headers(secret or self.signing_secret, body, content_type, timestamp)

    # -- what people see --------------------------------------------------------------
    def messages(self, channel: str) -> list[Message]:
        return self.workspace.messages(self._channel(channel).id)

    def thread(self, channel: str, ts: str) -> list[Message]:
        return self.workspace.thread(self._channel(channel).id, ts)

    def ephemerals(self, user: str, channel: str | None = None) -> list[Message]:
        cid = self._channel(channel).id if channel else None
        return self.workspace.ephemerals(user, cid)

    def message(self, channel: str, ts: str) -> Message | None:
        return self.workspace.get(self._channel(channel).id, ts)

    def find_message(
        self, channel: str, predicate: Callable[[Message], bool] | str
    ) -> Message | None:
        """First match, oldest first, over top-level messages and then thread replies.
        A string predicate matches a substring of the rendered text."""
        if isinstance(predicate, str):
            needle = predicate
            names = self.workspace.names()

            def predicate(m: Message) -> bool:
                return needle in m.render(names) or needle in m.text

        cid = self._channel(channel).id
        top = self.workspace.messages(cid)
        replies = [r for m in top for r in self.workspace.thread(cid, m.ts)]
        return next((m for m in [*top, *replies] if predicate(m)), None)

    def transcript(
        self, channel: str | None = None, include_ephemeral_for: str | None = None
    ) -> str:
        """One channel, or every channel when ``channel`` is None."""
        ids = [self._channel(channel).id] if channel else list(self.workspace.channels)
        return "\n\n".join(
            transcript.render_channel(self.workspace, cid, include_ephemeral_for) for cid in ids
        )

    def calls_to(self, method: str) -> list[ApiCall]:
        return [c for c in self.calls if c.method == method]

    @property
    def response_url_posts(self) -> list[ResponsePost]:
        return self._responses.posts

    @property
    def background_errors(self) -> list[BaseException]:
        return self._deliverer.background_errors

    async def wait_for(
        self,
        predicate: Callable[[], T],
        timeout: float = 10.0,  # noqa: ASYNC109 -- the documented test-facing signature
        *,
        interval: float = 0.01,
        what: str | None = None,
    ) -> T:
        """Polls ``predicate`` until truthy and returns its value."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if loop.time() >= deadline:
                raise TimeoutError(self._timeout_report(what or _describe(predicate), timeout))
            await asyncio.sleep(interval)

    # -- faults -----------------------------------------------------------------------
    def set_rate_limit(self, method: str, per_minute: int) -> None:
        self.limiter.set_limit(method, per_minute)

    def force_ratelimit(self, method: str, seconds: float) -> None:
        self.limiter.force(method, seconds)

    def expire_response_urls(self) -> None:
        """Ages every response_url handed out so far past Slack's 30-minute lifetime."""
        self._responses.expire_all()

    async def disconnect_socket(
        self, reason: str = "refresh_requested", *, grace: float = 1.0
    ) -> None:
        """Sends Socket Mode's ``disconnect`` on every open connection and closes them (after
        ``grace`` seconds unless the app closed first); the app is expected to call
        apps.connections.open again and reconnect."""
        await self._sockets.disconnect(reason, grace=grace)

    # -- internals --------------------------------------------------------------------
    def _emit_in_background(self, event: JSONDict) -> None:
        # Tests that only exercise the Web API have no app to deliver to.
        if self._deliverer.has_app and self._runner is not None:
            self._deliverer.spawn(self.send_event(event))

    def _user(self, ref: str) -> User:
        user = self.workspace.users.get(ref) or next(
            (u for u in self.workspace.users.values() if u.name == ref), None
        )
        if user is None:
            raise LookupError(f"unknown user {ref!r}; add it with add_user()")
        return user

    def _channel(self, ref: str) -> Channel:
        channel = self.workspace.resolve_channel(ref)
        if channel is None:
            raise LookupError(f"unknown channel {ref!r}; add it with add_channel()")
        return channel

    def _require_message(self, channel: str, ts: str) -> Message:
        msg = self.workspace.get(self._channel(channel).id, ts)
        if msg is None:
            raise LookupError(f"no message {ts} in {channel}")
        return msg

    def _timeout_report(self, what: str, timeout: float) -> str:
        recent = [f"  {c.method} -> {c.status} {c.error or 'ok'}" for c in self.calls[-15:]] or [
            "  (none)"
        ]
        failed = [
            f"  {d.kind} attempt {d.attempt}: {d.status} {d.failure}"
            for d in self.deliveries
            if d.failure
        ]
        ephemerals = [
            line
            for user in sorted(self.workspace.users)
            for m in self.workspace.ephemerals(user)
            for line in transcript.render_message(self.workspace, m, first="  ", rest="      ")
        ]
        parts = [
            f"condition not met within {timeout}s: {what}",
            "--- transcript ---",
            self.transcript() or "(no channels)",
            "--- last Web API calls ---",
            *recent,
        ]
        if ephemerals:
            parts += ["--- ephemeral messages ---", *ephemerals]
        if failed:
            parts += ["--- failed deliveries to the app ---", *failed[-10:]]
        if self.background_errors:
            parts += ["--- background errors ---", *map(repr, self.background_errors)]
        return "\n".join(parts)


def _parse_ack(d: Delivery) -> JSONDict | None:
    """Interprets a slash-command ack body (§2): empty, text/plain or JSON."""
    body = d.response_body
    if not body.strip():
        return None
    ctype = d.response_headers.get("Content-Type", "")
    if "json" in ctype or body.lstrip().startswith("{"):
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if isinstance(data, dict):
            data.setdefault("response_type", "ephemeral")
            if data["response_type"] not in ("ephemeral", "in_channel"):
                data["response_type"] = "ephemeral"
            return data
    return {"text": body, "response_type": "ephemeral"}


def _json_object(body: str) -> JSONDict:
    try:
        data = json.loads(body) if body.strip() else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _describe(predicate: Callable[[], object]) -> str:
    try:
        return inspect.getsource(predicate).strip()
    except (OSError, TypeError):
        return repr(predicate)
