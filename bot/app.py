"""The `warroom serve` aiohttp application: endpoints, the annotator and the outbox dispatcher."""
from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.metrics import Metrics
from bot.outbox import OutboxDispatcher
from bot.runtime import Runtime
from bot.webhooks import alert_hook, changes_hook
from engine.ports import ChatPort
from handlers.alert import annotate_pending
from storage import outbox

log = logging.getLogger(__name__)


class Annotator:
    """Annotates stored alerts in the background; woken by webhooks, and sweeping at start-up so
    alerts stored before a crash are annotated too."""

    def __init__(self, runtime: Runtime, metrics: Metrics) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            try:
                done = await asyncio.to_thread(annotate_pending, self.runtime.services)
                self.metrics.annotations.inc(done)
                if done:
                    continue
            except Exception:
                log.exception("annotating alerts failed; will retry")
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=2.0)
            except asyncio.TimeoutError:
                pass


@web.middleware
async def timing(request: web.Request, handler):
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
        request.app["metrics"].requests.labels(route, str(status)).observe(time.perf_counter() - started)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    runtime: Runtime = request.app["runtime"]
    problems = []

    def check_db() -> None:
        with runtime.services.pool.connection(timeout=2) as conn:
            conn.execute("SELECT 1")

    try:
        await asyncio.wait_for(asyncio.to_thread(check_db), timeout=3)
    except Exception as exc:
        problems.append(f"database: {type(exc).__name__}")
    if runtime.redis is not None:
        try:
            await asyncio.wait_for(asyncio.to_thread(runtime.redis.ping), timeout=3)
        except Exception as exc:
            problems.append(f"redis: {type(exc).__name__}")
    if problems:
        return web.json_response({"status": "unavailable", "problems": problems}, status=503)
    return web.json_response({"status": "ready"})


async def metrics_endpoint(request: web.Request) -> web.Response:
    metrics: Metrics = request.app["metrics"]
    services = request.app["services"]

    def pending() -> int:
        with services.pool.connection() as conn:
            return outbox.pending_count(conn)

    metrics.outbox_pending.set(await asyncio.to_thread(pending))
    return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def build_app(runtime: Runtime, *, ports: dict[str, ChatPort] | None = None,
              min_interval: dict[str, float] | None = None) -> web.Application:
    settings = runtime.settings
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[timing])
    metrics = Metrics()
    app["runtime"] = runtime
    app["settings"] = settings
    app["services"] = runtime.services
    app["metrics"] = metrics
    app["annotator"] = Annotator(runtime, metrics)
    app["dispatcher"] = OutboxDispatcher(runtime.services.pool, ports or {}, min_interval=min_interval)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_post("/hooks/alertmanager", alert_hook("alertmanager"))
    app.router.add_post("/hooks/changes", changes_hook)
    app.cleanup_ctx.append(_background)
    return app


async def _background(app: web.Application):
    stop = asyncio.Event()
    # Load the embedding model now rather than on the first alert (it takes a few seconds).
    warm = asyncio.create_task(asyncio.to_thread(app["services"].embedder.embed, ["warm up"]), name="warm-up")
    tasks = [warm, asyncio.create_task(app["annotator"].run(stop), name="annotator"),
             asyncio.create_task(app["dispatcher"].run(stop), name="outbox")]
    yield
    stop.set()  # stop taking new work; let the current drain finish
    await asyncio.wait(tasks, timeout=15)
