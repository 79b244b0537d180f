"""The Slack app manifest and the bot agree: every command and event it declares is handled."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _manifest() -> dict[str, object]:
    loaded = yaml.safe_load((ROOT / "slack" / "manifest.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_manifest_commands_are_the_handled_commands() -> None:
    """The slash commands in slack/manifest.yml are exactly those handlers/slack.py registers."""
    features = _manifest()["features"]
    assert isinstance(features, dict)
    declared = {c["command"] for c in features["slash_commands"]}
    handled = set(
        re.findall(r'app\.command\("(/[a-z]+)"\)', (ROOT / "handlers" / "slack.py").read_text())
    )
    assert declared == handled


def test_manifest_events_are_handled() -> None:
    """Every bot event the manifest subscribes to has a listener."""
    settings = _manifest()["settings"]
    assert isinstance(settings, dict)
    events = set(settings["event_subscriptions"]["bot_events"])
    handled = set(
        re.findall(r'app\.event\("([a-z_]+)"\)', (ROOT / "handlers" / "slack.py").read_text())
    )
    assert events <= handled
