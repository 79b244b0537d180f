"""Logging: one JSON object per line, carrying the release (env, job, …) being worked on.

``bind(release=..., env=...)`` puts fields in a context variable; every log line written
inside it carries them. asyncio copies the context into each task it creates, so a
deploy's background thread posts and health checks log the release they belong to.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

#: the human format `shipmate demo` prints and SHIPMATE_LOG_FORMAT=text asks for
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("json", "text")

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_fields: ContextVar[Mapping[str, Any]] = ContextVar("shipmate_log_fields", default=_EMPTY)

# everything a LogRecord has of its own; any other attribute came from ``extra=``
_RECORD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


@contextlib.contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every log line written inside the block (None values are left out)."""
    merged = {**_fields.get(), **{k: v for k, v in fields.items() if v is not None}}
    token = _fields.set(MappingProxyType(merged))
    try:
        yield
    finally:
        _fields.reset(token)


def bound() -> Mapping[str, Any]:
    """The fields bound here, now."""
    return _fields.get()


class JsonFormatter(logging.Formatter):
    """time, level, logger, message, then ``extra=`` fields, then bound fields, then exc_info.

    A field given at the call site wins over a bound one of the same name; neither can
    replace the four fixed keys.
    """

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and not key.startswith("_"):
                out.setdefault(key, value)
        for key, value in _fields.get().items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc_info"] = record.exc_text
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str)


def log_format(command: str, environ: Mapping[str, str]) -> str:
    """JSON for the long-running `web` and `worker` unless SHIPMATE_LOG_FORMAT=text; text
    for everything a person runs in a terminal (demo, check-config, emulator)."""
    if command not in ("web", "worker"):
        return "text"
    chosen = environ.get("SHIPMATE_LOG_FORMAT", "").strip().lower() or "json"
    if chosen not in FORMATS:
        raise ValueError(f"SHIPMATE_LOG_FORMAT must be json or text, got {chosen!r}")
    return chosen


def configure(fmt: str, level: str | int) -> None:
    """Log to stderr in ``fmt`` ("json" or "text")."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
