"""Human-friendly durations for the configuration file: "500ms", "30s", "5m", "1h", "1m30s"."""

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

EXPECTED = "a number of seconds or a duration like 500ms, 30s, 5m, 1h or 1m30s"


def parse_duration(value: str | float) -> float:
    """Seconds in `value`; raises ValueError naming the value when it is not a duration."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}: expected {EXPECTED}")
    if isinstance(value, int | float):
        return _checked_seconds(float(value), value)
    text = value.strip()
    if _NUMBER.fullmatch(text):
        return float(text)
    if not _PARTS.fullmatch(text):
        raise ValueError(f"invalid duration {value!r}: expected {EXPECTED}")
    return _sum_parts(text, value)


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


def _checked_seconds(seconds: float, original: object) -> float:
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"invalid duration {original!r}: expected {EXPECTED}")
    return seconds


def _sum_parts(text: str, original: str) -> float:
    total = 0.0
    last_rank = -1
    for number, unit in _PART.findall(text):
        rank = _UNIT_ORDER.index(unit)
        if rank <= last_rank:
            raise ValueError(
                f"invalid duration {original!r}: units must go from largest to smallest, "
                "each at most once (like 1h30m or 1m30s)"
            )
        last_rank = rank
        total += float(number) * _UNIT_SECONDS[unit]
    return total
