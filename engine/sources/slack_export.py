"""Slack export channel files (one JSON file per channel and day): messages grouped by thread."""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from engine.ingest import IngestError, ParsedDocument
from engine.sources.common import _check_text, _one_line, _unique, _windowed


_SKIP_SUBTYPES = {"bot_add", "bot_remove", "pinned_item", "unpinned_item", "reminder_add", "message_deleted",
                  "tombstone", "joiner_notification_for_inviter", "joiner_notification", "ekm_access_denied",
                  "sh_room_created", "huddle_thread"}
_SLACK_LINK = re.compile(r"<([^<>\n]+)>")
_DATE_STEM = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _slack_name(msg: dict[str, Any], users: dict[str, str]) -> str:
    profile = msg.get("user_profile") if isinstance(msg.get("user_profile"), dict) else {}
    for value in (profile.get("display_name"), profile.get("real_name"), profile.get("name"),
                  users.get(str(msg.get("user", ""))), msg.get("username"),
                  (msg.get("bot_profile") or {}).get("name") if isinstance(msg.get("bot_profile"), dict) else None,
                  msg.get("user"), msg.get("bot_id")):
        if isinstance(value, str) and value.strip():
            return value.strip()
    return "unknown"


def _slack_clean(text: str, users: dict[str, str]) -> str:
    def link(match: re.Match) -> str:
        body = match.group(1)
        target, _, label = body.partition("|")
        if target.startswith("@"):
            uid = target[1:]
            return "@" + (label or users.get(uid) or uid)
        if target.startswith("#"):
            return "#" + (label or target[1:])
        if target.startswith("!"):
            if target.startswith("!subteam^"):
                return label if label.startswith("@") else "@" + (label or target[9:])
            if target.startswith("!date^"):
                return label or target
            return "@" + target[1:].split("^")[0]
        if label:
            plain = target.split(":", 1)[1] if target.startswith("mailto:") else target
            return label if label in (target, plain) else f"{label} ({target})"
        return target.split(":", 1)[1] if target.startswith("mailto:") else target

    text = _SLACK_LINK.sub(link, text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _slack_blocks_text(node: Any) -> list[str]:
    out: list[str] = []
    if isinstance(node, dict):
        if node.get("type") in ("text", "mrkdwn", "plain_text") and isinstance(node.get("text"), str):
            out.append(node["text"])
        elif node.get("type") == "link" and isinstance(node.get("url"), str):
            out.append(node.get("text") or node["url"])
        for key, value in node.items():
            if key != "text" and isinstance(value, (list, dict)):
                out.extend(_slack_blocks_text(value))
            elif key == "text" and isinstance(value, dict):
                out.extend(_slack_blocks_text(value))
    elif isinstance(node, list):
        for item in node:
            out.extend(_slack_blocks_text(item))
    return out


def _slack_body(msg: dict[str, Any], users: dict[str, str]) -> str:
    parts: list[str] = []
    text = msg.get("text")
    if isinstance(text, str) and text.strip():
        parts.append(text.strip())
    for att in msg.get("attachments") or []:
        if not isinstance(att, dict):
            continue
        lines = []
        for key in ("pretext", "author_name", "title"):
            if isinstance(att.get(key), str) and att[key].strip():
                value = att[key].strip()
                if key == "title" and isinstance(att.get("title_link"), str) and att["title_link"]:
                    value = f"{value} ({att['title_link']})"
                lines.append(value)
        if isinstance(att.get("text"), str) and att["text"].strip():
            lines.append(att["text"].strip())
        for fld in att.get("fields") or []:
            if isinstance(fld, dict) and (fld.get("title") or fld.get("value")):
                lines.append(f"{fld.get('title', '')}: {fld.get('value', '')}".strip(": "))
        if not lines and isinstance(att.get("fallback"), str) and att["fallback"].strip():
            lines.append(att["fallback"].strip())
        if isinstance(att.get("footer"), str) and att["footer"].strip() and lines:
            lines.append(att["footer"].strip())
        if lines:
            parts.append("\n".join(lines))
    for f in msg.get("files") or []:
        if isinstance(f, dict):
            name = f.get("title") or f.get("name")
            if isinstance(name, str) and name.strip():
                parts.append(f"[file: {name.strip()}]")
    if not parts and msg.get("blocks"):
        blocks = " ".join(t.strip() for t in _slack_blocks_text(msg["blocks"]) if t.strip())
        if blocks:
            parts.append(blocks)
    return _slack_clean("\n".join(parts), users).strip()


def _ts_key(ts: str, source: str, index: int) -> tuple[int, int]:
    whole, _, frac = ts.partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()):
        raise IngestError(f"{source}: message {index} has a malformed ts {ts!r}")
    return int(whole), int((frac + "000000")[:6])


def parse_slack_export(text: str, *, source: str, digest: str) -> ParsedDocument:
    """One channel-day file of a Slack export (`<channel>/<YYYY-MM-DD>.json`, a JSON list of messages).

    Messages are grouped by thread (`thread_ts`; a message without one is its own thread), the parent
    first and replies in ts order. One chunk group per thread: heading = first line of the parent (or
    `Re: <first line>` when the parent was posted on another day), text = `name: message` lines with Slack
    markup resolved. Joins/leaves, `channel_*`/`group_*` notices and empty messages are skipped."""
    _check_text(text, source, "Slack messages")
    try:
        data = json.loads(text.lstrip("\ufeff"))
    except json.JSONDecodeError as exc:
        raise IngestError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from exc
    if not isinstance(data, list):
        raise IngestError(f"{source}: not a Slack export channel file: expected a JSON list of messages, "
                          f"got a JSON {type(data).__name__ if not isinstance(data, dict) else 'object'}")
    if not data:
        raise IngestError(f"{source}: Slack export file has no messages")
    for i, msg in enumerate(data):
        if not isinstance(msg, dict):
            raise IngestError(f"{source}: not a Slack export channel file: item {i} is a "
                              f"{type(msg).__name__}, not a message object")
        if not isinstance(msg.get("ts"), (str, int, float)) or ("type" in msg and not isinstance(msg["type"], str)):
            raise IngestError(f"{source}: not a Slack export channel file: item {i} has no message 'ts'")

    users: dict[str, str] = {}
    for msg in data:
        profile = msg.get("user_profile")
        if isinstance(profile, dict) and msg.get("user"):
            name = profile.get("display_name") or profile.get("real_name") or profile.get("name")
            if isinstance(name, str) and name.strip():
                users.setdefault(str(msg["user"]), name.strip())

    threads: dict[str, list[tuple[tuple[int, int], str, str, dict]]] = {}
    seen_ts: set[str] = set()
    for i, msg in enumerate(data):
        if msg.get("type", "message") != "message" or msg.get("hidden"):
            continue
        subtype = str(msg.get("subtype") or "")
        if subtype in _SKIP_SUBTYPES or subtype.startswith(("channel_", "group_")):
            continue
        ts = str(msg["ts"])
        key = _ts_key(ts, source, i)
        if ts in seen_ts:
            continue
        seen_ts.add(ts)
        body = _slack_body(msg, users)
        if not body:
            continue
        root = str(msg.get("thread_ts") or ts)
        _ts_key(root, source, i)
        threads.setdefault(root, []).append((key, ts, body, msg))

    path = Path(source)
    channel = path.parent.name if _DATE_STEM.match(path.stem) and path.parent.name else ""
    title = f"#{channel} {path.stem}" if channel else path.stem
    chunks: list[dict[str, Any]] = []
    thread_list: list[str] = []
    participants: list[str] = []
    ordered = sorted(threads.items(), key=lambda item: min(m[0] for m in item[1]))
    for root, messages in ordered:
        messages.sort(key=lambda m: m[0])
        parent = next((m for m in messages if m[1] == root), None)
        if parent is not None:
            messages.remove(parent)
            messages.insert(0, parent)
        lines = []
        for _, _, body, msg in messages:
            name = _slack_name(msg, users)
            participants.append(name)
            lines.append(f"{name}: {body}")
        first = messages[0][2]
        first_line = next((ln for ln in first.splitlines() if ln.strip()), first)
        heading = _one_line(re.sub(r" \((?:https?|mailto):[^)\s]*\)", "", first_line), 100)
        if parent is None:
            heading = "Re: " + heading
        _windowed(chunks, title, heading, "\n".join(lines), "slack", [])
        thread_list.append(root)
    if not chunks:
        raise IngestError(f"{source}: nothing to index: every message is a join/leave notice or empty")

    first_ts = min(m[0][0] for messages in threads.values() for m in messages)
    date = path.stem if _DATE_STEM.match(path.stem) else \
        datetime.fromtimestamp(first_ts, tz=timezone.utc).strftime("%Y-%m-%d")
    metadata: dict[str, Any] = {"date": date, "threads": thread_list,
                                "messages": sum(len(messages) for messages in threads.values()),
                                "participants": _unique(participants)}
    if channel:
        metadata["channel"] = channel
    return ParsedDocument(source=source, source_type="slack", title=title, content_hash=digest, services=[],
                          chunks=chunks, metadata=metadata)
