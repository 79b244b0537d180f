"""The local workspace in a browser: a page that shows a channel live and lets a person act.

``SlackEmulator.enable_browser()`` mounts these routes on the emulator's own aiohttp app:

- ``GET /``: the page (``static/index.html``, ``app.js``, ``app.css``: vanilla, no build step,
  nothing fetched from the internet). It polls ``/ui/state`` every 500 ms.
- ``GET /ui/state?channel=…&user=…``: the channel as the acting user sees it, with Block Kit
  and mrkdwn already rendered to HTML here (every piece of message text is escaped; the
  page only inserts this HTML and builds the rest from plain values).
  The acting member's open modal comes with it (``modal``): its blocks rendered the same
  way, its ``plain_text_input`` fields as plain values the page builds inputs from, and
  the errors the last submit left under them.
- ``POST /ui/command``, ``/ui/reaction``, ``/ui/button``, ``/ui/message``, ``/ui/view``: act
  as a member, through the same facade methods tests use (``slash_command``,
  ``add_reaction``, ``remove_reaction``, ``click_button``, ``post_as_user``,
  ``submit_view``, ``close_view``), so the app receives exactly what it would receive from
  Slack. A button with a ``confirm`` object asks in the page first, as Slack's client does;
  the click is only sent once the person confirms.

The POST endpoints take JSON only (a cross-site form cannot send it without a preflight);
the emulator is a local development tool and should listen on 127.0.0.1.
"""

from __future__ import annotations

import html
import importlib.resources
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web

from bot.local.slackemu import blockkit
from bot.local.slackemu.models import Channel, JSONDict, Message, User
from bot.local.slackemu.workspace import SLACKBOT_ID, Workspace

if TYPE_CHECKING:
    from bot.local.slackemu.emulator import SlackEmulator
    from bot.local.slackemu.views import View

#: A small map of the emoji shipmate and most bots use; any other ``:name:`` stays as text.
EMOJI: dict[str, str] = {
    "white_check_mark": "✅",
    "heavy_check_mark": "✔️",
    "ballot_box_with_check": "☑️",
    "no_entry": "⛔",
    "no_entry_sign": "🚫",
    "x": "❌",
    "+1": "👍",
    "thumbsup": "👍",
    "-1": "👎",
    "thumbsdown": "👎",
    "rocket": "🚀",
    "hourglass_flowing_sand": "⏳",
    "hourglass": "⌛",
    "lock": "🔒",
    "unlock": "🔓",
    "warning": "⚠️",
    "package": "📦",
    "gear": "⚙️",
    "stethoscope": "🩺",
    "rewind": "⏪",
    "leftwards_arrow_with_hook": "↩️",
    "rotating_light": "🚨",
    "heavy_multiplication_x": "✖️",
    "fast_forward": "⏩",
    "eyes": "👀",
    "tada": "🎉",
    "fire": "🔥",
    "bug": "🐛",
    "memo": "📝",
    "heart": "❤️",
    "wave": "👋",
    "smile": "😄",
    "thinking_face": "🤔",
    "construction": "🚧",
    "boom": "💥",
    "sparkles": "✨",
    "ok_hand": "👌",
    "raised_hands": "🙌",
    "pray": "🙏",
    "zap": "⚡",
    "link": "🔗",
    "question": "❓",
    "exclamation": "❗",
    "information_source": "ℹ️",
    "checkered_flag": "🏁",
    "ship": "🚢",
    "red_circle": "🔴",
    "large_green_circle": "🟢",
    "large_yellow_circle": "🟡",
    "100": "💯",
}

DEFAULT_REACTIONS: tuple[str, ...] = ("white_check_mark", "+1", "no_entry", "x", "eyes", "tada")
POLL_INTERVAL_MS = 500
#: the page keeps its scripts and styles to itself; message HTML cannot bring its own
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

# -- mrkdwn -> HTML ------------------------------------------------------------------------
_ANGLE = re.compile(r"<([^<>\n]+)>")
_PRE = re.compile(r"```(.*?)```", re.DOTALL)
_CODE = re.compile(r"`([^`\n]+)`")
_EMOJI = re.compile(r":([a-z0-9_+\-]+):")
_BOLD = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]*?\S)\*(?![\w*])")
_ITALIC = re.compile(r"(?<![\w])_(?=\S)([^_\n]*?\S)_(?![\w])")
_STRIKE = re.compile(r"(?<![\w~])~(?=\S)([^~\n]*?\S)~(?![\w~])")
_QUOTE = re.compile(r"^(?:>|&gt;)[ ]?")
_QUOTE_REST = re.compile(r"^(?:>>>|&gt;&gt;&gt;)[ ]?")
#: placeholders for pieces already turned into HTML; private-use characters, stripped from input
_PH_OPEN, _PH_CLOSE = "\ue000", "\ue001"
_PH = re.compile(f"{_PH_OPEN}(\\d+){_PH_CLOSE}")
_LINK_SCHEMES = frozenset({"http", "https", "mailto"})


def esc(text: str) -> str:
    return html.escape(text, quote=True)


def unslack(text: str) -> str:
    """Undo Slack's own escaping of the three control characters."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def emoji_html(name: str) -> str:
    char = EMOJI.get(name)
    if char is None:
        return esc(f":{name}:")
    return f'<span class="emoji" title=":{esc(name)}:">{char}</span>'


class _Inline:
    """One run of mrkdwn (no line breaks) to HTML, with a table of finished pieces."""

    def __init__(self, names: Mapping[str, str], me: str | None) -> None:
        self.names = names
        self.me = me
        self.pieces: list[str] = []

    def hold(self, piece: str) -> str:
        self.pieces.append(piece)
        return f"{_PH_OPEN}{len(self.pieces) - 1}{_PH_CLOSE}"

    def expand(self, text: str) -> str:
        while _PH_OPEN in text:
            text = _PH.sub(lambda m: self.pieces[int(m.group(1))], text)
        return text

    def token(self, inner: str) -> str:
        """``<…>``: a mention, a channel, a special, a date, or a link."""
        target, _, label = inner.partition("|")
        if target.startswith("@"):
            uid = target[1:]
            name = self.names.get(uid) or unslack(label).lstrip("@") or uid
            me = " me" if uid == self.me else ""
            return f'<span class="mention{me}" data-user="{esc(uid)}">@{esc(name)}</span>'
        if target.startswith("#"):
            cid = target[1:]
            name = self.names.get(cid) or unslack(label).lstrip("#") or cid
            return f'<span class="channel-ref">#{esc(name)}</span>'
        if target.startswith("!"):
            return self._special(target[1:], unslack(label))
        url = unslack(target)
        if urlsplit(url).scheme.lower() in _LINK_SCHEMES:
            shown = unslack(label) or url.removeprefix("mailto:")
            return (
                f'<a href="{esc(url)}" target="_blank" rel="noopener noreferrer">{esc(shown)}</a>'
            )
        return esc(f"<{unslack(inner)}>")

    def _special(self, special: str, label: str) -> str:
        if special.startswith("date^"):
            parts = special.split("^")
            try:
                stamp = int(parts[1])
            except (IndexError, ValueError):
                stamp = None
            shown = label or (
                time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(stamp)) if stamp else "a date"
            )
            iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp)) if stamp else ""
            return f'<time class="date" datetime="{esc(iso)}">{esc(shown)}</time>'
        if special.startswith("subteam^"):
            shown = label or "@" + special.removeprefix("subteam^")
            return f'<span class="mention group">{esc(shown)}</span>'
        if special in ("here", "channel", "everyone"):
            return f'<span class="mention broadcast">@{special}</span>'
        return esc(label or special)

    def render(self, raw: str, *, formatting: bool = True) -> str:
        text = raw.replace(_PH_OPEN, "").replace(_PH_CLOSE, "")
        text = _ANGLE.sub(lambda m: self.hold(self.token(m.group(1))), text)
        if not formatting:
            return self.expand(esc(unslack(text)))
        text = _CODE.sub(
            lambda m: self.hold(f'<code class="mrk-code">{esc(unslack(m.group(1)))}</code>'), text
        )
        text = esc(unslack(text))
        text = _EMOJI.sub(
            lambda m: self.hold(emoji_html(m.group(1))) if m.group(1) in EMOJI else m.group(0),
            text,
        )
        text = _STRIKE.sub(r"<s>\1</s>", text)
        text = _BOLD.sub(r"<b>\1</b>", text)
        text = _ITALIC.sub(r"<i>\1</i>", text)
        return self.expand(text)


def mrkdwn_html(text: str, names: Mapping[str, str], me: str | None = None) -> str:
    """Slack mrkdwn as safe HTML; line breaks stay ``\\n`` (the page uses ``pre-wrap``)."""
    inline = _Inline(names, me)
    out: list[str] = []
    pos = 0
    for m in _PRE.finditer(text):
        before = text[pos : m.start()].removesuffix("\n")
        out.append(_lines_html(before.removeprefix("\n") if pos else before, inline))
        body = m.group(1).strip("\n")
        out.append(f'<pre class="mrk-pre">{inline.render(body, formatting=False)}</pre>')
        pos = m.end()
    rest = text[pos:]
    out.append(_lines_html(rest.removeprefix("\n") if pos else rest, inline))
    return "".join(out)


def _lines_html(text: str, inline: _Inline) -> str:
    if not text:
        return ""
    groups: list[tuple[bool, list[str]]] = []
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if _QUOTE_REST.match(line):
            groups.append((True, [_QUOTE_REST.sub("", line, count=1), *lines[i + 1 :]]))
            break
        is_quote = _QUOTE.match(line) is not None
        body = _QUOTE.sub("", line, count=1) if is_quote else line
        if groups and groups[-1][0] == is_quote:
            groups[-1][1].append(body)
        else:
            groups.append((is_quote, [body]))
    out = []
    for in_quote, group in groups:
        rendered = "\n".join(inline.render(line) for line in group)
        if in_quote:
            out.append(f'<blockquote class="mrk-quote">{rendered}</blockquote>')
        else:
            out.append(f'<span class="mrk">{rendered}</span>')
    return "".join(out)


# -- Block Kit -> HTML ---------------------------------------------------------------------
def plain_html(text: str, *, emoji: bool = True) -> str:
    out = esc(text)
    if emoji:
        out = _EMOJI.sub(
            lambda m: emoji_html(m.group(1)) if m.group(1) in EMOJI else m.group(0), out
        )
    return out


def emojize(text: str) -> str:
    """``:name:`` to its character, for labels the page sets as plain text (not HTML)."""
    return _EMOJI.sub(lambda m: EMOJI.get(m.group(1), m.group(0)), text)


def plain_text(obj: Any) -> str:
    """A ``plain_text`` object (or a bare string) as the characters Slack shows."""
    if isinstance(obj, str):
        return emojize(obj)
    if not isinstance(obj, dict):
        return ""
    text = str(obj.get("text", ""))
    return text if obj.get("emoji", True) is False else emojize(text)


def text_html(obj: Any, names: Mapping[str, str], me: str | None = None) -> str:
    if isinstance(obj, str):
        return plain_html(obj)
    if not isinstance(obj, dict):
        return ""
    text = str(obj.get("text", ""))
    if obj.get("type") == "mrkdwn":
        return mrkdwn_html(text, names, me)
    return (
        f'<span class="plain">{plain_html(text, emoji=obj.get("emoji", True) is not False)}</span>'
    )


def confirm_json(confirm: Any, names: Mapping[str, str]) -> JSONDict | None:
    """A button's ``confirm`` object as the page's confirmation dialog shows it.

    Labels are plain values (the page sets them as text); the explanation is HTML rendered
    and escaped here, since Slack formats it when it is mrkdwn. Slack requires all four
    texts; the fallbacks only keep a sloppy app's dialog usable instead of blank.
    """
    if not isinstance(confirm, dict):
        return None
    style = confirm.get("style")
    return {
        "title": plain_text(confirm.get("title")) or "Are you sure?",
        "html": text_html(confirm.get("text"), names),
        "confirm": plain_text(confirm.get("confirm")) or "Yes",
        "deny": plain_text(confirm.get("deny")) or "Cancel",
        # Slack's documented default is primary
        "style": style if style in ("primary", "danger") else "primary",
    }


def button_html(button: JSONDict, block_id: str | None, names: Mapping[str, str]) -> str:
    style = button.get("style")
    cls = "bk-button" + (f" {style}" if style in ("primary", "danger") else "")
    attrs = {
        "data-action-id": str(button.get("action_id", "")),
        "data-value": "" if button.get("value") is None else str(button["value"]),
        "data-has-value": "1" if button.get("value") is not None else "0",
        "data-block-id": block_id or "",
    }
    url = button.get("url")
    if isinstance(url, str) and urlsplit(url).scheme.lower() in ("http", "https"):
        attrs["data-url"] = url
    confirm = confirm_json(button.get("confirm"), names)
    if confirm is not None:
        attrs["data-confirm"] = json.dumps(confirm, ensure_ascii=False)
        attrs["aria-haspopup"] = "dialog"
    rendered = " ".join(f'{k}="{esc(v)}"' for k, v in attrs.items())
    label = text_html(button.get("text"), names)
    return f'<button type="button" class="{cls}" {rendered}>{label}</button>'


def element_html(el: JSONDict, block_id: str | None, names: Mapping[str, str]) -> str:
    kind = el.get("type")
    if kind == "button":
        return button_html(el, block_id, names)
    if kind == "image":
        return (
            f'<span class="bk-alt" title="image">🖼 {esc(str(el.get("alt_text", "image")))}</span>'
        )
    if kind in ("mrkdwn", "plain_text"):
        return text_html(el, names)
    return f'<span class="bk-element">{esc(blockkit.render_element(el, names))}</span>'


def block_html(block: JSONDict, names: Mapping[str, str], me: str | None = None) -> str:
    kind = block.get("type")
    block_id = block.get("block_id") if isinstance(block.get("block_id"), str) else None
    if kind == "section":
        parts = []
        if "text" in block:
            parts.append(f'<div class="bk-text">{text_html(block["text"], names, me)}</div>')
        fields = [f for f in block.get("fields") or [] if isinstance(f, dict)]
        if fields:
            cells = "".join(
                f'<div class="bk-field">{text_html(f, names, me)}</div>' for f in fields
            )
            parts.append(f'<div class="bk-fields">{cells}</div>')
        acc = block.get("accessory")
        accessory = (
            f'<div class="bk-accessory">{element_html(acc, block_id, names)}</div>'
            if isinstance(acc, dict)
            else ""
        )
        return (
            f'<div class="bk-section"><div class="bk-section-body">{"".join(parts)}</div>'
            f"{accessory}</div>"
        )
    if kind == "context":
        items = "".join(
            f'<span class="bk-context-item">{element_html(e, block_id, names)}</span>'
            for e in block.get("elements") or []
            if isinstance(e, dict)
        )
        return f'<div class="bk-context">{items}</div>'
    if kind == "divider":
        return '<hr class="bk-divider">'
    if kind == "header":
        return f'<div class="bk-header">{text_html(block.get("text"), names)}</div>'
    if kind == "actions":
        items = "".join(
            element_html(e, block_id, names)
            for e in block.get("elements") or []
            if isinstance(e, dict)
        )
        return f'<div class="bk-actions">{items}</div>'
    if kind == "image":
        alt = block.get("title") or block.get("alt_text", "image")
        return f'<div class="bk-image">🖼 {esc(blockkit.render_text_object(alt, names))}</div>'
    if kind == "markdown":
        return f'<div class="bk-text">{mrkdwn_html(str(block.get("text", "")), names, me)}</div>'
    lines = blockkit.render_block(block, names)
    return f'<div class="bk-other">{esc(chr(10).join(lines))}</div>'


def attachment_html(att: JSONDict, names: Mapping[str, str], me: str | None = None) -> str:
    parts = []
    if att.get("pretext"):
        parts.append(
            f'<div class="att-pretext">{mrkdwn_html(str(att["pretext"]), names, me)}</div>'
        )
    if att.get("title"):
        parts.append(f'<div class="att-title">{plain_html(str(att["title"]))}</div>')
    if att.get("text"):
        parts.append(f'<div class="bk-text">{mrkdwn_html(str(att["text"]), names, me)}</div>')
    fields = [f for f in att.get("fields") or [] if isinstance(f, dict)]
    if fields:
        cells = "".join(
            f'<div class="bk-field"><b>{esc(str(f.get("title", "")))}</b>\n'
            f"{mrkdwn_html(str(f.get('value', '')), names, me)}</div>"
            for f in fields
        )
        parts.append(f'<div class="bk-fields">{cells}</div>')
    parts.extend(block_html(b, names, me) for b in att.get("blocks") or [] if isinstance(b, dict))
    if att.get("footer"):
        parts.append(f'<div class="bk-context">{mrkdwn_html(str(att["footer"]), names, me)}</div>')
    if not parts and att.get("fallback"):
        parts.append(esc(str(att["fallback"])))
    color = str(att.get("color", ""))
    return (
        f'<div class="attachment" data-color="{esc(color)}">'
        f'<div class="att-body">{"".join(parts)}</div></div>'
    )


def message_html(msg: Message, names: Mapping[str, str], me: str | None = None) -> str:
    """The body as Slack draws it: the blocks when there are any, else the text."""
    blocks = [b for b in msg.blocks if isinstance(b, dict)]
    if blocks:
        body = "".join(block_html(b, names, me) for b in blocks)
    else:
        body = f'<div class="bk-text">{mrkdwn_html(msg.text, names, me)}</div>'
    body += "".join(attachment_html(a, names, me) for a in msg.attachments if isinstance(a, dict))
    return body


# -- modals -------------------------------------------------------------------------------
#: what Slack's client says in a modal when the app did not answer its submit
FAILURE_TEXT = "We had some trouble connecting. Try again?"


def input_json(block: JSONDict, names: Mapping[str, str]) -> JSONDict:
    """An ``input`` block: plain values for a ``plain_text_input`` (the page builds the field
    itself, so that polling never replaces what the person is typing); any other element,
    which the emulator cannot submit, as read-only HTML."""
    element = block.get("element")
    label = plain_text(block.get("label"))
    if not isinstance(element, dict) or element.get("type") != "plain_text_input":
        kind = element.get("type", "?") if isinstance(element, dict) else "?"
        shown = blockkit.render_element(element, names) if isinstance(element, dict) else ""
        return {
            "type": "html",
            "html": (
                f'<div class="modal-unsupported"><b>{esc(label)}</b>\n'
                f"{esc(shown)} <i>({esc(str(kind))} is not emulated)</i></div>"
            ),
        }
    return {
        "type": "input",
        # the same key submit_view reports errors by (views.View.inputs)
        "block_id": str(block.get("block_id", "")),
        "action_id": str(element.get("action_id", "")),
        "label": label,
        "hint": plain_text(block.get("hint")),
        "optional": bool(block.get("optional", False)),
        "multiline": bool(element.get("multiline", False)),
        "max_length": _count(element.get("max_length")),
        "placeholder": plain_text(element.get("placeholder")),
        "initial_value": str(element.get("initial_value") or ""),
    }


def modal_json(
    view: View,
    names: Mapping[str, str],
    me: str | None = None,
    errors: Mapping[str, str] | None = None,
    failure: str | None = None,
) -> JSONDict:
    """An open modal as the page draws it, with what the last submit left on screen."""
    blocks: list[JSONDict] = []
    for block in view.blocks:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "input":
            blocks.append(input_json(block, names))
        else:
            blocks.append({"type": "html", "html": block_html(block, names, me)})
    return {
        "id": view.id,
        "hash": view.hash,
        "title": emojize(view.title),
        "submit": emojize(view.submit_label) if view.spec.get("submit") else None,
        "close": emojize(view.close_label),
        "blocks": blocks,
        "errors": dict(errors or {}),
        "failure": failure_text(failure),
    }


def failure_text(failure: str | None) -> str | None:
    return f"{FAILURE_TEXT} ({failure})" if failure else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


@dataclass
class _Shown:
    """What the last submit of one modal left on the person's screen."""

    view_id: str
    errors: dict[str, str] = field(default_factory=dict)
    failure: str | None = None


# -- the page's data -----------------------------------------------------------------------
def _static(name: str) -> str:
    return (importlib.resources.files("bot.local.slackemu") / "static" / name).read_text(
        encoding="utf-8"
    )


class UiError(Exception):
    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


class BrowserView:
    def __init__(self, emulator: SlackEmulator, reactions: Sequence[str] = DEFAULT_REACTIONS):
        self.emu = emulator
        self.ws: Workspace = emulator.workspace
        self.reactions = tuple(dict.fromkeys(reactions)) or DEFAULT_REACTIONS
        #: by user id; Slack keeps a modal's errors on screen until the next submit
        self._shown: dict[str, _Shown] = {}

    @property
    def has_app(self) -> bool:
        """Whether anything receives what people do (over HTTP or Socket Mode)."""
        sockets = getattr(self.emu, "socket_connections", 0)
        return bool(self.emu.request_url) or bool(sockets)

    def install(self, app: web.Application) -> None:
        app.router.add_get("/", self.page)
        app.router.add_get("/ui/app.js", self.asset)
        app.router.add_get("/ui/app.css", self.asset)
        app.router.add_get("/ui/state", self.state_handler)
        app.router.add_post("/ui/command", self._action(self.command))
        app.router.add_post("/ui/message", self._action(self.message))
        app.router.add_post("/ui/reaction", self._action(self.reaction))
        app.router.add_post("/ui/button", self._action(self.button))
        app.router.add_post("/ui/view", self._action(self.view_action))

    # -- HTTP ---------------------------------------------------------------------------
    async def page(self, request: web.Request) -> web.Response:
        return web.Response(
            text=_static("index.html"),
            content_type="text/html",
            charset="utf-8",
            headers=_NO_STORE | {"Content-Security-Policy": CSP},
        )

    async def asset(self, request: web.Request) -> web.Response:
        name = request.path.rsplit("/", 1)[1]
        ctype = "text/javascript" if name.endswith(".js") else "text/css"
        return web.Response(
            text=_static(name), content_type=ctype, charset="utf-8", headers=_NO_STORE
        )

    async def state_handler(self, request: web.Request) -> web.Response:
        try:
            data = self.state(request.query.get("channel", ""), request.query.get("user", ""))
        except UiError as err:
            return web.json_response({"ok": False, "error": err.error}, status=err.status)
        return web.json_response(data, headers=_NO_STORE)

    def _action(
        self, handler: Callable[[JSONDict], Awaitable[JSONDict]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def run(request: web.Request) -> web.Response:
            if "json" not in request.content_type:
                return web.json_response({"ok": False, "error": "expected JSON"}, status=415)
            try:
                body = json.loads(await request.read())
                if not isinstance(body, dict):
                    raise ValueError
            except ValueError:
                return web.json_response({"ok": False, "error": "invalid JSON"}, status=400)
            try:
                result = await handler(body)
            except UiError as err:
                return web.json_response({"ok": False, "error": err.error}, status=err.status)
            return web.json_response({"ok": True, **result})

        return run

    # -- acting as a member -------------------------------------------------------------
    async def command(self, body: JSONDict) -> JSONDict:
        user, channel = self._actor(body)
        text = _string(body, "text").strip()
        if not re.fullmatch(r"/[\w\-.]+(\s.*)?", text, re.DOTALL):
            raise UiError(400, "a slash command starts with / and a name, e.g. /release sandbox")
        command, _, args = text.partition(" ")
        if not self.has_app:
            shown = f"`{command}` failed: no app is connected to this workspace yet."
            self.ws.post_ephemeral(channel.id, to=user.id, user=SLACKBOT_ID, text=shown)
            return {"status": 0, "error": "no_app"}
        result = await self.emu.slash_command(user.id, channel.id, command, args.strip())
        return {"status": result.status, "error": result.error}

    async def message(self, body: JSONDict) -> JSONDict:
        user, channel = self._actor(body)
        text = _string(body, "text")
        if not text.strip():
            raise UiError(400, "empty message")
        thread_ts = body.get("thread_ts") if isinstance(body.get("thread_ts"), str) else None
        if not self.has_app:
            msg = self.ws.post(channel.id, user=user.id, text=text, thread_ts=thread_ts)
        else:
            msg = await self.emu.post_as_user(user.id, channel.id, text, thread_ts=thread_ts)
        return {"ts": msg.ts}

    async def reaction(self, body: JSONDict) -> JSONDict:
        user, channel = self._actor(body)
        ts, name = _string(body, "ts"), _string(body, "name").strip(":")
        add = _string(body, "action") != "remove"
        msg = self.ws.get(channel.id, ts)
        if msg is None:
            raise UiError(404, f"no message {ts} in #{channel.name}")
        if not re.fullmatch(r"[a-z0-9_+\-']{1,100}", name):
            raise UiError(400, f"not an emoji name: {name!r}")
        if not self.has_app:
            done = (self.ws.react if add else self.ws.unreact)(msg, user.id, name)
            if not done:
                raise UiError(409, "nothing to change")
            return {"status": 0}
        try:
            if add:
                status = await self.emu.add_reaction(user.id, channel.id, ts, name)
            else:
                status = await self.emu.remove_reaction(user.id, channel.id, ts, name)
        except ValueError as err:
            raise UiError(409, str(err)) from None
        return {"status": status}

    async def button(self, body: JSONDict) -> JSONDict:
        user, channel = self._actor(body)
        ts, action_id = _string(body, "ts"), _string(body, "action_id")
        value = body.get("value") if isinstance(body.get("value"), str) else None
        if not self.has_app:
            shown = "That button does nothing: no app is connected to this workspace yet."
            self.ws.post_ephemeral(channel.id, to=user.id, user=SLACKBOT_ID, text=shown)
            return {"status": 0, "error": "no_app"}
        try:
            status = await self.emu.click_button(user.id, channel.id, ts, action_id, value)
        except LookupError as err:
            raise UiError(404, str(err)) from None
        return {"status": status}

    async def view_action(self, body: JSONDict) -> JSONDict:
        user = self._member(body)
        action = _string(body, "action")
        if action not in ("submit", "close"):
            raise UiError(400, "action must be submit or close")
        view = self.emu.open_view(user.id)
        wanted = body.get("view_id")
        if view is None or (isinstance(wanted, str) and wanted and wanted != view.id):
            # a second tab, or the app replaced it: never submit a form the person did not see
            raise UiError(409, "that form is no longer open")
        if action == "close":
            self.emu.close_view(user.id)
            self._shown.pop(user.id, None)
            return {"closed": True, "errors": {}, "failure": None}
        values = body.get("values", {})
        if not isinstance(values, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in values.items()
        ):
            raise UiError(400, "values must map action_id to text")
        if not self.has_app:
            # the app that opened it went away; Slack keeps the form and says so
            self._shown[user.id] = _Shown(view.id, {}, "no_app")
            return {"status": 0, "closed": False, "errors": {}, "failure": failure_text("no_app")}
        result = await self.emu.submit_view(user.id, values)
        if result.closed:
            self._shown.pop(user.id, None)
        else:
            self._shown[user.id] = _Shown(view.id, dict(result.errors), result.failure)
        return {
            "status": result.status,
            "closed": result.closed,
            "errors": result.errors,
            "failure": failure_text(result.failure),
        }

    def _member(self, body: JSONDict) -> User:
        user = self._user(_string(body, "user"))
        if user is None or user.is_bot:
            raise UiError(400, "pick a member to act as")
        return user

    def _actor(self, body: JSONDict) -> tuple[User, Channel]:
        user = self._member(body)
        channel = self._channel(_string(body, "channel"))
        if channel is None:
            raise UiError(404, "unknown channel")
        return user, channel

    # -- what the acting user sees ------------------------------------------------------
    def _user(self, ref: str) -> User | None:
        users = self.ws.users
        return users.get(ref) or next((u for u in users.values() if u.name == ref), None)

    def _channel(self, ref: str) -> Channel | None:
        if not ref:
            return None
        return self.ws.resolve_channel(ref)

    def people(self) -> list[User]:
        return [u for u in self.ws.users.values() if not u.is_bot and not u.deleted]

    def state(self, channel_ref: str, user_ref: str) -> JSONDict:
        channels = [c for c in self.ws.channels.values() if not c.is_im]
        channel = self._channel(channel_ref) if channel_ref else None
        if channel is None and channel_ref:
            raise UiError(404, f"unknown channel {channel_ref!r}")
        channel = channel or (channels[0] if channels else None)
        people = self.people()
        me = self._user(user_ref) if user_ref else None
        if me is None or me.is_bot:
            me = people[0] if people else None
        names = self.ws.names()
        reactions = [{"name": n, "emoji": EMOJI.get(n, "")} for n in self.reactions]
        ident = self.ws.identity
        out: JSONDict = {
            "team": {"name": ident.team_name, "bot.domain": ident.team_domain},
            "connected": self.has_app,
            "me": me.id if me else None,
            "people": [_person(u) for u in people],
            "channels": [{"id": c.id, "name": c.name} for c in channels],
            "reactions": reactions,
            "poll_ms": POLL_INTERVAL_MS,
            "modal": self._modal(me.id, names) if me else None,
            "channel": None,
            "members": [],
            "messages": [],
        }
        if channel is None:
            return out
        users = self.ws.users
        out["channel"] = {
            "id": channel.id,
            "name": channel.name,
            "topic": channel.topic,
            "is_private": channel.is_private,
        }
        out["members"] = [
            _person(u)
            for u in users.values()
            if channel.has_member(u.id) and u.id != SLACKBOT_ID and not u.deleted
        ]
        mine = self.ws.ephemerals(me.id, channel.id) if me else []
        top = sorted(
            [*self.ws.messages(channel.id), *(e for e in mine if not e.thread_ts)],
            key=lambda m: m.ts,
        )
        me_id = me.id if me else None
        messages = []
        for msg in top:
            item = self._message(msg, names, me_id)
            if not msg.is_reply and not msg.is_ephemeral:
                replies = sorted(
                    [
                        *self.ws.thread(channel.id, msg.ts),
                        *(e for e in mine if e.thread_ts == msg.ts),
                    ],
                    key=lambda m: m.ts,
                )
                item["replies"] = [self._message(r, names, me_id) for r in replies]
            messages.append(item)
        out["messages"] = messages
        return out

    def _modal(self, me: str, names: Mapping[str, str]) -> JSONDict | None:
        view = self.emu.open_view(me)
        shown = self._shown.get(me)
        if shown is not None and (view is None or shown.view_id != view.id):
            del self._shown[me]  # that modal is gone, and its errors with it
            shown = None
        if view is None:
            return None
        if shown is None:
            return modal_json(view, names, me)
        return modal_json(view, names, me, shown.errors, shown.failure)

    def _message(self, msg: Message, names: Mapping[str, str], me: str | None) -> JSONDict:
        author = self.ws.users.get(msg.user or "")
        return {
            "ts": msg.ts,
            "thread_ts": msg.thread_ts,
            "author": self.ws.author_name(msg),
            "author_id": msg.user,
            "real_name": author.real_name if author else "",
            "is_bot": bool(msg.bot_id) or bool(author and author.is_bot),
            "html": message_html(msg, names, me),
            "edited": bool(msg.edited),
            "ephemeral": msg.is_ephemeral,
            "broadcast": msg.reply_broadcast and msg.is_reply,
            "reactions": [
                {
                    "name": name,
                    "emoji": EMOJI.get(name, ""),
                    "count": len(who),
                    "users": [names.get(u, u) for u in who],
                    "mine": me in who,
                }
                for name, who in msg.reactions.items()
            ],
            "replies": [],
        }


_NO_STORE = {"Cache-Control": "no-store"}


def _person(user: User) -> JSONDict:
    return {"id": user.id, "name": user.name, "real_name": user.real_name, "is_bot": user.is_bot}


def _string(body: JSONDict, key: str) -> str:
    value = body.get(key, "")
    if not isinstance(value, str):
        raise UiError(400, f"{key} must be a string")
    return value
