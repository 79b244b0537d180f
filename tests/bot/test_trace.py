"""bot.trace: the events a benchmark or an operator subscribes to."""

from __future__ import annotations

import logging
import threading

import pytest

from bot import trace


def test_emit_without_subscribers_does_nothing() -> None:
    assert not trace.active()
    trace.emit("nobody.listens", value=1)  # no error, nothing recorded anywhere


def test_subscribers_get_named_events_in_order_with_monotonic_times() -> None:
    with trace.Recording() as rec:
        assert trace.active()
        trace.emit("deploy.claimed", release="staging-1", env="staging")
        trace.emit("live", release="staging-1", env="staging", sha="abc")
    assert [e.name for e in rec.events] == ["deploy.claimed", "live"]
    assert rec.events[0].fields == {"release": "staging-1", "env": "staging"}
    assert rec.events[0].at_ns <= rec.events[1].at_ns
    assert rec.named("live")[0].fields["sha"] == "abc"


def test_unsubscribing_stops_the_events_and_is_idempotent() -> None:
    seen: list[str] = []
    unsubscribe = trace.subscribe(lambda e: seen.append(e.name))
    trace.emit("one")
    unsubscribe()
    unsubscribe()
    trace.emit("two")
    assert seen == ["one"]
    assert not trace.active()


def test_a_span_emits_start_and_end_with_its_outcome() -> None:
    with trace.Recording() as rec:
        with trace.span("deploy.backend", sha="abc"):
            pass
        with pytest.raises(RuntimeError), trace.span("health", sha="abc"):
            raise RuntimeError("boom")
    assert [(e.name, e.fields.get("ok")) for e in rec.events] == [
        ("deploy.backend.start", None),
        ("deploy.backend.end", True),
        ("health.start", None),
        ("health.end", False),
    ]
    assert all(e.fields["sha"] == "abc" for e in rec.events)


def test_a_failing_subscriber_neither_raises_nor_starves_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(_: trace.Event) -> None:
        raise ValueError("listener bug")

    with (
        caplog.at_level(logging.ERROR, logger="bot.trace"),
        trace.subscribed(broken),
        trace.Recording() as rec,
    ):
        trace.emit("live")
    assert [e.name for e in rec.events] == ["live"]
    assert "trace subscriber" in caplog.text


def test_events_from_other_threads_reach_the_subscriber() -> None:
    with trace.Recording() as rec:
        threads = [
            threading.Thread(target=trace.emit, args=("docker.started",), kwargs={"n": n})
            for n in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(int(str(e.fields["n"])) for e in rec.events) == list(range(8))


def test_between_selects_by_time() -> None:
    with trace.Recording() as rec:
        trace.emit("a")
        trace.emit("b")
    first, second = rec.events
    assert [e.name for e in rec.between(second.at_ns, second.at_ns)] == ["b"]
    assert [e.name for e in rec.between(first.at_ns, second.at_ns)] == ["a", "b"]
