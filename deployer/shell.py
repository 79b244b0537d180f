"""The shell backend: deploy by running an argv command with the sha and environment.

Commands never go through a shell. Each runs in its own session (process group) so a
timeout can kill everything it started, not just the direct child, and under a small
supervisor (deployer/supervise.py) that kills that group as soon as the worker dies,
kill -9 included: a dead worker's deploy never runs on beside its successor's. Output is merged,
streamed to the release thread in batches and capped, because a chatty deploy script
must not flood the channel or run into Slack's rate limits.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import io
import logging
import os
import shlex
import shutil
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from bot.domain.models import StepStatus
from deployer.argv import check_template, fill_argv
from deployer.base import DeployerError, DeployError, DeployTarget, Reporter, format_seconds
from deployer.supervise import CANNOT_RUN

log = logging.getLogger(__name__)

SUPERVISOR = str(Path(__file__).with_name("supervise.py"))


class CommandNotRunnable(DeployerError):
    """The command could not be started at all (missing, not executable, bad cwd)."""


@dataclass(frozen=True, slots=True)
class CommandResult:
    #: negative: killed by that signal (asyncio's convention)
    returncode: int
    timed_out: bool
    elapsed: float
    #: the last few output lines, for error messages
    last_lines: tuple[str, ...]


def child_env(extra: Mapping[str, str], target: DeployTarget) -> dict[str, str]:
    return {
        **os.environ,
        **extra,
        "SHIPMATE_SHA": target.sha,
        "SHIPMATE_SHORT_SHA": target.short_sha,
        "SHIPMATE_ENV": target.env,
        **({"SHIPMATE_FENCE": str(target.fence)} if target.fence is not None else {}),
        **({"SHIPMATE_RELEASE": target.release} if target.release else {}),
    }


def resolve_executable(
    program: str, *, cwd: Path | None, env: Mapping[str, str], what: str = "command"
) -> str:
    """Find the file to execute, or raise CommandNotRunnable with a message a person can act
    on. Done up front because exec errors from a child carry no hint of where we looked, and
    because "./deploy.sh" must mean the configured cwd, not wherever the worker was started."""
    if cwd is not None and not cwd.is_dir():
        raise CommandNotRunnable(f"{what} working directory does not exist: {cwd}")
    if "/" in program:
        path = Path(program)
        if not path.is_absolute():
            path = (cwd or Path.cwd()) / path
        if not path.exists():
            raise CommandNotRunnable(f"{what} not found: {program} (no such file: {path})")
        if path.is_dir() or not os.access(path, os.X_OK):
            raise CommandNotRunnable(f"{what} is not executable: {program} (try chmod +x {path})")
        return str(path)
    found = shutil.which(program, path=env.get("PATH", os.defpath))
    if found is None:
        raise CommandNotRunnable(f"{what} not found on PATH: {program}")
    return found


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _kill_group(proc: asyncio.subprocess.Process, grace: float) -> None:
    # start_new_session made the supervisor a session and group leader, so its pid is the
    # group id. The group id stays reserved while any member lives, so the final SIGKILL
    # cannot hit an unrelated process even after the leader has been reaped. The
    # supervisor outlives SIGTERM until its command ends, so the grace is the command's.
    pgid = proc.pid
    _signal_group(pgid, signal.SIGTERM)
    if grace > 0:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await proc.wait()
    _signal_group(pgid, signal.SIGKILL)
    await proc.wait()


def _unbuffered(fd: int) -> io.FileIO:
    # connect_read_pipe wants a file object; it closes it with the transport.
    return io.FileIO(fd, "rb")


# Longer partial lines are cut so a progress bar without newlines cannot grow memory.
_MAX_PARTIAL = 16_384


async def _pump(reader: asyncio.StreamReader, on_line: Callable[[str], None]) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    partial = ""
    while chunk := await reader.read(65_536):
        text = partial + decoder.decode(chunk)
        *lines, partial = text.split("\n")
        for line in lines:
            on_line(line)
        if len(partial) > _MAX_PARTIAL:
            on_line(partial)
            partial = ""
    partial += decoder.decode(b"", final=True)
    if partial:
        on_line(partial)


async def run_command(
    argv: Sequence[str],
    *,
    time_limit: float,
    on_line: Callable[[str], None],
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    what: str = "command",
    kill_grace: float = 5.0,
    drain: float = 0.5,
    keep_last: int = 5,
) -> CommandResult:
    """Run argv with stdin on /dev/null and stdout+stderr merged into ``on_line``.

    Past ``time_limit`` (or on cancellation) the whole process group gets SIGTERM, then SIGKILL after
    ``kill_grace``; if the worker dies, the supervisor SIGKILLs the group at once. After
    the command exits, output is read for at most ``drain`` seconds: a background child
    (say, a server the deploy script started) may hold the pipe open forever, and it must
    not keep the deploy waiting.
    """
    env = dict(os.environ if env is None else env)
    executable = resolve_executable(argv[0], cwd=cwd, env=env, what=what)
    last: deque[str] = deque(maxlen=keep_last)

    def collect(line: str) -> None:
        last.append(line)
        on_line(line)

    loop = asyncio.get_running_loop()
    # Our own pipe rather than stdout=PIPE: asyncio's subprocess transport cannot be closed
    # while a background grandchild still holds its pipe, and would then leak (and warn).
    read_fd, write_fd = os.pipe()
    try:
        pipe_file = _unbuffered(read_fd)
    except BaseException:
        os.close(read_fd)
        os.close(write_fd)
        raise
    reader = asyncio.StreamReader(limit=2**20)
    transport: asyncio.ReadTransport | None = None
    # The supervisor's lifeline: only this process holds the write end (pipes are not
    # inherited), so it closes exactly when the worker dies, or when the command is over.
    watch_r, watch_w = os.pipe()
    error_r, error_w = os.pipe()
    started = time.monotonic()
    try:
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe_file
        )
        try:
            proc = await asyncio.create_subprocess_exec(
                *_supervised(watch_r, error_w, [executable, *argv[1:]]),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=write_fd,
                stderr=write_fd,
                cwd=cwd,
                env=env,
                start_new_session=True,
                pass_fds=(watch_r, error_w),
            )
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise CommandNotRunnable(f"cannot run {what} {argv[0]}: {reason}") from None
        finally:
            # Only the child may keep the write end, so EOF comes when its group is done.
            os.close(write_fd)
            write_fd = -1
            os.close(watch_r)
            os.close(error_w)
            watch_r = error_w = -1
        pump = asyncio.create_task(_pump(reader, collect))
        timed_out = False
        try:
            try:
                async with asyncio.timeout(time_limit):
                    await proc.wait()
            except TimeoutError:
                timed_out = True
                await _kill_group(proc, kill_grace)
            except asyncio.CancelledError:
                # Never leave a deploy running unsupervised when the worker gives up on it.
                await _kill_group(proc, 0)
                raise
            await asyncio.wait({pump}, timeout=drain)
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        returncode = proc.returncode
        assert returncode is not None  # wait() returned
        if returncode == CANNOT_RUN and (reason := _read_reason(error_r)):
            # e.g. a script without a "#!" line (ENOEXEC) or a broken interpreter path
            raise CommandNotRunnable(f"cannot run {what} {argv[0]}: {reason}")
        return CommandResult(
            returncode=returncode,
            timed_out=timed_out,
            elapsed=time.monotonic() - started,
            last_lines=tuple(last),
        )
    finally:
        for fd in (write_fd, watch_r, watch_w, error_r, error_w):
            if fd != -1:
                os.close(fd)
        if transport is not None:
            transport.close()
        else:
            pipe_file.close()


def _supervised(watch_fd: int, error_fd: int, argv: Sequence[str]) -> list[str]:
    """argv run under the supervisor; -I -S: isolated from PYTHON* variables and site
    packages meant for the command, and quick to start."""
    return [sys.executable, "-I", "-S", SUPERVISOR, str(watch_fd), str(error_fd), "--", *argv]


def _read_reason(fd: int) -> str:
    """Why the supervisor could not start the command; "" if it did (it has exited, so
    this read does not block)."""
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 4096).decode(errors="replace")
    except BlockingIOError:
        return ""


def _clean_line(line: str, max_chars: int) -> str:
    # What a terminal would show for progress output redrawn with carriage returns.
    line = line.rstrip("\r")
    if "\r" in line:
        line = line.rsplit("\r", 1)[-1]
    if len(line) > max_chars:
        line = line[: max_chars - 1] + "…"
    return line


class OutputLog:
    """What the release thread shows of a command's output: the head as it comes and, if
    the output is longer than the budget, a "… N lines cut" marker and the tail at the end.
    The total shown stays within ``max_lines`` lines and about ``max_bytes`` bytes."""

    def __init__(
        self,
        *,
        max_lines: int = 200,
        max_bytes: int = 16_384,
        tail_lines: int = 20,
        tail_bytes: int = 2_048,
        max_line_chars: int = 1_000,
    ) -> None:
        self._max_lines = max_lines
        self._max_bytes = max_bytes
        self._head_lines = max(0, max_lines - tail_lines - 1)
        self._head_bytes = max(0, max_bytes - tail_bytes - 64)
        self._max_line_chars = max_line_chars
        self._pending: list[str] = []
        self._shown_lines = 0
        self._shown_bytes = 0
        self._overflowing = False
        self._tail: deque[str] = deque(maxlen=max_lines)
        self.total_lines = 0

    @property
    def pending_lines(self) -> int:
        return len(self._pending)

    def add(self, line: str) -> None:
        line = _clean_line(line, self._max_line_chars)
        self.total_lines += 1
        if not self._overflowing:
            size = len(line.encode()) + 1
            if (
                self._shown_lines < self._head_lines
                and self._shown_bytes + size <= self._head_bytes
            ):
                self._pending.append(line)
                self._shown_lines += 1
                self._shown_bytes += size
                return
            self._overflowing = True
        self._tail.append(line)

    def take_pending(self) -> list[str]:
        lines, self._pending = self._pending, []
        return lines

    def finish(self) -> list[str]:
        """The rest to show once the command is done."""
        out = self.take_pending()
        if not self._overflowing:
            return out
        # The head reserved room for the tail; use all the room that is left.
        room_lines = self._max_lines - self._shown_lines - 1
        room_bytes = self._max_bytes - self._shown_bytes - 64
        tail: list[str] = []
        for line in reversed(self._tail):
            size = len(line.encode()) + 1
            if len(tail) >= room_lines or size > room_bytes:
                break
            tail.append(line)
            room_bytes -= size
        tail.reverse()
        cut = self.total_lines - self._shown_lines - len(tail)
        if cut:
            out.append(f"… {cut} line{'s' if cut != 1 else ''} cut")
        out.extend(tail)
        self._tail.clear()
        self._overflowing = False
        return out


class _OutputStreamer:
    """Sends an OutputLog's lines to the reporter in batches, from one task so that batches
    stay in order and a slow reporter (rate-limited Slack) never stalls the command."""

    def __init__(
        self, output: OutputLog, reporter: Reporter, *, every: float, batch_lines: int = 50
    ) -> None:
        self._output = output
        self._reporter = reporter
        self._every = every
        self._batch_lines = batch_lines
        self._wake = asyncio.Event()
        self._stopping = False
        self._task = asyncio.create_task(self._run())

    def add(self, line: str) -> None:
        self._output.add(line)
        if self._output.pending_lines >= self._batch_lines:
            self._wake.set()

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._every):
                    await self._wake.wait()
            self._wake.clear()
            if not self._stopping:
                await self._send(self._output.take_pending())

    async def _send(self, lines: list[str]) -> None:
        if not lines:
            return
        try:
            await self._reporter.detail("\n".join(lines))
        except Exception:
            # Output is a courtesy; losing a batch must not abort or orphan the deploy.
            log.warning("could not report command output", exc_info=True)

    async def close(self) -> None:
        self._stopping = True
        self._wake.set()
        await self._task
        await self._send(self._output.finish())


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _describe_exit(program: str, result: CommandResult) -> str:
    if result.returncode < 0:
        return f"{program} was killed by {signal_name(-result.returncode)}"
    return f"{program} exited with code {result.returncode}"


@dataclass(frozen=True, slots=True)
class ShellSpec:
    #: the ``kind:`` that selects this spec in shipmate.yml
    kind: ClassVar[Literal["shell"]] = "shell"

    deploy: tuple[str, ...]
    timeout: float = 600.0
    #: where relative commands ("./deploy.sh") are found and run; None: the worker's cwd
    cwd: Path | None = None
    #: added to the worker's environment, next to SHIPMATE_SHA / SHIPMATE_ENV
    env: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if isinstance(self.deploy, str) or not self.deploy:
            raise ValueError("shell deploy must be a non-empty list of arguments")
        check_template(self.deploy)
        if not self.timeout > 0:
            raise ValueError(f"shell deploy timeout must be positive, not {self.timeout}")


class ShellBackend:
    """Runs ``spec.deploy``; whether re-deploying the running sha is harmless is up to the
    script (the contract asks for idempotent deploys)."""

    kind = "shell"

    def __init__(
        self,
        spec: ShellSpec,
        *,
        flush_every: float = 2.0,
        kill_grace: float = 5.0,
        drain: float = 0.5,
        output: Callable[[], OutputLog] = OutputLog,
    ) -> None:
        self.spec = spec
        self._flush_every = flush_every
        self._kill_grace = kill_grace
        self._drain = drain
        self._new_output = output

    async def check_artifact(self, target: DeployTarget) -> None:
        # A shell deploy builds or fetches whatever it needs itself.
        return None

    async def deploy(self, target: DeployTarget, reporter: Reporter) -> None:
        argv = fill_argv(self.spec.deploy, target)
        program = argv[0]
        await reporter.step("deploy", StepStatus.RUNNING, shlex.join(argv))
        streamer = _OutputStreamer(self._new_output(), reporter, every=self._flush_every)
        try:
            try:
                result = await run_command(
                    argv,
                    time_limit=self.spec.timeout,
                    on_line=streamer.add,
                    cwd=self.spec.cwd,
                    env=child_env(self.spec.env, target),
                    what="deploy command",
                    kill_grace=self._kill_grace,
                    drain=self._drain,
                )
            finally:
                await streamer.close()
        except CommandNotRunnable as exc:
            await reporter.step("deploy", StepStatus.FAILED, str(exc))
            raise DeployError(str(exc)) from None

        if result.timed_out:
            limit = format_seconds(self.spec.timeout)
            await reporter.step("deploy", StepStatus.FAILED, f"timed out after {limit}")
            raise DeployError(f"deploy command timed out after {limit}: {program}")
        if result.returncode != 0:
            message = _describe_exit(program, result)
            await reporter.step("deploy", StepStatus.FAILED, message)
            lines = [line for line in result.last_lines if line.strip()]
            if lines:
                message += ":\n" + "\n".join(f"  {line}" for line in lines)
            else:
                message += " (no output)"
            raise DeployError(message)
        await reporter.step(
            "deploy", StepStatus.OK, f"done in {format_seconds(round(result.elapsed, 1))}"
        )

    async def close(self) -> None:
        return None
