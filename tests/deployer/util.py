"""Helpers for deployer tests: executable scripts and waiting on conditions."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

SHA = "0123456789abcdef0123456789abcdef01234567"


def write_script(path: Path, body: str, *, executable: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    if executable:
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


async def wait_until(predicate: Callable[[], bool], *, within: float = 5.0) -> None:
    """Poll a condition; fail the test if it does not hold ``within`` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.01)


def pid_gone(pid: int) -> bool:
    """True once ``pid`` no longer runs. A zombie counts as gone: in a container, PID 1
    may never reap the orphans a killed script leaves behind."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    # the state follows the parenthesised command name, which may contain spaces
    return stat_line.rsplit(")", 1)[1].split()[0] == "Z"


def read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text else None
