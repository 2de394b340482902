"""GitHub `deployment_status` webhook payloads -> changes (evidence for hypotheses), with provenance.

Shape (GitHub docs, "Webhook events and payloads" > deployment_status): `deployment_status` {state,
created_at, environment, target_url, log_url, environment_url, description, creator}, `deployment` {id, sha,
ref, environment, payload, creator, url}, `repository` {name, full_name, html_url}, `sender` {login}.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ValidationError

from engine.alerts import AlertFormatError, parse_time
from engine.models import Change, first_error

# A deploy that is running or finished has changed (or tried to change) the environment; queued/pending ones
# have not yet, and `inactive` only marks an older deployment as superseded.
RECORDED_STATES = {"in_progress", "success", "failure", "error"}
KNOWN_STATES = RECORDED_STATES | {"queued", "pending", "inactive", "waiting"}


class Ignored(Exception):
    """A well-formed delivery that records nothing; the message says why (answered with 202)."""


def deployment_change(payload: Any) -> tuple[Change, str]:
    """The change a deployment status describes and its external id (one row per GitHub deployment).

    Raises AlertFormatError when required fields are missing, Ignored for states that change nothing yet.
    """
    if not isinstance(payload, dict):
        raise AlertFormatError("a deployment_status payload must be a JSON object")
    status, deployment, repository = (_object(payload, key) for key in ("deployment_status", "deployment",
                                                                         "repository"))
    state = status.get("state")
    if state not in KNOWN_STATES:
        raise AlertFormatError(f"deployment_status.state: unknown state {state!r}")
    if state not in RECORDED_STATES:
        raise Ignored(f"deployment state {state!r} changes nothing yet; recorded: {', '.join(sorted(RECORDED_STATES))}")
    deployment_id = deployment.get("id")
    if not isinstance(deployment_id, int):
        raise AlertFormatError("deployment.id: missing or not an integer")
    at = _time(status.get("created_at"), "deployment_status.created_at")
    service = _service(deployment, repository)
    environment = status.get("environment") or deployment.get("environment") or "an unnamed environment"
    version = _version(deployment)
    summary = (f"GitHub deployment {deployment_id} of {repository.get('full_name') or service}"
               f"{' ' + version if version else ''} to {environment}: {state.replace('_', ' ')}"
               + (f" ({status['description']})" if status.get("description") else ""))
    try:
        change = Change(service=service, kind="deploy", summary=summary[:500], version=version,
                        author=_author(deployment, status, payload), at=at,
                        source=_provenance(status, deployment, repository))
    except ValidationError as exc:
        raise AlertFormatError(f"invalid deployment_status: {first_error(exc)}") from exc
    return change, f"github:deployment:{deployment_id}"


def _object(payload: dict, key: str) -> dict:
    value = payload.get(key)
    if not isinstance(value, dict):
        raise AlertFormatError(f"{key}: missing or not an object")
    return value


def _time(value: Any, where: str) -> datetime:
    try:
        parsed = parse_time(value)
    except (AlertFormatError, ValueError, OverflowError, OSError) as exc:
        raise AlertFormatError(f"{where}: {exc}") from exc
    if parsed is None:
        raise AlertFormatError(f"{where}: missing")
    return parsed


def _service(deployment: dict, repository: dict) -> str:
    """A deployment payload may name the service (`{"service": "payments-api"}`); else the repository does."""
    custom = deployment.get("payload")
    if isinstance(custom, dict) and isinstance(custom.get("service"), str) and custom["service"].strip():
        return custom["service"].strip()
    name = repository.get("name")
    if not isinstance(name, str) or not name:
        raise AlertFormatError("repository.name: missing (and deployment.payload names no service)")
    return name


def _version(deployment: dict) -> str | None:
    """`v2.4.1 (f95f852)`: the ref people deployed, and the commit it pointed at."""
    ref, sha = deployment.get("ref"), deployment.get("sha")
    short = sha[:7] if isinstance(sha, str) and sha else None
    if isinstance(ref, str) and ref and ref != sha:
        return f"{ref} ({short})" if short else ref
    return short


def _author(deployment: dict, status: dict, payload: dict) -> str | None:
    for who in (deployment.get("creator"), payload.get("sender"), status.get("creator")):
        if isinstance(who, dict) and isinstance(who.get("login"), str):
            return who["login"]
    return None


def _provenance(status: dict, deployment: dict, repository: dict) -> str | None:
    """Where a person can look: the deploy log, else the status link, else the repository's deployments page."""
    for url in (status.get("log_url"), status.get("target_url")):
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            return url
    if isinstance(repository.get("html_url"), str):
        return f"{repository['html_url']}/deployments"
    return deployment.get("url") if isinstance(deployment.get("url"), str) else None
