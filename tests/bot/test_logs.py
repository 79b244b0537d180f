"""JSON log lines and the fields bound around the work they describe."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from bot.adapters.logs import JsonFormatter, bind, bound, log_format
from bot.cli import main


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, out
    logger.removeHandler(handler)


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_line_inside_bind_carries_the_release(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    log, out = captured
    with bind(release="sandbox-3", env="sandbox", job="1700000000000-0"):
        log.info("deploying %s", "abc1234")
    log.info("between releases")
    first, second = lines(out)
    assert first["message"] == "deploying abc1234"
    assert (first["level"], first["logger"]) == ("INFO", "tests.logs")
    assert datetime.fromisoformat(first["time"]).utcoffset() is not None
    assert (first["release"], first["env"], first["job"]) == (
        "sandbox-3",
        "sandbox",
        "1700000000000-0",
    )
    assert "release" not in second and "env" not in second


def test_nested_binds_add_up_and_a_call_site_field_wins(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    log, out = captured
    with bind(job="1-0", release=None), bind(release="prod-7", env="prod"):
        assert bound() == {"job": "1-0", "release": "prod-7", "env": "prod"}
        log.warning("slack rate limit", extra={"method": "chat.update", "env": "explicit"})
    assert bound() == {}
    (line,) = lines(out)
    assert line["job"] == "1-0" and line["release"] == "prod-7"
    assert line["method"] == "chat.update" and line["env"] == "explicit"


def test_an_exception_and_a_multiline_message_stay_one_line(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    log, out = captured
    with bind(release="staging-2"):
        try:
            raise RuntimeError("health check failed")
        except RuntimeError:
            log.exception("job failed\nit will be retried")
    assert len(out.getvalue().splitlines()) == 1
    (line,) = lines(out)
    assert line["level"] == "ERROR" and line["message"] == "job failed\nit will be retried"
    assert "RuntimeError: health check failed" in line["exc_info"]
    assert line["release"] == "staging-2"


async def test_tasks_keep_the_fields_of_where_they_were_started(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    """Two jobs running at once, each in its own task and across awaits: every line names
    its own release, including a task a job started in the background."""
    log, out = captured
    both_started = asyncio.Barrier(2)

    async def job(release: str) -> None:
        with bind(release=release, env=release.rsplit("-", 1)[0]):
            await both_started.wait()  # the other job has bound its release meanwhile
            log.info("deploying")
            child = asyncio.create_task(_say(log, "posted in the thread"))
        await child  # started inside the block: keeps its fields after the block ends

    await asyncio.gather(job("sandbox-1"), job("prod-4"))
    by_release: dict[str, list[str]] = {}
    for line in lines(out):
        by_release.setdefault(line["release"], []).append(line["message"])
    assert by_release == {
        "sandbox-1": ["deploying", "posted in the thread"],
        "prod-4": ["deploying", "posted in the thread"],
    }


async def _say(log: logging.Logger, text: str) -> None:
    await asyncio.sleep(0)
    log.info(text)


def test_web_and_worker_log_json_unless_told_text_and_the_rest_log_text() -> None:
    assert log_format("web", {}) == "json"
    assert log_format("worker", {"SHIPMATE_LOG_FORMAT": ""}) == "json"
    assert log_format("worker", {"SHIPMATE_LOG_FORMAT": "TEXT"}) == "text"
    for command in ("demo", "check-config", "emulator"):
        assert log_format(command, {"SHIPMATE_LOG_FORMAT": "json"}) == "text"
    with pytest.raises(ValueError, match="json or text"):
        log_format("web", {"SHIPMATE_LOG_FORMAT": "yaml"})


def test_an_unknown_log_format_stops_the_process_with_a_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SHIPMATE_LOG_FORMAT", "logfmt")
    assert main(["worker"]) == 2
    assert "SHIPMATE_LOG_FORMAT must be json or text, got 'logfmt'" in capsys.readouterr().err
