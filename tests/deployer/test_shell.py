from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from bot.domain.models import StepStatus
from deployer.base import Backend, DeployError, DeployTarget
from deployer.shell import OutputLog, ShellBackend, ShellSpec
from deployer.testing import RecordingReporter
from tests.deployer.util import SHA, pid_gone, read_pid, wait_until, write_script

TARGET = DeployTarget(env="sandbox", sha=SHA)


def backend(spec: ShellSpec) -> ShellBackend:
    # small timings keep the tests fast; the defaults are for Slack and real deploys
    return ShellBackend(spec, flush_every=0.05, kill_grace=0.2, drain=0.1)


def kill_if_running(pid: int | None) -> None:
    if pid is not None and not pid_gone(pid):
        os.kill(pid, signal.SIGKILL)


async def test_deploy_runs_argv_with_placeholders_env_and_cwd(tmp_path: Path) -> None:
    app = tmp_path / "app"
    write_script(
        app / "deploy.sh",
        'echo "args: $1 $2"\n'
        'echo "env: $SHIPMATE_SHA $SHIPMATE_ENV $SHIPMATE_SHORT_SHA $EXTRA"\n'
        'echo "pwd: $(pwd)"\n'
        'read line || echo "stdin: closed"\n'
        'echo "to stderr" >&2\n',
    )
    spec = ShellSpec(deploy=("./deploy.sh", "{sha}", "{env}"), cwd=app, env={"EXTRA": "x1"})
    reporter = RecordingReporter()
    shell: Backend = backend(spec)

    await shell.check_artifact(TARGET)
    await shell.deploy(TARGET, reporter)
    await shell.close()

    assert shell.kind == "shell"
    assert reporter.output_lines == [
        f"args: {SHA} sandbox",
        f"env: {SHA} sandbox {SHA[:7]} x1",
        f"pwd: {app}",
        "stdin: closed",
        "to stderr",
    ]
    assert reporter.statuses("deploy") == [StepStatus.RUNNING, StepStatus.OK]
    assert reporter.steps[0].detail == f"./deploy.sh {SHA} sandbox"


async def test_deploy_knows_its_release_and_fencing_token(tmp_path: Path) -> None:
    """A script that changes another system can fence it: a lower token means a stale deploy."""
    write_script(tmp_path / "deploy.sh", 'echo "$SHIPMATE_RELEASE fence=$SHIPMATE_FENCE"\n')
    reporter = RecordingReporter()
    target = DeployTarget(env="sandbox", sha=SHA, fence=42, release="sandbox-7")
    await backend(ShellSpec(deploy=("./deploy.sh",), cwd=tmp_path)).deploy(target, reporter)
    assert reporter.output_lines == ["sandbox-7 fence=42"]


@pytest.mark.parametrize(
    ("fence", "release"), [(-1, ""), (True, ""), (None, "sandbox-7; rm -rf /"), (None, "x")]
)
def test_fence_and_release_are_validated(fence: Any, release: str) -> None:
    with pytest.raises(ValueError):
        DeployTarget(env="sandbox", sha=SHA, fence=fence, release=release)


async def test_command_on_path(tmp_path: Path) -> None:
    reporter = RecordingReporter()
    await backend(ShellSpec(deploy=("echo", "deploying", "{short_sha}"))).deploy(TARGET, reporter)
    assert reporter.output_lines == [f"deploying {SHA[:7]}"]


async def test_nonzero_exit_names_code_and_last_lines(tmp_path: Path) -> None:
    write_script(
        tmp_path / "deploy.sh", 'for i in 1 2 3 4 5 6 7 8; do echo "line $i"; done\nexit 3\n'
    )
    reporter = RecordingReporter()

    with pytest.raises(DeployError) as caught:
        await backend(ShellSpec(deploy=("./deploy.sh",), cwd=tmp_path)).deploy(TARGET, reporter)

    message = str(caught.value)
    assert message.startswith("./deploy.sh exited with code 3:\n")
    assert "line 8" in message and "line 4" in message and "line 3" not in message
    assert reporter.last("deploy") is not None
    assert reporter.statuses("deploy") == [StepStatus.RUNNING, StepStatus.FAILED]
    assert reporter.steps[-1].detail == "./deploy.sh exited with code 3"
    assert reporter.output_lines[-1] == "line 8"


async def test_nonzero_exit_without_output(tmp_path: Path) -> None:
    write_script(tmp_path / "deploy.sh", "exit 1\n")
    with pytest.raises(DeployError, match=r"exited with code 1 \(no output\)"):
        await backend(ShellSpec(deploy=("./deploy.sh",), cwd=tmp_path)).deploy(
            TARGET, RecordingReporter()
        )


async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    # The grandchild ignores SIGTERM, so only the group-wide SIGKILL after the grace ends it.
    write_script(
        tmp_path / "deploy.sh",
        "sh -c 'trap \"\" TERM; echo $$ > child.pid; exec sleep 60' &\necho started\nwait\n",
    )
    reporter = RecordingReporter()
    spec = ShellSpec(deploy=("./deploy.sh", "{sha}"), cwd=tmp_path, timeout=0.5)

    started = time.monotonic()
    with pytest.raises(DeployError) as caught:
        await backend(spec).deploy(TARGET, reporter)

    assert str(caught.value) == "deploy command timed out after 0.5s: ./deploy.sh"
    assert time.monotonic() - started < 5
    child = read_pid(tmp_path / "child.pid")
    assert child is not None
    try:
        await wait_until(lambda: pid_gone(child))
    finally:
        kill_if_running(child)
    assert reporter.steps[-1].status is StepStatus.FAILED
    assert reporter.steps[-1].detail == "timed out after 0.5s"
    assert "started" in reporter.output_lines


async def test_cancelling_a_deploy_kills_its_process_group(tmp_path: Path) -> None:
    write_script(tmp_path / "deploy.sh", "sleep 60 &\necho $! > child.pid\nwait\n")
    spec = ShellSpec(deploy=("./deploy.sh",), cwd=tmp_path)
    task = asyncio.create_task(backend(spec).deploy(TARGET, RecordingReporter()))
    await wait_until(lambda: read_pid(tmp_path / "child.pid") is not None)
    child = read_pid(tmp_path / "child.pid")
    assert child is not None

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    try:
        await wait_until(lambda: pid_gone(child))
    finally:
        kill_if_running(child)


async def test_background_child_holding_the_pipe_does_not_block(tmp_path: Path) -> None:
    # Like a deploy script that starts a service and forgets to redirect its output.
    write_script(tmp_path / "deploy.sh", "sleep 30 &\necho $! > bg.pid\necho deployed\n")
    reporter = RecordingReporter()
    started = time.monotonic()
    try:
        await backend(ShellSpec(deploy=("./deploy.sh",), cwd=tmp_path)).deploy(TARGET, reporter)
        assert time.monotonic() - started < 5
        assert reporter.statuses("deploy")[-1] is StepStatus.OK
        assert "deployed" in reporter.output_lines
        # a successful deploy leaves what it started running
        bg = read_pid(tmp_path / "bg.pid")
        assert bg is not None and not pid_gone(bg)
    finally:
        kill_if_running(read_pid(tmp_path / "bg.pid"))


@pytest.mark.parametrize(
    ("argv", "prepare", "expected"),
    [
        (("./missing.sh",), None, r"deploy command not found: \./missing\.sh \(no such file: "),
        (("./plain.sh",), "not-executable", r"deploy command is not executable: \./plain\.sh"),
        (("./noshebang.sh",), "no-shebang", r"cannot run deploy command \./noshebang\.sh: "),
        (("./dir",), "dir", r"deploy command is not executable: \./dir"),
        (("shipmate-no-such-command",), None, r"not found on PATH: shipmate-no-such-command"),
    ],
)
async def test_command_that_cannot_run(
    tmp_path: Path, argv: tuple[str, ...], prepare: str | None, expected: str
) -> None:
    if prepare == "not-executable":
        write_script(tmp_path / "plain.sh", "echo hi\n", executable=False)
    elif prepare == "no-shebang":
        (tmp_path / "noshebang.sh").write_text("echo hi\n")
        (tmp_path / "noshebang.sh").chmod(0o755)
    elif prepare == "dir":
        (tmp_path / "dir").mkdir()
    reporter = RecordingReporter()

    with pytest.raises(DeployError, match=expected):
        await backend(ShellSpec(deploy=argv, cwd=tmp_path)).deploy(TARGET, reporter)
    assert reporter.statuses("deploy") == [StepStatus.RUNNING, StepStatus.FAILED]


async def test_missing_cwd(tmp_path: Path) -> None:
    spec = ShellSpec(deploy=("./deploy.sh",), cwd=tmp_path / "nowhere")
    with pytest.raises(DeployError, match="working directory does not exist"):
        await backend(spec).deploy(TARGET, RecordingReporter())


async def test_output_is_streamed_while_the_command_runs(tmp_path: Path) -> None:
    write_script(
        tmp_path / "deploy.sh",
        "echo early\nwhile [ ! -f go ]; do sleep 0.01; done\necho late\n",
    )
    reporter = RecordingReporter()
    spec = ShellSpec(deploy=("./deploy.sh",), cwd=tmp_path, timeout=10)
    task = asyncio.create_task(backend(spec).deploy(TARGET, reporter))
    try:
        await wait_until(lambda: "early" in reporter.output_lines)
        assert "late" not in reporter.output_lines
    finally:
        (tmp_path / "go").touch()
    await task
    assert reporter.output_lines == ["early", "late"]


async def test_long_output_is_batched_and_capped(tmp_path: Path) -> None:
    write_script(tmp_path / "deploy.sh", "seq 1 5000\n")
    reporter = RecordingReporter()
    await backend(ShellSpec(deploy=("./deploy.sh",), cwd=tmp_path)).deploy(TARGET, reporter)

    lines = reporter.output_lines
    assert len(lines) <= 200
    assert lines[0] == "1" and lines[-1] == "5000"
    markers = [line for line in lines if line.endswith("lines cut")]
    assert len(markers) == 1
    cut = int(markers[0].split()[1])
    assert cut + len(lines) - 1 == 5000
    # batched: far fewer thread messages than lines
    assert len(reporter.details) <= 10


async def test_wide_output_is_capped_by_size(tmp_path: Path) -> None:
    write_script(tmp_path / "deploy.sh", "for i in $(seq 1 300); do printf '%0500d\\n' $i; done\n")
    reporter = RecordingReporter()
    await backend(ShellSpec(deploy=("./deploy.sh",), cwd=tmp_path)).deploy(TARGET, reporter)

    assert sum(len(text.encode()) for text in reporter.details) <= 16_384
    assert any(line.endswith("lines cut") for line in reporter.output_lines)
    assert reporter.output_lines[-1] == f"{300:0500d}"


async def test_failing_reporter_detail_does_not_break_the_deploy(tmp_path: Path) -> None:
    class Flaky(RecordingReporter):
        async def detail(self, text: str) -> None:
            raise RuntimeError("slack is down")

    reporter = Flaky()
    await backend(ShellSpec(deploy=("echo", "hi"))).deploy(TARGET, reporter)
    assert reporter.statuses("deploy") == [StepStatus.RUNNING, StepStatus.OK]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"deploy": ()},
        {"deploy": "./deploy.sh"},
        {"deploy": ("./deploy.sh", "{commit}")},
        {"deploy": ("./deploy.sh",), "timeout": 0},
    ],
)
def test_spec_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ShellSpec(**kwargs)  # type: ignore[arg-type]


def test_output_log_keeps_short_output_whole() -> None:
    output = OutputLog()
    for i in range(150):
        output.add(f"line {i}")
    assert output.take_pending() + output.finish() == [f"line {i}" for i in range(150)]


def test_output_log_cleans_lines() -> None:
    output = OutputLog(max_line_chars=10)
    output.add("progress 10%\rprogress 100%\r")
    output.add("x" * 50)
    assert output.finish() == ["progress 100%"[:9] + "…", "x" * 9 + "…"]


def test_output_log_marker_and_tail() -> None:
    output = OutputLog(max_lines=10, tail_lines=3)
    for i in range(100):
        output.add(str(i))
    shown = output.take_pending() + output.finish()
    assert len(shown) == 10
    assert shown[:6] == ["0", "1", "2", "3", "4", "5"]
    assert shown[6] == "… 91 lines cut"
    assert shown[7:] == ["97", "98", "99"]
