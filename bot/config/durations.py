"""Human-friendly durations for the configuration file: "500ms", "30s", "5m", "1h", "1m30s".

Every duration is bounded: shorter than a millisecond is a typo (or a busy loop), longer than
30 days is a typo (or never), and anything past that, up to infinity, would make a timer that
never fires. Zero is read as zero; whether it is allowed is the caller's business.
"""

from __future__ import annotations

import math
import re

_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
# Largest first, so "1m30s" reads naturally and "30s1m" (almost certainly a typo) is refused.
_UNIT_ORDER = ("h", "m", "s", "ms")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
# "ms" must be tried before "m", or "500ms" would parse as 500 minutes followed by a stray "s".
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_PARTS = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|h|m|s))+")

MIN_SECONDS = 0.001
MAX_SECONDS = 30 * 24 * 3600.0
EXPECTED = "a number of seconds or a duration like 500ms, 30s, 5m, 1h or 1m30s"
BOUNDS = "from 1ms to 720h (30 days)"


def parse_duration(value: str | float) -> float:
    """Seconds in `value` (0, or within BOUNDS); raises ValueError naming the value otherwise."""
    seconds = duration_seconds(value)
    if seconds is None and isinstance(value, str) and _PARTS.fullmatch(value.strip()):
        raise ValueError(
            f"invalid duration {value!r}: units must go from largest to smallest, "
            "each at most once (like 1h30m or 1m30s)"
        )
    if seconds is None:
        raise ValueError(f"invalid duration {value!r}: expected {EXPECTED}")
    if seconds != 0 and not within_bounds(seconds):
        raise ValueError(f"duration {value!r} is out of range: expected 0 or a duration {BOUNDS}")
    return seconds


def duration_seconds(value: str | float) -> float | None:
    """Seconds in `value`, unbounded (possibly inf); None when it is not a duration at all."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = float(value)
        return seconds if not math.isnan(seconds) and seconds >= 0 else None
    text = value.strip()
    if _NUMBER.fullmatch(text):
        return float(text)
    if not _PARTS.fullmatch(text):
        return None
    return _sum_parts(text)


def within_bounds(seconds: float) -> bool:
    return MIN_SECONDS <= seconds <= MAX_SECONDS


def format_duration(seconds: float) -> str:
    """The shortest spelling parse_duration reads back: 90 -> "1m30s", 0.5 -> "500ms"."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    if whole != seconds:
        return f"{seconds:g}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(hours, "h"), (minutes, "m"), (secs, "s")]
    return "".join(f"{n}{unit}" for n, unit in parts if n) or "0s"


def _sum_parts(text: str) -> float | None:
    total = 0.0
    last_rank = -1
    for number, unit in _PART.findall(text):
        rank = _UNIT_ORDER.index(unit)
        if rank <= last_rank:
            return None
        last_rank = rank
        total += float(number) * _UNIT_SECONDS[unit]
    return total
