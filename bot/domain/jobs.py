"""The worker's jobs: what `web` (and the worker itself) queue, and what running one came to.

A job travels through a Redis stream as flat string fields, ``kind`` first (the enqueue
script routes collects on it). That wire format is the contract between versions during
a rolling upgrade: a worker must run what an older `web` queued, so fields are only ever
added, and a job is parsed into these types at the worker's edge, never before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from bot.domain.models import Release


class JobKind(StrEnum):
    """What a job asks the worker to do; the value is the stream's ``kind`` field."""

    RENDER = "render"
    DEPLOY = "deploy"
    COLLECT = "collect"
    ASK_APPROVALS = "ask_approvals"
    NOTICE = "notice"
    CHANNEL_NOTICE = "channel_notice"
    THREAD = "thread"


class JobOutcome(StrEnum):
    """How running one job ended; the value is the ``outcome`` label of ``shipmate_jobs``."""

    OK = "ok"
    #: no such kind (a newer version queued it, or a bug did): dropped, never retried
    UNKNOWN = "unknown"
    #: it raised: left pending, so it is retried and, in the end, dead-lettered
    FAILED = "failed"
    #: the deploy lock ran out under this worker: left pending for the lock's next holder
    LOCK_LOST = "lock_lost"

    @property
    def done(self) -> bool:
        """Whether the job is acknowledged (nothing more will come of running it again)."""
        return self in (JobOutcome.OK, JobOutcome.UNKNOWN)


@dataclass(frozen=True, slots=True)
class Job:
    kind: JobKind
    fields: Mapping[str, str] = field(default_factory=dict)

    def flat(self) -> list[str]:
        out = ["kind", self.kind.value]
        for k, v in self.fields.items():
            out.extend((k, v))
        return out

    @property
    def release(self) -> str | None:
        """The id of the release this job is about (None: it is about none)."""
        return self.fields.get("release") or None

    @property
    def env(self) -> str | None:
        """The environment of the release this job is about (None: it is about none)."""
        return self.about()[1] if self.release else None

    def about(self) -> tuple[str, str]:
        """(release id, environment) of a job about a release; KeyError when it names none
        (the job fails, and is retried and dead-lettered like any job that cannot run)."""
        release = self.fields["release"]
        # no ``env`` only in a job queued by a version that did not write it yet (a rolling
        # upgrade); release ids are "<env>-<n>" (see Store.next_release_id)
        return release, self.fields.get("env") or release.rsplit("-", 1)[0]


def parse_job(fields: Mapping[str, str]) -> Job | None:
    """A stream entry as a job; None when its kind is not one this version knows."""
    raw = dict(fields)
    try:
        kind = JobKind(raw.pop("kind", ""))
    except ValueError:
        return None
    return Job(kind, raw)


def _about(release: Release) -> dict[str, str]:
    return {"release": release.id, "env": release.env}


def render_job(release: Release) -> Job:
    return Job(JobKind.RENDER, _about(release))


def deploy_job(release: Release) -> Job:
    return Job(JobKind.DEPLOY, _about(release))


def approvals_job(release: Release) -> Job:
    return Job(JobKind.ASK_APPROVALS, _about(release))


def thread_job(release: Release, text: str) -> Job:
    return Job(JobKind.THREAD, {**_about(release), "text": text})


def notice_job(channel: str, user: str, text: str) -> Job:
    return Job(JobKind.NOTICE, {"channel": channel, "user": user, "text": text})


def channel_notice_job(channel: str, text: str) -> Job:
    return Job(JobKind.CHANNEL_NOTICE, {"channel": channel, "text": text})


def collect_job(reason: str | None = None, **details: str) -> Job:
    """Read the repository again. ``reason`` (push, cancel) and ``details`` are for the logs
    and for tests; the collect itself reads everything from git."""
    return Job(JobKind.COLLECT, {"reason": reason, **details} if reason else dict(details))
