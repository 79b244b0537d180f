"""Every backend's spec as one type, and the ``kind:`` that selects each.

shipmate.yml's ``backend:`` is parsed straight into one of these, so a backend's keys, their
defaults and their validation are written once, on its spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from deployer.docker import DockerSpec
from deployer.shell import ShellSpec
from deployer.swarm import SwarmSpec

BackendSpec = DockerSpec | SwarmSpec | ShellSpec

SPECS: Final[Mapping[str, type[BackendSpec]]] = MappingProxyType(
    {spec.kind: spec for spec in (DockerSpec, SwarmSpec, ShellSpec)}
)
