"""Block Kit rendering of the release message and the approval request."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.domain.models import Person, Release, ReleaseState, Step, StepStatus
from bot.domain.render import (
    MAX_LISTED_COMMITS,
    Block,
    RenderOptions,
    commit_line,
    escape,
    render_approval_request,
    render_release,
)
from tests.domain.factories import (
    ALICE,
    BOB,
    DAVE_UNMAPPED,
    REQUESTER,
    STAND_IN,
    author,
    commit,
    person,
    release,
    rollback_release,
    sha,
)

S = ReleaseState
OPTIONS = RenderOptions(pr_url="https://github.com/acme/shop/pull/{number}")
MENTION = re.compile(r"<@([A-Z0-9]+)>")
ROOT = Path(__file__).resolve().parents[2]


def block_texts(blocks: list[Block]) -> list[str]:
    """Every mrkdwn text in the blocks: section texts and context elements."""
    texts: list[str] = []
    for block in blocks:
        if block["type"] == "section":
            texts.append(block["text"]["text"])
        elif block["type"] == "context":
            texts.extend(element["text"] for element in block["elements"])
    return texts


def all_text(r: Release, options: RenderOptions = OPTIONS) -> str:
    return "\n".join(block_texts(render_release(r, options).blocks))


def headline(r: Release) -> str:
    first = render_release(r, OPTIONS).blocks[0]
    assert first["type"] == "section"
    text: str = first["text"]["text"]
    return text


@pytest.mark.parametrize(
    ("state", "words"),
    [
        (S.COLLECTING, ["Next release to `prod`", "2 commits"]),
        (S.AWAITING_APPROVAL, ["Release prod-1 to `prod` is waiting for approval", "2 commits"]),
        (S.BLOCKED, ["Release prod-1 to `prod` is blocked", f"<@{BOB}>"]),
        (S.APPROVED, ["Release prod-1 to `prod` is approved", f"`{sha(2)[:7]}`"]),
        (S.DEPLOYING, ["Deploying release prod-1", "to `prod`"]),
        (S.VERIFYING, ["Checking the health of release prod-1", "`prod`"]),
        (S.LIVE, ["Release prod-1 is live on `prod`", f"`{sha(2)[:7]}`"]),
        (S.FAILED, ["Release prod-1 to `prod` failed"]),
        (S.ROLLING_BACK, ["Release prod-1 failed; rolling `prod` back to", f"`{sha(0)[:7]}`"]),
        (S.ROLLED_BACK, ["Release prod-1 was rolled back", f"`prod` runs `{sha(0)[:7]}` again"]),
        (S.CANCELLED, ["Release prod-1 to `prod` was cancelled"]),
        (S.SUPERSEDED, ["Release prod-1 to `prod` was superseded"]),
    ],
)
def test_headline_per_state(state: ReleaseState, words: list[str]) -> None:
    """Each state's headline says what is happening to which release and environment."""
    text = headline(release(state))
    for word in words:
        assert word in text


def test_headline_for_unhealthy_rollback() -> None:
    """A rollback that left nothing healthy says so in the headline."""
    text = headline(release(S.ROLLED_BACK, healthy_after_rollback=False))
    assert "rollback is unhealthy too" in text
    assert "nothing on `prod` is healthy" in text


def test_singular_commit_count() -> None:
    """One commit is counted as "1 commit", not "1 commits"."""
    assert "· 1 commit" in headline(release(S.COLLECTING, n_commits=1))
    assert "1 commits" not in headline(release(S.COLLECTING, n_commits=1))


@pytest.mark.parametrize(
    ("state", "words"),
    [
        (S.APPROVED, ["Rolling `prod` back to", "(release prod-1)", f"by <@{REQUESTER}>"]),
        (S.DEPLOYING, ["Rolling `prod` back to"]),
        (S.LIVE, ["Rolled `prod` back to", "(release prod-1)"]),
        (S.FAILED, ["Rollback of `prod`", "is unhealthy"]),
        (S.SUPERSEDED, ["Rollback of `prod`", "did not run"]),
    ],
)
def test_rollback_headline(state: ReleaseState, words: list[str]) -> None:
    """A rollback's headline names the target sha, its release and who asked."""
    text = headline(rollback_release(state))
    assert f"`{sha(1)[:7]}`" in text
    for word in words:
        assert word in text


def test_rollback_shows_no_approval_section() -> None:
    """A rollback needs no approvals, so none are listed."""
    assert "*Approvals:*" not in all_text(rollback_release(S.APPROVED))


def test_collecting_context_tells_what_to_type() -> None:
    """A collecting batch tells people the command that ships it."""
    assert "Type `/release prod` to ship them." in all_text(release(S.COLLECTING))
    assert "no new commits" in all_text(release(S.COLLECTING, n_commits=0))


def test_pr_link_from_template_replaces_title_suffix() -> None:
    """A squash title's "(#123)" becomes the PR link instead of appearing twice."""
    c = commit(1, "Fix checkout (#123)", pr=123)
    line = commit_line(c, OPTIONS)
    assert line == (
        f"`{sha(1)[:7]}` Fix checkout (<https://github.com/acme/shop/pull/123|#123>) — Alice"
    )
    assert line.count("#123") == 1


def test_pr_number_without_template() -> None:
    """Without a PR URL template the number is shown once, unlinked."""
    line = commit_line(commit(1, "Fix checkout (#123)", pr=123), RenderOptions())
    assert line.count("(#123)") == 1
    assert "<" not in line


def test_pr_from_merge_commit_is_appended() -> None:
    """A merge commit's PR number (not in its title) is linked after the title."""
    line = commit_line(commit(1, "Add wishlist", pr=7), OPTIONS)
    assert "Add wishlist (<https://github.com/acme/shop/pull/7|#7>)" in line


def test_commit_line_names_everyone_involved() -> None:
    """Author, merged authors and co-authors are named once each, escaped."""
    c = commit(
        1,
        "Pair work",
        by=author("Alice"),
        co_authors=(author("Bob <b>"), author("Alice")),
        merged_authors=(author("Carol & Co"),),
    )
    assert commit_line(c, OPTIONS).endswith("— Alice, Carol &amp; Co, Bob &lt;b&gt;")


def test_titles_are_mrkdwn_escaped() -> None:
    """&, < and > in titles and names are escaped so they cannot form links or mentions."""
    evil = "Use <!channel> & <https://evil.example|click> > x"
    c = commit(1, evil, by=author("<@U123>"))
    r = release(S.AWAITING_APPROVAL, commits=(c,), n_commits=0, head_sha=c.sha)
    text = all_text(r)
    assert "<!channel>" not in text
    assert "<https://evil.example" not in text
    assert "<@U123>" not in text
    assert escape(evil) in text
    assert "&amp;lt;" not in text  # escaped once, not twice


@pytest.mark.parametrize(
    ("raw", "escaped"), [("a & b", "a &amp; b"), ("<x>", "&lt;x&gt;"), ("&lt;", "&amp;lt;")]
)
def test_escape(raw: str, escaped: str) -> None:
    """escape() replaces exactly the three mrkdwn control characters."""
    assert escape(raw) == escaped


def many_commits(n: int, title_len: int = 400) -> tuple[Any, ...]:
    return tuple(
        commit(i, ("Refactor the payment & <checkout> flow " * 20)[:title_len] + f" (#{i})", pr=i)
        for i in range(1, n + 1)
    )


def assert_within_limits(blocks: list[Block]) -> None:
    assert len(blocks) <= 50
    for text in block_texts(blocks):
        assert len(text) <= 3000


@pytest.mark.parametrize("state", list(S))
def test_500_commits_with_long_titles_fit_slack_limits(state: ReleaseState) -> None:
    """500 commits with long titles render in at most 50 blocks of at most 3000 characters."""
    commits = many_commits(500)
    r = release(state, commits=commits, n_commits=0, head_sha=commits[-1].sha)
    blocks = render_release(r, OPTIONS).blocks
    assert_within_limits(blocks)
    text = "\n".join(block_texts(blocks))
    assert f"_… and {500 - MAX_LISTED_COMMITS} earlier commits_" in text
    assert f"#{500}" in text


def test_single_huge_title_is_truncated() -> None:
    """A single 20 000-character title is cut to fit one section."""
    c = commit(1, "x" * 20_000)
    r = release(S.COLLECTING, commits=(c,), n_commits=0, head_sha=c.sha)
    assert_within_limits(render_release(r, OPTIONS).blocks)


@settings(max_examples=60, deadline=None)
@given(
    titles=st.lists(st.text(min_size=0, max_size=3500), min_size=1, max_size=120),
    state=st.sampled_from(list(S)),
)
def test_any_titles_fit_slack_limits(titles: list[str], state: ReleaseState) -> None:
    """Random titles of any length and count stay within Slack's block limits."""
    commits = tuple(commit(i + 1, t, pr=i + 1 if i % 2 else None) for i, t in enumerate(titles))
    r = release(state, commits=commits, n_commits=0, head_sha=commits[-1].sha)
    assert_within_limits(render_release(r, OPTIONS).blocks)


def people_for(n: int, mapped: bool) -> tuple[Person, ...]:
    return tuple(person(f"U{i:09d}" if mapped else None, f"Author Number {i}") for i in range(n))


@pytest.mark.parametrize("mapped", [True, False], ids=["slack-users", "unmapped"])
def test_500_commits_by_many_authors_fit_slack_limits(mapped: bool) -> None:
    """500 commits by 100 different authors still render sections of at most 3000 characters."""
    people = people_for(100, mapped)
    commits = many_commits(500)
    r = release(
        S.AWAITING_APPROVAL, people=people, commits=commits, n_commits=0, head_sha=commits[-1].sha
    )
    assert_within_limits(render_release(r, OPTIONS).blocks)


@pytest.mark.parametrize("where", ["reason", "step"])
def test_long_backend_output_fits_slack_limits(where: str) -> None:
    """A 4000-character failure line from the backend is cut to fit its block."""
    long = "E" * 4000
    r = (
        release(S.FAILED, reason=long)
        if where == "reason"
        else release(S.DEPLOYING, steps=(Step("deploy", StepStatus.FAILED, long),))
    )
    assert_within_limits(render_release(r, OPTIONS).blocks)


def test_many_steps_with_long_details_fit_slack_limits() -> None:
    """A deploy plus its rollback with a dozen 300-character step details stays within limits."""
    steps = tuple(
        Step(f"{prefix}{name}", StepStatus.OK, "sha256:" + "ab" * 150)
        for prefix in ("", "rollback: ")
        for name in ("pull", "create", "stop old", "start", "health", "cleanup")
    )
    assert_within_limits(render_release(release(S.ROLLED_BACK, steps=steps), OPTIONS).blocks)


def test_only_unmapped_authors_do_not_read_none_needed() -> None:
    """A release waiting for a stand-in does not claim that no approvals are needed."""
    r = release(S.AWAITING_APPROVAL, people=(DAVE_UNMAPPED,))
    text = all_text(r)
    assert "can approve for them" in text
    assert "none needed" not in text


def test_unmapped_authors_named_with_their_stand_in() -> None:
    """Authors without Slack are named with e-mail and the requester who can approve for them."""
    r = release(S.AWAITING_APPROVAL, people=(person(ALICE, "Alice"), DAVE_UNMAPPED))
    text = all_text(r)
    assert (
        f"Dave (dave@example.com) has no Slack user; <@{REQUESTER}> can approve for them." in text
    )


def test_unmapped_authors_named_with_configured_stand_ins() -> None:
    """Configured stand-ins are the ones named, in sorted order, joined by "or"."""
    r = release(
        S.AWAITING_APPROVAL,
        people=(DAVE_UNMAPPED, person(None, "Eve & <Co>")),
        stand_ins=(STAND_IN, BOB),
    )
    text = all_text(r)
    assert "Eve &amp; &lt;Co&gt; (eve &amp; &lt;co&gt;@example.com)" in text
    assert f"have no Slack user; <@{BOB}> or <@{STAND_IN}> can approve for them." in text


def test_stand_in_note_disappears_once_given() -> None:
    """After a stand-in approved, the message lists them instead of asking again."""
    r = release(
        S.AWAITING_APPROVAL,
        people=(person(ALICE, "Alice"), DAVE_UNMAPPED),
        approvals=frozenset({REQUESTER}),
    )
    text = all_text(r)
    assert "has no Slack user" not in text
    assert f":white_check_mark: <@{REQUESTER}> (for authors without Slack)" in text


def test_approval_marks() -> None:
    """Each involved user shows approved, blocked or waiting."""
    r = release(
        S.BLOCKED,
        people=(person(ALICE, "Alice"), person(BOB, "Bob"), person("UCAROL", "Carol")),
        approvals=frozenset({ALICE}),
        blocks=frozenset({BOB}),
    )
    text = all_text(r)
    assert f":white_check_mark: <@{ALICE}>" in text
    assert f":no_entry: <@{BOB}>" in text
    assert ":hourglass_flowing_sand: <@UCAROL>" in text
    assert "remove your reaction to take it back" in text


def test_outcome_shows_reason() -> None:
    """A cancelled release says who cancelled it under "Why:"."""
    r = release(S.CANCELLED, reason=f"cancelled by <@{BOB}>")
    assert f"*Why:* cancelled by <@{BOB}>" in all_text(r)


def test_steps_are_listed() -> None:
    """Deploy steps appear with their marks and escaped details."""
    r = release(
        S.DEPLOYING,
        steps=(Step("pull", StepStatus.OK, "a & b"), Step("start", StepStatus.RUNNING)),
    )
    text = all_text(r)
    assert ":white_check_mark: pull — a &amp; b" in text
    assert ":hourglass_flowing_sand: start" in text


@pytest.mark.parametrize(
    ("r", "expected"),
    [
        (release(S.COLLECTING), "Next release to prod: 2 commits"),
        (
            release(S.AWAITING_APPROVAL, n_commits=1),
            "Release prod-1 to prod: awaiting approval (1 commit)",
        ),
        (release(S.LIVE), "Release prod-1 to prod: live (2 commits)"),
        (rollback_release(S.APPROVED), "Rollback prod-9 to prod: approved (0 commits)"),
    ],
)
def test_fallback_text(r: Release, expected: str) -> None:
    """The notification fallback text says what the message is about."""
    assert render_release(r, OPTIONS).text == expected


@pytest.mark.parametrize("state", list(S))
def test_rendering_is_deterministic(state: ReleaseState) -> None:
    """Rendering the same release twice gives equal output."""
    r = release(
        state,
        people=(person(ALICE, "Alice"), person(BOB, "Bob"), DAVE_UNMAPPED),
        approvals=frozenset({ALICE, REQUESTER, "UZED"}),
        blocks=frozenset({BOB, "UYAN"}) if state is S.BLOCKED else frozenset(),
        stand_ins=(STAND_IN, REQUESTER),
    )
    assert render_release(r, OPTIONS) == render_release(replace(r), OPTIONS)


_SUBPROCESS = """
import json
from bot.domain.render import RenderOptions, render_release
from tests.domain.factories import person, release, DAVE_UNMAPPED
from bot.domain.models import ReleaseState
users = frozenset(f"U{i}" for i in range(30))
r = release(ReleaseState.BLOCKED, people=tuple(person(u, u) for u in sorted(users)) + (DAVE_UNMAPPED,),
            approvals=users, blocks=users, stand_ins=tuple(sorted(users, reverse=True)))
out = render_release(r, RenderOptions())
print(json.dumps([out.text, out.blocks]))
"""


def test_rendering_is_independent_of_hash_seed() -> None:
    """Two processes with different hash seeds render the same sets identically."""
    outputs = []
    for seed in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-c", _SUBPROCESS],
            cwd=ROOT,
            env={"PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        outputs.append(json.loads(done.stdout))
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize(
    ("people", "given"),
    [
        ((person(ALICE, "Alice"), person(BOB, "Bob")), frozenset[str]()),
        ((person(ALICE, "Alice"), person(BOB, "Bob")), frozenset({ALICE})),
        ((person(ALICE, "Alice"), person(ALICE, "Alice", "a@work.example.com")), frozenset[str]()),
    ],
)
def test_approval_request_mentions_exactly_the_awaited(
    people: tuple[Person, ...], given: frozenset[str]
) -> None:
    """The approval request mentions every awaited user once and nobody else."""
    r = release(S.AWAITING_APPROVAL, people=people, approvals=given)
    text = render_approval_request(r, OPTIONS)
    awaited = [p.slack_user for p in people if p.slack_user and p.slack_user not in given]
    mentioned = MENTION.findall(text)
    assert sorted(mentioned) == sorted(set(awaited))
    assert "release prod-1 to *prod*" in text
    assert ":white_check_mark:" in text and ":no_entry:" in text


def test_approval_request_asks_stand_in_for_unmapped() -> None:
    """With unmapped authors the request also names the stand-in who can approve for them."""
    r = release(S.AWAITING_APPROVAL, people=(person(ALICE, "Alice"), DAVE_UNMAPPED))
    text = render_approval_request(r, OPTIONS)
    assert set(MENTION.findall(text)) == {ALICE, REQUESTER}
    assert "Dave (dave@example.com) has no Slack user" in text


def test_approval_request_with_nobody_awaited() -> None:
    """When only unmapped authors are involved, nobody is mentioned as awaited."""
    r = release(S.AWAITING_APPROVAL, people=(DAVE_UNMAPPED,), stand_ins=(STAND_IN,))
    text = render_approval_request(r, OPTIONS)
    assert text.startswith("Nobody: please review")
    assert set(MENTION.findall(text)) == {STAND_IN}
