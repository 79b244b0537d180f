from __future__ import annotations

import pytest

from bot.domain.commits import (
    LOG_FORMAT,
    co_authors,
    merge_title,
    parse_author,
    parse_log,
    parse_log_records,
    parse_pr_number,
    parse_trailers,
    pr_link,
    split_message,
)
from bot.domain.models import Author, Commit

SHA_A = "a" * 40
SHA_B = "b" * 40
SHA_C = "c" * 40


@pytest.mark.parametrize(
    ("title", "body", "expected"),
    [
        ("Fix checkout (#123)", "", 123),
        ("Fix checkout (#123)  ", "", 123),
        ("Revert (#12) and (#34)", "", 34),
        ('Revert "Add cart (#123)" (#130)', "", 130),
        ('Revert "Add cart (#123)"', "", None),
        ("Fix (#12) in the middle of the title", "", None),
        ("Fix checkout #123", "", None),
        ("Fix checkout (#0)", "", None),
        ("Fix checkout (#abc)", "", None),
        ("Merge pull request #123 from acme/branch", "Add wishlist", 123),
        ("Merge pull request #7 from acme/feature", "Title with (#99)", 7),
        ("Merged in feature/cart (pull request #12)", "", 12),
        ("Merged in feature/cart (pull request #12)\r", "", 12),
        ("Merge branch 'feature' into 'main'", "Add cart\n\nSee merge request acme/shop!45", 45),
        ("Merge branch 'x'", "See merge request acme/sub/shop!45\r\n", 45),
        ("Merge branch 'x'", "Please see merge request acme/shop!45 later", None),
        ("Merge branch 'feature'", "", None),
        ("Ünïcödé title (#5)", "", 5),
        ("", "", None),
    ],
)
def test_parse_pr_number(title: str, body: str, expected: int | None) -> None:
    assert parse_pr_number(title, body) == expected


@pytest.mark.parametrize(
    ("title", "body", "expected"),
    [
        ("Merge pull request #7 from acme/feature", "Add wishlist", "Add wishlist"),
        ("Merge pull request #7 from acme/feature", "\n\n  Add wishlist  \nmore", "Add wishlist"),
        ("Merge pull request #7 from acme/feature", "Add wishlist\r\n\r\nDetails", "Add wishlist"),
        ("Merge pull request #7 from acme/feature", "", "Merge pull request #7 from acme/feature"),
        (
            "Merge pull request #7 from acme/feature",
            "Co-authored-by: Ann <ann@example.com>",
            "Merge pull request #7 from acme/feature",
        ),
        (
            "Merge pull request #7 from acme/feature",
            "Add wishlist\n\nCo-authored-by: Ann <ann@example.com>",
            "Add wishlist",
        ),
        ("Merge branch 'feature'", "Some body", "Merge branch 'feature'"),
        ("Add cart (#123)", "Body line", "Add cart (#123)"),
        ("Merged in feature (pull request #12)", "Body", "Merged in feature (pull request #12)"),
    ],
)
def test_merge_title(title: str, body: str, expected: str) -> None:
    assert merge_title(title, body) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("", []),
        ("Just a body.", []),
        ("Co-authored-by: Ann <ann@example.com>", [("Co-authored-by", "Ann <ann@example.com>")]),
        (
            "Text.\n\nSigned-off-by: Bo <bo@example.com>\nCo-authored-by: Ann <ann@example.com>\n",
            [("Signed-off-by", "Bo <bo@example.com>"), ("Co-authored-by", "Ann <ann@example.com>")],
        ),
        # a trailer-looking line in the middle of the body is prose, not a trailer
        ("Co-authored-by: Ann <ann@example.com>\n\nThen we fixed it.", []),
        ("Note: this is prose.\nIt goes on.", []),
        # tolerate blanks around the separator, CRLF, and trailing blank lines
        (
            "Body\r\n\r\nCo-Authored-By :  Ann <ann@example.com>  \r\n\r\n",
            [("Co-Authored-By", "Ann <ann@example.com>")],
        ),
        # continuation lines fold into the trailer above
        ("Body\n\nSee-also: one\n  two\nFixes: #3", [("See-also", "one two"), ("Fixes", "#3")]),
        # git-generated trailer + >= 25% trailers: the odd line is skipped
        (
            "Body\n\nsome prose line\nSigned-off-by: Bo <bo@example.com>",
            [("Signed-off-by", "Bo <bo@example.com>")],
        ),
        # without a git-generated trailer, one prose line disqualifies the paragraph
        ("Body\n\nsome prose line\nCo-authored-by: Ann <ann@example.com>", []),
    ],
)
def test_parse_trailers(body: str, expected: list[tuple[str, str]]) -> None:
    assert parse_trailers(body) == expected


ANN = Author("Ann Example", "ann@example.com")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("", ()),
        ("Co-authored-by: Ann Example <ann@example.com>", (ANN,)),
        ("co-authored-by: Ann Example <ann@example.com>", (ANN,)),
        ("CO-AUTHORED-BY:Ann   Example<ann@example.com>", (ANN,)),
        ("Co-authored-by:   Ann Example   <  ann@example.com >   ", (ANN,)),
        ("Body\r\n\r\nCo-authored-by: Ann Example <ann@example.com>\r\n", (ANN,)),
        (
            "Co-authored-by: Zoë Ünïcode <zoe@exämple.com>\n"
            "Co-authored-by: 山田 太郎 <taro@example.jp>",
            (Author("Zoë Ünïcode", "zoe@exämple.com"), Author("山田 太郎", "taro@example.jp")),
        ),
        (
            "Co-authored-by: Ann <ann+shop@example.com>",
            (Author("Ann", "ann+shop@example.com"),),
        ),
        (
            'Co-authored-by: "Doe, Jane" <jane@example.com>',
            (Author("Doe, Jane", "jane@example.com"),),
        ),
        # dedupe by lower-cased e-mail, first one wins
        (
            "Co-authored-by: Ann Example <ann@example.com>\n"
            "Co-authored-by: Ann E. <ANN@Example.com>",
            (ANN,),
        ),
        # malformed ones are skipped, the good one kept
        (
            "Co-authored-by: Ann Example\n"
            "Co-authored-by: <nobody@example.com>\n"
            "Co-authored-by: Bad <not-an-email>\n"
            "Co-authored-by: Two <a@b> <c@d>\n"
            "Co-authored-by: Ann Example <ann@example.com>",
            (ANN,),
        ),
        # only the final trailer paragraph counts
        ("Co-authored-by: Ann Example <ann@example.com>\n\nMore prose after it.", ()),
        (
            "Intro\nCo-authored-by: Ann Example <ann@example.com>\nmore prose\n\nFixes: #1",
            (),
        ),
        # other trailers around it do not matter
        (
            "Body\n\nReviewed-by: Bo <bo@example.com>\n"
            "Co-authored-by: Ann Example <ann@example.com>",
            (ANN,),
        ),
    ],
)
def test_co_authors(body: str, expected: tuple[Author, ...]) -> None:
    assert co_authors(body) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Ann <ann@example.com>", Author("Ann", "ann@example.com")),
        ("Ann", None),
        ("<ann@example.com>", None),
        ('"" <ann@example.com>', None),
        ("Ann <ann>", None),
    ],
)
def test_parse_author(value: str, expected: Author | None) -> None:
    assert parse_author(value) == expected


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Title\n", ("Title", "")),
        ("Title\n\nBody\n", ("Title", "Body")),
        ("Title\r\n\r\nBody\r\nmore\r\n", ("Title", "Body\nmore")),
        ("Two line\ntitle\n\nBody", ("Two line title", "Body")),
        ("", ("", "")),
    ],
)
def test_split_message(message: str, expected: tuple[str, str]) -> None:
    assert split_message(message) == expected


def record(sha: str, parents: str, name: str, email: str, message: str) -> str:
    """One record exactly as git prints LOG_FORMAT (tformat adds the newline)."""
    return f"\x1e{sha}\x00{parents}\x00{name}\x00{email}\x00{message}\x00\n"


def test_log_format_matches_parser() -> None:
    # parse_log depends on this exact field order
    assert LOG_FORMAT.count("%x00") == 5
    assert LOG_FORMAT.startswith("%x1e%H%x00%P%x00%aN%x00%aE%x00%B")


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("", []),
        (
            record(SHA_A, "", "Ann", "ann@example.com", "Initial commit\n"),
            [Commit(SHA_A, "Initial commit", Author("Ann", "ann@example.com"))],
        ),
        (
            record(SHA_B, SHA_A, "Bo", "bo+git@example.com", "Add cart (#123)\n")
            + record(SHA_A, "", "Ann", "ann@example.com", "Initial commit\n"),
            [
                Commit(SHA_B, "Add cart (#123)", Author("Bo", "bo+git@example.com"), pr=123),
                Commit(SHA_A, "Initial commit", Author("Ann", "ann@example.com")),
            ],
        ),
        # titles and bodies with separators-looking characters, tabs, RS and unicode
        (
            record(
                SHA_C,
                SHA_B,
                "Zoë Ünïcode",
                "zoe@example.com",
                "Weird \t title | ; $(rm -rf) \x1e\n\n"
                "Body\x1e\n\nCo-authored-by: Ann <ann@example.com>\n",
            ),
            [
                Commit(
                    SHA_C,
                    "Weird \t title | ; $(rm -rf) \x1e",
                    Author("Zoë Ünïcode", "zoe@example.com"),
                    co_authors=(Author("Ann", "ann@example.com"),),
                )
            ],
        ),
        # Windows line endings in the message
        (
            record(
                SHA_A,
                "",
                "Ann",
                "ann@example.com",
                "Fix it (#9)\r\n\r\nCo-authored-by: Bo <bo@x.org>\r\n",
            ),
            [
                Commit(
                    SHA_A,
                    "Fix it (#9)",
                    Author("Ann", "ann@example.com"),
                    co_authors=(Author("Bo", "bo@x.org"),),
                    pr=9,
                )
            ],
        ),
        # a GitHub merge commit: title from the body, pr from the title
        (
            record(
                SHA_C,
                f"{SHA_A} {SHA_B}",
                "Bo",
                "bo@example.com",
                "Merge pull request #7 from acme/feature\n\nAdd wishlist\n",
            ),
            [Commit(SHA_C, "Add wishlist", Author("Bo", "bo@example.com"), pr=7)],
        ),
        # a GitHub-looking title on a non-merge keeps its title
        (
            record(SHA_C, SHA_A, "Bo", "bo@example.com", "Merge pull request #7 from a/b\n\nX\n"),
            [Commit(SHA_C, "Merge pull request #7 from a/b", Author("Bo", "bo@example.com"), pr=7)],
        ),
    ],
)
def test_parse_log(output: str, expected: list[Commit]) -> None:
    assert parse_log(output) == expected


def test_parse_log_records_keep_parents() -> None:
    output = record(SHA_C, f"{SHA_A} {SHA_B}", "Bo", "bo@example.com", "Merge branch 'x'\n")
    (parsed,) = parse_log_records(output)
    assert parsed.parents == (SHA_A, SHA_B)
    assert parsed.is_merge
    assert parsed.title == "Merge branch 'x'"


@pytest.mark.parametrize(
    "output",
    [
        "garbage",
        f"\x1e{SHA_A}\x00\x00Ann\x00",
        f"{SHA_A}\x00\x00Ann\x00ann@example.com\x00Title\x00\n",
        record(SHA_A, "", "Ann", "a@b", "T") + "trailing junk",
    ],
)
def test_parse_log_rejects_malformed_output(output: str) -> None:
    with pytest.raises(ValueError):
        parse_log(output)


@pytest.mark.parametrize(
    ("template", "number", "expected"),
    [
        ("https://github.com/acme/shop/pull/{number}", 12, "https://github.com/acme/shop/pull/12"),
        (
            "https://gitlab.example/acme/shop/-/merge_requests/{number}",
            45,
            "https://gitlab.example/acme/shop/-/merge_requests/45",
        ),
        ("https://x/{number}?a={number}", 3, "https://x/3?a=3"),
        ("https://x/{other}/{number}", 3, "https://x/{other}/3"),
        ("https://x/pulls", 3, None),
        ("", 3, None),
        (None, 3, None),
    ],
)
def test_pr_link(template: str | None, number: int, expected: str | None) -> None:
    assert pr_link(template, number) == expected
