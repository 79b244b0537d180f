"""The audit stream: what each write decided, one entry per decision, flat for one XADD.

The events a write applies say what they decided (``Release.decisions`` and
``EnvState.decisions``, built in ``bot.domain.decisions``); the store turns the decisions of
the values it writes into these entries and appends them in the same Lua script as the
write itself, so a decision is never recorded without its entry or an entry without its
decision. Nothing here knows about Redis: an entry flattens to the few string fields of
one XADD.

Who did something is the decision's own ``by``; the caller's ``actor`` fills in what the
core is not told (who typed ``/unlock``). Automatic steps are done by ``shipmate``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from bot.domain.decisions import SHIPMATE
from bot.domain.models import Decision, DecisionKind, DetailValue, EnvState, Release

__all__ = [
    "MAX_DETAIL_TEXT",
    "SHIPMATE",
    "UNKNOWN",
    "DetailValue",
    "Entry",
    "Kind",
    "entries",
    "state_changes",
]

#: an entry's kind is the kind of decision it records
Kind = DecisionKind

#: the actor when neither the decision nor the caller says who it was
UNKNOWN = "unknown"

#: reasons come from backend output; the stream keeps a bounded amount of it per entry
MAX_DETAIL_TEXT = 500


@dataclass(frozen=True, slots=True)
class Entry:
    """One decision, as kept in the audit stream.

    ``release`` is empty for entries about the environment itself (locks).
    """

    at: float
    env: str
    release: str
    kind: Kind
    actor: str
    detail: Mapping[str, DetailValue] = field(default_factory=dict)

    def fields(self) -> list[str]:
        """The flat field/value list of one XADD: six short strings, the detail as JSON."""
        return [
            "at",
            repr(self.at),
            "env",
            self.env,
            "release",
            self.release,
            "kind",
            self.kind.value,
            "actor",
            self.actor,
            "detail",
            json.dumps(self.detail, separators=(",", ":"), sort_keys=True),
        ]

    @classmethod
    def from_fields(cls, raw: Mapping[str, str]) -> Entry:
        """Read back what :meth:`fields` wrote (a stream entry's field map)."""
        detail = json.loads(raw.get("detail") or "{}")
        return cls(
            at=float(raw["at"]),
            env=raw["env"],
            release=raw.get("release", ""),
            kind=Kind(raw["kind"]),
            actor=raw.get("actor", UNKNOWN),
            detail=detail if isinstance(detail, dict) else {},
        )


def entries(
    releases: Sequence[Release],
    env: EnvState | None = None,
    *,
    at: float,
    actor: str | None = None,
) -> list[Entry]:
    """The entries of one write: the decisions of each written release, then the environment's.

    ``at`` is when the write happens, for decisions that carry no time of their own;
    ``actor`` is who asked for the write, for decisions that do not say who made them.
    """
    out: list[Entry] = []
    for release in releases:
        out.extend(_entries(release.decisions, release.env, release.id, at=at, actor=actor))
    if env is not None:
        out.extend(_entries(env.decisions, env.name, "", at=at, actor=actor))
    return out


def state_changes(releases: Sequence[tuple[Release | None, Release]]) -> list[tuple[str, str]]:
    """(env, state) for each written release that enters a state (a new one included)."""
    return [
        (after.env, after.state.value)
        for before, after in releases
        if before is None or before.state is not after.state
    ]


def _entries(
    decisions: Iterable[Decision], env: str, release: str, *, at: float, actor: str | None
) -> list[Entry]:
    return [
        Entry(
            at=d.at if d.at is not None else at,
            env=env,
            release=release,
            kind=d.kind,
            actor=d.by or actor or UNKNOWN,
            detail={key: _clipped(value) for key, value in d.detail.items()},
        )
        for d in decisions
    ]


def _clipped(value: DetailValue) -> DetailValue:
    if not isinstance(value, str) or len(value) <= MAX_DETAIL_TEXT:
        return value
    return value[: MAX_DETAIL_TEXT - 1] + "…"
