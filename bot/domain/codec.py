"""Releases and environments to and from JSON-ready dicts.

Written out by hand rather than through ``dataclasses.asdict`` so that the stored
shape is explicit, stable across refactors, and fast on the ack path.
"""

from __future__ import annotations

from typing import Any

from bot.domain.models import (
    Author,
    Commit,
    EnvLock,
    EnvState,
    LiveEntry,
    Person,
    Release,
    ReleaseKind,
    ReleaseState,
    Step,
    StepStatus,
)

Doc = dict[str, Any]


def _author(a: Author) -> list[str]:
    return [a.name, a.email]


def _load_author(raw: list[str]) -> Author:
    return Author(name=raw[0], email=raw[1])


def commit_to_doc(c: Commit) -> Doc:
    doc: Doc = {"sha": c.sha, "title": c.title, "author": _author(c.author)}
    if c.co_authors:
        doc["co"] = [_author(a) for a in c.co_authors]
    if c.pr is not None:
        doc["pr"] = c.pr
    if c.merged_authors:
        doc["merged"] = [_author(a) for a in c.merged_authors]
    return doc


def commit_from_doc(doc: Doc) -> Commit:
    return Commit(
        sha=doc["sha"],
        title=doc["title"],
        author=_load_author(doc["author"]),
        co_authors=tuple(_load_author(a) for a in doc.get("co", ())),
        pr=doc.get("pr"),
        merged_authors=tuple(_load_author(a) for a in doc.get("merged", ())),
    )


def release_to_doc(r: Release) -> Doc:
    # "version" first: the store's Lua check reads it with an anchored pattern
    return {
        "version": r.version,
        "id": r.id,
        "env": r.env,
        "state": r.state.value,
        "kind": r.kind.value,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
        "commits": [commit_to_doc(c) for c in r.commits],
        "people": [[p.email, p.name, p.slack_user] for p in r.people],
        "head_sha": r.head_sha,
        "base_sha": r.base_sha,
        "approval_required": r.approval_required,
        "requested_by": r.requested_by,
        "stand_ins": list(r.stand_ins),
        "approvals": sorted(r.approvals),
        "blocks": sorted(r.blocks),
        "block_reasons": [list(pair) for pair in r.block_reasons],
        "channel": r.channel,
        "message_ts": r.message_ts,
        "steps": [[s.name, s.status.value, s.detail] for s in r.steps],
        "reason": r.reason,
        "cancelled_by": r.cancelled_by,
        "rollback_target": r.rollback_target,
        "previous_sha": r.previous_sha,
        "fence": r.fence,
        "healthy_after_rollback": r.healthy_after_rollback,
        "frozen_at": r.frozen_at,
        "approved_at": r.approved_at,
        "finished_at": r.finished_at,
        "deploy_started_at": r.deploy_started_at,
    }


def release_from_doc(d: Doc) -> Release:
    return Release(
        id=d["id"],
        env=d["env"],
        state=ReleaseState(d["state"]),
        kind=ReleaseKind(d["kind"]),
        version=d["version"],
        created_at=d["created_at"],
        updated_at=d["updated_at"],
        commits=tuple(commit_from_doc(c) for c in d["commits"]),
        people=tuple(Person(email=p[0], name=p[1], slack_user=p[2]) for p in d["people"]),
        head_sha=d["head_sha"],
        base_sha=d["base_sha"],
        approval_required=d["approval_required"],
        requested_by=d["requested_by"],
        stand_ins=tuple(d["stand_ins"]),
        approvals=frozenset(d["approvals"]),
        blocks=frozenset(d["blocks"]),
        # .get: releases stored before these fields existed still load
        block_reasons=tuple((p[0], p[1]) for p in d.get("block_reasons", ())),
        channel=d["channel"],
        message_ts=d["message_ts"],
        steps=tuple(Step(name=s[0], status=StepStatus(s[1]), detail=s[2]) for s in d["steps"]),
        # a release cancelled before "cancelled_by" existed names the canceller in its reason
        # ("cancelled by <@U…>"), which renders the same, so it loads as it is
        reason=d["reason"],
        cancelled_by=d.get("cancelled_by"),
        rollback_target=d["rollback_target"],
        previous_sha=d["previous_sha"],
        fence=d["fence"],
        healthy_after_rollback=d["healthy_after_rollback"],
        frozen_at=d["frozen_at"],
        approved_at=d["approved_at"],
        finished_at=d["finished_at"],
        deploy_started_at=d.get("deploy_started_at"),
    )


def env_to_doc(e: EnvState) -> Doc:
    return {
        "version": e.version,
        "name": e.name,
        "live_sha": e.live_sha,
        "live_release": e.live_release,
        "active_release": e.active_release,
        "batch_release": e.batch_release,
        "history": [[h.release_id, h.sha, h.at] for h in e.history],
        "rolled_back_shas": sorted(e.rolled_back_shas),
        "lock": [e.lock.by, e.lock.reason, e.lock.at, e.lock.automatic] if e.lock else None,
    }


def env_from_doc(d: Doc) -> EnvState:
    return EnvState(
        name=d["name"],
        version=d["version"],
        live_sha=d["live_sha"],
        live_release=d["live_release"],
        active_release=d["active_release"],
        batch_release=d["batch_release"],
        history=tuple(LiveEntry(release_id=h[0], sha=h[1], at=h[2]) for h in d["history"]),
        rolled_back_shas=frozenset(d["rolled_back_shas"]),
        lock=EnvLock(by=lk[0], reason=lk[1], at=lk[2], automatic=lk[3])
        if (lk := d.get("lock"))
        else None,
    )
