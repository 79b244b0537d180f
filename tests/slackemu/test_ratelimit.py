from __future__ import annotations

from bot.local.slackemu.ratelimit import RateLimiter


def test_sliding_window_and_forced_limits() -> None:
    now = [100.0]
    limiter = RateLimiter({"chat.update": 2}, clock=lambda: now[0])
    assert limiter.check("chat.update") is None
    now[0] += 10
    assert limiter.check("chat.update") is None
    assert limiter.check("chat.update") == 50  # the first call ages out 60 s after it was made
    now[0] += 50
    assert limiter.check("chat.update") is None
    limiter.force("users.info", 2.5)
    assert limiter.check("users.info") == 3
    now[0] += 2.5
    assert limiter.check("users.info") is None
