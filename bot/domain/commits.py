"""Turning git's view of history into `Commit`s: pull request numbers, human titles,
co-author trailers and the parser for the log format `bot.adapters.gitrepo` asks git for.

Pure: no subprocess, no I/O. `bot.adapters.gitrepo` runs git with `LOG_FORMAT` and hands the
decoded output to `parse_log` / `parse_log_records`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.domain.models import Author, Commit

#: The git log format parse_log understands. Every field ends in NUL, which git
#: refuses to put in a commit message, so titles and bodies may contain anything
#: else. The leading RS marks the start of a record as a sanity check.
LOG_FORMAT = "%x1e%H%x00%P%x00%aN%x00%aE%x00%B%x00"
_FIELDS = 5
_RECORD_START = "\x1e"

# "(#123)" as the very last thing in a squash title; GitHub appends it there.
_SQUASH_PR = re.compile(r"\(#([1-9][0-9]*)\)\s*$")
_GITHUB_MERGE = re.compile(r"^Merge pull request #([1-9][0-9]*) from \S")
_BITBUCKET_MERGE = re.compile(r"\(pull request #([1-9][0-9]*)\)\s*$")
_GITLAB_MERGE = re.compile(r"^See merge request \S+!([1-9][0-9]*)\s*$", re.MULTILINE)

# git's trailer token: letters, digits and dashes; blanks may precede the colon.
_TRAILER = re.compile(r"^([A-Za-z0-9][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)$")
# git counts a paragraph with these as a trailer block even when some lines are
# not trailers (as long as a quarter of them are), see git-interpret-trailers(1).
_GIT_GENERATED_PREFIXES = ("signed-off-by:", "(cherry picked from commit ")
_IDENT = re.compile(r"^(?P<name>[^<>]*?)[ \t]*<[ \t]*(?P<email>[^<>\s@]+@[^<>\s@]+)[ \t]*>$")


# git's notion of blanks; str.strip() would also eat \x1c-\x1f, which titles may hold.
_BLANKS = " \t\v\f"


def _lines(text: str) -> list[str]:
    # Messages written on Windows keep their CRs through git; treat them as newlines.
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def parse_pr_number(title: str, body: str) -> int | None:
    """The pull/merge request a commit came from, or None.

    Recognises GitHub merge commits and squash titles, Bitbucket merge titles and
    GitLab's "See merge request group/project!45" body line.
    """
    title = title.strip(_BLANKS)
    for pattern in (_GITHUB_MERGE, _SQUASH_PR, _BITBUCKET_MERGE):
        match = pattern.search(title)
        if match:
            return int(match.group(1))
    match = _GITLAB_MERGE.search("\n".join(_lines(body)))
    return int(match.group(1)) if match else None


def merge_title(title: str, body: str) -> str:
    """What a person would call this commit.

    GitHub merge commits say "Merge pull request #7 from acme/feature" and keep the
    pull request's title as the first body line; that line is the useful one.
    """
    if not _GITHUB_MERGE.search(title.strip(_BLANKS)):
        return title
    lines = _lines(body)
    trailer_start = _trailer_block(lines)
    if trailer_start is not None:
        lines = lines[:trailer_start]
    for line in lines:
        if line.strip(_BLANKS):
            return line.strip(_BLANKS)
    return title


def _paragraphs(lines: list[str]) -> list[tuple[int, int]]:
    """(start, end) line ranges of the blank-line separated paragraphs."""
    spans: list[tuple[int, int]] = []
    start: int | None = None
    for index, line in enumerate(lines):
        if line.strip(_BLANKS):
            if start is None:
                start = index
        elif start is not None:
            spans.append((start, index))
            start = None
    if start is not None:
        spans.append((start, len(lines)))
    return spans


def _trailer_block(lines: list[str]) -> int | None:
    """Index of the first line of the trailer paragraph, or None if there is none.

    Like git, only the last paragraph can hold trailers, and it counts only if all
    of its lines are trailers (or continuation lines), or it has a git-generated
    trailer and at least 25% trailers.
    """
    spans = _paragraphs(lines)
    if not spans:
        return None
    start, end = spans[-1]
    trailers = others = 0
    generated = False
    for line in lines[start:end]:
        if line[:1] in (" ", "\t") and trailers + others > 0:
            continue  # continuation of the line above
        if _TRAILER.match(line):
            trailers += 1
            generated = generated or line.lower().startswith(_GIT_GENERATED_PREFIXES[0])
        else:
            others += 1
            generated = generated or line.startswith(_GIT_GENERATED_PREFIXES[1])
    if trailers and (others == 0 or (generated and trailers * 4 >= trailers + others)):
        return start
    return None


def parse_trailers(body: str) -> list[tuple[str, str]]:
    """The (key, value) trailers of a commit body (the message without its title).

    Continuation lines are folded into the value with a single space; lines of the
    trailer paragraph that are not trailers are skipped.
    """
    lines = _lines(body)
    start = _trailer_block(lines)
    if start is None:
        return []
    end = _paragraphs(lines)[-1][1]
    result: list[tuple[str, str]] = []
    for line in lines[start:end]:
        if line[:1] in (" ", "\t"):
            if result:
                key, value = result[-1]
                result[-1] = (key, f"{value} {line.strip(_BLANKS)}".strip(_BLANKS))
            continue
        match = _TRAILER.match(line)
        if match:
            result.append((match.group(1), match.group(2).strip(_BLANKS)))
        elif result:
            # A non-trailer line ends any continuation of the trailer above it.
            result.append(("", ""))
    return [(key, value) for key, value in result if key]


def parse_author(value: str) -> Author | None:
    """`Name <email>` as an Author, or None when it is not one."""
    match = _IDENT.match(value.strip(_BLANKS))
    if not match:
        return None
    name = " ".join(match.group("name").split())
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = name[1:-1].strip(_BLANKS)
    if not name:
        return None
    return Author(name=name, email=match.group("email"))


def co_authors(body: str) -> tuple[Author, ...]:
    """The well-formed `Co-authored-by:` trailers, first occurrence per e-mail."""
    seen: dict[str, Author] = {}
    for key, value in parse_trailers(body):
        if key.lower() != "co-authored-by":
            continue
        author = parse_author(value)
        if author is not None:
            seen.setdefault(author.email.lower(), author)
    return tuple(seen.values())


def split_message(message: str) -> tuple[str, str]:
    """(title, body) of a raw commit message, as git's %s and %b would give them."""
    lines = _lines(message)
    spans = _paragraphs(lines)
    if not spans:
        return "", ""
    start, end = spans[0]
    title = " ".join(line.strip(_BLANKS) for line in lines[start:end])
    body = "\n".join(lines[end:]).strip("\n")
    return title, body


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One commit as git log printed it, before it becomes a `Commit`."""

    sha: str
    parents: tuple[str, ...]
    author: Author
    title: str
    body: str

    @property
    def is_merge(self) -> bool:
        return len(self.parents) >= 2

    def to_commit(self) -> Commit:
        """The commit without merged_authors (finding those needs more git calls)."""
        title = merge_title(self.title, self.body) if self.is_merge else self.title
        return Commit(
            sha=self.sha,
            title=title,
            author=self.author,
            co_authors=co_authors(self.body),
            pr=parse_pr_number(self.title, self.body),
        )


def parse_log_records(output: str) -> list[LogRecord]:
    """Parse `git log --format=LOG_FORMAT` output, in the order git printed it."""
    fields = output.split("\x00")
    # Whatever follows the last NUL is the newline git puts after each record.
    if fields[-1].strip():
        raise ValueError("git log output does not end with a complete record")
    fields.pop()
    if len(fields) % _FIELDS:
        raise ValueError(f"git log output has {len(fields)} fields, not a multiple of {_FIELDS}")
    records: list[LogRecord] = []
    for offset in range(0, len(fields), _FIELDS):
        head, parents, name, email, message = fields[offset : offset + _FIELDS]
        head = head.lstrip("\r\n")
        if not head.startswith(_RECORD_START):
            raise ValueError(f"git log record {offset // _FIELDS} does not start with RS")
        title, body = split_message(message)
        records.append(
            LogRecord(
                sha=head[len(_RECORD_START) :],
                parents=tuple(parents.split()),
                author=Author(name=name, email=email),
                title=title,
                body=body,
            )
        )
    return records


def parse_log(output: str) -> list[Commit]:
    """Commits from `git log --format=LOG_FORMAT` output, in the order git printed them."""
    return [record.to_commit() for record in parse_log_records(output)]


def pr_link(pr_url_template: str | None, number: int) -> str | None:
    """The pull request URL from a template such as "https://github.com/acme/shop/pull/{number}".

    None without a template, or when the template has no {number} to fill in.
    """
    if not pr_url_template or "{number}" not in pr_url_template:
        return None
    return pr_url_template.replace("{number}", str(number))
