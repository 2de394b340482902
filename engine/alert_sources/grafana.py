"""Grafana unified alerting webhook (`"version": "1"`).

It is Alertmanager's shape (Grafana embeds Alertmanager) plus Grafana's own per-alert fields: `silenceURL`,
`dashboardURL`, `panelURL`, `imageURL`, `values` and `valueString` (what the query evaluated to), and a
`fingerprint` Grafana computes itself. Grafana 12's test notification sends a *relative* generatorURL
("?orgId=1"), so links are resolved against `externalURL`.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urljoin

from engine.alert_sources.common import (ENV_LABELS, MAX_ALERTS_PER_PAYLOAD, SERVICE_LABELS, AlertFormatError,
                                         add_link, cut, fingerprint_of, first, normalise_environment,
                                         normalise_severity, parse_time, str_map, text)
from engine.models import Alert, Link

_LINKS = (("generatorURL", "Source"), ("dashboardURL", "Dashboard"), ("panelURL", "Panel"),
          ("silenceURL", "Silence"), ("imageURL", "Image"))


def from_grafana(payload: dict[str, Any]) -> list[Alert]:
    alerts = payload.get("alerts")
    if not isinstance(alerts, list) or not alerts:
        raise AlertFormatError("grafana payload has no alerts")
    if len(alerts) > MAX_ALERTS_PER_PAYLOAD:
        raise AlertFormatError(f"too many alerts in one payload ({len(alerts)} > {MAX_ALERTS_PER_PAYLOAD})")
    common_labels = str_map(payload.get("commonLabels"), "commonLabels")
    common_annotations = str_map(payload.get("commonAnnotations"), "commonAnnotations")
    base = text(payload.get("externalURL"), "externalURL")
    group_key = text(payload.get("groupKey"), "groupKey") or None
    return [_one(item, i, common_labels, common_annotations, base, group_key, payload.get("status"))
            for i, item in enumerate(alerts)]


def _one(item: Any, i: int, common_labels: dict[str, str], common_annotations: dict[str, str], base: str,
         group_key: str | None, group_status: Any) -> Alert:
    where = f"alerts[{i}]"
    if not isinstance(item, dict):
        raise AlertFormatError(f"{where} is not an object")
    labels = {**common_labels, **str_map(item.get("labels"), f"{where}.labels")}
    annotations = {**common_annotations, **str_map(item.get("annotations"), f"{where}.annotations")}
    name = labels.get("alertname")
    if not name:
        raise AlertFormatError(f"{where} has no alertname label")
    status = item.get("status") or group_status
    if status not in ("firing", "resolved"):
        raise AlertFormatError(f"{where}.status must be firing or resolved, not {status!r}")
    # What the rule's queries evaluated to: Grafana 11+ sends `values` (ref id → number) next to the older
    # `valueString`; both go into annotations so a card or a hypothesis can quote the number.
    values = item.get("values")
    if values is not None and not isinstance(values, dict):
        raise AlertFormatError(f"{where}.values must be an object")
    if values:
        annotations["values"] = ", ".join(f"{k}={v}" for k, v in values.items())
    value_string = text(item.get("valueString"), f"{where}.valueString")
    if value_string:
        annotations["value_string"] = value_string
    links: list[Link] = []
    for key, title in _LINKS:
        url = text(item.get(key), f"{where}.{key}")
        add_link(links, title, urljoin(base, url) if url and base else url)
    add_link(links, "Runbook", annotations.get("runbook_url"))
    description = annotations.get("description") or (
        f"Values: {annotations['values']}" if values else (f"Value: {value_string}" if value_string else ""))
    return Alert(
        source="grafana",
        fingerprint=text(item.get("fingerprint"), f"{where}.fingerprint") or fingerprint_of(labels),
        status=status,
        name=name,
        severity=normalise_severity(labels.get("severity")),  # the raw value stays in labels["severity"]
        service=first(labels, SERVICE_LABELS),
        environment=normalise_environment(first(labels, ENV_LABELS)),
        summary=annotations.get("summary") or name,
        description=cut(description),
        labels=labels,
        annotations=annotations,
        links=links,
        starts_at=parse_time(item.get("startsAt")),
        ends_at=parse_time(item.get("endsAt")),
        group_key=group_key,
    )
