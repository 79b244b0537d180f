"""Every refusal the core can make, each with a message a person can act on.

One root so adapters can catch "anything the domain refused" and show ``str(err)``
to the user instead of a traceback.
"""

from __future__ import annotations


class ShipmateError(Exception):
    """Root of every error shipmate explains to a user."""


class DomainError(ShipmateError):
    """A request the release rules refuse; ``str()`` is the user-facing explanation."""


class InvalidTransition(DomainError):
    def __init__(self, release_id: str, state: str, event: str) -> None:
        super().__init__(f"release {release_id} is {state.replace('_', ' ')}; cannot {event}")
        self.release_id = release_id
        self.state = state
        self.event = event


class NotInvolved(DomainError):
    def __init__(self, user: str, release_id: str) -> None:
        super().__init__(
            f"<@{user}> has no commits in release {release_id}, so their approval or block does not count"
        )
        self.user = user
        self.release_id = release_id


class NotAllowedToCancel(DomainError):
    def __init__(self, user: str, release_id: str, requested_by: str | None) -> None:
        who = f"<@{requested_by}> (who asked for it)" if requested_by else "whoever asked for it"
        super().__init__(
            f"<@{user}>, only {who} or the authors of release {release_id} can cancel it."
        )
        self.user = user
        self.release_id = release_id


class NothingToRelease(DomainError):
    def __init__(self, env: str) -> None:
        super().__init__(f"Nothing to release to *{env}*: it already runs the branch head.")
        self.env = env


class ReleaseInProgress(DomainError):
    def __init__(self, env: str, release_id: str, state: str) -> None:
        super().__init__(
            f"Release {release_id} to *{env}* is already {state.replace('_', ' ')}; "
            "wait for it to finish or cancel it first."
        )
        self.env = env
        self.release_id = release_id
        self.state = state


class NothingToRollBackTo(DomainError):
    def __init__(self, env: str) -> None:
        super().__init__(f"Nothing to roll *{env}* back to: no earlier release was live there.")
        self.env = env


class UsageError(DomainError):
    """Slash-command text that does not parse; the message says what to type instead."""


_VERBS = {"release": "release to", "rollback": "roll back", "lock": "lock"}


class NotPermitted(DomainError):
    def __init__(self, user: str, action: str, env: str) -> None:
        super().__init__(
            f"<@{user}> is not allowed to {_VERBS.get(action, action)} *{env}*. "
            f"Ask someone listed under `permissions.{action}` in shipmate's config."
        )
        self.user = user
        self.action = action
        self.env = env


class AlreadyLocked(DomainError):
    def __init__(self, env: str, by: str, reason: str) -> None:
        who = "shipmate" if by == "shipmate" else f"<@{by}>"
        super().__init__(
            f"*{env}* is already locked by {who}: {reason}. Type `/unlock {env}` first."
        )
        self.env = env


class NotLocked(DomainError):
    def __init__(self, env: str) -> None:
        super().__init__(f"*{env}* is not locked.")
        self.env = env


class BatchOutdated(DomainError):
    """What the environment runs changed (a rollback), and the batch is being recounted."""

    def __init__(self, env: str) -> None:
        super().__init__(
            f"The batch for *{env}* is being recounted because what runs there just changed; "
            "try again in a few seconds."
        )
        self.env = env
