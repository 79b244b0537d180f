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


def _handlers_source() -> str:
    # listeners live in several modules (handlers/slack.py registers the others)
    return "\n".join(p.read_text() for p in sorted((ROOT / "handlers").glob("*.py")))


def test_manifest_commands_are_the_handled_commands() -> None:
    """The slash commands in slack/manifest.yml are exactly those the handlers register."""
    features = _manifest()["features"]
    assert isinstance(features, dict)
    declared = {c["command"] for c in features["slash_commands"]}
    handled = set(re.findall(r'app\.command\("(/[a-z]+)"\)', _handlers_source()))
    assert declared == handled
    assert "/history" in handled


def test_manifest_events_are_handled() -> None:
    """Every bot event the manifest subscribes to has a listener."""
    settings = _manifest()["settings"]
    assert isinstance(settings, dict)
    events = set(settings["event_subscriptions"]["bot_events"])
    handled = set(
        re.findall(r'app\.event\("([a-z_]+)"\)', (ROOT / "handlers" / "slack.py").read_text())
    )
    assert events <= handled


def test_interactivity_is_on_because_buttons_and_forms_are_handled() -> None:
    """The message's buttons and the block-reason form arrive as interactivity requests."""
    source = _handlers_source()
    assert re.search(r"app\.action\(", source) and re.search(r"app\.view\(", source)
    settings = _manifest()["settings"]
    assert isinstance(settings, dict)
    assert settings["interactivity"]["is_enabled"] is True
