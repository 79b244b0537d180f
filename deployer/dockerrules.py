"""Docker's rules for container and service names and for published ports, written once.

Each function returns what was expected (for "expected …, got …" in a config error) or None
when the value is fine. ``check-config`` reports the answer with the file, line and key; the
deployer's specs raise it as a ValueError, so the two can never disagree.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# The engine's own pattern for container names (two characters at least).
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]+")
# Service names become DNS labels, which hold 63 characters at most.
_SERVICE_NAME_LENGTH = 63
_CONTAINER_PORT_RE = re.compile(r"(\d{1,5})(?:/(?:tcp|udp|sctp))?")
_HOST_PORT_RE = re.compile(r"(?:(?:\d{1,3}\.){3}\d{1,3}:|\[[0-9A-Fa-f:]+\]:)?(\d{1,5})")

NAME_EXPECTED = "a name of letters, digits, '_', '.' and '-'"
CONTAINER_PORT_EXPECTED = "a container port like 8080/tcp"
HOST_PORT_EXPECTED = "a host port like 8081 or 127.0.0.1:8081"
PUBLISHED_PORT_EXPECTED = "a port number (swarm publishes on every address)"
HOST_NETWORK_PORTS = (
    "a swarm service on the host network publishes no ports; remove ports or the network"
)


def _is_port(number: str) -> bool:
    return 0 < int(number) < 65536


def container_name_problem(name: str) -> str | None:
    return None if _NAME_RE.fullmatch(name) else NAME_EXPECTED


def service_name_problem(name: str) -> str | None:
    if not _NAME_RE.fullmatch(name) or len(name) > _SERVICE_NAME_LENGTH:
        return f"{NAME_EXPECTED}, {_SERVICE_NAME_LENGTH} at most"
    return None


def container_port_problem(port: str) -> str | None:
    """``8080`` or ``8080/tcp``: the port inside the container (docker) or task (swarm)."""
    match = _CONTAINER_PORT_RE.fullmatch(port)
    return None if match and _is_port(match.group(1)) else CONTAINER_PORT_EXPECTED


def host_port_problem(host: str) -> str | None:
    """``8081`` or ``127.0.0.1:8081`` / ``[::1]:8081``: where docker publishes a port."""
    match = _HOST_PORT_RE.fullmatch(host)
    return None if match and _is_port(match.group(1)) else HOST_PORT_EXPECTED


def published_port_problem(host: str) -> str | None:
    """A bare port number: swarm's routing mesh listens on every node, on every address."""
    if host_port_problem(host):
        return HOST_PORT_EXPECTED
    return PUBLISHED_PORT_EXPECTED if ":" in host else None


def swarm_ports_problem(ports: Mapping[str, str], network: str | None) -> str | None:
    """Ports a swarm service cannot publish as a whole (one port at a time is checked above)."""
    return HOST_NETWORK_PORTS if ports and network == "host" else None
