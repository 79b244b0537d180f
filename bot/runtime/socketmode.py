"""Socket Mode for `web` (``SLACK_APP_TOKEN`` set): the same bolt AsyncApp over a WebSocket.

bolt's aiohttp ``AsyncSocketModeHandler`` reuses ``app.client``, so apps.connections.open
goes to ``SLACK_API_URL`` like every other Web API call, and it fetches a new URL on every
reconnect (after a ``disconnect`` message, a closed socket or missed pongs).

The app keeps ``process_before_response=True``: bolt acks an envelope only after the
listener recorded the intent in Redis. When the dispatch is not a 200 (an event listener
raised because Redis is down), bolt sends no ack at all, so Slack delivers the envelope
again with ``retry_attempt`` + 1, as it retries a 500 in HTTP mode.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol, cast

from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp

log = logging.getLogger(__name__)

#: how long `web` waits for its first Socket Mode connection before giving up
CONNECT_TIMEOUT = 30.0


class _Client(Protocol):
    """The parts of slack_sdk's aiohttp SocketModeClient used here (its methods are untyped)."""

    wss_uri: str | None

    async def issue_new_wss_url(self) -> str: ...
    async def connect(self) -> None: ...
    async def close(self) -> None: ...


class SocketMode:
    def __init__(self, bolt: AsyncApp, app_token: str, *, ping_interval: float = 10.0) -> None:
        self.handler = AsyncSocketModeHandler(bolt, app_token, ping_interval=ping_interval)
        self._client = cast(_Client, self.handler.client)

    async def start(self, timeout: float = CONNECT_TIMEOUT) -> None:  # noqa: ASYNC109
        """Connects; raises SlackApiError for a refused token instead of retrying forever."""
        try:
            # slack_sdk's connect() retries any failure forever, a wrong token included, so
            # the first URL is fetched here, where an error can still stop the process
            self._client.wss_uri = await self._client.issue_new_wss_url()
            async with asyncio.timeout(timeout):
                await self._client.connect()
        except BaseException:
            await self.stop()
            raise
        log.info("connected to Slack over Socket Mode")

    async def stop(self) -> None:
        await self._client.close()


async def start_socket_mode(
    bolt: AsyncApp,
    app_token: str,
    *,
    ping_interval: float = 10.0,
    timeout: float = CONNECT_TIMEOUT,  # noqa: ASYNC109
) -> SocketMode:
    socket = SocketMode(bolt, app_token, ping_interval=ping_interval)
    await socket.start(timeout)
    return socket
