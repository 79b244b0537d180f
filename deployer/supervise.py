"""Holds a command's process group and kills the whole group when the worker dies.

``run_command`` starts this file (``python -I -S supervise.py WATCH_FD ERROR_FD -- argv``)
as a session leader, so its pid is the group id, and the command runs under it in the
same group. WATCH_FD is the read end of a pipe whose write end only the worker holds: it
reaches EOF when the worker exits for any reason, kill -9 included, and then every
process of the group is killed before another worker can start over. A background
process the command leaves behind when it finishes normally (a server it started) is
the command's business and lives on.

The supervisor ends the way its command ended (same exit code, same signal), so the
worker sees what it would have seen without it. If the command cannot be started at all
its reason goes to ERROR_FD and the exit code is 127. Standard library only: it runs
isolated from the worker's packages and from PYTHON* variables meant for the command.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

#: the exit code when the command could not be started (as a shell says it)
CANNOT_RUN = 127


def _kill_group_on_eof(watch_fd: int) -> None:
    """Wait for the worker's end of the pipe to close, then kill the group, itself included."""
    with contextlib.suppress(OSError):
        while os.read(watch_fd, 4096):
            pass  # nothing is ever written; only EOF means anything
    os.killpg(os.getpgid(0), signal.SIGKILL)


def _end_like(returncode: int) -> None:
    if returncode >= 0:
        os._exit(returncode)
    sig = -returncode
    with contextlib.suppress(OSError, ValueError):
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(128 + sig)  # a signal that does not end a process (it was not the cause then)


def _ignore(_signum: int, _frame: object) -> None:
    # A handler, not SIG_IGN, so that the command starts with the default (exec resets it).
    # The group's SIGTERM is for the command: the supervisor waits to see how it ends.
    return None


def main(argv: Sequence[str]) -> None:
    watch_fd, error_fd = int(argv[1]), int(argv[2])
    command = list(argv[4:])
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _ignore)
    try:
        child = subprocess.Popen(command, close_fds=True)
    except OSError as exc:
        os.write(error_fd, (exc.strerror or str(exc)).encode(errors="replace"))
        os._exit(CANNOT_RUN)
    os.close(error_fd)
    threading.Thread(target=_kill_group_on_eof, args=(watch_fd,), daemon=True).start()
    _end_like(child.wait())


if __name__ == "__main__":
    main(sys.argv)
