"""bench/ drives the product from the outside: no test code, no patched product methods.

It watches shipmate through ``bot.trace`` events and calls public functions; a benchmark
that rewired the product while measuring it would measure something else (and break
silently when a private method is renamed).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"
PRODUCT = frozenset({"bot", "deployer", "bot.domain", "handlers", "bot.local.slackemu"})


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(BENCH.glob("*.py")):
        yield path.name, ast.parse(path.read_text(), filename=str(path))


def _top(dotted: str) -> str:
    return dotted.split(".", 1)[0]


def _imported(tree: ast.Module) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _product_names(tree: ast.Module) -> set[str]:
    """Local names bound to product modules, classes and functions by imports."""
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bound |= {_top(a.asname or a.name) for a in node.names if _top(a.name) in PRODUCT}
        elif isinstance(node, ast.ImportFrom) and node.module and _top(node.module) in PRODUCT:
            bound |= {a.asname or a.name for a in node.names}
    return bound


def _root(node: ast.expr) -> str | None:
    while isinstance(node, ast.Attribute | ast.Subscript):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _patches(tree: ast.Module) -> list[str]:
    product = _product_names(tree)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("setattr", "delattr")
        ):
            found.append((node.lineno, f"{node.func.id}(...)"))
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            if isinstance(target, ast.Attribute) and _root(target) in product:
                found.append((target.lineno, f"assigns {ast.unparse(target)}"))
    return [f"line {line}: {what}" for line, what in sorted(found)]


def test_bench_imports_nothing_from_tests() -> None:
    offenders = {
        name: [m for m in _imported(tree) if _top(m) == "tests"] for name, tree in _modules()
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_bench_patches_no_product_code() -> None:
    offenders = {name: _patches(tree) for name, tree in _modules()}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_checks_catch_what_they_are_meant_to() -> None:
    tree = ast.parse(
        "import bot.runtime.worker\n"
        "from deployer.docker import DockerBackend\n"
        "from tests.dockerkit import DockerKit\n"
        "setattr(DockerBackend, '_swap', None)\n"
        "DockerBackend._survey = None\n"
        "bot.runtime.worker.Worker._deploy = None\n"
        "mine = object()\n"
        "mine.field = 1\n"
    )
    assert [m for m in _imported(tree) if _top(m) == "tests"] == ["tests.dockerkit"]
    assert _patches(tree) == [
        "line 4: setattr(...)",
        "line 5: assigns DockerBackend._survey",
        "line 6: assigns bot.runtime.worker.Worker._deploy",
    ]
