"""Polling while nothing merged reads no git history again; a merge reads it once for every
environment on the same base."""

from __future__ import annotations

import pytest

from domain.models import Commit
from tests.e2e.harness import ALICE, BOB, Team


@pytest.mark.http_only  # the collector does not depend on how Slack reaches web
async def test_unchanged_branch_reads_no_history_and_envs_share_one_read(team: Team) -> None:
    await team.collect()
    # the worker's own collect is over once the batch is posted; only ours run below
    await team.batch_message(containing="Initial shop")
    collector = team.stack.workers[0].worker.collector
    reads: list[tuple[str | None, str]] = []
    original = collector.mirror.commits_between

    async def counting(base: str | None, head: str, *, limit: int = 200) -> list[Commit]:
        reads.append((base, head))
        return await original(base, head, limit=limit)

    collector.mirror.commits_between = counting  # type: ignore[method-assign]
    team.commit(ALICE, "Add cart page")
    await collector.collect()
    first = len(reads)
    assert first == 1, reads  # sandbox and staging both run nothing yet: one read serves both

    await collector.collect()
    await collector.collect()
    assert len(reads) == first, "nothing merged: no git log"

    team.commit(BOB, "Fix rounding")
    await collector.collect()
    assert len(reads) == first + 1
    await team.batch_message(containing="Fix rounding")
    await team.batch_message(containing="Fix rounding", env="staging")
