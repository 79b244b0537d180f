"""A command's processes die with the process that ran it, even under kill -9.

The "worker" here is a real Python process running ``run_command`` (the deploy and
health-check path); the test kills it with SIGKILL, which no handler can catch, and
watches the command and its background child disappear.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from deployer.shell import run_command
from tests.deployer.util import pid_gone, read_pid, wait_until, write_script

ROOT = Path(__file__).resolve().parents[2]

WORKER = """
import asyncio, sys
from pathlib import Path
from deployer.shell import run_command

async def main() -> None:
    await run_command([sys.argv[1]], time_limit=600, on_line=print, cwd=Path(sys.argv[2]))

asyncio.run(main())
"""

#: the script, a background child and a grandchild that ignores SIGTERM: all in one group
SCRIPT = "sh -c 'trap \"\" TERM; sleep 600' &\necho $! > child.pid\necho $$ > script.pid\nwait\n"


def _worker(tmp_path: Path) -> subprocess.Popen[bytes]:
    script = write_script(tmp_path / "deploy.sh", SCRIPT)
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(script), str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
    )


def _kill_all(*pids: int | None) -> None:
    for pid in pids:
        if pid is not None and not pid_gone(pid):
            os.kill(pid, signal.SIGKILL)


async def test_kill_9_of_the_worker_kills_the_command_and_its_children(tmp_path: Path) -> None:
    worker = _worker(tmp_path)
    try:
        await wait_until(lambda: read_pid(tmp_path / "script.pid") is not None, within=10)
        script, child = read_pid(tmp_path / "script.pid"), read_pid(tmp_path / "child.pid")
        assert script is not None and child is not None
        assert not pid_gone(script) and not pid_gone(child)

        worker.kill()
        await asyncio.to_thread(worker.wait)

        # the supervisor notices at once; a second is generous
        await wait_until(lambda: pid_gone(script) and pid_gone(child), within=1.0)
    finally:
        worker.kill()
        worker.wait()
        _kill_all(read_pid(tmp_path / "script.pid"), read_pid(tmp_path / "child.pid"))


async def test_exit_codes_and_signals_come_through_the_supervisor(tmp_path: Path) -> None:
    write_script(tmp_path / "code.sh", "exit 3\n")
    write_script(tmp_path / "term.sh", "kill -TERM $$\n")
    lines: list[str] = []
    code = await run_command(["./code.sh"], time_limit=10, on_line=lines.append, cwd=tmp_path)
    term = await run_command(["./term.sh"], time_limit=10, on_line=lines.append, cwd=tmp_path)
    assert (code.returncode, term.returncode) == (3, -signal.SIGTERM)
    assert lines == []


@pytest.mark.parametrize("exit_code", [0, 127])
async def test_a_command_exiting_127_is_not_taken_for_one_that_could_not_start(
    tmp_path: Path, exit_code: int
) -> None:
    write_script(tmp_path / "run.sh", f"echo ran\nexit {exit_code}\n")
    lines: list[str] = []
    result = await run_command(["./run.sh"], time_limit=10, on_line=lines.append, cwd=tmp_path)
    assert (result.returncode, lines) == (exit_code, ["ran"])
