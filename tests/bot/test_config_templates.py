"""check-config and the deployer read templates, names and ports by the same rules.

What check-config accepts is what the backend runs, and what it refuses the backend would
refuse too: both call deployer/argv.py and deployer/dockerrules.py.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.config.loader import ConfigError, load_config
from deployer.argv import fill_argv, fill_text
from deployer.base import DeployTarget
from deployer.docker import DockerSpec
from deployer.shell import ShellBackend, ShellSpec
from deployer.swarm import SwarmSpec
from deployer.testing import RecordingReporter
from tests.bot.test_config import MINIMAL, problems_of, write

SHA = "0123456789abcdef0123456789abcdef01234567"
TARGET = DeployTarget(env="staging", sha=SHA)
SHELL_BACKEND = "{kind: shell, deploy: [./deploy.sh]}"


def with_backend(backend: str, health: str | None = None) -> str:
    text = MINIMAL.replace(SHELL_BACKEND, backend)
    return text + (f"    health: {health}\n" if health else "")


def shell_spec(tmp_path: Path, deploy: str) -> ShellSpec:
    cfg = load_config(write(tmp_path, with_backend(f"{{kind: shell, deploy: {deploy}}}")))
    spec = cfg.environments["staging"].backend
    assert isinstance(spec, ShellSpec)
    return spec


def test_find_exec_is_accepted_and_deployed_as_written(tmp_path: Path) -> None:
    spec = shell_spec(tmp_path, '[find, ., -exec, "{}", ";"]')
    assert fill_argv(spec.deploy, TARGET) == ["find", ".", "-exec", "{}", ";"]


async def test_the_deploy_command_receives_the_arguments_written(tmp_path: Path) -> None:
    printer = "import sys; print(sys.argv[1:])"
    args = ["-exec", "{}", ";", "{{.State.Status}}", "}}", "{sha}", "{env}"]
    quoted = ", ".join(f"'{arg}'" for arg in [sys.executable, "-c", printer, *args])
    spec = shell_spec(tmp_path, f"[{quoted}]")
    reporter = RecordingReporter()
    await ShellBackend(spec).deploy(TARGET, reporter)
    expected = ["-exec", "{}", ";", "{{.State.Status}}", "}}", SHA, "staging"]
    assert str(expected) in reporter.output_lines


@pytest.mark.parametrize(
    ("backend", "health", "key"),
    [
        ("{kind: shell, deploy: [./deploy.sh, '{x}']}", None, "backend.deploy[1]"),
        (
            "{kind: docker, image: 'shop:{x}', container: shop}",
            None,
            "backend.image",
        ),
        ("{kind: swarm, service: shop, image: 'shop:{x}'}", None, "backend.image"),
        (SHELL_BACKEND, "{http: 'http://127.0.0.1/{x}'}", "health.http"),
        (SHELL_BACKEND, "{command: [./smoke.sh, 'a{x}b']}", "health.command[1]"),
    ],
)
def test_an_unknown_placeholder_is_refused_with_its_key(
    tmp_path: Path, backend: str, health: str | None, key: str
) -> None:
    path = write(tmp_path, with_backend(backend, health))
    [problem] = problems_of(path)
    assert f": environments.staging.{key}: unknown placeholder '{{x}}' (allowed: " in problem


def test_a_jinja_placeholder_is_refused_with_its_key(tmp_path: Path) -> None:
    path = write(tmp_path, with_backend("{kind: shell, deploy: [./deploy.sh, '{{ sha }}']}"))
    assert problems_of(path) == [
        f"{path}:5: environments.staging.backend.deploy[1]: write '{{sha}}' for the "
        "placeholder, not '{{ sha }}' (allowed: {sha}, {short_sha}, {env})"
    ]


def test_every_template_fills_the_way_check_config_read_it(tmp_path: Path) -> None:
    docker = "{kind: docker, image: 'shop:{short_sha}', container: shop}"
    health = "{http: 'http://127.0.0.1/v?sha={sha}&x={{.y}}'}"
    cfg = load_config(write(tmp_path, with_backend(docker, health)))
    env = cfg.environments["staging"]
    assert isinstance(env.backend, DockerSpec) and env.health is not None
    assert fill_text(env.backend.image, TARGET) == "shop:0123456"
    assert env.health.http is not None
    assert fill_text(env.health.http, TARGET) == f"http://127.0.0.1/v?sha={SHA}&x={{{{.y}}}}"


# ---------------------------------------------------------------------------------------------
# Names and ports: one rule each, so config and spec agree on every value


@pytest.mark.parametrize(
    ("name", "ok"),
    [("shop", True), ("shop-web_1.a", True), ("s", False), ("-shop", False), ("a b", False)],
)
def test_container_names(tmp_path: Path, name: str, ok: bool) -> None:
    path = write(
        tmp_path, with_backend(f"{{kind: docker, image: 'a:{{sha}}', container: '{name}'}}")
    )
    assert agrees(path, lambda: DockerSpec(image="a:{sha}", container=name)) is ok


@pytest.mark.parametrize(
    ("name", "ok"), [("shop", True), ("a" * 63, True), ("a" * 64, False), ("-x", False)]
)
def test_service_names(tmp_path: Path, name: str, ok: bool) -> None:
    path = write(tmp_path, with_backend(f"{{kind: swarm, service: '{name}', image: 'a:{{sha}}'}}"))
    assert agrees(path, lambda: SwarmSpec(service=name, image="a:{sha}")) is ok


@pytest.mark.parametrize(
    ("container", "host", "ok"),
    [
        ("8080", "8081", True),
        ("8080/udp", "127.0.0.1:8081", True),
        ("8080", "[::1]:8081", True),
        ("0", "8081", False),
        ("8080", "70000", False),
        ("8080/icmp", "8081", False),
        ("8080", "localhost:8081", False),
    ],
)
def test_docker_ports(tmp_path: Path, container: str, host: str, ok: bool) -> None:
    backend = (
        f"{{kind: docker, image: 'a:{{sha}}', container: shop, ports: {{'{container}': '{host}'}}}}"
    )
    path = write(tmp_path, with_backend(backend))
    assert (
        agrees(path, lambda: DockerSpec(image="a:{sha}", container="shop", ports={container: host}))
        is ok
    )


@pytest.mark.parametrize(
    ("ports", "network", "ok"),
    [
        ({"8080": "8081"}, None, True),
        ({"8080": "127.0.0.1:8081"}, None, False),
        ({"8080": "8081"}, "host", False),
        ({}, "host", True),
    ],
)
def test_swarm_ports_and_the_host_network(
    tmp_path: Path, ports: dict[str, str], network: str | None, ok: bool
) -> None:
    written = ", ".join(f"'{k}': '{v}'" for k, v in ports.items())
    backend = f"{{kind: swarm, service: shop, image: 'a:{{sha}}', ports: {{{written}}}"
    backend += f", network: {network}}}" if network else "}"
    path = write(tmp_path, with_backend(backend))

    def spec() -> SwarmSpec:
        return SwarmSpec(service="shop", image="a:{sha}", ports=ports, network=network)

    assert agrees(path, spec) is ok


def agrees(path: Path, build_spec: Callable[[], object]) -> bool:
    """Whether check-config accepts `path`, after asserting the spec decides the same."""
    try:
        load_config(path)
        accepted = True
    except ConfigError:
        accepted = False
    try:
        build_spec()
        built = True
    except ValueError:
        built = False
    assert accepted == built, (path.read_text(), accepted, built)
    return accepted
