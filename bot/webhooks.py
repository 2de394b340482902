"""Alert and change webhooks: authenticate, validate the whole body, write durably, then answer."""
from __future__ import annotations

import asyncio
import hmac

from aiohttp import web

from engine.alerts import AlertFormatError, decode, detect_source, normalise, parse_change
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
