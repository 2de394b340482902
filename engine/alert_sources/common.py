"""Primitives every alert normaliser shares. They live here (and are re-exported by engine.alerts) so the
per-source modules never import engine.alerts, which imports them: no import cycle."""
from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timezone
from typing import Any

from engine.models import Link

MAX_ALERTS_PER_PAYLOAD = 1000
MAX_TEXT = 4000  # a description is shown in a card and stored; a runaway body is cut, not refused


class AlertFormatError(ValueError):
    """The payload is not JSON, not a known alert format, or misses required fields."""


_ENV_ALIASES = {
    "prod": "production", "production": "production", "prd": "production", "live": "production",
    "stg": "staging", "stage": "staging", "staging": "staging", "preprod": "staging",
    "dev": "development", "development": "development", "test": "development", "qa": "staging",
}
SERVICE_LABELS = ("service", "app", "app_kubernetes_io_name", "application", "job", "container", "deployment")
ENV_LABELS = ("environment", "env", "stage", "tier_env")

# The engine's severity vocabulary. Sources speak P1..P5, SEV-n, urgency words or free text; the raw value is
# kept in labels, the normalised one drives incident opening and card colour.
SEVERITIES = ("critical", "warning", "info", "unknown")
_SEVERITY_WORDS = {
    **dict.fromkeys(("critical", "crit", "fatal", "emergency", "emerg", "alert", "page", "disaster", "error",
                     "err", "high", "major"), "critical"),
    **dict.fromkeys(("warning", "warn", "medium", "moderate", "minor", "average"), "warning"),
    **dict.fromkeys(("info", "informational", "information", "notice", "low", "debug", "ok", "none"), "info"),
}
# P1 is critical; P2/P3 need attention but do not open an incident by themselves; P4/P5 are informational.
_RANK_SEVERITY = {"0": "critical", "1": "critical", "2": "warning", "3": "warning", "4": "info", "5": "info"}
_RANK = re.compile(r"(?:p|sev-?|s)?\s*([0-5])", re.I)


def normalise_severity(raw: Any) -> str:
    if raw is None or isinstance(raw, bool):
        return "unknown"
    text = str(raw).strip().lower()
    if not text:
        return "unknown"
    rank = _RANK.fullmatch(text)
    if rank:
        return _RANK_SEVERITY[rank.group(1)]
    return _SEVERITY_WORDS.get(text, "unknown")


def most_severe(*values: str) -> str:
    ranked = [v for v in SEVERITIES if v in values]
    return ranked[0] if ranked else "unknown"


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


def parse_epoch(value: Any, what: str) -> datetime | None:
    """Epoch in s, ms, µs or ns, as a number or a numeric string (Datadog's $DATE is ms in a string,
    Opsgenie's createdAt ms, its updatedAt ns). The unit is told by the magnitude."""
    if value in (None, "", 0, "0"):
        return None
    try:
        number = int(value) if not isinstance(value, float) else value
    except (TypeError, ValueError):
        raise AlertFormatError(f"{what} must be an epoch timestamp, not {value!r}") from None
    if isinstance(number, bool) or number < 0:
        raise AlertFormatError(f"{what} must be an epoch timestamp, not {value!r}")
    for threshold, divisor in ((1e17, 1e9), (1e14, 1e6), (1e11, 1e3)):  # ns, µs, ms (seconds stay below 1e11)
        if number >= threshold:
            number = number / divisor
            break
    try:
        return datetime.fromtimestamp(float(number), tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise AlertFormatError(f"{what} is out of range: {value!r}") from None


def fingerprint_of(labels: dict[str, str]) -> str:
    canonical = json.dumps(sorted(labels.items()), separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def str_map(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise AlertFormatError(f"{what} must be an object")
    out = {}
    for k, v in value.items():
        if isinstance(v, (dict, list)):
            raise AlertFormatError(f"{what}.{k} must be a string, not {type(v).__name__}")
        out[str(k)] = "" if v is None else str(v)
    return out


def first(labels: dict[str, str], names: tuple[str, ...]) -> str | None:
    for name in names:
        if labels.get(name):
            return labels[name]
    return None


def obj(value: Any, what: str, *, required: bool = True) -> dict[str, Any]:
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise AlertFormatError(f"{what} must be an object" if value is not None else f"{what} is required")
    return value


def text(value: Any, what: str, *, required: bool = False) -> str:
    """A scalar as a string ('' when absent). Objects and lists are refused: they are a wrong shape."""
    if value is None or value == "":
        if required:
            raise AlertFormatError(f"{what} is required")
        return ""
    if isinstance(value, (dict, list)) or isinstance(value, bool):
        raise AlertFormatError(f"{what} must be a string, not {type(value).__name__}")
    return str(value)


def cut(value: str, limit: int = MAX_TEXT) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def add_link(links: list[Link], title: str, url: Any) -> None:
    """Only absolute http(s) links reach a card; duplicates are dropped."""
    if isinstance(url, str) and url.startswith(("http://", "https://")) and all(l.url != url for l in links):
        links.append(Link(title=title, url=url))


def key_value_tags(tags: list[str]) -> dict[str, str]:
    """Datadog/Opsgenie style tags, "service:api" → {"service": "api"}; bare tags are kept by the caller."""
    out: dict[str, str] = {}
    for tag in tags:
        key, sep, value = tag.partition(":")
        if sep and key.strip() and value.strip():
            out.setdefault(key.strip(), value.strip())
    return out
