"""check-config (and web and worker, which load the file the same way) against hostile files.

Each case here was once a traceback, a hang, or a file accepted that should have been refused.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.config.durations import parse_duration
from bot.config.loader import ConfigError, Limits, check_config, load_config
from bot.config.settings import Settings, SettingsError
from deployer.docker import DockerSpec
from deployer.swarm import SwarmSpec
from tests.bot.test_config import MINIMAL, problems_of, write

SHIPMATE = str(Path(sys.executable).with_name("shipmate"))
SHELL_BACKEND = "{kind: shell, deploy: [./deploy.sh]}"


def with_backend(backend: str, health: str | None = None) -> str:
    text = MINIMAL.replace(SHELL_BACKEND, backend)
    return text + (f"    health: {health}\n" if health else "")


def alias_bomb(levels: int, fan_out: int = 10) -> str:
    """Anchors each holding `fan_out` aliases of the one before: fan_out**levels values."""
    lines = ["x-bomb0: &b0 {k: v}"]
    for level in range(1, levels + 1):
        refs = ", ".join([f"*b{level - 1}"] * fan_out)
        lines.append(f"x-bomb{level}: &b{level} [{refs}]")
    return "\n".join(lines) + "\n" + MINIMAL


def merge_bomb(levels: int, fan_out: int = 10) -> str:
    """The same with `<<:` merge keys, which shipmate reads (so the merges really expand)."""
    lines = ["x-m0: &m0 {k0: v}"]
    for level in range(1, levels + 1):
        sources = ", ".join([f"*m{level - 1}"] * fan_out)
        lines.append(f"x-m{level}: &m{level} {{<<: [{sources}], k{level}: v}}")
    return "\n".join(lines) + "\n" + MINIMAL


def timed_problems(path: Path) -> tuple[list[str], float]:
    started = time.perf_counter()
    problems = problems_of(path)
    return problems, time.perf_counter() - started


# ---------------------------------------------------------------------------------------------
# Size: refused before anything expands


def test_a_merge_key_bomb_of_10_to_the_8_is_refused_in_under_a_second(tmp_path: Path) -> None:
    path = write(tmp_path, merge_bomb(levels=8))
    problems, took = timed_problems(path)
    assert took < 1.0
    assert problems == [
        f"{path}:5: x-m4.<<[4]: more than 20,000 values once aliases are expanded; "
        "that is not a config (an alias or merge-key bomb?)"
    ]


def test_an_alias_bomb_is_refused_in_under_a_second(tmp_path: Path) -> None:
    path = write(tmp_path, alias_bomb(levels=9))
    problems, took = timed_problems(path)
    assert took < 1.0
    assert len(problems) == 1
    assert f"{path}:5: x-bomb4[" in problems[0]
    assert "more than 20,000 values once aliases are expanded" in problems[0]


def test_aliases_within_the_budget_still_work(tmp_path: Path) -> None:
    path = write(tmp_path, merge_bomb(levels=3))
    assert load_config(path).environments["staging"].backend.kind == "shell"


def test_the_budget_is_a_limit_that_can_be_set(tmp_path: Path) -> None:
    path = write(tmp_path, alias_bomb(levels=2))
    assert load_config(path) is not None
    with pytest.raises(ConfigError, match="more than 50 values once aliases are expanded"):
        load_config(path, Limits(nodes=50))


def test_a_file_past_a_megabyte_is_refused_unread(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "# " + "x" * (1024 * 1024) + "\n")
    assert problems_of(path) == [f"{path}: larger than 1,048,576 bytes; that is not a config"]


def test_a_self_containing_anchor_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "x-loop: &loop {a: [*loop]}\n" + MINIMAL)
    assert problems_of(path) == [
        f"{path}:1: x-loop.a[0]: alias *loop is inside its own anchor &loop: "
        "a value cannot contain itself"
    ]


def test_an_undefined_alias_names_its_key(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("{url: ./repo}", "{url: *nowhere}"))
    assert problems_of(path) == [
        f"{path}:1: repo.url: alias *nowhere names no anchor above it (write &nowhere first)"
    ]


# ---------------------------------------------------------------------------------------------
# Depth: bounded long before Python's recursion limit


@pytest.mark.parametrize("levels", [65, 1_001, 100_000])
def test_deep_flow_nesting_is_refused_naming_line_and_key(tmp_path: Path, levels: int) -> None:
    path = write(tmp_path, MINIMAL + "people: " + "[" * levels + "]" * levels + "\n")
    problems, took = timed_problems(path)
    assert took < 2.0
    assert problems == [f"{path}:6: people: nested more than 64 levels deep (aliases included)"]


def test_deep_block_nesting_is_refused(tmp_path: Path) -> None:
    nested = "".join(f"{'  ' * level}k{level}:\n" for level in range(1, 500))
    path = write(tmp_path, MINIMAL + "x-deep:\n" + nested)
    problems = problems_of(path)
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}:69: x-deep.k1.k2.k3.k4.k5.k6…: nested more than 64")


def test_a_long_chain_of_merges_is_refused_as_too_deep(tmp_path: Path) -> None:
    chain = "x-c0: &c0 {a: 1}\n" + "".join(
        f"x-c{n}: &c{n} {{<<: *c{n - 1}}}\n" for n in range(1, 2_000)
    )
    path = write(tmp_path, chain + MINIMAL)
    problems = problems_of(path)
    assert len(problems) == 1
    assert "nested more than 64 levels deep (aliases included)" in problems[0]


def test_sixty_four_levels_are_fine(tmp_path: Path) -> None:
    # The root mapping and `x-deep` are two of the 64.
    path = write(tmp_path, MINIMAL + "x-deep: " + "[" * 62 + "]" * 62 + "\n")
    assert load_config(path) is not None


# ---------------------------------------------------------------------------------------------
# Whole numbers: bounded length and a documented range


@pytest.mark.parametrize(
    ("backend", "health", "key", "expected"),
    [
        (
            "{kind: docker, image: 'shop:{sha}', container: shop, keep: VALUE}",
            None,
            "environments.staging.backend.keep",
            "a whole number from 1 to 100",
        ),
        (
            "{kind: swarm, service: shop, image: 'shop:{sha}', replicas: VALUE}",
            None,
            "environments.staging.backend.replicas",
            "a whole number from 1 to 1000",
        ),
        (
            SHELL_BACKEND,
            "{command: [./smoke.sh], successes: VALUE}",
            "environments.staging.health.successes",
            "a whole number from 1 to 100",
        ),
    ],
)
@pytest.mark.parametrize(
    ("value", "got"),
    [
        ("9" * 5_000, f"'{'9' * 60}'… (5,000 characters)"),
        ("1" + "0" * 400, f"'1{'0' * 59}'… (401 characters)"),
        ("1000001", "'1000001'"),
        ("0", "'0'"),
        ("-1", "'-1'"),
        (".nan", "'.nan'"),
        (".inf", "'.inf'"),
        ("1.5", "'1.5'"),
        ("!!int abc", "'abc'"),
        ("0x" + "f" * 30, f"'0x{'f' * 30}'"),
    ],
)
def test_whole_numbers_outside_their_range_are_refused(
    tmp_path: Path,
    backend: str,
    health: str | None,
    key: str,
    expected: str,
    value: str,
    got: str,
) -> None:
    text = with_backend(backend.replace("VALUE", value), health and health.replace("VALUE", value))
    path = write(tmp_path, text)
    line = 6 if health else 5
    assert problems_of(path) == [f"{path}:{line}: {key}: expected {expected}, got {got}"]


def test_whole_numbers_at_their_limits_are_read(tmp_path: Path) -> None:
    docker = with_backend("{kind: docker, image: 'shop:{sha}', container: shop, keep: 100}")
    swarm = (
        "  prod:\n    backend: {kind: swarm, service: shop, image: 'shop:{sha}', replicas: 1_000}\n"
    )
    health = "    health: {command: [./smoke.sh], successes: 100}\n"
    cfg = load_config(write(tmp_path, docker + swarm + health))
    staging, prod = cfg.environments["staging"], cfg.environments["prod"]
    assert isinstance(staging.backend, DockerSpec) and staging.backend.keep == 100
    assert isinstance(prod.backend, SwarmSpec) and prod.backend.replicas == 1000
    assert prod.health is not None and prod.health.successes == 100


# ---------------------------------------------------------------------------------------------
# Durations: from 1 ms to 30 days


@pytest.mark.parametrize(
    ("value", "got"),
    [
        ("9" * 400, f"'{'9' * 60}'… (400 characters)"),
        ("0.0000001", "'0.0000001'"),
        ("0.5ms", "'0.5ms'"),
        ("721h", "'721h'"),
        ("720h1ms", "'720h1ms'"),
        ("2592001", "'2592001'"),
    ],
)
def test_durations_outside_1ms_to_30_days_are_refused(tmp_path: Path, value: str, got: str) -> None:
    path = write(
        tmp_path, MINIMAL.replace("{url: ./repo}", f"{{url: ./repo, poll_every: {value}}}")
    )
    assert problems_of(path) == [
        f"{path}:1: repo.poll_every: expected a duration from 1ms to 720h (30 days), got {got}"
    ]


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1.0e+3", "-5", "!!float 1e9999"])
def test_durations_that_are_no_finite_number_are_refused(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, with_backend(SHELL_BACKEND, f"{{command: [x], interval: {value}}}"))
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:6: environments.staging.health.interval: expected a number")


@pytest.mark.parametrize(
    ("value", "seconds"), [("1ms", 0.001), ("0.001", 0.001), ("720h", 2_592_000.0)]
)
def test_durations_at_their_limits_are_read(tmp_path: Path, value: str, seconds: float) -> None:
    text = MINIMAL.replace("{url: ./repo}", f"{{url: ./repo, poll_every: {value}}}")
    assert load_config(write(tmp_path, text)).repo.poll_every == seconds


def test_a_stop_timeout_may_be_zero_but_not_too_long(tmp_path: Path) -> None:
    docker = "{kind: docker, image: 'shop:{sha}', container: shop, stop_timeout: STOP}"
    ok = load_config(write(tmp_path, with_backend(docker.replace("STOP", "0"))))
    backend = ok.environments["staging"].backend
    assert isinstance(backend, DockerSpec) and backend.stop_timeout == 0.0
    path = write(tmp_path, with_backend(docker.replace("STOP", "31d")))
    assert problems_of(path) == [
        f"{path}:5: environments.staging.backend.stop_timeout: expected a number of seconds or "
        "a duration like 500ms, 30s, 5m, 1h or 1m30s, got '31d'"
    ]
    path = write(tmp_path, with_backend(docker.replace("STOP", "1000h")))
    assert problems_of(path) == [
        f"{path}:5: environments.staging.backend.stop_timeout: expected 0 or a duration "
        "from 1ms to 720h (30 days), got '1000h'"
    ]


@pytest.mark.parametrize("value", ["0.0001", "721h", "9" * 400, float("inf"), 1e-7])
def test_parse_duration_refuses_out_of_range_saying_what_is_allowed(value: str | float) -> None:
    with pytest.raises(ValueError, match=r"expected 0 or a duration from 1ms to 720h \(30 days\)"):
        parse_duration(value)


def test_parse_duration_still_explains_unit_order() -> None:
    with pytest.raises(ValueError, match="units must go from largest to smallest"):
        parse_duration("30s1m")


# ---------------------------------------------------------------------------------------------
# Tags, empty URLs and other text


@pytest.mark.parametrize(
    ("tagged", "tag"),
    [
        ("!!python/object:os.system {url: ./repo}", "!!python/object:os.system"),
        ("!!python/object/apply:os.system {url: ./repo}", "!!python/object/apply:os.system"),
        ("!foo {url: ./repo}", "!foo"),
        ("!!set {url: ./repo}", "!!set"),
        ("!!omap {url: ./repo}", "!!omap"),
    ],
)
def test_unknown_tags_are_refused_with_line_key_and_tag(
    tmp_path: Path, tagged: str, tag: str
) -> None:
    path = write(tmp_path, MINIMAL.replace("{url: ./repo}", tagged))
    assert problems_of(path) == [
        f"{path}:1: repo: unknown tag {tag!r}: shipmate reads plain YAML values only, never tags"
    ]


def test_tags_on_scalars_keys_and_lists_are_all_reported_at_once(tmp_path: Path) -> None:
    text = MINIMAL.replace("{url: ./repo}", "{url: ./repo, !key branch: !!binary main}")
    text = text.replace("[./deploy.sh]", "!!python/tuple [./deploy.sh]")
    path = write(tmp_path, text)
    message = "shipmate reads plain YAML values only, never tags"
    assert problems_of(path) == [
        f"{path}:1: repo.branch: unknown tag '!key': {message}",
        f"{path}:1: repo.branch: unknown tag '!!binary': {message}",
        f"{path}:5: environments.staging.backend.deploy: unknown tag '!!python/tuple': {message}",
    ]


def test_explicit_plain_tags_are_fine_and_never_crash(tmp_path: Path) -> None:
    text = MINIMAL.replace("{url: ./repo}", "{url: !!str ./repo, branch: !!str 1.10}")
    assert load_config(write(tmp_path, text)).repo.branch == "1.10"
    path = write(tmp_path, MINIMAL + "    lock_on_failure: !!bool maybe\n")
    assert problems_of(path) == [
        f"{path}:6: environments.staging.lock_on_failure: expected true or false, got 'maybe'"
    ]


@pytest.mark.parametrize(
    ("backend", "health", "key", "expected"),
    [
        (SHELL_BACKEND, "{http: ''}", "health.http", "an http:// or https:// URL"),
        (
            "{kind: docker, image: '', container: shop}",
            None,
            "backend.image",
            "an image containing {sha} or {short_sha}, like shop:{sha}",
        ),
    ],
)
def test_empty_urls_and_images_are_refused(
    tmp_path: Path, backend: str, health: str | None, key: str, expected: str
) -> None:
    path = write(tmp_path, with_backend(backend, health))
    line = 6 if health else 5
    assert problems_of(path) == [
        f"{path}:{line}: environments.staging.{key}: expected {expected}, got ''"
    ]


def test_an_empty_pr_url_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("{url: ./repo}", "{url: ./repo, pr_url: ''}"))
    assert problems_of(path) == [
        f"{path}:1: repo.pr_url: expected a URL containing {{number}}, like "
        "https://github.com/acme/shop/pull/{number}, got ''"
    ]


def test_a_nul_character_in_text_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("[./deploy.sh]", '["~\\0root/deploy.sh"]'))
    assert problems_of(path) == [
        f"{path}:5: environments.staging.backend.deploy[0]: expected text without NUL "
        "characters ('\\0')"
    ]


def test_unprintable_key_names_are_shown_escaped(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '"\\e[2Jx": 1\n')
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:6: '\\x1b[2Jx': unknown key")


# ---------------------------------------------------------------------------------------------
# Slack IDs


def test_slack_ids_are_read(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "{channel: C0RELEASES}",
        "{channel: C0RELEASES, team_id: T0ACME, app_id: A0SHIPMATE, enterprise_id: E0ACME}",
    )
    slack = load_config(write(tmp_path, text)).slack
    assert (slack.team_id, slack.app_id, slack.enterprise_id) == ("T0ACME", "A0SHIPMATE", "E0ACME")
    assert load_config(write(tmp_path, MINIMAL)).slack.team_id is None


def test_slack_ids_of_the_wrong_shape_name_their_key(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "slack: {channel: C0RELEASES}",
        "slack:\n  channel: C0RELEASES\n  team_id: acme\n  app_id: T0ACME\n  enterprise_id: 5",
    )
    path = write(tmp_path, text)
    assert problems_of(path) == [
        f"{path}:4: slack.team_id: expected a Slack team (workspace) ID like T0ACME, got 'acme'",
        f"{path}:5: slack.app_id: expected a Slack app ID like A0SHIPMATE, got 'T0ACME'",
        f"{path}:6: slack.enterprise_id: expected a Slack Enterprise Grid ID like E0ACME, got '5'",
    ]


# ---------------------------------------------------------------------------------------------
# Settings


@pytest.mark.parametrize("port", ["65536", "-1", "http", "9" * 5_000, "", "٣٠٠٠"])
def test_a_port_out_of_range_is_refused(port: str) -> None:
    env = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "PORT": port}
    with pytest.raises(SettingsError, match="PORT must be a port number from 0 to 65535"):
        Settings.from_env(env)


def test_port_and_redis_url_defaults() -> None:
    env = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "REDIS_URL": ""}
    settings = Settings.from_env({**env, "PORT": "0"})
    assert (settings.port, settings.redis_url) == (0, "redis://127.0.0.1:6379/0")
    assert Settings.from_env(env).port == 3000


# ---------------------------------------------------------------------------------------------
# The real processes


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", **env}
    # Redis and Slack are never reached: the file is refused first.
    environ["REDIS_URL"] = "redis://127.0.0.1:1/0"
    return subprocess.run(
        [SHIPMATE, *args], env=environ, capture_output=True, text=True, timeout=20
    )


@pytest.mark.parametrize("command", ["web", "worker"])
def test_web_and_worker_refuse_a_bomb_at_start(tmp_path: Path, command: str) -> None:
    path = write(tmp_path, merge_bomb(levels=8))
    done = run([command], SHIPMATE_CONFIG=str(path))
    assert done.returncode == 2
    assert f"{path}:5: x-m4.<<[4]: more than 20,000 values" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "text",
    [
        merge_bomb(levels=8),
        MINIMAL + "people: " + "[" * 5_000 + "]" * 5_000 + "\n",
        with_backend(
            "{kind: docker, image: 'a:{sha}', container: shop, keep: " + "9" * 5_000 + "}"
        ),
        MINIMAL.replace("{url: ./repo}", "!!python/object:os.system {url: ./repo}"),
        MINIMAL + '"\\uD800": 1\n',
    ],
    ids=["merge-bomb", "deep", "huge-int", "python-tag", "surrogate"],
)
def test_check_config_cli_exits_1_without_a_traceback(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    done = run(["check-config", str(path)])
    assert (done.returncode, done.stderr) == (1, "")
    assert done.stdout.startswith(f"{path}:")


def test_check_config_result_for_a_good_file(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    assert check_config(path) == (
        load_config(path),
        [f"{path}: OK — 1 environment: staging (shell)"],
    )
