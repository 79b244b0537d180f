from __future__ import annotations

import dataclasses
import re
import textwrap
from pathlib import Path

import pytest

from bot.config.durations import format_duration, parse_duration
from bot.config.loader import (
    ConfigError,
    ConfigProblem,
    EnvironmentConfig,
    Permissions,
    check_config,
    load_config,
)
from deployer.docker import DockerSpec
from deployer.health import HealthSpec
from deployer.shell import ShellSpec
from deployer.swarm import SwarmSpec

# The example from shared/design.md, verbatim: it is a contract.
DESIGN_EXAMPLE = """\
repo:
  url: ./repo                  # a local path or a clone URL; shipmate keeps its own mirror
  branch: main
  pr_url: https://github.com/acme/shop/pull/{number}   # "(#123)" in a title becomes a link
  poll_every: 30s
slack:
  channel: C0RELEASES
  approve_reactions: [white_check_mark, "+1"]
  block_reactions: [no_entry, x]
people:                        # git e-mail -> Slack user; others via users.lookupByEmail
  alice@example.com: U0ALICE
permissions:
  release: [everyone]
  rollback: [U0ALICE, U0ONCALL]
environments:
  staging:
    approval: none             # none | authors
    backend: {kind: docker, image: "shop:{sha}", container: shop-staging}
    health: {http: "http://127.0.0.1:8081/healthz", timeout: 30s}
  production:
    approval: authors
    backend: {kind: swarm, service: shop, image: "shop:{sha}"}
    health: {http: "http://127.0.0.1:8080/healthz", timeout: 60s}
  sandbox:
    approval: authors
    backend: {kind: shell, deploy: ["./deploy.sh", "{sha}", "{env}"]}
    health: {command: ["./smoke.sh", "{sha}"], timeout: 20s}
"""

# Smallest valid config; bad-config cases below start from it, so their line numbers are easy.
MINIMAL = """\
repo: {url: ./repo}
slack: {channel: C0RELEASES}
environments:
  staging:
    backend: {kind: shell, deploy: [./deploy.sh]}
"""


def write(tmp_path: Path, text: str, name: str = "shipmate.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return [str(problem) for problem in caught.value.problems]


# ---------------------------------------------------------------------------------------------
# The design example


def test_design_example_loads_with_typed_values(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, DESIGN_EXAMPLE))

    assert cfg.base_dir == tmp_path
    assert cfg.state_dir == tmp_path / ".shipmate"
    assert cfg.repo.url == str(tmp_path / "repo")
    assert cfg.repo.branch == "main"
    assert cfg.repo.pr_url == "https://github.com/acme/shop/pull/{number}"
    assert cfg.repo.poll_every == 30.0
    assert cfg.slack.channel == "C0RELEASES"
    assert cfg.slack.approve_reactions == ("white_check_mark", "+1")
    assert cfg.slack.block_reactions == ("no_entry", "x")
    assert cfg.slack.stand_ins == ()
    assert dict(cfg.people) == {"alice@example.com": "U0ALICE"}
    assert cfg.permissions == Permissions(
        release=("everyone",), rollback=("U0ALICE", "U0ONCALL"), lock=("everyone",)
    )
    assert list(cfg.environments) == ["staging", "production", "sandbox"]


def test_design_example_environments(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, DESIGN_EXAMPLE))
    staging, production, sandbox = cfg.environments.values()

    assert staging.approval == "none"
    # Parsed straight into the deployer's specs, whose defaults fill what the file leaves out.
    assert staging.backend == DockerSpec(image="shop:{sha}", container="shop-staging")
    assert staging.health == HealthSpec(
        http="http://127.0.0.1:8081/healthz", timeout=30.0, cwd=tmp_path
    )
    assert staging.permissions == cfg.permissions
    assert staging.channel is None
    assert staging.lock_on_failure is True

    assert production.approval == "authors"
    assert production.backend == SwarmSpec(service="shop", image="shop:{sha}")
    assert production.health == HealthSpec(
        http="http://127.0.0.1:8080/healthz", timeout=60.0, cwd=tmp_path
    )

    assert sandbox.backend == ShellSpec(
        deploy=(str(tmp_path / "deploy.sh"), "{sha}", "{env}"), cwd=tmp_path
    )
    assert sandbox.backend.kind == "shell"
    assert sandbox.health == HealthSpec(
        command=(str(tmp_path / "smoke.sh"), "{sha}"), timeout=20.0, cwd=tmp_path
    )

    assert cfg.environment("sandbox") is sandbox
    assert cfg.environment("nope") is None


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, DESIGN_EXAMPLE))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.repo.branch = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.people["bob@example.com"] = "U0BOB"  # type: ignore[index]


def test_check_config_summarises_a_good_file(tmp_path: Path) -> None:
    path = write(tmp_path, DESIGN_EXAMPLE)
    cfg, lines = check_config(path)
    assert cfg is not None
    assert lines == [
        f"{path}: OK — 3 environments: staging (docker), production (swarm), sandbox (shell)"
    ]


def test_check_config_lists_problems(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("C0RELEASES", "releases"))
    cfg, lines = check_config(path)
    assert cfg is None
    assert lines == [
        f"{path}:2: slack.channel: expected a Slack channel ID like C0RELEASES (not a #name), "
        "got 'releases'"
    ]


def test_missing_file_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "absent.yml"
    assert check_config(path) == (None, [f"{path}: file not found"])
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [ConfigProblem(str(path), None, "", "file not found")]


# ---------------------------------------------------------------------------------------------
# Bad configs: each names file, line, dotted key, and what was expected vs got

BAD_CONFIGS = [
    pytest.param(
        "repo:\n  url: x\n  branch: 'main\n",
        [
            "4: invalid YAML at column 1: while scanning a quoted scalar (line 3): "
            "found unexpected end of stream"
        ],
        id="yaml-syntax",
    ),
    pytest.param(
        "repo:\n\turl: x\n",
        [
            "2: invalid YAML at column 1: while scanning for the next token: "
            "found character '\\t' that cannot start any token (indent with spaces, not tabs)"
        ],
        id="yaml-tab",
    ),
    pytest.param(
        "- repo\n- slack\n",
        ["1: expected a mapping (repo:, slack:, environments:) at the top level, got a list"],
        id="top-level-list",
    ),
    pytest.param(
        "# nothing here\n",
        [": the file is empty; expected a mapping with repo, slack and environments"],
        id="empty-file",
    ),
    pytest.param(
        MINIMAL.replace("repo: {url: ./repo}", "repo:\n  url: ./repo\n  brnach: main"),
        ["3: repo.brnach: unknown key, did you mean 'branch'?"],
        id="unknown-key-suggestion",
    ),
    pytest.param(
        MINIMAL + "colour: blue\n",
        [
            "6: colour: unknown key; expected one of repo, slack, people, permissions, "
            "environments, state_dir"
        ],
        id="unknown-key-listed",
    ),
    pytest.param(
        MINIMAL.replace("repo: {url: ./repo}", "repo:\n  branch: main"),
        ["1: repo.url: missing required key"],
        id="missing-key-at-parent-line",
    ),
    pytest.param(
        MINIMAL.replace("slack: {channel: C0RELEASES}\n", ""),
        [": slack: missing required key"],
        id="missing-section",
    ),
    pytest.param(
        MINIMAL.replace(
            "{kind: shell, deploy: [./deploy.sh]}",
            "\n      kind: shell\n      deploy: ./deploy.sh {sha}",
        ),
        [
            "7: environments.staging.backend.deploy: expected a list of arguments (argv), got a string"
        ],
        id="argv-as-string",
    ),
    pytest.param(
        MINIMAL.replace("deploy: [./deploy.sh]", "deploy: []"),
        [
            "5: environments.staging.backend.deploy: expected a list of arguments (argv), "
            "got an empty list"
        ],
        id="argv-empty",
    ),
    pytest.param(
        MINIMAL.replace("deploy: [./deploy.sh]", "deploy: [./deploy.sh, '{commit}']"),
        [
            "5: environments.staging.backend.deploy[1]: unknown placeholder '{commit}' "
            "(allowed: {sha}, {short_sha}, {env})"
        ],
        id="unknown-placeholder",
    ),
    pytest.param(
        MINIMAL.replace("{kind: shell, deploy: [./deploy.sh]}", "{kind: k8s, deploy: [x]}"),
        ["5: environments.staging.backend.kind: expected one of docker, swarm, shell, got 'k8s'"],
        id="unknown-backend-kind",
    ),
    pytest.param(
        MINIMAL.replace("deploy: [./deploy.sh]", "deploy: [x], timout: 5m, image: 'a:{sha}'"),
        [
            "5: environments.staging.backend.timout: unknown key for a shell backend, did you mean "
            "'timeout'? (allowed: kind, deploy, timeout, cwd, env)",
            "5: environments.staging.backend.image: unknown key for a shell backend; expected one of "
            "kind, deploy, timeout, cwd, env",
        ],
        id="key-of-another-kind",
    ),
    pytest.param(
        MINIMAL.replace("{kind: shell, deploy: [./deploy.sh]}", "{kind: docker, image: shop}"),
        [
            "5: environments.staging.backend.image: expected an image containing {sha} or "
            "{short_sha}, like shop:{sha}, got 'shop'",
            "5: environments.staging.backend.container: missing required key",
        ],
        id="docker-image-without-sha",
    ),
    pytest.param(
        MINIMAL.replace("{url: ./repo}", "{url: ./repo, poll_every: 30x}"),
        [
            "1: repo.poll_every: expected a number of seconds or a duration like 500ms, 30s, 5m, 1h "
            "or 1m30s, got '30x'"
        ],
        id="bad-duration",
    ),
    pytest.param(
        MINIMAL.replace("{url: ./repo}", "{url: ./repo, poll_every: 0s}"),
        ["1: repo.poll_every: expected a duration longer than 0, got '0s'"],
        id="zero-duration",
    ),
    pytest.param(
        MINIMAL.replace("{url: ./repo}", "{url: ./repo, pr_url: 'https://x/pull/'}"),
        [
            "1: repo.pr_url: expected a URL containing {number}, like "
            "https://github.com/acme/shop/pull/{number}, got 'https://x/pull/'"
        ],
        id="pr-url-without-number",
    ),
    pytest.param(
        MINIMAL.replace("{url: ./repo}", "{url: ./repo, branch: --upload-pack=evil}"),
        ["1: repo.branch: expected a branch name like main, got '--upload-pack=evil'"],
        id="branch-like-an-option",
    ),
    pytest.param(
        MINIMAL.replace("./repo", "ftp://example.com/shop.git"),
        [
            "1: repo.url: expected a local path or a clone URL (https://, ssh://, git://, file://, "
            "user@host:path), got 'ftp://example.com/shop.git'"
        ],
        id="repo-url-scheme",
    ),
    pytest.param(
        "repo: {url: ./repo}\nslack: {channel: C0RELEASES}\nenvironments: {}\n",
        ["3: environments: expected at least one environment, got an empty mapping"],
        id="no-environments",
    ),
    pytest.param(
        MINIMAL.replace("staging:", "Staging:"),
        [
            "4: environments.Staging: expected a name of at most 32 lower-case letters, digits, "
            "'-' and '_', got 'Staging'"
        ],
        id="environment-name",
    ),
    pytest.param(
        MINIMAL + "people:\n  alice: U0ALICE\n",
        ["7: people.alice: expected a git e-mail address, got 'alice'"],
        id="email-without-at",
    ),
    pytest.param(
        MINIMAL + "people:\n  Alice@Example.com: U0ALICE\n  alice@example.com: U0ALICE2\n",
        ["8: people.alice@example.com: duplicate of 'Alice@Example.com' (e-mails ignore case)"],
        id="email-duplicate-ignoring-case",
    ),
    pytest.param(
        MINIMAL + "people:\n  alice@example.com: alice\n",
        ["7: people.alice@example.com: expected a Slack user ID like U0ALICE, got 'alice'"],
        id="bad-user-id",
    ),
    pytest.param(
        MINIMAL.replace("C0RELEASES", "'#releases'"),
        [
            "2: slack.channel: expected a Slack channel ID like C0RELEASES (not a #name), "
            "got '#releases'"
        ],
        id="channel-name-not-id",
    ),
    pytest.param(
        MINIMAL + "permissions:\n  rollback: [U0ALICE, Everyone]\n",
        [
            "7: permissions.rollback[1]: expected a Slack user ID like U0ALICE or 'everyone', "
            "got 'Everyone'"
        ],
        id="bad-grantee",
    ),
    pytest.param(
        MINIMAL + "permissions:\n  release: everyone\n",
        [
            "7: permissions.release: expected a list of Slack user IDs or 'everyone', got a string "
            "(write [everyone])"
        ],
        id="permission-not-a-list",
    ),
    pytest.param(
        MINIMAL.replace("{channel: C0RELEASES}", "{channel: C0RELEASES, approve_reactions: 5}"),
        ["2: slack.approve_reactions: expected a list of emoji names, got a number (write [5])"],
        id="reactions-not-a-list",
    ),
    pytest.param(
        MINIMAL.replace("{channel: C0RELEASES}", "{channel: C0RELEASES, approve_reactions: []}"),
        ["2: slack.approve_reactions: expected at least one emoji, got an empty list"],
        id="no-approve-reactions",
    ),
    pytest.param(
        MINIMAL.replace(
            "slack: {channel: C0RELEASES}",
            "slack:\n  channel: C0RELEASES\n  approve_reactions: [':+1:', x]\n"
            "  block_reactions:\n    - no_entry\n    - x",
        ),
        [
            "7: slack.block_reactions[1]: 'x' is also an approve reaction; an emoji cannot both "
            "approve and block"
        ],
        id="emoji-in-both-lists",
    ),
    pytest.param(
        MINIMAL.replace("repo: {url: ./repo}", "repo:\n  url: ./repo\n  url: ./other"),
        ["3: repo.url: duplicate key (first set on line 2)"],
        id="duplicate-key",
    ),
    pytest.param(
        MINIMAL + "    health: {http: 'ftp://host/health'}\n",
        [
            "6: environments.staging.health.http: expected an http:// or https:// URL, "
            "got 'ftp://host/health'"
        ],
        id="health-url-scheme",
    ),
    pytest.param(
        MINIMAL + "    health: {http: 'http://h/', command: [./smoke.sh]}\n",
        [
            "6: environments.staging.health: expected exactly one of 'http' (a URL) or 'command' "
            "(argv), got both"
        ],
        id="health-both",
    ),
    pytest.param(
        MINIMAL + "    health:\n      timeout: 5s\n",
        [
            "6: environments.staging.health: expected exactly one of 'http' (a URL) or 'command' "
            "(argv), got neither"
        ],
        id="health-neither",
    ),
    pytest.param(
        MINIMAL + "    health: {command: [./smoke.sh], successes: 0}\n",
        [
            "6: environments.staging.health.successes: expected a whole number from 1 to 100, "
            "got '0'"
        ],
        id="successes-zero",
    ),
    pytest.param(
        MINIMAL + "    lock_on_failure: maybe\n",
        ["6: environments.staging.lock_on_failure: expected true or false, got 'maybe'"],
        id="not-a-boolean",
    ),
    pytest.param(
        MINIMAL + "    approval: everybody\n",
        ["6: environments.staging.approval: expected one of none, authors, got 'everybody'"],
        id="approval-choice",
    ),
    pytest.param(
        MINIMAL + "    permissions: {deploy: [U0ALICE]}\n",
        [
            "6: environments.staging.permissions.deploy: unknown key; expected one of release, "
            "rollback, lock"
        ],
        id="env-permission-action",
    ),
    pytest.param(
        MINIMAL + "  production:\n",
        ["6: environments.production: expected a mapping with at least a backend, got null"],
        id="environment-without-body",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD_CONFIGS)
def test_bad_config_is_reported_precisely(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = write(tmp_path, text)
    # Entries start with the line number, or with ":" when a problem has no line.
    assert problems_of(path) == [
        f"{path}{e}" if e.startswith(":") else f"{path}:{e}" for e in expected
    ]


def test_all_problems_are_reported_together(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        repo: {url: ./repo, poll_every: soon}
        slack: {channel: general}
        environments:
          staging:
            backend: {kind: k8s}
          production:
            backend: {kind: docker, image: "shop:{sha}", container: shop, keep: 0}
        """,
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    lines = [str(problem) for problem in caught.value.problems]
    assert [(problem.line, problem.key) for problem in caught.value.problems] == [
        (1, "repo.poll_every"),
        (2, "slack.channel"),
        (5, "environments.staging.backend.kind"),
        (7, "environments.production.backend.keep"),
    ]
    assert str(caught.value) == "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Values and resolution


def test_relative_paths_resolve_against_the_config_directory(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        repo: {url: ../upstream}
        slack: {channel: C0RELEASES}
        state_dir: state
        environments:
          sandbox:
            backend: {kind: shell, deploy: [bin/deploy, "{sha}"], cwd: work}
            health: {command: [curl, -f, "http://127.0.0.1/{short_sha}"]}
        """,
    )
    cfg = load_config(path)
    backend = cfg.environments["sandbox"].backend
    assert isinstance(backend, ShellSpec)
    assert cfg.repo.url == str(tmp_path.parent / "upstream")
    assert cfg.state_dir == tmp_path / "state"
    assert backend.deploy == (str(tmp_path / "bin/deploy"), "{sha}")
    assert backend.cwd == tmp_path / "work"
    health = cfg.environments["sandbox"].health
    # A bare program name is left for PATH lookup.
    assert health is not None and health.command == ("curl", "-f", "http://127.0.0.1/{short_sha}")


@pytest.mark.parametrize(
    "url",
    [
        "https://github.com/acme/shop.git",
        "git@github.com:acme/shop.git",
        "ssh://git@example.com/acme/shop.git",
        "file:///srv/git/shop.git",
    ],
)
def test_clone_urls_are_kept_as_written(tmp_path: Path, url: str) -> None:
    cfg = load_config(write(tmp_path, MINIMAL.replace("./repo", f"'{url}'")))
    assert cfg.repo.url == url


def test_values_are_read_as_written(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        repo: {url: ./repo, branch: 1.10, poll_every: 1m30s}
        slack:
          channel: C0RELEASES
          approve_reactions: [":white_check_mark:", +1, 100]
          block_reactions: []
          stand_ins: [U0LEAD]
        people:
          Alice@Example.COM: U0ALICE
        environments:
          web:
            backend:
              kind: docker
              image: "registry.local/shop:{short_sha}"
              container: shop-web
              ports: {8080: "127.0.0.1:8081"}
              env: {MODE: production, WORKERS: 4}
              network: host
              keep: 5
              stop_timeout: 0
            channel: C0WEB
            lock_on_failure: no
        """,
    )
    cfg = load_config(path)
    assert cfg.repo.branch == "1.10"
    assert cfg.repo.poll_every == 90.0
    assert cfg.slack.approve_reactions == ("white_check_mark", "+1", "100")
    assert cfg.slack.block_reactions == ()
    assert cfg.slack.stand_ins == ("U0LEAD",)
    assert dict(cfg.people) == {"alice@example.com": "U0ALICE"}
    web = cfg.environments["web"]
    assert isinstance(web.backend, DockerSpec)
    assert web.backend.ports == {"8080": "127.0.0.1:8081"}
    assert web.backend.env == {"MODE": "production", "WORKERS": "4"}
    assert (web.backend.network, web.backend.keep, web.backend.stop_timeout) == ("host", 5, 0.0)
    assert web.channel == "C0WEB"
    assert cfg.channel_for("web") == "C0WEB"
    assert web.lock_on_failure is False
    assert web.health is None


def test_yaml_merge_keys_share_settings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        x-health: &health {timeout: 20s, interval: 2s}
        repo: {url: ./repo}
        slack: {channel: C0RELEASES}
        environments:
          a:
            backend: &shell {kind: shell, deploy: [./deploy.sh, "{env}"]}
            health: {<<: *health, command: [./smoke.sh]}
          b:
            backend: {<<: *shell, timeout: 5m}
            health: {<<: *health, http: "http://{env}.local/health", timeout: 1m}
        """,
    )
    cfg = load_config(path)
    a, b = cfg.environments["a"], cfg.environments["b"]
    assert a.health == HealthSpec(
        command=(str(tmp_path / "smoke.sh"),), timeout=20.0, interval=2.0, cwd=tmp_path
    )
    assert isinstance(a.backend, ShellSpec) and isinstance(b.backend, ShellSpec)
    assert b.backend.deploy == a.backend.deploy
    assert b.backend.timeout == 300.0
    assert b.health == HealthSpec(
        http="http://{env}.local/health", timeout=60.0, interval=2.0, cwd=tmp_path
    )


# ---------------------------------------------------------------------------------------------
# Permissions


def test_permissions_allow_everyone_by_default() -> None:
    permissions = Permissions()
    for action in ("release", "rollback", "lock", "unlock"):
        assert permissions.allows(action, "U0ANYONE")


def test_permissions_allow_only_listed_users() -> None:
    permissions = Permissions(release=("everyone",), rollback=("U0ALICE",), lock=())
    assert permissions.allows("release", "U0BOB")
    assert permissions.allows("rollback", "U0ALICE")
    assert not permissions.allows("rollback", "U0BOB")
    assert not permissions.allows("lock", "U0ALICE")
    assert not permissions.allows("unlock", "U0ALICE")
    with pytest.raises(ValueError, match="unknown action 'deploy'"):
        permissions.allows("deploy", "U0ALICE")


def test_environment_permissions_fall_back_per_action(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        MINIMAL
        + "    permissions: {release: [U0BOB]}\n"
        + "  production:\n"
        + "    backend: {kind: shell, deploy: [./deploy.sh]}\n"
        + "permissions:\n  rollback: [U0ALICE]\n  lock: []\n",
    )
    cfg = load_config(path)
    staging: EnvironmentConfig = cfg.environments["staging"]
    assert staging.permissions == Permissions(release=("U0BOB",), rollback=("U0ALICE",), lock=())
    assert cfg.environments["production"].permissions == cfg.permissions
    assert not staging.permissions.allows("release", "U0ALICE")
    assert cfg.permissions.allows("release", "U0ALICE")


# ---------------------------------------------------------------------------------------------
# Durations


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1m30s", 90.0),
        ("1h30m", 5400.0),
        ("1s500ms", 1.5),
        ("1.5s", 1.5),
        ("30", 30.0),
        (" 45 ", 45.0),
        ("0", 0.0),
        (30, 30.0),
        (2.5, 2.5),
    ],
)
def test_parse_duration(value: str | float, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value", ["", "30x", "s", "-5s", "-1", "30s1m", "1m1m", "5 m", "1d", True, -1, float("inf")]
)
def test_parse_duration_rejects_and_names_the_value(value: str | float) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(value))):
        parse_duration(value)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.5, "500ms"), (30, "30s"), (90, "1m30s"), (3600, "1h"), (1.5, "1.5s")]
)
def test_format_duration_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


def test_loaded_config_is_hashable(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, DESIGN_EXAMPLE))
    assert len({cfg, *cfg.environments.values()}) == 4
