from __future__ import annotations

import pytest

from deployer.argv import check_template, fill_argv, fill_text, placeholders_in
from deployer.base import DeployTarget
from tests.deployer.util import SHA

TARGET = DeployTarget(env="staging", sha=SHA)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (["./deploy.sh", "{sha}", "{env}"], ["./deploy.sh", SHA, "staging"]),
        (["tag", "shop:{short_sha}"], ["tag", "shop:0123456"]),
        (["--name={env}-{short_sha}"], ["--name=staging-0123456"]),
        (["{sha}{sha}"], [SHA + SHA]),
        # no placeholders: every argument passes through unchanged, spaces included
        (["echo", "a b", "$HOME", "`id`", ";"], ["echo", "a b", "$HOME", "`id`", ";"]),
        # braces that are not placeholders stay literal
        (["find", ".", "-exec", "rm", "{}", ";"], ["find", ".", "-exec", "rm", "{}", ";"]),
        (["--format", "{{.State.Status}}"], ["--format", "{{.State.Status}}"]),
        (["{{sha}}"], ["{{sha}}"]),
        (["{ sha }"], ["{ sha }"]),
        (["{.sha}"], ["{.sha}"]),
    ],
)
def test_fill_argv(template: list[str], expected: list[str]) -> None:
    assert fill_argv(template, TARGET) == expected


@pytest.mark.parametrize(
    "template",
    [["deploy", "{SHA}"], ["deploy", "{commit}"], ["{short-sha}"], ["x{sha}", "{envv}"]],
)
def test_unknown_placeholder_is_an_error(template: list[str]) -> None:
    with pytest.raises(ValueError, match="unknown placeholder"):
        fill_argv(template, TARGET)
    with pytest.raises(ValueError, match="unknown placeholder"):
        check_template(template)


def test_a_filled_value_stays_one_argument() -> None:
    assert len(fill_argv(["run", "{env}"], DeployTarget(env="a-b_c", sha="abcdef1"))) == 2


def test_argv_must_be_a_list() -> None:
    with pytest.raises(TypeError):
        fill_argv("./deploy.sh {sha}", TARGET)
    with pytest.raises(ValueError):
        fill_argv([], TARGET)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("http://127.0.0.1:8081/healthz", "http://127.0.0.1:8081/healthz"),
        ("http://h/v?sha={sha}&env={env}", f"http://h/v?sha={SHA}&env=staging"),
        ("shop:{short_sha}", "shop:0123456"),
    ],
)
def test_fill_text(template: str, expected: str) -> None:
    assert fill_text(template, TARGET) == expected


def test_fill_text_rejects_unknown() -> None:
    with pytest.raises(ValueError, match=r"\{tag\}"):
        fill_text("shop:{tag}", TARGET)


def test_placeholders_in() -> None:
    assert placeholders_in("{a}/{sha}/{{b}}/{}") == {"a", "sha"}


@pytest.mark.parametrize(
    ("env", "sha"),
    [
        ("staging", "abc"),  # too short
        ("staging", "ABCDEF1"),  # upper case
        ("staging", "abcdef1\n"),  # "$" in a regex would let this through
        ("staging", "g" * 7),
        ("staging", "a" * 41),
        ("Staging", SHA),
        ("-rf", SHA),
        ("", SHA),
        ("a" * 33, SHA),
        ("prod;rm", SHA),
        ("prod\n", SHA),
    ],
)
def test_target_validation(env: str, sha: str) -> None:
    with pytest.raises(ValueError):
        DeployTarget(env=env, sha=sha)


@pytest.mark.parametrize(
    ("env", "sha"), [("staging", "abcdef1"), ("a", SHA), ("prod-eu_1", "a" * 40), ("a" * 32, SHA)]
)
def test_target_accepts(env: str, sha: str) -> None:
    target = DeployTarget(env=env, sha=sha)
    assert target.short_sha == sha[:7]
