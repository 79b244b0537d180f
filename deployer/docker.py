"""The docker backend: one container per environment, the image for a sha is the artifact.

A release creates a container from the sha's image and swaps it in; the one it replaces is
stopped and kept under ``<container>-<short sha>``. Rolling back to a kept sha is then a
``docker start`` of that container: no pull, no create, about as fast as Docker gets.

Shipmate only ever touches containers it labelled itself, so a container someone started by
hand under the same name is reported, never stopped or removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import docker.errors

from bot import trace
from bot.domain.models import StepStatus
from deployer.argv import check_template, fill_text
from deployer.base import (
    ArtifactMissing,
    DeployerError,
    DeployError,
    DeployTarget,
    HealthProgress,
    HealthResult,
    Reporter,
    format_seconds,
    is_interactive,
)
from deployer.dockerapi import (
    DockerApi,
    DockerConflict,
    DockerError,
    DockerNotFound,
    DockerUnreachable,
)
from deployer.dockerrules import container_name_problem, container_port_problem, host_port_problem

log = logging.getLogger(__name__)

LABEL_MANAGED = "shipmate.managed"
LABEL_CONTAINER = "shipmate.container"
LABEL_ENV = "shipmate.env"
LABEL_SHA = "shipmate.sha"

#: docker-py's model objects are untyped; named for readability only
Container = Any

_ACTIVE = frozenset({"running", "restarting", "paused"})
_LOG_LINES = 20

#: how long a deploy waits for an unreachable Docker engine (restarting, upgraded, stopped by
#: someone) to come back before the release fails; it then deploys again from the start
RECONNECT_WAIT = 120.0
#: how often it looks in the meantime
RECONNECT_POLL = 1.0


def _host_binding(value: str) -> str | tuple[str, int]:
    """ "8081" -> "8081"; "127.0.0.1:8081" -> ("127.0.0.1", 8081), the shape docker-py wants
    for an address (a string with a colon would be sent as the port)."""
    if ":" not in value:
        if not value.isdigit():
            raise ValueError(f"not a host port: {value!r}")
        return value
    address, _, port = value.rpartition(":")
    if not port.isdigit() or not address:
        raise ValueError(f"not a host port or address:port: {value!r}")
    return address.strip("[]"), int(port)


@dataclass(frozen=True, slots=True)
class DockerSpec:
    #: the ``kind:`` that selects this spec in shipmate.yml
    kind: ClassVar[Literal["docker"]] = "docker"

    #: template: "shop:{sha}" ({sha}, {short_sha}, {env})
    image: str
    #: the running container's name; kept releases are "<container>-<short sha>"
    container: str
    #: container port -> host port, the direction docker-py's ``ports=`` takes
    ports: Mapping[str, str] = field(default_factory=dict, hash=False)
    env: Mapping[str, str] = field(default_factory=dict, hash=False)
    network: str | None = None
    #: stopped previous releases kept for instant rollback
    keep: int = 3
    stop_timeout: float = 10.0
    #: a missing image is pulled from "{registry}/{image}"
    registry: str | None = None

    def __post_init__(self) -> None:
        check_template(self.image)
        if not self.image.strip():
            raise ValueError("docker image must not be empty")
        if expected := container_name_problem(self.container):
            raise ValueError(f"not a valid container name: {self.container!r} ({expected})")
        for container_port, host in self.ports.items():
            if expected := container_port_problem(container_port):
                raise ValueError(f"not a container port: {container_port!r} ({expected})")
            if expected := host_port_problem(host):
                raise ValueError(f"not a host port: {host!r} ({expected})")
        if self.keep < 0:
            raise ValueError(f"docker keep must be 0 or more, not {self.keep}")
        if not self.stop_timeout >= 0:
            raise ValueError(f"docker stop_timeout must be 0 or more, not {self.stop_timeout}")

    @property
    def stop_seconds(self) -> int:
        # The engine takes whole seconds; rounding down could turn 0.5 into "kill now".
        return math.ceil(self.stop_timeout)


def _labels(c: Container) -> Mapping[str, str]:
    return c.attrs.get("Config", {}).get("Labels") or {}


def _sha(c: Container) -> str:
    return _labels(c).get(LABEL_SHA, "")


def _state(c: Container) -> Mapping[str, Any]:
    return c.attrs.get("State") or {}


def _status(c: Container) -> str:
    return str(_state(c).get("Status", "unknown"))


def _created_key(c: Container) -> str:
    """Creation time as a sortable string. Docker trims trailing zeros of the nanoseconds
    (RFC 3339 "nano"), so the raw strings do not sort; pad the fraction first."""
    created = str(c.attrs.get("Created", ""))
    stamp, _, zone = created.partition("Z")
    whole, _, fraction = stamp.partition(".")
    return f"{whole}.{fraction.ljust(9, '0')}{zone}"


def _describe_exit(c: Container) -> str:
    state = _state(c)
    status = _status(c)
    if status in ("exited", "dead"):
        text = f"exited with code {state.get('ExitCode')}"
        if state.get("OOMKilled"):
            text += " (out of memory)"
        return text
    return status


@dataclass(slots=True)
class _Survey:
    #: the managed container named exactly ``spec.container``
    current: Container | None
    #: every managed container for ``spec.container``, the current one included
    managed: list[Container]


class _Progress:
    """Remembers which step is open, so a failure marks that step and not another."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.open: str | None = None

    async def running(self, name: str, detail: str) -> None:
        self.open = name
        await self.reporter.step(name, StepStatus.RUNNING, detail)

    async def ok(self, name: str, detail: str) -> None:
        self.open = None
        await self.reporter.step(name, StepStatus.OK, detail)

    async def fail(self, detail: str) -> None:
        if self.open is not None:
            name, self.open = self.open, None
            await self.reporter.step(name, StepStatus.FAILED, detail)


class DockerBackend:
    kind = "docker"

    def __init__(
        self,
        spec: DockerSpec,
        api: DockerApi,
        *,
        settle: float = 0.5,
        poll_interval: float = 0.2,
        reconnect_wait: float | None = None,
        reconnect_poll: float | None = None,
    ) -> None:
        self.spec = spec
        self._api = api
        #: None: the module's RECONNECT_WAIT / RECONNECT_POLL, read when a deploy needs them
        self._reconnect_wait = reconnect_wait
        self._reconnect_poll = reconnect_poll
        # How long a fresh start is watched for an immediate exit (a missing config, a
        # database that is not there). Later deaths are the health check's business.
        self._settle = settle
        self._poll = poll_interval

    # -- artifact -----------------------------------------------------------------------

    def image_ref(self, target: DeployTarget) -> str:
        return fill_text(self.spec.image, target)

    async def _resolve_image(self, target: DeployTarget) -> tuple[str, str]:
        """(the reference to create from, what happened) or ArtifactMissing."""
        ref = self.image_ref(target)
        if await self._api.image_exists(ref):
            return ref, f"{ref} present"
        if self.spec.registry is None:
            raise ArtifactMissing(
                f"image {ref} does not exist on this Docker host; shipmate never builds "
                "images — build and tag it first"
            )
        remote = f"{self.spec.registry.rstrip('/')}/{ref}"
        if await self._api.image_exists(remote):
            return remote, f"{remote} present"
        try:
            await self._api.pull(remote)
        except DockerError as err:
            raise ArtifactMissing(
                f"image {ref} does not exist on this Docker host and pulling {remote} failed: {err}"
            ) from err
        return remote, f"pulled {remote}"

    async def check_artifact(self, target: DeployTarget) -> None:
        """ArtifactMissing when ``target.sha`` has no image (nor a kept container).

        With the engine unreachable, a person waiting for an answer (``/release``) is told
        so at once; a deploy lets :meth:`deploy` check, which waits for the engine and says
        in the release message that it is waiting.
        """
        try:
            survey = await self._survey(target)
            if self._kept(survey, target) is not None:
                return  # a kept container is its own artifact, even if the tag was removed
            await self._resolve_image(target)
        except DockerUnreachable as err:
            if is_interactive():
                raise
            log.warning("cannot check the image for %s now (%s); the deploy will", target, err)

    # -- looking around -------------------------------------------------------------------

    async def _survey(self, target: DeployTarget) -> _Survey:
        name = self.spec.container

        def look() -> tuple[Container | None, list[Container]]:
            client = self._api.client
            try:
                named = client.containers.get(name)
            except docker.errors.NotFound:
                named = None
            managed = client.containers.list(
                all=True,
                filters={"label": [f"{LABEL_MANAGED}=1", f"{LABEL_CONTAINER}={name}"]},
                ignore_removed=True,
            )
            return named, managed

        named, managed = await self._api.run(look)
        if named is not None and not self._ours(named):
            raise DeployError(
                f"a container named {name} already exists and shipmate did not create it "
                f"(no {LABEL_MANAGED}/{LABEL_CONTAINER}={name} labels), so shipmate will "
                f"not touch it; remove or rename it, or configure another container name "
                f"for {target.env}"
            )
        return _Survey(current=named, managed=list(managed))

    def _ours(self, c: Container) -> bool:
        labels = _labels(c)
        return (
            labels.get(LABEL_MANAGED) == "1" and labels.get(LABEL_CONTAINER) == self.spec.container
        )

    def _kept(self, survey: _Survey, target: DeployTarget) -> Container | None:
        """The newest managed container for ``target.sha`` other than the current one."""
        current_id = survey.current.id if survey.current is not None else None
        candidates = [c for c in survey.managed if _sha(c) == target.sha and c.id != current_id]
        return max(candidates, key=_created_key, default=None)

    async def _log_lines(self, c: Container, lines: int = _LOG_LINES) -> list[str]:
        raw = await self._api.run(c.logs, stdout=True, stderr=True, tail=lines)
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        return [line.rstrip("\r") for line in text.splitlines() if line.strip()]

    # -- deploy ---------------------------------------------------------------------------

    async def deploy(self, target: DeployTarget, reporter: Reporter) -> None:
        """Deploy ``target``; if the engine goes away (or is away) meanwhile, wait for it and
        deploy again from the start (a deploy is idempotent), saying so in the release.

        The engine stopping kills the containers it runs, so after it is back nothing may
        run at all: the new deploy brings the target up whatever state it finds. Only if
        the engine stays away for the whole wait does the deploy fail, naming where Docker
        was expected and for how long shipmate waited.
        """
        progress = _Progress(reporter)
        wait = RECONNECT_WAIT if self._reconnect_wait is None else self._reconnect_wait
        waiting_since: float | None = None
        while True:
            try:
                await self._deploy(target, progress)
                return
            except DeployerError as err:
                gone = _unreachable(err)
                if gone is None or wait <= 0:
                    await progress.fail(str(err).splitlines()[0])
                    raise
                if waiting_since is None:
                    waiting_since = time.monotonic()
                    await reporter.detail(
                        f"{gone}. Waiting up to {format_seconds(wait)} for it to come "
                        f"back, then deploying {target.short_sha} again from the start."
                    )
                step = progress.open or "image"
                await progress.running(
                    step, f"{gone}; waiting up to {format_seconds(wait)} for it to come back"
                )
                if not await self._engine_back(waiting_since + wait):
                    message = f"{gone}; gave up after waiting {format_seconds(wait)} for it"
                    await progress.fail(message)
                    raise DockerUnreachable(message) from err
                away = format_seconds(round(time.monotonic() - waiting_since, 1))
                log.info("Docker is back after %s; deploying %s again", away, target)
                await reporter.detail(
                    f"Docker is back (waited {away}); deploying {target.short_sha} again."
                )
                waiting_since = None

    async def _engine_back(self, deadline: float) -> bool:
        """Wait until the engine answers a ping; False if it does not before ``deadline``."""
        poll = RECONNECT_POLL if self._reconnect_poll is None else self._reconnect_poll
        while True:
            try:
                await self._api.run(lambda: self._api.client.ping())
                return True
            except DockerError:
                pass  # not back yet, or still starting (500s while it loads)
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(poll, left))

    async def _deploy(self, target: DeployTarget, progress: _Progress) -> None:
        ref = self.image_ref(target)
        await progress.running("image", ref)
        survey = await self._survey(target)
        current = survey.current

        if current is not None and _sha(current) == target.sha:
            await progress.ok("image", f"{ref} present (container {current.name})")
            await progress.running("start", f"{current.name} runs {target.short_sha}")
            if _status(current) == "running":
                await progress.ok("start", f"already running ({current.name})")
            else:
                await self._swap(survey, current, target, progress.reporter)
                await progress.ok("start", f"started {current.name} again")
            await self._prune(target)
            return

        kept = self._kept(survey, target)
        if kept is not None:
            # A rollback: every call before the start is one the swap cannot do without.
            await progress.ok("image", f"{ref} present (kept container {kept.name})")
            await progress.running("start", f"starting kept container {kept.name}")
            seconds = await self._swap(survey, kept, target, progress.reporter)
            await progress.ok(
                "start",
                f"started existing container (instant rollback) in {format_seconds(round(seconds, 2))}",
            )
            await self._prune(target)
            return

        image, how = await self._resolve_image(target)
        await progress.ok("image", how)
        await progress.running("start", f"creating a container from {image}")
        new = await self._create(image, target)
        seconds = await self._swap(survey, new, target, progress.reporter)
        await progress.ok(
            "start",
            f"started new container {self.spec.container} in {format_seconds(round(seconds, 2))}",
        )
        await self._prune(target)

    async def _create(self, image: str, target: DeployTarget) -> Container:
        spec = self.spec
        name = f"{spec.container}-{target.short_sha}"
        labels = {
            LABEL_MANAGED: "1",
            LABEL_CONTAINER: spec.container,
            LABEL_ENV: target.env,
            LABEL_SHA: target.sha,
        }

        def create() -> Container:
            client = self._api.client
            return client.containers.get(
                create_container(client.api, spec, image, name=name, labels=labels)
            )

        try:
            return await self._api.run(create)
        except DockerConflict as err:
            raise DeployError(
                f"cannot create container {name}: the name is taken by a container shipmate "
                f"does not manage; remove or rename it ({err})"
            ) from err

    async def _swap(
        self, survey: _Survey, new: Container, target: DeployTarget, reporter: Reporter
    ) -> float:
        """Stop whatever runs, start ``new``, then fix the names. Returns the seconds from
        the first stop to the started ``new``: the outage a release causes."""
        running = [c for c in survey.managed if c.id != new.id and _status(c) in _ACTIVE]
        # The one to bring back if ``new`` fails: the named one, else whatever ran.
        previous = next((c for c in running if c.name == self.spec.container), None)
        if previous is None and running:
            previous = running[0]

        started = time.monotonic()
        trace.emit("docker.stop", containers=[c.name for c in running])
        for c in running:
            try:
                await self._api.run(c.stop, timeout=self.spec.stop_seconds)
            except DockerError as err:
                note = await self._restore(previous)
                raise DeployError(f"could not stop container {c.name}: {err}{note}") from err
        try:
            await self._api.run(new.start)
        except DockerError as err:
            note = await self._restore(previous)
            raise DeployError(
                f"could not start container {new.name} for {target.short_sha}: {err}{note}"
            ) from err
        seconds = time.monotonic() - started
        trace.emit("docker.started", container=new.name, sha=target.sha)

        await self._check_stays_up(new, target, previous, reporter)
        trace.emit("docker.settled", container=new.name, sha=target.sha)
        await self._rename_into_place(survey.current, new)
        return seconds

    async def _check_stays_up(
        self,
        new: Container,
        target: DeployTarget,
        previous: Container | None,
        reporter: Reporter,
    ) -> None:
        deadline = time.monotonic() + self._settle
        while True:
            await self._api.run(new.reload)
            if _status(new) in ("exited", "dead"):
                break
            if time.monotonic() >= deadline:
                return
            await asyncio.sleep(min(0.05, max(deadline - time.monotonic(), 0)))
        lines = await self._log_lines(new)
        if lines:
            await reporter.detail("\n".join(lines))
        note = await self._restore(previous)
        message = f"container {new.name} for {target.short_sha} {_describe_exit(new)} right after it started{note}"
        if lines:
            message += ":\n" + "\n".join(f"  {line}" for line in lines[-5:])
        raise DeployError(message)

    async def _restore(self, previous: Container | None) -> str:
        """Start ``previous`` again after a failed swap; a note for the error message."""
        if previous is None:
            return ""
        try:
            await self._api.run(previous.reload)
            if _status(previous) != "running":
                await self._api.run(previous.start)
        except DockerError as err:
            log.warning("could not restart %s: %s", previous.name, err)
            return f"; restarting the previous container {previous.name} failed too: {err}"
        return f"; the previous container {previous.name} ({_sha(previous)[:7]}) is running again"

    async def _rename_into_place(self, current: Container | None, new: Container) -> None:
        name = self.spec.container
        if current is not None and current.id != new.id:
            await self._retire(current)
        if new.name != name:
            try:
                await self._api.run(new.rename, name)
            except DockerError as err:
                raise DeployError(
                    f"started {new.name} but could not rename it to {name}: {err}"
                ) from err
            await self._api.run(new.reload)

    async def _retire(self, c: Container) -> None:
        """Move a replaced container out of the way under ``<container>-<short sha>``."""
        short = _sha(c)[:7] or c.id[:7]
        for candidate in (
            f"{self.spec.container}-{short}",
            # the usual name may be held by another container (someone else's, or a stale
            # one for the same short sha); the id keeps this one unique
            f"{self.spec.container}-{short}-{c.id[:12]}",
        ):
            try:
                await self._api.run(c.rename, candidate)
                return
            except DockerConflict:
                continue
            except DockerError as err:
                raise DeployError(f"could not rename {c.name} to {candidate}: {err}") from err
        raise DeployError(f"could not rename {c.name}: every name shipmate tried is taken")

    async def _prune(self, target: DeployTarget) -> None:
        """Remove kept releases beyond ``spec.keep``, oldest first. A failure here does not
        fail the release: the new one is already running."""
        try:
            survey = await self._survey(target)
            current_id = survey.current.id if survey.current is not None else None
            stopped = [
                c
                for c in survey.managed
                if _status(c) not in _ACTIVE and c.id != current_id and _sha(c) != target.sha
            ]
            stopped.sort(key=_created_key, reverse=True)
            for c in stopped[self.spec.keep :]:
                with contextlib.suppress(DockerNotFound):
                    await self._api.run(c.remove)
        except DeployerError as err:
            log.warning("pruning old containers of %s failed: %s", self.spec.container, err)

    # -- health and diagnostics ---------------------------------------------------------

    async def wait_healthy(
        self,
        target: DeployTarget,
        reporter: Reporter,
        *,
        timeout: float,  # noqa: ASYNC109 (the NativeHealth protocol's signature)
    ) -> HealthResult:
        progress = HealthProgress(reporter)
        started = progress.started
        deadline = started + timeout
        report, result = progress.report, progress.result

        try:
            survey = await self._survey(target)
        except DeployerError as err:
            return await result(False, str(err).splitlines()[0])
        c = survey.current
        if c is None or _sha(c) != target.sha:
            where = f"{c.name} runs {_sha(c)[:7]}" if c is not None else "nothing runs"
            return await result(False, f"{where}, not {target.short_sha}")

        while True:
            progress.attempts += 1
            try:
                await self._api.run(c.reload)
            except DockerError as err:
                return await result(False, str(err))
            elapsed = time.monotonic() - started
            if _status(c) != "running":
                return await result(False, f"container {c.name} {_describe_exit(c)}")
            health = _state(c).get("Health")
            if not health:
                return await result(
                    False,
                    "no health check configured and the image has no HEALTHCHECK: "
                    "'unknown' is not healthy",
                )
            status = health.get("Status")
            if status == "healthy":
                return await result(True, f"healthy after {format_seconds(round(elapsed, 1))}")
            if status == "unhealthy":
                return await result(False, f"unhealthy: {_last_probe(health)}")
            if time.monotonic() >= deadline:
                last = _last_probe(health) if health.get("Log") else "no check finished yet"
                return await result(
                    False, f"still {status} after {format_seconds(timeout)}; last check: {last}"
                )
            await report(StepStatus.RUNNING, f"{status} ({int(elapsed)}s)")
            await asyncio.sleep(min(self._poll, max(deadline - time.monotonic(), 0)))

    async def diagnostics(self, target: DeployTarget) -> str:
        try:
            survey = await self._survey(target)
            ours = [c for c in survey.managed if _sha(c) == target.sha]
            if not ours:
                return ""
            # the named one is what ran last; otherwise the newest attempt
            c = next((c for c in ours if c.name == self.spec.container), None)
            if c is None:
                c = max(ours, key=_created_key)
            lines = await self._log_lines(c)
        except DeployerError as err:
            return f"could not read the container's logs: {str(err).splitlines()[0]}"
        head = f"container {c.name} ({target.short_sha}): {_describe_exit(c)}"
        if not lines:
            return f"{head}; no log output"
        return f"{head}; last {len(lines)} log lines:\n" + "\n".join(lines)

    async def close(self) -> None:
        await self._api.close()


def create_container(
    api: Any, spec: DockerSpec, image: str, *, name: str, labels: Mapping[str, str]
) -> str:
    """Create (not start) a container from ``image`` the way every release's is made; its id.

    Blocking: ``api`` is docker-py's low-level ``APIClient``. Public so that a baseline
    measured beside shipmate (``bench.rollback``) runs containers configured exactly alike.
    """
    bindings = {port: _host_binding(host) for port, host in spec.ports.items()}
    # The low-level call, because docker-py's containers.create() does not pass
    # stop_timeout on; its ports and port_bindings are built the same way here.
    host_config = api.create_host_config(
        # PID 1 ignores SIGTERM unless it installs a handler; an init forwards it,
        # so a stop takes milliseconds instead of the whole grace period.
        init=True,
        restart_policy={"Name": "no"},
        network_mode=spec.network,
        port_bindings=bindings or None,
    )
    created = api.create_container(
        image,
        name=name,
        labels=dict(labels),
        environment=dict(spec.env),
        ports=[tuple(port.split("/", 1)) for port in sorted(bindings)] or None,
        stop_timeout=spec.stop_seconds,
        host_config=host_config,
    )
    return str(created["Id"])


def _unreachable(err: BaseException) -> DockerUnreachable | None:
    """The DockerUnreachable behind ``err`` (a failed stop or start wraps it), if any."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [err]
    while todo:
        item = todo.pop()
        if item is None or any(item is s for s in seen):
            continue
        if isinstance(item, DockerUnreachable):
            return item
        seen.append(item)
        todo += [item.__cause__, item.__context__]
    return None


def _last_probe(health: Mapping[str, Any]) -> str:
    entries = health.get("Log") or []
    if not entries:
        return "no output"
    last = entries[-1]
    output = " ".join(str(last.get("Output", "")).split())
    if len(output) > 200:
        output = output[:199] + "…"
    return output or f"health check exited with code {last.get('ExitCode')}"
