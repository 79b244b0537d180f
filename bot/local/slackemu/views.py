"""Modals: trigger ids, ``views.open`` and the ``view_submission`` a person's submit sends.

A trigger id comes with every slash command and button click; Slack accepts it once, for
3 seconds, to open a modal for the person who acted. The emulator keeps the one open
modal per person (no stacking) and builds ``view.state.values`` from what they typed.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from bot.local.slackemu.models import JSONDict, User

#: Slack's documented lifetime of a trigger_id
TRIGGER_LIFETIME = 3.0
MAX_MODAL_BLOCKS = 100
MAX_TITLE = 24


class ViewError(Exception):
    """A Web API error code for views.open (``invalid_trigger_id``, ``invalid_arguments``…)."""

    def __init__(self, error: str, detail: str = "") -> None:
        super().__init__(error)
        self.error = error
        self.detail = detail


@dataclass
class _Trigger:
    user: str
    issued: float
    used: bool = False


@dataclass
class View:
    id: str
    user: str
    spec: JSONDict
    hash: str = field(default_factory=lambda: f"{int(time.time())}.{secrets.token_hex(4)}")

    @property
    def callback_id(self) -> str:
        return str(self.spec.get("callback_id", ""))

    @property
    def title(self) -> str:
        return _plain(self.spec.get("title"))

    @property
    def submit_label(self) -> str:
        return _plain(self.spec.get("submit")) or "Submit"

    @property
    def close_label(self) -> str:
        return _plain(self.spec.get("close")) or "Cancel"

    @property
    def blocks(self) -> list[JSONDict]:
        blocks = self.spec.get("blocks")
        return blocks if isinstance(blocks, list) else []

    def inputs(self) -> list[tuple[str, str, JSONDict, bool]]:
        """(block_id, action_id, element, optional) of every plain text input."""
        found = []
        for block in self.blocks:
            element = block.get("element")
            if (
                block.get("type") == "input"
                and isinstance(element, dict)
                and element.get("type") == "plain_text_input"
            ):
                found.append(
                    (
                        str(block.get("block_id", "")),
                        str(element.get("action_id", "")),
                        element,
                        bool(block.get("optional", False)),
                    )
                )
        return found

    def to_json(self, team_id: str, app_id: str, bot_id: str, values: JSONDict) -> JSONDict:
        return {
            "id": self.id,
            "team_id": team_id,
            "type": "modal",
            "blocks": self.blocks,
            "private_metadata": str(self.spec.get("private_metadata", "")),
            "callback_id": self.callback_id,
            "state": {"values": values},
            "hash": self.hash,
            "title": self.spec.get("title"),
            "clear_on_close": bool(self.spec.get("clear_on_close", False)),
            "notify_on_close": bool(self.spec.get("notify_on_close", False)),
            "close": self.spec.get("close"),
            "submit": self.spec.get("submit"),
            "previous_view_id": None,
            "root_view_id": self.id,
            "app_id": app_id,
            "external_id": str(self.spec.get("external_id", "")),
            "app_installed_team_id": team_id,
            "bot_id": bot_id,
        }


def _plain(obj: Any) -> str:
    return str(obj.get("text", "")) if isinstance(obj, dict) else ""


class Views:
    """Trigger ids handed out and the modal each person has open."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._triggers: dict[str, _Trigger] = {}
        self.open: dict[str, View] = {}
        #: tests shorten it to act out a client that hands a click over too late
        self.trigger_lifetime = TRIGGER_LIFETIME

    def issue(self, trigger_id: str, user: str) -> str:
        self._triggers[trigger_id] = _Trigger(user, self._clock())
        return trigger_id

    def open_view(self, trigger_id: str | None, raw_view: Any) -> View:
        trig = self._triggers.get(trigger_id or "")
        if trig is None:
            raise ViewError("invalid_trigger_id")
        if trig.used:
            raise ViewError("exchanged_trigger_id")
        if self._clock() - trig.issued > self.trigger_lifetime:
            raise ViewError("expired_trigger_id")
        spec = _parse_view(raw_view)
        trig.used = True
        view = View(id=f"V{secrets.token_hex(5).upper()}", user=trig.user, spec=spec)
        self.open[trig.user] = view
        return view

    def close(self, user: str) -> None:
        self.open.pop(user, None)


def _parse_view(raw: Any) -> JSONDict:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise ViewError("invalid_arguments", "view is not JSON") from None
    if not isinstance(raw, dict):
        raise ViewError("invalid_arguments", "view must be an object")
    if raw.get("type") != "modal":
        raise ViewError("invalid_arguments", "view.type must be modal")
    title = _plain(raw.get("title"))
    if not title or len(title) > MAX_TITLE:
        raise ViewError("invalid_arguments", f"view.title must be 1-{MAX_TITLE} characters")
    blocks = raw.get("blocks")
    if not isinstance(blocks, list) or not blocks or len(blocks) > MAX_MODAL_BLOCKS:
        raise ViewError("invalid_arguments", f"view.blocks must hold 1-{MAX_MODAL_BLOCKS} blocks")
    has_input = any(isinstance(b, dict) and b.get("type") == "input" for b in blocks)
    if has_input and not _plain(raw.get("submit")):
        raise ViewError("invalid_arguments", "a view with input blocks needs a submit button")
    return raw


def state_values(view: View, typed: dict[str, str]) -> tuple[JSONDict, dict[str, str]]:
    """``state.values`` from what the person typed (keyed by action_id), and the errors the
    Slack client itself shows before sending anything (a required input left empty)."""
    values: JSONDict = {}
    errors: dict[str, str] = {}
    for block_id, action_id, element, optional in view.inputs():
        text = typed.get(action_id, "")
        if not text.strip() and not optional:
            errors[block_id] = "Please complete this required field."
            continue
        max_length = element.get("max_length")
        if isinstance(max_length, int) and len(text) > max_length:
            errors[block_id] = f"Must be {max_length} characters or fewer."
            continue
        values[block_id] = {action_id: {"type": "plain_text_input", "value": text or None}}
    return values, errors


def view_submission_payload(
    view: View,
    *,
    user: User,
    team_id: str,
    team_domain: str,
    app_id: str,
    bot_id: str,
    values: JSONDict,
    token: str,
    trigger_id: str,
) -> JSONDict:
    return {
        "type": "view_submission",
        "team": {"id": team_id, "bot.domain": team_domain},
        "user": {"id": user.id, "username": user.name, "name": user.name, "team_id": team_id},
        "api_app_id": app_id,
        "token": token,
        "trigger_id": trigger_id,
        "view": view.to_json(team_id, app_id, bot_id, values),
        "response_urls": [],
        "is_enterprise_install": False,
        "enterprise": None,
    }
