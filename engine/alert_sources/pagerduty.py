"""PagerDuty Webhooks v3: `{"event": {"event_type": "incident.<what>", "agent": …, "data": …}}`.

Every event about one incident becomes the same alert (fingerprint from the incident id), firing until
`incident.resolved`. Acknowledge, escalate, reassign, notes and priority changes are updates of that alert; the
event type and who acted are kept in labels and annotations. Most events carry the incident itself as `data`;
some (incident.annotated: `data.type == "incident_note"`) carry a reference to it in `data.incident`.
"""
from __future__ import annotations

from typing import Any

from engine.alert_sources.common import (AlertFormatError, add_link, cut, fingerprint_of, most_severe,
                                         normalise_severity, obj, parse_time, text)
from engine.models import Alert, Link

# PagerDuty's own test delivery when a subscription is created: nothing to store, but not an error either.
PING_EVENTS = {"pagey.ping"}
_URGENCY = {"high": "critical", "low": "warning"}  # high urgency pages someone now


def from_pagerduty(payload: dict[str, Any]) -> list[Alert]:
    event = obj(payload.get("event"), "event")
    event_type = text(event.get("event_type"), "event.event_type", required=True)
    if event_type in PING_EVENTS:
        return []
    if not event_type.startswith("incident."):
        raise AlertFormatError(f"event.event_type {event_type!r} is not an incident event")
    data = obj(event.get("data"), "event.data")
    # the incident is the data itself, or referenced by it (notes, responders, status updates)
    incident = data if data.get("type") in ("incident", None) and "incident" not in data else \
        obj(data.get("incident"), "event.data.incident")
    incident_id = text(incident.get("id"), "incident id", required=True)
    name = text(incident.get("title"), "event.data.title") or text(incident.get("summary"), "incident summary")
    if not name:
        raise AlertFormatError("event.data.title is required (the incident has no title)")
    agent = obj(event.get("agent"), "event.agent", required=False)
    who = text(agent.get("summary"), "event.agent.summary")
    service = obj(incident.get("service"), "event.data.service", required=False)
    priority_ref = obj(incident.get("priority"), "event.data.priority", required=False)
    priority = text(priority_ref.get("summary"), "event.data.priority.summary")
    urgency = text(incident.get("urgency"), "event.data.urgency")
    occurred = parse_time(event.get("occurred_at"))
    incident_type = obj(incident.get("incident_type"), "event.data.incident_type", required=False)
    labels = {k: v for k, v in {
        "event_type": event_type, "incident_id": incident_id,
        "incident_number": text(incident.get("number"), "event.data.number"),
        "incident_key": text(incident.get("incident_key"), "event.data.incident_key"),
        "pagerduty_status": text(incident.get("status"), "event.data.status"),
        "urgency": urgency, "priority": priority, "agent": who,
        "agent_id": text(agent.get("id"), "event.agent.id"),
        "pagerduty_service_id": text(service.get("id"), "event.data.service.id"),
        "incident_type": text(incident_type.get("name"), "event.data.incident_type.name"),
    }.items() if v}
    note = text(data.get("content"), "event.data.content") if data is not incident else ""
    annotations = {k: v for k, v in {
        "event_type": event_type, "agent": who, "occurred_at": text(event.get("occurred_at"), "event.occurred_at"),
        "event_id": text(event.get("id"), "event.id"), "note": note,
        "resolve_reason": text(incident.get("resolve_reason"), "event.data.resolve_reason"),
    }.items() if v}
    links: list[Link] = []
    add_link(links, "PagerDuty incident", incident.get("html_url"))
    add_link(links, "Service", service.get("html_url"))
    resolved = event_type == "incident.resolved"
    action = event_type.removeprefix("incident.").replace("_", " ")
    description = f"{action} by {who}" if who else action
    # starts_at must be the same for every event of the incident, so storage sees updates of one alert:
    # data.created_at when PagerDuty sends it, else the moment of incident.triggered; unknown otherwise.
    starts = parse_time(incident.get("created_at")) or (occurred if event_type == "incident.triggered" else None)
    return [Alert(
        source="pagerduty",
        fingerprint=fingerprint_of({"__source__": "pagerduty", "incident_id": incident_id}),
        status="resolved" if resolved else "firing",
        name=name,
        severity=most_severe(_URGENCY.get(urgency.lower(), "unknown"), normalise_severity(priority)),
        service=text(service.get("summary"), "event.data.service.summary") or None,
        summary=name,
        description=cut(f"{description}: {note}" if note else description),
        labels=labels,
        annotations=annotations,
        links=links,
        starts_at=starts,
        ends_at=occurred if resolved else None,
    )]
