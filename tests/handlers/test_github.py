"""GitHub webhook: signature, payload parsing (pure), and the handler over real HTTP."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from bot.adapters.keys import Keys
from bot.adapters.store import Store
from handlers.github import (
    GITHUB_PATH,
    NOT_CONFIGURED,
    PayloadError,
    PushEvent,
    github_webhook,
    load_payload,
    parse_push,
    sign,
    verify_signature,
)
from tests.conftest import free_port

SECRET = "webhook-secret"
SHA = "b" * 40


def push_payload(ref: str = "refs/heads/main", after: str = SHA, **extra: Any) -> dict[str, Any]:
    return {
        "ref": ref,
        "before": "a" * 40,
        "after": after,
        "forced": False,
        "deleted": False,
        "repository": {
            "full_name": "acme/shop",
            "clone_url": "https://github.com/acme/shop.git",
            "ssh_url": "git@github.com:acme/shop.git",
        },
        **extra,
    }


# --- pure ----------------------------------------------------------------------------------


def test_githubs_documented_test_vector_passes() -> None:
    """The example from GitHub's "Validating webhook deliveries" page."""
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    secret, body = b"It's a Secret to Everybody", b"Hello, World!"
    assert sign(secret, body) == expected
    assert verify_signature(secret, body, expected)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",  # no "sha256="
        "sha1=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e18",
        "sha256=757107EA0EB2509FC211221CCE984B8A37570B6D7586C22C46F4379C8B043E17",
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17 ",
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1é",
    ],
)
def test_anything_but_the_exact_signature_is_refused(header: str | None) -> None:
    assert not verify_signature(b"It's a Secret to Everybody", b"Hello, World!", header)


def test_signature_depends_on_secret_and_body() -> None:
    good = sign(b"s3cret", b"{}")
    assert verify_signature(b"s3cret", b"{}", good)
    assert not verify_signature(b"other", b"{}", good)
    assert not verify_signature(b"s3cret", b"{} ", good)
    assert not verify_signature(b"", b"{}", sign(b"", b"{}")), "an empty secret verifies nothing"


def test_parse_push_extracts_what_shipmate_uses() -> None:
    push = parse_push(json.dumps(push_payload(forced=True)).encode())
    assert push == PushEvent(
        ref="refs/heads/main",
        after=SHA,
        before="a" * 40,
        repository="acme/shop",
        clone_url="https://github.com/acme/shop.git",
        ssh_url="git@github.com:acme/shop.git",
        forced=True,
    )
    assert push.branch == "main"


def test_parse_push_tags_deletions_and_non_pushes() -> None:
    tag = parse_push(push_payload(ref="refs/tags/v1.0"))
    assert tag is not None and tag.branch is None
    deleted = parse_push(push_payload(after="0" * 40, deleted=True))
    assert deleted is not None and deleted.deleted
    assert parse_push(b'{"zen": "Keep it logically awesome.", "hook_id": 1}') is None
    assert parse_push(b"not json") is None
    assert parse_push({"ref": "refs/heads/main", "after": SHA, "repository": "acme/shop"}) is None


def test_load_payload_accepts_both_github_content_types() -> None:
    data = push_payload()
    as_json = json.dumps(data).encode()
    as_form = urlencode({"payload": json.dumps(data)}).encode()
    assert load_payload(as_json) == data
    assert load_payload(as_form, "application/x-www-form-urlencoded") == data
    for bad, kind in (
        (b"{", "application/json"),
        (b"[1, 2]", "application/json"),
        (b"\xff\xfe", "application/json"),
        (b"other=1", "application/x-www-form-urlencoded"),
    ):
        with pytest.raises(PayloadError):
            load_payload(bad, kind)


# --- the handler over real HTTP --------------------------------------------------------------


@asynccontextmanager
async def serve(
    store: Store, *, secret: str | None = SECRET, max_body: int = 5 * 1024 * 1024
) -> AsyncIterator[str]:
    app = web.Application()
    handler = github_webhook(
        store, secret=secret, branch="main", env="sandbox", clock=lambda: 1000.0, max_body=max_body
    )
    app.router.add_post(GITHUB_PATH, handler)
    async with TestServer(app, host="127.0.0.1") as server:
        yield str(server.make_url(GITHUB_PATH))


async def post(
    url: str,
    body: bytes,
    *,
    event: str | None = "push",
    delivery: str | None = None,
    signature: str | None = "sign",
    content_type: str = "application/json",
) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": content_type, "User-Agent": "GitHub-Hookshot/test"}
    if event is not None:
        headers["X-GitHub-Event"] = event
    if delivery != "":
        headers["X-GitHub-Delivery"] = delivery or str(uuid.uuid4())
    if signature == "sign":
        headers["X-Hub-Signature-256"] = sign(SECRET.encode(), body)
    elif signature is not None:
        headers["X-Hub-Signature-256"] = signature
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as response,
    ):
        return response.status, await response.json()


@pytest.fixture
async def dead_store() -> AsyncIterator[Store]:
    """A store whose Redis is not running: the handler must not need it to refuse requests."""
    client = Redis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5, socket_timeout=0.5
    )
    yield Store(client, Keys("gh-test"))
    await client.aclose()


async def collect_jobs(redis: Redis, keys: Keys) -> list[dict[str, str]]:
    """Collect jobs wherever the store queues them (their own stream, or with the rest)."""
    collects: Any = await redis.xrange(keys.collects)
    others: Any = await redis.xrange(keys.jobs)
    entries = [*collects, *others]
    return [fields for _, fields in entries if fields.get("kind") == "collect"]


async def test_unconfigured_secret_answers_404_and_says_polling_continues(
    dead_store: Store,
) -> None:
    async with serve(dead_store, secret=None) as url:
        status, body = await post(url, json.dumps(push_payload()).encode())
    assert (status, body) == (404, {"ok": False, "error": NOT_CONFIGURED})


@pytest.mark.parametrize(
    ("signature", "error"),
    [
        (None, "X-Hub-Signature-256 header is missing"),
        ("sha256=" + "0" * 64, "X-Hub-Signature-256 does not match"),
        ("garbage", "X-Hub-Signature-256 does not match"),
    ],
)
async def test_unsigned_or_forged_requests_get_401(
    dead_store: Store, signature: str | None, error: str
) -> None:
    async with serve(dead_store) as url:
        status, body = await post(url, json.dumps(push_payload()).encode(), signature=signature)
    assert status == 401 and body["ok"] is False and error in body["error"]


async def test_malformed_requests_get_400(dead_store: Store) -> None:
    payload = json.dumps(push_payload()).encode()
    async with serve(dead_store) as url:
        assert (await post(url, payload, event=None))[0] == 400
        status, body = await post(url, payload, delivery="")
        assert status == 400 and "X-GitHub-Delivery" in body["error"]
        status, body = await post(url, payload, delivery="../../etc key")
        assert status == 400 and "X-GitHub-Delivery" in body["error"]
        status, body = await post(url, b"not json")
        assert status == 400 and "not JSON" in body["error"]
        status, body = await post(url, b'{"ref": 1}')
        assert status == 400 and "push payload" in body["error"]


async def test_oversized_body_gets_413(dead_store: Store) -> None:
    async with serve(dead_store, max_body=1024) as url:
        status, body = await post(url, b'{"pad": "' + b"x" * 2048 + b'"}')
    assert status == 413 and "larger than 1024 bytes" in body["error"]


async def test_ping_other_events_and_other_refs_need_no_redis(dead_store: Store) -> None:
    async with serve(dead_store) as url:
        ping = json.dumps({"zen": "Design for failure.", "hook_id": 7}).encode()
        assert await post(url, ping, event="ping") == (
            200,
            {"ok": True, "zen": "Design for failure."},
        )
        status, body = await post(url, b'{"action": "opened"}', event="pull_request")
        assert status == 202 and "only acts on push events" in body["reason"]
        for ref in ("refs/heads/feature", "refs/tags/v1.0", "refs/heads/main-old"):
            status, body = await post(url, json.dumps(push_payload(ref=ref)).encode())
            assert status == 202 and body["ignored"] is True and ref in body["reason"]
        deleted = push_payload(after="0" * 40, deleted=True)
        status, body = await post(url, json.dumps(deleted).encode())
        assert status == 202 and "deleted" in body["reason"]


async def test_push_with_redis_down_gets_503(dead_store: Store) -> None:
    async with serve(dead_store) as url:
        status, body = await post(url, json.dumps(push_payload()).encode())
    assert status == 503 and "polling will collect" in body["error"]


async def test_push_queues_one_collect_per_delivery(redis: Redis) -> None:
    keys = Keys("gh-test")
    store = Store(redis, keys)
    body = json.dumps(push_payload()).encode()
    delivery = str(uuid.uuid4())
    async with serve(store) as url:
        assert await post(url, body, delivery=delivery) == (200, {"ok": True, "queued": "collect"})
        assert await post(url, body, delivery=delivery) == (200, {"ok": True, "duplicate": True})
        # the same push as a form, under a fresh delivery id: the signed body is the same push
        form = urlencode({"payload": body.decode()}).encode()
        answer = await post(url, form, content_type="application/x-www-form-urlencoded")
        assert answer == (200, {"ok": True, "duplicate": True})
    assert await collect_jobs(redis, keys) == [
        {"kind": "collect", "reason": "push", "after": SHA, "at": "1000.000"}
    ]
    assert await redis.ttl(keys.dedupe("github", delivery)) > 3600


async def test_forged_request_records_nothing(redis: Redis) -> None:
    """A forged request with a real delivery id neither queues nor burns that id."""
    keys = Keys("gh-test")
    store = Store(redis, keys)
    body = json.dumps(push_payload()).encode()
    delivery = str(uuid.uuid4())
    async with serve(store) as url:
        forged = sign(b"guessed", body)
        assert (await post(url, body, delivery=delivery, signature=forged))[0] == 401
        assert await redis.exists(keys.dedupe("github", delivery)) == 0
        assert await collect_jobs(redis, keys) == []
        assert (await post(url, body, delivery=delivery))[1] == {"ok": True, "queued": "collect"}
