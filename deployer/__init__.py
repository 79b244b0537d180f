"""Deploy backends (shell, docker, swarm), their specs and post-deploy health checks.

deployer/argv.py holds the one placeholder grammar; deployer/specs.py maps a ``kind:`` to its
spec; deployer/dockerrules.py holds Docker's rules for names and ports.
"""

from deployer.argv import PLACEHOLDERS, check_template, fill_argv, fill_text, template_problem
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
    "PLACEHOLDERS",
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
    "template_problem",
]
