"""Alert normalisation: whatever sent the alert, the rest of warroom sees one `Alert`."""
from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timezone
from typing import Any, Callable

from engine.models import Alert, Link

MAX_ALERTS_PER_PAYLOAD = 1000


class AlertFormatError(ValueError):
    """The payload is not JSON, not a known alert format, or misses required fields."""


_ENV_ALIASES = {
    "prod": "production", "production": "production", "prd": "production", "live": "production",
    "stg": "staging", "stage": "staging", "staging": "staging", "preprod": "staging",
    "dev": "development", "development": "development", "test": "development", "qa": "staging",
}
_SERVICE_LABELS = ("service", "app", "app_kubernetes_io_name", "application", "job", "container", "deployment")
_ENV_LABELS = ("environment", "env", "stage", "tier_env")


def normalise_environment(value: str | None) -> str | None:
    if not value:
        return None
    return _ENV_ALIASES.get(value.strip().lower(), value.strip().lower())


def parse_time(value: Any) -> datetime | None:
    """RFC 3339 with up to nanoseconds (Alertmanager), or epoch seconds; the zero time is None."""
    if value in (None, "", 0):
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(float(value), tz=timezone.utc)
    text = str(value).strip()
    if text.startswith("0001-01-01"):
        return None
    text = text.replace("Z", "+00:00")
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)  # Python keeps microseconds only
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise AlertFormatError(f"bad timestamp {value!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def fingerprint_of(labels: dict[str, str]) -> str:
    canonical = json.dumps(sorted(labels.items()), separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _str_map(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise AlertFormatError(f"{what} must be an object")
    return {str(k): "" if v is None else str(v) for k, v in value.items()}


def _first(labels: dict[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        if labels.get(name):
            return labels[name]
    return None


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
            severity=(labels.get("severity") or "unknown").lower(),
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


NORMALISERS: dict[str, Callable[[dict[str, Any]], list[Alert]]] = {
    "alertmanager": from_alertmanager,
}


def detect_source(payload: Any) -> str:
    """Name the format of a decoded payload, or raise AlertFormatError."""
    if not isinstance(payload, dict):
        raise AlertFormatError("payload must be a JSON object")
    if isinstance(payload.get("alerts"), list) and ("groupKey" in payload or payload.get("version") == "4"
                                                   or "receiver" in payload):
        return "alertmanager"
    raise AlertFormatError("unknown alert format (expected an Alertmanager webhook v4 payload)")


def decode(body: bytes | str) -> Any:
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AlertFormatError(f"malformed JSON: {exc}") from exc


def normalise(payload: Any, source: str = "auto") -> list[Alert]:
    """Decoded payload -> alerts, validating the whole payload before anything is returned."""
    if source == "auto":
        source = detect_source(payload)
    elif not isinstance(payload, dict):
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
