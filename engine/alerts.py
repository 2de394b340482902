"""Alert normalisation: whatever sent the alert, the rest of warroom sees one `Alert`."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Callable

from engine.alert_sources import NORMALISERS as _SOURCE_NORMALISERS
from engine.alert_sources.common import (ENV_LABELS, MAX_ALERTS_PER_PAYLOAD, SERVICE_LABELS, SEVERITIES,  # noqa: F401
                                         AlertFormatError, fingerprint_of, normalise_environment,
                                         normalise_severity, parse_time)
from engine.alert_sources.common import first as _first
from engine.alert_sources.common import str_map as _str_map
from engine.alert_sources.datadog import looks_like_datadog
from engine.alert_sources.generic import looks_like_generic
from engine.alert_sources.opsgenie import looks_like_opsgenie
from engine.models import Alert, Link

# The primitives moved to engine.alert_sources.common (the per-source modules need them without importing
# this module); these names stay importable from here for the rest of warroom.
_ENV_LABELS, _SERVICE_LABELS = ENV_LABELS, SERVICE_LABELS


def from_alertmanager(payload: dict[str, Any]) -> list[Alert]:
    """Alertmanager webhook v4: one notification carries a group of alerts."""
    alerts = payload.get("alerts")
    if not isinstance(alerts, list) or not alerts:
        raise AlertFormatError("alertmanager payload has no alerts")
    if len(alerts) > MAX_ALERTS_PER_PAYLOAD:
        raise AlertFormatError(f"too many alerts in one payload ({len(alerts)} > {MAX_ALERTS_PER_PAYLOAD})")
    common_labels = _str_map(payload.get("commonLabels"), "commonLabels")
    common_annotations = _str_map(payload.get("commonAnnotations"), "commonAnnotations")
    group_key = payload.get("groupKey")
    out = []
    for i, item in enumerate(alerts):
        if not isinstance(item, dict):
            raise AlertFormatError(f"alerts[{i}] is not an object")
        labels = {**common_labels, **_str_map(item.get("labels"), f"alerts[{i}].labels")}
        annotations = {**common_annotations, **_str_map(item.get("annotations"), f"alerts[{i}].annotations")}
        name = labels.get("alertname")
        if not name:
            raise AlertFormatError(f"alerts[{i}] has no alertname label")
        status = item.get("status") or payload.get("status")
        if status not in ("firing", "resolved"):
            raise AlertFormatError(f"alerts[{i}].status must be firing or resolved, not {status!r}")
        links = []
        if item.get("generatorURL"):
            links.append(Link(title="Source", url=str(item["generatorURL"])))
        for key, title in (("runbook_url", "Runbook"), ("dashboard_url", "Dashboard"), ("dashboard", "Dashboard")):
            if annotations.get(key, "").startswith(("http://", "https://")):
                links.append(Link(title=title, url=annotations[key]))
        out.append(Alert(
            source="alertmanager",
            fingerprint=str(item.get("fingerprint") or fingerprint_of(labels)),
            status=status,
            name=name,
            severity=normalise_severity(labels.get("severity")),  # raw value stays in labels["severity"]
            service=_first(labels, _SERVICE_LABELS),
            environment=normalise_environment(_first(labels, _ENV_LABELS)),
            summary=annotations.get("summary") or annotations.get("message") or name,
            description=annotations.get("description", ""),
            labels=labels,
            annotations=annotations,
            links=links,
            starts_at=parse_time(item.get("startsAt")),
            ends_at=parse_time(item.get("endsAt")),
            group_key=str(group_key) if group_key else None,
        ))
    return out


NORMALISERS: dict[str, Callable[[Any], list[Alert]]] = {
    "alertmanager": from_alertmanager,
    **_SOURCE_NORMALISERS,
}
SOURCES = tuple(NORMALISERS)


def _looks_like_grafana(payload: dict[str, Any]) -> bool:
    """Grafana's body is Alertmanager's shape with `version: "1"` (Alertmanager says "4") and per-alert
    fields only Grafana sends."""
    if payload.get("version") == "1":
        return True
    alerts = payload.get("alerts") or []
    return any(isinstance(a, dict) and ({"silenceURL", "dashboardURL", "valueString"} & set(a)) for a in alerts)


def detect_source(payload: Any) -> str:
    """Name the format of a decoded payload, or raise AlertFormatError. Each test looks for keys only its
    format has, most specific first, so no real sample is taken for another format."""
    if isinstance(payload, list):
        if looks_like_generic(payload):
            return "generic"
        raise AlertFormatError("payload must be a JSON object (or a list of generic alerts, each with a name)")
    if not isinstance(payload, dict):
        raise AlertFormatError("payload must be a JSON object")
    if isinstance(payload.get("event"), dict) and "event_type" in payload["event"]:
        return "pagerduty"
    if looks_like_opsgenie(payload):
        return "opsgenie"
    if isinstance(payload.get("alerts"), list):
        if _looks_like_grafana(payload):
            return "grafana"
        if "groupKey" in payload or payload.get("version") == "4" or "receiver" in payload:
            return "alertmanager"
    if looks_like_datadog(payload):
        return "datadog"
    if looks_like_generic(payload):
        return "generic"
    raise AlertFormatError("unknown alert format (expected an Alertmanager, Grafana, PagerDuty v3, Datadog, "
                           "Opsgenie or generic payload)")


def decode(body: bytes | str) -> Any:
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AlertFormatError(f"malformed JSON: {exc}") from exc


def normalise(payload: Any, source: str = "auto") -> list[Alert]:
    """Decoded payload -> alerts, validating the whole payload before anything is returned."""
    if source == "auto":
        source = detect_source(payload)
    elif not isinstance(payload, dict) and not (source == "generic" and isinstance(payload, list)):
        raise AlertFormatError("payload must be a JSON object")
    normaliser = NORMALISERS.get(source)
    if normaliser is None:
        raise AlertFormatError(f"unsupported alert source {source!r}")
    try:
        return normaliser(payload)
    except AlertFormatError:
        raise
    except (TypeError, ValueError, KeyError) as exc:  # pydantic ValidationError is a ValueError
        raise AlertFormatError(f"invalid {source} payload: {str(exc).splitlines()[0]}") from exc


def parse_change(item: Any) -> dict[str, Any]:
    """Validate one change event (`/hooks/changes` body item) into storable fields."""
    from pydantic import ValidationError

    from engine.models import Change, first_error

    if not isinstance(item, dict):
        raise AlertFormatError("a change must be a JSON object")
    try:
        change = Change.model_validate({**item, "at": parse_time(item.get("at")) or datetime.now(timezone.utc)})
    except ValidationError as exc:
        raise AlertFormatError(f"invalid change: {first_error(exc)}") from exc
    return change.model_dump()
