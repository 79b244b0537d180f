"""Releases and environments survive the trip to JSON and back unchanged."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bot.domain import release as rel
from bot.domain.codec import (
    commit_from_doc,
    commit_to_doc,
    env_from_doc,
    env_to_doc,
    release_from_doc,
    release_to_doc,
)
from bot.domain.history import render_history
from bot.domain.models import (
    Author,
    Commit,
    EnvLock,
    EnvState,
    LiveEntry,
    Person,
    Release,
    ReleaseKind,
    ReleaseState,
    Step,
    StepStatus,
)
from bot.domain.render import RenderOptions, render_release
from tests.domain.factories import ALICE, BOB, author, commit, env_state, release, sha

texts = st.text(max_size=30)
ids = st.builds("{}-{}".format, st.sampled_from(["prod", "staging"]), st.integers(1, 9999))
shas = st.integers(min_value=0, max_value=2**160 - 1).map("{:040x}".format)
users = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", min_size=2, max_size=10).map(
    "U{}".format
)
times = st.floats(min_value=0, max_value=4e9, allow_nan=False, allow_infinity=False)
authors = st.builds(Author, name=texts, email=texts)
commits = st.builds(
    Commit,
    sha=shas,
    title=st.text(max_size=200),
    author=authors,
    co_authors=st.lists(authors, max_size=3).map(tuple),
    pr=st.none() | st.integers(min_value=1, max_value=10**7),
    merged_authors=st.lists(authors, max_size=3).map(tuple),
)
people = st.builds(Person, email=texts, name=texts, slack_user=st.none() | users)
steps = st.builds(Step, name=texts, status=st.sampled_from(list(StepStatus)), detail=texts)
releases = st.builds(
    Release,
    id=ids,
    env=texts,
    state=st.sampled_from(list(ReleaseState)),
    created_at=times,
    kind=st.sampled_from(list(ReleaseKind)),
    version=st.integers(min_value=0, max_value=2**53),
    commits=st.lists(commits, max_size=5).map(tuple),
    people=st.lists(people, max_size=5).map(tuple),
    head_sha=st.none() | shas,
    base_sha=st.none() | shas,
    approval_required=st.booleans(),
    requested_by=st.none() | users,
    stand_ins=st.lists(users, max_size=3).map(tuple),
    approvals=st.frozensets(users, max_size=5),
    blocks=st.frozensets(users, max_size=5),
    channel=st.none() | texts,
    message_ts=st.none() | texts,
    steps=st.lists(steps, max_size=4).map(tuple),
    reason=st.none() | st.text(max_size=100),
    cancelled_by=st.none() | users,
    rollback_target=st.none() | ids,
    previous_sha=st.none() | shas,
    fence=st.none() | st.integers(min_value=0, max_value=2**53),
    healthy_after_rollback=st.none() | st.booleans(),
    updated_at=times,
    frozen_at=st.none() | times,
    finished_at=st.none() | times,
    approved_at=st.none() | times,
)
envs = st.builds(
    EnvState,
    name=texts,
    version=st.integers(min_value=0, max_value=2**53),
    live_sha=st.none() | shas,
    live_release=st.none() | ids,
    active_release=st.none() | ids,
    batch_release=st.none() | ids,
    history=st.lists(st.builds(LiveEntry, release_id=ids, sha=shas, at=times), max_size=5).map(
        tuple
    ),
    rolled_back_shas=st.frozensets(shas, max_size=4),
    lock=st.none() | st.builds(EnvLock, by=users, reason=texts, at=times, automatic=st.booleans()),
)


@settings(max_examples=200, deadline=None)
@given(releases)
def test_release_round_trips_through_json(r: Release) -> None:
    """Any release encodes to JSON and decodes to an equal release."""
    assert release_from_doc(json.loads(json.dumps(release_to_doc(r)))) == r


@settings(max_examples=200, deadline=None)
@given(envs)
def test_env_round_trips_through_json(e: EnvState) -> None:
    """Any environment state encodes to JSON and decodes to an equal one."""
    assert env_from_doc(json.loads(json.dumps(env_to_doc(e)))) == e


@settings(max_examples=100, deadline=None)
@given(commits)
def test_commit_round_trips(c: Commit) -> None:
    """A commit with any mix of optional fields round-trips."""
    assert commit_from_doc(json.loads(json.dumps(commit_to_doc(c)))) == c


def full_release() -> Release:
    """A release with every field set to a non-default value."""
    c = commit(
        1,
        "Fix <checkout> & pay (#12)",
        by=author("Ünïcødé", "u@example.com"),
        pr=12,
        co_authors=(author("Bob"),),
        merged_authors=(author("Carol"),),
    )
    return release(
        ReleaseState.ROLLED_BACK,
        kind=ReleaseKind.ROLLBACK,
        version=17,
        commits=(c,),
        head_sha=sha(9),
        base_sha=sha(8),
        approval_required=False,
        requested_by=ALICE,
        stand_ins=(BOB, ALICE),
        approvals=frozenset({ALICE, BOB}),
        blocks=frozenset({BOB}),
        block_reasons=((BOB, "the migration is not reversible"),),
        channel="C123",
        message_ts="1700000000.000100",
        steps=(Step("pull", StepStatus.OK, "3 layers"), Step("health", StepStatus.FAILED)),
        reason="health check failed: 503",
        cancelled_by=ALICE,
        rollback_target="prod-0",
        previous_sha=sha(7),
        fence=99,
        healthy_after_rollback=False,
        updated_at=1_700_000_400.5,
        approved_at=1_700_000_150.25,
        deploy_started_at=1_700_000_151.5,
    )


#: what the events applied since a read decided: audited with the write, never stored
NOT_STORED = {"decisions"}


def test_fully_populated_release_round_trips() -> None:
    """A release with every field set survives encoding, and no field is left at its default."""
    r = full_release()
    defaults = Release(id="x", env="x", state=ReleaseState.COLLECTING, created_at=0.0)
    for f in dataclasses.fields(Release):
        if f.name not in {"id", "env", "created_at", *NOT_STORED}:
            assert getattr(r, f.name) != getattr(defaults, f.name), f.name
    assert release_from_doc(json.loads(json.dumps(release_to_doc(r)))) == r


def test_doc_stores_every_release_field() -> None:
    """The release doc has a key for every Release field, so none is silently dropped."""
    doc = release_to_doc(full_release())
    assert set(doc) == {f.name for f in dataclasses.fields(Release)} - NOT_STORED


def test_env_doc_stores_every_field() -> None:
    """The environment doc has a key for every EnvState field."""
    doc = env_to_doc(env_state(("prod-1", sha(1))))
    assert set(doc) == {f.name for f in dataclasses.fields(EnvState)} - NOT_STORED


def test_fully_populated_env_round_trips() -> None:
    """An environment with every field set, including an automatic lock, round-trips."""
    e = env_state(
        ("prod-1", sha(1)),
        ("prod-2", sha(2)),
        version=9,
        active_release="prod-3",
        batch_release="prod-4",
        rolled_back_shas=frozenset({sha(5)}),
        lock=EnvLock(by="shipmate", reason="release prod-3 failed", at=1.5, automatic=True),
    )
    defaults = EnvState(name="x")
    for f in dataclasses.fields(EnvState):
        if f.name not in {"name", *NOT_STORED}:
            assert getattr(e, f.name) != getattr(defaults, f.name), f.name
    assert env_from_doc(json.loads(json.dumps(env_to_doc(e)))) == e


def test_env_doc_without_lock_key_loads() -> None:
    """An environment stored before locks existed (no "lock" key) loads as unlocked."""
    doc = env_to_doc(env_state(("prod-1", sha(1))))
    del doc["lock"]
    assert env_from_doc(doc).lock is None


def test_version_is_the_first_key() -> None:
    """Both docs start with "version", as the store's Lua script matches it with an anchor."""
    r_doc = release_to_doc(full_release())
    e_doc = env_to_doc(env_state(("prod-1", sha(1)), version=41))
    assert next(iter(r_doc)) == "version"
    assert next(iter(e_doc)) == "version"
    assert json.dumps(r_doc).startswith('{"version": 17,')
    assert json.dumps(e_doc).startswith('{"version": 41,')


@settings(max_examples=50, deadline=None)
@given(releases, envs)
def test_version_first_for_any_doc(r: Release, e: EnvState) -> None:
    """Whatever the content, the serialized docs begin with their version number."""
    assert json.dumps(release_to_doc(r)).startswith(f'{{"version": {r.version},')
    assert json.dumps(env_to_doc(e)).startswith(f'{{"version": {e.version},')


def test_sets_are_stored_sorted() -> None:
    """Sets are written sorted so equal states give byte-equal documents."""
    r = release(ReleaseState.APPROVED, approvals=frozenset({"UZ", "UA", "UM"}))
    assert release_to_doc(r)["approvals"] == ["UA", "UM", "UZ"]
    e = env_state(rolled_back_shas=frozenset({sha(3), sha(1), sha(2)}))
    assert env_to_doc(e)["rolled_back_shas"] == [sha(1), sha(2), sha(3)]


def test_commit_doc_omits_empty_optionals() -> None:
    """A plain commit stores only sha, title and author."""
    assert set(commit_to_doc(commit(1))) == {"sha", "title", "author"}


def test_release_stored_before_block_reasons_and_deploy_start_loads() -> None:
    """Releases written by an older shipmate (no block_reasons, no deploy_started_at) load."""
    doc = release_to_doc(full_release())
    del doc["block_reasons"], doc["deploy_started_at"]
    loaded = release_from_doc(doc)
    assert (loaded.block_reasons, loaded.deploy_started_at) == ((), None)


def test_decisions_are_not_stored() -> None:
    """A value carrying decisions encodes like one without: they go to the audit stream."""
    awaiting = release(ReleaseState.AWAITING_APPROVAL)
    cancelled = rel.apply(awaiting, rel.Cancel(by=ALICE), at=1_700_000_500.0)
    assert cancelled.decisions
    assert release_to_doc(cancelled) == release_to_doc(replace(cancelled, decisions=()))
    assert release_from_doc(release_to_doc(cancelled)).decisions == ()


def cancelled_today() -> Release:
    awaiting = release(ReleaseState.AWAITING_APPROVAL)
    return rel.apply(awaiting, rel.Cancel(by=BOB), at=1_700_000_300.0)


def as_written_before_cancelled_by(r: Release) -> dict[str, Any]:
    """``r`` as versions before ``cancelled_by`` wrote it: the mention in the reason, no key."""
    doc = release_to_doc(r)
    del doc["cancelled_by"]
    doc["reason"] = f"cancelled by <@{r.cancelled_by}>"
    return doc


def test_release_cancelled_by_an_older_version_loads_and_renders_the_same() -> None:
    """An old document still loads, and its message and /history line read exactly as those
    of a release cancelled today, whose stored reason names nobody."""
    new = cancelled_today()
    assert (new.cancelled_by, new.reason) == (BOB, None)
    old = release_from_doc(json.loads(json.dumps(as_written_before_cancelled_by(new))))
    assert (old.cancelled_by, old.reason) == (None, f"cancelled by <@{BOB}>")
    options = RenderOptions()
    assert render_release(old, options) == render_release(new, options)
    assert f"cancelled by <@{BOB}>" in json.dumps(render_release(new, options).blocks)
    history = [render_history(env_state(), [r], options) for r in (old, new)]
    assert history[0] == history[1]
    assert f"cancelled by <@{BOB}>" in json.dumps(history[1].blocks)
