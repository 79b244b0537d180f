"""check-config over mutated configs: an answer (0 or 1) within 2 s, never a traceback.

The valid examples (the design document's, the minimal one, the README's) are mutated the way a
careless or hostile author would: values replaced by odd scalars, huge numbers, deep nesting,
aliases, alias and merge-key bombs and tags; keys deleted; unknown keys added. Every problem
must name its key, and whatever loads must be within the documented bounds.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.config.durations import MAX_SECONDS, MIN_SECONDS
from bot.config.loader import INT_RANGES, Config, ConfigError, check_config, load_config
from deployer.docker import DockerSpec
from deployer.shell import ShellSpec
from deployer.swarm import SwarmSpec
from tests.bot.test_config import DESIGN_EXAMPLE, MINIMAL

README = Path(__file__).resolve().parents[2] / "README.md"
SHIPMATE = str(Path(sys.executable).with_name("shipmate"))


def readme_example() -> str:
    configuration = README.read_text(encoding="utf-8").split("## Configuration", 1)[1]
    return configuration.split("```yaml\n", 1)[1].split("```", 1)[0]


# The minimal example with every number a config may hold, so mutations reach them often.
NUMBERS = MINIMAL + (
    "    health: {command: [./smoke.sh], timeout: 20s, interval: 500ms, successes: 3}\n"
    "  web:\n"
    "    backend: {kind: docker, image: 'shop:{sha}', container: shop-web, keep: 5, stop_timeout: 0}\n"
    "  prod:\n"
    "    backend: {kind: swarm, service: shop, image: 'shop:{sha}', replicas: 3, update_timeout: 5m}\n"
)
SEEDS = [DESIGN_EXAMPLE, MINIMAL, readme_example(), NUMBERS]


@dataclass(frozen=True)
class Raw:
    """YAML written as is (a flow-context fragment), for what plain data cannot say."""

    text: str


Tree = Any  # dict[str | Raw, Tree] | list[Tree] | str | int | float | bool | None | Raw
Path_ = tuple[Any, ...]

# The anchors every mutated file starts with, so aliases and bombs have something to name:
# a scalar, a mapping, a list, and a chain of mappings each merging ten copies of the last
# (a bomb when a mutation merges enough copies of the last).
BOMB_LEVELS = 3  # b3 expands to 3,555 values: the prelude alone stays under the limit
PRELUDE = "\n".join(
    [
        "x-s: &s 30s",
        "x-m: &m {kind: shell, deploy: [./deploy.sh], timeout: 5m}",
        "x-l: &l [U0ALICE, everyone]",
        "x-h: &h {http: 'http://127.0.0.1/health', timeout: 10s}",
        "x-b0: &b0 {k0: v}",
        *(
            f"x-b{n}: &b{n} {{<<: [{', '.join([f'*b{n - 1}'] * 10)}], k{n}: v}}"
            for n in range(1, BOMB_LEVELS + 1)
        ),
    ]
)

PLAIN_TOKENS = [
    "1.10", "0", "-1", "1_000", "0x1F", "0o17", "017", "0b101", "190:20:30", "yes", "no", "on",
    "~", "null", "2001-12-14", "2001-12-14t21:59:43.10-05:00", ".nan", ".NaN", ".inf", "-.inf",
    "1.0e+3", "0.0000001", "1e-7", "''", '""', "30s", "720h", "721h", "1ms", "0.5ms", "1m30s",
    "30s1m", "-5s", "http://", "'https://x/{sha}'", "'{sha}'", "'{bogus}'", "'{'", "'}'",
    "-x", "./deploy.sh", "C0RELEASES", "U0ALICE", "everyone", "T0ACME", "A0APP", "E0ENT",
    "docker", "swarm", "shell", "none", "authors", "'shop:{sha}'", "host", "'8080/tcp'",
    "'127.0.0.1:8081'", "'\"\\0\"'", '"\\0"', '"\\uD800"', '"\\e[2J"', "'a' ", "!!str 5",
]  # fmt: skip
TAGS = [
    "!!python/object:os.system", "!!python/object/apply:os.system", "!!python/name:os.system",
    "!foo", "!!set", "!!omap", "!!binary", "!!str", "!!int", "!!float", "!!bool", "!!null",
    "!!map", "!!seq", "!", "!!timestamp", "!<tag:example.com,2000:x>",
]  # fmt: skip
ALIASES = ["*s", "*m", "*l", "*h", "{<<: *m}", "{<<: *h, command: [./smoke.sh]}", "[*l, *l]"]
# Real keys in wrong places (or right ones, with a wrong value), and keys no config has.
ODD_KEYS = [
    "keep", "replicas", "successes", "interval", "timeout", "stop_timeout", "poll_every", "http",
    "<<", "x-foo", "kind", "", "1", "null", "~", "Staging", "timout", "brnach", "a.b",
]  # fmt: skip

plain = st.sampled_from(PLAIN_TOKENS).map(Raw)
huge_int = st.builds(
    lambda digits, zeros: Raw("1" + "0" * digits if zeros else "9" * digits),
    st.integers(1, 6_000),
    st.booleans(),
)
deep = st.builds(
    lambda depth, kind: Raw(
        "[" * depth + "]" * depth if kind else "{a: " * depth + "1" + "}" * depth
    ),
    st.integers(1, 3_000),
    st.booleans(),
)
bomb = st.builds(
    lambda level, many: Raw(
        f"{{<<: [{', '.join([f'*b{level}'] * many)}]}}" if many > 1 else f"*b{level}"
    ),
    st.integers(0, BOMB_LEVELS),
    st.integers(1, 20),
)
scalars = st.one_of(
    plain,
    st.text(max_size=40),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
)


# A node takes one tag, and an alias none: anything else is a syntax error, not a config.
untagged_scalars = st.one_of(
    st.sampled_from([token for token in PLAIN_TOKENS if not token.startswith("!")]).map(Raw),
    st.text(max_size=40),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
)
tagged = st.builds(
    lambda tag, value: Raw(f"{tag} {emit(value)}"),
    st.sampled_from(TAGS),
    st.one_of(untagged_scalars, huge_int, deep, st.lists(untagged_scalars, max_size=3)),
)
names = st.one_of(st.sampled_from(ODD_KEYS), st.text(max_size=12))
values: st.SearchStrategy[Tree] = st.recursive(
    st.one_of(scalars, huge_int, deep, bomb, tagged, st.sampled_from(ALIASES).map(Raw)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(names, inner, max_size=4)),
    max_leaves=8,
)
# Most mistakes are one wrong scalar where a good one was.
replacements = st.one_of(plain, huge_int, values)


def emit(tree: Tree) -> str:
    """Flow-style YAML: JSON for strings (always double-quoted, so valid), plain for the rest."""
    if isinstance(tree, Raw):
        return tree.text
    if isinstance(tree, dict):
        pairs = ", ".join(f"{emit(key)}: {emit(value)}" for key, value in tree.items())
        return "{" + pairs + "}"
    if isinstance(tree, list):
        return "[" + ", ".join(emit(item) for item in tree) + "]"
    if isinstance(tree, bool) or tree is None:
        return {True: "true", False: "false", None: "null"}[tree]
    if isinstance(tree, float):
        return ".nan" if math.isnan(tree) else repr(tree).replace("inf", ".inf")
    if isinstance(tree, int):
        return str(tree)
    return json.dumps(tree)


def document(tree: dict[Any, Tree]) -> str:
    """The prelude, then one top-level key per line, so problems land on different lines."""
    lines = [f"{emit(key)}: {emit(value)}" for key, value in tree.items()]
    return PRELUDE + "\n" + "\n".join(lines) + "\n"


def paths(tree: Tree, here: Path_ = ()) -> list[Path_]:
    found = [here]
    if isinstance(tree, dict):
        for key, value in tree.items():
            found += paths(value, (*here, key))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            found += paths(value, (*here, index))
    return found


def container(tree: Tree, path: Path_) -> Tree:
    for step in path:
        tree = tree[step]
    return tree


@st.composite
def mutated(draw: st.DrawFn) -> str:
    tree = yaml.safe_load(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        places = paths(tree)[1:]
        if not places:  # every key deleted: an empty mapping is a mutation too
            break
        path = draw(st.sampled_from(places))
        parent = container(tree, path[:-1])
        operation = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if operation == "replace":
            parent[path[-1]] = draw(replacements)
        elif operation == "delete":
            del parent[path[-1]]
        else:
            target = container(tree, path)
            target = target if isinstance(target, dict) else parent
            if isinstance(target, dict):
                target[draw(names)] = draw(replacements)
            else:
                target.append(draw(values))
    return document(tree)


def assert_within_bounds(config: Config) -> None:
    durations = [config.repo.poll_every]
    for env in config.environments.values():
        # Each kind parses into its own spec, with only that kind's fields.
        backend = env.backend
        if isinstance(backend, ShellSpec):
            durations.append(backend.timeout)
        else:
            assert backend.stop_timeout == 0 or MIN_SECONDS <= backend.stop_timeout <= MAX_SECONDS
            assert backend.image
        if isinstance(backend, DockerSpec):
            assert INT_RANGES["keep"][0] <= backend.keep <= INT_RANGES["keep"][1]
        if isinstance(backend, SwarmSpec):
            durations.append(backend.update_timeout)
            assert INT_RANGES["replicas"][0] <= backend.replicas <= INT_RANGES["replicas"][1]
        if env.health is not None:
            durations += [env.health.timeout, env.health.interval]
            low, high = INT_RANGES["successes"]
            assert low <= env.health.successes <= high
            assert env.health.http is None or env.health.http
    assert all(MIN_SECONDS <= seconds <= MAX_SECONDS for seconds in durations), durations
    assert config.repo.pr_url is None or config.repo.pr_url


@settings(
    max_examples=300,
    deadline=2_000,
    derandomize=True,  # the same 300 files on every run: CI stays green or red for a reason
    database=None,  # nothing written into the working tree
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=mutated())
def test_check_config_answers_every_mutated_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "shipmate.yml"
    path.write_text(text, encoding="utf-8")
    config, lines = check_config(path)
    if config is not None:
        assert_within_bounds(config)
        return
    try:
        load_config(path)
    except ConfigError as exc:
        problems = exc.problems
    assert lines == [str(problem) for problem in problems]
    unnamed = [str(problem) for problem in problems if not problem.key]
    assert not unnamed, "every problem names its key"


def test_the_mutations_reach_every_kind_of_answer(tmp_path: Path) -> None:
    """The generator is not vacuous: it makes good files, bombs, deep ones and tagged ones."""
    seen: set[str] = set()
    kinds = {
        "ok": re.compile(r": OK — "),
        "bomb": re.compile(r"once aliases are expanded"),
        "deep": re.compile(r"levels deep"),
        "tag": re.compile(r"unknown tag"),
        "number": re.compile(r"expected a whole number from"),
        "duration": re.compile(r"expected a duration from 1ms"),
    }

    @settings(max_examples=300, derandomize=True, database=None, deadline=None)
    @given(text=mutated())
    def collect(text: str) -> None:
        path = tmp_path / "shipmate.yml"
        path.write_text(text, encoding="utf-8")
        _, lines = check_config(path)
        seen.update(kind for kind, pattern in kinds.items() if any(map(pattern.search, lines)))

    collect()
    assert seen == set(kinds)


def test_the_real_cli_answers_mutated_files(tmp_path: Path) -> None:
    """A few of the same files through `shipmate check-config` itself, as a user runs it."""
    texts: list[str] = []

    @settings(max_examples=6, derandomize=True, database=None, deadline=None)
    @given(text=mutated())
    def collect(text: str) -> None:
        texts.append(text)

    collect()
    for number, text in enumerate(texts):
        path = tmp_path / f"mutated-{number}.yml"
        path.write_text(text, encoding="utf-8")
        done = subprocess.run(
            [SHIPMATE, "check-config", str(path)],
            capture_output=True,
            text=True,
            timeout=20,
            env={**os.environ, "SHIPMATE_CONFIG": str(path)},
        )
        assert done.returncode in (0, 1), done.stderr
        assert done.stderr == ""
        assert done.stdout.startswith(str(path))
