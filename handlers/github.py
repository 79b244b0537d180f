"""`POST /github/webhook`: a GitHub push is a *trigger* for a collect, nothing more.

The commits always come from shipmate's own git mirror and the poll timer keeps running,
so releases and rollbacks work the same when GitHub is down, silent or misconfigured. A
webhook only makes a new batch appear sooner.

Every request is checked before anything is written: the ``X-Hub-Signature-256`` HMAC
over the raw body (constant-time compare), then the event and delivery headers, then the
payload. A push to the release branch records the push itself (its signed ref, before and
after) and enqueues a ``collect`` job in one atomic Redis write, then remembers its
``X-GitHub-Delivery`` id; a redelivered delivery, or a captured one replayed under fresh
delivery ids (the id is not signed), is answered "duplicate" and changes nothing. Forged, malformed and oversized requests get a
specific 4xx answer and change nothing either; when Redis is unreachable the answer is
503, so the delivery shows as failed in GitHub (and can be redelivered) while polling
still picks the commits up.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web
from aiohttp.typedefs import Handler
from redis.exceptions import RedisError

from bot.adapters.keys import DEDUPE_TTL_SECONDS
from bot.adapters.metrics import RECORDER
from bot.adapters.store import Conflict, Duplicate, Snapshot, Store, Write
from bot.domain.jobs import collect_job

log = logging.getLogger(__name__)

GITHUB_PATH = "/github/webhook"
#: GitHub caps payloads at 25 MB; a push that shipmate only uses as a trigger is far smaller
MAX_BODY_BYTES = 5 * 1024 * 1024
SIGNATURE_PREFIX = "sha256="
#: GitHub's delivery ids are GUIDs; anything else is refused before it becomes a Redis key
_DELIVERY_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_EVENT = re.compile(r"[a-z_]{1,64}")
_ZERO_SHA = "0" * 40

NOT_CONFIGURED = "GITHUB_WEBHOOK_SECRET is not set; shipmate ignores webhooks and keeps polling"


class PayloadError(ValueError):
    """The body is not a GitHub webhook payload (JSON object, or form field ``payload``)."""


@dataclass(frozen=True, slots=True)
class PushEvent:
    ref: str
    after: str
    before: str
    repository: str
    clone_url: str | None = None
    ssh_url: str | None = None
    deleted: bool = False
    forced: bool = False

    @property
    def branch(self) -> str | None:
        """The branch name for ``refs/heads/<name>``; None for tags and other refs."""
        prefix = "refs/heads/"
        return self.ref[len(prefix) :] if self.ref.startswith(prefix) else None


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for ``body``."""
    return SIGNATURE_PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(secret: bytes, body: bytes, header: str | None) -> bool:
    """True when ``header`` is ``sha256=<hex HMAC-SHA256 of body>`` under ``secret``."""
    if not secret or not header or not header.isascii():
        return False
    if not header.startswith(SIGNATURE_PREFIX):
        return False
    return hmac.compare_digest(sign(secret, body).encode(), header.encode())


def load_payload(body: bytes, content_type: str = "application/json") -> dict[str, Any]:
    """The payload as a dict, for either of GitHub's content types; raises PayloadError."""
    try:
        text = body.decode("utf-8")
        if content_type == "application/x-www-form-urlencoded":
            fields = parse_qs(text, strict_parsing=False)
            if "payload" not in fields:
                raise PayloadError("form body has no 'payload' field")
            text = fields["payload"][0]
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PayloadError(f"body is not JSON ({err})") from None
    if not isinstance(data, dict):
        raise PayloadError(f"expected a JSON object, got {type(data).__name__}")
    return data


def parse_push(body: bytes | Mapping[str, Any]) -> PushEvent | None:
    """The parts of a push payload shipmate uses; None if it is not a push payload."""
    if isinstance(body, bytes):
        try:
            data: Mapping[str, Any] = load_payload(body)
        except PayloadError:
            return None
    else:
        data = body
    ref, after, before = data.get("ref"), data.get("after"), data.get("before", "")
    repo = data.get("repository")
    if not isinstance(ref, str) or not isinstance(after, str) or not isinstance(repo, dict):
        return None
    name = repo.get("full_name")
    if not isinstance(name, str) or not isinstance(before, str):
        return None
    clone, ssh = repo.get("clone_url"), repo.get("ssh_url")
    return PushEvent(
        ref=ref,
        after=after,
        before=before,
        repository=name,
        clone_url=clone if isinstance(clone, str) else None,
        ssh_url=ssh if isinstance(ssh, str) else None,
        deleted=bool(data.get("deleted")) or after == _ZERO_SHA,
        forced=bool(data.get("forced")),
    )


def push_id(push: PushEvent) -> str:
    """What identifies one push: the branch moving from ``before`` to ``after``. Hashed, as
    the values come from the body and only their identity matters. A branch moved back to
    an earlier sha is a new push (another ``before``)."""
    moved = f"{push.ref}\0{push.before}\0{push.after}".encode()
    return hashlib.sha256(moved).hexdigest()


async def _remember_delivery(store: Store, key: str) -> None:
    # best effort: a redelivery under this id is the same push, which its push id refuses
    try:
        await store.redis.set(key, "1", ex=DEDUPE_TTL_SECONDS)
    except RedisError as err:
        log.warning("cannot remember github delivery %s: %s", key, err)


def _answer(status: int, **body: Any) -> web.Response:
    return web.json_response(body, status=status)


def _error(status: int, error: str) -> web.Response:
    return _answer(status, ok=False, error=error)


def _ignored(reason: str) -> web.Response:
    return _answer(202, ok=True, ignored=True, reason=reason)


async def read_limited(request: web.Request, limit: int) -> bytes | None:
    """The raw body, or None when it is larger than ``limit`` (without reading all of it)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def github_webhook(
    store: Store,
    *,
    secret: str | None,
    branch: str,
    env: str,
    clock: Callable[[], float],
    max_body: int = MAX_BODY_BYTES,
) -> Handler:
    """The aiohttp handler. ``env`` is any configured environment: it only routes the write."""
    key = secret.encode() if secret else b""

    async def handle(request: web.Request) -> web.StreamResponse:
        if not key:
            return _error(404, NOT_CONFIGURED)
        body = await read_limited(request, max_body)
        if body is None:
            return _error(413, f"payload larger than {max_body} bytes; shipmate keeps polling")
        header = request.headers.get("X-Hub-Signature-256")
        if header is None:
            log.warning("github webhook without X-Hub-Signature-256 from %s", request.remote)
            return _error(401, "X-Hub-Signature-256 header is missing")
        if not verify_signature(key, body, header):
            log.warning("github webhook with a bad signature from %s", request.remote)
            return _error(
                401, "X-Hub-Signature-256 does not match the body under GITHUB_WEBHOOK_SECRET"
            )
        event = request.headers.get("X-GitHub-Event", "")
        delivery = request.headers.get("X-GitHub-Delivery", "")
        if not _EVENT.fullmatch(event):
            return _error(400, "X-GitHub-Event header is missing or malformed")
        if not _DELIVERY_ID.fullmatch(delivery):
            return _error(400, "X-GitHub-Delivery header is missing or malformed")
        try:
            payload = load_payload(body, request.content_type)
        except PayloadError as err:
            return _error(400, str(err))

        if event == "ping":
            return _answer(200, ok=True, zen=str(payload.get("zen", "")))
        if event != "push":
            return _ignored(f"shipmate only acts on push events, not {event!r}")
        push = parse_push(payload)
        if push is None:
            return _error(400, "push payload lacks ref, after or repository.full_name")
        if push.branch != branch:
            return _ignored(f"{push.ref} is not the release branch refs/heads/{branch}")
        if push.deleted:
            return _ignored(f"{push.ref} was deleted; nothing to collect")

        job = collect_job("push", after=push.after, at=f"{clock():.3f}")

        def decide(_: Snapshot) -> tuple[Write, None]:
            return Write(jobs=[job]), None

        seen = store.keys.dedupe("github", delivery)
        try:
            if await store.redis.exists(seen):
                raise Duplicate(seen)
            # the delivery id is not signed: a captured push replayed with fresh ids is
            # still the same push, so the signed ref/before/after is what makes it unique
            await store.update(env, decide, dedupe=store.keys.dedupe("github-push", push_id(push)))
        except Duplicate:
            log.info("github delivery %s (%s) was already recorded", delivery, push.after[:7])
            return _answer(200, ok=True, duplicate=True)
        except (RedisError, Conflict) as err:
            if isinstance(err, RedisError):
                RECORDER.redis_error("web", "github")
            log.warning("cannot record github delivery %s: %s", delivery, err)
            return _error(
                503,
                "shipmate could not record the push (Redis is unreachable); "
                "redeliver it later, polling will collect the commits anyway",
            )
        await _remember_delivery(store, seen)
        log.info("github push %s to %s (%s) queued a collect", delivery, push.ref, push.after[:7])
        return _answer(200, ok=True, queued="collect")

    return handle
