"""What a script, a commit subject or a forged id may contain never becomes live mrkdwn."""

from __future__ import annotations

import re

import pytest

from bot.domain.render import FENCE, clip, code_block, defuse, escape, mention

HOSTILE = "<!channel> <https://evil.example|login> <@U0ALICE> &amp; ``` `x` ````"


def test_escape_leaves_no_control_character_and_no_fence() -> None:
    escaped = escape(HOSTILE)
    assert "<" not in escaped and ">" not in escaped
    assert FENCE not in escaped
    assert "&amp;amp;" in escaped and "`x`" in escaped  # inline code is still inline code


def test_a_code_block_cannot_be_closed_from_inside() -> None:
    block = code_block(f"{HOSTILE}\n```\n<!here>`")
    assert block.startswith(f"{FENCE}\n") and block.endswith(f"\n{FENCE}")
    assert block.count(FENCE) == 2
    assert "<" not in block[3:-3]


@pytest.mark.parametrize("limit", range(20, 60))
def test_a_cut_code_block_keeps_the_end_and_whole_entities(limit: int) -> None:
    block = code_block("start " + "&<>" * 20 + " end", limit)
    body = block.removeprefix(f"{FENCE}\n").removesuffix(f"\n{FENCE}")
    assert len(body) <= limit and body.startswith("…") and body.endswith(" end")
    # every & left starts a whole entity
    assert all(m in ("&amp;", "&lt;", "&gt;") for m in re.findall(r"&[a-z]*;?", body))


@pytest.mark.parametrize("limit", range(5, 40))
def test_clip_never_cuts_an_entity_or_a_mention_in_half(limit: int) -> None:
    text = "why: &amp; &lt;x&gt; <@U0ALICE> done"
    clipped = clip(text, limit)
    assert len(clipped) <= limit
    assert all(m in ("&amp;", "&lt;", "&gt;") for m in re.findall(r"&[a-z]*;?", clipped))
    assert clipped.count("<") == clipped.count(">")


def test_defuse_keeps_dates_and_disarms_broadcasts() -> None:
    date = "<!date^1700000000^{date_short}|2023-11-14>"
    text = defuse(f"<!channel> <!here> <!everyone> <!subteam^S1> {date}")
    assert "<!" not in text.replace(date, "")
    assert date in text


def test_mention_of_something_that_is_not_an_id_is_text() -> None:
    assert mention("U0ALICE") == "<@U0ALICE>"
    assert mention("<!channel>") == "&lt;!channel&gt;"
