"""bot/domain/ stays pure: stdlib and core imports only, no environment, no async, no clock."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = ROOT / "bot" / "domain"
MODULES = sorted(DOMAIN.glob("*.py"))
FORBIDDEN = {"redis", "slack_bolt", "slack_sdk", "aiohttp", "docker", "yaml", "bot", "handlers"}
FORBIDDEN |= {
    "deployer",
    "bot.local.slackemu",
    "asyncio",
    "socket",
    "subprocess",
    "random",
    "requests",
}
#: calls that read the outside world or the clock
IMPURE_CALLS = {
    ("os", "getenv"),
    ("os", "putenv"),
    ("time", "time"),
    ("time", "monotonic"),
    ("time", "localtime"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("date", "today"),
}


def import_problems(source: str, name: str) -> list[str]:
    """Imports of anything but the standard library and domain itself."""
    allowed = set(sys.stdlib_module_names) | {"__future__"}
    roots: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                roots.append(("bot.domain", node.lineno))
            elif node.module:
                roots.append((node.module, node.lineno))

    def fine(module: str) -> bool:
        if module == "bot.domain" or module.startswith("bot.domain."):
            return True
        root = module.split(".")[0]
        return root in allowed and root not in FORBIDDEN

    return [f"{name}:{line}: imports {module}" for module, line in roots if not fine(module)]


def impurity_problems(source: str, name: str) -> list[str]:
    """Async code, environment reads, clock reads, file opening and global state."""
    problems: list[str] = []
    for node in ast.walk(ast.parse(source)):
        where = f"{name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.AsyncFunctionDef | ast.Await | ast.AsyncFor | ast.AsyncWith):
            problems.append(f"{where}: async code")
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            pair = (node.value.id, node.attr)
            if pair == ("os", "environ") or pair in IMPURE_CALLS:
                problems.append(f"{where}: {pair[0]}.{pair[1]}")
        if isinstance(node, ast.Name) and node.id in ("environ", "getenv", "open", "input"):
            problems.append(f"{where}: {node.id}")
        if isinstance(node, ast.ImportFrom) and node.module in ("os", "time", "datetime"):
            for alias in node.names:
                if alias.name == "environ" or (node.module, alias.name) in IMPURE_CALLS:
                    problems.append(f"{where}: from {node.module} import {alias.name}")
        if isinstance(node, ast.Global):
            problems.append(f"{where}: global state")
    return problems


def test_domain_modules_found() -> None:
    """The purity checks see every module the architecture lists."""
    names = {p.stem for p in MODULES}
    assert {"models", "release", "approvals", "environment", "commands", "render", "codec"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_imports_only_stdlib_and_domain(path: Path) -> None:
    """Each domain module imports only the standard library and other domain modules."""
    assert not import_problems(path.read_text(encoding="utf-8"), path.name)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.stem)
def test_no_async_no_environment_no_clock(path: Path) -> None:
    """Each domain module is synchronous and reads neither os.environ nor the clock."""
    assert not impurity_problems(path.read_text(encoding="utf-8"), path.name)


@pytest.mark.parametrize(
    "source",
    [
        "import redis",
        "from slack_sdk.web import WebClient",
        "import slack_bolt.app",
        "from aiohttp import web",
        "import docker",
        "import yaml",
        "from bot.config.loader import Config",
    ],
)
def test_import_check_catches_third_party(source: str) -> None:
    """The import check flags third-party and outer-layer imports."""
    assert import_problems(source, "x.py")


@pytest.mark.parametrize(
    "source",
    [
        "async def f() -> None: ...",
        "import os\nx = os.environ['HOME']",
        "import os\nx = os.environ.get('HOME')",
        "from os import environ",
        "from time import monotonic",
        "import os\nx = os.getenv('HOME')",
        "import time\nx = time.time()",
        "from datetime import datetime\nx = datetime.now()",
        "x = open('f').read()",
    ],
)
def test_impurity_check_catches_io(source: str) -> None:
    """The purity check flags async code, environment and clock reads."""
    assert impurity_problems(source, "x.py")


_IMPORT_ALL = """
import json, sys
before = set(sys.modules)
import {modules}
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_importing_domain_loads_no_third_party_module() -> None:
    """Importing every domain module in a fresh interpreter pulls in nothing outside stdlib."""
    modules = ", ".join(f"bot.domain.{p.stem}" for p in MODULES if p.stem != "__init__")
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL.format(modules=modules)],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    loaded = json.loads(done.stdout)
    outside = [
        m
        for m in loaded
        if m.split(".")[0] not in sys.stdlib_module_names
        and m != "bot"  # the wheel's root package: a docstring, no imports
        and not (m == "bot.domain" or m.startswith("bot.domain."))
        and not m.startswith("_")
    ]
    assert not outside
