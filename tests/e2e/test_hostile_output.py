"""A deploy script that echoes hostile commit subjects: nothing it prints pings or links as the bot.

The whole loop on the shell backend (real web, worker, Redis, git, HTTP): a release goes live,
the next fails and rolls back on its own. Then every text the bot sent or the emulator keeps
(messages, thread lines, edits and their earlier versions, ephemerals, every Web API call's
text and blocks) is searched for a live ``<!channel>``, ``<!here>``, ``<!everyone>``, a link
or a user mention the bot did not mean.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from bot.domain.models import ReleaseState
from tests.conftest import free_port
from tests.e2e.harness import ALICE, BOB, CHANNEL, NAMES, Team, running_team

pytestmark = pytest.mark.http_only

#: what a hostile subject and the script print; the bot must show all of it as text
HOSTILE = (
    "<!channel> deploy now",
    "<!here|here> and <!everyone>",
    "<https://evil.example|login> to keep your session",
    "<@U0ALICE> approved this",
    "already escaped: &amp; &lt;!channel&gt;",
    "``` closing the code block early <!channel>",
    "`inline` and ```` four",
)

HOSTILE_PY = f'''\
"""Prints the commit's subject and hostile lines, then deploys; fails for a FAIL subject."""
import subprocess, sys
from pathlib import Path

sha, env = sys.argv[1], sys.argv[2]
here = Path(__file__).resolve().parent
subject = subprocess.run(
    ["git", "-C", str(here / "repo"), "log", "-1", "--format=%s", sha],
    capture_output=True, text=True,
).stdout.strip()
print("deploying " + subject, flush=True)
for line in {HOSTILE!r}:
    print(line, flush=True)
if "FAIL" in subject:
    print("failing: " + subject, file=sys.stderr, flush=True)
    sys.exit(3)
sys.exit(subprocess.run([sys.executable, str(here / "deploy.py"), sha, env]).returncode)
'''

EXTRA = """\
  hostile:
    approval: none
    backend:
      kind: shell
      deploy: ["{python}", "./hostile.py", "{{sha}}", "{{env}}"]
      timeout: 20s
      env: {{DEMO_PORT: "{port}"}}
    health: {{http: "http://127.0.0.1:{port}/healthz", timeout: 2s, interval: 100ms}}
"""

#: the only ``<…>`` forms the bot writes on purpose: a mention of a real member, a date,
#: and a pull request link built from the configured pr_url
_INTENDED = re.compile(
    r"@U0[A-Z]+|!date\^\d+\^[^|<>]*\|[^<>]*|https://github\.com/acme/shop/pull/\d+\|#\d+"
)
_TOKEN = re.compile(r"<([^<>]*)>")


@pytest.fixture
async def hostile_team(tmp_path: Path, redis: Redis) -> AsyncIterator[Team]:
    """The e2e team plus an environment whose deploy script echoes everything hostile."""
    port = free_port()
    (tmp_path / "hostile.py").write_text(HOSTILE_PY)
    extra = EXTRA.format(python=sys.executable, port=port)
    async with running_team(tmp_path, redis, extra=extra) as team:
        yield team


def _texts(value: Any) -> Iterator[str]:
    """Every string inside a message's text, blocks or a call's arguments."""
    if isinstance(value, str):
        if value[:1] in "[{":
            try:
                yield from _texts(json.loads(value))
                return
            except ValueError:
                pass
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)


def _everything_sent(team: Team) -> list[str]:
    emu = team.emu
    texts: list[str] = []
    for top in emu.messages(CHANNEL):
        for message in [top, *emu.thread(CHANNEL, top.ts)]:
            texts += _texts([message.text, message.blocks, message.attachments])
            for text, blocks in message.history:  # every earlier version of an edited message
                texts += _texts([text, blocks])
    for message in emu.workspace.all_ephemerals(CHANNEL):
        texts += _texts([message.text, message.blocks])
    for call in emu.calls:
        if call.method.startswith("chat."):
            texts += _texts([call.args.get(k) for k in ("text", "blocks", "attachments")])
    return texts


def _unintended(text: str) -> list[str]:
    live = [t for t in _TOKEN.findall(text) if not _INTENDED.fullmatch(t)]
    # inside a code block nothing is meant to be live, not even a real member's mention
    parts = text.split("```")
    in_code = [t for part in parts[1::2] for t in _TOKEN.findall(part)]
    if len(parts) % 2 == 0:
        live.append("an unbalanced ``` fence")
    return live + in_code


async def _release(team: Team, subject: str) -> str:
    team.commit(BOB, subject)
    await team.collect()
    batch = await team.batch_message(containing="deploy now", env="hostile")
    answer = await team.emu.slash_command(ALICE, CHANNEL, "/release", "hostile")
    assert "deploying now" in answer.text, answer.text
    return batch.ts


async def test_hostile_output_and_subjects_are_shown_never_obeyed(hostile_team: Team) -> None:
    team = hostile_team
    await team.collect()
    good_ts = await _release(team, "Ship <!channel> deploy now <https://evil.example|login> &amp;")
    await team.wait_text(good_ts, "is live on `hostile`")
    bad_ts = await _release(team, "FAIL <!here> deploy now <@U0ALICE> ``` `x`")

    def rolled_back() -> str | None:
        text = team.thread_text(bad_ts)
        return text if "Rolled back" in text else None

    await team.emu.wait_for(rolled_back, timeout=20, what="the automatic rollback to finish")
    release = await team.release_state("hostile-2")
    assert release.state is ReleaseState.ROLLED_BACK

    # what people read: every hostile line shown as plain text, in both threads
    for ts in (good_ts, bad_ts):
        thread = "\n".join(m.render(NAMES) for m in team.emu.thread(CHANNEL, ts))
        for line in HOSTILE[:5]:
            assert line in thread, (line, thread)
    assert "deploying FAIL <!here> deploy now <@U0ALICE>" in team.thread_text(bad_ts)
    # the rollback deployed the good sha again, so its output is in the failed one's thread
    assert "deploying Ship <!channel>" in team.thread_text(bad_ts)

    texts = _everything_sent(team)
    assert any("&lt;!channel&gt;" in t for t in texts), "the hostile output reached Slack"
    offending = {t: found for t in texts if (found := _unintended(t))}
    assert not offending, json.dumps(offending, indent=1)[:4000]
    print(
        f"\n[hostile output] {len(texts)} texts checked (messages, thread lines, edits, "
        f"ephemerals, {len(team.emu.calls)} API calls): 0 live pings, links or mentions"
    )
