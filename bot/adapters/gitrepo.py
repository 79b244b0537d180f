"""A bare mirror of the release branch, read with git itself.

Every git call goes through `_exec`: argv only (never a shell), GIT_TERMINAL_PROMPT=0 so
a missing credential fails instead of waiting for a human, and a timeout that kills
git together with the helpers it started (ssh, remote-https, upload-pack).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bot.domain.commits import LOG_FORMAT, LogRecord, co_authors, parse_log_records
from bot.domain.models import Author, Commit

_SHA = re.compile(r"^[0-9a-f]{7,40}$")
# A conservative subset of `git check-ref-format --branch`: ASCII letters, digits and
# ._/+- only (so no blanks, control characters, ~^:?*[\ or @{), no leading dash, no
# "..", "//", component starting with "." or ending in ".lock", no trailing "/" or ".".
_BRANCH = re.compile(r"^(?!-)(?!.*\.\.)(?!.*//)[A-Za-z0-9._/+-]+$")
# What resolve() accepts: a sha or branch-like name, optionally followed by
# ~N / ^N steps ("main~2", "abc1234^").
_REV = re.compile(r"^(?P<name>[^~^]+)(?P<steps>(?:[~^][0-9]{0,4})*)$")
# Branch commits examined per merge commit; a merge bringing in more is an import,
# not a pull request, and the newest authors are the relevant ones.
_MERGED_COMMITS_LIMIT = 1000
# Environment variables that would point git at some other repository.
_REPO_ENV = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NAMESPACE",
    "GIT_COMMON_DIR",
)


def is_sha(value: str) -> bool:
    return bool(_SHA.match(value))


def is_branch_name(name: str) -> bool:
    if not _BRANCH.match(name) or name == "HEAD":
        return False
    if name.endswith(("/", ".")):
        return False
    return all(
        part and not part.startswith(".") and not part.endswith(".lock") for part in name.split("/")
    )


def _redact(url: str) -> str:
    """The URL without any password or token in it (safe for logs and errors)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.scheme or "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


def _normalise_url(url: str) -> str:
    if "://" in url or re.match(r"^[^/]+:", url):
        return url  # a URL or scp-like user@host:path
    # A local path: git would resolve a relative one against its working directory.
    return str(Path(url).expanduser().absolute())


class GitError(Exception):
    """A git command failed or timed out."""

    def __init__(
        self,
        command: Sequence[str],
        stderr: str = "",
        *,
        returncode: int | None = None,
        message: str | None = None,
    ) -> None:
        self.command = tuple(command)
        self.stderr = stderr
        self.returncode = returncode
        self.message = message or self._describe()
        super().__init__(self.message)

    def _describe(self) -> str:
        verb = _subcommand(self.command)
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        # git's first "fatal:"/"error:" line names the cause; the rest is advice.
        reason = next(
            (line for line in lines if line.startswith(("fatal:", "error:"))),
            lines[-1] if lines else "",
        )
        code = f" (exit {self.returncode})" if self.returncode is not None else ""
        return f"git {verb} failed{code}: {reason}" if reason else f"git {verb} failed{code}"


def _subcommand(argv: Sequence[str]) -> str:
    args = list(argv[1:])
    while args and args[0].startswith("-"):
        args = args[2:] if args[0] in ("-c", "-C") else args[1:]
    return args[0] if args else "command"


def _remove_broken_mirror(path: Path) -> str | None:
    """Delete what is at `path` so a mirror can go there; a reason if that is unsafe."""
    if not os.path.lexists(path):
        return None
    if path.is_symlink() or not path.is_dir():
        return f"mirror path {path} exists and is not a directory; refusing to replace it"
    if os.path.lexists(path / ".git"):
        # Someone's working copy, not a mirror that was half made: never delete that.
        return f"mirror path {path} holds a git working tree; refusing to replace it"
    shutil.rmtree(path)
    return None


class GitMirror:
    """A bare mirror of one branch of one repository in `mirror_dir`."""

    def __init__(self, url: str, branch: str, mirror_dir: Path, *, timeout: float = 120.0) -> None:
        if not url or url.startswith("-"):
            raise ValueError(f"not a git URL or path: {url!r}")
        if not is_branch_name(branch):
            raise ValueError(f"not a valid branch name: {branch!r}")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.url = _normalise_url(url)
        self.branch = branch
        self.mirror_dir = Path(mirror_dir).absolute()
        self.timeout = timeout
        self._ref = f"refs/heads/{branch}"
        self._lock = asyncio.Lock()
        self._configured = False

    def __repr__(self) -> str:
        return f"GitMirror({_redact(self.url)!r}, {self.branch!r}, {str(self.mirror_dir)!r})"

    # -- fetching -----------------------------------------------------------------

    async def fetch(self) -> str:
        """Bring the branch up to date from the remote and return its head sha.

        A force-push is not an error: the new head is returned, and the old commits
        stay in the mirror (reflog on, gc off) so callers can still read them.
        """
        async with self._lock:
            if not await self._is_mirror(self.mirror_dir):
                await self._create()  # fetches into the new mirror before moving it in
                self._configured = True
            else:
                if not self._configured:
                    # The URL or branch may have changed in config since the mirror was made.
                    await self._configure(self.mirror_dir)
                    self._configured = True
                await self._fetch_into(self.mirror_dir)
            return await self.head()

    async def _is_mirror(self, path: Path) -> bool:
        if not await asyncio.to_thread(path.is_dir):
            return False
        code, out, _ = await self._exec(
            self._argv("rev-parse", "--is-bare-repository", git_dir=path)
        )
        return code == 0 and out.strip() == "true"

    async def _create(self) -> None:
        """Build the mirror in a sibling temp dir and move it into place when complete.

        That way a crash never leaves a half-built mirror at mirror_dir; one left by
        something else (an interrupted clone, a full disk) is removed first.
        """
        problem = await asyncio.to_thread(_remove_broken_mirror, self.mirror_dir)
        if problem:
            raise GitError(("git", "init"), message=problem)
        parent = self.mirror_dir.parent
        await asyncio.to_thread(parent.mkdir, parents=True, exist_ok=True)
        tmp = Path(
            await asyncio.to_thread(
                tempfile.mkdtemp, prefix=f".{self.mirror_dir.name}.", suffix=".tmp", dir=parent
            )
        )
        try:
            await self._run(("git", "init", "--bare", "--quiet", str(tmp)))
            await self._configure(tmp)
            await self._fetch_into(tmp)
            try:
                await asyncio.to_thread(os.replace, tmp, self.mirror_dir)
            except OSError as exc:
                raise GitError(
                    ("git", "init"), message=f"cannot move the new mirror into place: {exc}"
                ) from exc
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, tmp, True)
            raise

    async def _configure(self, git_dir: Path) -> None:
        settings = (
            ("remote.origin.url", self.url),
            # Commits a force-push dropped may still be live somewhere (or be the
            # rollback target): keep them reachable through the reflog, never let a
            # fetch start gc, and make even a manual gc keep them.
            ("core.logAllRefUpdates", "always"),
            ("gc.auto", "0"),
            ("gc.reflogExpire", "never"),
            ("gc.reflogExpireUnreachable", "never"),
            ("gc.pruneExpire", "never"),
        )
        for key, value in settings:
            await self._git_in(git_dir, "config", key, value)
        # HEAD names the branch so that HEAD:.mailmap (used by %aN/%aE) is the branch's.
        await self._git_in(git_dir, "symbolic-ref", "HEAD", self._ref)

    async def _fetch_into(self, git_dir: Path) -> None:
        await self._git_in(
            git_dir,
            "fetch",
            "--no-tags",
            "--prune",
            "--no-recurse-submodules",
            "--quiet",
            "origin",
            f"+{self._ref}:{self._ref}",
        )

    # -- reading ------------------------------------------------------------------

    async def head(self) -> str:
        """The branch head sha in the mirror, without fetching."""
        sha = await self._head_or_none()
        if sha is None:
            raise GitError(
                ("git", "rev-parse", self._ref),
                message=f"no {self.branch!r} in mirror {self.mirror_dir}; call fetch() first",
            )
        return sha

    async def _head_or_none(self) -> str | None:
        return await self._rev_parse(f"{self._ref}^{{commit}}")

    async def resolve(self, rev: str) -> str | None:
        """The full sha of a sha, the branch name or either with ~N/^N, else None."""
        match = _REV.match(rev)
        if not match:
            return None
        name = match.group("name")
        if not (is_sha(name) or is_branch_name(name)):
            return None
        return await self._rev_parse(f"{rev}^{{commit}}")

    async def has_commit(self, sha: str) -> bool:
        if not is_sha(sha):
            return False
        return await self._rev_parse(f"{sha}^{{commit}}") is not None

    async def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """Whether `ancestor` is in the history of `descendant`; False if either is missing."""
        if not (await self.has_commit(ancestor) and await self.has_commit(descendant)):
            return False
        code, _, stderr = await self._exec(
            self._argv("merge-base", "--is-ancestor", ancestor, descendant)
        )
        if code in (0, 1):
            return code == 0
        raise GitError(
            self._argv("merge-base", "--is-ancestor", ancestor, descendant), stderr, returncode=code
        )

    async def commits_between(
        self, base: str | None, head: str, *, limit: int = 200
    ) -> list[Commit]:
        """First-parent commits in head but not in base, oldest first, the newest `limit`."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        for sha in (head,) if base is None else (head, base):
            if not is_sha(sha):
                raise ValueError(f"not a commit sha: {sha!r}")
        revs = [head] if base is None else [head, f"^{base}"]
        output = await self._git_in(
            self.mirror_dir, *_log_args(), "--first-parent", f"--max-count={limit}", *revs, "--"
        )
        records = parse_log_records(output)
        records.reverse()
        return [await self._commit(record) for record in records]

    async def _commit(self, record: LogRecord) -> Commit:
        commit = record.to_commit()
        if not record.is_merge:
            return commit
        return dataclasses.replace(commit, merged_authors=await self._merged_authors(record))

    async def _merged_authors(self, merge: LogRecord) -> tuple[Author, ...]:
        """Authors and co-authors of what the merge brought in (sha^1..sha^2), merger excluded."""
        first, *others = merge.parents
        output = await self._git_in(
            self.mirror_dir,
            *_log_args(),
            "--no-merges",
            f"--max-count={_MERGED_COMMITS_LIMIT}",
            *others,
            f"^{first}",
            "--",
        )
        merger = merge.author.email.lower()
        seen: dict[str, Author] = {}
        # git lists newest first; the merged branch's people read best oldest first.
        for record in reversed(parse_log_records(output)):
            for person in (record.author, *co_authors(record.body)):
                if person.email.lower() != merger:
                    seen.setdefault(person.email.lower(), person)
        return tuple(seen.values())

    # -- running git --------------------------------------------------------------

    async def _rev_parse(self, rev: str) -> str | None:
        code, out, _ = await self._exec(
            self._argv("rev-parse", "--verify", "--quiet", "--end-of-options", rev)
        )
        sha = out.strip()
        return sha if code == 0 and is_sha(sha) else None

    def _argv(self, *args: str, git_dir: Path | None = None) -> tuple[str, ...]:
        return ("git", "--no-pager", f"--git-dir={git_dir or self.mirror_dir}", *args)

    async def _git_in(self, git_dir: Path, *args: str) -> str:
        return await self._run(self._argv(*args, git_dir=git_dir))

    async def _run(self, argv: Sequence[str]) -> str:
        """stdout of a git command that must succeed."""
        code, out, err = await self._exec(argv)
        if code != 0:
            raise GitError(self._redacted(argv), self._redact_text(err), returncode=code)
        return out

    async def _exec(self, argv: Sequence[str]) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_git_env(os.environ),
            # Own process group, so a timeout can kill ssh/upload-pack children too.
            start_new_session=True,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), self.timeout)
        except TimeoutError:
            await _kill(process)
            verb = _subcommand(argv)
            raise GitError(
                self._redacted(argv), message=f"git {verb} timed out after {self.timeout:g}s"
            ) from None
        except BaseException:
            # Cancelled: git must not outlive the caller.
            await _kill(process)
            raise
        assert process.returncode is not None
        return (
            process.returncode,
            out.decode("utf-8", errors="replace"),
            err.decode("utf-8", errors="replace"),
        )

    def _redacted(self, argv: Sequence[str]) -> tuple[str, ...]:
        return tuple(self._redact_text(arg) for arg in argv)

    def _redact_text(self, text: str) -> str:
        safe = _redact(self.url)
        return text if safe == self.url else text.replace(self.url, safe)


def _log_args() -> tuple[str, ...]:
    # User config must not change the output parse_log reads (signatures, colour).
    return ("log", "--no-show-signature", "--no-color", "--no-decorate", f"--format={LOG_FORMAT}")


def _git_env(base: Mapping[str, str]) -> dict[str, str]:
    env = {key: value for key, value in base.items() if key not in _REPO_ENV}
    # No prompts for credentials; ssh cannot prompt either, as git runs without a
    # controlling terminal (start_new_session) and with stdin from /dev/null.
    env["GIT_TERMINAL_PROMPT"] = "0"
    # English messages, so GitError texts read the same everywhere.
    env["LC_ALL"] = "C"
    return env


async def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    # Drain the pipes so their transports close instead of leaking.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(process.communicate(), 5)
