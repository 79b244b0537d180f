"""Job kinds and outcomes as types, with the stream's string format kept for rolling upgrades."""

from __future__ import annotations

import inspect

import pytest

from bot.domain.jobs import (
    Job,
    JobKind,
    JobOutcome,
    approvals_job,
    channel_notice_job,
    collect_job,
    deploy_job,
    notice_job,
    parse_job,
    render_job,
    thread_job,
)
from bot.domain.models import Release, ReleaseState
from bot.runtime.worker import Worker, handler_for

RELEASE = Release(
    id="eu-west-14",
    env="eu-west",
    state=ReleaseState.AWAITING_APPROVAL,
    created_at=1.0,
)


def _fields(job: Job) -> dict[str, str]:
    """The job as a stream entry holds it."""
    flat = job.flat()
    return dict(zip(flat[0::2], flat[1::2], strict=True))


def test_every_kind_has_its_own_worker_handler() -> None:
    handlers = {kind: handler_for(kind) for kind in JobKind}
    assert len(set(handlers.values())) == len(JobKind)
    for handler in handlers.values():
        assert inspect.iscoroutinefunction(handler)
        assert getattr(Worker, handler.__name__) is handler


def test_the_stream_strings_stay_what_older_versions_wrote_and_dashboards_count() -> None:
    assert [kind.value for kind in JobKind] == [
        "render",
        "deploy",
        "collect",
        "ask_approvals",
        "notice",
        "channel_notice",
        "thread",
    ]
    assert {outcome.value for outcome in JobOutcome} == {"ok", "unknown", "failed", "lock_lost"}
    assert {o for o in JobOutcome if o.done} == {JobOutcome.OK, JobOutcome.UNKNOWN}


@pytest.mark.parametrize(
    ("job", "kind"),
    [
        (render_job(RELEASE), "render"),
        (deploy_job(RELEASE), "deploy"),
        (approvals_job(RELEASE), "ask_approvals"),
        (thread_job(RELEASE, "blocked"), "thread"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_a_job_about_a_release_carries_its_environment(job: Job, kind: str) -> None:
    fields = _fields(job)
    # the enqueue script routes on the first pair, so "kind" stays first
    assert job.flat()[:2] == ["kind", kind]
    assert (fields["release"], fields["env"]) == ("eu-west-14", "eu-west")
    assert parse_job(fields) == job
    assert job.about() == ("eu-west-14", "eu-west")


def test_jobs_about_no_release_name_none() -> None:
    for job in (
        notice_job("C1", "U1", "hi"),
        channel_notice_job("C1", "hi"),
        collect_job(),
        collect_job("push", after="abc", at="1.000"),
    ):
        assert (job.release, job.env) == (None, None)
        assert parse_job(_fields(job)) == job
    assert _fields(collect_job()) == {"kind": "collect"}
    assert _fields(collect_job("push", after="abc", at="1.000")) == {
        "kind": "collect",
        "reason": "push",
        "after": "abc",
        "at": "1.000",
    }


def test_a_job_an_older_version_wrote_without_env_is_read_from_its_release_id() -> None:
    job = parse_job({"kind": "deploy", "release": "eu-west-2-14"})
    assert job is not None and job.kind is JobKind.DEPLOY
    assert (job.release, job.env) == ("eu-west-2-14", "eu-west-2")
    assert job.about() == ("eu-west-2-14", "eu-west-2")


def test_an_unknown_or_missing_kind_is_not_a_job() -> None:
    assert parse_job({"kind": "reticulate", "release": "sandbox-1"}) is None
    assert parse_job({"kind": "Deploy", "release": "sandbox-1"}) is None
    assert parse_job({"release": "sandbox-1"}) is None


def test_a_job_about_no_release_cannot_be_run_as_one() -> None:
    job = parse_job({"kind": "render"})
    assert job is not None and job.env is None
    with pytest.raises(KeyError):
        job.about()
