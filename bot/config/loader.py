"""shipmate.yml: load, validate, and expose it as frozen, typed values.

The YAML is composed into nodes (never constructed into Python objects) so that every problem can
name its line, and so that a value is read the way the user wrote it: `branch: 1.10` is the branch
"1.10", not the float 1.1. All problems are collected and raised together in one ConfigError.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import urlsplit

import yaml
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, Event
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.tokens import Token

from bot.config.durations import BOUNDS as DURATION_BOUNDS
from bot.config.durations import EXPECTED as DURATION_EXPECTED
from bot.config.durations import duration_seconds, parse_duration, within_bounds
from deployer.argv import PLACEHOLDERS, template_problem
from deployer.dockerrules import (
    container_name_problem,
    container_port_problem,
    host_port_problem,
    published_port_problem,
    service_name_problem,
    swarm_ports_problem,
)
from deployer.health import HealthSpec
from deployer.shell import ShellSpec
from deployer.specs import SPECS, BackendSpec

__all__ = [
    "ACTIONS",
    "EVERYONE",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "EnvironmentConfig",
    "Limits",
    "Permissions",
    "RepoConfig",
    "SlackConfig",
    "check_config",
    "load_config",
    "parse_duration",
]

Approval = Literal["none", "authors"]

EVERYONE = "everyone"
ACTIONS = ("release", "rollback", "lock")


@dataclass(frozen=True, slots=True)
class Limits:
    """Sizes no real team reaches; past them a file is a mistake or an attack.

    They are checked while the YAML is composed, before anything is expanded, so a file of
    a few bytes cannot make shipmate (check-config, web or worker) work for minutes.
    """

    file_bytes: int = 1024 * 1024
    # Every alias counts as the copy it stands for: the expanded size, not the written one.
    nodes: int = 20_000
    depth: int = 64


LIMITS = Limits()
# Whole-number keys and their ranges; far outside anything useful, but finite.
INT_RANGES: Mapping[str, tuple[int, int]] = MappingProxyType(
    {"keep": (1, 100), "replicas": (1, 1000), "successes": (1, 100)}
)


# Mappings are read-only proxies; they are left out of hashing (a proxy is unhashable) so the
# dataclasses stay usable as dict keys.
def _frozen(items: Mapping[str, str] | None = None) -> Mapping[str, str]:
    return MappingProxyType(dict(items or {}))


# ---------------------------------------------------------------------------------------------
# The configuration, as the rest of shipmate sees it


@dataclass(frozen=True, slots=True, kw_only=True)
class Permissions:
    """Who may do what: Slack user IDs, or the word "everyone"."""

    release: tuple[str, ...] = (EVERYONE,)
    rollback: tuple[str, ...] = (EVERYONE,)
    lock: tuple[str, ...] = (EVERYONE,)

    def allows(self, action: str, user: str) -> bool:
        granted = self._granted(action)
        return EVERYONE in granted or user in granted

    def _granted(self, action: str) -> tuple[str, ...]:
        # /unlock undoes /lock, so whoever may lock may also unlock.
        by_action = {
            "release": self.release,
            "rollback": self.rollback,
            "lock": self.lock,
            "unlock": self.lock,
        }
        if action not in by_action:
            raise ValueError(f"unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
        return by_action[action]


@dataclass(frozen=True, slots=True, kw_only=True)
class RepoConfig:
    url: str  # an absolute local path, or a clone URL (https://, ssh://, git://, file://, user@host:path)
    branch: str = "main"
    pr_url: str | None = None  # contains "{number}"
    poll_every: float = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class SlackConfig:
    channel: str
    approve_reactions: tuple[str, ...] = ("white_check_mark", "+1")
    block_reactions: tuple[str, ...] = ("no_entry", "x")
    # Who may approve for an involved author with no Slack user; empty: whoever typed /release.
    stand_ins: tuple[str, ...] = ()
    # Requests from elsewhere are refused. None: the team is learned from auth.test at start,
    # any app id is taken (a signed request is ours), and no enterprise is expected.
    team_id: str | None = None
    app_id: str | None = None
    enterprise_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvironmentConfig:
    name: str
    # The deployer's own specs: their defaults and validation are the only ones.
    backend: BackendSpec
    approval: Approval = "authors"
    health: HealthSpec | None = None
    permissions: Permissions = field(default_factory=Permissions)
    channel: str | None = None  # overrides slack.channel
    lock_on_failure: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    path: Path
    base_dir: Path
    repo: RepoConfig
    slack: SlackConfig
    state_dir: Path
    people: Mapping[str, str] = field(
        default_factory=_frozen, hash=False
    )  # lower-cased e-mail -> user ID
    permissions: Permissions = field(default_factory=Permissions)
    environments: Mapping[str, EnvironmentConfig] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )

    def environment(self, name: str) -> EnvironmentConfig | None:
        return self.environments.get(name)

    def channel_for(self, environment: str) -> str:
        env = self.environments.get(environment)
        return env.channel if env is not None and env.channel else self.slack.channel


# ---------------------------------------------------------------------------------------------
# Problems


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    path: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(Exception):
    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems: list[ConfigProblem] = list(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))


class _Problems:
    def __init__(self, path: str) -> None:
        self.path = path
        self.items: list[ConfigProblem] = []
        self._seen: set[ConfigProblem] = set()

    def report(self, line: int | None, key: str, message: str) -> None:
        problem = ConfigProblem(self.path, line, key, message)
        # A YAML anchor merged into several places would otherwise report its problems repeatedly.
        if problem not in self._seen:
            self._seen.add(problem)
            self.items.append(problem)

    def at(self, node: Node, key: str, message: str) -> None:
        self.report(_line(node), key, message)

    def expected(self, node: Node, key: str, expected: str) -> None:
        self.at(node, key, f"expected {expected}, got {_got(node)}")


# ---------------------------------------------------------------------------------------------
# Nodes

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))
_MERGE = _TAG + "merge"
# Scalars a string field accepts, read as written (so `branch: 1.10` and `+1` survive).
_TEXT_TAGS = frozenset({_STR, _INT, _FLOAT, _BOOL, _TAG + "timestamp"})
_KIND_NAMES = {_STR: "a string", _INT: "a number", _FLOAT: "a number", _BOOL: "a boolean"}


def _line(node: Node) -> int | None:
    return node.start_mark.line + 1 if node.start_mark is not None else None


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL


def _describe(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if node.tag == _NULL:
        return "null"
    return _KIND_NAMES.get(node.tag, f"a value tagged {node.tag}")


def _got(node: Node) -> str:
    """What the user wrote: the text itself for a scalar, else what kind of thing it is."""
    if isinstance(node, ScalarNode) and node.tag in _TEXT_TAGS:
        return _shown(str(node.value))
    return _describe(node)


_SHOWN_CHARACTERS = 60


def _shown(text: str) -> str:
    """`text` quoted, cut short when long: a 5,000-digit number makes a poor error line."""
    if len(text) <= _SHOWN_CHARACTERS:
        return repr(text)
    return f"{text[:_SHOWN_CHARACTERS]!r}… ({len(text):,} characters)"


def _key_name(name: str) -> str:
    # Key names go to a terminal: control characters (escape sequences) are shown, not sent;
    # an empty name is shown as '' so that the problem still names its key.
    if name.isprintable() and 0 < len(name) <= _SHOWN_CHARACTERS:
        return name
    return _shown(name)


def _join(parent: str, name: str) -> str:
    name = _key_name(name)
    return f"{parent}.{name}" if parent else name


Entries = dict[str, tuple[Node, Node]]


def _entries(
    p: _Problems, node: MappingNode, key: str, seen: frozenset[int] = frozenset()
) -> Entries:
    """A mapping's key -> (key node, value node), with `<<` merges and duplicate keys reported."""
    own: Entries = {}
    merged: list[MappingNode] = []
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE:
            merged.extend(_merge_sources(p, value_node, key))
            continue
        name = _key_text(p, key_node, key)
        if name is None:
            continue
        if name in own:
            first = _line(own[name][0])
            p.at(key_node, _join(key, name), f"duplicate key (first set on line {first})")
            continue
        own[name] = (key_node, value_node)
    for source in merged:
        # An anchor merged into itself would recurse forever.
        if id(source) in seen or source is node:
            continue
        for name, entry in _entries(p, source, key, seen | {id(node)}).items():
            own.setdefault(name, entry)
    return own


def _merge_sources(p: _Problems, node: Node, key: str) -> list[MappingNode]:
    sources = node.value if isinstance(node, SequenceNode) else [node]
    if all(isinstance(source, MappingNode) for source in sources):
        return list(sources)
    p.at(
        node,
        _join(key, "<<"),
        f"expected a mapping (or a list of them) to merge, got {_describe(node)}",
    )
    return []


def _key_text(p: _Problems, node: Node, parent: str) -> str | None:
    if isinstance(node, ScalarNode) and node.tag in _TEXT_TAGS:
        return str(node.value)
    p.at(node, parent, f"expected a plain key, got {_describe(node)}")
    return None


# ---------------------------------------------------------------------------------------------
# Reading a mapping field by field

T = TypeVar("T")
Reader = Callable[[_Problems, Node, str], T]


def _unknown_key_message(name: str, allowed: Sequence[str], note: str, always_list: bool) -> str:
    close = difflib.get_close_matches(name, allowed, n=1)
    listed = ", ".join(allowed)
    if not close:
        return f"unknown key{note}; expected one of {listed}"
    suggestion = f"unknown key{note}, did you mean {close[0]!r}?"
    return f"{suggestion} (allowed: {listed})" if always_list else suggestion


class _Fields:
    """One YAML mapping, read key by key.

    A mapping that is missing or of the wrong type (already reported) reads as empty and reports
    nothing more, so one mistake yields one problem, not a cascade.
    """

    def __init__(self, p: _Problems, node: Node | None, key: str, line: int | None) -> None:
        self.p = p
        self.key = key
        self.line = line  # of the key that introduced this mapping: where a missing key belongs
        self.present = isinstance(node, MappingNode)
        self.entries: Entries = _entries(p, node, key) if isinstance(node, MappingNode) else {}

    def child(self, name: str) -> str:
        return _join(self.key, name)

    def check_keys(
        self,
        allowed: Sequence[str],
        note: str = "",
        always_list: bool = False,
        ignore_prefix: str | None = None,
    ) -> None:
        for name, (key_node, _) in self.entries.items():
            if name in allowed or (ignore_prefix and name.startswith(ignore_prefix)):
                continue
            message = _unknown_key_message(name, allowed, note, always_list)
            self.p.at(key_node, self.child(name), message)

    def get(self, name: str) -> Node | None:
        """The value node; None when the key is absent or null (meaning: use the default)."""
        entry = self.entries.get(name)
        return None if entry is None or _is_null(entry[1]) else entry[1]

    def value(self, name: str, read: Reader[T], default: T) -> T:
        node = self.get(name)
        return default if node is None else read(self.p, node, self.child(name))

    def required(self, name: str, read: Reader[T], missing: T) -> T:
        entry = self.entries.get(name)
        if entry is None:
            self.report_missing(name)
            return missing
        return read(self.p, entry[1], self.child(name))

    def report_missing(self, name: str) -> None:
        if self.present:
            self.p.report(self.line, self.child(name), "missing required key")

    def section(self, name: str, allowed: Sequence[str] | None, required: bool = False) -> _Fields:
        entry = self.entries.get(name)
        if entry is None:
            if required:
                self.report_missing(name)
            return _Fields(self.p, None, self.child(name), self.line)
        key_node, value_node = entry
        if not isinstance(value_node, MappingNode):
            if required or not _is_null(value_node):
                self.p.at(
                    value_node, self.child(name), f"expected a mapping, got {_describe(value_node)}"
                )
            return _Fields(self.p, None, self.child(name), _line(key_node))
        fields = _Fields(self.p, value_node, self.child(name), _line(key_node))
        if allowed is not None:
            fields.check_keys(allowed)
        return fields


# ---------------------------------------------------------------------------------------------
# Scalar readers: each reports its own problem and returns a harmless fallback, because a config
# with any problem is never returned anyway.


def _text(p: _Problems, node: Node, key: str) -> str | None:
    if isinstance(node, ScalarNode) and node.tag in _TEXT_TAGS:
        text = str(node.value)
        # A NUL ends a C string: paths and argv would be cut short, or refused at deploy time.
        if "\0" in text:
            p.at(node, key, "expected text without NUL characters ('\\0')")
            return None
        return text
    p.at(node, key, f"expected a string, got {_describe(node)}")
    return None


def _string(p: _Problems, node: Node, key: str) -> str:
    return _text(p, node, key) or ""


def _matching(pattern: str, expected: str) -> Reader[str]:
    regex = re.compile(pattern)

    def read(p: _Problems, node: Node, key: str) -> str:
        text = _text(p, node, key)
        if text is None:
            return ""
        if not regex.fullmatch(text):
            p.expected(node, key, expected)
        return text

    return read


def _choice(p: _Problems, node: Node, key: str, choices: Sequence[str]) -> str | None:
    text = _text(p, node, key)
    if text is not None and text not in choices:
        p.expected(node, key, f"one of {', '.join(choices)}")
        return None
    return text


def _approval(p: _Problems, node: Node, key: str) -> Approval:
    return "none" if _choice(p, node, key, ("none", "authors")) == "none" else "authors"


def _backend_kind(p: _Problems, node: Node, key: str) -> str | None:
    return _choice(p, node, key, tuple(SPECS))


def _flag(p: _Problems, node: Node, key: str) -> bool:
    # An explicit `!!bool maybe` carries the tag without being one of YAML's booleans.
    if isinstance(node, ScalarNode) and node.tag == _BOOL:
        value = SafeConstructor.bool_values.get(str(node.value).lower())
        if value is not None:
            return value
    p.expected(node, key, "true or false")
    return False


# Python refuses to convert integers past 4,300 digits, and none of ours needs more than a few.
_INT_CHARACTERS = 24


def _int_value(node: Node) -> int | None:
    if not (isinstance(node, ScalarNode) and node.tag == _INT):
        return None
    if len(str(node.value)) > _INT_CHARACTERS:
        return None
    try:
        # Explicitly tagged text (`!!int abc`) reaches here too.
        return int(SafeConstructor().construct_yaml_int(node))
    except ValueError:
        return None


def _whole_number(name: str) -> Reader[int]:
    low, high = INT_RANGES[name]

    def read(p: _Problems, node: Node, key: str) -> int:
        number = _int_value(node)
        if number is not None and low <= number <= high:
            return number
        p.expected(node, key, f"a whole number from {low} to {high}")
        return low

    return read


def _duration_reader(allow_zero: bool) -> Reader[float]:
    allowed = (
        f"0 or a duration {DURATION_BOUNDS}" if allow_zero else f"a duration {DURATION_BOUNDS}"
    )

    def read(p: _Problems, node: Node, key: str) -> float:
        seconds = None
        if isinstance(node, ScalarNode) and node.tag in (_STR, _INT, _FLOAT):
            seconds = duration_seconds(str(node.value))
        if seconds is None:
            p.expected(node, key, DURATION_EXPECTED)
        elif seconds == 0 and not allow_zero:
            p.expected(node, key, "a duration longer than 0")
        elif seconds != 0 and not within_bounds(seconds):
            p.expected(node, key, allowed)
        else:
            return seconds
        return 1.0

    return read


_duration = _duration_reader(allow_zero=False)
_duration_or_zero = _duration_reader(allow_zero=True)


def _list_of(read_item: Reader[str], expected: str, hint: bool = True) -> Reader[tuple[str, ...]]:
    def read(p: _Problems, node: Node, key: str) -> tuple[str, ...]:
        if isinstance(node, SequenceNode):
            return tuple(read_item(p, item, f"{key}[{i}]") for i, item in enumerate(node.value))
        message = f"expected {expected}, got {_describe(node)}"
        if hint and isinstance(node, ScalarNode) and node.tag in _TEXT_TAGS:
            message += f" (write [{node.value}])"
        p.at(node, key, message)
        return ()

    return read


def _template(p: _Problems, node: Node, key: str, allowed: Collection[str] = PLACEHOLDERS) -> str:
    text = _text(p, node, key)
    if text is None:
        return ""
    _check_template(p, node, key, text, allowed)
    return text


def _check_template(
    p: _Problems, node: Node, key: str, text: str, allowed: Collection[str]
) -> None:
    problem = template_problem(text, allowed)
    if problem:
        p.at(node, key, problem)


def _argv(p: _Problems, node: Node, key: str) -> tuple[str, ...]:
    if isinstance(node, ScalarNode) and node.tag in _TEXT_TAGS:
        # Never split a string: that is a shell's job, and user text must not meet a shell.
        p.at(node, key, "expected a list of arguments (argv), got a string")
        return ()
    argv = _list_of(_template, "a list of arguments (argv)", hint=False)(p, node, key)
    if isinstance(node, SequenceNode) and not node.value:
        p.at(node, key, "expected a list of arguments (argv), got an empty list")
    elif isinstance(node, SequenceNode) and _is_empty_text(node.value[0]):
        p.at(node.value[0], f"{key}[0]", "expected the program to run, got ''")
    return argv


def _is_empty_text(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag in _TEXT_TAGS and node.value == ""


def _local_path(base_dir: Path, text: str) -> Path:
    return Path(os.path.normpath(base_dir / os.path.expanduser(text)))


def _with_program_resolved(argv: tuple[str, ...], base_dir: Path) -> tuple[str, ...]:
    """'./deploy.sh' means next to shipmate.yml; a bare 'deploy' is looked up on PATH."""
    if not argv or "/" not in argv[0] or os.path.isabs(argv[0]):
        return argv
    return (str(_local_path(base_dir, argv[0])), *argv[1:])


def _directory(base_dir: Path) -> Reader[Path | None]:
    def read(p: _Problems, node: Node, key: str) -> Path | None:
        text = _text(p, node, key)
        if text == "":
            p.expected(node, key, "a directory path")
        return _local_path(base_dir, text) if text else None

    return read


def _string_map(
    read_key: Callable[[str], str | None], read_value: Reader[str], expected: str
) -> Reader[Mapping[str, str]]:
    """`read_key` returns what was expected when the key is bad, else None."""

    def read(p: _Problems, node: Node, key: str) -> Mapping[str, str]:
        if not isinstance(node, MappingNode):
            p.at(node, key, f"expected {expected}, got {_describe(node)}")
            return _frozen()
        result: dict[str, str] = {}
        for name, (key_node, value_node) in _entries(p, node, key).items():
            bad_key = read_key(name)
            if bad_key:
                p.at(key_node, _join(key, name), f"expected {bad_key}, got {name!r}")
            result[name] = read_value(p, value_node, _join(key, name))
        return _frozen(result)

    return read


# ---------------------------------------------------------------------------------------------
# Domain-specific values

_USER_ID = r"[UW][A-Z0-9]{2,}"
_CHANNEL_ID = r"[CG][A-Z0-9]{2,}"
_ENV_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
_EMOJI = re.compile(r"[^\sA-Z:]+(?:::skin-tone-[2-6])?")
_BRANCH = re.compile(r"(?!-)(?!.*\.\.)(?!.*//)[A-Za-z0-9._/-]+(?<![/.])(?<!\.lock)")
_ENV_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REGISTRY = r"[A-Za-z0-9][A-Za-z0-9.-]*(?::\d{1,5})?(?:/[A-Za-z0-9._/-]+)?"
_URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_SCP_LIKE = re.compile(r"[A-Za-z0-9_][\w.-]*@[A-Za-z0-9][\w.-]*:\S+")
_CLONE_SCHEMES = ("https", "http", "ssh", "git", "file")

_user_id = _matching(_USER_ID, "a Slack user ID like U0ALICE")
_grantee = _matching(f"{_USER_ID}|{EVERYONE}", "a Slack user ID like U0ALICE or 'everyone'")
_grantees = _list_of(_grantee, "a list of Slack user IDs or 'everyone'")
_channel_id = _matching(_CHANNEL_ID, "a Slack channel ID like C0RELEASES (not a #name)")
_team_id = _matching(r"T[A-Z0-9]{2,}", "a Slack team (workspace) ID like T0ACME")
_app_id = _matching(r"A[A-Z0-9]{2,}", "a Slack app ID like A0SHIPMATE")
_enterprise_id = _matching(r"E[A-Z0-9]{2,}", "a Slack Enterprise Grid ID like E0ACME")
_network = _matching(r"[A-Za-z0-9][A-Za-z0-9_.:-]*", "a docker network name like host")
_registry = _matching(_REGISTRY, "a registry like ghcr.io or registry.local:5000 (no scheme)")


def _emoji(p: _Problems, node: Node, key: str) -> str:
    text = _text(p, node, key)
    if text is None:
        return ""
    # Slack shows reactions as :name:, so people paste them that way.
    name = text.strip(":")
    if not _EMOJI.fullmatch(name):
        p.expected(node, key, "an emoji name like white_check_mark")
    return name


_reactions = _list_of(_emoji, "a list of emoji names")


def _branch(p: _Problems, node: Node, key: str) -> str:
    text = _text(p, node, key)
    # The branch ends up in git's argv: a leading '-' would be read as an option.
    if text is not None and not _BRANCH.fullmatch(text):
        p.expected(node, key, "a branch name like main")
    return text or "main"


def _pr_url(p: _Problems, node: Node, key: str) -> str:
    text = _text(p, node, key)
    if text is None:
        return ""
    _check_template(p, node, key, text, ("number",))
    if "{number}" not in text or not text.startswith(("https://", "http://")):
        p.expected(
            node, key, "a URL containing {number}, like https://github.com/acme/shop/pull/{number}"
        )
    return text


def _clone_url_ok(text: str) -> bool:
    scheme = _URL_SCHEME.match(text)
    if scheme is None:
        return bool(_SCP_LIKE.fullmatch(text))
    if scheme.group(1).lower() not in _CLONE_SCHEMES or any(c.isspace() for c in text):
        return False
    host = urlsplit(text).hostname or ""
    # ssh would read a host starting with '-' as an option.
    return scheme.group(1).lower() == "file" or (bool(host) and not host.startswith("-"))


def _repo_url(base_dir: Path) -> Reader[str]:
    expected = "a local path or a clone URL (https://, ssh://, git://, file://, user@host:path)"

    def read(p: _Problems, node: Node, key: str) -> str:
        text = _text(p, node, key)
        if text is None:
            return ""
        if "://" in text or _SCP_LIKE.fullmatch(text):
            if not _clone_url_ok(text):
                p.expected(node, key, expected)
            return text
        if not text:
            p.expected(node, key, expected)
            return ""
        # Anything else is a path, made absolute, so git can never read it as an option or a
        # "<transport>::<address>" remote helper.
        return str(_local_path(base_dir, text))

    return read


def _image(p: _Problems, node: Node, key: str) -> str:
    text = _text(p, node, key)
    if text is None:
        return ""
    placeholder_problem = template_problem(text)
    if placeholder_problem:
        p.at(node, key, placeholder_problem)
        return text
    has_sha = "{sha}" in text or "{short_sha}" in text
    if not has_sha or text.startswith("-") or any(c.isspace() for c in text):
        p.expected(node, key, "an image containing {sha} or {short_sha}, like shop:{sha}")
    return text


def _health_url(p: _Problems, node: Node, key: str) -> str:
    text = _text(p, node, key)
    if text is None:
        return ""
    _check_template(p, node, key, text, PLACEHOLDERS)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        p.expected(node, key, "an http:// or https:// URL")
    return text


def _env_var_name(name: str) -> str | None:
    return None if _ENV_VAR.fullmatch(name) else "an environment variable name"


def _checked(problem_of: Callable[[str], str | None]) -> Reader[str]:
    """A reader for text whose rule lives in the deployer: `problem_of` says what was expected."""

    def read(p: _Problems, node: Node, key: str) -> str:
        text = _text(p, node, key)
        expected = None if text is None else problem_of(text)
        if expected:
            p.expected(node, key, expected)
        return text or ""

    return read


_container_name = _checked(container_name_problem)
_service_name = _checked(service_name_problem)
_host_port = _checked(host_port_problem)
_published_port = _checked(published_port_problem)


_env_vars = _string_map(_env_var_name, _string, "a mapping of variable names to values")
_PORTS_EXPECTED = "a mapping of container port to host port"
_ports = _string_map(container_port_problem, _host_port, _PORTS_EXPECTED)
_published_ports = _string_map(container_port_problem, _published_port, _PORTS_EXPECTED)


# ---------------------------------------------------------------------------------------------
# Sections

_TOP_KEYS = ("repo", "slack", "people", "permissions", "environments", "state_dir")
_REPO_KEYS = ("url", "branch", "pr_url", "poll_every")
_SLACK_KEYS = (
    "channel",
    "approve_reactions",
    "block_reactions",
    "stand_ins",
    "team_id",
    "app_id",
    "enterprise_id",
)
_ENV_KEYS = ("approval", "backend", "health", "permissions", "channel", "lock_on_failure")
_HEALTH_KEYS = ("http", "command", "timeout", "interval", "successes")


def _repo(top: _Fields, base_dir: Path) -> RepoConfig:
    f = top.section("repo", _REPO_KEYS, required=True)
    return RepoConfig(
        url=f.required("url", _repo_url(base_dir), ""),
        branch=f.value("branch", _branch, "main"),
        pr_url=f.value("pr_url", _pr_url, None),
        poll_every=f.value("poll_every", _duration, 30.0),
    )


def _slack(top: _Fields) -> SlackConfig:
    f = top.section("slack", _SLACK_KEYS, required=True)
    defaults = SlackConfig(channel="")
    approve = f.value("approve_reactions", _reactions, defaults.approve_reactions)
    block = f.value("block_reactions", _reactions, defaults.block_reactions)
    node = f.get("approve_reactions")
    if isinstance(node, SequenceNode) and not node.value:
        f.p.at(node, f.child("approve_reactions"), "expected at least one emoji, got an empty list")
    _check_reactions_disjoint(f, approve, block)
    return SlackConfig(
        channel=f.required("channel", _channel_id, ""),
        approve_reactions=tuple(dict.fromkeys(approve)),
        block_reactions=tuple(dict.fromkeys(block)),
        stand_ins=f.value("stand_ins", _list_of(_user_id, "a list of Slack user IDs"), ()),
        team_id=f.value("team_id", _team_id, None),
        app_id=f.value("app_id", _app_id, None),
        enterprise_id=f.value("enterprise_id", _enterprise_id, None),
    )


def _check_reactions_disjoint(f: _Fields, approve: tuple[str, ...], block: tuple[str, ...]) -> None:
    node = f.get("block_reactions")
    for index, name in enumerate(block):
        if name and name in approve:
            # `block` came from this very sequence, item for item.
            where = node.value[index] if isinstance(node, SequenceNode) else None
            line = _line(where) if where is not None else f.line
            message = (
                f"{name!r} is also an approve reaction; an emoji cannot both approve and block"
            )
            f.p.report(line, f"{f.child('block_reactions')}[{index}]", message)


def _people(p: _Problems, top: _Fields) -> Mapping[str, str]:
    node = top.get("people")
    if node is None:
        return _frozen()
    if not isinstance(node, MappingNode):
        p.at(
            node,
            "people",
            f"expected a mapping of git e-mail to Slack user ID, got {_describe(node)}",
        )
        return _frozen()
    people: dict[str, str] = {}
    first_spelling: dict[str, str] = {}
    for name, (key_node, value_node) in _entries(p, node, "people").items():
        key = f"people.{name}"
        email = name.strip().lower()
        if not _EMAIL.fullmatch(email):
            p.at(key_node, key, f"expected a git e-mail address, got {name!r}")
        elif email in people:
            p.at(key_node, key, f"duplicate of {first_spelling[email]!r} (e-mails ignore case)")
            continue
        first_spelling.setdefault(email, name)
        people[email] = _user_id(p, value_node, key)
    return _frozen(people)


def _permissions(f: _Fields, fallback: Permissions) -> Permissions:
    return Permissions(
        release=f.value("release", _grantees, fallback.release),
        rollback=f.value("rollback", _grantees, fallback.rollback),
        lock=f.value("lock", _grantees, fallback.lock),
    )


def _environments(
    p: _Problems, top: _Fields, permissions: Permissions, base_dir: Path
) -> Mapping[str, EnvironmentConfig]:
    f = top.section("environments", None, required=True)
    if f.present and not f.entries:
        p.report(f.line, f.key, "expected at least one environment, got an empty mapping")
    result: dict[str, EnvironmentConfig] = {}
    for name, (key_node, value_node) in f.entries.items():
        key = f.child(name)
        if not _ENV_NAME.fullmatch(name):
            message = "expected a name of at most 32 lower-case letters, digits, '-' and '_'"
            p.at(key_node, key, f"{message}, got {name!r}")
        env = _Fields(p, value_node, key, _line(key_node))
        if not env.present:
            p.at(
                value_node,
                key,
                f"expected a mapping with at least a backend, got {_describe(value_node)}",
            )
        env.check_keys(_ENV_KEYS)
        result[name] = _environment(name, env, permissions, base_dir)
    return MappingProxyType(result)


def _environment(
    name: str, f: _Fields, permissions: Permissions, base_dir: Path
) -> EnvironmentConfig:
    return EnvironmentConfig(
        name=name,
        approval=f.value("approval", _approval, "authors"),
        backend=_backend(f.section("backend", None, required=True), base_dir),
        health=_health(f, base_dir),
        permissions=_permissions(f.section("permissions", ACTIONS), permissions),
        channel=f.value("channel", _channel_id, None),
        lock_on_failure=f.value("lock_on_failure", _flag, True),
    )


# A backend's keys, in the order error messages list them, and how each is read. The values
# go straight into the kind's spec: a key left out takes the spec's default.
def _backend_readers(kind: str, base_dir: Path) -> Mapping[str, Reader[Any]]:
    return {
        "docker": {
            "image": _image,
            "container": _container_name,
            "ports": _ports,
            "env": _env_vars,
            "network": _network,
            "keep": _whole_number("keep"),
            "stop_timeout": _duration_or_zero,
            "registry": _registry,
        },
        "swarm": {
            "service": _service_name,
            "image": _image,
            "update_timeout": _duration,
            "registry": _registry,
            "env": _env_vars,
            "ports": _published_ports,
            "network": _network,
            "replicas": _whole_number("replicas"),
            "stop_timeout": _duration_or_zero,
        },
        "shell": {
            "deploy": _program_argv(base_dir),
            "timeout": _duration,
            "cwd": _directory(base_dir),
            "env": _env_vars,
        },
    }[kind]


_REQUIRED_KEYS = frozenset({"image", "container", "service", "deploy"})
# Stands in for a backend or health check whose problems were reported: a config with any
# problem is never returned, so nothing ever runs it.
_NO_BACKEND: BackendSpec = ShellSpec(deploy=("true",))


def _backend(f: _Fields, base_dir: Path) -> BackendSpec:
    kind = f.required("kind", _backend_kind, None)
    if kind is None:
        # Without a kind there is no telling which keys belong; the kind problem says enough.
        return _NO_BACKEND
    readers = _backend_readers(kind, base_dir)
    f.check_keys(("kind", *readers), note=f" for a {kind} backend", always_list=True)
    reported = len(f.p.items)
    values = _present_values(f, readers)
    if kind == "shell":
        # "./deploy.sh" runs next to shipmate.yml unless the file says otherwise.
        values["cwd"] = values.get("cwd") or base_dir
    if kind == "swarm":
        _check_host_network_ports(f, values)
    return _spec(f, SPECS[kind], values, reported, _NO_BACKEND)


def _present_values(f: _Fields, readers: Mapping[str, Reader[Any]]) -> dict[str, Any]:
    """The keys the file sets (required ones always), read; the others are left to defaults."""
    values: dict[str, Any] = {}
    for name, read in readers.items():
        if name in _REQUIRED_KEYS:
            values[name] = f.required(name, read, None)
        elif (node := f.get(name)) is not None:
            values[name] = read(f.p, node, f.child(name))
    return values


def _check_host_network_ports(f: _Fields, values: Mapping[str, Any]) -> None:
    ports_node = f.get("ports")
    problem = swarm_ports_problem(values.get("ports") or {}, values.get("network"))
    if ports_node is not None and problem:
        f.p.at(ports_node, f.child("ports"), problem)


def _spec(
    f: _Fields, build: Callable[..., T], values: dict[str, Any], reported: int, fallback: T
) -> T:
    """The spec from `values`, unless a problem was reported while reading them.

    The spec checks its values once more; a rule it has that the readers lack is still
    reported with file, line and key, never raised at deploy time.
    """
    if len(f.p.items) > reported:
        return fallback
    try:
        return build(**values)
    except (TypeError, ValueError) as exc:
        f.p.report(f.line, f.key, str(exc))
        return fallback


def _program_argv(base_dir: Path) -> Reader[tuple[str, ...]]:
    def read(p: _Problems, node: Node, key: str) -> tuple[str, ...]:
        return _with_program_resolved(_argv(p, node, key), base_dir)

    return read


def _health(env: _Fields, base_dir: Path) -> HealthSpec | None:
    if env.get("health") is None:
        return None
    f = env.section("health", _HEALTH_KEYS)
    reported = len(f.p.items)
    readers: Mapping[str, Reader[Any]] = {
        "http": _health_url,
        "command": _program_argv(base_dir),
        "timeout": _duration,
        "interval": _duration,
        "successes": _whole_number("successes"),
    }
    values = _present_values(f, readers)
    if f.present and ("http" in values) == ("command" in values):
        which = "both" if "http" in values else "neither"
        f.p.report(
            f.line,
            f.key,
            f"expected exactly one of 'http' (a URL) or 'command' (argv), got {which}",
        )
    return _spec(f, HealthSpec, values | {"cwd": base_dir}, reported, None)


# ---------------------------------------------------------------------------------------------
# Loading


def _read_text(p: _Problems, path: Path, limits: Limits) -> str | None:
    try:
        with path.open("rb") as file:
            # Read one byte past the limit, never the whole of a huge file (or of /dev/zero).
            data = file.read(limits.file_bytes + 1)
        if len(data) > limits.file_bytes:
            p.report(None, "", f"larger than {limits.file_bytes:,} bytes; that is not a config")
            return None
        return data.decode("utf-8")
    except FileNotFoundError:
        p.report(None, "", "file not found")
    except IsADirectoryError:
        p.report(None, "", "is a directory, not a file")
    except UnicodeDecodeError as exc:
        p.report(None, "", f"not UTF-8 text ({exc.reason} at byte {exc.start})")
    except OSError as exc:
        p.report(None, "", f"cannot read: {exc.strerror}")
    return None


def _yaml_problem(p: _Problems, exc: yaml.YAMLError) -> None:
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        p.report(None, "", f"invalid YAML: {exc}")
        return
    mark = exc.problem_mark
    message = f"invalid YAML at column {mark.column + 1}: "
    if exc.context:
        started = f" (line {exc.context_mark.line + 1})" if exc.context_mark else ""
        message += f"{exc.context}{started}: "
    message += exc.problem or "syntax error"
    if "'\\t'" in message:
        message += " (indent with spaces, not tabs)"
    p.report(mark.line + 1, "", message)


def _compose(p: _Problems, text: str, limits: Limits) -> MappingNode | None:
    # Compose rather than load: no Python object ever gets constructed.
    loader = _GuardedLoader(text, limits)
    try:
        root = loader.get_single_node()
    except _Refused as exc:
        p.report(exc.line, exc.key, exc.message)
        return None
    except yaml.YAMLError as exc:
        _yaml_problem(p, exc)
        return None
    finally:
        loader.dispose()
        for line, key, message in loader.problems:
            p.report(line, key, message)
    if root is None or _is_null(root):
        p.report(
            None, "", "the file is empty; expected a mapping with repo, slack and environments"
        )
        return None
    if not isinstance(root, MappingNode):
        p.at(
            root,
            "",
            f"expected a mapping (repo:, slack:, environments:) at the top level, got {_describe(root)}",
        )
        return None
    return root


class _Mark(Protocol):
    line: int


class _Refused(Exception):
    """A file too big, too deep or looping: composing stops at once, before it expands."""

    def __init__(self, mark: _Mark | None, key: str, message: str) -> None:
        super().__init__(message)
        self.line = mark.line + 1 if mark is not None else None
        self.key = key
        self.message = message


# Tags a plain YAML file may carry; the rest (`!!python/object`, `!foo`) mean some other
# loader's objects, which shipmate never builds: silently reading them as plain text would hide
# that the file does not mean what its author thinks.
_PLAIN_TAGS = frozenset({_STR, _INT, _FLOAT, _BOOL, _NULL, _MERGE, _TAG + "timestamp"})
_COLLECTION_TAGS: dict[type[Node], str] = {MappingNode: _TAG + "map", SequenceNode: _TAG + "seq"}
# Where a node sits: a mapping key's name, a list index, or None for a key itself.
_Segment = str | int | None


class _GuardedLoader(yaml.SafeLoader):
    """A SafeLoader whose composer counts as it goes, and refuses before anything expands.

    Each node's size and depth are recorded as if every alias in it were copied out, so an
    alias or merge-key bomb is refused after composing a handful of nodes, not after building
    its billions; the recursion of the composer itself is cut at the depth limit, long before
    Python's.
    """

    def __init__(self, text: str, limits: Limits) -> None:
        super().__init__(text)
        self.limits = limits
        self.problems: list[tuple[int | None, str, str]] = []
        self._segments: list[_Segment] = []
        self._expanded: dict[int, tuple[int, int]] = {}  # id(node) -> (size, depth)
        self._total = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        # PyYAML passes the key node as `index` for a mapping's value (its stub says int).
        segment: _Segment = index if isinstance(index, int) else _segment_name(index)
        self._segments.append(segment)
        try:
            # An alias' node starts at its anchor; a problem belongs where the alias is.
            mark = self._next_event().start_mark
            if len(self._segments) > self.limits.depth:
                self._refuse_depth(mark)
            if self.check_event(AliasEvent):
                self._check_alias()
            node = super().compose_node(parent, index)
            if node is not None:
                self._count(node, mark)
            return node
        finally:
            self._segments.pop()

    def fetch_flow_collection_start(self, TokenClass: type[Token]) -> None:
        # The scanner runs ahead of the composer (up to a line, looking for a key's ':'), and
        # its work per bracket grows with the brackets still open: stop it at the limit too.
        if self.flow_level >= self.limits.depth:
            self._refuse_depth(self.get_mark())
        super().fetch_flow_collection_start(TokenClass)

    def _next_event(self) -> Event:
        peek: Callable[[], Event] = self.peek_event
        return peek()

    def _key(self, name: str | None = None, segments: int | None = None) -> str:
        key = ""
        for segment in [*self._segments[:segments], name]:
            if isinstance(segment, int):
                key += f"[{segment}]"
            elif segment is not None:
                key = _join(key, segment)
        return key

    def _refuse_depth(self, mark: _Mark | None) -> None:
        message = f"nested more than {self.limits.depth} levels deep (aliases included)"
        # Where the nesting starts says enough; sixty-four "[0]" more would not.
        shown = 8
        key = self._key(segments=shown) + ("…" if len(self._segments) > shown else "")
        raise _Refused(mark, key, message)

    def _check_alias(self) -> None:
        event = self._next_event()
        anchor = str(getattr(event, "anchor", ""))
        target = self.anchors.get(anchor)
        if target is None:
            message = f"alias *{anchor} names no anchor above it (write &{anchor} first)"
            raise _Refused(event.start_mark, self._key(), message)
        if id(target) not in self._expanded:
            message = (
                f"alias *{anchor} is inside its own anchor &{anchor}: a value cannot contain itself"
            )
            raise _Refused(event.start_mark, self._key(), message)

    def _count(self, node: Node, mark: _Mark | None) -> None:
        known = self._expanded.get(id(node))
        if known is None:  # freshly composed; an alias' target is known already
            self._check_tag(node)
            known = self._measure(node)
            self._expanded[id(node)] = known
            added = 1
        else:
            added = known[0]
        self._total += added
        if self._total > self.limits.nodes:
            message = (
                f"more than {self.limits.nodes:,} values once aliases are expanded; "
                "that is not a config (an alias or merge-key bomb?)"
            )
            raise _Refused(mark, self._key(), message)
        if len(self._segments) - 1 + known[1] > self.limits.depth:
            self._refuse_depth(mark)

    def _measure(self, node: Node) -> tuple[int, int]:
        children: list[Node] = []
        if isinstance(node, SequenceNode):
            children = list(node.value)
        elif isinstance(node, MappingNode):
            children = [child for pair in node.value for child in pair]
        sizes = [self._expanded[id(child)] for child in children]
        return 1 + sum(size for size, _ in sizes), 1 + max((depth for _, depth in sizes), default=0)

    def _check_tag(self, node: Node) -> None:
        expected = _COLLECTION_TAGS.get(type(node))
        if node.tag == expected or (expected is None and node.tag in _PLAIN_TAGS):
            return
        is_key = self._segments[-1] is None and isinstance(node, ScalarNode)
        key = self._key(str(node.value) if is_key else None)
        shown = node.tag.replace(_TAG, "!!", 1) if node.tag.startswith(_TAG) else node.tag
        message = f"unknown tag {shown!r}: shipmate reads plain YAML values only, never tags"
        self.problems.append((_line(node), key, message))
        # Read on as if the tag were not there, so one mistake is one problem.
        if expected is None:
            resolve: Callable[[type[Node], str, tuple[bool, bool]], str] = self.resolve
            node.tag = resolve(ScalarNode, str(node.value), (True, False))
        else:
            node.tag = expected


def _segment_name(key: Node | None) -> str | None:
    if key is None:
        return None
    return str(key.value) if isinstance(key, ScalarNode) else "?"


def _build(p: _Problems, path: Path, root: MappingNode) -> Config:
    base_dir = Path(os.path.abspath(path)).parent
    top = _Fields(p, root, "", None)
    # "x-" keys hold YAML anchors for `<<:` merges, as in docker compose files.
    top.check_keys(_TOP_KEYS, ignore_prefix="x-")
    permissions = _permissions(top.section("permissions", ACTIONS), Permissions())
    return Config(
        path=path,
        base_dir=base_dir,
        repo=_repo(top, base_dir),
        slack=_slack(top),
        people=_people(p, top),
        permissions=permissions,
        environments=_environments(p, top, permissions, base_dir),
        state_dir=top.value("state_dir", _directory(base_dir), None) or base_dir / ".shipmate",
    )


def load_config(path: Path | str, limits: Limits = LIMITS) -> Config:
    """The configuration in `path`; raises ConfigError listing every problem found."""
    path = Path(path)
    p = _Problems(str(path))
    text = _read_text(p, path, limits)
    root = None if text is None else _compose(p, text, limits)
    config = None if root is None else _build(p, path, root)
    if p.items or config is None:
        raise ConfigError(sorted(p.items, key=lambda problem: problem.line or 0))
    return config


def check_config(path: Path | str) -> tuple[Config | None, list[str]]:
    """For `shipmate check-config`: the config (or None) and the lines to print."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        return None, [str(problem) for problem in exc.problems]
    envs = config.environments.values()
    count = f"{len(envs)} environment{'' if len(envs) == 1 else 's'}"
    listed = ", ".join(f"{env.name} ({env.backend.kind})" for env in envs)
    return config, [f"{path}: OK — {count}: {listed}"]
