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


def alert_hook(source: str):
    async def handler(request: web.Request) -> web.Response:
        metrics = request.app["metrics"]
        if not _authorised(request):
            metrics.webhooks.labels(source, "unauthorised").inc()
            return _error(401, "missing or wrong bearer token")
        body = await request.read()
        try:
            payload = decode(body)
            detected = detect_source(payload)
            if detected != source:
                raise AlertFormatError(f"not a {source} payload (looks like {detected})")
            alerts = normalise(payload, source)
        except AlertFormatError as exc:
            metrics.webhooks.labels(source, "rejected").inc()
            status = 400 if str(exc).startswith("malformed JSON") else 422
            return _error(status, str(exc))
        services = request.app["services"]
        ids = await asyncio.to_thread(receive, services, alerts)
        metrics.webhooks.labels(source, "accepted").inc()
        metrics.alerts.labels(source).inc(len(ids))
        request.app["annotator"].wake()
        return web.json_response({"accepted": len(ids), "alert_ids": ids}, status=202)
    return handler


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
