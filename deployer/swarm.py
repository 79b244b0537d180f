"""The swarm backend: ``service update`` of one service to the sha's image.

The update is fenced by the service version read just before it: Docker refuses an update
based on an older version ("update out of sequence"), so a stale worker can never overwrite
a newer deploy. Swarm remembers only one previous spec, so a rollback is an ordinary deploy
of the last good sha; convergence is polled tightly so that it is as fast as Docker's own
``service update --rollback``.

Start-first updates are used where they can work. On the host network (or with ports
published in host mode) old and new task would bind the same port, the new one fails and
the update pauses, so those services are updated stop-first.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, NoReturn, TypeVar

from docker.types import (
    ContainerSpec,
    EndpointSpec,
    RollbackConfig,
    ServiceMode,
    TaskTemplate,
    UpdateConfig,
)

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
)
from deployer.dockerapi import DockerApi, DockerConflict, DockerError, DockerNotFound
from deployer.dockerrules import (
    container_port_problem,
    published_port_problem,
    service_name_problem,
    swarm_ports_problem,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

LABEL_MANAGED = "shipmate.managed"
LABEL_SHA = "shipmate.sha"

#: inspect_service / tasks JSON; docker-py returns plain dicts
Service = Mapping[str, Any]
Task = Mapping[str, Any]

NOT_A_MANAGER = "this Docker host is not a swarm manager (docker swarm init)"

# "complete" counts: a service task that exits 0 has still stopped serving.
_TASK_FAILED = frozenset({"failed", "rejected", "complete", "orphaned"})
_TASK_ENDED = _TASK_FAILED | {"shutdown", "remove"}
_PAUSED = frozenset({"paused", "rollback_paused"})
#: while we wait, any of these means the update we started is not going to finish
_UPDATE_FAILED = _PAUSED | {"rollback_started", "rollback_completed"}
_WANTED = frozenset({"running", "ready"})
_LOG_LINES = 20
_LOG_TIMEOUT = 15.0


@dataclass(frozen=True, slots=True)
class SwarmSpec:
    #: the ``kind:`` that selects this spec in shipmate.yml
    kind: ClassVar[Literal["swarm"]] = "swarm"

    service: str
    #: template: "shop:{sha}" ({sha}, {short_sha}, {env})
    image: str
    #: how long an update may take to converge
    update_timeout: float = 300.0
    #: the service runs "{registry}/{image}", so that every node can pull it
    registry: str | None = None
    # The rest only applies when shipmate creates the service; an existing one keeps its own.
    env: Mapping[str, str] = field(default_factory=dict, hash=False)
    #: target (container) port ("8080" or "8080/tcp") -> published port ("8081")
    ports: Mapping[str, str] = field(default_factory=dict, hash=False)
    network: str | None = None
    replicas: int = 1
    stop_timeout: float = 10.0

    def __post_init__(self) -> None:
        if expected := service_name_problem(self.service):
            raise ValueError(f"not a valid service name: {self.service!r} ({expected})")
        check_template(self.image)
        if not self.image.strip():
            raise ValueError("swarm image must not be empty")
        if not self.update_timeout > 0:
            raise ValueError(f"swarm update_timeout must be positive, not {self.update_timeout}")
        if self.replicas < 1:
            raise ValueError(f"swarm replicas must be at least 1, not {self.replicas}")
        if not self.stop_timeout >= 0:
            raise ValueError(f"swarm stop_timeout must be 0 or more, not {self.stop_timeout}")
        for name in self.env:
            if not name or "=" in name:
                raise ValueError(f"not an environment variable name: {name!r}")
        for target_port, published in self.ports.items():
            if expected := container_port_problem(target_port):
                raise ValueError(f"not a target port: {target_port!r} ({expected})")
            if expected := published_port_problem(published):
                raise ValueError(f"not a published port: {published!r} ({expected})")
        if problem := swarm_ports_problem(self.ports, self.network):
            raise ValueError(problem)


def _nanos(seconds: float) -> int:
    return round(seconds * 1_000_000_000)


def _bare_image(ref: str) -> str:
    """What to compare: a pinned digest and Docker Hub's implicit prefixes do not make a
    different image ("shop:abc@sha256:…" is still shop:abc)."""
    ref = ref.split("@", 1)[0]
    for prefix in ("docker.io/library/", "docker.io/", "library/"):
        if ref.startswith(prefix):
            return ref[len(prefix) :]
    return ref


def _task_image(task: Task) -> str:
    return str(task.get("Spec", {}).get("ContainerSpec", {}).get("Image", ""))


def _task_state(task: Task) -> str:
    return str(task.get("Status", {}).get("State", "unknown"))


def _task_error(task: Task) -> str:
    status = task.get("Status", {})
    error = status.get("Err") or status.get("Message") or ""
    return " ".join(str(error).split())


def _describe_task(task: Task) -> str:
    state = _task_state(task)
    error = _task_error(task)
    text = f"task {str(task.get('ID', '?'))[:12]} {state}"
    if state == "complete" and not error:
        error = "exited with code 0"
    return f"{text}: {error}" if error else text


def _sort_key(stamp: str) -> str:
    """RFC 3339 with nanoseconds, padded: Docker trims trailing zeros, so raw strings do not
    sort by time."""
    head, dot, rest = stamp.partition(".")
    if not dot:
        return stamp
    digits = rest.rstrip("Z")
    return f"{head}.{digits:0<9}Z"


def _task_time(task: Task) -> str:
    return _sort_key(str(task.get("Status", {}).get("Timestamp") or task.get("CreatedAt") or ""))


def _update_state(service: Service) -> tuple[str | None, str]:
    status = service.get("UpdateStatus") or {}
    state = status.get("State")
    return (str(state) if state else None), str(status.get("Message") or "")


def _expected_tasks(service: Service, tasks: list[Task], ref: str) -> int:
    mode = service.get("Spec", {}).get("Mode", {})
    replicated = mode.get("Replicated")
    if replicated is not None:
        return int(replicated.get("Replicas", 1))
    # global mode: one per eligible node, which only the scheduler knows
    return max(1, sum(1 for t in tasks if t.get("DesiredState") == "running" and _same(ref, t)))


def _same(ref: str, task: Task) -> bool:
    return _bare_image(_task_image(task)) == _bare_image(ref)


@dataclass(frozen=True, slots=True)
class _Tally:
    """The service's tasks seen against one image."""

    expected: int
    running: int
    starting: int
    #: tasks of other images still meant to run (the update is not through yet)
    stale: int
    running_tasks: tuple[Task, ...]
    #: failed tasks of the image that were not there when we started watching
    failures: tuple[Task, ...]

    @property
    def converged(self) -> bool:
        return self.running >= self.expected and self.stale == 0

    def progress(self) -> str:
        text = f"{self.running}/{self.expected} tasks updated"
        if self.starting:
            text += f", {self.starting} starting"
        return text


def _tally(service: Service, tasks: list[Task], ref: str, known: frozenset[str]) -> _Tally:
    running: list[Task] = []
    starting = stale = 0
    failures: list[Task] = []
    for task in tasks:
        desired = task.get("DesiredState")
        state = _task_state(task)
        if not _same(ref, task):
            if desired in _WANTED and state not in _TASK_ENDED:
                stale += 1
            continue
        if desired == "running" and state == "running":
            running.append(task)
        elif desired in _WANTED and state not in _TASK_ENDED:
            starting += 1
        if state in _TASK_FAILED and task.get("ID") not in known:
            failures.append(task)
    failures.sort(key=_task_time)
    return _Tally(
        expected=_expected_tasks(service, tasks, ref),
        running=len(running),
        starting=starting,
        stale=stale,
        running_tasks=tuple(running),
        failures=tuple(failures),
    )


def _parse_log_line(raw: bytes | str) -> tuple[str, str, str]:
    """(sortable timestamp, task id, message) of a ``service_logs(details=True,
    timestamps=True)`` line: "<time> com.docker.swarm.node.id=…,…task.id=… <message>"."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    text = text.rstrip("\n")
    stamp, _, rest = text.partition(" ")
    task_id = ""
    if rest.startswith("com.docker.swarm."):
        details, _, rest = rest.partition(" ")
        for pair in details.split(","):
            key, _, value = pair.partition("=")
            if key == "com.docker.swarm.task.id":
                task_id = value
    return _sort_key(stamp), task_id, rest


class SwarmBackend:
    kind = "swarm"

    def __init__(
        self,
        spec: SwarmSpec,
        api: DockerApi,
        *,
        poll_interval: float = 0.05,
        settle: float = 0.25,
        monitor: float = 5.0,
        log_lines: int = _LOG_LINES,
    ) -> None:
        self.spec = spec
        self._api = api
        self._poll = poll_interval
        # How long converged tasks are watched before the deploy counts as done: a task
        # that dies on start is reported "running" first, ~0.1 s before "failed".
        self._settle = settle
        # Swarm's own window for counting a task failure against the update (then it
        # pauses). deploy() does not wait it out: the health check covers that time.
        self._monitor = monitor
        self._log_count = log_lines
        self._network_drivers: dict[str, str] = {}

    # -- plumbing -------------------------------------------------------------------------

    def image_ref(self, target: DeployTarget) -> str:
        ref = fill_text(self.spec.image, target)
        registry = self.spec.registry
        if registry is None:
            return ref
        registry = registry.rstrip("/")
        return ref if ref.startswith(registry + "/") else f"{registry}/{ref}"

    async def _call(self, fn: Callable[[], T]) -> T:
        try:
            return await self._api.run(fn)
        except DockerError as err:
            # The engine's 503 text ("This node is not a swarm manager. Use …") names CLI
            # commands for joining too; only init applies to shipmate's setup.
            if "not a swarm manager" in str(err):
                raise DeployError(NOT_A_MANAGER) from None
            raise

    async def _inspect(self, method: str, ident: str) -> Mapping[str, Any]:
        # The client is reached inside the thread: the first use connects, which blocks.
        result: Mapping[str, Any] = await self._call(
            lambda: getattr(self._api.client.api, method)(ident)
        )
        return result

    async def _read_service(self) -> Service | None:
        """The service as it is now, or None. Its ``Version`` is what fences the update."""
        name = self.spec.service
        try:
            service: Service = await self._call(lambda: self._api.client.api.inspect_service(name))
        except DockerNotFound:
            return None
        # inspect also matches an ID prefix; only the exact name is ours
        if service.get("Spec", {}).get("Name") != name:
            return None
        return service

    async def _snapshot(self, service_id: str) -> tuple[Service, list[Task]]:
        def look() -> tuple[Service, list[Task]]:
            api = self._api.client.api
            return api.inspect_service(service_id), api.tasks(filters={"service": service_id})

        try:
            return await self._call(look)
        except DockerNotFound:
            raise DeployError(f"service {self.spec.service} was removed") from None

    async def _log_lines(self, service_id: str, task_ids: set[str]) -> list[str]:
        """The last log lines of those tasks, oldest first; best effort."""
        lines = self._log_count

        def fetch() -> list[bytes | str]:
            return list(
                self._api.client.api.service_logs(
                    service_id,
                    stdout=True,
                    stderr=True,
                    details=True,
                    timestamps=True,
                    tail=lines,
                )
            )

        try:
            # Service logs come through the swarm's log broker and have been known to
            # hang when a node is gone; the diagnosis must not hold up the deploy.
            async with asyncio.timeout(_LOG_TIMEOUT):
                raw = await self._call(fetch)
        except (DeployerError, TimeoutError) as err:
            log.warning("could not read the logs of %s: %s", self.spec.service, err)
            return []
        parsed = [_parse_log_line(line) for line in raw]
        ours = sorted((p for p in parsed if p[1] in task_ids), key=lambda p: p[0])
        return [message for _, _, message in ours[-lines:]]

    async def _update_order(self, task_template: Mapping[str, Any], service: Service) -> str:
        """ "stop-first" where old and new task would compete for the same host port."""
        ports = service.get("Spec", {}).get("EndpointSpec", {}).get("Ports") or []
        if any(p.get("PublishMode") == "host" for p in ports):
            return "stop-first"
        for attachment in task_template.get("Networks") or []:
            target = str(attachment.get("Target", ""))
            if target == "host":
                return "stop-first"
            if target not in self._network_drivers:
                try:
                    network = await self._inspect("inspect_network", target)
                except DockerNotFound:
                    continue
                self._network_drivers[target] = str(network.get("Driver", ""))
            if self._network_drivers[target] == "host":
                return "stop-first"
        return "start-first"

    def _update_config(self, order: str) -> UpdateConfig:
        return UpdateConfig(
            parallelism=1, order=order, failure_action="pause", monitor=_nanos(self._monitor)
        )

    # -- artifact -------------------------------------------------------------------------

    async def check_artifact(self, target: DeployTarget) -> None:
        ref = self.image_ref(target)
        if await self._api.image_exists(ref):
            return
        if self.spec.registry is None:
            raise ArtifactMissing(
                f"image {ref} does not exist on this Docker host; shipmate never builds "
                "images — build and tag it first"
            )
        try:
            await self._api.pull(ref)
        except DockerError as err:
            raise ArtifactMissing(
                f"image {ref} is not on this Docker host and pulling it failed: {err}"
            ) from err

    # -- deploy ---------------------------------------------------------------------------

    async def deploy(self, target: DeployTarget, reporter: Reporter) -> None:
        ref = self.image_ref(target)
        await reporter.step("update", StepStatus.RUNNING, f"{self.spec.service} → {ref}")
        try:
            await self._deploy(target, ref, reporter)
        except DeployerError as err:
            await reporter.step("update", StepStatus.FAILED, str(err).splitlines()[0])
            if isinstance(err, DeployError):
                raise
            raise DeployError(str(err)) from None

    async def _deploy(self, target: DeployTarget, ref: str, reporter: Reporter) -> None:
        started = time.monotonic()
        deadline = started + self.spec.update_timeout
        service = await self._read_service()
        if service is None:
            service_id = await self._create(target, ref)
            known: frozenset[str] = frozenset()
        else:
            service_id = str(service["ID"])
            _, tasks = await self._snapshot(service_id)
            known = frozenset(str(t.get("ID")) for t in tasks)
            spec = service["Spec"]
            current = str(spec["TaskTemplate"]["ContainerSpec"].get("Image", ""))
            state, _ = _update_state(service)
            if _bare_image(current) == _bare_image(ref):
                if state not in _PAUSED and _tally(service, tasks, ref, known).converged:
                    if not self._labelled(spec, target):
                        await self._update(service, target, ref, force=False)
                    await reporter.step(
                        "update", StepStatus.OK, f"{self.spec.service} already runs {ref}"
                    )
                    return
                if state in _UPDATE_FAILED:
                    # The same image failed before (or is being rolled back to by hand): run
                    # its update again for a verdict of our own (a retried job lands here).
                    await self._update(service, target, ref, force=True)
                # else another deploy of this very image is under way: wait for it
            else:
                await self._update(service, target, ref, force=False)
        await self._converge(service_id, ref, known, reporter, started, deadline)

    def _labelled(self, spec: Mapping[str, Any], target: DeployTarget) -> bool:
        labels = spec.get("Labels") or {}
        return labels.get(LABEL_MANAGED) == "1" and labels.get(LABEL_SHA) == target.sha

    async def _create(self, target: DeployTarget, ref: str) -> str:
        spec = self.spec
        networks = [spec.network] if spec.network else None
        template = TaskTemplate(
            container_spec=ContainerSpec(
                ref,
                env=dict(spec.env) or None,
                # PID 1 ignores SIGTERM unless it installs a handler; an init forwards it,
                # so a stop-first update does not wait out the grace period.
                init=True,
                stop_grace_period=_nanos(spec.stop_timeout),
            ),
            networks=networks,
        )
        endpoint = None
        if spec.ports:
            published: dict[int, tuple[int, str]] = {}
            for target_port, host_port in spec.ports.items():
                number, _, protocol = target_port.partition("/")
                published[int(host_port)] = (int(number), protocol or "tcp")
            endpoint = EndpointSpec(ports=published)
        order = "stop-first" if spec.network == "host" else "start-first"
        config = self._update_config(order)
        rollback = RollbackConfig(
            parallelism=1, order=order, failure_action="pause", monitor=_nanos(self._monitor)
        )
        try:
            created: Mapping[str, Any] = await self._call(
                lambda: self._api.client.api.create_service(
                    template,
                    name=spec.service,
                    labels={LABEL_MANAGED: "1", LABEL_SHA: target.sha},
                    mode=ServiceMode("replicated", replicas=spec.replicas),
                    update_config=config,
                    rollback_config=rollback,
                    endpoint_spec=endpoint,
                )
            )
        except DockerConflict:
            raise DeployError(
                f"service {spec.service} was created by someone else while this deploy was "
                "starting; nothing was changed"
            ) from None
        return str(created["ID"])

    async def _update(
        self, service: Service, target: DeployTarget, ref: str, *, force: bool
    ) -> None:
        """Update exactly the spec that was read, at the version that was read."""
        spec = service["Spec"]
        version = int(service["Version"]["Index"])
        template = copy.deepcopy(dict(spec["TaskTemplate"]))
        template["ContainerSpec"]["Image"] = ref
        if force:
            template["ForceUpdate"] = int(template.get("ForceUpdate") or 0) + 1
        if not template.get("Networks") and spec.get("Networks"):
            # services created through API < 1.25 keep networks outside the task template
            template["Networks"] = spec["Networks"]
        labels = {**(spec.get("Labels") or {}), LABEL_MANAGED: "1", LABEL_SHA: target.sha}
        config = self._update_config(await self._update_order(template, service))

        def update() -> Mapping[str, Any]:
            # Every part of the spec is passed: update_service sends None for what it is
            # not given, which would reset it (a missing Mode means one replica).
            result: Mapping[str, Any] = self._api.client.api.update_service(
                service["ID"],
                version,
                task_template=template,
                name=spec["Name"],
                labels=labels,
                mode=spec.get("Mode"),
                update_config=config,
                rollback_config=spec.get("RollbackConfig"),
                endpoint_spec=spec.get("EndpointSpec"),
            )
            return result

        try:
            result = await self._call(update)
        except DockerNotFound:
            raise DeployError(
                f"service {self.spec.service} was removed while this deploy was starting; "
                "nothing was changed"
            ) from None
        except DockerError as err:
            if "out of sequence" in str(err):
                raise DeployError(
                    f"service {self.spec.service} was changed by someone else while this "
                    "deploy was starting (update out of sequence); nothing was changed"
                ) from None
            raise
        trace.emit("swarm.update.sent", service=self.spec.service, image=ref, sha=target.sha)
        for warning in (result or {}).get("Warnings") or []:
            log.info("updating %s: %s", self.spec.service, warning)

    async def _converge(
        self,
        service_id: str,
        ref: str,
        known: frozenset[str],
        reporter: Reporter,
        started: float,
        deadline: float,
    ) -> None:
        reported = ""
        converged_at: float | None = None
        while True:
            service, tasks = await self._snapshot(service_id)
            tally = _tally(service, tasks, ref, known)
            state, message = _update_state(service)
            if tally.failures or state in _UPDATE_FAILED:
                await self._fail(service_id, ref, tally, tasks, state, message, reporter)
            now = time.monotonic()
            if tally.converged:
                # "updating" here is only swarm's monitor window after the last task.
                if converged_at is None:
                    converged_at = now
                    trace.emit("swarm.converged", service=self.spec.service, image=ref)
                if now - converged_at >= self._settle:
                    took = format_seconds(round(now - started, 1))
                    await reporter.step(
                        "update",
                        StepStatus.OK,
                        f"{self.spec.service} runs {ref} ({tally.running}/{tally.expected} tasks) in {took}",
                    )
                    return
            else:
                converged_at = None
            if now >= deadline:
                waiting = sorted(
                    (
                        t
                        for t in tasks
                        if _same(ref, t)
                        and t.get("DesiredState") in _WANTED
                        and _task_state(t) != "running"
                    ),
                    key=_task_time,
                )
                # e.g. "pending: no suitable node (host-mode port already in use on 1 node)"
                last = f"; {_describe_task(waiting[-1])}" if waiting else ""
                raise DeployError(
                    f"service {self.spec.service} did not converge on {ref} within "
                    f"{format_seconds(self.spec.update_timeout)}: {tally.progress()}{last}"
                )
            progress = tally.progress()
            if progress != reported:
                reported = progress
                await reporter.step("update", StepStatus.RUNNING, progress)
            await asyncio.sleep(min(self._poll, max(deadline - now, 0)))

    async def _fail(
        self,
        service_id: str,
        ref: str,
        tally: _Tally,
        tasks: list[Task],
        state: str | None,
        message: str,
        reporter: Reporter,
    ) -> NoReturn:
        if tally.failures:
            reason = f"a task of {ref} failed: {_task_error(tally.failures[-1]) or _task_state(tally.failures[-1])}"
        else:
            reason = f"the update is {state.replace('_', ' ') if state else 'stuck'}"
        if state in _UPDATE_FAILED and message:
            reason += f" ({message})"
        ids = {str(t.get("ID")) for t in tasks if _same(ref, t)}
        lines = await self._log_lines(service_id, ids)
        text = f"service {self.spec.service}: {reason}"
        if lines:
            await reporter.detail(f"last {len(lines)} log lines of {ref}:\n" + "\n".join(lines))
            text += ":\n" + "\n".join(f"  {line}" for line in lines[-5:])
        raise DeployError(text)

    # -- health and diagnostics -------------------------------------------------------------

    async def _unhealthy_containers(self, tasks: tuple[Task, ...]) -> tuple[int, str | None]:
        """(how many are still starting, why one is unhealthy). Swarm only reports a task
        running once its HEALTHCHECK passed, but a container can turn unhealthy later."""
        starting = 0
        for task in tasks:
            container_id = task.get("Status", {}).get("ContainerStatus", {}).get("ContainerID")
            if not container_id:
                continue
            try:
                state = await self._inspect("inspect_container", str(container_id))
            except DockerNotFound:
                continue  # on another node: swarm's task state is all there is
            health = (state.get("State") or {}).get("Health") or {}
            status = health.get("Status")
            if status == "unhealthy":
                entries = health.get("Log") or [{}]
                output = " ".join(str(entries[-1].get("Output", "")).split())[:200]
                return (
                    starting,
                    f"container {str(container_id)[:12]} is unhealthy: {output or 'no output'}",
                )
            if status == "starting":
                starting += 1
        return starting, None

    async def wait_healthy(
        self,
        target: DeployTarget,
        reporter: Reporter,
        *,
        timeout: float,  # noqa: ASYNC109 (the NativeHealth protocol's signature)
    ) -> HealthResult:
        ref = self.image_ref(target)
        progress = HealthProgress(reporter)
        started = progress.started
        deadline = started + timeout
        report, result = progress.report, progress.result

        try:
            service = await self._read_service()
            if service is None:
                return await result(False, f"service {self.spec.service} does not exist")
            current = str(service["Spec"]["TaskTemplate"]["ContainerSpec"].get("Image", ""))
            if _bare_image(current) != _bare_image(ref):
                return await result(False, f"service {self.spec.service} runs {current}, not {ref}")
            service_id = str(service["ID"])
            _, tasks = await self._snapshot(service_id)
            known = frozenset(str(t.get("ID")) for t in tasks)
            await report(StepStatus.RUNNING, f"waiting for the tasks of {ref}")
            while True:
                progress.attempts += 1
                service, tasks = await self._snapshot(service_id)
                tally = _tally(service, tasks, ref, known)
                state, message = _update_state(service)
                elapsed = time.monotonic() - started
                if tally.failures:
                    return await result(False, _describe_task(tally.failures[-1]))
                if state in _UPDATE_FAILED:
                    return await result(False, f"update {state.replace('_', ' ')}: {message}")
                starting, unhealthy = await self._unhealthy_containers(tally.running_tasks)
                if unhealthy is not None:
                    return await result(False, unhealthy)
                if tally.converged and not starting:
                    return await result(
                        True,
                        f"{tally.running}/{tally.expected} tasks running after "
                        f"{format_seconds(round(elapsed, 1))}",
                    )
                waiting = (
                    f"{tally.running}/{tally.expected} tasks running"
                    + (
                        f", {tally.starting + starting} starting"
                        if tally.starting + starting
                        else ""
                    )
                    + (f", {tally.stale} of another image" if tally.stale else "")
                )
                if time.monotonic() >= deadline:
                    return await result(False, f"only {waiting} after {format_seconds(timeout)}")
                await report(StepStatus.RUNNING, waiting)
                await asyncio.sleep(min(self._poll, max(deadline - time.monotonic(), 0)))
        except DeployerError as err:
            return await result(False, str(err).splitlines()[0])

    async def diagnostics(self, target: DeployTarget) -> str:
        ref = self.image_ref(target)
        try:
            service = await self._read_service()
            if service is None:
                return f"service {self.spec.service} does not exist"
            service_id = str(service["ID"])
            _, tasks = await self._snapshot(service_id)
            ours = sorted((t for t in tasks if _same(ref, t)), key=_task_time)
            if not ours:
                return f"service {self.spec.service} has no tasks of {ref}"
            lines = await self._log_lines(service_id, {str(t.get("ID")) for t in ours})
        except DeployerError as err:
            return f"could not inspect service {self.spec.service}: {str(err).splitlines()[0]}"
        state, message = _update_state(service)
        head = [f"service {self.spec.service}, tasks of {ref}:"]
        head += [f"  {_describe_task(t)}" for t in ours[-5:]]
        if state in _UPDATE_FAILED:
            head.append(f"update {state.replace('_', ' ')}: {message}")
        if not lines:
            return "\n".join([*head, "no log output"])
        return "\n".join([*head, f"last {len(lines)} log lines:", *lines])

    async def close(self) -> None:
        # The DockerApi is shared by every Docker-based environment; whoever made it (the
        # composition root) closes it once, after all backends are done.
        return None
