"""Junk is cheap: refused at the edge of `web` before it is parsed, in a line or none.

Unsigned bodies are refused before a byte of them is parsed; signed bodies whose fields
have the wrong type get a 400 naming the field (bolt and the handlers would have raised);
oversized bodies are refused before they are read in full. All over real HTTP.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from bot.runtime.web import MAX_NESTING
from tests.e2e.harness import CHANNEL, Team
from tests.e2e.test_hostile import FORM, dump, ready, slash_body

pytestmark = pytest.mark.http_only

JSON = "application/json"


def junk_bodies() -> list[tuple[bytes, str]]:
    """200 bodies that are not Slack's: broken JSON, broken forms, binary, bombs."""
    kinds: list[tuple[bytes, str]] = [
        (b"{", JSON),
        (b'{"type": "event_callback", "event": ', JSON),
        (b"[" * 100_000, JSON),
        (b"payload=%7B", FORM),
        (b"payload=" + b"%5B" * 50_000, FORM),
        (b"\xff\xfe\x00garbage", FORM),
        (b'{"n": ' + b"9" * 10_000 + b"}", JSON),
        (b"command=%2Frelease&user_id=" + b"%FF" * 10, FORM),
    ]
    return [kinds[i % len(kinds)] for i in range(200)]


async def test_two_hundred_unsigned_junk_bodies_cost_no_traceback(
    team: Team, caplog: pytest.LogCaptureFixture
) -> None:
    before = await ready(team)
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    statuses: dict[int, int] = {}
    for body, content_type in junk_bodies():
        headers = {"Content-Type": content_type, "X-Slack-Request-Timestamp": "1"}
        status, _ = await team.emu.send_raw(body, headers)
        statuses[status] = statuses.get(status, 0) + 1
    assert set(statuses) <= {400, 401}, statuses
    lines = [r for r in caplog.records if r.name.startswith(("bot", "handlers", "slack", "aio"))]
    assert not any(r.exc_info for r in lines), [r.getMessage() for r in lines if r.exc_info]
    assert "Traceback" not in caplog.text
    assert len(lines) < 20, [r.getMessage() for r in lines]
    assert await dump(team.stack.redis) == before


def nested(data: dict[str, Any], depth: int) -> str:
    """``data`` as JSON with ``depth`` nested lists under "extra" (too deep for json.dumps)."""
    head = json.dumps(data)[:-1]
    return f'{head}, "extra": {"[" * depth}{"]" * depth}}}'


def event(**fields: Any) -> dict[str, Any]:
    envelope: dict[str, Any] = {
        "type": "event_callback",
        "team_id": "T0001",
        "api_app_id": "A0APP",
        "event_id": "Ev0JUNK",
        "event": {
            "type": "reaction_added",
            "user": "U0ALICE",
            "reaction": "white_check_mark",
            "item": {"type": "message", "channel": CHANNEL, "ts": "1.000001"},
        },
    }
    return envelope | fields


def interaction(**fields: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "type": "block_actions",
        "team": {"id": "T0001"},
        "user": {"id": "U0ALICE", "team_id": "T0001"},
        "api_app_id": "A0APP",
        "container": {"type": "message", "channel_id": CHANNEL, "message_ts": "1.000001"},
        "channel": {"id": CHANNEL},
        "actions": [{"action_id": "shipmate_approve", "value": "sandbox-1"}],
    }
    return payload | fields


def as_json(data: Any) -> tuple[bytes, str]:
    return json.dumps(data).encode(), JSON


def as_payload(data: Any) -> tuple[bytes, str]:
    return b"payload=" + quote(json.dumps(data)).encode(), FORM


def view(**fields: Any) -> dict[str, Any]:
    base = {"type": "modal", "callback_id": "shipmate_block_reason", "private_metadata": "a|b|c"}
    return interaction(type="view_submission", view=base | fields)


#: signed requests with a field of the wrong type, and the field the 400 must name
WRONG_TYPES: dict[str, tuple[tuple[bytes, str], str]] = {
    "command user_id a list": (
        as_json({"command": "/lock", "user_id": ["U0ALICE"], "channel_id": CHANNEL}),
        "user_id",
    ),
    "command text an object": (as_json({"command": "/lock", "text": {"a": 1}}), "text"),
    "event a string": (as_json(event(event="reaction_added")), "event"),
    "event missing": (as_json({"type": "event_callback", "event_id": "Ev1"}), "event"),
    "event.item a string": (
        as_json(event(event={"type": "reaction_added", "item": "x"})),
        "event.item",
    ),
    "event.user a number": (
        as_json(event(event={"type": "reaction_added", "user": 7})),
        "event.user",
    ),
    "event.type missing": (as_json(event(event={"user": "U0ALICE"})), "event.type"),
    "event.item.channel a list": (
        as_json(event(event={"type": "reaction_added", "item": {"channel": [CHANNEL]}})),
        "event.item.channel",
    ),
    "event_id an object": (as_json(event(event_id={"x": 1})), "event_id"),
    "authorizations a number": (as_json(event(authorizations=3)), "authorizations"),
    "type a number": (as_json({"type": 5}), "type"),
    "payload not JSON": ((b"payload=%7Bnot-json", FORM), "payload"),
    "payload a list": (as_payload([interaction()]), "payload"),
    "payload.actions an object": (as_payload(interaction(actions={"a": 1})), "payload.actions"),
    "payload.actions empty": (as_payload(interaction(actions=[])), "payload.actions"),
    "payload.actions[0] a string": (as_payload(interaction(actions=["x"])), "payload.actions[0]"),
    "payload.container a string": (as_payload(interaction(container="C1")), "payload.container"),
    "payload.user a string": (as_payload(interaction(user="U0ALICE")), "payload.user"),
    "payload.channel a list": (as_payload(interaction(channel=[CHANNEL])), "payload.channel"),
    "payload.team a list": (as_payload(interaction(team=["T0001"])), "payload.team"),
    "payload.view a string": (
        as_payload(interaction(type="view_submission", view="v")),
        "payload.view",
    ),
    "payload.view.state.values.x a string": (
        as_payload(view(state={"values": {"x": "y"}})),
        "payload.view.state.values.x",
    ),
    "payload.view.private_metadata a number": (
        as_payload(view(private_metadata=5)),
        "payload.view.private_metadata",
    ),
    "deep nesting in the body": ((nested(event(), 5_000).encode(), JSON), "body"),
    "deep nesting in the payload": (
        (b"payload=" + quote(nested(interaction(), 5_000)).encode(), FORM),
        "payload",
    ),
    "a 10,000-digit number": (
        (b'{"type": "event_callback", "n": ' + b"9" * 10_000 + b"}", JSON),
        "body",
    ),
}


async def test_signed_payloads_with_wrong_field_types_get_a_400_naming_the_field(
    team: Team, caplog: pytest.LogCaptureFixture
) -> None:
    before = await ready(team)
    caplog.set_level(logging.DEBUG)
    wrong: dict[str, Any] = {}
    for name, ((body, content_type), field) in WRONG_TYPES.items():
        status, text = await team.emu.send_raw(body, team.emu.signed_headers(body, content_type))
        answer: Any = json.loads(text) if status == 400 else {"text": text}
        if status != 400 or answer.get("field") != field:
            wrong[name] = (status, answer)
    assert wrong == {}
    assert "Traceback" not in caplog.text and not any(r.exc_info for r in caplog.records)
    assert await dump(team.stack.redis) == before
    assert MAX_NESTING < 1_000, "well below where json.loads would raise RecursionError"


def web_url(team: Team) -> str:
    assert team.stack.web is not None
    return f"http://127.0.0.1:{team.stack.web.port}/slack/events"


async def two_megabytes() -> AsyncIterator[bytes]:
    for _ in range(32):
        yield b"x" * 65_536


async def test_a_two_megabyte_body_is_refused_before_it_is_read(team: Team) -> None:
    """Declared by Content-Length, or streamed in chunks without one: 413 either way."""
    body = slash_body("sandbox") + b"&pad=" + b"x" * (2 * 1024 * 1024)
    signed = team.emu.signed_headers(body, FORM)
    async with aiohttp.ClientSession() as session:
        async with session.post(web_url(team), data=io.BytesIO(body), headers=signed) as resp:
            assert resp.status == 413
            assert resp.request_info.headers["Content-Length"] == str(len(body))
        async with session.post(web_url(team), data=two_megabytes(), headers=signed) as resp:
            assert resp.status == 413
            assert "Content-Length" not in resp.request_info.headers
