"""Socket Mode (slack-wire.md §6): ``apps.connections.open`` and the ``/link/`` WebSocket.

The app asks for a URL with its app-level token, connects, and gets ``hello``; then every
slash command, event and button click arrives as an envelope that the app acks with
``{"envelope_id": …, "payload"?: …}`` within the ack timeout. The payloads are exactly the
bodies HTTP delivery sends, as JSON. Retrying unacked events is the caller's job (the
same schedule as HTTP retries, see ``Deliverer``); this module makes one attempt at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web

from bot.local.slackemu.models import Delivery, JSONDict

#: Delivery kinds (as logged for HTTP) -> Socket Mode envelope types.
ENVELOPE_TYPES = {
    "slash_command": "slash_commands",
    "block_actions": "interactive",
    "view_submission": "interactive",
    "event": "events_api",
}
#: The emulator accepts a ticket once, within this many seconds of apps.connections.open.
TICKET_LIFETIME = 30.0
#: What retry_reason says after an envelope went unacked (java EventContext: "timeout").
UNACKED = "timeout"
NO_CONNECTION = "connection_failed"
DEBUG_HOST = "applink-emulator"


def envelope_payload(kind: str, body: bytes) -> JSONDict:
    """The JSON payload of an envelope, from the body the HTTP delivery would send."""
    if kind == "event":
        payload = json.loads(body)
    else:
        fields = dict(parse_qsl(body.decode(), keep_blank_values=True))
        payload = (
            json.loads(fields["payload"])
            if kind in ("block_actions", "view_submission")
            else fields
        )
    if not isinstance(payload, dict):
        raise ValueError(f"{kind} body is not a JSON object")
    return payload


@dataclass(eq=False)
class Connection:
    id: int
    ws: web.WebSocketResponse
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: set once the handler is done with this connection
    gone: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, frame: JSONDict) -> None:
        async with self.send_lock:
            await self.ws.send_str(json.dumps(frame))


@dataclass(frozen=True)
class Frame:
    """One WebSocket text frame, for tests: ``direction`` is "out" (to the app) or "in"."""

    direction: str
    connection: int
    data: JSONDict
    at: float


class SocketModeServer:
    def __init__(
        self,
        *,
        app_id: str,
        app_token: str | None,
        ack_timeout: float,
        log: list[Delivery],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app_id = app_id
        #: None: Socket Mode is off for this app (apps.connections.open refuses)
        self.app_token = app_token
        self.ack_timeout = ack_timeout
        self.log = log
        self.frames: list[Frame] = []
        self.connections: list[Connection] = []
        #: connections accepted so far, including closed ones
        self.opened = 0
        self._clock = clock
        self._ids = itertools.count(1)
        self._tickets: dict[str, float] = {}
        self._pending: dict[str, asyncio.Future[JSONDict]] = {}
        self._changed = asyncio.Condition()

    @property
    def enabled(self) -> bool:
        return self.app_token is not None

    @property
    def connected(self) -> bool:
        return bool(self.connections)

    # -- apps.connections.open --------------------------------------------------------
    def open_url(self, base_url: str) -> JSONDict:
        ticket = str(uuid.uuid4())
        self._tickets[ticket] = self._clock()
        ws_base = "ws" + base_url.removeprefix("http")
        return {"ok": True, "url": f"{ws_base}/link/?ticket={ticket}&app_id={self.app_id}"}

    # -- the WebSocket ----------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        issued = self._tickets.pop(request.query.get("ticket", ""), None)
        if issued is None or self._clock() - issued > TICKET_LIFETIME:
            return web.json_response({"ok": False, "error": "invalid_ticket"}, status=401)
        # autoping answers slack_sdk's "sdk-ping-pong:<ts>" pings with an echoing pong
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        conn = Connection(next(self._ids), ws)
        async with self._changed:
            self.connections.append(conn)
            self.opened += 1
            self._changed.notify_all()
        try:
            await self._send(conn, self._hello())
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._received(conn, msg.data)
        except ConnectionError:
            pass  # the app went away mid-send; the finally below forgets it
        finally:
            async with self._changed:
                if conn in self.connections:
                    self.connections.remove(conn)
                self._changed.notify_all()
            conn.gone.set()
        return ws

    def _hello(self) -> JSONDict:
        return {
            "type": "hello",
            "num_connections": len(self.connections),
            "debug_info": {
                "host": DEBUG_HOST,
                "build_number": 1,
                "approximate_connection_time": 18060,
            },
            "connection_info": {"app_id": self.app_id},
        }

    def _received(self, conn: Connection, text: str) -> None:
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            data = {"unparsed": text}
        self.frames.append(Frame("in", conn.id, data, time.time()))
        future = self._pending.get(str(data.get("envelope_id", "")))
        # an ack may come over any connection, e.g. the new one after a reconnect
        if future is not None and not future.done():
            future.set_result(data)

    async def _send(self, conn: Connection, frame: JSONDict) -> None:
        self.frames.append(Frame("out", conn.id, frame, time.time()))
        await conn.send(frame)

    async def _connection(self, wait: float) -> Connection | None:
        """The newest open connection, waiting up to ``wait`` s for one (e.g. mid-reconnect)."""

        def usable() -> Connection | None:
            return next((c for c in reversed(self.connections) if not c.ws.closed), None)

        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait_for(usable), wait)
            return usable()

    # -- envelopes --------------------------------------------------------------------
    async def send(
        self,
        kind: str,
        payload: JSONDict,
        *,
        attempt: int = 0,
        retry_reason: str | None = None,
        event_id: str | None = None,
    ) -> Delivery:
        """One envelope and its ack; ``status`` is 200 when acked in time, else None."""
        envelope_type = ENVELOPE_TYPES[kind]
        envelope_id = str(uuid.uuid4())
        envelope: JSONDict = {
            "envelope_id": envelope_id,
            "type": envelope_type,
            "payload": payload,
            "accepts_response_payload": envelope_type == "slash_commands"
            or payload.get("type") == "view_submission",
        }
        if envelope_type == "events_api":
            envelope["retry_attempt"] = attempt
            envelope["retry_reason"] = retry_reason or ""
        ack: JSONDict | None = None
        failure: str | None = None
        conn = await self._connection(self.ack_timeout)
        if conn is None:
            failure = NO_CONNECTION
        else:
            future: asyncio.Future[JSONDict] = asyncio.get_running_loop().create_future()
            self._pending[envelope_id] = future
            try:
                await self._send(conn, envelope)
                ack = await asyncio.wait_for(future, self.ack_timeout)
            except TimeoutError:
                failure = UNACKED
            except ConnectionError:
                failure = NO_CONNECTION
            finally:
                self._pending.pop(envelope_id, None)
        answer = ack.get("payload") if ack is not None else None
        record = Delivery(
            kind=kind,
            attempt=attempt,
            status=None if ack is None else 200,
            failure=failure,
            at=time.time(),
            event_id=event_id,
            response_body=json.dumps(answer) if isinstance(answer, dict) and answer else "",
            response_headers={"Content-Type": "application/json"} if answer else {},
            transport="socket",
            envelope_id=envelope_id,
        )
        self.log.append(record)
        return record

    async def disconnect(self, reason: str = "refresh_requested", *, grace: float = 1.0) -> None:
        """Sends ``disconnect`` on every open connection, gives the app ``grace`` seconds to
        close it itself (slack_sdk does, as it reconnects), then closes what is left."""
        conns = list(self.connections)
        frame = {"type": "disconnect", "reason": reason, "debug_info": {"host": DEBUG_HOST}}
        for conn in conns:
            with contextlib.suppress(ConnectionError):
                await self._send(conn, frame)
        waits = [asyncio.ensure_future(conn.gone.wait()) for conn in conns]
        if waits:
            _, late = await asyncio.wait(waits, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        for conn in conns:
            if not conn.gone.is_set():
                await conn.ws.close()

    async def close(self) -> None:
        for future in self._pending.values():
            future.cancel()
        for conn in list(self.connections):
            await conn.ws.close()
