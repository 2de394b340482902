"""Cards as Adaptive Cards 1.5 (the version Teams needs for Universal Actions). Approve / Reject are
`Action.Execute` buttons whose `verb` and `data` come back in an `adaptiveCard/action` invoke. Teams refuses
a message over about 28 KB, so a card is cut to fit here (shorter texts, then fewer details, with a link to
the full card), never at send time."""
from __future__ import annotations

import json
import re
from typing import Any

from engine.cards import (AlertActionsBlock, Card, CardStep, CitationsBlock, HypothesesBlock, LearnBlock,
                          LinksBlock, StepsBlock, TextBlock, alert_action_label, factor_breakdown)
from engine.models import Hypothesis
from engine.planner import risk_label

CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
VERSION = "1.5"
# Teams' limit is about 28 KB for the whole activity; the envelope (ids, service URL, summary) needs the rest.
MAX_CARD_BYTES = 24_000
MAX_TITLE = 200
MAX_SUMMARY = 300

APPROVE = "approve"
RETRY = "retry"
REJECT = "reject"
FEEDBACK = "feedback"
ALERT_ACTION = "alert"   # data: {"action": noise | silence | investigate, "group": <alert group id>}
LEARN = "learn_"            # learn_draft, learn_approve, learn_edit, learn_reject
YAML_INPUT = "runbook_yaml"
MAX_PREFILLED_YAML = 6000   # a longer draft is not prefilled (a cut YAML would be a wrong edit); it is pasted

_COLOR = {"warning": "warning", "error": "attention", "success": "good"}
_STATUS_MARK = {"proposed": "⏳", "queued": "▶️", "running": "⚙️", "succeeded": "✅", "failed": "❌",
                "rejected": "🚫", "refused": "⛔", "interrupted": "⚠️", "approved": "☑️",
                "expired": "⌛", "skipped": "⏭️"}
# Successively smaller renderings: (characters per text, evidence per hypothesis, keep details).
_BUDGETS = ((4000, 10, True), (1200, 4, True), (400, 2, True), (300, 0, False))


def truncate(text: str, limit: int, more_url: str | None = None) -> str:
    if len(text) <= limit:
        return text
    tail = f"… [full text]({more_url})" if more_url else "…"
    return text[: max(0, limit - len(tail))] + tail


def escape(text: str) -> str:
    """Model and user text must not turn into links or markup the card author did not write."""
    return text.replace("[", "\\[").replace("]", "\\]").replace("<", "&lt;").replace(">", "&gt;")


def link(url: str, label: str) -> str:
    if url.startswith(("http://", "https://")):
        return f"[{escape(label)}]({url.replace(')', '%29').replace(' ', '%20')})"
    return f"{escape(label)} (`{escape(url)}`)"


# Card text is written in Slack mrkdwn (engine.cards is platform-neutral, summaries cite `<url|label>`); Adaptive
# Card markdown would show those links as raw text.
_MRKDWN_LINK = re.compile(r"<(https?://[^<>|\s]+)(?:\|([^<>]*))?>")


def mrkdwn_links(text: str) -> str:
    """`<https://…|label>` and `<https://…>` as markdown links `[label](https://…)`; the URL's `&amp;` (mrkdwn
    escaping) back to `&`, brackets in the label escaped so it cannot end the link early."""
    def markdown(match: re.Match) -> str:
        url = match.group(1).replace("&amp;", "&")
        label = match.group(2) if match.group(2) is not None else url
        return link(url, label)
    return _MRKDWN_LINK.sub(markdown, text)


def _text(text: str, limit: int, more_url: str | None, **style: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": truncate(text or " ", limit, more_url), "wrap": True, **style}


def _execute(title: str, verb: str, data: dict[str, Any], style: str | None = None) -> dict[str, Any]:
    action = {"type": "Action.Execute", "title": title, "verb": verb, "data": {"verb": verb, **data}}
    if style:
        action["style"] = style
    return action


class _Renderer:
    def __init__(self, limit: int, evidence: int, details: bool, more_url: str | None) -> None:
        self.limit, self.evidence, self.details, self.more_url = limit, evidence, details, more_url

    def text(self, block: TextBlock) -> list[dict]:
        style: dict[str, Any] = {"isSubtle": True} if block.style == "muted" else {}
        if block.style in _COLOR:
            style["color"] = _COLOR[block.style]
        return [_text(mrkdwn_links(block.text), self.limit, self.more_url, **style)]

    def hypothesis(self, i: int, h: Hypothesis, service: str | None) -> dict:
        items = [_text(f"**{i}. {escape(h.title)}** — confidence **{h.confidence:.0%}**", self.limit, None)]
        if h.cause and self.details:
            items.append(_text(escape(h.cause), self.limit, self.more_url))
        lines = []
        for e in h.evidence[: self.evidence]:
            where = f" — {link(e.source, 'source')}" if e.source else ""
            lines.append(f"- _{e.kind.replace('_', ' ')}_: {escape(e.text)}{where}")
        if len(h.evidence) > self.evidence:
            lines.append(f"- … {len(h.evidence) - self.evidence} more")
        if lines:
            items.append(_text("\n".join(lines), self.limit, self.more_url))
        if self.details:
            items.append(_text(f"score: {factor_breakdown(h)}", self.limit, None, isSubtle=True, size="Small"))
        data = {"title": h.title[:300], "service": service}
        items.append({"type": "ActionSet", "actions": [
            _execute("👍 helpful", FEEDBACK, {**data, "helpful": True}),
            _execute("👎 wrong", FEEDBACK, {**data, "helpful": False})]})
        return {"type": "Container", "separator": True, "items": items}

    def hypotheses(self, block: HypothesesBlock) -> list[dict]:
        if not block.items:
            return [_text("**Hypotheses:** none with enough evidence yet.", self.limit, None)]
        return [self.hypothesis(i, h, block.service) for i, h in enumerate(block.items, 1)]

    def citations(self, block: CitationsBlock) -> list[dict]:
        if not self.details:
            return []
        lines = ["**Sources**"]
        for i, c in enumerate(block.items, 1):
            lines.append(f"[{i}] {link(c.source, c.title)} — doc {c.document_id}, chunk {c.chunk_id}, "
                         f"score {c.score:.3f}")
        return [_text("\n\n".join(lines), self.limit, self.more_url, separator=True)]

    def steps(self, block: StepsBlock) -> list[dict]:
        # Never cut: the buttons are what the card is for.
        out: list[dict] = [_text(f"**{escape(block.title)}**", self.limit, None, separator=True)]
        for step in block.items:
            items: list[dict] = [_text(step_line(step), self.limit, self.more_url)]
            actions = []
            if "approve" in step.actions:
                actions.append(_execute("Approve", APPROVE, {"step_id": step.step_id}, "positive"))
            if "reject" in step.actions:
                actions.append(_execute("Reject", REJECT, {"step_id": step.step_id}, "destructive"))
            if "retry" in step.actions:  # an Approve of an interrupted step; its own verb for invoke de-dup
                actions.append(_execute("Retry", RETRY, {"step_id": step.step_id}, "positive"))
            if actions:
                items.append({"type": "ActionSet", "actions": actions})
            out.append({"type": "Container", "id": f"step_{step.step_id}", "items": items})
        return out

    def links(self, block: LinksBlock) -> list[dict]:
        return [_text(" · ".join(link(item.url, item.title) for item in block.items), self.limit, None,
                      isSubtle=True)]

    def alert_actions(self, block: AlertActionsBlock) -> list[dict]:
        style = {"silence": "destructive", "investigate": "positive"}
        return [{"type": "ActionSet", "actions": [
            _execute(alert_action_label(block, action), ALERT_ACTION, {"action": action, "group": block.group_id},
                     style.get(action)) for action in block.actions]}]

    def learn(self, block: LearnBlock) -> list[dict]:
        """Runbook learning buttons; Edit is an Input.Text with the draft's YAML, sent with the `learn_edit` verb
        (Action.Execute merges the inputs into its data)."""
        data = {"incident_id": block.incident_id, "draft_id": block.draft_id}
        titles = {"draft": ("Draft runbook", None), "approve": ("Approve", "positive"),
                  "reject": ("Reject", "destructive"), "edit": ("Save edit", None)}
        out: list[dict] = []
        if "edit" in block.actions:
            prefill = block.yaml if len(block.yaml) <= MAX_PREFILLED_YAML else ""
            out.append({"type": "Input.Text", "id": YAML_INPUT, "isMultiline": True, "value": prefill,
                        "placeholder": "Corrected runbook YAML", "label": "Edit the draft"})
        actions = [_execute(titles[a][0], LEARN + a, data, titles[a][1]) for a in block.actions]
        if actions:
            out.append({"type": "ActionSet", "actions": actions})
        return out

    def card(self, card: Card) -> dict[str, Any]:
        body: list[dict] = [_text(card.title, MAX_TITLE, None, size="Large", weight="Bolder")]
        if len(card.title) > MAX_TITLE:
            body.append(_text(escape(card.title), self.limit, self.more_url))
        for block in card.blocks:
            render = {TextBlock: self.text, HypothesesBlock: self.hypotheses, CitationsBlock: self.citations,
                      StepsBlock: self.steps, LinksBlock: self.links, AlertActionsBlock: self.alert_actions,
                      LearnBlock: self.learn}[type(block)]
            body.extend(render(block))
        if not self.details:
            more = f" [See the full card]({self.more_url})." if self.more_url else ""
            body.append(_text(f"Some details were left out to fit Teams' message size.{more}", 400, None,
                              isSubtle=True))
        return {"type": "AdaptiveCard", "$schema": SCHEMA, "version": VERSION,
                "fallbackText": summary(card), "body": body}


def step_line(step: CardStep) -> str:
    where = escape(step.connector + (f" → {step.target}" if step.target else ""))
    mark = _STATUS_MARK.get(step.status, "")
    status = step.status + (f" by {escape(step.decided_by)}" if step.decided_by else "")
    line = f"{step.index}. **{escape(step.title)}** — {where} · {risk_label(step.risk)} · {mark} {status}"
    if step.flow:
        line += f" · _{escape(step.flow)}_"
    if step.note:
        line += f"\n\n> {escape(step.note)}"
    return line


def render(card: Card, *, more_url: str | None = None) -> dict[str, Any]:
    """The Adaptive Card for a card, as large as fits in one Teams message."""
    rendered: dict[str, Any] = {}
    for limit, evidence, details in _BUDGETS:
        rendered = _Renderer(limit, evidence, details, more_url).card(card)
        if size(rendered) <= MAX_CARD_BYTES:
            return rendered
    return rendered  # only a plan with hundreds of steps gets here; Teams will say so and the row is parked


def size(content: dict[str, Any]) -> int:
    return len(json.dumps(content, ensure_ascii=False).encode())


def summary(card: Card) -> str:
    """What Teams shows in notifications and the activity feed."""
    first = next((b.text for b in card.blocks if isinstance(b, TextBlock)), "")
    return truncate(card.title + (f": {first}" if first else ""), MAX_SUMMARY)
