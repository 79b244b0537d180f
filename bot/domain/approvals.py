"""Who must approve a release, who may, and whether they all have.

Every involved author who maps to a Slack user approves for themselves. Authors who
map to nobody cannot react, so one approval from a stand-in (configured, or else the
person who asked for the release) covers them.
"""

from __future__ import annotations

from bot.domain.models import Release


def stand_ins(release: Release) -> frozenset[str]:
    """Users who may approve for involved authors that map to no Slack user."""
    if release.stand_ins:
        return frozenset(release.stand_ins)
    return frozenset({release.requested_by}) if release.requested_by else frozenset()


def needs_stand_in(release: Release) -> bool:
    return bool(release.unmapped)


def can_decide(release: Release, user: str) -> bool:
    """True if the user's approve or block reaction counts for this release."""
    if user in release.involved_users:
        return True
    return needs_stand_in(release) and user in stand_ins(release)


def can_cancel(release: Release, user: str) -> bool:
    """Whoever asked for the release, and whoever may approve it, may call it off."""
    return user == release.requested_by or can_decide(release, user)


def awaited(release: Release) -> tuple[str, ...]:
    """Involved Slack users who have not approved yet, in the order they appear."""
    seen: list[str] = []
    for person in release.people:
        user = person.slack_user
        if user and user not in release.approvals and user not in seen:
            seen.append(user)
    return tuple(seen)


def stand_in_given(release: Release) -> bool:
    return not needs_stand_in(release) or bool(release.approvals & stand_ins(release))


def is_fully_approved(release: Release) -> bool:
    if not release.approval_required:
        return True
    return not awaited(release) and stand_in_given(release)
