"""Datadog Webhooks integration.

Datadog has no fixed schema: the body is a user template with `$VARIABLES` substituted. We read the
documented default template (`body`, `last_updated`, `event_type`, `title`, `date`, `org`, `id`) and the common
extensions (`alert_transition`, `alert_type`, `alert_id`/`monitor_id`, `aggreg_key`, `scopes`, `tags`, `url`,
`severity`/`priority` = $ALERT_PRIORITY), tolerating any other key and string-typed numbers. With only the default
template the transition and scope come from the event title: "[P2] [Warn] …", "[Triggered on {service:x}] …".
"""
from __future__ import annotations

import re
from typing import Any

from engine.alert_sources.common import (AlertFormatError, add_link, cut, fingerprint_of, key_value_tags,
                                         normalise_environment, normalise_severity, obj, parse_epoch, parse_time,
                                         text)
from engine.models import Alert, Link

# $ALERT_TRANSITION values; only Recovered ends an alert (No Data is a problem too: the monitor lost its signal)
TRANSITIONS = ("Triggered", "Re-Triggered", "Recovered", "Warn", "Re-Warn", "No Data", "Re-No Data", "Renotify")
_TITLE = re.compile(r"^\s*(?:\[(?P<prio>P[1-5])\]\s*)?\[(?P<tr>" + "|".join(map(re.escape, TRANSITIONS)) +
                    r")(?: on \{(?P<scope>[^}]*)\})?\]\s*(?P<name>.*)$", re.S)
_ALERT_TYPE = {"error": "critical", "warning": "warning", "info": "info"}  # $ALERT_TYPE; "success" says nothing
_BODY_LINK = re.compile(r"\[\[([^\]]{1,60})\]\((https?://[^)\s]+)\)\]")  # [[Monitor Status](https://…)]
_LAST_TRIGGERED = re.compile(r"last triggered at [A-Z][a-z]{2} ([A-Z][a-z]{2} \d{1,2} \d{4} [\d:]{8}) UTC")
_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                                       "Nov", "Dec"), 1)}


def looks_like_datadog(payload: dict[str, Any]) -> bool:
    keys = set(payload)
    return "title" in keys and ("alert_transition" in keys or {"event_type", "date"} <= keys
                                or {"body", "last_updated"} <= keys)


def from_datadog(payload: dict[str, Any]) -> list[Alert]:
    title = text(payload.get("title"), "title", required=True)
    head = _TITLE.match(title)
    transition = text(payload.get("alert_transition"), "alert_transition") or (head.group("tr") if head else "")
    if not transition:
        raise AlertFormatError("alert_transition is missing and the title has no [Triggered]/[Recovered]/[Warn] "
                               "prefix: not a monitor notification")
    if transition not in TRANSITIONS:
        raise AlertFormatError(f"alert_transition {transition!r} is not one of {', '.join(TRANSITIONS)}")
    name = (head.group("name").strip() if head else title.strip()) or title.strip()
    scope = text(payload.get("scopes"), "scopes") or (head.group("scope") or "" if head else "")
    raw_tags = text(payload.get("tags"), "tags")
    tags = [t.strip() for t in raw_tags.split(",") if t.strip()]
    tag_map = key_value_tags(tags)
    scope_map = key_value_tags([s.strip() for s in scope.split(",")])
    priority = (text(payload.get("severity"), "severity") or text(payload.get("priority"), "priority")
                or text(payload.get("alert_priority"), "alert_priority") or (head.group("prio") or "" if head else ""))
    alert_type = text(payload.get("alert_type"), "alert_type")
    monitor_id = text(payload.get("monitor_id"), "monitor_id") or text(payload.get("alert_id"), "alert_id")
    aggreg_key = text(payload.get("aggreg_key"), "aggreg_key")
    org = obj(payload.get("org"), "org", required=False)
    body = text(payload.get("body"), "body")
    when = parse_epoch(payload.get("date"), "date") or parse_epoch(payload.get("last_updated"), "last_updated")
    labels = {k: v for k, v in {
        **tag_map, "monitor_id": monitor_id, "transition": transition, "priority": priority.upper(),
        "alert_type": alert_type, "event_type": text(payload.get("event_type"), "event_type"), "group": scope,
        "aggreg_key": aggreg_key, "event_id": text(payload.get("id"), "id"), "org_id": text(org.get("id"), "org.id"),
        "tags": raw_tags, "hostname": text(payload.get("hostname"), "hostname"),
    }.items() if v}
    for key, value in scope_map.items():
        labels.setdefault(key, value)
    links: list[Link] = []
    add_link(links, "Datadog event", payload.get("url") or payload.get("link"))
    for label, url in _BODY_LINK.findall(body):
        add_link(links, label, url)
    # The monitor and the group it fired for identify the alert (as bot/slack/integrations does for Datadog's
    # Slack messages, so both paths give one alert); $AGGREG_KEY next; the bare title and scope last.
    if monitor_id:
        identity = {"monitor_id": monitor_id, "group": scope}
    elif aggreg_key:
        identity = {"aggreg_key": aggreg_key}
    else:
        identity = {"group": scope, "name": name}
    resolved = transition == "Recovered"
    severity = _ALERT_TYPE.get(alert_type.lower()) or normalise_severity(priority)
    if severity == "unknown" and "Warn" in transition:
        severity = "warning"
    return [Alert(
        source="datadog",
        fingerprint=fingerprint_of({"__source__": "datadog", **{k: v for k, v in identity.items() if v}}),
        status="resolved" if resolved else "firing",
        name=name,
        severity=severity,
        service=labels.get("service") or None,
        environment=normalise_environment(labels.get("env") or labels.get("environment")),
        summary=title.strip(),
        description=cut(_plain(body)),
        labels=labels,
        annotations={k: v for k, v in {"query": text(payload.get("alert_query"), "alert_query"),
                                       "snapshot": text(payload.get("snapshot"), "snapshot")}.items() if v},
        links=links,
        starts_at=_last_triggered(body) if resolved else when,
        ends_at=when if resolved else None,
    )]


def _plain(body: str) -> str:
    """Datadog wraps markdown in %%% fences and lists @-mentions of the notified integrations: drop both."""
    lines = [line for line in body.replace("%%%", "").splitlines() if not line.strip().startswith("@")]
    return "\n".join(lines).strip()


def _last_triggered(body: str):
    """A recovery names when the monitor last triggered; that is the start of the alert it ends."""
    found = _LAST_TRIGGERED.search(body)
    if not found:
        return None
    month, day, year, clock = found.group(1).split()
    return parse_time(f"{year}-{_MONTHS[month]:02d}-{int(day):02d}T{clock}Z")
