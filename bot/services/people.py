"""Map git authors to Slack users: the config's `people:` first, then users.lookupByEmail.

Lookups are cached in Redis (misses too, for a shorter time) so a busy branch does not
turn every collect into a burst of Slack API calls. A failed lookup leaves the author
unmapped instead of stopping the batch: the message then names a stand-in approver.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from redis.asyncio import Redis
from slack_sdk.errors import SlackApiError

from bot.adapters.keys import PEOPLE_TTL_SECONDS, Keys
from bot.adapters.slackapi import SlackGateway
from bot.domain.models import Author, Person

log = logging.getLogger(__name__)

_MISS = "-"
_MISS_TTL_SECONDS = 300


class PeopleDirectory:
    def __init__(
        self, configured: Mapping[str, str], redis: Redis, keys: Keys, slack: SlackGateway
    ) -> None:
        self._configured = {email.lower(): user for email, user in configured.items()}
        self._redis = redis
        self._keys = keys
        self._slack = slack

    async def resolve(self, authors: Iterable[Author]) -> tuple[Person, ...]:
        people: dict[str, Person] = {}
        for author in authors:
            email = author.email.lower()
            if email not in people:
                people[email] = Person(
                    email=author.email, name=author.name, slack_user=await self.user_for(email)
                )
        return tuple(people.values())

    async def user_for(self, email: str) -> str | None:
        email = email.lower()
        if email in self._configured:
            return self._configured[email]
        key = self._keys.person(email)
        cached = await self._redis.get(key)
        if cached is not None:
            value = cached.decode() if isinstance(cached, bytes) else str(cached)
            return None if value == _MISS else value
        try:
            user = await self._slack.lookup_by_email(email)
        except SlackApiError as err:
            log.warning(
                "users.lookupByEmail failed for %s: %s",
                email,
                err.response.get("error") if err.response else err,
            )
            return None
        await self._redis.set(
            key, user or _MISS, ex=PEOPLE_TTL_SECONDS if user else _MISS_TTL_SECONDS
        )
        return user
