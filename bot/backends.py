"""Build each environment's backend and health check from the configuration."""

from __future__ import annotations

from collections.abc import Mapping

from bot.config import BackendConfig, Config, EnvironmentConfig
from bot.deploys import EnvironmentRuntime
from deployer.base import DeployError, DeployTarget, Reporter
from deployer.health import HealthSpec
from deployer.shell import ShellBackend, ShellSpec


class UnavailableBackend:
    """A backend kind this build cannot run yet: every deploy fails with a clear reason."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    async def check_artifact(self, target: DeployTarget) -> None:
        raise DeployError(f"the {self.kind} backend is not available in this version of shipmate")

    async def deploy(self, target: DeployTarget, reporter: Reporter) -> None:
        raise DeployError(f"the {self.kind} backend is not available in this version of shipmate")

    async def close(self) -> None:
        return None


def build_backend(config: Config, backend: BackendConfig) -> ShellBackend | UnavailableBackend:
    if backend.kind == "shell":
        spec = ShellSpec(
            deploy=backend.deploy,
            timeout=backend.timeout,
            cwd=backend.cwd or config.base_dir,
            env=backend.env,
        )
        return ShellBackend(spec)
    return UnavailableBackend(backend.kind)


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


def build_runtimes(config: Config) -> Mapping[str, EnvironmentRuntime]:
    return {
        name: EnvironmentRuntime(
            backend=build_backend(config, env.backend),
            health=build_health(config, env),
            lock_on_failure=env.lock_on_failure,
        )
        for name, env in config.environments.items()
    }
