"""Health checks after a deploy: poll an HTTP endpoint and/or run a smoke command until it
passes ``successes`` times in a row, or the time runs out."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from bot.domain.models import StepStatus
from deployer.argv import check_template, fill_argv, fill_text
from deployer.base import DeployTarget, HealthResult, Reporter, format_seconds
from deployer.shell import CommandNotRunnable, child_env, run_command, signal_name


@dataclass(frozen=True, slots=True)
class HealthSpec:
    http: str | None = None
    command: tuple[str, ...] | None = None
    #: for the whole check, not one attempt
    timeout: float = 30.0
    interval: float = 1.0
    #: consecutive passes needed; >1 catches a service that answers once and then dies
    successes: int = 1
    #: where a relative command ("./smoke.sh") is found and run
    cwd: Path | None = None

    def __post_init__(self) -> None:
        if self.http is None and self.command is None:
            raise ValueError("a health check needs an http URL or a command")
        if self.http is not None:
            check_template(self.http)
            if urlsplit(self.http).scheme not in ("http", "https"):
                raise ValueError(f"health http must be an http(s) URL, not {self.http!r}")
        if self.command is not None:
            if isinstance(self.command, str) or not self.command:
                raise ValueError("health command must be a non-empty list of arguments")
            check_template(self.command)
        if not self.timeout > 0 or not self.interval > 0:
            raise ValueError("health timeout and interval must be positive")
        if self.successes < 1:
            raise ValueError("health successes must be at least 1")


class _Fatal(Exception):
    """A failure that waiting cannot fix (the smoke command does not exist)."""


async def _probe_http(session: aiohttp.ClientSession, url: str, limit: float) -> str | None:
    """None when healthy, else what went wrong, phrased for the release thread."""
    try:
        # Redirects are not followed: a health URL that redirects (to a login page, say)
        # is misconfigured, and "-> 302" says so better than a 200 from somewhere else.
        async with session.get(
            url, timeout=aiohttp.ClientTimeout(total=limit), allow_redirects=False
        ) as response:
            if 200 <= response.status < 300:
                return None
            return f"GET {url} -> {response.status}"
    except TimeoutError:
        return f"GET {url} timed out after {format_seconds(limit)}"
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, ConnectionRefusedError):
            return f"GET {url}: connection refused"
        return f"GET {url}: {exc.os_error.strerror or exc}"
    except aiohttp.ClientError as exc:
        return f"GET {url}: {exc or type(exc).__name__}"


async def _probe_command(
    argv: list[str], spec: HealthSpec, target: DeployTarget, limit: float
) -> str | None:
    program = argv[0]
    last: deque[str] = deque(maxlen=1)

    def keep(line: str) -> None:
        if line.strip():
            last.append(line.strip()[:200])

    try:
        result = await run_command(
            argv,
            time_limit=limit,
            on_line=keep,
            cwd=spec.cwd,
            env=child_env({}, target),
            what="health command",
            kill_grace=0.2,
            drain=0.2,
        )
    except CommandNotRunnable as exc:
        raise _Fatal(str(exc)) from None
    if result.timed_out:
        return f"{program} timed out after {format_seconds(limit)}"
    if result.returncode == 0:
        return None
    how = (
        f"exited {result.returncode}"
        if result.returncode > 0
        else f"was killed by {signal_name(-result.returncode)}"
    )
    return f"{program} {how}: {last[0]}" if last else f"{program} {how}"


async def check_health(
    spec: HealthSpec,
    target: DeployTarget,
    reporter: Reporter,
    *,
    session: aiohttp.ClientSession | None = None,
) -> HealthResult:
    """Poll until ``spec.successes`` consecutive attempts pass or ``spec.timeout`` is up.

    An attempt passes when every configured probe passes. Never raises for an unhealthy
    service: the answer is in the result (``raise_for_health`` turns it into an error).
    ``session`` is used, not closed; without one a private session lives for this call.
    """
    url = fill_text(spec.http, target) if spec.http is not None else None
    argv = fill_argv(spec.command, target) if spec.command is not None else None
    need = spec.successes
    started = time.monotonic()
    deadline = started + spec.timeout
    attempts = 0
    passes = 0
    failure: str | None = None
    reported: str | None = None

    async def report(status: StepStatus, detail: str) -> None:
        nonlocal reported
        if status is StepStatus.RUNNING and detail == reported:
            return  # a poll that changes nothing is not worth a Slack update
        reported = detail
        await reporter.step("health", status, detail)

    def result(healthy: bool, detail: str) -> HealthResult:
        return HealthResult(healthy, detail, attempts, time.monotonic() - started)

    own_session = session is None and url is not None
    if own_session:
        session = aiohttp.ClientSession()
    try:
        await report(StepStatus.RUNNING, f"0/{need} passed")
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            attempt_timeout = min(spec.interval * 5, remaining)
            attempts += 1
            try:
                failure = None
                if url is not None:
                    assert session is not None
                    failure = await _probe_http(session, url, attempt_timeout)
                if failure is None and argv is not None:
                    left = max(deadline - time.monotonic(), 0.001)
                    failure = await _probe_command(argv, spec, target, min(attempt_timeout, left))
            except _Fatal as exc:
                await report(StepStatus.FAILED, str(exc))
                return result(False, str(exc))
            if failure is None:
                passes += 1
                if passes >= need:
                    await report(StepStatus.OK, f"{passes}/{need} passed")
                    return result(
                        True,
                        f"{passes}/{need} passed after {attempts} attempt"
                        f"{'s' if attempts != 1 else ''} in "
                        f"{format_seconds(time.monotonic() - started)}",
                    )
                await report(StepStatus.RUNNING, f"{passes}/{need} passed")
            else:
                passes = 0
                await report(StepStatus.RUNNING, f"0/{need} passed; last: {failure}")
            # The product's polling interval, cut short by the deadline.
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await asyncio.sleep(min(spec.interval, remaining))
    finally:
        if own_session and session is not None:
            await session.close()

    if failure is None:
        detail = (
            f"only {passes}/{need} passed in a row before the "
            f"{format_seconds(spec.timeout)} timeout"
            if attempts
            else f"no attempt fit in the {format_seconds(spec.timeout)} timeout"
        )
    else:
        detail = failure
    await report(StepStatus.FAILED, detail)
    return result(False, detail)
