"""Incident summaries: the `/warroom status` card and the postmortem draft posted on resolve.

Deterministic text built from the incident record only (no model), in Slack mrkdwn. Every line cites where
its fact came from: the bot's chat message (a link to it, `<permalink|alert:12>`, when the adapter recorded one;
else its logical key, channel and platform message id) and the audit entries (`audit #123`), so anyone can
check the summary against the thread and `warroom audit verify`. Adapters for platforms without mrkdwn turn
the `<url|label>` links into their own (Teams: markdown `[label](url)`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import psycopg

from engine.cards import Card, TextBlock
from storage import alerts as alert_store
from storage import incidents as incident_store

STATUS_TIMELINE = 8          # latest entries on the status card
POSTMORTEM_TIMELINE = 40     # entries in the draft before older ones are counted, not listed
TOP_HYPOTHESES = 3
RAN = ("running", "succeeded", "failed", "interrupted")
STEP_ACTIONS = {"step.approved": "approved", "step.rejected": "rejected", "step.started": "started",
                "step.succeeded": "succeeded", "step.failed": "failed", "step.interrupted": "interrupted",
                "step.approval_refused": "approval refused"}


@dataclass
class IncidentFacts:
    """Everything a summary may say about one incident, as stored."""

    incident: dict[str, Any]
    alert: dict[str, Any] | None = None
    transitions: list[dict[str, Any]] = field(default_factory=list)
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)     # logical key -> posted message
    plans: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    annotations: list[dict[str, Any]] = field(default_factory=list)       # outbox rows of annotation cards
    audit: list[dict[str, Any]] = field(default_factory=list)

    def audit_for(self, subject: str, actions: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        return [a for a in self.audit if a["subject"] == subject and (actions is None or a["action"] in actions)]


def gather(conn: psycopg.Connection, incident: dict[str, Any], *, workspace: str = "default") -> IncidentFacts:
    """Collect the incident's alert, timeline, plans, steps, annotations, messages and audit entries."""
    facts = IncidentFacts(incident=incident, transitions=incident_store.timeline(conn, incident["id"]))
    alert_id = incident["alert_id"]
    facts.alert = alert_store.get_alert(conn, alert_id) if alert_id else None
    keys = _unique([incident["thread"], f"alert:{alert_id}" if alert_id else None])
    posted = incident_store.thread_messages(conn, keys)
    threads = keys + [m["message_id"] for m in posted]
    facts.plans = incident_store.plans_for(conn, alert_id=alert_id, threads=threads, workspace=workspace)
    plan_keys = _unique([p["message_key"] for p in facts.plans] + [f"annotation:{alert_id}" if alert_id else None])
    facts.annotations = incident_store.annotations_for(conn, keys=keys + plan_keys,
                                                       threads=[m["message_id"] for m in posted])
    # A message posted to several platforms is cited where the incident lives (its channel), else first posted.
    rows = incident_store.thread_messages(conn, keys + plan_keys)
    for row in sorted(rows, key=lambda r: r["channel"] != incident["channel"]):
        facts.messages.setdefault(row["key"], row)
    facts.steps = incident_store.steps_for(conn, [p["id"] for p in facts.plans])
    subjects = ([f"incident:{incident['id']}"] + [f"plan:{p['id']}" for p in facts.plans]
                + [f"step:{s['id']}" for s in facts.steps])
    facts.audit = incident_store.audit_for(conn, subjects)
    return facts


# --- the status card -------------------------------------------------------------------------------------


def status_card(facts: IncidentFacts, *, now: datetime) -> Card:
    """What fired, state and age, who acknowledged, hypotheses, steps and the latest timeline, each cited."""
    incident = facts.incident
    blocks = [TextBlock(text=_headline(facts, now)),
              TextBlock(text="*What fired*\n" + _what_fired(facts))]
    acked = _acknowledged(facts)
    if acked:
        blocks.append(TextBlock(text=acked))
    blocks.append(TextBlock(text="*Hypotheses*\n" + _hypotheses(facts)))
    blocks.append(TextBlock(text="*Steps*\n" + _steps(facts, only_run=False)))
    entries = _timeline(facts)
    shown = entries[-STATUS_TIMELINE:]
    more = f" (latest {len(shown)} of {len(entries)})" if len(entries) > len(shown) else ""
    blocks.append(TextBlock(text=f"*Timeline*{more}\n" + "\n".join(line for _, line in shown), style="muted"))
    return Card(kind="status", title=f"Incident #{incident['id']}: {_clip(incident['title'], 120)}", blocks=blocks)


def _headline(facts: IncidentFacts, now: datetime) -> str:
    incident = facts.incident
    where = " · ".join(filter(None, [incident["severity"], incident["service"] and f"service {incident['service']}",
                                     incident["environment"] and f"env {incident['environment']}"]))
    opened = incident["created_at"]
    if incident["state"] in ("RESOLVED", "LEARNED"):
        age = f"open {_minutes(_resolved_at(facts) or now, opened)} until resolved"
    else:
        age = f"open {_minutes(now, opened)}"
    return (f"*{esc(incident['title'])}*\nState *{incident['state']}* · {where} · {age} "
            f"(since {_utc(opened):%Y-%m-%d %H:%M} UTC)")


def _what_fired(facts: IncidentFacts) -> str:
    alert = facts.alert
    if alert is None:
        return "• No alert is linked to this incident."
    payload = alert["payload"] or {}
    started = alert["starts_at"] or alert["received_at"]
    summary = payload.get("summary") or ""
    text = (f"• *{esc(alert['name'])}* ({esc(alert['severity'])}) from {esc(alert['source'])} at "
            f"{_clock(facts)(started)} UTC" + (f": {esc(_clip(summary, 200))}" if summary else ""))
    links = [f"<{link['url']}|{esc(_clip(link['title'], 60))}>" for link in payload.get("links") or []
             if _linkable(str(link.get("url", "")))][:2]
    return text + (" · " + " · ".join(links) if links else "") + f" — {cite_message(facts, _alert_key(alert))}"


def _acknowledged(facts: IncidentFacts) -> str | None:
    acks = [t for t in facts.transitions if t["to_state"] == "ACKNOWLEDGED"]
    if not acks:
        return None
    t = acks[-1]
    return f"*Acknowledged* by {esc(t['actor'])} at {_clock(facts)(t['at'])} UTC — {cite_audit(t.get('audit_id'))}"


def _hypotheses(facts: IncidentFacts) -> str:
    if not facts.annotations:
        return "• None posted yet."
    lines = []
    for row in facts.annotations[-2:]:  # the latest two annotations: what the bot thinks now, and before
        block = next((b for b in row["card"].get("blocks", []) if b.get("type") == "hypotheses"), None)
        items = (block or {}).get("items") or []
        source = cite_message(facts, row["message_key"]) if row["message_key"] else f"outbox #{row['id']}"
        if not items:
            lines.append(f"• Inconclusive at {_clock(facts)(row['created_at'])} UTC — {source}")
            continue
        ranked = ", ".join(f"{esc(_clip(h['title'], 80))} *{h['confidence']:.0%}*" for h in items[:TOP_HYPOTHESES])
        flag = " (inconclusive)" if block.get("inconclusive") else ""
        lines.append(f"• {_clock(facts)(row['created_at'])} UTC{flag}: {ranked} — {source}")
    return "\n".join(lines)


def _steps(facts: IncidentFacts, *, only_run: bool) -> str:
    lines = []
    for plan in facts.plans:
        steps = [s for s in facts.steps if s["plan_id"] == plan["id"] and (not only_run or s["status"] in RAN)]
        if not steps:
            continue
        proposed = facts.audit_for(f"plan:{plan['id']}", ("plan.proposed",))
        cites = [cite_message(facts, plan["message_key"])] if plan["message_key"] else []
        cites += [cite_audit(a["id"]) for a in proposed]
        lines.append(f"• Plan *{esc(_clip(plan['title'], 100))}* ({plan['source']}) — {', '.join(cites)}")
        lines += [f"    – {_step_line(facts, s)}" for s in steps]
    if not lines:
        return "• Nothing was run through warroom." if only_run else "• No steps proposed yet."
    return "\n".join(lines)


def _step_line(facts: IncidentFacts, step: dict[str, Any]) -> str:
    what = f"`{esc(step['key'])}` {esc(_clip(step['title'], 80))} ({step['connector']}, {step['risk']})"
    status = step["status"]
    result = (step["result"] or {}).get("summary") if step["result"] else None
    if result:
        status += f": {esc(_clip(result, 160))}"
    elif step["refusal"]:
        status += f": {esc(_clip(step['refusal'], 160))}"
    who = f" · decided by {esc(step['decided_by'])}" if step["decided_by"] else ""
    audits = [a["id"] for a in facts.audit_for(f"step:{step['id']}")]
    return f"{what} — *{status}*{who}" + (f" — {cite_audits(audits)}" if audits else "")


def _timeline(facts: IncidentFacts) -> list[tuple[datetime, str]]:
    """Transitions, plan proposals and step decisions/results, oldest first."""
    when = _clock(facts)
    entries = []
    for t in facts.transitions:
        note = f" — “{esc(_clip(t['note'], 200))}”" if t["note"] and t["note"] != "opened" else ""
        moved = t["to_state"] if t["from_state"] != t["to_state"] else "note"
        cite = f" — {cite_audit(t['audit_id'])}" if t.get("audit_id") else ""
        entries.append((t["at"], f"• {when(t['at'])} {moved} by {esc(t['actor'])}{note}{cite}"))
    steps = {f"step:{s['id']}": s for s in facts.steps}
    for a in facts.audit:
        if a["action"] == "plan.proposed":
            entries.append((a["at"], f"• {when(a['at'])} plan proposed (`{a['subject']}`) by "
                                     f"{esc(a['actor'])} — {cite_audit(a['id'])}"))
        elif a["action"] in STEP_ACTIONS and a["subject"] in steps:
            step = steps[a["subject"]]
            entries.append((a["at"], f"• {when(a['at'])} step `{esc(step['key'])}` {STEP_ACTIONS[a['action']]} "
                                     f"by {esc(a['actor'])} — {cite_audit(a['id'])}"))
    entries.sort(key=lambda e: e[0])
    return entries


def _clock(facts: IncidentFacts):
    """Times as HH:MM:SS on the incident's day, with the date on any other day (an alert firing for days)."""
    day = _utc(facts.incident["created_at"]).date()

    def clock(at: datetime) -> str:
        at = _utc(at)
        return f"{at:%H:%M:%S}" if at.date() == day else f"{at:%Y-%m-%d %H:%M:%S}"
    return clock


# --- the postmortem draft -----------------------------------------------------------------------------------


def postmortem_card(facts: IncidentFacts, *, root_cause: str | None, resolved_by: str) -> Card:
    """A draft for the team to finish: summary, impact window, root cause as given, timeline, what ran."""
    incident = facts.incident
    resolved_at = _resolved_at(facts)
    resolve_audit = next((t.get("audit_id") for t in reversed(facts.transitions) if t["to_state"] == "RESOLVED"), None)
    blocks = [
        TextBlock(text="_Draft written by warroom from the incident record. Edit it before sharing._", style="muted"),
        TextBlock(text="*Summary*\n" + _pm_summary(facts, resolved_by, resolved_at)),
        TextBlock(text="*Impact window*\n" + _impact_window(facts, resolved_at, resolve_audit)),
        TextBlock(text="*Root cause*\n" + (f"{esc(root_cause)} — as given on resolve by {esc(resolved_by)}, "
                                           f"{cite_audit(resolve_audit)}" if root_cause else
                                           "_Not given on resolve (`/warroom resolve <why>`). Fill in._")),
        TextBlock(text="*Timeline*\n" + _pm_timeline(facts)),
        TextBlock(text="*Hypotheses considered*\n" + _hypotheses(facts)),
        TextBlock(text="*What was run*\n" + _steps(facts, only_run=True)),
        TextBlock(text="*Follow-ups*\n• [ ] _action — owner — due_\n• [ ] _action — owner — due_"),
    ]
    return Card(kind="status", title=f"Postmortem draft: incident #{incident['id']} "
                                     f"({_clip(incident['title'], 100)})", blocks=blocks)


def _pm_summary(facts: IncidentFacts, resolved_by: str, resolved_at: datetime | None) -> str:
    incident = facts.incident
    scope = ", ".join(filter(None, [f"severity {incident['severity']}",
                                    incident["service"] and f"service {incident['service']}",
                                    incident["environment"] and f"environment {incident['environment']}"]))
    duration = f" after {_minutes(resolved_at, incident['created_at'])}" if resolved_at else ""
    return f"{esc(incident['title'])} ({esc(scope)}). Resolved by {esc(resolved_by)}{duration}."


def _impact_window(facts: IncidentFacts, resolved_at: datetime | None, resolve_audit: int | None) -> str:
    """From the first alert of the incident's fingerprint (or its opening) to the resolve."""
    alert = facts.alert
    if alert is not None:
        start = alert["starts_at"] or alert["received_at"]
        start_cite = f"first alert {cite_message(facts, _alert_key(alert))}"
    else:
        start = facts.incident["created_at"]
        start_cite = "incident opened"
    if resolved_at is None:
        return f"{_utc(start):%Y-%m-%d %H:%M:%S} UTC ({start_cite}) → still open"
    return (f"{_utc(start):%Y-%m-%d %H:%M:%S} UTC ({start_cite}) → {_utc(resolved_at):%Y-%m-%d %H:%M:%S} UTC "
            f"(resolved, {cite_audit(resolve_audit)}): *{_minutes(resolved_at, start)}*")


def _pm_timeline(facts: IncidentFacts) -> str:
    entries = _timeline(facts)
    if facts.alert is not None:
        alert = facts.alert
        at = alert["starts_at"] or alert["received_at"]
        entries.insert(0, (at, f"• {_clock(facts)(at)} alert fired: {esc(alert['name'])} — "
                               f"{cite_message(facts, _alert_key(alert))}"))
        entries.sort(key=lambda e: e[0])
    lines = [line for _, line in entries[-POSTMORTEM_TIMELINE:]]
    if len(entries) > POSTMORTEM_TIMELINE:
        lines.insert(0, f"• … {len(entries) - POSTMORTEM_TIMELINE} earlier entries (see `warroom audit`)")
    return "\n".join(lines)


# --- provenance --------------------------------------------------------------------------------------------


def cite_message(facts: IncidentFacts, key: str) -> str:
    """A link to the message labelled with its key (`<https://…/p1716…|alert:12>`) when its permalink was
    recorded; else `alert:12` in #channel, ts 1716…; a message not posted (yet) is cited by its key alone."""
    row = facts.messages.get(key)
    if row is None:
        return f"`{key}` (not posted yet)"
    permalink = row.get("permalink")
    if permalink and _linkable(permalink):
        return f"<{permalink.replace('&', '&amp;')}|{esc(key)}>"
    if row["platform"] == "slack":
        return f"`{key}` in <#{row['channel']}> ts `{row['message_id']}`"
    return f"`{key}` ({row['platform']} message `{esc(row['message_id'])}`)"


def cite_audit(audit_id: int | None) -> str:
    return f"audit #{audit_id}" if audit_id else "no audit entry"


def cite_audits(audit_ids: list[int]) -> str:
    """`audit #3, #4, #6`."""
    return "audit " + ", ".join(f"#{i}" for i in audit_ids)


def esc(text: Any) -> str:
    """Slack mrkdwn control characters: user and alert text must not become links or mentions."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _linkable(url: str) -> bool:
    """A URL that can sit in `<url|label>` without breaking out of it."""
    return url.startswith(("http://", "https://")) and not any(c in url for c in "<>| ")


def _alert_key(alert: dict[str, Any]) -> str:
    return f"alert:{alert['id']}"


def _resolved_at(facts: IncidentFacts) -> datetime | None:
    return next((t["at"] for t in reversed(facts.transitions) if t["to_state"] == "RESOLVED"), None)


def _utc(at: datetime) -> datetime:
    return at.astimezone(timezone.utc)


def _minutes(later: datetime, earlier: datetime) -> str:
    minutes = max(0, int((later - earlier).total_seconds() // 60))
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


def _clip(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _unique(items: list[str | None]) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))
