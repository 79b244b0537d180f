"""Deploy backends (shell now; docker and swarm next) and post-deploy health checks."""

from deployer.argv import check_template, fill_argv, fill_text
from deployer.base import (
    ArtifactMissing,
    Backend,
    DeployerError,
    DeployError,
    DeployTarget,
    HealthCheckFailed,
    HealthResult,
    Reporter,
)
from deployer.health import HealthSpec, check_health
from deployer.shell import ShellBackend, ShellSpec

__all__ = [
    "ArtifactMissing",
    "Backend",
    "DeployError",
    "DeployTarget",
    "DeployerError",
    "HealthCheckFailed",
    "HealthResult",
    "HealthSpec",
    "Reporter",
    "ShellBackend",
    "ShellSpec",
    "check_health",
    "check_template",
    "fill_argv",
    "fill_text",
]
