"""The docker backend against the real engine: tiny busybox images, host networking."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import docker
import pytest

from bot.domain.models import StepStatus
from bot.local.demoimage import ImageKind
from deployer.base import (
    ArtifactMissing,
    Backend,
    DeployError,
    DeployTarget,
    Diagnostics,
    NativeHealth,
    interactive,
)
from deployer.docker import DockerBackend, DockerSpec
from deployer.dockerapi import DockerApi, DockerNotFound, DockerUnreachable
from deployer.testing import RecordingReporter
from tests.conftest import free_port
from tests.dockerkit import DockerKit

ENV = "staging"


def new_target() -> DeployTarget:
    return DeployTarget(env=ENV, sha=secrets.token_hex(20))


@pytest.fixture
async def api(docker_engine: docker.DockerClient) -> AsyncIterator[DockerApi]:
    api = DockerApi(docker_engine)
    yield api
    await api.close()  # a given client stays open for the other tests


@dataclasses.dataclass
class Setup:
    kit: DockerKit
    backend: DockerBackend
    spec: DockerSpec
    repository: str
    port: int

    def build(self, target: DeployTarget, kind: ImageKind | None = None) -> None:
        self.kit.build(self.repository, target.sha, kind or ImageKind())

    def container(self, name: str) -> Any:
        return self.kit.client.containers.get(name)

    def managed(self) -> list[Any]:
        return list(
            self.kit.client.containers.list(
                all=True, filters={"label": f"shipmate.container={self.spec.container}"}
            )
        )


def setup(kit: DockerKit, api: DockerApi, **spec: Any) -> Setup:
    repository = kit.name("shop")
    port = free_port()
    the_spec = DockerSpec(
        image=repository + ":{sha}",
        container=kit.name("web"),
        env={"PORT": str(port)},
        network="host",
        stop_timeout=2,
        **spec,
    )
    return Setup(kit, DockerBackend(the_spec, api), the_spec, repository, port)


def _get(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=1) as response:
            return str(response.read().decode().strip())
    except (urllib.error.URLError, OSError):
        return None


async def wait_serving(port: int, version: str, *, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while (seen := await asyncio.to_thread(_get, port)) != version:
        if time.monotonic() > deadline:
            raise AssertionError(f"port {port} serves {seen!r}, not {version!r}, after {within}s")
        await asyncio.sleep(0.02)


def test_backend_satisfies_the_protocols(dockerkit: DockerKit, api: DockerApi) -> None:
    backend: Backend = setup(dockerkit, api).backend
    assert isinstance(backend, NativeHealth)
    assert isinstance(backend, Diagnostics)


async def test_check_artifact_present_and_missing(dockerkit: DockerKit, api: DockerApi) -> None:
    s = setup(dockerkit, api)
    present, missing = new_target(), new_target()
    s.build(present)
    await s.backend.check_artifact(present)
    with pytest.raises(ArtifactMissing) as caught:
        await s.backend.check_artifact(missing)
    assert str(caught.value) == (
        f"image {s.repository}:{missing.sha} does not exist on this Docker host; shipmate "
        "never builds images — build and tag it first"
    )

    # with a registry a missing image is pulled; a failed pull names what was pulled
    pulling = dataclasses.replace(s.spec, registry=f"127.0.0.1:{free_port()}")
    with pytest.raises(
        ArtifactMissing, match=f"pulling 127.0.0.1:\\d+/{s.repository}:{missing.sha} failed"
    ):
        await DockerBackend(pulling, api).check_artifact(missing)


async def test_first_deploy_creates_and_starts_the_container(
    dockerkit: DockerKit,
    api: DockerApi,
) -> None:
    s = setup(dockerkit, api)
    target = new_target()
    s.build(target)
    reporter = RecordingReporter()
    await s.backend.deploy(target, reporter)

    await wait_serving(s.port, target.short_sha)
    c = s.container(s.spec.container)
    assert c.status == "running"
    assert {k: v for k, v in c.labels.items() if k.startswith("shipmate.")} == {
        "shipmate.managed": "1",
        "shipmate.container": s.spec.container,
        "shipmate.env": ENV,
        "shipmate.sha": target.sha,
        "shipmate.test": dockerkit.prefix,  # inherited from the test image
    }
    host = c.attrs["HostConfig"]
    assert host["Init"] is True
    assert host["NetworkMode"] == "host"
    assert host["RestartPolicy"]["Name"] in ("", "no")
    assert c.attrs["Config"]["StopTimeout"] == 2
    assert reporter.statuses("image") == [StepStatus.RUNNING, StepStatus.OK]
    image_step = reporter.last("image")
    assert image_step is not None and image_step.detail == f"{s.repository}:{target.sha} present"
    assert reporter.statuses("start") == [StepStatus.RUNNING, StepStatus.OK]


async def test_new_sha_then_rollback_is_a_start_of_the_kept_container(
    dockerkit: DockerKit,
    api: DockerApi,
) -> None:
    s = setup(dockerkit, api)
    first, second = new_target(), new_target()
    s.build(first)
    s.build(second)
    await s.backend.deploy(first, RecordingReporter())
    first_id = s.container(s.spec.container).id

    await s.backend.deploy(second, RecordingReporter())
    await wait_serving(s.port, second.short_sha)
    kept = s.container(f"{s.spec.container}-{first.short_sha}")
    assert kept.id == first_id
    assert kept.status == "exited"
    second_id = s.container(s.spec.container).id
    assert s.container(s.spec.container).labels["shipmate.sha"] == second.sha

    reporter = RecordingReporter()
    started = time.monotonic()
    await s.backend.deploy(first, reporter)
    seconds = time.monotonic() - started
    await wait_serving(s.port, first.short_sha)
    serving = time.monotonic() - started
    start_step = reporter.last("start")
    assert start_step is not None and start_step.status is StepStatus.OK
    assert start_step.detail.startswith("started existing container (instant rollback)")
    print(
        f"\ninstant rollback: deploy() {seconds:.3f}s, serving after {serving:.3f}s; {start_step.detail}"
    )

    assert s.container(s.spec.container).id == first_id  # started, not created
    assert s.container(f"{s.spec.container}-{second.short_sha}").id == second_id
    assert {c.id for c in s.managed()} == {first_id, second_id}


async def test_redeploying_the_running_sha_is_idempotent(
    dockerkit: DockerKit, api: DockerApi
) -> None:
    s = setup(dockerkit, api)
    target = new_target()
    s.build(target)
    await s.backend.deploy(target, RecordingReporter())
    c = s.container(s.spec.container)

    reporter = RecordingReporter()
    await s.backend.deploy(target, reporter)
    step = reporter.last("start")
    assert step is not None and step.detail.startswith("already running")
    assert s.container(s.spec.container).id == c.id
    assert len(s.managed()) == 1

    # a current container that stopped by itself is started again, not replaced
    c.stop(timeout=2)
    await s.backend.deploy(target, RecordingReporter())
    await wait_serving(s.port, target.short_sha)
    assert s.container(s.spec.container).id == c.id


async def test_keep_prunes_the_oldest_stopped_releases(
    dockerkit: DockerKit, api: DockerApi
) -> None:
    s = setup(dockerkit, api, keep=2)
    targets = [new_target() for _ in range(4)]
    for target in targets:
        s.build(target)
        await s.backend.deploy(target, RecordingReporter())
    await wait_serving(s.port, targets[-1].short_sha)

    by_sha = {c.labels["shipmate.sha"]: c for c in s.managed()}
    assert set(by_sha) == {t.sha for t in targets[1:]}
    assert by_sha[targets[3].sha].name == s.spec.container
    assert by_sha[targets[3].sha].status == "running"
    assert {by_sha[t.sha].status for t in targets[1:3]} == {"exited"}


async def test_a_crashing_image_fails_the_deploy_and_the_previous_keeps_running(
    dockerkit: DockerKit,
    api: DockerApi,
) -> None:
    s = setup(dockerkit, api)
    good, crashing = new_target(), new_target()
    s.build(good)
    s.build(crashing, ImageKind(crash=True))
    await s.backend.deploy(good, RecordingReporter())
    good_id = s.container(s.spec.container).id

    reporter = RecordingReporter()
    with pytest.raises(DeployError) as caught:
        await s.backend.deploy(crashing, reporter)
    message = str(caught.value)
    first_line = message.splitlines()[0]
    assert "exited with code 3 right after it started" in first_line
    assert "is running again" in first_line
    assert "fatal: cannot connect to the database" in message
    assert "fatal: cannot connect to the database" in reporter.output_lines
    assert reporter.statuses("start")[-1] is StepStatus.FAILED

    await wait_serving(s.port, good.short_sha)
    assert s.container(s.spec.container).id == good_id

    diagnostics = await s.backend.diagnostics(crashing)
    assert "exited with code 3" in diagnostics
    assert "fatal: cannot connect to the database" in diagnostics


async def test_wait_healthy_uses_the_image_healthcheck(
    dockerkit: DockerKit, api: DockerApi
) -> None:
    s = setup(dockerkit, api)
    target = new_target()
    s.build(target, ImageKind(healthcheck=True))
    await s.backend.deploy(target, RecordingReporter())

    reporter = RecordingReporter()
    result = await s.backend.wait_healthy(target, reporter, timeout=15)
    assert result.healthy, result.detail
    assert reporter.statuses("health")[0] is StepStatus.RUNNING
    first = reporter.steps[0]
    assert first.detail.startswith("starting (")
    assert reporter.statuses("health")[-1] is StepStatus.OK


async def test_wait_healthy_reports_an_unhealthy_image(
    dockerkit: DockerKit, api: DockerApi
) -> None:
    s = setup(dockerkit, api)
    target = new_target()
    s.build(target, ImageKind(healthy=False, healthcheck=True))
    await s.backend.deploy(target, RecordingReporter())

    reporter = RecordingReporter()
    result = await s.backend.wait_healthy(target, reporter, timeout=15)
    assert not result.healthy
    assert result.detail.startswith("unhealthy: ")
    assert "404" in result.detail
    assert reporter.statuses("health")[-1] is StepStatus.FAILED


async def test_wait_healthy_without_healthcheck_or_with_a_dead_container(
    dockerkit: DockerKit,
    api: DockerApi,
) -> None:
    s = setup(dockerkit, api)
    target = new_target()
    s.build(target)
    await s.backend.deploy(target, RecordingReporter())

    result = await s.backend.wait_healthy(target, RecordingReporter(), timeout=5)
    assert not result.healthy
    assert result.detail == (
        "no health check configured and the image has no HEALTHCHECK: 'unknown' is not healthy"
    )

    s.container(s.spec.container).kill()
    result = await s.backend.wait_healthy(target, RecordingReporter(), timeout=5)
    assert not result.healthy
    assert result.detail == f"container {s.spec.container} exited with code 137"

    other = await s.backend.wait_healthy(new_target(), RecordingReporter(), timeout=5)
    assert not other.healthy and other.detail.startswith(
        f"{s.spec.container} runs {target.short_sha}"
    )


async def test_docker_unreachable_is_a_clear_deploy_error() -> None:
    """No engine for the whole wait: the deploy fails naming the socket and the wait; a person
    asking (interactive) is told at once, a deploy's artifact check defers to the deploy."""
    api = DockerApi(base_url="unix:///nonexistent.sock", timeout=5)
    spec = DockerSpec(image="shop:{sha}", container="shop-staging")
    backend = DockerBackend(spec, api, reconnect_wait=0.3, reconnect_poll=0.05)
    target = new_target()
    expected = (
        "Docker is not reachable at unix:///nonexistent.sock: no such socket (is dockerd running?)"
    )
    reporter = RecordingReporter()
    with pytest.raises(DeployError) as caught:
        await backend.deploy(target, reporter)
    assert isinstance(caught.value, DockerUnreachable)
    assert str(caught.value) == f"{expected}; gave up after waiting 0.3s for it"
    assert reporter.last("image") == reporter.steps[-1]
    assert reporter.statuses("image") == [StepStatus.RUNNING] * 2 + [StepStatus.FAILED]
    assert reporter.steps[1].detail == f"{expected}; waiting up to 0.3s for it to come back"
    assert reporter.details == [
        f"{expected}. Waiting up to 0.3s for it to come back, then deploying "
        f"{target.short_sha} again from the start."
    ]
    with interactive(), pytest.raises(DeployError, match="not reachable"):
        await backend.check_artifact(target)
    await backend.check_artifact(target)  # a deploy's own check: deploy() waits and says so
    health = await backend.wait_healthy(target, RecordingReporter(), timeout=1)
    assert not health.healthy and health.detail == expected
    assert (await backend.diagnostics(target)).endswith(expected)
    await backend.close()


async def test_a_deploy_waits_for_docker_to_come_back_and_deploys(
    dockerkit: DockerKit, tmp_path: Path
) -> None:
    """The engine's socket is missing when the deploy starts and appears while it waits: the
    deploy says it is waiting, then deploys from the start once Docker answers."""
    socket_path = tmp_path / "docker.sock"
    api = DockerApi(base_url=f"unix://{socket_path}", timeout=10)
    s = setup(dockerkit, api)
    s.backend = DockerBackend(s.spec, api, reconnect_wait=30, reconnect_poll=0.05)
    target = new_target()
    s.build(target)
    reporter = RecordingReporter()
    deploy = asyncio.create_task(s.backend.deploy(target, reporter))
    deadline = time.monotonic() + 10
    while not reporter.details:
        assert time.monotonic() < deadline and not deploy.done(), reporter.steps
        await asyncio.sleep(0.02)
    assert "no such socket (is dockerd running?)" in reporter.details[0]
    socket_path.symlink_to("/var/run/docker.sock")  # the engine is back
    await asyncio.wait_for(deploy, 30)
    await wait_serving(s.port, target.short_sha)
    assert reporter.statuses("image") == [
        StepStatus.RUNNING,
        StepStatus.RUNNING,
        StepStatus.RUNNING,
        StepStatus.OK,
    ]
    assert reporter.statuses("start") == [StepStatus.RUNNING, StepStatus.OK]
    assert reporter.details[-1].startswith("Docker is back (waited ")
    await api.close()


async def test_docker_api_translates_engine_errors(api: DockerApi) -> None:
    with pytest.raises(DockerNotFound, match=r"^Docker: No such container: "):
        await api.run(lambda: api.client.containers.get("shipmate-test-no-such-container"))
    assert not await api.image_exists("shipmate-test-no-such-image:latest")


async def test_a_foreign_container_with_the_name_is_left_alone(
    dockerkit: DockerKit,
    api: DockerApi,
) -> None:
    s = setup(dockerkit, api)
    target = new_target()
    s.build(target)
    image = f"{s.repository}:{target.sha}"
    foreign = dockerkit.client.containers.create(
        image, name=s.spec.container, labels={"shipmate.test": dockerkit.prefix}
    )
    reporter = RecordingReporter()
    with pytest.raises(DeployError, match="shipmate did not create it") as caught:
        await s.backend.deploy(target, reporter)
    assert str(caught.value).startswith(f"a container named {s.spec.container} already exists")
    untouched = s.container(s.spec.container)
    assert untouched.id == foreign.id and untouched.status == "created"
    assert untouched.labels == {"shipmate.test": dockerkit.prefix}
    assert s.managed() == []

    # the name a new release is created under is checked too
    foreign.rename(f"{s.spec.container}-{target.short_sha}")
    with pytest.raises(
        DeployError, match="the name is taken by a container shipmate does not manage"
    ):
        await s.backend.deploy(target, RecordingReporter())
    assert s.container(f"{s.spec.container}-{target.short_sha}").id == foreign.id
