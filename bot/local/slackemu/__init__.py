"""A local Slack workspace that speaks Slack's real wire format to an unmodified bolt app.

See ``SlackEmulator`` for the entry point; the rest is exported for type hints.
"""

from bot.local.slackemu.delivery import SLACK_RETRY_DELAYS
from bot.local.slackemu.emulator import SlackEmulator
from bot.local.slackemu.models import (
    ApiCall,
    Channel,
    Delivery,
    Message,
    SlashResult,
    User,
    ViewResult,
)
from bot.local.slackemu.responseurls import ResponsePost

__all__ = [
    "SLACK_RETRY_DELAYS",
    "ApiCall",
    "Channel",
    "Delivery",
    "Message",
    "ResponsePost",
    "SlackEmulator",
    "SlashResult",
    "User",
    "ViewResult",
]
