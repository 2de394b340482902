"""Opsgenie outgoing webhook (Webhook integration): `{"action": "Create|Acknowledge|AddNote|Close|…",
"alert": {...}, "source": {...}}`.

One Opsgenie alert is one warroom alert across all its actions: the fingerprint comes from `alertId` (the
only alert field the Escalate action is guaranteed to carry), falling back to `alias`. Close resolves it.
"""
from __future__ import annotations

from typing import Any

from engine.alert_sources.common import (SERVICE_LABELS, AlertFormatError, cut, fingerprint_of, first,
                                         key_value_tags, normalise_environment, normalise_severity, obj,
                                         parse_epoch, text)
from engine.models import Alert

RESOLVING_ACTIONS = {"Close"}


def looks_like_opsgenie(payload: dict[str, Any]) -> bool:
    return isinstance(payload.get("action"), str) and isinstance(payload.get("alert"), dict)


def from_opsgenie(payload: dict[str, Any]) -> list[Alert]:
    action = text(payload.get("action"), "action", required=True)
    alert = obj(payload.get("alert"), "alert")
    alert_id = text(alert.get("alertId"), "alert.alertId")
    alias = text(alert.get("alias"), "alert.alias")
    if not alert_id and not alias:
        raise AlertFormatError("alert.alertId (or alert.alias) is required")
    tags = alert.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise AlertFormatError("alert.tags must be a list of strings")
    raw_priority = text(alert.get("priority"), "alert.priority")
    # Opsgenie says P1..P5; some senders (and the Zulip fixture) send the bare number
    priority = f"P{raw_priority}" if raw_priority.isdigit() else raw_priority.upper()
    tiny_id = text(alert.get("tinyId"), "alert.tinyId")
    message = text(alert.get("message"), "alert.message")
    name = message or alias or f"Opsgenie alert {tiny_id or alert_id}"
    entity = text(alert.get("entity"), "alert.entity")
    source = obj(payload.get("source"), "source", required=False)
    tag_map = key_value_tags(tags)
    labels = {k: v for k, v in {
        **tag_map, "action": action, "alert_id": alert_id, "alias": alias, "tiny_id": tiny_id,
        "priority": priority, "entity": entity, "opsgenie_source": text(alert.get("source"), "alert.source"),
        "tags": ",".join(tags), "integration": text(payload.get("integrationName"), "integrationName"),
        "escalation": text(payload.get("escalationName"), "escalationName"),
    }.items() if v}
    note = text(alert.get("note"), "alert.note")
    who = text(alert.get("username"), "alert.username")
    annotations = {k: v for k, v in {
        "action": action, "by": who, "note": note, "via": text(source.get("name"), "source.name")
        or text(source.get("type"), "source.type"),
    }.items() if v}
    description = text(alert.get("description"), "alert.description")
    if note:
        description = f"{description}\n\nNote by {who or 'someone'}: {note}".strip()
    resolved = action in RESOLVING_ACTIONS
    updated = parse_epoch(alert.get("updatedAt"), "alert.updatedAt")
    return [Alert(
        source="opsgenie",
        # same identity as bot/slack/integrations' fallback, so a webhook and a chat post of it are one alert
        fingerprint=fingerprint_of({"__source__": "opsgenie", **({"alert_id": alert_id} if alert_id
                                                                  else {"alias": alias})}),
        status="resolved" if resolved else "firing",
        name=name,
        severity=normalise_severity(priority),
        service=first(tag_map, SERVICE_LABELS) or entity or None,
        environment=normalise_environment(tag_map.get("env") or tag_map.get("environment")),
        summary=message or name,
        description=cut(description),
        labels=labels,
        annotations=annotations,
        links=[],  # the payload carries no URL, and the Opsgenie host differs per account and region
        starts_at=parse_epoch(alert.get("createdAt"), "alert.createdAt"),
        ends_at=updated if resolved else None,
    )]
