"""The slash-command grammar: ``/release [env]``, ``/rollback [env]``, ``/lock env [reason]``,
``/unlock [env]``, ``/history [env]``, and ``help`` for each.

User text only ever becomes an environment name checked against the configured ones (and,
for ``/lock``, a reason that is shown escaped and never executed), so nothing a user types
can reach a command line or a Redis key unchecked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from bot.domain.errors import UsageError

MAX_TEXT = 200
_WORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class Action(StrEnum):
    RELEASE = "release"
    ROLLBACK = "rollback"
    LOCK = "lock"
    UNLOCK = "unlock"
    #: recent releases of an environment, shown only to whoever asked
    HISTORY = "history"
    HELP = "help"


@dataclass(frozen=True, slots=True)
class Command:
    action: Action
    env: str | None = None
    #: which slash command asked, for help texts ("release", "rollback", "lock", ...)
    verb: str = "release"
    #: why an environment is locked (``/lock`` only)
    reason: str = ""


_SYNTAX = {
    "release": "/release <environment>",
    "rollback": "/rollback <environment>",
    "lock": "/lock <environment> [reason]",
    "unlock": "/unlock <environment>",
    "history": "/history <environment>",
}


def usage(verb: str, environments: Sequence[str]) -> str:
    envs = ", ".join(f"`{e}`" for e in environments) or "(none configured)"
    example = environments[0] if environments else "staging"
    return (
        f"Usage: `{_SYNTAX.get(verb, _SYNTAX['release'])}`, for example `/{verb} {example}`.\n"
        f"Environments: {envs}.\n"
        "`/release <env>` freezes the batch and asks its authors to approve (a reaction or the Approve button); "
        "`/rollback <env>` puts the last good release back at once; "
        "`/lock <env> [reason]` holds releases (not rollbacks) until `/unlock <env>`; "
        "`/history <env>` lists its recent releases (only you see it)."
    )


def parse(verb: str, text: str, environments: Sequence[str]) -> Command:
    """Parse the text after a slash command; raise UsageError saying what to type instead."""
    action = Action(verb) if verb in _SYNTAX else Action.RELEASE
    cleaned = text.strip()
    if len(cleaned) > MAX_TEXT:
        raise UsageError(
            f"That is {len(text)} characters; I expected an environment name.\n"
            + usage(verb, environments)
        )
    words = cleaned.split()
    if words and words[0].lower() in ("help", "-h", "--help", "?"):
        return Command(Action.HELP, verb=verb)
    if not words:
        if len(environments) == 1:
            return Command(action, environments[0], verb=verb)
        raise UsageError("Which environment? " + usage(verb, environments))
    if len(words) > 1 and action is not Action.LOCK:
        raise UsageError(
            f"`/{verb}` takes one environment name, got {len(words)} words.\n"
            + usage(verb, environments)
        )
    name = words[0]
    if not _WORD.match(name):
        raise UsageError("That is not an environment name.\n" + usage(verb, environments))
    lowered = name.lower()
    if lowered not in environments:
        raise UsageError(f"Unknown environment `{name}`.\n" + usage(verb, environments))
    reason = " ".join(words[1:]) if action is Action.LOCK else ""
    return Command(action, lowered, verb=verb, reason=reason)
