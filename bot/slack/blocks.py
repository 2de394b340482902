"""Cards as Block Kit. Slack refuses a whole message that breaks one limit (50 blocks, 3000-character
sections, 75-character button labels...), so everything is cut to fit here, with "…" and a link to
the full card, rather than failing at send time."""
from __future__ import annotations

import json
from typing import Any

from engine.cards import (AlertActionsBlock, Card, CardStep, CitationsBlock, HypothesesBlock, LearnBlock,
                          LinksBlock, StepsBlock, TextBlock, alert_action_label, factor_breakdown)
from engine.models import Hypothesis
from engine.planner import risk_label

MAX_BLOCKS = 50
MAX_SECTION = 3000
MAX_HEADER = 150
MAX_BUTTON_LABEL = 75
MAX_BUTTON_VALUE = 2000
MAX_CONTEXT_ELEMENTS = 10
MAX_FALLBACK_TEXT = 3000

APPROVE = "warroom_approve"
REJECT = "warroom_reject"
FEEDBACK_UP = "warroom_feedback_up"
FEEDBACK_DOWN = "warroom_feedback_down"
ALERT_ACTION = "warroom_alert"   # + _noise / _silence / _investigate; the value names the alert group
LEARN = "warroom_learn"     # warroom_learn_<draft|approve|edit|reject>_<incident or draft id>

_STYLE_PREFIX = {"warning": ":warning: ", "error": ":x: ", "success": ":white_check_mark: ", "normal": ""}
_STATUS_ICON = {"proposed": ":hourglass:", "queued": ":arrow_forward:", "running": ":gear:",
                "succeeded": ":white_check_mark:", "failed": ":x:", "rejected": ":no_entry_sign:",
                "refused": ":no_entry:", "interrupted": ":warning:", "approved": ":ballot_box_with_check:",
                "expired": ":hourglass_flowing_sand:", "skipped": ":fast_forward:"}


def truncate(text: str, limit: int, more_url: str | None = None) -> str:
    """Cut `text` to `limit` characters, ending in "…" and, when there is one, a link to the full card."""
    if len(text) <= limit:
        return text
    tail = f"… <{more_url}|full text>" if more_url else "…"
    return text[: max(0, limit - len(tail))] + tail


def escape(text: str) -> str:
    """Slack mrkdwn control characters; user and model text must not become links or mentions."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def link(url: str, label: str) -> str:
    if url.startswith(("http://", "https://")):
        return f"<{url}|{escape(label).replace('|', '¦')}>"
    return f"{escape(label)} (`{escape(url)}`)"


def _section(text: str, more_url: str | None) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": truncate(text or " ", MAX_SECTION, more_url)}}


def _context(texts: list[str], more_url: str | None) -> dict[str, Any]:
    elements = [{"type": "mrkdwn", "text": truncate(t or " ", MAX_SECTION, more_url)} for t in texts if t]
    return {"type": "context", "elements": elements[:MAX_CONTEXT_ELEMENTS] or [{"type": "mrkdwn", "text": " "}]}


def _button(label: str, action_id: str, value: str, style: str | None = None,
            confirm: dict | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {"type": "button", "action_id": action_id[:255], "value": value[:MAX_BUTTON_VALUE],
                              "text": {"type": "plain_text", "text": truncate(label, MAX_BUTTON_LABEL), "emoji": True}}
    if style:
        button["style"] = style
    if confirm:
        button["confirm"] = confirm
    return button


def _text_blocks(block: TextBlock, more_url: str | None) -> list[dict]:
    if block.style == "muted":
        return [_context([block.text], more_url)]
    return [_section(_STYLE_PREFIX.get(block.style, "") + block.text, more_url)]


def _hypothesis_blocks(i: int, h: Hypothesis, service: str | None, more_url: str | None) -> list[dict]:
    lines = [f"*{i}. {escape(h.title)}* — confidence *{h.confidence:.0%}*"]
    if h.cause:
        lines.append(escape(h.cause))
    for e in h.evidence:
        where = f" — {link(e.source, 'source')}" if e.source else ""
        lines.append(f"• _{e.kind.replace('_', ' ')}_: {escape(e.text)}{where}")
    value = json.dumps({"title": h.title[:300], "service": service})
    return [
        _section("\n".join(lines), more_url),
        _context([f"score: {factor_breakdown(h)}"], more_url),
        {"type": "actions", "block_id": f"feedback_{i}", "elements": [
            _button(":+1: helpful", f"{FEEDBACK_UP}_{i}", value),
            _button(":-1: wrong", f"{FEEDBACK_DOWN}_{i}", value)]},
    ]


def _hypotheses_blocks(block: HypothesesBlock, more_url: str | None) -> list[dict]:
    if not block.items:
        return [_section("*Hypotheses:* none with enough evidence yet.", more_url)]
    out: list[dict] = []
    for i, h in enumerate(block.items, 1):
        out.extend(_hypothesis_blocks(i, h, block.service, more_url))
    return out


def _citations_blocks(block: CitationsBlock, more_url: str | None) -> list[dict]:
    lines = ["*Sources*"]
    for i, c in enumerate(block.items, 1):
        lines.append(f"[{i}] {link(c.source, c.title)} — doc {c.document_id}, chunk {c.chunk_id}, "
                     f"score {c.score:.3f}")
    return [_section("\n".join(lines), more_url)]


def _confirm(step: CardStep) -> dict[str, Any] | None:
    if step.risk == "read_only":
        return None
    return {"title": {"type": "plain_text", "text": "Run this step?"},
            "text": {"type": "mrkdwn", "text": truncate(
                f"*{escape(step.title)}* ({risk_label(step.risk)}) on {escape(step.target or step.connector)}",
                300)},
            "confirm": {"type": "plain_text", "text": "Approve"},
            "deny": {"type": "plain_text", "text": "Cancel"}}


def step_line(step: CardStep) -> str:
    where = escape(step.connector + (f" → {step.target}" if step.target else ""))
    icon = _STATUS_ICON.get(step.status, "")
    status = step.status + (f" by {escape(step.decided_by)}" if step.decided_by else "")
    line = f"{step.index}. *{escape(step.title)}* — {where} · {risk_label(step.risk)} · {icon} {status}"
    if step.flow:
        line += f" · _{escape(step.flow)}_"
    if step.note:
        line += f"\n> {escape(step.note)}"
    return line


def _steps_blocks(block: StepsBlock, more_url: str | None) -> list[dict]:
    out: list[dict] = [_section(f"*{escape(block.title)}*", more_url)]
    for step in block.items:
        out.append(_section(step_line(step), more_url))
        if step.actions:
            buttons = []
            if "approve" in step.actions:
                buttons.append(_button("Approve", f"{APPROVE}_{step.step_id}", str(step.step_id), "primary",
                                       _confirm(step)))
            if "reject" in step.actions:
                buttons.append(_button("Reject", f"{REJECT}_{step.step_id}", str(step.step_id), "danger"))
            if "retry" in step.actions:  # an Approve of an interrupted step; its own action id for click de-dup
                buttons.append(_button("Retry", f"{APPROVE}_{step.step_id}_retry", str(step.step_id), "primary",
                                       _confirm(step)))
            out.append({"type": "actions", "block_id": f"step_{step.step_id}", "elements": buttons})
    return out


def _links_blocks(block: LinksBlock, more_url: str | None) -> list[dict]:
    return [_context([" · ".join(link(item.url, item.title) for item in block.items)], more_url)]


def _alert_actions_blocks(block: AlertActionsBlock, more_url: str | None) -> list[dict]:
    value = json.dumps({"group": block.group_id})
    style = {"silence": "danger", "investigate": "primary"}
    return [{"type": "actions", "block_id": f"alert_{block.group_id}_{'_'.join(block.actions)}", "elements": [
        _button(alert_action_label(block, action), f"{ALERT_ACTION}_{action}", value, style.get(action))
        for action in block.actions]}]


_LEARN_BUTTONS = {"draft": ("Draft runbook", None), "approve": ("Approve", "primary"), "edit": ("Edit", None),
                  "reject": ("Reject", "danger")}


def _learn_blocks(block: LearnBlock, more_url: str | None) -> list[dict]:
    """Runbook learning buttons. Edit has no modal here (that needs views.open): its click answers with how to
    send corrected YAML (`/warroom learn edit N`)."""
    value = json.dumps({"incident_id": block.incident_id, "draft_id": block.draft_id})
    subject = block.draft_id if block.draft_id is not None else block.incident_id
    buttons = [_button(_LEARN_BUTTONS[a][0], f"{LEARN}_{a}_{subject}", value, _LEARN_BUTTONS[a][1])
               for a in block.actions]
    if not buttons:
        return []
    block_id = f"learn_{block.draft_id}" if block.draft_id is not None else f"learn_incident_{block.incident_id}"
    return [{"type": "actions", "block_id": block_id, "elements": buttons}]


_RENDERERS = {TextBlock: _text_blocks, HypothesesBlock: _hypotheses_blocks, CitationsBlock: _citations_blocks,
              StepsBlock: _steps_blocks, LinksBlock: _links_blocks, AlertActionsBlock: _alert_actions_blocks,
              LearnBlock: _learn_blocks}


def render(card: Card, *, more_url: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """(notification text, blocks) for chat.postMessage / chat.update, within every Block Kit limit."""
    blocks: list[dict] = [{"type": "header", "text": {"type": "plain_text", "emoji": True,
                                                      "text": truncate(card.title, MAX_HEADER)}}]
    if len(card.title) > MAX_HEADER:  # a header cannot carry a link: repeat the whole title where one fits
        blocks.append(_section(escape(card.title), more_url))
    for block in card.blocks:
        blocks.extend(_RENDERERS[type(block)](block, more_url))
    if len(blocks) > MAX_BLOCKS:
        dropped = len(blocks) - (MAX_BLOCKS - 1)
        more = f" <{more_url}|See the full card>." if more_url else ""
        blocks = blocks[: MAX_BLOCKS - 1] + [_context([f"… {dropped} more blocks not shown.{more}"], None)]
    return fallback_text(card), blocks


def fallback_text(card: Card) -> str:
    """The plain text Slack shows in notifications and where blocks cannot render."""
    first = next((b.text for b in card.blocks if isinstance(b, TextBlock)), "")
    return truncate(f"{card.title}" + (f": {first}" if first else ""), MAX_FALLBACK_TEXT)
