"""Process settings from the environment (the stable contract in design.md), read once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SLACK_API_URL = "https://slack.com/api/"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class SettingsError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Settings:
    slack_bot_token: str
    slack_signing_secret: str
    slack_app_token: str | None
    slack_api_url: str
    redis_url: str
    config_path: Path
    github_webhook_secret: str | None
    port: int
    host: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, need_slack_secret: bool = True) -> Settings:
        missing = [k for k in ("SLACK_BOT_TOKEN",) if not environ.get(k)]
        app_token = environ.get("SLACK_APP_TOKEN") or None
        if need_slack_secret and not app_token and not environ.get("SLACK_SIGNING_SECRET"):
            missing.append("SLACK_SIGNING_SECRET")
        if missing:
            raise SettingsError(
                f"missing environment variable{'s' if len(missing) > 1 else ''}: {', '.join(missing)}"
            )
        if app_token is not None and not app_token.startswith("xapp-"):
            raise SettingsError(
                "SLACK_APP_TOKEN must be an app-level token (xapp-…) with connections:write"
            )
        port = _port(environ.get("PORT", "3000"))
        api_url = environ.get("SLACK_API_URL") or DEFAULT_SLACK_API_URL
        return cls(
            slack_bot_token=environ["SLACK_BOT_TOKEN"],
            slack_signing_secret=environ.get("SLACK_SIGNING_SECRET", ""),
            slack_app_token=app_token,
            slack_api_url=api_url if api_url.endswith("/") else api_url + "/",
            # Set but empty means unset, as for SLACK_API_URL: not a connection to nowhere.
            redis_url=environ.get("REDIS_URL") or DEFAULT_REDIS_URL,
            config_path=Path(environ.get("SHIPMATE_CONFIG", "shipmate.yml")),
            github_webhook_secret=environ.get("GITHUB_WEBHOOK_SECRET") or None,
            port=port,
            host=environ.get("HOST", "0.0.0.0"),
        )


def _port(raw: str) -> int:
    text = raw.strip()
    # 0 asks the system for a free port; a bounded length keeps int() from ever refusing it.
    if not (text.isascii() and text.isdigit() and len(text) <= 5 and int(text) <= 65535):
        raise SettingsError(f"PORT must be a port number from 0 to 65535, got {raw[:20]!r}")
    return int(text)
