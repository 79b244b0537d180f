"""Only our team, our app, our channels: correctly signed requests from elsewhere are
refused with a clear answer, and nothing is recorded.

The team is learned from auth.test when `web` starts (the config names none here); the
app and enterprise are checked when the config names them.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from tests.e2e.harness import ALICE, CHANNEL, Team
from tests.e2e.test_hostile import (
    FORM,
    _frozen,
    _reaction,
    dump,
    event_body,
    ready,
    settled,
    slash_body,
)

ELSEWHERE = "C0ELSEWHERE"


def lock_body(**replace: str) -> bytes:
    body = slash_body("sandbox", command="/lock").decode()
    for old, new in replace.items():
        body = body.replace(old, new)
    return body.encode()


FOREIGN_COMMANDS = {
    "another team": lock_body(team_id="team_id=T0OTHER&x"),
    "an enterprise": lock_body(is_enterprise_install="enterprise_id=E0OTHER&is_enterprise_install"),
    "another channel": lock_body(channel_id=f"channel_id={ELSEWHERE}&x"),
    "a DM": lock_body(channel_id="channel_id=D0ALICE&x"),
    "no user_id": lock_body(user_id="x"),
}


@pytest.mark.http_only
async def test_signed_commands_from_elsewhere_are_refused(team: Team) -> None:
    before = await ready(team)
    assert team.emu.calls_to("auth.test"), "the team was learned from auth.test"
    answers = {}
    for name, body in FOREIGN_COMMANDS.items():
        status, text = await team.emu.send_raw(body, team.emu.signed_headers(body, FORM))
        answers[name] = (status, json.loads(text))
    for name, (status, answer) in answers.items():
        assert status == 200, name
        assert answer["response_type"] == "ephemeral", name
        assert f"only works in <#{CHANNEL}>" in answer["text"], (name, answer)
    assert (await team.stack.store.env("sandbox")).lock is None
    assert await dump(team.stack.redis) == before
    # the same command from here is obeyed: the refusals were about where it came from
    ours = lock_body()
    assert (await team.emu.send_raw(ours, team.emu.signed_headers(ours, FORM)))[0] == 200
    assert (await team.stack.store.env("sandbox")).lock is not None


@pytest.mark.http_only
async def test_signed_events_from_elsewhere_are_ignored(team: Team) -> None:
    ts = await _frozen(team)
    before = await settled(team)
    reaction = _reaction("reaction_added", ALICE, ts)
    variants = {
        "another team": {"team_id": "T0OTHER"},
        "an enterprise": {"enterprise_id": "E0OTHER"},
        "a Slack Connect user": {"event": reaction | {"user_team": "T0OTHER"}},
        "another channel": {"event": reaction | {"item": reaction["item"] | {"channel": "D0X"}}},
    }
    for number, (name, fields) in enumerate(variants.items()):
        envelope = json.loads(event_body(team, reaction, f"Ev0FOREIGN{number}")) | fields
        body = json.dumps(envelope).encode()
        assert (await team.emu.send_raw(body, team.emu.signed_headers(body)))[0] == 200, name
    assert (await team.release_state("sandbox-1")).approvals == frozenset()
    assert await settled(team) == before


@pytest.mark.http_only
async def test_another_app_is_refused_when_the_config_names_ours(team: Team) -> None:
    slack = dataclasses.replace(team.config.slack, app_id=team.emu.identity.app_id)
    team.stack.config = dataclasses.replace(team.config, slack=slack)
    await team.stack.stop_web()
    await team.stack.start_web()
    before = await ready(team)
    body = lock_body(api_app_id="api_app_id=A0OTHER&x")
    status, text = await team.emu.send_raw(body, team.emu.signed_headers(body, FORM))
    assert status == 200 and "only works in" in json.loads(text)["text"]
    assert await dump(team.stack.redis) == before
    reply = await team.emu.slash_command(ALICE, CHANNEL, "/lock", "sandbox")
    assert "locked *sandbox*" in reply.text, reply


async def test_a_command_in_another_channel_is_refused_in_either_mode(team: Team) -> None:
    """Over HTTP the edge refuses it; over Socket Mode the same check runs inside bolt."""
    team.emu.add_channel(ELSEWHERE, name="random")
    reply = await team.emu.slash_command(ALICE, ELSEWHERE, "/lock", "sandbox")
    assert reply.response_type == "ephemeral" and f"only works in <#{CHANNEL}>" in reply.text
    assert (await team.stack.store.env("sandbox")).lock is None
