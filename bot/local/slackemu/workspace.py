"""The workspace's state: people, channels and every message, as Slack would store them.

Synchronous and free of I/O so that the Web API, the response_url endpoint and the
test-facing facade all mutate one consistent picture.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bot.local.slackemu.models import Channel, JSONDict, Message, User
from bot.local.slackemu.views import Views

SLACKBOT_ID = "USLACKBOT"


def format_ts(micros: int) -> str:
    return f"{micros // 1_000_000:010d}.{micros % 1_000_000:06d}"


@dataclass(frozen=True)
class Identity:
    team_id: str
    team_domain: str
    team_name: str
    bot_user_id: str
    bot_id: str
    app_id: str
    bot_name: str


class Workspace:
    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.users: dict[str, User] = {}
        self.channels: dict[str, Channel] = {}
        self._messages: dict[str, dict[str, Message]] = {}
        self._ephemerals: dict[str, list[Message]] = {}
        self._last_micros = 0
        self.views = Views()
        self.add_user(identity.bot_user_id, name=identity.bot_name, is_bot=True)
        self.add_user(SLACKBOT_ID, name="Slackbot", is_bot=True)

    # -- identifiers ------------------------------------------------------------------
    def next_ts(self) -> str:
        """Wall-clock based, but strictly increasing even within one microsecond."""
        micros = max(time.time_ns() // 1000, self._last_micros + 1)
        self._last_micros = micros
        return format_ts(micros)

    # -- directory --------------------------------------------------------------------
    def add_user(
        self,
        user_id: str,
        *,
        name: str,
        email: str | None = None,
        real_name: str | None = None,
        is_bot: bool = False,
        tz: str = "Etc/UTC",
    ) -> User:
        user = User(user_id, name, real_name or name, email, is_bot, tz)
        self.users[user_id] = user
        return user

    def add_channel(self, channel: Channel) -> Channel:
        self.channels[channel.id] = channel
        self._messages.setdefault(channel.id, {})
        return channel

    def user_by_email(self, email: str) -> User | None:
        wanted = email.strip().lower()
        for user in self.users.values():
            if user.email and user.email.lower() == wanted:
                return user
        return None

    def resolve_channel(self, ref: str) -> Channel | None:
        """Accepts an ID, ``#name``, a bare name, or a user ID (which opens the DM)."""
        if ref in self.channels:
            return self.channels[ref]
        name = ref.removeprefix("#")
        for channel in self.channels.values():
            if channel.name == name and not channel.is_im:
                return channel
        if ref in self.users:
            return self.open_dm(ref)
        return None

    def open_dm(self, user_id: str) -> Channel:
        dm_id = "D" + user_id[1:]
        if dm_id not in self.channels:
            members = {user_id, self.identity.bot_user_id}
            self.add_channel(Channel(dm_id, user_id, is_im=True, members=members))
        return self.channels[dm_id]

    def names(self) -> dict[str, str]:
        """ID -> display name for users and channels, used to render mentions."""
        out = {c.id: c.name for c in self.channels.values()}
        out.update({u.id: u.name for u in self.users.values()})
        return out

    def author_name(self, msg: Message) -> str:
        if msg.username:
            return msg.username
        if msg.user and msg.user in self.users:
            return self.users[msg.user].name
        return msg.user or msg.bot_id or "unknown"

    # -- messages ---------------------------------------------------------------------
    def post(
        self,
        channel: str,
        *,
        user: str | None,
        text: str = "",
        blocks: list[JSONDict] | None = None,
        attachments: list[JSONDict] | None = None,
        thread_ts: str | None = None,
        reply_broadcast: bool = False,
        ts: str | None = None,
        **extra: Any,
    ) -> Message:
        is_bot = user == self.identity.bot_user_id
        msg = Message(
            ts=ts or self.next_ts(),
            channel=channel,
            user=user,
            text=text,
            blocks=list(blocks or []),
            attachments=list(attachments or []),
            bot_id=self.identity.bot_id if is_bot else None,
            app_id=self.identity.app_id if is_bot else None,
            thread_ts=thread_ts,
            reply_broadcast=reply_broadcast,
            **extra,
        )
        self._messages.setdefault(channel, {})[msg.ts] = msg
        return msg

    def post_ephemeral(
        self,
        channel: str,
        *,
        to: str,
        user: str | None,
        text: str = "",
        blocks: list[JSONDict] | None = None,
        attachments: list[JSONDict] | None = None,
        thread_ts: str | None = None,
    ) -> Message:
        is_bot = user == self.identity.bot_user_id
        msg = Message(
            ts=self.next_ts(),
            channel=channel,
            user=user,
            text=text,
            blocks=list(blocks or []),
            attachments=list(attachments or []),
            bot_id=self.identity.bot_id if is_bot else None,
            app_id=self.identity.app_id if is_bot else None,
            thread_ts=thread_ts,
            ephemeral_for=to,
        )
        self._ephemerals.setdefault(to, []).append(msg)
        return msg

    def get(self, channel: str, ts: str) -> Message | None:
        return self._messages.get(channel, {}).get(ts)

    def get_ephemeral(self, user: str, ts: str) -> Message | None:
        return next((m for m in self._ephemerals.get(user, []) if m.ts == ts), None)

    def edit(
        self,
        msg: Message,
        *,
        text: str | None,
        blocks: list[JSONDict] | None,
        attachments: list[JSONDict] | None = None,
    ) -> None:
        """Omitted parts are kept, as chat.update does (an empty list clears them)."""
        msg.history.append((msg.text, list(msg.blocks)))
        if text is not None:
            msg.text = text
        if blocks is not None:
            msg.blocks = list(blocks)
        if attachments is not None:
            msg.attachments = list(attachments)
        msg.edited += 1
        msg.edited_ts = self.next_ts()

    def delete(self, msg: Message) -> None:
        if msg.ephemeral_for is not None:
            self._ephemerals[msg.ephemeral_for].remove(msg)
        else:
            self._messages[msg.channel].pop(msg.ts, None)

    def messages(self, channel: str) -> list[Message]:
        """Top-level messages plus replies also sent to the channel, oldest first."""
        return sorted(
            (
                m
                for m in self._messages.get(channel, {}).values()
                if not m.is_reply or m.reply_broadcast
            ),
            key=lambda m: m.ts,
        )

    def thread(self, channel: str, ts: str) -> list[Message]:
        return sorted(
            (
                m
                for m in self._messages.get(channel, {}).values()
                if m.is_reply and m.thread_ts == ts
            ),
            key=lambda m: m.ts,
        )

    def ephemerals(self, user: str, channel: str | None = None) -> list[Message]:
        return [m for m in self._ephemerals.get(user, []) if channel in (None, m.channel)]

    def all_ephemerals(self, channel: str) -> list[Message]:
        return sorted(
            (m for ms in self._ephemerals.values() for m in ms if m.channel == channel),
            key=lambda m: m.ts,
        )

    def message_json(self, msg: Message) -> JSONDict:
        """The message object with the fields Slack derives from the rest of the channel."""
        out = msg.to_json(self.identity.team_id)
        if msg.bot_id == self.identity.bot_id:
            out["bot_profile"] = {
                "id": self.identity.bot_id,
                "app_id": self.identity.app_id,
                "name": self.identity.bot_name,
                "deleted": False,
                "team_id": self.identity.team_id,
                "updated": int(float(msg.ts)),
                "icons": {
                    "image_36": "https://a.slack-edge.com/80588/img/plugins/app/bot_36.png",
                    "image_48": "https://a.slack-edge.com/80588/img/plugins/app/bot_48.png",
                    "image_72": "https://a.slack-edge.com/80588/img/plugins/app/service_72.png",
                },
            }
        if msg.is_reply and msg.thread_ts:
            parent = self.get(msg.channel, msg.thread_ts)
            if parent and parent.user:
                out["parent_user_id"] = parent.user
        else:
            replies = self.thread(msg.channel, msg.ts)
            if replies:
                out["thread_ts"] = msg.ts
                out["reply_count"] = len(replies)
                out["latest_reply"] = replies[-1].ts
        return out

    def permalink(self, msg: Message) -> str:
        base = (
            f"https://{self.identity.team_domain}.slack.com/archives/"
            f"{msg.channel}/p{msg.ts.replace('.', '')}"
        )
        if msg.is_reply:
            base += f"?thread_ts={msg.thread_ts}&cid={msg.channel}"
        return base

    # -- reactions --------------------------------------------------------------------
    def react(self, msg: Message, user: str, name: str) -> bool:
        """False if that user already reacted with that emoji."""
        users = msg.reactions.setdefault(name, [])
        if user in users:
            return False
        users.append(user)
        return True

    def unreact(self, msg: Message, user: str, name: str) -> bool:
        users = msg.reactions.get(name, [])
        if user not in users:
            return False
        users.remove(user)
        if not users:
            del msg.reactions[name]
        return True
