"""Each environment's backend, built from the spec its configuration was parsed into."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from bot.config.loader import Config
from bot.services.deploys import EnvironmentRuntime
from deployer.base import Backend, DeployTarget
from deployer.docker import DockerBackend, DockerSpec
from deployer.dockerapi import DockerApi
from deployer.shell import ShellBackend, ShellSpec
from deployer.specs import BackendSpec
from deployer.swarm import SwarmBackend


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


def build_backend(spec: BackendSpec, docker: Callable[[], DockerApi]) -> Backend:
    """The backend for ``spec``; ``docker`` gives the process' one Docker connection."""
    if isinstance(spec, ShellSpec):
        return ShellBackend(spec)
    if isinstance(spec, DockerSpec):
        return DockerBackend(spec, docker())
    return SwarmBackend(spec, docker())


def build_backends(config: Config) -> Backends:
    shared: list[DockerApi] = []

    def docker() -> DockerApi:
        if not shared:
            shared.append(DockerApi())
        return shared[0]

    runtimes = {
        name: EnvironmentRuntime(
            backend=build_backend(env.backend, docker),
            health=env.health,
            lock_on_failure=env.lock_on_failure,
        )
        for name, env in config.environments.items()
    }
    return Backends(runtimes=runtimes, docker=shared[0] if shared else None)
