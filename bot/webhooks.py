"""Alert and change webhooks: authenticate, validate the whole body, write durably, then answer."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
from urllib.parse import parse_qs

from aiohttp import web

from engine.alerts import AlertFormatError, decode, detect_source, normalise, parse_change
from engine.deployments import Ignored, deployment_change
from handlers.alert import receive
from storage import alerts as alert_store


def _authorised(request: web.Request) -> bool:
    token = request.app["settings"].webhook_token
    if token is None:
        return True
    header = request.headers.get("Authorization", "")
    return hmac.compare_digest(header.encode(), f"Bearer {token.get_secret_value()}".encode())


def _error(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


def _bearer_refusal(request: web.Request, body: bytes) -> str | None:
    return None if _authorised(request) else "missing or wrong bearer token"


def _pagerduty_refusal(request: web.Request, body: bytes) -> str | None:
    """Why a delivery is not PagerDuty's, or None. PagerDuty v3 signs the raw body: `X-PagerDuty-Signature:
    v1=<hex hmac-sha256>`, several comma-separated while a secret is rotated (any one may match). With no
    secret configured the hook is guarded like the others, by WARROOM_WEBHOOK_TOKEN (PagerDuty subscriptions can
    send custom headers, so a bearer token is possible there)."""
    secret = request.app["settings"].pagerduty_webhook_secret
    if secret is None:
        return _bearer_refusal(request, body)
    expected = "v1=" + hmac.new(secret.get_secret_value().encode(), body, hashlib.sha256).hexdigest()
    given = [s.strip() for s in request.headers.get("X-PagerDuty-Signature", "").split(",") if s.strip()]
    # compare every candidate (no early exit) so timing does not tell which one was close
    matched = [hmac.compare_digest(g.encode(), expected.encode()) for g in given]
    return None if any(matched) else "missing or wrong X-PagerDuty-Signature"


_REFUSALS = {"pagerduty": _pagerduty_refusal}


def alert_hook(source: str):
    refusal_of = _REFUSALS.get(source, _bearer_refusal)

    async def handler(request: web.Request) -> web.Response:
        metrics = request.app["metrics"]
        body = await request.read()
        refusal = refusal_of(request, body)  # before anything parses the body
        if refusal:
            metrics.webhooks.labels(source, "unauthorised").inc()
            return _error(401, refusal)
        try:
            payload = decode(body)
            alerts = _alerts_of(payload, source)
        except AlertFormatError as exc:
            metrics.webhooks.labels(source, "rejected").inc()
            status = 400 if str(exc).startswith("malformed JSON") else 422
            return _error(status, str(exc))
        ids = []
        if alerts:  # PagerDuty's ping carries no alert: acknowledged, nothing written
            services = request.app["services"]
            ids = await asyncio.to_thread(receive, services, alerts)
            request.app["annotator"].wake()
        metrics.webhooks.labels(source, "accepted").inc()
        metrics.alerts.labels(source).inc(len(ids))
        return web.json_response({"accepted": len(ids), "alert_ids": ids}, status=202)
    return handler


def _alerts_of(payload, source: str):
    """A payload of another format on this hook is refused (422), never reinterpreted."""
    try:
        detected = detect_source(payload)
    except AlertFormatError:
        if source != "generic":
            raise
        return normalise(payload, source)  # the generic normaliser names the field that is wrong
    if detected != source:
        raise AlertFormatError(f"not a {source} payload (looks like {detected})")
    return normalise(payload, source)


async def changes_hook(request: web.Request) -> web.Response:
    if not _authorised(request):
        return _error(401, "missing or wrong bearer token")
    try:
        payload = decode(await request.read())
        items = payload if isinstance(payload, list) else [payload]
        changes = [parse_change(item) for item in items]
    except AlertFormatError as exc:
        return _error(400 if str(exc).startswith("malformed JSON") else 422, str(exc))
    services = request.app["services"]

    def store() -> list[int]:
        with services.pool.connection() as conn, conn.transaction():
            return [alert_store.insert_change(conn, change=c, workspace=services.workspace) for c in changes]

    ids = await asyncio.to_thread(store)
    return web.json_response({"accepted": len(ids), "change_ids": ids}, status=202)


# --- GitHub ----------------------------------------------------------------------------------------------


def _github_refusal(request: web.Request, body: bytes) -> str | None:
    """Why a delivery is not GitHub's, or None. GitHub signs the raw body with the hook's secret; with no
    secret the hook is open only as long as the other /hooks/* are (no WARROOM_WEBHOOK_TOKEN either)."""
    settings = request.app["settings"]
    secret = settings.github_webhook_secret
    if secret is None:
        if settings.webhook_token is not None:
            return "GITHUB_WEBHOOK_SECRET is not set, so GitHub deliveries cannot be verified"
        return None
    expected = "sha256=" + hmac.new(secret.get_secret_value().encode(), body, hashlib.sha256).hexdigest()
    given = request.headers.get("X-Hub-Signature-256", "")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return "missing or wrong X-Hub-Signature-256"
    return None


def _github_payload(request: web.Request, body: bytes):
    """GitHub sends JSON, or a form with the JSON in `payload` when the hook's content type is form-encoded."""
    if request.content_type == "application/x-www-form-urlencoded":
        fields = parse_qs(body.decode("utf-8", errors="replace"))
        if "payload" not in fields:
            raise AlertFormatError("malformed JSON: form body without a `payload` field")
        body = fields["payload"][0].encode()
    return decode(body)


async def github_hook(request: web.Request) -> web.Response:
    """POST /hooks/github: `deployment_status` deliveries become changes (evidence); `ping` is answered;
    other events are acknowledged and ignored. Nothing is written unless the whole delivery is valid."""
    metrics = request.app["metrics"]
    body = await request.read()
    refusal = _github_refusal(request, body)
    if refusal:
        metrics.webhooks.labels("github", "unauthorised").inc()
        return _error(401, refusal)
    event = request.headers.get("X-GitHub-Event")
    delivery = request.headers.get("X-GitHub-Delivery")
    if not event:
        metrics.webhooks.labels("github", "rejected").inc()
        return _error(400, "missing X-GitHub-Event header")
    try:
        payload = _github_payload(request, body)
        if event == "ping":
            metrics.webhooks.labels("github", "ping").inc()
            return web.json_response({"ok": True, "zen": payload.get("zen") if isinstance(payload, dict) else None,
                                      "delivery": delivery})
        if event != "deployment_status":
            metrics.webhooks.labels("github", "ignored").inc()
            return web.json_response({"ignored": f"event {event!r} is not recorded; /hooks/github records "
                                                 "deployment_status", "delivery": delivery}, status=202)
        change, external_id = deployment_change(payload)
    except Ignored as exc:
        metrics.webhooks.labels("github", "ignored").inc()
        return web.json_response({"ignored": str(exc), "delivery": delivery}, status=202)
    except AlertFormatError as exc:
        metrics.webhooks.labels("github", "rejected").inc()
        return _error(400 if str(exc).startswith("malformed JSON") else 422, str(exc))
    services = request.app["services"]

    def store() -> tuple[int, bool]:
        with services.pool.connection() as conn, conn.transaction():
            return alert_store.record_external_change(conn, change=change.model_dump(), external_id=external_id,
                                                      workspace=services.workspace)

    change_id, new = await asyncio.to_thread(store)
    metrics.webhooks.labels("github", "accepted").inc()
    return web.json_response({"accepted": 1, "change_id": change_id, "new": new, "service": change.service,
                              "delivery": delivery}, status=202)
