"""Flatten Block Kit and mrkdwn to the plain text a person would read in the client.

Formatting markers (``*bold*``, backticks) are kept: they are what the author wrote
and tests often assert on them; only the angle-bracket syntax is resolved.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

JSONDict = dict[str, Any]

_TOKEN = re.compile(r"<([^<>\n]+)>")


def render_mrkdwn(text: str, names: Mapping[str, str]) -> str:
    """``<url|label>`` -> ``label (url)``, ``<@U1>`` -> ``@alice``, ``<!here>`` -> ``@here``."""

    def resolve(m: re.Match[str]) -> str:
        inner = m.group(1)
        target, _, label = inner.partition("|")
        if target.startswith("@"):
            uid = target[1:]
            return "@" + names.get(uid, label.lstrip("@") or uid)
        if target.startswith("#"):
            cid = target[1:]
            return "#" + names.get(cid, label.lstrip("#") or cid)
        if target.startswith("!"):
            if label:
                return label
            special = target[1:]
            if special.startswith("subteam^"):
                return "@" + special.removeprefix("subteam^")
            return "@" + special
        if not label or label == target:
            return target.removeprefix("mailto:")
        return f"{label} ({target})"

    out = _TOKEN.sub(resolve, text)
    # Slack escapes only these three; undo them after links are resolved.
    return out.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def render_text_object(obj: Any, names: Mapping[str, str]) -> str:
    if isinstance(obj, str):
        return obj
    if not isinstance(obj, dict):
        return ""
    text = str(obj.get("text", ""))
    if obj.get("type") == "mrkdwn":
        return render_mrkdwn(text, names)
    return text


def render_element(el: JSONDict, names: Mapping[str, str]) -> str:
    """One interactive element as a bracketed label, e.g. ``[Approve]``."""
    kind = el.get("type", "")
    if kind == "button":
        return f"[{render_text_object(el.get('text'), names)}]"
    if kind == "overflow":
        return "[...]"
    if kind.endswith("_select") or kind.endswith("select"):
        initial = el.get("initial_option") or {}
        label = render_text_object(initial.get("text") or el.get("placeholder"), names)
        return f"[{label or 'select'} v]"
    if kind in ("checkboxes", "radio_buttons"):
        opts = [render_text_object(o.get("text"), names) for o in el.get("options", [])]
        return "[" + " / ".join(opts) + "]"
    if kind == "datepicker":
        return f"[{el.get('initial_date', 'date')}]"
    if kind == "image":
        return ""
    if kind in ("plain_text", "mrkdwn"):
        return render_text_object(el, names)
    return f"[{kind}]"


def _render_rich(elements: list[JSONDict], names: Mapping[str, str]) -> str:
    parts: list[str] = []
    for el in elements:
        kind = el.get("type")
        if kind == "text":
            parts.append(str(el.get("text", "")))
        elif kind == "link":
            url = str(el.get("url", ""))
            label = el.get("text")
            parts.append(f"{label} ({url})" if label and label != url else url)
        elif kind == "user":
            uid = str(el.get("user_id", ""))
            parts.append("@" + names.get(uid, uid))
        elif kind == "channel":
            cid = str(el.get("channel_id", ""))
            parts.append("#" + names.get(cid, cid))
        elif kind == "emoji":
            parts.append(f":{el.get('name', '')}:")
        elif kind == "broadcast":
            parts.append("@" + str(el.get("range", "here")))
        elif kind == "usergroup":
            parts.append("@" + str(el.get("usergroup_id", "")))
        elif kind == "date":
            parts.append(str(el.get("fallback", el.get("timestamp", ""))))
    return "".join(parts)


def _render_rich_text(block: JSONDict, names: Mapping[str, str]) -> list[str]:
    lines: list[str] = []
    for section in block.get("elements", []):
        kind = section.get("type")
        if kind == "rich_text_list":
            for i, item in enumerate(section.get("elements", []), start=1):
                bullet = f"{i}." if section.get("style") == "ordered" else "•"
                lines.append(f"{bullet} {_render_rich(item.get('elements', []), names)}")
            continue
        text = _render_rich(section.get("elements", []), names)
        if kind == "rich_text_quote":
            lines.extend("> " + ln for ln in text.split("\n"))
        elif kind == "rich_text_preformatted":
            lines.append("```" + text + "```")
        else:
            lines.extend(text.split("\n"))
    return lines


def render_block(block: JSONDict, names: Mapping[str, str]) -> list[str]:
    kind = block.get("type")
    if kind == "header":
        return [render_text_object(block.get("text"), names)]
    if kind == "divider":
        return ["---"]
    if kind == "section":
        lines: list[str] = []
        if "text" in block:
            lines.extend(render_text_object(block["text"], names).split("\n"))
        for f in block.get("fields", []):
            lines.extend(render_text_object(f, names).split("\n"))
        acc = block.get("accessory")
        if isinstance(acc, dict):
            label = render_element(acc, names)
            if label and lines:
                lines[-1] = f"{lines[-1]} {label}"
            elif label:
                lines.append(label)
        return lines
    if kind == "context":
        texts = [render_element(e, names) for e in block.get("elements", [])]
        return [" ".join(t for t in texts if t)]
    if kind == "actions":
        return [" ".join(render_element(e, names) for e in block.get("elements", []))]
    if kind == "image":
        alt = block.get("title") or block.get("alt_text", "")
        return [f"[image: {render_text_object(alt, names)}]"]
    if kind == "markdown":
        return str(block.get("text", "")).split("\n")
    if kind == "rich_text":
        return _render_rich_text(block, names)
    if kind == "input":
        label = render_text_object(block.get("label"), names)
        return [f"{label}: {render_element(block.get('element', {}), names)}"]
    return [f"[{kind} block]"]


def render_blocks(blocks: list[JSONDict], names: Mapping[str, str]) -> list[str]:
    lines: list[str] = []
    for block in blocks:
        lines.extend(render_block(block, names))
    return lines


def _render_attachment(att: JSONDict, names: Mapping[str, str]) -> list[str]:
    lines: list[str] = []
    for key in ("pretext", "title", "text"):
        if att.get(key):
            lines.extend(render_mrkdwn(str(att[key]), names).split("\n"))
    for f in att.get("fields", []):
        lines.append(f"{f.get('title', '')}: {render_mrkdwn(str(f.get('value', '')), names)}")
    lines.extend(render_blocks(att.get("blocks", []), names))
    if att.get("footer"):
        lines.append(render_mrkdwn(str(att["footer"]), names))
    if not lines and att.get("fallback"):
        lines.append(str(att["fallback"]))
    return ["| " + ln for ln in lines]


def render_message(
    text: str,
    blocks: list[JSONDict],
    attachments: list[JSONDict],
    names: Mapping[str, str],
) -> str:
    """With blocks present, ``text`` is only the notification fallback and is not shown."""
    lines = render_blocks(blocks, names) if blocks else render_mrkdwn(text, names).split("\n")
    for att in attachments:
        lines.extend(_render_attachment(att, names))
    return "\n".join(lines).strip("\n")


def iter_buttons(blocks: list[JSONDict]) -> Iterator[tuple[str | None, JSONDict]]:
    for block in blocks:
        block_id = block.get("block_id")
        if block.get("type") == "actions":
            for el in block.get("elements", []):
                if el.get("type") == "button":
                    yield block_id, el
        acc = block.get("accessory")
        if isinstance(acc, dict) and acc.get("type") == "button":
            yield block_id, acc
