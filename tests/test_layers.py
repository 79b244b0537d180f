"""The layers, enforced: which package may import which (see docs/architecture.md).

An ast walk over every module of the wheel. Each module belongs to one layer; an import
of shipmate's own code is allowed only inward, and the layers form no cycle. Two kinds of
imports are still allowed that the target architecture forbids, listed in DEBT by module:
they are what is left to do, and the list may only shrink.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bot", "handlers", "deployer")

#: layer -> the layers it may import (itself always)
ALLOWED: dict[str, set[str]] = {
    # the pure core: models, the state machine, rendering; stdlib only
    "bot.domain": set(),
    # a tracing hook every layer may emit to; imports nothing of shipmate's
    "bot.trace": set(),
    # backends and their specs: what a deploy does to Docker, Swarm or a shell
    "deployer": {"bot.domain", "bot.trace"},
    # the YAML file into typed values; backend specs come from the deployer
    "bot.config": {"bot.domain", "deployer"},
    # Redis, Slack's Web API, git, Prometheus, logs
    "bot.adapters": {"bot.domain", "bot.trace", "bot.config"},
    # use cases over ports (today: over the adapters themselves, see DEBT)
    "bot.services": {"bot.domain", "bot.trace", "bot.config", "deployer"},
    # bolt listeners and the GitHub webhook: parse, call a service, answer
    "handlers": {"bot.domain", "bot.trace", "bot.config", "bot.services"},
}
# the outer layers see every layer inside them: the processes and the composition root,
# then the local stack (emulator, demo, the tiny image), then the CLI that starts it
ALLOWED["bot.runtime"] = set(ALLOWED)
ALLOWED["bot.local"] = ALLOWED["bot.runtime"] | {"bot.runtime"}
ALLOWED["bot.cli"] = ALLOWED["bot.local"] | {"bot.local"}

#: what is left to do: use cases take the Redis store, the Slack gateway and the metrics
#: recorder as concrete classes instead of ports (Protocols), and handlers reach the store
#: and the recorder directly instead of through the services they call
DEBT: dict[str, set[str]] = {
    "bot.services": {"bot.adapters"},
    "handlers": {"bot.adapters"},
}


def layer_of(module: str) -> str:
    for layer in sorted(ALLOWED, key=len, reverse=True):
        if module == layer or module.startswith(layer + "."):
            return layer
    if module == "bot" or module.startswith("bot."):
        raise AssertionError(f"{module} is in no layer: put it in one of {sorted(ALLOWED)}")
    return module.split(".")[0]


def modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            if name != "bot":  # the wheel's root package: a docstring, no code
                yield name, path


def own_imports(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import of shipmate's own code."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from bot import trace` imports bot.trace: the names may be modules
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES:
                yield name, node.lineno


def edges() -> dict[tuple[str, str], list[str]]:
    found: dict[tuple[str, str], list[str]] = defaultdict(list)
    for module, path in modules():
        source = layer_of(module)
        for name, line in own_imports(module, path):
            target = layer_of(name)
            if target != source:
                found[(source, target)].append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return found


def test_every_module_is_in_a_layer() -> None:
    for module, _ in modules():
        layer_of(module)


def test_imports_point_inward() -> None:
    wrong = [
        where
        for (source, target), places in edges().items()
        if target not in ALLOWED[source] | DEBT.get(source, set())
        for where in places
    ]
    assert not wrong, "\n".join(wrong)


def test_the_layers_form_no_cycle() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for source, target in edges():
        graph[source].add(target)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        ahead = graph[start] - seen
        return any(nxt == goal or reaches(nxt, goal, seen | {nxt}) for nxt in ahead)

    cycles = sorted(layer for layer in list(graph) if reaches(layer, layer, set()))
    assert not cycles, f"layers on a cycle: {cycles}"


def test_the_debt_is_still_owed() -> None:
    """A debt that was paid is taken off the list, so the rule becomes strict."""
    present = set(edges())
    paid = [f"{s} -> {t}" for s, targets in DEBT.items() for t in targets if (s, t) not in present]
    assert not paid, f"remove from DEBT, nothing imports this way any more: {paid}"


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("bot.domain", "bot.adapters"),
        ("bot.adapters", "handlers"),
        ("handlers", "bot.runtime"),
        ("bot.services", "handlers"),
        ("bot.services", "bot.runtime"),
        ("bot.config", "bot.services"),
        ("bot.runtime", "bot.local"),
        ("deployer", "bot.services"),
    ],
)
def test_the_rules_forbid(source: str, target: str) -> None:
    """What the layering promises a newcomer, spelled out."""
    assert target not in ALLOWED[source] | DEBT.get(source, set())
