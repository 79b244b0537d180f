"""Slack's v0 request signature (slack-wire.md §1), as the emulator produces it."""

from __future__ import annotations

import hashlib
import hmac
import time


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``v0=<hex>`` over ``v0:<timestamp>:<raw body>``, exactly as slack_sdk recomputes it."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def signed_headers(
    secret: str, body: bytes, content_type: str, timestamp: int | None = None
) -> dict[str, str]:
    """Headers of a signed delivery; ``timestamp`` lets tests forge stale requests."""
    # Integer seconds only: bolt calls int() on the header and would crash on a float.
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": signature(secret, ts, body),
        "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
    }
