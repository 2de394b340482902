"""The generic body warroom defines for senders with no format of their own (scripts, cron jobs, CI):

    {"name": "DiskFull", "status": "firing", "severity": "critical", "service": "db", "environment": "prod",
     "summary": "…", "description": "…", "labels": {…}, "annotations": {…}, "links": [{"title", "url"}],
     "fingerprint": "…", "group_key": "…", "starts_at": "RFC 3339 or epoch", "ends_at": …}

or a JSON list of those. Only `name` is required; unknown keys are refused so a typo is not silently dropped.
"""
from __future__ import annotations

from typing import Any

from engine.alert_sources.common import (MAX_ALERTS_PER_PAYLOAD, AlertFormatError, cut, fingerprint_of,
                                         normalise_environment, normalise_severity, parse_time, str_map, text)
from engine.models import Alert, Link

FIELDS = {"name", "status", "severity", "service", "environment", "summary", "description", "labels",
          "annotations", "links", "fingerprint", "group_key", "starts_at", "ends_at"}


def looks_like_generic(payload: Any) -> bool:
    items = payload if isinstance(payload, list) else [payload]
    return bool(items) and all(isinstance(i, dict) and "name" in i and set(i) <= FIELDS for i in items)


def from_generic(payload: Any) -> list[Alert]:
    items = payload if isinstance(payload, list) else [payload]
    if not items:
        raise AlertFormatError("generic payload is an empty list")
    if len(items) > MAX_ALERTS_PER_PAYLOAD:
        raise AlertFormatError(f"too many alerts in one payload ({len(items)} > {MAX_ALERTS_PER_PAYLOAD})")
    many = isinstance(payload, list)
    return [_one(item, f"[{i}]" if many else "") for i, item in enumerate(items)]


def _one(item: Any, at: str) -> Alert:
    if not isinstance(item, dict):
        raise AlertFormatError(f"alert{at} must be a JSON object")
    unknown = sorted(set(item) - FIELDS)
    if unknown:
        raise AlertFormatError(f"{at + '.' if at else ''}{unknown[0]} is not a generic alert field "
                               f"(expected {', '.join(sorted(FIELDS))})")

    def field(key: str, *, required: bool = False) -> str:
        return text(item.get(key), f"{at + '.' if at else ''}{key}", required=required).strip()

    name = field("name", required=True)
    status = field("status") or "firing"
    if status not in ("firing", "resolved"):
        raise AlertFormatError(f"{at + '.' if at else ''}status must be firing or resolved, not {status!r}")
    labels = str_map(item.get("labels"), f"{at + '.' if at else ''}labels")
    annotations = str_map(item.get("annotations"), f"{at + '.' if at else ''}annotations")
    severity = field("severity")
    if severity:
        labels.setdefault("severity", severity)  # the raw word stays visible; Alert.severity is normalised
    service, environment = field("service") or None, normalise_environment(field("environment"))
    fingerprint = field("fingerprint") or fingerprint_of(
        {"__source__": "generic", "__name__": name, "__service__": service or "",
         "__environment__": environment or "", **labels})
    return Alert(
        source="generic", fingerprint=fingerprint, status=status, name=name,
        severity=normalise_severity(severity), service=service, environment=environment,
        summary=field("summary") or name, description=cut(field("description")),
        labels=labels, annotations=annotations, links=_links(item.get("links"), at),
        starts_at=parse_time(item.get("starts_at")), ends_at=parse_time(item.get("ends_at")),
        group_key=field("group_key") or None,
    )


def _links(value: Any, at: str) -> list[Link]:
    where = f"{at + '.' if at else ''}links"
    if value is None:
        return []
    if not isinstance(value, list):
        raise AlertFormatError(f"{where} must be a list of {{title, url}}")
    out = []
    for i, link in enumerate(value):
        if not isinstance(link, dict):
            raise AlertFormatError(f"{where}[{i}] must be an object with title and url")
        url = text(link.get("url"), f"{where}[{i}].url", required=True)
        if not url.startswith(("http://", "https://")):
            raise AlertFormatError(f"{where}[{i}].url must be an http(s) URL")
        out.append(Link(title=text(link.get("title"), f"{where}[{i}].title") or url, url=url))
    return out
