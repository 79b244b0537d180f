"""Releases to real containers and a real single-node swarm, driven from Slack."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import docker
import pytest
from redis.asyncio import Redis

from bot.local.demoimage import ImageKind
from tests.conftest import free_port
from tests.dockerkit import DockerKit
from tests.e2e.harness import ALICE, BOB, CAROL, CHANNEL, ONCALL, Team, rendered, running_team

DOCKER_ENV = """\
  web:
    approval: authors
    backend:
      kind: docker
      image: "{repository}:{{sha}}"
      container: {container}
      network: host
      env: {{PORT: "{port}"}}
      stop_timeout: 2s
    health: {{http: "http://127.0.0.1:{port}/healthz", timeout: 5s, interval: 100ms}}
  native:
    approval: none
    lock_on_failure: false
    backend:
      kind: docker
      image: "{repository}:{{sha}}"
      container: {container}-native
      network: host
      env: {{PORT: "{native_port}"}}
      stop_timeout: 2s
  cluster:
    approval: none
    backend:
      kind: swarm
      service: {service}
      image: "{repository}:{{sha}}"
      network: host
      env: {{PORT: "{swarm_port}"}}
      stop_timeout: 1s
      update_timeout: 60s
    health: {{http: "http://127.0.0.1:{swarm_port}/healthz", timeout: 5s, interval: 100ms}}
"""


class Ports:
    def __init__(self) -> None:
        self.web, self.native, self.swarm = free_port(), free_port(), free_port()


@pytest.fixture
def ports() -> Ports:
    return Ports()


@pytest.fixture
async def ship(
    tmp_path: Path, redis: Redis, dockerkit: DockerKit, ports: Ports, swarm: docker.DockerClient
) -> AsyncIterator[tuple[Team, DockerKit, str]]:
    repository = dockerkit.name("shop")
    extra = DOCKER_ENV.format(
        repository=repository,
        container=dockerkit.name("web"),
        service=dockerkit.name("svc"),
        port=ports.web,
        native_port=ports.native,
        swarm_port=ports.swarm,
    )
    async with running_team(tmp_path, redis, extra=extra) as team:
        yield team, dockerkit, repository


async def _version(port: int) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/version") as resp,
    ):
        return (await resp.text()).strip()


async def _release(team: Team, env: str, approvers: tuple[str, ...], *, containing: str) -> str:
    await team.collect()
    batch = await team.batch_message(containing=containing, env=env)
    answer = await team.emu.slash_command(ALICE, CHANNEL, "/release", env)
    assert "release" in answer.text and ":warning:" not in answer.text, answer.text
    for user in approvers:
        await team.emu.add_reaction(user, CHANNEL, batch.ts, "white_check_mark")
    return batch.ts


async def test_container_release_rollback_and_automatic_rollback(
    ship: tuple[Team, DockerKit, str], ports: Ports
) -> None:
    """Containers: a release goes live, a bad image rolls back on its own, /rollback is a start."""
    team, kit, repository = ship
    first = team.commit(ALICE, "Cart page")
    kit.build(repository, first)
    ts = await _release(team, "web", (ALICE,), containing="Cart page")
    live = await team.wait_text(ts, "is live on `web`")
    assert ":white_check_mark: image" in rendered(live) and ":white_check_mark: start" in rendered(
        live
    )
    assert await _version(ports.web) == first[:7]

    second = team.commit(BOB, "Faster search")
    kit.build(repository, second)
    ts = await _release(team, "web", (ALICE, BOB), containing="Faster search")
    await team.wait_text(ts, "is live on `web`")
    assert await _version(ports.web) == second[:7]

    answer = await team.emu.slash_command(ONCALL, CHANNEL, "/rollback", "web")
    assert f"back to `{first[:7]}`" in answer.text
    await team.wait_message(lambda m: "Rolled `web` back to" in rendered(m), what="the rollback")
    assert await _version(ports.web) == first[:7]
    started = kit.client.containers.get(kit.name("web"))
    assert started.labels["shipmate.sha"] == first, "the kept container was started again"

    third = team.commit(CAROL, "New payment API")
    kit.build(repository, third, ImageKind(healthy=False))
    ts = await _release(team, "web", (ALICE, BOB, CAROL), containing="New payment API")
    done = await team.wait_text(ts, "was rolled back")
    assert "health check failed" in rendered(done)
    assert await _version(ports.web) == first[:7]
    env = await team.stack.store.env("web")
    assert env.lock is not None and env.lock.automatic, "the environment locked itself"


async def test_missing_image_refuses_the_release(ship: tuple[Team, DockerKit, str]) -> None:
    """/release is refused, naming the image, when the batch head has no image; nothing freezes."""
    team, _, repository = ship
    head = team.commit(ALICE, "Not built yet")
    await team.collect()
    batch = await team.batch_message(containing="Not built yet", env="web")
    answer = await team.emu.slash_command(ALICE, CHANNEL, "/release", "web")
    assert answer.response_type == "ephemeral"
    assert f"{repository}:{head}" in answer.text and "does not exist" in answer.text
    snap = await team.stack.store.snapshot("web")
    assert snap is not None and snap.env.active_release is None
    assert "Next release to `web`" in rendered(team.emu.message(CHANNEL, batch.ts) or batch)


async def test_native_healthcheck_decides_when_none_is_configured(
    ship: tuple[Team, DockerKit, str], ports: Ports
) -> None:
    """Without a health: block the image's HEALTHCHECK decides; an image without one is not healthy."""
    team, kit, repository = ship
    good = team.commit(ALICE, "With healthcheck")
    kit.build(repository, good, ImageKind(healthcheck=True))
    ts = await _release(team, "native", (), containing="With healthcheck")
    await team.wait_text(ts, "is live on `native`")

    bare = team.commit(BOB, "Without healthcheck")
    kit.build(repository, bare, ImageKind(healthcheck=False))
    ts = await _release(team, "native", (), containing="Without healthcheck")
    done = await team.wait_text(ts, "was rolled back")
    assert "unknown" in rendered(done) and "not healthy" in rendered(done)
    assert await _version(ports.native) == good[:7]


async def test_swarm_release_and_rollback(ship: tuple[Team, DockerKit, str], ports: Ports) -> None:
    """Swarm: a service update goes live, a bad image is rolled back explicitly, /rollback works."""
    team, kit, repository = ship
    first = team.commit(ALICE, "Swarm one")
    kit.build(repository, first)
    ts = await _release(team, "cluster", (), containing="Swarm one")
    await team.wait_text(ts, "is live on `cluster`")
    assert await _version(ports.swarm) == first[:7]

    second = team.commit(BOB, "Swarm two")
    kit.build(repository, second)
    ts = await _release(team, "cluster", (), containing="Swarm two")
    await team.wait_text(ts, "is live on `cluster`")
    assert await _version(ports.swarm) == second[:7]

    answer = await team.emu.slash_command(ALICE, CHANNEL, "/rollback", "cluster")
    assert f"back to `{first[:7]}`" in answer.text
    await team.wait_message(
        lambda m: "Rolled `cluster` back to" in rendered(m), what="the swarm rollback"
    )
    assert await _version(ports.swarm) == first[:7]

    bad = team.commit(CAROL, "Swarm broken")
    kit.build(repository, bad, ImageKind(healthy=False))
    ts = await _release(team, "cluster", (), containing="Swarm broken")
    done = await team.wait_text(ts, "was rolled back")
    assert "health check failed" in rendered(done)
    assert await _version(ports.swarm) == first[:7]
    env = await team.stack.store.env("cluster")
    assert env.live_sha == first
