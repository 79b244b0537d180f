"""Build each environment's backend and health check from the configuration."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from bot.config import BackendConfig, Config, EnvironmentConfig
from bot.deploys import EnvironmentRuntime
from deployer.base import Backend, DeployTarget
from deployer.docker import DockerBackend, DockerSpec
from deployer.dockerapi import DockerApi
from deployer.health import HealthSpec
from deployer.shell import ShellBackend, ShellSpec
from deployer.swarm import SwarmBackend, SwarmSpec


@dataclass
class Backends:
    """Every environment's backend, sharing one Docker connection per process."""

    runtimes: Mapping[str, EnvironmentRuntime]
    docker: DockerApi | None = None
    _closed: bool = field(default=False, repr=False)

    async def check_artifact(self, env: str, sha: str) -> None:
        """Raise ArtifactMissing (or a DeployError) when ``sha`` cannot be released to ``env``."""
        await self.runtimes[env].backend.check_artifact(DeployTarget(env=env, sha=sha))

    @property
    def checks_artifacts(self) -> bool:
        return any(r.backend.kind in ("docker", "swarm") for r in self.runtimes.values())

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for runtime in self.runtimes.values():
            with contextlib.suppress(Exception):
                await runtime.backend.close()
        if self.docker is not None:
            await self.docker.close()


def build_backend(config: Config, backend: BackendConfig, docker: DockerApi | None) -> Backend:
    if backend.kind == "shell":
        spec = ShellSpec(
            deploy=backend.deploy,
            timeout=backend.timeout,
            cwd=backend.cwd or config.base_dir,
            env=backend.env,
        )
        return ShellBackend(spec)
    assert docker is not None and backend.image is not None
    if backend.kind == "docker":
        assert backend.container is not None
        return DockerBackend(
            DockerSpec(
                image=backend.image,
                container=backend.container,
                ports=backend.ports,
                env=backend.env,
                network=backend.network,
                keep=backend.keep,
                stop_timeout=backend.stop_timeout,
                registry=backend.registry,
            ),
            docker,
        )
    assert backend.service is not None
    return SwarmBackend(
        SwarmSpec(
            service=backend.service,
            image=backend.image,
            update_timeout=backend.update_timeout,
            registry=backend.registry,
            env=backend.env,
            ports=backend.ports,
            network=backend.network,
            replicas=backend.replicas,
            stop_timeout=backend.stop_timeout,
        ),
        docker,
    )


def build_health(config: Config, env: EnvironmentConfig) -> HealthSpec | None:
    health = env.health
    if health is None:
        return None
    return HealthSpec(
        http=health.http,
        command=health.command,
        timeout=health.timeout,
        interval=health.interval,
        successes=health.successes,
        cwd=config.base_dir,
    )


def build_backends(config: Config) -> Backends:
    needs_docker = any(e.backend.kind != "shell" for e in config.environments.values())
    docker = DockerApi() if needs_docker else None
    runtimes = {
        name: EnvironmentRuntime(
            backend=build_backend(config, env.backend, docker),
            health=build_health(config, env),
            lock_on_failure=env.lock_on_failure,
        )
        for name, env in config.environments.items()
    }
    return Backends(runtimes=runtimes, docker=docker)
