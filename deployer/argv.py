"""Filling ``{sha}``, ``{short_sha}`` and ``{env}`` into commands and URLs.

Commands are argv lists executed without a shell, so a filled value is always exactly one
argument. Only ``{identifier}`` counts as a placeholder; other braces are literal so that
arguments such as ``find -exec {} ;`` or docker's ``--format '{{.State.Status}}'`` pass
through untouched, and a doubled ``{{sha}}`` is left alone too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from deployer.base import DeployTarget

PLACEHOLDERS = ("sha", "short_sha", "env")

# The lookarounds skip doubled braces (Go templates); the name allows "-" so that a typo
# such as "{short-sha}" is reported instead of silently kept as literal text.
_PLACEHOLDER_RE = re.compile(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_-]*)\}(?!\})")


def placeholders_in(template: str) -> set[str]:
    """Names of the placeholders in ``template``, known or not."""
    return {m.group(1) for m in _PLACEHOLDER_RE.finditer(template)}


def check_template(template: str | Sequence[str]) -> None:
    """Raise ValueError for unknown placeholders, so config checks fail before a deploy."""
    parts = [template] if isinstance(template, str) else list(template)
    for part in parts:
        unknown = sorted(placeholders_in(part) - set(PLACEHOLDERS))
        if unknown:
            known = ", ".join("{" + name + "}" for name in PLACEHOLDERS)
            names = ", ".join("{" + name + "}" for name in unknown)
            raise ValueError(f"unknown placeholder {names} in {part!r}; known: {known}")


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
