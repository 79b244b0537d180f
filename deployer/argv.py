"""The one placeholder grammar, for every command and URL shipmate fills in.

``check-config`` and every backend (the shell deploy argv, the health command and URL, the
docker and swarm image) check and fill templates with this module and nothing else:

- ``{sha}``, ``{short_sha}`` and ``{env}`` (:data:`PLACEHOLDERS`) are replaced by the
  validated values of a :class:`~deployer.base.DeployTarget`. A filled value is always part
  of one argument: commands are argv lists, executed without a shell.
- A placeholder is exactly ``{name}``, with no brace touching it on either side. Every other
  brace is literal text and is sent exactly as written: ``find . -exec {} ;`` runs as
  ``find . -exec {} ;``, and docker's ``--format '{{.State.Status}}'`` reaches docker
  untouched. So ``{{`` and ``}}`` are *not* escapes for a single brace, as they are in Python's
  ``str.format``: the arguments that contain braces are other programs' templates (Go,
  ``find``, jq), and a command that means what it says when read is least surprising. The
  price is that no argument can contain a literal ``{sha}``, which no deploy has needed.
- A ``{name}`` that is not a known placeholder (``{commit}``, ``{SHA}``, ``{short-sha}``) is
  refused, at check-config with the key named, so that a typo never reaches a deploy.
- A known name in other braces (``{{sha}}``, ``{ env }``) is refused too: it is a placeholder
  written in another tool's syntax (Jinja, Helm), and passing it through unfilled would deploy
  the wrong thing.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import Final

from deployer.base import DeployTarget

PLACEHOLDERS: Final = ("sha", "short_sha", "env")

# "-" is allowed in a name so that a typo such as "{short-sha}" is refused, not kept as text.
_NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
_PLACEHOLDER_RE = re.compile(r"(?<!\{)\{(" + _NAME + r")\}(?!\})")
# A name in braces with extra braces or blanks around it: "{{sha}}", "{ sha }", "{{ env }}".
_DRESSED_RE = re.compile(r"\{+\s*(" + _NAME + r")\s*\}+")


def placeholders_in(template: str) -> set[str]:
    """Names of the placeholders in ``template``, known or not."""
    return {m.group(1) for m in _PLACEHOLDER_RE.finditer(template)}


def _listed(names: Collection[str]) -> str:
    return ", ".join("{" + name + "}" for name in names)


def template_problem(template: str, allowed: Collection[str] = PLACEHOLDERS) -> str | None:
    """Why ``template`` cannot be filled, in words for a config error; None when it can."""
    for name in sorted(placeholders_in(template) - set(allowed)):
        return f"unknown placeholder {'{' + name + '}'!r} (allowed: {_listed(allowed)})"
    for match in _DRESSED_RE.finditer(template):
        if match.group(1) in allowed and match.group(0) != "{" + match.group(1) + "}":
            shown, name = match.group(0), "{" + match.group(1) + "}"
            return (
                f"write {name!r} for the placeholder, not {shown!r} (allowed: {_listed(allowed)})"
            )
    return None


def check_template(template: str | Sequence[str]) -> None:
    """Raise ValueError when a part of ``template`` cannot be filled."""
    parts = [template] if isinstance(template, str) else list(template)
    for part in parts:
        problem = template_problem(part)
        if problem:
            raise ValueError(f"{problem} in {part!r}")


def fill_text(template: str, target: DeployTarget) -> str:
    check_template(template)
    values = {"sha": target.sha, "short_sha": target.short_sha, "env": target.env}
    return _PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], template)


def fill_argv(template: Sequence[str], target: DeployTarget) -> list[str]:
    if isinstance(template, str):
        # A bare string would be iterated character by character.
        raise TypeError("a command must be a list of arguments, not a string")
    if not template:
        raise ValueError("a command needs at least one argument")
    return [fill_text(arg, target) for arg in template]
