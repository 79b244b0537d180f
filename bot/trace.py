"""Timestamped events the runtime emits where a release's time goes, for whoever listens.

The worker, the deployers and `web` call ``emit("deploy.claimed", release=..., env=...)``
at the moments a benchmark or an operator asks about ("when did the worker take the job,
when did the container start, when was it live?"). Listeners subscribe in-process; the
product never reads what they do with it.

An emit with nobody subscribed is one function call and one truth test, so the calls stay
in the hot paths for good (``python -m bench.emit`` measures it). Timestamps come from
``time.monotonic_ns()``: comparable within one process, immune to wall-clock steps.

Names are dotted, ``<area>.<what>``; a span is a pair ``<name>.start`` / ``<name>.end``
(the end carries ``ok``). The names emitted today:

==========================  ===================================================================
``web.request.received``    POST /slack/events read and signature-checked (``kind``)
``web.request.answered``    its answer is ready (``kind``, ``status``)
``job.start`` / ``.end``    the worker runs a job (``kind``, ``release``)
``deploy.lock.acquired``    the environment's deploy lock is held (``env``, ``fence``)
``deploy.claimed``          the release moved to deploying under this lock (``release``, ``env``)
``deploy.backend.*``        span: the backend's deploy of one sha (``release``, ``env``, ``sha``)
``health.*``                span: the health check after it (``ok`` at the end)
``health.ok``               the sha answered healthy
``live``                    the release is live in Redis (``release``, ``env``, ``sha``)
``rollback.*``              span: an automatic or resumed rollback (``release``, ``env``, ``sha``)
``docker.stop``             about to stop the running container(s) (``containers``)
``docker.started``          the engine started the new or kept container (``container``, ``sha``)
``docker.settled``          it stayed up through the settle watch (``container``, ``sha``)
``swarm.update.sent``       the engine accepted the service update (``service``, ``image``)
``swarm.converged``         every task runs the new image (``service``)
==========================  ===================================================================
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Event:
    name: str
    #: ``time.monotonic_ns()`` when it was emitted
    at_ns: int
    fields: Mapping[str, object]


Subscriber = Callable[[Event], None]

# Replaced whole, never mutated: emit() iterates without a lock, from any thread.
_subscribers: tuple[Subscriber, ...] = ()
_changing = threading.Lock()


def emit(name: str, /, **fields: object) -> None:
    """Tell every subscriber that ``name`` happened now."""
    if not _subscribers:
        return
    event = Event(name, time.monotonic_ns(), fields)
    for subscriber in _subscribers:
        try:
            subscriber(event)
        except Exception:  # a broken listener must never break a deploy
            log.exception("trace subscriber %r failed on %s", subscriber, name)


def active() -> bool:
    """Whether anyone listens: for an emit whose fields are costly to compute."""
    return bool(_subscribers)


def subscribe(subscriber: Subscriber) -> Callable[[], None]:
    """Start calling ``subscriber`` for every event; returns the call that stops it.

    It runs inline, on the emitting thread (usually the event loop): keep it quick.
    """
    global _subscribers
    with _changing:
        _subscribers = (*_subscribers, subscriber)

    def unsubscribe() -> None:
        global _subscribers
        with _changing:
            remaining = list(_subscribers)
            with contextlib.suppress(ValueError):
                remaining.remove(subscriber)
            _subscribers = tuple(remaining)

    return unsubscribe


@contextlib.contextmanager
def subscribed(subscriber: Subscriber) -> Iterator[None]:
    unsubscribe = subscribe(subscriber)
    try:
        yield
    finally:
        unsubscribe()


class span:
    """``with span("deploy.backend", release=...)``: ``.start`` now, ``.end`` (with ``ok``) after."""

    __slots__ = ("_fields", "_name")

    def __init__(self, name: str, /, **fields: object) -> None:
        self._name = name
        self._fields = fields

    def __enter__(self) -> None:
        if _subscribers:
            emit(f"{self._name}.start", **self._fields)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if _subscribers:
            emit(f"{self._name}.end", ok=exc_type is None, **self._fields)


class Recording:
    """Every event while subscribed, in order: ``with Recording() as rec: ...; rec.named(...)``."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> Recording:
        if self._unsubscribe is None:
            self._unsubscribe = subscribe(self.events.append)
        return self

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def __enter__(self) -> Recording:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def named(self, name: str) -> list[Event]:
        return [e for e in self.events if e.name == name]

    def between(self, start_ns: int, end_ns: int) -> list[Event]:
        return [e for e in list(self.events) if start_ns <= e.at_ns <= end_ns]
