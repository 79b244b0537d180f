"""What "Slack" sends to the app, with the Events API retry policy (§3).

Over signed HTTP requests to ``request_url``, or as Socket Mode envelopes (§6) when the
app is connected over Socket Mode (or has no request URL); both share the retry schedule.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any

import aiohttp

from bot.local.slackemu.models import Delivery, JSONDict
from bot.local.slackemu.signing import signed_headers
from bot.local.slackemu.socketmode import SocketModeServer, envelope_payload

#: What Slack really does: one retry almost at once, then after ~1 and ~5 minutes.
SLACK_RETRY_DELAYS: tuple[float, ...] = (0.0, 60.0, 300.0)
ACK_TIMEOUT = 3.0


class Deliverer:
    def __init__(
        self,
        *,
        signing_secret: str,
        retry_delays: Sequence[float],
        ack_timeout: float,
        log: list[Delivery],
        socket: SocketModeServer | None = None,
    ) -> None:
        self.signing_secret = signing_secret
        self.socket = socket
        self.retry_delays = tuple(retry_delays)
        self.ack_timeout = ack_timeout
        self.request_url: str | None = None
        self.log = log
        self.background_errors: list[BaseException] = []
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def open(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.socket is not None:
            await self.socket.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def socket_mode(self) -> bool:
        """Deliver over Socket Mode: the app is connected, or it has no HTTP endpoint."""
        socket = self.socket
        return socket is not None and socket.enabled and (socket.connected or not self.request_url)

    @property
    def has_app(self) -> bool:
        """Whether anything can receive deliveries (an app that never connected cannot)."""
        socket = self.socket
        return bool(self.request_url) or (socket is not None and socket.opened > 0)

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a delivery without making the Web API caller wait, as Slack does."""

        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # kept for tests: a background failure must not vanish
                self.background_errors.append(exc)

        task = asyncio.get_running_loop().create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def post(
        self,
        body: bytes,
        content_type: str,
        *,
        kind: str,
        attempt: int = 0,
        event_id: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
        raw_headers: Mapping[str, str] | None = None,
    ) -> Delivery:
        """One attempt. ``raw_headers`` replaces signing entirely (for forged requests)."""
        if self._session is None:
            raise RuntimeError("SlackEmulator is not started")
        if not self.request_url:
            hint = " (raw and url_verification requests are HTTP only)" if self.socket_mode else ""
            raise RuntimeError(f"set SlackEmulator.request_url before sending to the app{hint}")
        if raw_headers is not None:
            headers = dict(raw_headers)
        else:
            headers = signed_headers(self.signing_secret, body, content_type)
            headers.update(extra_headers or {})
        status: int | None = None
        failure: str | None = None
        text = ""
        resp_headers: Mapping[str, str] = {}
        try:
            async with self._session.post(
                self.request_url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.ack_timeout),
                max_redirects=2,
            ) as resp:
                status = resp.status
                text = await resp.text()
                resp_headers = resp.headers.copy()  # stays case-insensitive
                if not 200 <= status < 300:
                    failure = "http_error"
        except TimeoutError:
            failure = "http_timeout"
        except aiohttp.TooManyRedirects:
            failure = "too_many_redirects"
        except (aiohttp.ClientConnectionError, OSError):
            failure = "connection_failed"
        except aiohttp.ClientError:
            failure = "unknown_error"
        record = Delivery(
            kind=kind,
            attempt=attempt,
            status=status,
            failure=failure,
            at=time.time(),
            event_id=event_id,
            response_body=text,
            response_headers=resp_headers,
        )
        self.log.append(record)
        return record

    async def deliver(self, body: bytes, content_type: str, *, kind: str) -> Delivery:
        """One attempt at a slash command or interaction: the HTTP body, or over Socket Mode
        an envelope whose payload is that body as JSON."""
        if self.socket is not None and self.socket_mode:
            return await self.socket.send(kind, envelope_payload(kind, body))
        return await self.post(body, content_type, kind=kind)

    async def deliver_event(self, envelope: JSONDict) -> Delivery:
        """First attempt plus up to ``len(retry_delays)`` retries; returns the last attempt.

        Every retry carries the same body (same event_id), freshly signed over HTTP, or in
        a new envelope with ``retry_attempt`` incremented over Socket Mode.
        """
        event_id = str(envelope.get("event_id", ""))
        socket = self.socket
        if socket is not None and self.socket_mode:

            async def over_socket(num: int, reason: str | None) -> Delivery:
                return await socket.send(
                    "event", envelope, attempt=num, retry_reason=reason, event_id=event_id
                )

            return await self._with_retries(over_socket)
        body = json.dumps(envelope).encode()

        async def over_http(num: int, reason: str | None) -> Delivery:
            retry = {"X-Slack-Retry-Num": str(num), "X-Slack-Retry-Reason": reason or ""}
            return await self.post(
                body,
                "application/json",
                kind="event",
                attempt=num,
                event_id=event_id,
                extra_headers=retry if num else None,
            )

        return await self._with_retries(over_http)

    async def _with_retries(
        self, attempt: Callable[[int, str | None], Awaitable[Delivery]]
    ) -> Delivery:
        last = await attempt(0, None)
        for num, delay in enumerate(self.retry_delays, start=1):
            if last.failure is None or last.response_headers.get("X-Slack-No-Retry") == "1":
                break
            if delay > 0:
                await asyncio.sleep(delay)  # the retry schedule itself, not a test wait
            last = await attempt(num, last.failure)
        return last
