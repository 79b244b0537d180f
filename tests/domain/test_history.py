"""/history rendering: what each release says, newest first, escaped, within Slack's limits."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.domain.history import (
    MAX_RELEASES,
    SECTION_LIMIT,
    TEXT_LIMIT,
    format_span,
    recent,
    render_history,
)
from bot.domain.models import EnvLock, Person, Release, ReleaseState
from bot.domain.render import Rendered, RenderOptions
from tests.domain.factories import (
    ALICE,
    BOB,
    CAROL,
    ENV,
    REQUESTER,
    commit,
    env_state,
    person,
    release,
    rollback_release,
    sha,
)

S = ReleaseState
T0 = 1_700_000_000.0
OPTIONS = RenderOptions(pr_url="https://github.com/acme/shop/pull/{number}")


def texts(rendered: Rendered) -> list[str]:
    out: list[str] = []
    for block in rendered.blocks:
        if block["type"] == "section":
            out.append(block["text"]["text"])
        elif block["type"] == "context":
            out.extend(e["text"] for e in block["elements"])
    return out


def section_for(rendered: Rendered, release_id: str) -> str:
    return next(t for t in texts(rendered) if f"*{release_id}*" in t)


def live_release(**overrides: Any) -> Release:
    return release(
        S.LIVE,
        deploy_started_at=T0 + 250,
        finished_at=T0 + 262,
        **overrides,
    )


def test_empty_history_says_how_to_start() -> None:
    """No release yet: say so, and what to type."""
    rendered = render_history(env_state(), [], OPTIONS)
    assert texts(rendered)[0].startswith(":scroll: *No releases to `prod` yet.*")
    assert "`/release prod`" in texts(rendered)[0]
    assert rendered.text == "No releases to prod yet."


def test_a_live_release_shows_people_range_and_durations() -> None:
    """Id, outcome, sha range, commit count, requester, approvers, approval wait, deploy time."""
    shipped = live_release(base_sha="a" * 40, head_sha="b" * 40)
    rendered = render_history(env_state(("prod-1", "b" * 40)), [shipped], OPTIONS)
    text = section_for(rendered, "prod-1")
    first, people, timing, *titles = text.split("\n")
    assert first.startswith(
        ":rocket: *prod-1* · *live* · `aaaaaaa`…`bbbbbbb` · 2 commits · <!date^"
    )
    assert people == f"Requested by <@{REQUESTER}> · approved by <@{ALICE}>, <@{BOB}> after 1m40s"
    assert timing == "Deployed and healthy in 12s"
    assert titles == [
        "• `0000000` Change number 2 — Alice",
        "• `0000000` Change number 1 — Alice",
    ]
    assert "Runs `bbbbbbb` (release prod-1)" in texts(rendered)[1]


def test_newest_first_by_number_without_the_collecting_batch() -> None:
    """prod-10 comes before prod-9 (numbers, not strings); the batch is summarised, not listed."""
    releases = [
        live_release(rid="prod-9"),
        release(S.AWAITING_APPROVAL, rid="prod-10"),
        release(S.COLLECTING, rid="prod-11", n_commits=3),
    ]
    rendered = render_history(env_state(), releases, OPTIONS)
    ids = [r.id for r in recent(releases)]
    assert ids == ["prod-10", "prod-9"]
    sections = texts(rendered)
    assert sections[1] == "next batch: 3 commits not released yet"
    assert sections.index(section_for(rendered, "prod-10")) < sections.index(
        section_for(rendered, "prod-9")
    )
    assert "prod-11" not in "".join(sections)
    assert "no approvals yet" in section_for(rendered, "prod-10")
    assert rendered.text == "Recent releases to prod: prod-10 awaiting approval, prod-9 live"


def test_at_most_ten_releases() -> None:
    """Only the newest MAX_RELEASES are shown and the title says so."""
    releases = [live_release(rid=f"prod-{n}") for n in range(1, 16)]
    rendered = render_history(env_state(), releases, OPTIONS)
    shown = [t for t in texts(rendered) if t.startswith(":rocket:")]
    assert len(shown) == MAX_RELEASES
    assert "*prod-15*" in shown[0] and "*prod-6*" in shown[-1]
    assert "the last 10, newest first" in texts(rendered)[0]


def test_blocked_release_names_blockers_and_escapes_their_reason() -> None:
    """Who blocked and why; the reason is user text and is escaped."""
    blocked = release(
        S.BLOCKED,
        approvals=frozenset({ALICE}),
        block_reasons=((BOB, "breaks <!channel> & checkout"),),
    )
    text = section_for(render_history(env_state(), [blocked], OPTIONS), "prod-1")
    assert f"blocked by <@{BOB}> (“breaks &lt;!channel&gt; &amp; checkout”)" in text
    assert f"approvals so far: <@{ALICE}>" in text
    assert "<!channel>" not in text


def test_commit_titles_are_escaped_and_linked() -> None:
    """Commit titles are escaped; a PR number becomes a link; a few titles, then a count."""
    commits = (
        commit(1, "Fix <script> & things (#12)", pr=12),
        *(commit(n) for n in range(2, 7)),
    )
    r = release(S.AWAITING_APPROVAL, commits=commits, head_sha=sha(6))
    text = section_for(render_history(env_state(), [r], OPTIONS), "prod-1")
    assert "6 commits" in text
    assert "_… and 3 earlier commits_" in text
    old = replace(r, commits=commits[:1], head_sha=sha(1))
    text = section_for(render_history(env_state(), [old], OPTIONS), "prod-1")
    assert "Fix &lt;script&gt; &amp; things (<https://github.com/acme/shop/pull/12|#12>)" in text


def test_failure_reason_and_automatic_rollback() -> None:
    """A failed release says why; a rolled-back one says it went back on its own, and whether healthy."""
    failed = release(S.FAILED, deploy_started_at=T0 + 250, rid="prod-2")
    rolled = release(
        S.ROLLED_BACK,
        rid="prod-3",
        reason="health check failed: GET /healthz -&gt; 500",
        healthy_after_rollback=False,
        deploy_started_at=T0 + 280,
    )
    rendered = render_history(env_state(), [failed, rolled], OPTIONS)
    failed_text = section_for(rendered, "prod-2")
    assert "*Failed:* health check failed: 503" in failed_text
    assert "Deploy started <!date^" in failed_text and "ended after 50s" in failed_text
    rolled_text = section_for(rendered, "prod-3")
    assert rolled_text.startswith(":rotating_light: *prod-3* · *rolled back*")
    assert (
        "*Rolled back automatically* to `0000000`; *nothing healthy after the rollback*. "
        "Why: health check failed: GET /healthz -&gt; 500"
    ) in rolled_text


def test_manual_rollback_names_who_and_marks_what_it_undid() -> None:
    """A /rollback shows who rolled back to what; the release it replaced says so too."""
    first = live_release(rid="prod-1", head_sha=sha(1))
    second = live_release(rid="prod-2", head_sha=sha(2))
    back = rollback_release(
        S.LIVE,
        rid="prod-3",
        requested_by=CAROL,
        head_sha=sha(1),
        base_sha=sha(2),
        rollback_target="prod-1",
    )
    rendered = render_history(env_state(), [first, second, back], OPTIONS)
    back_text = section_for(rendered, "prod-3")
    assert "*prod-3* · *live* · rollback to `0000000` (release prod-1)" in back_text
    assert f"Rolled back by <@{CAROL}>" in back_text
    assert f"Later rolled back by <@{CAROL}> (prod-3)" in section_for(rendered, "prod-2")
    assert "Later rolled back" not in section_for(rendered, "prod-1")


def test_lock_is_shown_with_its_escaped_reason() -> None:
    """A locked environment says who holds it and why (escaped)."""
    env = env_state(lock=EnvLock(by=BOB, reason="migrating <db>", at=T0))
    context = texts(render_history(env, [], OPTIONS))[1]
    assert context == f":lock: locked by <@{BOB}>: migrating &lt;db&gt;"


def test_no_approval_needed_and_cancelled() -> None:
    """approval: none says so; a cancelled release shows who cancelled."""
    quick = live_release(approval_required=False, rid="prod-1", approvals=frozenset())
    cancelled = release(S.CANCELLED, rid="prod-2", reason=f"cancelled by <@{ALICE}>")
    rendered = render_history(env_state(), [quick, cancelled], OPTIONS)
    assert "no approval needed" in section_for(rendered, "prod-1")
    assert f"_Cancelled:_ cancelled by <@{ALICE}>" in section_for(rendered, "prod-2")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.4, "0.4s"),
        (3, "3s"),
        (12.4, "12s"),
        (59.6, "1m"),
        (90, "1m30s"),
        (3600, "1h"),
        (7500, "2h05m"),
        (86400 * 3 + 4 * 3600, "3d4h"),
    ],
)
def test_format_span(seconds: float, text: str) -> None:
    """Durations read the way people say them."""
    assert format_span(seconds) == text


_TEXT = st.text(max_size=400)
#: the markup shipmate itself writes: mentions, dates and PR links
_OWN_MARKUP = re.compile(r"<(@U[A-Z0-9]+|!date\^[^<>]*|https://[^<>|]*\|#\d+)>")


@settings(max_examples=60, deadline=None)
@given(
    titles=st.lists(_TEXT, min_size=1, max_size=60),
    reason=_TEXT,
    n_people=st.integers(0, 120),
    n_releases=st.integers(0, 25),
)
def test_always_within_slack_limits(
    titles: list[str], reason: str, n_people: int, n_releases: int
) -> None:
    """Whatever the titles, reasons, people and count: ≤ 50 blocks, sections ≤ 3000 characters,
    a short fallback, and no markup but shipmate's own (user text is escaped, nothing is cut
    in the middle of a mention)."""
    people = tuple(person(f"U{i:05d}", f"P{i}") for i in range(n_people))
    users = frozenset(p.slack_user for p in people if isinstance(p, Person) and p.slack_user)
    commits = tuple(commit(i + 1, t) for i, t in enumerate(titles))
    releases = [
        release(
            S.BLOCKED if n % 2 else S.FAILED,
            rid=f"prod-{n}",
            commits=commits,
            people=people,
            approvals=users,
            blocks=users,
            block_reasons=tuple((u, reason) for u in sorted(users)),
            reason=reason.replace("<", "&lt;"),
        )
        for n in range(1, n_releases + 1)
    ]
    env = env_state(lock=EnvLock(by=ALICE, reason=reason * 10, at=T0))
    rendered = render_history(env, releases, OPTIONS)
    assert len(rendered.blocks) <= 50
    assert len(rendered.text) <= TEXT_LIMIT
    for text in texts(rendered):
        assert len(text) <= SECTION_LIMIT
    for text in texts(rendered):
        assert "<" not in _OWN_MARKUP.sub("", text), text


def test_environment_name_in_the_title() -> None:
    """The title names the environment it is about."""
    rendered = render_history(env_state(), [live_release()], OPTIONS)
    assert texts(rendered)[0] == f":scroll: *Release history of `{ENV}`* · 1 release, newest first"
