from __future__ import annotations

import re

import pytest

from deployer.argv import (
    PLACEHOLDERS,
    check_template,
    fill_argv,
    fill_text,
    placeholders_in,
    template_problem,
)
from deployer.base import DeployTarget
from tests.deployer.util import SHA

TARGET = DeployTarget(env="staging", sha=SHA)


@pytest.mark.parametrize(
    ("placeholder", "value"), [("{sha}", SHA), ("{short_sha}", "0123456"), ("{env}", "staging")]
)
def test_each_placeholder_is_filled(placeholder: str, value: str) -> None:
    assert fill_text(placeholder, TARGET) == value
    assert fill_text(f"x-{placeholder}-y", TARGET) == f"x-{value}-y"
    assert fill_argv(["deploy", placeholder], TARGET) == ["deploy", value]


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (["./deploy.sh", "{sha}", "{env}"], ["./deploy.sh", SHA, "staging"]),
        (["--name={env}-{short_sha}"], ["--name=staging-0123456"]),
        (["{sha}{sha}"], [SHA + SHA]),
        # no placeholders: every argument passes through unchanged, spaces included
        (["echo", "a b", "$HOME", "`id`", ";"], ["echo", "a b", "$HOME", "`id`", ";"]),
    ],
)
def test_fill_argv(template: list[str], expected: list[str]) -> None:
    assert fill_argv(template, TARGET) == expected


@pytest.mark.parametrize(
    "argument",
    [
        # {} is find's placeholder, not ours
        "{}",
        # {{ and }} are not escapes: other programs' templates reach them as written
        "{{.State.Status}}",
        "{{",
        "}}",
        "a{{b",
        "c}}d",
        "{{}}",
        "{{ .Name }}",
        # a lone brace, and braces around what is not a name
        "{",
        "}",
        "{.sha}",
        "{0}",
        "{a b}",
    ],
)
def test_other_braces_pass_through_unchanged(argument: str) -> None:
    assert template_problem(argument) is None
    assert fill_argv(["cmd", argument], TARGET) == ["cmd", argument]
    assert fill_text(argument, TARGET) == argument


def test_find_exec_runs_as_written() -> None:
    argv = ["find", ".", "-name", "*.{sha}", "-exec", "rm", "{}", ";"]
    assert fill_argv(argv, TARGET) == ["find", ".", "-name", f"*.{SHA}", "-exec", "rm", "{}", ";"]


@pytest.mark.parametrize(
    ("template", "name"),
    [
        (["deploy", "{SHA}"], "{SHA}"),
        (["deploy", "{commit}"], "{commit}"),
        (["{short-sha}"], "{short-sha}"),
        (["x{sha}", "{envv}"], "{envv}"),
        (["{{sha}}-{x}"], "{x}"),
    ],
)
def test_an_unknown_placeholder_is_refused_by_name(template: list[str], name: str) -> None:
    message = f"unknown placeholder '{name}' (allowed: {{sha}}, {{short_sha}}, {{env}})"
    assert template_problem(template[-1]) == message
    with pytest.raises(ValueError, match=re.escape(message)):
        check_template(template)
    with pytest.raises(ValueError, match=re.escape(message)):
        fill_argv(template, TARGET)


@pytest.mark.parametrize(
    ("argument", "written"),
    [("{{sha}}", "{{sha}}"), ("{ env }", "{ env }"), ("v{{ short_sha }}", "{{ short_sha }}")],
)
def test_a_placeholder_in_another_tools_braces_is_refused(argument: str, written: str) -> None:
    # Jinja's and Helm's {{ sha }} would otherwise reach the command unfilled.
    problem = template_problem(argument)
    assert problem is not None and problem.startswith("write '{")
    assert repr(written) in problem
    with pytest.raises(ValueError, match="for the placeholder"):
        fill_argv([argument], TARGET)


def test_other_placeholder_sets_use_the_same_grammar() -> None:
    assert template_problem("https://x/pull/{number}", ("number",)) is None
    assert template_problem("https://x/pull/{sha}", ("number",)) == (
        "unknown placeholder '{sha}' (allowed: {number})"
    )


def test_placeholders_are_defined_once() -> None:
    assert PLACEHOLDERS == ("sha", "short_sha", "env")


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
