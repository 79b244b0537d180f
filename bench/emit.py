"""What a ``bot.trace.emit`` costs, next to an empty function call measured in the same run.

    .venv/bin/python -m bench.emit [--calls N]

The runtime emits at every milestone of a deploy and twice per Slack request, whether or
not anyone listens, so the unsubscribed case must cost no more than the call itself.
Each figure is the best of 7 rounds of N calls (the least disturbed by the machine).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

from bench.common import machine_line
from bot import trace

ROUNDS = 7


def _noop(_name: str, /, **_fields: object) -> None:
    return None


def best_ns_per_call(call: Callable[[], None], calls: int) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter_ns()
        for _ in range(calls):
            call()
        best = min(best, (time.perf_counter_ns() - start) / calls)
    return best


def measure(calls: int) -> dict[str, float]:
    fields = {"release": "staging-12", "env": "staging"}
    figures = {
        "empty function call (baseline)": best_ns_per_call(
            lambda: _noop("deploy.claimed", **fields), calls
        ),
        "emit, nobody subscribed": best_ns_per_call(
            lambda: trace.emit("deploy.claimed", **fields), calls
        ),
    }
    with trace.subscribed(lambda _event: None):
        figures["emit, one subscriber (does nothing)"] = best_ns_per_call(
            lambda: trace.emit("deploy.claimed", **fields), calls
        )
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.emit", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000, help="calls per round")
    opts = parser.parse_args(argv)
    if not 1_000 <= opts.calls <= 10_000_000:
        parser.error("--calls must be between 1000 and 10000000")
    figures = measure(opts.calls)
    print(machine_line())
    print(f"bot.trace.emit with two fields, best of {ROUNDS} rounds of {opts.calls} calls")
    for label, ns in figures.items():
        print(f"  {label:<40}{ns:>8.0f} ns per call")
    baseline = figures["empty function call (baseline)"]
    print(
        f"  unsubscribed emit / empty call = {figures['emit, nobody subscribed'] / baseline:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
