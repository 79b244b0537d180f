"""The slash-command grammar: only configured environment names get through."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.domain.commands import MAX_TEXT, Action, Command, parse, usage
from bot.domain.errors import DomainError, UsageError

ENVS = ("staging", "prod")
ONE = ("staging",)


@pytest.mark.parametrize(
    ("verb", "text", "envs", "expected"),
    [
        pytest.param("release", "staging", ENVS, Command(Action.RELEASE, "staging"), id="plain"),
        pytest.param("release", "  prod  ", ENVS, Command(Action.RELEASE, "prod"), id="spaces"),
        pytest.param(
            "release", "\tprod\n", ENVS, Command(Action.RELEASE, "prod"), id="tab-newline"
        ),
        pytest.param("release", "PROD", ENVS, Command(Action.RELEASE, "prod"), id="upper"),
        pytest.param("release", "StAgInG", ENVS, Command(Action.RELEASE, "staging"), id="mixed"),
        pytest.param(
            "release", "\u00a0prod\u00a0", ENVS, Command(Action.RELEASE, "prod"), id="nbsp"
        ),
        pytest.param(
            "rollback",
            "prod",
            ENVS,
            Command(Action.ROLLBACK, "prod", verb="rollback"),
            id="rollback",
        ),
        pytest.param("release", "", ONE, Command(Action.RELEASE, "staging"), id="empty-one-env"),
        pytest.param("release", "   ", ONE, Command(Action.RELEASE, "staging"), id="blank-one-env"),
        pytest.param(
            "rollback",
            "",
            ONE,
            Command(Action.ROLLBACK, "staging", verb="rollback"),
            id="rb-one-env",
        ),
        pytest.param("release", "help", ENVS, Command(Action.HELP), id="help"),
        pytest.param("release", "HELP", ENVS, Command(Action.HELP), id="help-upper"),
        pytest.param("release", "-h", ENVS, Command(Action.HELP), id="dash-h"),
        pytest.param("release", "--help", ENVS, Command(Action.HELP), id="dash-dash-help"),
        pytest.param("release", "?", ENVS, Command(Action.HELP), id="question"),
        pytest.param("release", "help prod", ENVS, Command(Action.HELP), id="help-with-env"),
        pytest.param(
            "rollback", "help", ENVS, Command(Action.HELP, verb="rollback"), id="rollback-help"
        ),
    ],
)
def test_parse_accepts(verb: str, text: str, envs: tuple[str, ...], expected: Command) -> None:
    """Valid command text parses to the expected action and configured environment."""
    assert parse(verb, text, envs) == expected


@pytest.mark.parametrize(
    ("text", "envs", "says"),
    [
        pytest.param("", ENVS, "Which environment?", id="empty-several-envs"),
        pytest.param("", (), "Which environment?", id="empty-no-envs"),
        pytest.param("production", ENVS, "Unknown environment `production`", id="unknown"),
        pytest.param("staging prod", ENVS, "takes one environment name, got 2 words", id="two"),
        pytest.param("prod; rm -rf /", ENVS, "takes one environment name", id="semicolon-spaced"),
        pytest.param("prod;rm", ENVS, "not an environment name", id="semicolon"),
        pytest.param("$(id)", ENVS, "not an environment name", id="dollar-paren"),
        pytest.param("`id`", ENVS, "not an environment name", id="backticks"),
        pytest.param("prod&&id", ENVS, "not an environment name", id="and-and"),
        pytest.param("prod|id", ENVS, "not an environment name", id="pipe"),
        pytest.param("../prod", ENVS, "not an environment name", id="path"),
        pytest.param("prod\x00", ENVS, "not an environment name", id="nul"),
        pytest.param("*", ENVS, "not an environment name", id="glob"),
        pytest.param("-prod", ENVS, "not an environment name", id="leading-dash"),
        pytest.param("env:prod", ENVS, "not an environment name", id="colon-redis-key"),
        pytest.param("prod\u200b", ENVS, "not an environment name", id="zero-width"),
        pytest.param("prоd", ENVS, "not an environment name", id="cyrillic-o"),
        pytest.param("ｐｒｏｄ", ENVS, "not an environment name", id="fullwidth"),
        pytest.param("\udcff", ENVS, "not an environment name", id="lone-surrogate"),
        pytest.param("🚀", ENVS, "not an environment name", id="emoji"),
        pytest.param("a" * 65, ENVS, "not an environment name", id="long-word"),
        pytest.param("x" * 10_240, ENVS, "characters; I expected an environment name", id="10kb"),
        pytest.param("prod " * 2048, ENVS, "characters", id="10kb-words"),
    ],
)
def test_parse_refuses_with_usage(text: str, envs: tuple[str, ...], says: str) -> None:
    """Bad text raises UsageError whose message names the problem and what to type instead."""
    with pytest.raises(UsageError) as info:
        parse("release", text, envs)
    message = str(info.value)
    assert says in message
    assert "Usage: `/release <environment>`" in message
    assert isinstance(info.value, DomainError)
    for env in envs:
        assert f"`{env}`" in message
    if not envs:
        assert "(none configured)" in message


@pytest.mark.parametrize(
    ("verb", "text", "expected"),
    [
        ("lock", "prod", Command(Action.LOCK, "prod", verb="lock")),
        (
            "lock",
            "PROD db migration",
            Command(Action.LOCK, "prod", verb="lock", reason="db migration"),
        ),
        (
            "lock",
            "prod  $(id); `rm -rf /`",
            Command(Action.LOCK, "prod", verb="lock", reason="$(id); `rm -rf /`"),
        ),
        ("unlock", "staging", Command(Action.UNLOCK, "staging", verb="unlock")),
        ("unlock", "help", Command(Action.HELP, verb="unlock")),
    ],
)
def test_parse_lock_and_unlock(verb: str, text: str, expected: Command) -> None:
    """/lock takes an environment and a free-text reason; /unlock only an environment."""
    assert parse(verb, text, ENVS) == expected


@pytest.mark.parametrize(
    ("verb", "text", "says"),
    [
        ("lock", "$(id) prod", "not an environment name"),
        ("lock", "qa because", "Unknown environment `qa`"),
        ("unlock", "prod now", "takes one environment name"),
    ],
)
def test_parse_lock_refusals(verb: str, text: str, says: str) -> None:
    """The environment word of /lock and /unlock is checked like any other."""
    with pytest.raises(UsageError) as info:
        parse(verb, text, ENVS)
    assert says in str(info.value)
    assert f"`/{verb} <environment>" in str(info.value)


def test_usage_example_uses_first_environment() -> None:
    """The usage example names the first configured environment and the verb asked."""
    text = usage("rollback", ENVS)
    assert "`/rollback staging`" in text
    assert "Environments: `staging`, `prod`." in text


def test_usage_without_environments_still_gives_an_example() -> None:
    """Usage with no environments configured falls back to a sample name."""
    assert "`/release staging`" in usage("release", ())


def test_long_text_message_is_bounded() -> None:
    """A 10 KB text is refused without echoing it back."""
    with pytest.raises(UsageError) as info:
        parse("release", "y" * 10_240, ENVS)
    assert "yyyy" not in str(info.value)
    assert len(str(info.value)) < 1000


def test_max_text_boundary() -> None:
    """Text up to MAX_TEXT characters is parsed; one more is refused as too long."""
    padded = "prod".center(MAX_TEXT)
    assert parse("release", padded, ENVS).env == "prod"
    with pytest.raises(UsageError, match="characters"):
        parse("release", "a" * (MAX_TEXT + 1), ENVS)


@settings(max_examples=300, deadline=None)
@given(
    text=st.one_of(
        st.text(max_size=80),
        st.sampled_from(["prod", "PROD", " staging ", "qa", "Prod\n", "help"]),
        st.text(alphabet="prodstagingPRODSTAGING-_.; $`()|&", max_size=12),
    ),
    envs=st.lists(st.from_regex(r"[a-z0-9][a-z0-9_-]{0,8}", fullmatch=True), max_size=4),
    verb=st.sampled_from(["release", "rollback", "lock", "unlock", "history"]),
)
def test_parse_never_returns_an_unconfigured_env(text: str, envs: list[str], verb: str) -> None:
    """Whatever the text, parse returns a configured environment, help, or a UsageError."""
    try:
        command = parse(verb, text, envs)
    except UsageError as err:
        assert "Usage:" in str(err)
        return
    if command.action is Action.HELP:
        assert command.env is None
    else:
        assert command.env in envs
        assert command.action is Action(verb)
        assert command.reason == "" or command.action is Action.LOCK


@pytest.mark.parametrize(
    ("text", "envs", "expected"),
    [
        pytest.param("prod", ENVS, Command(Action.HISTORY, "prod", verb="history"), id="env"),
        pytest.param(" PROD ", ENVS, Command(Action.HISTORY, "prod", verb="history"), id="upper"),
        pytest.param("", ONE, Command(Action.HISTORY, "staging", verb="history"), id="one-env"),
        pytest.param("help", ENVS, Command(Action.HELP, verb="history"), id="help"),
    ],
)
def test_parse_history(text: str, envs: tuple[str, ...], expected: Command) -> None:
    """/history takes an environment like /release does, defaulting to the only one."""
    assert parse("history", text, envs) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        pytest.param("", "Which environment?", id="several-envs"),
        pytest.param("qa", "Unknown environment `qa`", id="unknown"),
        pytest.param("prod 20", "takes one environment name, got 2 words", id="two-words"),
        pytest.param("$(id)", "not an environment name", id="injection"),
    ],
)
def test_parse_history_refusals(text: str, says: str) -> None:
    """A bad /history says what is wrong and shows its own usage."""
    with pytest.raises(UsageError) as info:
        parse("history", text, ENVS)
    assert says in str(info.value)
    assert "Usage: `/history <environment>`, for example `/history staging`." in str(info.value)


def test_usage_mentions_history() -> None:
    """Every command's help says /history exists and that only the asker sees its answer."""
    assert "`/history <env>` lists its recent releases (only you see it)." in usage("release", ENVS)
