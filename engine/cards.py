"""The platform-neutral card model. Adapters render it as Block Kit, Adaptive Cards or text."""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from engine.hypotheses import WEIGHTS
from engine.models import Alert, Annotation, Citation, Frozen, Hypothesis, Link


class TextBlock(Frozen):
    type: Literal["text"] = "text"
    text: str
    style: Literal["normal", "muted", "warning", "error", "success"] = "normal"


class HypothesesBlock(Frozen):
    type: Literal["hypotheses"] = "hypotheses"
    items: list[Hypothesis]
    inconclusive: bool = False
    service: str | None = None   # what 👍 / 👎 feedback is filed under


class CitationsBlock(Frozen):
    type: Literal["citations"] = "citations"
    items: list[Citation]


class CardStep(Frozen):
    step_id: int
    index: int
    title: str
    connector: str
    target: str | None = None
    risk: str
    status: str
    actions: list[Literal["approve", "reject", "retry"]] = Field(default_factory=list)   # retry: an interrupted step
    note: str | None = None
    decided_by: str | None = None   # who approved or rejected it, shown on the card
    flow: str | None = None         # a workflow step's place in the graph, e.g. "after 1, 2 · parallel: checks"


class StepsBlock(Frozen):
    type: Literal["steps"] = "steps"
    plan_id: int
    title: str
    items: list[CardStep]


class LinksBlock(Frozen):
    type: Literal["links"] = "links"
    items: list[Link]


AlertAction = Literal["noise", "silence", "investigate"]
ALERT_ACTION_LABELS: dict[str, str] = {"noise": "Mark as noise", "silence": "Silence",
                                       "investigate": "Investigate anyway"}


class AlertActionsBlock(Frozen):
    """Buttons about an alert group itself (handlers/noise.py): mark it noise, silence it, investigate it."""
    type: Literal["alert_actions"] = "alert_actions"
    group_id: int
    actions: list[AlertAction]
    silence_hours: float | None = None   # for the Silence button's label


class LearnBlock(Frozen):
    """The buttons of runbook learning: "Draft runbook" on the resolve card (`draft`, with the incident), and
    Approve / Edit / Reject on a draft card (with the draft). Edit takes corrected YAML from the reviewer."""

    type: Literal["learn"] = "learn"
    incident_id: int
    draft_id: int | None = None
    actions: list[Literal["draft", "approve", "edit", "reject"]] = Field(default_factory=list)
    yaml: str = ""      # the draft's YAML, prefilled where a platform can edit in place (Teams Input.Text)


Block = Annotated[Union[TextBlock, HypothesesBlock, CitationsBlock, StepsBlock, LinksBlock, AlertActionsBlock,
                        LearnBlock], Field(discriminator="type")]


def alert_action_label(block: AlertActionsBlock, action: str) -> str:
    if action == "silence" and block.silence_hours:
        return f"Silence {block.silence_hours:g} h"
    return ALERT_ACTION_LABELS[action]


class Card(Frozen):
    kind: Literal["annotation", "alert", "step_result", "notice", "error", "help", "status", "runbook_draft",
                  "insights"]
    title: str
    blocks: list[Block] = Field(default_factory=list)


def notice(title: str, text: str = "", *, kind: str = "notice", style: str = "normal") -> Card:
    return Card(kind=kind, title=title, blocks=[TextBlock(text=text, style=style)] if text else [])


def alert_card(annotation: Annotation) -> Card:
    """The parent message the bot posts for a webhook alert."""
    alert = annotation.alert
    assert alert is not None
    icon = "RESOLVED" if alert.status == "resolved" else alert.severity.upper()
    text = f"*{alert.summary}*" + (f"\n{alert.description}" if alert.description else "")
    meta = " · ".join(filter(None, [alert.service and f"service {alert.service}",
                                    alert.environment and f"env {alert.environment}", f"source {alert.source}"]))
    blocks: list = [TextBlock(text=text), TextBlock(text=meta, style="muted")]
    if alert.links:
        blocks.append(LinksBlock(items=alert.links))
    return Card(kind="alert", title=f"[{icon}] {alert.name}", blocks=blocks)


def annotation_card(annotation: Annotation, *, steps: list[CardStep], plan_id: int | None) -> Card:
    """What warroom thinks: ranked hypotheses with evidence, citations, and the plan with its buttons."""
    subject = annotation.alert.name if annotation.alert else (annotation.question or "your question")
    blocks: list = []
    if annotation.inconclusive:
        blocks.append(TextBlock(text="Inconclusive: no cause has enough evidence yet. What I checked is below.",
                                style="warning"))
    service = annotation.alert.service if annotation.alert else annotation.service
    blocks.append(HypothesesBlock(items=annotation.hypotheses, inconclusive=annotation.inconclusive,
                                  service=service))
    if annotation.citations:
        blocks.append(CitationsBlock(items=annotation.citations))
    if annotation.memory_notes:
        blocks.append(TextBlock(text="\n".join(annotation.memory_notes), style="muted"))
    if annotation.plan and plan_id is not None and steps:
        blocks.append(StepsBlock(plan_id=plan_id, title=f"Plan: {annotation.plan.title}", items=steps))
    elif annotation.plan and annotation.plan.source != "none" and annotation.memory_notes:
        blocks.append(TextBlock(text="Nothing new to run: the plan's steps already ran in this thread.",
                                style="muted"))
    else:
        blocks.append(TextBlock(text="No executable runbook matches; nothing to run yet.", style="muted"))
    return Card(kind="annotation", title=f"warroom on {subject}", blocks=blocks)


def factor_breakdown(hypothesis: Hypothesis) -> str:
    """The five factors as the score adds them up: `signal strength 0.80×0.25 + … = 0.57`."""
    if not hypothesis.factors:
        return f"confidence {hypothesis.confidence:.2f}"
    terms = " + ".join(f"{name.replace('_', ' ')} {hypothesis.factors.get(name, 0):.2f}×{weight:.2f}"
                       for name, weight in WEIGHTS.items())
    return f"{terms} = {hypothesis.confidence:.2f}"


# --- alert groups and storms ------------------------------------------------------------------------------

GROUP_LISTED = 10   # alert lines on a group's parent card; the rest are counted
STORM_LISTED = 30   # group lines on a storm summary; the rest are counted


def _alert_line(alert: Alert) -> str:
    where = " · ".join(filter(None, [alert.service, alert.labels.get("instance") or alert.labels.get("pod"),
                                     alert.environment]))
    mark = "resolved" if alert.status == "resolved" else alert.severity
    return f"• {alert.name}{f' ({where})' if where else ''} — {mark}"


def alert_group_card(alerts: list[Alert], *, group_id: int | None = None) -> Card:
    """The one parent message of an alert group, redrawn in place as alerts join or resolve. `alerts` is each
    alert's newest state, oldest alert first; the first one speaks for the group. With `group_id`, a firing
    group offers "Mark as noise", which feeds the group's alert's noise score (engine/noise.py)."""
    first = alerts[0]
    firing = [a for a in alerts if a.status == "firing"]
    resolved = not firing
    lead = firing[0] if firing else first
    icon = "RESOLVED" if resolved else lead.severity.upper()
    counts = f"{len(firing)} firing · {len(alerts) - len(firing)} resolved · {len(alerts)} alerts in this group"
    text = f"*{lead.summary or lead.name}*" + (f"\n{lead.description}" if lead.description else "")
    services = sorted({a.service for a in alerts if a.service})
    meta = " · ".join(filter(None, [services and "service " + ", ".join(services[:5]),
                                    lead.environment and f"env {lead.environment}", f"source {lead.source}"]))
    listed = [_alert_line(a) for a in alerts[:GROUP_LISTED]]
    if len(alerts) > GROUP_LISTED:
        listed.append(f"… and {len(alerts) - GROUP_LISTED} more")
    blocks: list = [TextBlock(text=text), TextBlock(text=counts, style="success" if resolved else "warning"),
                    TextBlock(text="\n".join(listed)), TextBlock(text=meta, style="muted")]
    if lead.links:
        blocks.append(LinksBlock(items=lead.links))
    if group_id is not None and not resolved:
        blocks.append(AlertActionsBlock(group_id=group_id, actions=["noise"]))
    return Card(kind="alert", title=f"[{icon}] {lead.name}" + (f" ×{len(alerts)}" if len(alerts) > 1 else ""),
                blocks=blocks)


def noise_card(alert: Alert, *, group_id: int, score: float, reasons: list[str], tuning: str | None,
               silence_hours: float) -> Card:
    """Posted in an alert's thread instead of hypotheses when its record says it is noise."""
    lines = [f"This alert looks like noise (score {score:.2f}), so I am not investigating it:"]
    lines += [f"• {reason}" for reason in reasons]
    blocks: list = [TextBlock(text="\n".join(lines), style="warning")]
    if tuning:
        blocks.append(TextBlock(text=f"Tune: {tuning}.", style="muted"))
    blocks.append(TextBlock(text="Silence it here for a while, or ask for the investigation anyway.",
                            style="muted"))
    blocks.append(AlertActionsBlock(group_id=group_id, actions=["silence", "investigate"],
                                    silence_hours=silence_hours))
    return Card(kind="notice", title=f"Probably noise: {alert.name}", blocks=blocks)


def storm_card(groups: list[dict], *, threshold: int) -> Card:
    """One message standing for every group that arrived during an alert storm, redrawn in place. Each
    `groups` item: name, service, firing, total, investigated (bool)."""
    firing_groups = sum(1 for g in groups if g["firing"])
    lines = []
    for g in groups[:STORM_LISTED]:
        state = f"{g['firing']}/{g['total']} firing" if g["firing"] else f"resolved ({g['total']})"
        looked = "investigated in this thread" if g["investigated"] else "not investigated (storm budget)"
        where = f" ({g['service']})" if g.get("service") else ""
        lines.append(f"• {g['name']}{where} — {state} — {looked}")
    if len(groups) > STORM_LISTED:
        lines.append(f"… and {len(groups) - STORM_LISTED} more groups")
    intro = (f"More than {threshold} new alert groups a minute in this channel: they are listed here instead of "
             f"one message each. {firing_groups} of {len(groups)} groups firing.")
    return Card(kind="alert", title=f"[STORM] {len(groups)} alert groups",
                blocks=[TextBlock(text=intro, style="warning"), TextBlock(text="\n".join(lines) or "—")])
