"""bench.rollback's --trace timeline: trace events paired into spans."""

from __future__ import annotations

from bench.rollback import Span, timeline
from bot.trace import Event


def test_overlapping_spans_close_oldest_first_and_points_stay_points() -> None:
    events = [
        Event("job.start", 1, {"kind": "render"}),
        Event("job.start", 2, {"kind": "render"}),
        Event("job.end", 3, {"kind": "render", "ok": True}),
        Event("live", 4, {"env": "docker"}),
        Event("job.end", 5, {"kind": "render", "ok": False}),
        Event("job.end", 6, {"kind": "deploy", "ok": True}),  # began before the window
    ]
    assert timeline(events) == [
        Span("job kind=render", 1, 3),
        Span("job kind=render", 2, 5),
        Span("live env=docker", 4, None),
        Span("job.end kind=deploy", 6, None),
    ]
