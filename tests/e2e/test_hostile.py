"""Hostile input over real HTTP into shipmate's web: refused or answered clearly, nothing recorded.

Every request here goes through the emulator's HTTP client into the real aiohttp server and
bolt. "Nothing recorded" is checked on the whole Redis keyspace, not on a few keys.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import pytest
from redis.asyncio import Redis
from slack_sdk.signature import Clock, SignatureVerifier

from bot.adapters.keys import JOBS_GROUP
from bot.local.slackemu import payloads
from bot.local.slackemu.signing import signature
from bot.runtime.web import verify_slack_signature
from tests.e2e.harness import ALICE, BOB, CHANNEL, Team, rendered

#: every request here is an HTTP delivery to POST /slack/events (Socket Mode has no signatures)
pytestmark = pytest.mark.http_only

FORM = "application/x-www-form-urlencoded"

# https://docs.slack.dev/authentication/verifying-requests-from-slack/ (the worked example)
VECTOR_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
VECTOR_TS = "1531420618"
VECTOR_BODY = (
    "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow"
    "&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner"
    "&command=%2Fwebhook-collect&text="
    "&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    "&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
VECTOR_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


class FixedClock(Clock):
    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


def summary(line: str) -> None:
    print(f"\n[hostile] {line}")


# -- helpers --------------------------------------------------------------------------------


async def until(check: Callable[[], Awaitable[bool]], *, within: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() >= deadline:
            raise TimeoutError(f"not within {within}s: {what}")
        await asyncio.sleep(0.02)


#: the signatures `web` has seen (its replay guard): bookkeeping of the edge, not state
REPLAY_MARKS = ":seen:slack-request:"


async def dump(redis: Redis) -> dict[str, Any]:
    """Every key with its value (streams: length and last id), to compare whole keyspaces;
    replay marks are left out (a request that was answered leaves one, by design)."""
    out: dict[str, Any] = {}
    async for key in redis.scan_iter("*"):
        if REPLAY_MARKS in key:
            continue
        kind = await redis.type(key)
        if kind == "string":
            out[key] = await redis.get(key)
        elif kind == "stream":
            info: Any = await redis.xinfo_stream(key)
            out[key] = (info["length"], info["last-generated-id"])
        else:
            out[key] = kind
    return out


async def settled(team: Team) -> dict[str, Any]:
    """Wait until the worker has taken and finished every job, then dump the keyspace."""
    redis, jobs = team.stack.redis, team.stack.store.keys.jobs

    async def idle() -> bool:
        info: Any = await redis.xinfo_stream(jobs)
        groups: Any = await redis.xinfo_groups(jobs)
        group = next(g for g in groups if g["name"] == JOBS_GROUP)
        return bool(
            group["pending"] == 0 and group["last-delivered-id"] == info["last-generated-id"]
        )

    await until(idle, within=15, what="the worker to finish its jobs")
    return await dump(redis)


async def ready(team: Team) -> dict[str, Any]:
    """A collected batch on sandbox, every job done: the keyspace hostile input must not touch."""
    team.commit(BOB, "Fix rounding")
    await team.collect()
    await team.batch_message(containing="Fix rounding")
    return await settled(team)


def slash_body(text_field: str, *, command: str = "/release", user: str = ALICE) -> bytes:
    """A slash-command form body; ``text_field`` is put in as given (already percent-encoded)."""
    head = urlencode(
        {
            "token": payloads.VERIFICATION_TOKEN,
            "team_id": "T0001",
            "team_domain": "shipmate-dev",
            "channel_id": CHANNEL,
            "channel_name": "releases",
            "user_id": user,
            "user_name": "alice",
            "command": command,
        }
    )
    tail = urlencode(
        {
            "api_app_id": "A0APP",
            "is_enterprise_install": "false",
            "response_url": "http://127.0.0.1:9/commands/T0001/1/none",
            "trigger_id": "1.2.3",
        }
    )
    return f"{head}&text={text_field}&{tail}".encode()


def release_body() -> bytes:
    return slash_body("sandbox")


async def status_of(team: Team, body: bytes, headers: dict[str, str]) -> int:
    status, _ = await team.emu.send_raw(body, headers)
    return status


def event_body(team: Team, event: dict[str, Any], event_id: str) -> bytes:
    return json.dumps(payloads.event_envelope(team.emu.identity, event, event_id)).encode()


# -- signing ------------------------------------------------------------------------------


def test_slacks_own_signing_example_verifies_with_a_fixed_clock() -> None:
    """Slack's documented example passes slack_sdk's verifier, the emulator's signer and shipmate's
    own check, at the example's time; one changed byte or 301 s later it fails."""
    body = VECTOR_BODY.encode()
    verifier = SignatureVerifier(VECTOR_SECRET, clock=FixedClock(float(VECTOR_TS)))
    assert verifier.generate_signature(timestamp=VECTOR_TS, body=VECTOR_BODY) == VECTOR_SIGNATURE
    assert verifier.is_valid(VECTOR_BODY, VECTOR_TS, VECTOR_SIGNATURE)
    assert signature(VECTOR_SECRET, VECTOR_TS, body) == VECTOR_SIGNATURE
    at = float(VECTOR_TS)

    def shipmate(body: bytes, *, now: float, secret: str = VECTOR_SECRET) -> bool:
        return verify_slack_signature(body, VECTOR_TS, VECTOR_SIGNATURE, secret, now=now)

    assert shipmate(body, now=at)
    assert shipmate(body, now=at + 300) and shipmate(body, now=at - 300)

    tampered = body.replace(b"text=", b"text=x")
    late = SignatureVerifier(VECTOR_SECRET, clock=FixedClock(at + 301))
    assert not verifier.is_valid(tampered.decode(), VECTOR_TS, VECTOR_SIGNATURE)
    assert not late.is_valid(VECTOR_BODY, VECTOR_TS, VECTOR_SIGNATURE)
    assert not shipmate(tampered, now=at)
    assert not shipmate(body, now=at + 301) and not shipmate(body, now=at - 301)
    assert not shipmate(body, now=at, secret="another-secret")
    assert not shipmate(body, now=at, secret="")
    summary("Slack's signing example: slack_sdk, emulator and shipmate agree; 7 variants refused")


async def test_forged_signature_is_refused(team: Team) -> None:
    """Signed with the wrong secret, or with a made-up or malformed signature: 401, nothing recorded."""
    before = await ready(team)
    body = release_body()
    good = team.emu.signed_headers(body, FORM)
    variants = {
        "wrong secret": team.emu.signed_headers(body, FORM, secret="not-the-secret"),
        "zeros": {**good, "X-Slack-Signature": "v0=" + "0" * 64},
        "v1 scheme": {**good, "X-Slack-Signature": good["X-Slack-Signature"].replace("v0=", "v1=")},
        "upper-case hex": {**good, "X-Slack-Signature": good["X-Slack-Signature"].upper()},
        "truncated": {**good, "X-Slack-Signature": good["X-Slack-Signature"][:-2]},
        "non-ASCII": {**good, "X-Slack-Signature": "v0=" + "é" * 64},
        "empty": {**good, "X-Slack-Signature": ""},
    }
    statuses = {name: await status_of(team, body, h) for name, h in variants.items()}
    assert statuses == dict.fromkeys(variants, 401), statuses
    assert await dump(team.stack.redis) == before
    assert team.emu.ephemerals(ALICE) == []
    summary(f"forged signatures: {len(variants)} variants -> 401, 0 keys changed")


async def test_tampered_body_is_refused(team: Team) -> None:
    """A valid signature of another body (the signed one is harmless, the sent one is not): 401."""
    before = await ready(team)
    harmless = slash_body("help")
    signed = team.emu.signed_headers(harmless, FORM)
    bodies = [
        release_body(),
        harmless + b" ",
        harmless.replace(b"user_id=U0ALICE", b"user_id=U0BOB"),
        json.dumps({"type": "event_callback", "event_id": "Ev0TAMPER"}).encode(),
    ]
    statuses = [await status_of(team, body, signed) for body in bodies]
    assert statuses == [401] * len(bodies)
    # the signed body itself is fine: the check is on the bytes, not on the headers alone
    assert await status_of(team, harmless, signed) == 200
    assert await dump(team.stack.redis) == before
    summary(f"tampered bodies: {len(bodies)} -> 401, the signed original -> 200, 0 keys changed")


async def test_stale_and_future_timestamps_are_refused(team: Team) -> None:
    """More than 300 s old or ahead: 401; a request 290 s either way is still accepted."""
    before = await ready(team)
    body = slash_body("help")
    now = int(time.time())
    refused = [now - 301, now + 301, now - 86_400, now + 86_400, 0]
    statuses = [
        await status_of(team, body, team.emu.signed_headers(body, FORM, timestamp=ts))
        for ts in refused
    ]
    assert statuses == [401] * len(refused)
    accepted = [now - 290, now + 290]
    for ts in accepted:
        assert await status_of(team, body, team.emu.signed_headers(body, FORM, timestamp=ts)) == 200
    assert await dump(team.stack.redis) == before
    summary(
        f"timestamps: {len(refused)} outside +/-300 s -> 401, {len(accepted)} within -> 200, "
        "0 keys changed"
    )


async def test_missing_headers_and_malformed_timestamps_are_refused(team: Team) -> None:
    """No signature, no timestamp, neither, or a timestamp that is not an integer: 401, never 500."""
    before = await ready(team)
    body = release_body()
    good = team.emu.signed_headers(body, FORM)
    ts, sig = good["X-Slack-Request-Timestamp"], good["X-Slack-Signature"]
    without_sig = {k: v for k, v in good.items() if k != "X-Slack-Signature"}
    without_ts = {k: v for k, v in good.items() if k != "X-Slack-Request-Timestamp"}
    neither = {"Content-Type": FORM}
    cases: dict[str, dict[str, str]] = {
        "no signature": without_sig,
        "no timestamp": without_ts,
        "neither": neither,
    }

    def resigned(stamp: str) -> dict[str, str]:
        # signed correctly over the odd timestamp, so only its format can be the reason
        return {
            **good,
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": signature(team.emu.signing_secret, stamp, body),
        }

    for stamp in (f"{ts}.5", f"{ts}abc", "abc", "", " ", f" {ts}", f"+{ts}", "1_7" + ts[3:], "1e9"):
        cases[f"timestamp {stamp!r}"] = resigned(stamp)
    cases["signature of another timestamp"] = {
        **good,
        "X-Slack-Request-Timestamp": str(int(ts) - 1),
    }
    assert sig.startswith("v0=")
    statuses = {name: await status_of(team, body, h) for name, h in cases.items()}
    assert statuses == dict.fromkeys(cases, 401), statuses
    assert await dump(team.stack.redis) == before
    summary(f"missing/malformed headers: {len(cases)} cases -> 401 (no 500), 0 keys changed")


async def test_invalid_utf8_in_the_body_is_refused_without_a_crash(team: Team) -> None:
    """Raw bytes that are not UTF-8 (Slack percent-encodes, so this is never Slack): unsigned
    401, signed 400 naming the body, never 500."""
    before = await ready(team)
    body = release_body().replace(b"text=sandbox", b"text=\xff\xfesandbox\xc3")
    forged = {"Content-Type": FORM, "X-Slack-Request-Timestamp": "1", "X-Slack-Signature": "v0=0"}
    signed = team.emu.signed_headers(body, FORM)
    assert await status_of(team, body, forged) == 401
    status, answer = await team.emu.send_raw(body, signed)
    assert status == 400 and json.loads(answer)["field"] == "body", answer
    assert await dump(team.stack.redis) == before
    summary("raw invalid UTF-8 body: unsigned -> 401, signed -> 400 (no 500), 0 keys changed")


# -- odd text in well-signed slash commands ----------------------------------------------


async def _answer(team: Team, body: bytes) -> tuple[int, str]:
    started = time.monotonic()
    status, text = await team.emu.send_raw(body, team.emu.signed_headers(body, FORM))
    assert time.monotonic() - started < 3.0
    return status, text


async def test_invalid_utf8_text_gets_a_clear_answer(team: Team) -> None:
    """Percent-encoded bytes that are not UTF-8 in the text: the usage answer, nothing recorded."""
    before = await ready(team)
    texts = ["%FF%FEsandbox", "sandbox%C3%28", "%ED%A0%80", "%C0%AF", "%F8%88%80%80%80", "%00"]
    for text in texts:
        status, answer = await _answer(team, slash_body(text))
        assert status == 200, (text, status, answer)
        assert "Usage: `/release <environment>`" in answer, (text, answer)
        assert "Traceback" not in answer
    assert await dump(team.stack.redis) == before
    summary(f"invalid UTF-8 text: {len(texts)} commands answered with usage, 0 keys changed")


async def test_ten_kilobyte_text_gets_a_clear_answer(team: Team) -> None:
    """10 KB of text (ASCII, multi-byte, an environment name buried in it): a short clear answer."""
    before = await ready(team)
    texts = [
        "x" * 10_240,
        "sandbox " * 1_280,
        "é" * 5_120,  # 10 KB as UTF-8
        "sandbox " + "y" * 10_232,
    ]
    for text in texts:
        encoded = urlencode({"text": text})[len("text=") :]
        status, answer = await _answer(team, slash_body(encoded))
        assert status == 200, status
        assert "Usage: `/release <environment>`" in answer or "Which environment?" in answer
        assert len(answer) < 2_000, "the answer does not echo the text back"
    assert await dump(team.stack.redis) == before
    summary(f"10 KB text: {len(texts)} commands answered clearly (< 2 KB each), 0 keys changed")


async def test_text_containing_payload_gets_a_clear_answer(team: Team) -> None:
    """bolt parses any form body containing "payload" as an interaction; a command must not vanish."""
    before = await ready(team)
    for text in ("payload", "payload=1", "sandbox payload"):
        encoded = urlencode({"text": text})[len("text=") :]
        status, answer = await _answer(team, slash_body(encoded))
        assert status == 200, (text, status, answer)
        assert "Usage" in answer or "environment" in answer, (text, answer)
    assert await dump(team.stack.redis) == before
    lock = await team.emu.slash_command(ALICE, CHANNEL, "/lock", "sandbox payload freeze")
    assert lock.error is None and "locked *sandbox*" in lock.text, lock
    env = await team.stack.store.env("sandbox")
    assert env.lock is not None and env.lock.reason == "payload freeze"
    summary("text containing 'payload': 3 refusals answered, /lock with it in the reason applied")


# -- redelivered events -------------------------------------------------------------------


async def _frozen(team: Team) -> str:
    team.commit(ALICE, "Add cart page")
    team.commit(BOB, "Fix rounding")
    await team.collect()
    batch = await team.batch_message(containing="Fix rounding")
    await team.emu.slash_command(ALICE, CHANNEL, "/release", "sandbox")
    await team.wait_text(batch.ts, "waiting for approval")
    return batch.ts


def _reaction(kind: str, user: str, ts: str) -> dict[str, Any]:
    return {
        "type": kind,
        "user": user,
        "reaction": "white_check_mark",
        "item": {"type": "message", "channel": CHANNEL, "ts": ts},
        "event_ts": f"{time.time():.6f}",
    }


async def _deliver(team: Team, body: bytes, retry: int = 0) -> int:
    headers = team.emu.signed_headers(body)
    if retry:
        headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
    return await status_of(team, body, headers)


async def test_redelivered_reaction_removed_has_one_effect(team: Team) -> None:
    """An approval taken back, then Slack retrying the add and the removal: still taken back."""
    ts = await _frozen(team)
    added = event_body(team, _reaction("reaction_added", ALICE, ts), "Ev0ADDED")
    removed = event_body(team, _reaction("reaction_removed", ALICE, ts), "Ev0REMOVED")
    assert await _deliver(team, added) == 200
    assert (await team.release_state("sandbox-1")).approvals == {ALICE}
    assert await _deliver(team, removed) == 200
    after_remove = await team.release_state("sandbox-1")
    assert after_remove.approvals == frozenset()
    await team.wait_text(ts, ":hourglass_flowing_sand: @alice")
    before = await settled(team)

    statuses = []
    for retry in (1, 2, 3):
        # the older add first: replaying it would approve again behind the person's back
        statuses.append(await _deliver(team, added, retry))
        statuses.append(await _deliver(team, removed, retry))
    assert statuses == [200] * 6
    again = await team.release_state("sandbox-1")
    assert again.approvals == frozenset() and again.version == after_remove.version
    assert await settled(team) == before, "no job, no write, no new dedupe mark"
    message = team.emu.message(CHANNEL, ts)
    assert message is not None and ":hourglass_flowing_sand: @alice" in rendered(message)
    summary("redelivered reaction_added/removed: 6 retries -> 200, 0 effects, 0 keys changed")


async def test_redelivered_approval_that_completes_a_release_deploys_once(team: Team) -> None:
    """The last approval delivered three more times: one deploy, one "live", one version."""
    ts = await _frozen(team)
    assert (
        await _deliver(team, event_body(team, _reaction("reaction_added", ALICE, ts), "Ev0A"))
        == 200
    )
    last = event_body(team, _reaction("reaction_added", BOB, ts), "Ev0B")
    assert await _deliver(team, last) == 200
    await team.wait_text(ts, "Release sandbox-1 is live")
    for retry in (1, 2, 3):
        assert await _deliver(team, last, retry) == 200
    await settled(team)
    release = await team.release_state("sandbox-1")
    assert release.state.value == "live"
    env = await team.stack.store.env("sandbox")
    assert [h.release_id for h in env.history] == ["sandbox-1"]
    starts = team.thread_text(ts).count("Deploying `")
    assert starts == 1, team.thread_text(ts)
    summary("redelivered last approval: 3 retries -> 1 deploy, 1 history entry")
