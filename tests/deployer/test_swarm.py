"""The swarm backend against a real single-node swarm: busybox images, host networking."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import docker
import docker.errors
import pytest
from aiohttp import web
from docker.types import ContainerSpec, ServiceMode, TaskTemplate

from bot.domain.models import StepStatus
from bot.local.demoimage import ImageKind
from deployer.base import (
    ArtifactMissing,
    Backend,
    DeployError,
    DeployTarget,
    Diagnostics,
    NativeHealth,
)
from deployer.dockerapi import DockerApi
from deployer.swarm import LABEL_MANAGED, LABEL_SHA, NOT_A_MANAGER, SwarmBackend, SwarmSpec
from deployer.testing import RecordingReporter
from tests.conftest import free_port
from tests.dockerkit import DockerKit, docker_engine, swarm  # noqa: F401

ENV = "staging"


def new_target() -> DeployTarget:
    return DeployTarget(env=ENV, sha=secrets.token_hex(20))


@pytest.fixture
def kit(swarm: docker.DockerClient) -> Iterator[DockerKit]:  # noqa: F811
    kit = DockerKit(swarm)
    yield kit
    for attempt in range(5):
        try:
            kit.cleanup()
            return
        except docker.errors.NotFound:
            # cleanup lists every container on the engine, and docker-py's list() fetches
            # each one: a task container swarm prunes meanwhile makes it raise NotFound
            if attempt == 4:
                raise


@pytest.fixture
async def api(swarm: docker.DockerClient) -> AsyncIterator[DockerApi]:  # noqa: F811
    api = DockerApi(swarm)
    yield api
    await api.close()  # a given client stays open for the other tests


class Interrupted(SwarmBackend):
    """Runs ``intrude`` right after the backend has read the service: someone else's update
    landing between our read and our write."""

    intrude: Callable[[], None] | None = None

    async def _read_service(self) -> Any:
        service = await super()._read_service()
        intrude, self.intrude = self.intrude, None
        if intrude is not None and service is not None:
            await asyncio.to_thread(intrude)
        return service


@dataclasses.dataclass
class Setup:
    kit: DockerKit
    backend: SwarmBackend
    spec: SwarmSpec
    repository: str
    port: int

    @property
    def client(self) -> docker.DockerClient:
        return self.kit.client

    async def build(self, target: DeployTarget, kind: ImageKind | None = None) -> str:
        for attempt in range(3):
            try:
                return await asyncio.to_thread(
                    self.kit.build, self.repository, target.sha, kind or ImageKind()
                )
            except docker.errors.BuildError:
                # The legacy builder fails with "unknown parent image ID" when another test
                # run's cleanup removed a cached layer mid-build; a rebuild gets past it.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def service(self) -> dict[str, Any]:
        result: dict[str, Any] = self.client.api.inspect_service(self.spec.service)
        return result

    def tasks(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.client.api.tasks(
            filters={"service": self.service()["ID"]}
        )
        return result

    def image(self) -> str:
        return str(self.service()["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"])

    def converged_on(self, image: str) -> bool:
        tasks = self.tasks()
        running = [
            t
            for t in tasks
            if t["DesiredState"] == "running"
            and t["Status"]["State"] == "running"
            and t["Spec"]["ContainerSpec"]["Image"] == image
        ]
        others = [
            t
            for t in tasks
            if t["DesiredState"] in ("running", "ready")
            and t["Spec"]["ContainerSpec"]["Image"] != image
            and t["Status"]["State"] not in ("shutdown", "failed", "rejected", "complete")
        ]
        return len(running) == self.spec.replicas and not others


def make_setup(
    kit: DockerKit, api: DockerApi, backend: type[SwarmBackend] = SwarmBackend, **spec: Any
) -> Setup:
    repository = kit.name("shop")
    port = free_port()
    the_spec = SwarmSpec(
        **{
            "service": kit.name("web"),
            "image": repository + ":{sha}",
            "env": {"PORT": str(port)},
            "network": "host",
            "stop_timeout": 0.2,
            "update_timeout": 60.0,
            **spec,
        }
    )
    return Setup(kit, backend(the_spec, api), the_spec, repository, port)


def wait_for(predicate: Callable[[], bool], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        time.sleep(0.05)


def _get(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=1) as response:
            return str(response.read().decode().strip())
    except (urllib.error.URLError, OSError):
        return None


async def served(port: int) -> str | None:
    return await asyncio.to_thread(_get, port)


async def wait_served(port: int, version: str, *, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while (seen := await served(port)) != version:
        if time.monotonic() > deadline:
            raise AssertionError(f"127.0.0.1:{port} serves {seen!r}, not {version!r}")
        await asyncio.sleep(0.05)


async def test_the_backend_satisfies_the_protocols(kit: DockerKit, api: DockerApi) -> None:
    backend: Backend = make_setup(kit, api).backend
    assert isinstance(backend, NativeHealth)
    assert isinstance(backend, Diagnostics)
    assert backend.kind == "swarm"


async def test_first_deploy_creates_the_service(kit: DockerKit, api: DockerApi) -> None:
    s = make_setup(kit, api)
    target = new_target()
    image = await s.build(target)
    await s.backend.check_artifact(target)
    reporter = RecordingReporter()

    await s.backend.deploy(target, reporter)

    assert await served(s.port) == target.short_sha
    spec = s.service()["Spec"]
    assert spec["Labels"] == {LABEL_MANAGED: "1", LABEL_SHA: target.sha}
    container = spec["TaskTemplate"]["ContainerSpec"]
    assert container["Image"] == image
    assert container["Init"] is True
    assert container["StopGracePeriod"] == 200_000_000
    assert spec["Mode"] == {"Replicated": {"Replicas": 1}}
    # host network: start-first would have both tasks bind the same port
    assert spec["UpdateConfig"]["Order"] == "stop-first"
    assert spec["UpdateConfig"]["FailureAction"] == "pause"
    assert reporter.statuses("update")[0] is StepStatus.RUNNING
    assert reporter.statuses("update")[-1] is StepStatus.OK


async def test_update_and_rollback_converge(
    kit: DockerKit,
    api: DockerApi,
) -> None:
    s = make_setup(kit, api)
    old, new = new_target(), new_target()
    await s.build(old)
    new_image = await s.build(new)
    await s.backend.deploy(old, RecordingReporter())
    version_before = s.service()["Version"]["Index"]

    reporter = RecordingReporter()
    await s.backend.deploy(new, reporter)
    assert await served(s.port) == new.short_sha
    assert s.image() == new_image
    assert s.service()["Spec"]["Labels"][LABEL_SHA] == new.sha
    assert s.service()["Version"]["Index"] > version_before
    assert any("tasks updated" in step.detail for step in reporter.steps)

    # rollback: the runner deploys the last good sha through the same path
    ours, bare = await rollbacks(s, old, new)
    await wait_served(s.port, new.short_sha)  # where Docker's rollback went back to
    print(
        f"\nhost network, stop-first: rollback through deploy() {ours:.2f}s; "
        f"bare `docker service update --rollback` {bare:.2f}s"
    )


async def test_start_first_rollback_off_the_host_network(
    kit: DockerKit,
    api: DockerApi,
) -> None:
    # Without the host network each task has its own network namespace (unreachable from
    # here, so only task states are checked): old and new can overlap.
    s = make_setup(kit, api, network=None)
    old, new = new_target(), new_target()
    await s.build(old)
    await s.build(new)
    await s.backend.deploy(old, RecordingReporter())
    assert s.service()["Spec"]["UpdateConfig"]["Order"] == "start-first"
    await s.backend.deploy(new, RecordingReporter())
    assert await asyncio.to_thread(s.converged_on, s.backend.image_ref(new))

    ours, bare = await rollbacks(s, old, new)
    print(
        f"\nno network, start-first: rollback through deploy() {ours:.2f}s; "
        f"bare `docker service update --rollback` {bare:.2f}s"
    )


async def rollbacks(s: Setup, old: DeployTarget, new: DeployTarget) -> tuple[float, float]:
    """Seconds for deploy(old) while ``new`` runs, then for Docker's own rollback (back to
    ``new``, the one previous spec it remembers), each until the tasks converged."""
    old_image, new_image = s.backend.image_ref(old), s.backend.image_ref(new)
    started = time.monotonic()
    await s.backend.deploy(old, RecordingReporter())
    ours = time.monotonic() - started
    assert s.image() == old_image
    assert s.service()["Spec"]["Labels"][LABEL_SHA] == old.sha
    assert await asyncio.to_thread(s.converged_on, old_image)
    if s.spec.network == "host":
        assert await served(s.port) == old.short_sha

    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        "docker",
        "service",
        "update",
        "--rollback",
        "--detach",
        s.spec.service,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    while not await asyncio.to_thread(s.converged_on, new_image):
        assert time.monotonic() - started < 60, "docker service update --rollback did not converge"
        await asyncio.sleep(0.02)
    return ours, time.monotonic() - started


async def test_redeploying_the_running_sha_changes_nothing(
    kit: DockerKit,
    api: DockerApi,
) -> None:
    s = make_setup(kit, api)
    target = new_target()
    await s.build(target)
    await s.backend.deploy(target, RecordingReporter())
    version = s.service()["Version"]["Index"]
    tasks = {t["ID"] for t in s.tasks()}

    reporter = RecordingReporter()
    await s.backend.deploy(target, reporter)

    assert s.service()["Version"]["Index"] == version
    assert {t["ID"] for t in s.tasks()} == tasks
    last = reporter.last("update")
    assert last is not None and last.status is StepStatus.OK
    assert "already runs" in last.detail
    assert await served(s.port) == target.short_sha


async def test_a_service_shipmate_did_not_create_is_adopted(
    kit: DockerKit,
    api: DockerApi,
) -> None:
    s = make_setup(kit, api)
    theirs, ours = new_target(), new_target()
    their_image = await s.build(theirs)
    await s.build(ours)
    container = ContainerSpec(
        their_image,
        env={"PORT": str(s.port), "THEIRS": "1"},
        init=True,
        stop_grace_period=200_000_000,
    )
    s.client.api.create_service(
        TaskTemplate(container, networks=["host"]),
        name=s.spec.service,
        labels={"team": "shop"},
        mode=ServiceMode("replicated", replicas=1),
    )
    await asyncio.to_thread(wait_for, lambda: s.converged_on(their_image))

    # the image it already runs: only the labels change, no task is restarted
    tasks = {t["ID"] for t in s.tasks()}
    await s.backend.deploy(theirs, RecordingReporter())
    assert s.service()["Spec"]["Labels"] == {
        "team": "shop",
        LABEL_MANAGED: "1",
        LABEL_SHA: theirs.sha,
    }
    assert {t["ID"] for t in s.tasks()} == tasks

    await s.backend.deploy(ours, RecordingReporter())
    spec = s.service()["Spec"]
    assert spec["Labels"] == {"team": "shop", LABEL_MANAGED: "1", LABEL_SHA: ours.sha}
    assert spec["TaskTemplate"]["ContainerSpec"]["Env"] == [f"PORT={s.port}", "THEIRS=1"]
    assert spec["UpdateConfig"]["Order"] == "stop-first"  # it is on the host network
    assert await served(s.port) == ours.short_sha


async def test_a_stale_version_is_refused_and_nothing_changes(
    kit: DockerKit,
    api: DockerApi,
) -> None:
    s = make_setup(kit, api, backend=Interrupted)
    old, new = new_target(), new_target()
    old_image = await s.build(old)
    await s.build(new)
    await s.backend.deploy(old, RecordingReporter())
    service_id = s.service()["ID"]

    def someone_else() -> None:
        # a newer write at the version we read, e.g. another worker's deploy
        current = s.service()
        s.client.api.update_service(
            service_id,
            current["Version"]["Index"],
            fetch_current_spec=True,
            labels={**current["Spec"]["Labels"], "owner": "someone-else"},
        )

    assert isinstance(s.backend, Interrupted)
    s.backend.intrude = someone_else
    reporter = RecordingReporter()
    with pytest.raises(DeployError, match=r"changed by someone else.*out of sequence"):
        await s.backend.deploy(new, reporter)

    spec = s.service()["Spec"]
    assert spec["TaskTemplate"]["ContainerSpec"]["Image"] == old_image
    assert spec["Labels"]["owner"] == "someone-else"
    assert spec["Labels"][LABEL_SHA] == old.sha
    assert reporter.statuses("update")[-1] is StepStatus.FAILED
    assert await served(s.port) == old.short_sha


async def test_a_crashing_image_fails_with_the_task_error_and_its_logs(
    kit: DockerKit,
    api: DockerApi,
) -> None:
    s = make_setup(kit, api)
    good, bad = new_target(), new_target()
    await s.build(good)
    bad_image = await s.build(bad, ImageKind(crash=True))
    await s.backend.deploy(good, RecordingReporter())

    reporter = RecordingReporter()
    with pytest.raises(
        DeployError, match=r"task of .* failed: task: non-zero exit \(3\)"
    ) as caught:
        await s.backend.deploy(bad, reporter)
    assert "fatal: cannot connect to the database" in str(caught.value)

    crashed = [t["ID"] for t in s.tasks() if t["Spec"]["ContainerSpec"]["Image"] == bad_image]
    logged = [
        line.decode().rstrip("\n").split(" ", 2)[-1]
        for line in s.client.api.service_logs(
            s.spec.service, stdout=True, stderr=True, details=True, timestamps=True
        )
        if any(task in line.decode() for task in crashed)
    ]
    assert logged, "the crashing image wrote nothing to its log"
    assert logged[-1] in "\n".join(reporter.details)
    assert logged[-1] in str(caught.value)
    assert reporter.statuses("update")[-1] is StepStatus.FAILED

    diagnosis = await s.backend.diagnostics(bad)
    assert "non-zero exit" in diagnosis
    assert logged[-1] in diagnosis

    # the runner's rollback: deploying the good sha again supersedes the paused update
    await s.backend.deploy(good, RecordingReporter())
    assert await served(s.port) == good.short_sha
    assert s.service()["UpdateStatus"]["State"] != "paused"


async def test_wait_healthy_with_a_healthcheck_image(kit: DockerKit, api: DockerApi) -> None:
    s = make_setup(kit, api)
    target = new_target()
    await s.build(target, ImageKind(healthcheck=True))
    deploy_reporter = RecordingReporter()
    await s.backend.deploy(target, deploy_reporter)
    # swarm holds the task in "starting" until its HEALTHCHECK passes
    assert any("starting" in step.detail for step in deploy_reporter.steps)

    reporter = RecordingReporter()
    result = await s.backend.wait_healthy(target, reporter, timeout=30)

    assert result.healthy, result.detail
    assert "1/1 tasks running" in result.detail
    assert reporter.statuses("health")[-1] is StepStatus.OK
    (task,) = [t for t in s.tasks() if t["Status"]["State"] == "running"]
    container = s.client.api.inspect_container(task["Status"]["ContainerStatus"]["ContainerID"])
    assert container["State"]["Health"]["Status"] == "healthy"

    other = await s.backend.wait_healthy(new_target(), RecordingReporter(), timeout=5)
    assert not other.healthy
    assert "not " in other.detail and s.spec.service in other.detail


async def test_an_image_whose_healthcheck_fails_does_not_deploy(
    kit: DockerKit,
    api: DockerApi,
) -> None:
    s = make_setup(kit, api)
    target = new_target()
    await s.build(target, ImageKind(healthy=False, healthcheck=True))

    with pytest.raises(DeployError, match="unhealthy container"):
        await s.backend.deploy(target, RecordingReporter())

    result = await s.backend.wait_healthy(target, RecordingReporter(), timeout=0.5)
    assert not result.healthy


async def test_an_update_that_does_not_converge_in_time(
    kit: DockerKit,
    api: DockerApi,
) -> None:
    s = make_setup(kit, api, update_timeout=1.0)
    target = new_target()
    # its HEALTHCHECK fails, but only after ~3 s: until then swarm says "starting"
    await s.build(target, ImageKind(healthy=False, healthcheck=True))
    with pytest.raises(DeployError, match=r"did not converge .* within 1s: 0/1 tasks updated"):
        await s.backend.deploy(target, RecordingReporter())


async def test_check_artifact_names_a_missing_image(kit: DockerKit, api: DockerApi) -> None:
    s = make_setup(kit, api)
    target = new_target()
    with pytest.raises(ArtifactMissing, match=f"image {s.repository}:{target.sha} does not exist"):
        await s.backend.check_artifact(target)

    # with a registry, the image is pulled from there; nothing listens on this one
    registry = f"127.0.0.1:{free_port()}"
    r = make_setup(kit, api, registry=registry)
    ref = f"{registry}/{r.repository}:{target.sha}"
    assert r.backend.image_ref(target) == ref
    with pytest.raises(
        ArtifactMissing, match=f"image {ref} is not on this Docker host and pulling it failed"
    ):
        await r.backend.check_artifact(target)


async def test_a_host_that_is_not_a_swarm_manager() -> None:
    # What the engine answers on a host without swarm mode, from a local stand-in for it.
    async def refuse(request: web.Request) -> web.Response:
        body = {
            "message": 'This node is not a swarm manager. Use "docker swarm init" or '
            '"docker swarm join" to connect this node to swarm and try again.'
        }
        return web.Response(status=503, text=json.dumps(body), content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    client = docker.DockerClient(base_url=f"tcp://127.0.0.1:{port}", version="1.41", timeout=5)
    try:
        backend = SwarmBackend(SwarmSpec(service="web", image="shop:{sha}"), DockerApi(client))
        reporter = RecordingReporter()
        with pytest.raises(DeployError) as caught:
            await backend.deploy(new_target(), reporter)
        assert str(caught.value) == NOT_A_MANAGER
        assert reporter.statuses("update")[-1] is StepStatus.FAILED
        result = await backend.wait_healthy(new_target(), RecordingReporter(), timeout=1)
        assert not result.healthy and result.detail == NOT_A_MANAGER
    finally:
        await asyncio.to_thread(client.close)
        await runner.cleanup()


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match="service name"):
        SwarmSpec(service="-bad", image="shop:{sha}")
    with pytest.raises(ValueError, match="unknown placeholder"):
        SwarmSpec(service="web", image="shop:{commit}")
    with pytest.raises(ValueError, match="host network"):
        SwarmSpec(service="web", image="shop:{sha}", network="host", ports={"8080": "8081"})
    with pytest.raises(ValueError, match="published port"):
        SwarmSpec(service="web", image="shop:{sha}", ports={"8080": "127.0.0.1:8081"})
    with pytest.raises(ValueError, match="replicas"):
        SwarmSpec(service="web", image="shop:{sha}", replicas=0)
