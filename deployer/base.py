"""The contract between the worker and a deploy backend.

The worker owns the release state machine and the Slack views; a backend only knows how
to put one sha on one environment and says what it is doing through a :class:`Reporter`.
These types are deliberately independent of ``bot.config.loader`` so the composition root maps
configuration onto them and backends stay testable without a config file.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from bot.domain.errors import ShipmateError
from bot.domain.models import StepStatus

# fullmatch, not ^...$: "$" also matches before a trailing newline, and these values end up
# in argv and environment variables.
_SHA_RE = re.compile(r"[0-9a-f]{7,40}")
_ENV_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_RELEASE_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}-[0-9]{1,12}")


@dataclass(frozen=True, slots=True)
class DeployTarget:
    """What to deploy where. Validated here because these values are the only variable
    parts of commands and URLs: anything else could smuggle options or paths into argv."""

    env: str
    sha: str
    #: the deploy lock's fencing token: grows with every lock taken for the environment, so
    #: a system the deploy touches can refuse a lower one (a stale, paused worker's deploy)
    fence: int | None = None
    #: the release being deployed (``<env>-<n>``), for the deploy's own logs
    release: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.env, str) or not _ENV_RE.fullmatch(self.env):
            raise ValueError(f"not a valid environment name: {self.env!r}")
        if not isinstance(self.sha, str) or not _SHA_RE.fullmatch(self.sha):
            raise ValueError(f"not a commit sha (7-40 lowercase hex digits): {self.sha!r}")
        if self.fence is not None and (type(self.fence) is not int or self.fence < 0):
            raise ValueError(f"not a fencing token: {self.fence!r}")
        if self.release and not _RELEASE_RE.fullmatch(self.release):
            raise ValueError(f"not a release id: {self.release!r}")

    @property
    def short_sha(self) -> str:
        return self.sha[:7]


class Reporter(Protocol):
    """Where a backend's progress goes; the worker turns it into Slack updates."""

    async def step(self, name: str, status: StepStatus, detail: str = "") -> None:
        """Set the state of a progress line ("deploy", "health") in the release message."""

    async def detail(self, text: str) -> None:
        """Add plain text from the system (command output, log lines, a note on the platform)
        to the release thread.

        ``text`` is never markup: whatever a deploy script, a container or an engine printed
        (a commit subject with ``<!channel>`` in it) goes in as is, and the reporter escapes
        and formats it for where it is shown.
        """


class Backend(Protocol):
    kind: str

    async def check_artifact(self, target: DeployTarget) -> None:
        """Raise :class:`ArtifactMissing` when the sha cannot be deployed (e.g. no image)."""

    async def deploy(self, target: DeployTarget, reporter: Reporter) -> None:
        """Make ``target.env`` run ``target.sha``; raise :class:`DeployError` on failure.

        Must be idempotent: deploying the sha that already runs succeeds, because a
        rollback and a retried job both go through this same path.
        """

    async def close(self) -> None:
        """Release clients and connections held by the backend."""


@runtime_checkable
class NativeHealth(Protocol):
    """A backend that can tell health by itself (an image's HEALTHCHECK, swarm task states).

    Used when an environment configures no ``health:`` check of its own.
    """

    async def wait_healthy(
        self,
        target: DeployTarget,
        reporter: Reporter,
        *,
        timeout: float,  # noqa: ASYNC109 - a health window, not a cancellation timeout
    ) -> HealthResult:
        """Wait until ``target`` is healthy or ``timeout`` runs out; never raises for unhealthy."""


@runtime_checkable
class Diagnostics(Protocol):
    """A backend that can say why a deployed sha is unhealthy (e.g. its last log lines)."""

    async def diagnostics(self, target: DeployTarget) -> str:
        """A short text for the release thread; empty when there is nothing to add."""


#: True while a person waits for the answer (a slash command has 3 s): a backend whose
#: platform is unreachable says so at once instead of waiting for it to come back
_interactive: ContextVar[bool] = ContextVar("shipmate_interactive", default=False)


@contextlib.contextmanager
def interactive() -> Iterator[None]:
    """Backend calls inside answer a person: fail fast, never wait for a platform."""
    token = _interactive.set(True)
    try:
        yield
    finally:
        _interactive.reset(token)


def is_interactive() -> bool:
    return _interactive.get()


class DeployerError(ShipmateError):
    """A deploy-side failure; ``str()`` is written for the release thread, not a log."""


class DeployError(DeployerError):
    pass


class ArtifactMissing(DeployerError):
    pass


class HealthCheckFailed(DeployerError):
    pass


@dataclass(frozen=True, slots=True)
class HealthResult:
    healthy: bool
    #: on failure the last failure seen ("GET http://… -> 500"), else a summary
    detail: str
    attempts: int
    elapsed: float

    def raise_for_health(self) -> None:
        """For callers that prefer an exception over checking ``healthy``."""
        if not self.healthy:
            raise HealthCheckFailed(self.detail)


class HealthProgress:
    """One backend's health wait: the "health" step, reported without repeating itself,
    and the HealthResult it ends with."""

    def __init__(self, reporter: Reporter) -> None:
        self._reporter = reporter
        self.started = time.monotonic()
        self.attempts = 0
        self._reported: str | None = None

    async def report(self, status: StepStatus, detail: str) -> None:
        if status is StepStatus.RUNNING and detail == self._reported:
            return  # a poll that changes nothing is not worth a Slack update
        self._reported = detail
        await self._reporter.step("health", status, detail)

    async def result(self, healthy: bool, detail: str) -> HealthResult:
        await self.report(StepStatus.OK if healthy else StepStatus.FAILED, detail)
        return HealthResult(healthy, detail, self.attempts, time.monotonic() - self.started)


def format_seconds(seconds: float) -> str:
    """600.0 -> "600s", 0.05 -> "0.05s": short enough for a Slack line."""
    text = f"{seconds:.2f}".rstrip("0").rstrip(".")
    return f"{text}s"
