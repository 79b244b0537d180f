"""GitMirror against real git repositories built in tmp_path."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bot.adapters.gitrepo import GitError, GitMirror, is_branch_name
from bot.domain.models import Author

ALICE = Author("Alice Anders", "alice@example.com")
BOB = Author("Bob Builder", "bob+shop@example.com")
CAROL = Author("Carol Ćwik", "carol@example.com")
DAVE = Author("Dave Dev", "dave@example.com")
ERIN = Author("Erin Ünal", "erin@example.com")
ZOE = Author("Zoë Zed", "zoe@example.com")


@pytest.fixture(autouse=True)
def isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the machine's git configuration irrelevant to these tests."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_AUTHOR_NAME", "EMAIL"):
        monkeypatch.delenv(name, raising=False)


@dataclass
class Repo:
    """A source repository that commits with explicit identities and increasing dates."""

    path: Path
    clock: int = 1_700_000_000
    heads: dict[str, str] = field(default_factory=dict)

    def git(self, *args: str, author: Author = ALICE, committer: Author | None = None) -> str:
        self.clock += 60
        committer = committer or author
        date = f"@{self.clock} +0000"
        env = {
            **os.environ,
            "GIT_AUTHOR_NAME": author.name,
            "GIT_AUTHOR_EMAIL": author.email,
            "GIT_AUTHOR_DATE": date,
            "GIT_COMMITTER_NAME": committer.name,
            "GIT_COMMITTER_EMAIL": committer.email,
            "GIT_COMMITTER_DATE": date,
        }
        result = subprocess.run(
            ["git", "-C", str(self.path), *args],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        return result.stdout.strip()

    def commit(self, message: str, author: Author = ALICE) -> str:
        self.git(
            "commit", "--quiet", "--allow-empty", "--cleanup=verbatim", "-m", message, author=author
        )
        return self.git("rev-parse", "HEAD")


def set_config(git_dir: Path, key: str, value: str) -> None:
    subprocess.run(["git", f"--git-dir={git_dir}", "config", key, value], check=True)


@dataclass
class History:
    repo: Repo
    initial: str
    cart: str
    checkout: str
    readme: str
    merge: str


def build_history(path: Path) -> History:
    path.mkdir()
    repo = Repo(path)
    repo.git("init", "--quiet", "-b", "main")
    initial = repo.commit("Initial commit", ALICE)
    cart = repo.commit("Add cart (#123)\n\nA body that mentions (#5).", BOB)
    checkout = repo.commit(
        "Fix checkout\n\nCo-authored-by: Dave in prose <not@trailer.example>\n"
        "is not a trailer because prose follows.\n\n"
        "Co-authored-by: Zoë Zed <zoe@example.com>\n",
        CAROL,
    )
    repo.git("checkout", "--quiet", "-b", "feature")
    repo.commit("Add wishlist model", DAVE)
    repo.commit("Add wishlist UI\n\nCo-authored-by: Erin Ünal <erin@example.com>", DAVE)
    repo.commit("Wishlist review fixes", BOB)  # by the merger: not in merged_authors
    repo.git("checkout", "--quiet", "main")
    readme = repo.commit("Tweak README", ALICE)
    repo.git(
        "merge",
        "--quiet",
        "--no-ff",
        "feature",
        "-m",
        "Merge pull request #7 from acme/feature",
        "-m",
        "Add wishlist",
        author=BOB,
    )
    merge = repo.git("rev-parse", "HEAD")
    return History(repo, initial, cart, checkout, readme, merge)


@pytest.fixture
def history(tmp_path: Path) -> History:
    return build_history(tmp_path / "source")


@pytest.fixture
def mirror(tmp_path: Path, history: History) -> Iterator[GitMirror]:
    yield GitMirror(str(history.repo.path), "main", tmp_path / "mirror" / "shop.git", timeout=30)


async def test_fetch_returns_the_branch_head(mirror: GitMirror, history: History) -> None:
    assert await mirror.fetch() == history.merge
    assert await mirror.head() == history.merge
    # a second fetch with nothing new is fine
    assert await mirror.fetch() == history.merge


async def test_commits_between_none_lists_first_parent_history_oldest_first(
    mirror: GitMirror, history: History
) -> None:
    head = await mirror.fetch()
    commits = await mirror.commits_between(None, head)

    assert [c.sha for c in commits] == [
        history.initial,
        history.cart,
        history.checkout,
        history.readme,
        history.merge,
    ]
    assert [c.title for c in commits] == [
        "Initial commit",
        "Add cart (#123)",
        "Fix checkout",
        "Tweak README",
        "Add wishlist",
    ]
    assert [c.author for c in commits] == [ALICE, BOB, CAROL, ALICE, BOB]
    assert [c.pr for c in commits] == [None, 123, None, None, 7]
    assert commits[2].co_authors == (ZOE,)
    assert all(c.co_authors == () for i, c in enumerate(commits) if i != 2)
    assert [c.merged_authors for c in commits] == [(), (), (), (), (DAVE, ERIN)]
    assert commits[4].involved() == (BOB, DAVE, ERIN)


async def test_commits_between_base_lists_only_new_commits(
    mirror: GitMirror, history: History
) -> None:
    head = await mirror.fetch()
    commits = await mirror.commits_between(history.cart, head)
    assert [c.sha for c in commits] == [history.checkout, history.readme, history.merge]
    # abbreviated shas are accepted too
    short = await mirror.commits_between(history.cart[:7], head[:12])
    assert short == commits
    assert await mirror.commits_between(head, head) == []


async def test_limit_keeps_the_newest(mirror: GitMirror, history: History) -> None:
    head = await mirror.fetch()
    commits = await mirror.commits_between(None, head, limit=2)
    assert [c.sha for c in commits] == [history.readme, history.merge]
    commits = await mirror.commits_between(history.initial, head, limit=3)
    assert [c.sha for c in commits] == [history.checkout, history.readme, history.merge]
    with pytest.raises(ValueError):
        await mirror.commits_between(None, head, limit=0)


async def test_second_fetch_brings_new_commits(mirror: GitMirror, history: History) -> None:
    first = await mirror.fetch()
    later = history.repo.commit("Add search (#130)", CAROL)
    assert await mirror.head() == first  # head() does not fetch
    assert await mirror.fetch() == later
    assert await mirror.head() == later
    commits = await mirror.commits_between(first, later)
    assert [(c.sha, c.title, c.pr, c.author) for c in commits] == [
        (later, "Add search (#130)", 130, CAROL)
    ]
    assert await mirror.is_ancestor(first, later)
    assert not await mirror.is_ancestor(later, first)


async def test_force_push_is_not_an_error(mirror: GitMirror, history: History) -> None:
    old_head = await mirror.fetch()
    history.repo.git("reset", "--quiet", "--hard", history.checkout)
    hotfix = history.repo.commit("Hotfix (#140)", CAROL)
    # make the old commits unreachable in the source too
    history.repo.git("branch", "--quiet", "-D", "feature")

    new_head = await mirror.fetch()
    assert new_head == hotfix
    assert not await mirror.is_ancestor(old_head, new_head)
    assert await mirror.is_ancestor(history.checkout, new_head)
    # the force-pushed-away commit is still readable in the mirror
    assert await mirror.has_commit(old_head)
    assert [c.sha for c in await mirror.commits_between(old_head, new_head)] == [hotfix]
    gone = await mirror.commits_between(new_head, old_head)
    assert [c.sha for c in gone] == [history.readme, history.merge]
    assert gone[-1].merged_authors == (DAVE, ERIN)


async def test_reads(mirror: GitMirror, history: History) -> None:
    head = await mirror.fetch()
    assert await mirror.has_commit(history.cart)
    assert await mirror.has_commit(history.cart[:7])
    assert not await mirror.has_commit("0" * 40)
    assert not await mirror.has_commit("not-a-sha")
    assert not await mirror.has_commit("HEAD")
    assert await mirror.resolve("main") == head
    assert await mirror.resolve("main~1") == history.readme
    assert await mirror.resolve(history.cart[:8]) == history.cart
    assert await mirror.resolve(f"{history.merge[:10]}^2") is not None
    assert await mirror.resolve("nope") is None
    assert await mirror.resolve("0" * 40) is None
    assert await mirror.resolve("--upload-pack=touch /tmp/x") is None
    assert await mirror.resolve("main..feature") is None
    assert await mirror.resolve("") is None
    assert await mirror.is_ancestor(history.initial, head)
    assert not await mirror.is_ancestor("0" * 40, head)
    assert not await mirror.is_ancestor(head, "f" * 40)
    assert not await mirror.is_ancestor("x", head)
    with pytest.raises(ValueError):
        await mirror.commits_between("--all", head)
    with pytest.raises(ValueError):
        await mirror.commits_between(None, "main")


async def test_concurrent_fetches_share_one_mirror(mirror: GitMirror, history: History) -> None:
    heads = await asyncio.gather(*(mirror.fetch() for _ in range(5)))
    assert heads == [history.merge] * 5


async def test_a_missing_repository_is_a_clear_git_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-repo"
    mirror_dir = tmp_path / "mirrors" / "shop.git"
    mirror = GitMirror(str(missing), "main", mirror_dir, timeout=30)
    with pytest.raises(GitError) as caught:
        await mirror.fetch()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("git fetch failed")
    assert str(missing) in message
    assert caught.value.command[0] == "git"
    assert "fatal:" in caught.value.stderr
    # nothing half-made is left behind
    assert not mirror_dir.exists()
    assert list(mirror_dir.parent.iterdir()) == []
    with pytest.raises(GitError, match="call fetch"):
        await mirror.head()


async def test_a_missing_branch_is_a_git_error(tmp_path: Path, history: History) -> None:
    mirror = GitMirror(str(history.repo.path), "release/v2", tmp_path / "m.git", timeout=30)
    with pytest.raises(GitError, match="release/v2"):
        await mirror.fetch()


async def test_credentials_in_the_url_stay_out_of_errors(tmp_path: Path) -> None:
    # port 1 on localhost refuses at once
    url = "http://deploy:s3cret-token@127.0.0.1:1/acme/shop.git"
    mirror = GitMirror(url, "main", tmp_path / "m.git", timeout=30)
    with pytest.raises(GitError) as caught:
        await mirror.fetch()
    assert "s3cret-token" not in str(caught.value)
    assert "s3cret-token" not in " ".join(caught.value.command)
    assert "s3cret-token" not in repr(mirror)


@pytest.mark.parametrize("leftover", ["empty", "garbage", "half-init"])
async def test_a_half_created_mirror_dir_is_recreated(
    tmp_path: Path, history: History, leftover: str
) -> None:
    mirror_dir = tmp_path / "shop.git"
    mirror_dir.mkdir()
    if leftover == "garbage":
        (mirror_dir / "HEAD").write_text("garbage\n")
        (mirror_dir / "junk.bin").write_bytes(b"\x00\xff")
    elif leftover == "half-init":
        (mirror_dir / "objects").mkdir()
        (mirror_dir / "config").write_text("[core\n")
    mirror = GitMirror(str(history.repo.path), "main", mirror_dir, timeout=30)
    assert await mirror.fetch() == history.merge
    assert not (mirror_dir / "junk.bin").exists()
    assert len(await mirror.commits_between(None, history.merge)) == 5


async def test_an_existing_mirror_is_reused_by_a_new_instance(
    tmp_path: Path, history: History
) -> None:
    mirror_dir = tmp_path / "shop.git"
    first = GitMirror(str(history.repo.path), "main", mirror_dir, timeout=30)
    old = await first.fetch()
    new = history.repo.commit("More", ALICE)
    second = GitMirror(str(history.repo.path), "main", mirror_dir, timeout=30)
    assert await second.head() == old
    assert await second.fetch() == new


async def test_a_working_tree_is_never_deleted(tmp_path: Path, history: History) -> None:
    mirror = GitMirror(str(history.repo.path), "main", history.repo.path, timeout=30)
    with pytest.raises(GitError, match="working tree"):
        await mirror.fetch()
    assert (history.repo.path / ".git").is_dir()


async def test_a_hanging_fetch_times_out(tmp_path: Path, history: History) -> None:
    mirror_dir = tmp_path / "shop.git"
    mirror = GitMirror(str(history.repo.path), "main", mirror_dir, timeout=0.5)
    await mirror.fetch()
    # a remote that never answers: the local transport runs this instead of upload-pack
    set_config(mirror_dir, "remote.origin.uploadpack", "sleep 60;")
    with pytest.raises(GitError, match=r"^git fetch timed out after 0\.5s$"):
        await mirror.fetch()
    # the mirror is still usable afterwards
    assert await mirror.head() == history.merge


async def test_a_cancelled_fetch_kills_git(tmp_path: Path, history: History) -> None:
    mirror_dir = tmp_path / "shop.git"
    mirror = GitMirror(str(history.repo.path), "main", mirror_dir, timeout=60)
    await mirror.fetch()
    set_config(mirror_dir, "remote.origin.uploadpack", "sleep 60;")
    # the caller gives up long before the mirror's own timeout
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(mirror.fetch(), 0.3)
    # the lock was released and nothing is left holding the mirror
    set_config(mirror_dir, "remote.origin.uploadpack", "git-upload-pack")
    assert await mirror.fetch() == history.merge


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("main", True),
        ("release/v1.2", True),
        ("feature/JIRA-12_x+y", True),
        ("-main", False),
        ("a..b", False),
        ("a b", False),
        ("a~1", False),
        ("a^", False),
        ("a:b", False),
        ("a@{1}", False),
        ("a//b", False),
        ("a/", False),
        ("a.", False),
        (".hidden", False),
        ("a/.b", False),
        ("x.lock", False),
        ("HEAD", False),
        ("", False),
        ("a\\b", False),
        ("a*", False),
        ("ünï", False),
    ],
)
def test_branch_names(name: str, ok: bool) -> None:
    assert is_branch_name(name) is ok


@pytest.mark.parametrize("branch", ["-main", "a..b", "main;rm -rf /", "$(x)"])
def test_bad_branch_or_url_is_rejected_up_front(tmp_path: Path, branch: str) -> None:
    with pytest.raises(ValueError):
        GitMirror("/srv/shop", branch, tmp_path / "m.git")
    with pytest.raises(ValueError):
        GitMirror("--upload-pack=evil", "main", tmp_path / "m.git")
