"""The `warroom serve` aiohttp application: endpoints, the annotator and the outbox dispatcher."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from datetime import datetime, timezone
from typing import Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bot.chat_work import InFlight, handler_work
from bot.metrics import Metrics
from bot.outbox import OutboxDispatcher, Pace
from bot.runtime import Runtime
from bot.settings import Settings
from bot.shell import render_text
from bot.webhooks import alert_hook, changes_hook, github_hook
from connectors.recovery import sweep_forever
from engine.cards import Card
from engine.config import ConfigError
from engine.log_context import bind, request_id_from, unbind
from engine.ports import ChatPort
from handlers.alert import annotate_pending
from handlers.insights import post_digest_if_due

log = logging.getLogger(__name__)


class Annotator:
    """Annotates stored alerts in the background; woken by webhooks, and sweeping at start-up so
    alerts stored before a crash are annotated too."""

    def __init__(self, runtime: Runtime, metrics: Metrics, *, published: Callable[[], None] = lambda: None) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.published = published   # its messages are in the outbox: wake the dispatcher
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
                    self.published()
                    continue
            except Exception:
                log.exception("annotating alerts failed; will retry")
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=2.0)
            except asyncio.TimeoutError:
                pass


# Probes and scrapes are answered while draining; everything else is work, refused then (a load balancer has
# already taken the replica out of rotation; a sender's retry reaches another replica, or this one restarted).
OPERATIONS_ROUTES = ("/healthz", "/readyz", "/metrics")
PLATFORM_ROUTES = {"/slack/events": "slack", "/api/messages": "teams"}


@web.middleware
async def correlate(request: web.Request, handler):
    """A request id per request (the caller's X-Request-Id if it is sane), bound for its logs (handler threads
    copy the context) and echoed back; work requests are counted, and refused while draining."""
    request_id = request["request_id"] = request_id_from(request.headers.get("X-Request-Id"))
    token = bind(request_id=request_id, correlation_id=request_id, platform=PLATFORM_ROUTES.get(request.path))
    try:
        if request.path in OPERATIONS_ROUTES:
            response = await handler(request)
        elif request.app["draining"].is_set():
            response = web.json_response({"error": "draining: this replica is shutting down, retry"}, status=503,
                                         headers={"Retry-After": "1", "Connection": "close"})
        else:
            with request.app["requests_in_flight"].track():
                response = await handler(request)
    except web.HTTPException as exc:
        exc.headers["X-Request-Id"] = request_id
        raise
    finally:
        unbind(token)
    if not response.prepared:
        response.headers["X-Request-Id"] = request_id
    return response


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access log line, naming the request id (it is written after the middleware unbound it). The
    query string is left out: signed card links carry their signature there."""

    def log(self, request, response, time: float) -> None:
        self.logger.info("%s %s %s %.3fs", request.method, request.path, response.status, time,
                         extra={"request_id": request.get("request_id"), "correlation_id": request.get("request_id")})


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
    if request.app["draining"].is_set():
        return web.json_response({"status": "draining"}, status=503)
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

    try:
        await asyncio.to_thread(metrics.refresh_outbox, services.pool)
    except Exception:  # noqa: BLE001 (the rest of the scrape is still worth having; the stale gauges show it)
        log.exception("reading outbox metrics failed")
    body = await asyncio.to_thread(generate_latest, metrics.registry)  # collectors read the database and Redis
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# Slack takes about one message a second per channel, with short bursts. Teams takes 7 a second and 60 in
# 30 seconds per conversation. The windows are measured here when a send starts, and a loaded host can take a
# couple of hundred milliseconds to put one on the wire while the next goes straight out, so they carry a
# margin: 7 per 1.3 s and 60 per 32 s never trip the connector's limits (a 429 costs far more than the margin).
DEFAULT_PACE = {"slack": Pace(rate=1.0, burst=3),
                "teams": Pace(rate=7.0, burst=7, windows=((7, 1.3), (60, 32.0)))}


def card_link_secret(settings: Settings) -> bytes | None:
    for secret in (settings.slack_signing_secret, settings.slack_app_token, settings.webhook_token,
                   settings.microsoft_app_password):
        if secret is not None:
            return hashlib.sha256(b"warroom-card-link:" + secret.get_secret_value().encode()).digest()
    return None


def card_link_signature(secret: bytes, ref: str) -> str:
    return hmac.new(secret, ref.encode(), hashlib.sha256).hexdigest()[:32]


def card_link(settings: Settings):
    """ref -> a signed link to the full text of a card that had to be cut to fit (None: no public URL)."""
    secret = card_link_secret(settings)
    if not settings.public_url or secret is None:
        return None
    base = settings.public_url.rstrip("/")
    return lambda ref: f"{base}/cards/{ref}?sig={card_link_signature(secret, ref)}"


async def full_card(request: web.Request) -> web.Response:
    """GET /cards/{ref}?sig=...: the whole card as text; the signature keeps other cards unguessable."""
    secret = card_link_secret(request.app["settings"])
    ref = request.match_info["ref"]
    if secret is None or not hmac.compare_digest(request.query.get("sig", ""), card_link_signature(secret, ref)):
        return web.json_response({"error": "unknown card"}, status=404)
    services = request.app["services"]

    def load():
        with services.pool.connection() as conn:
            return conn.execute("SELECT card FROM outbox WHERE id = %s", (int(ref),)).fetchone()

    row = await asyncio.to_thread(load)
    if row is None:
        return web.json_response({"error": "unknown card"}, status=404)
    return web.Response(text=render_text(Card.model_validate(row["card"])), content_type="text/plain")


def build_app(runtime: Runtime, *, ports: dict[str, ChatPort] | None = None,
              pace: dict[str, Pace] | None = None) -> web.Application:
    settings = runtime.settings
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[correlate, timing])
    metrics = runtime.metrics  # the LLM provider reports to it too, and was built before the app
    app["runtime"] = runtime
    app["settings"] = settings
    app["services"] = runtime.services
    app["metrics"] = metrics
    metrics.watch_incidents(runtime.services.pool, runtime.services.workspace)  # MTTA, MTTR, open incidents
    metrics.watch_work(runtime.services.pool, runtime.redis, runtime.services.workspace)  # queue, steps, dedup
    app["draining"] = asyncio.Event()  # set by drain(): /readyz answers 503, new work is refused
    app["requests_in_flight"] = InFlight()
    app["annotator"] = Annotator(runtime, metrics, published=lambda: app["dispatcher"].wake())
    ports = dict(ports or {})
    app["slack"] = _slack(app, runtime, ports)
    app["teams"] = _teams(app, runtime, ports)
    app["dispatcher"] = OutboxDispatcher(runtime.services.pool, ports, pace=DEFAULT_PACE if pace is None else pace)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get(r"/cards/{ref:\d+}", full_card)
    for source in ("alertmanager", "grafana", "pagerduty", "datadog", "opsgenie", "generic"):
        app.router.add_post(f"/hooks/{source}", alert_hook(source))
    app.router.add_post("/hooks/changes", changes_hook)
    app.router.add_post("/hooks/github", github_hook)
    app.cleanup_ctx.append(_background)
    return app


def _slack(app: web.Application, runtime: Runtime, ports: dict[str, ChatPort]):
    """The Slack adapter when a bot token is set: HTTP on /slack/events, or Socket Mode with an app token."""
    settings = runtime.settings
    if settings.slack_bot_token is None or "slack" in ports:
        return None
    from bot.slack.app import SlackAdapter
    from bot.slack.port import SlackPort

    if settings.slack_app_token is None and settings.slack_signing_secret is None:
        raise ConfigError("SLACK_BOT_TOKEN is set but SLACK_SIGNING_SECRET is not: requests to /slack/events "
                          "cannot be verified (set it, or SLACK_APP_TOKEN for Socket Mode)")
    adapter = SlackAdapter(runtime.services, settings, redis=runtime.redis, wake_annotator=app["annotator"].wake,
                           wake_outbox=lambda: app["dispatcher"].wake(),
                           dedup=app["metrics"].dedup)
    ports["slack"] = SlackPort(adapter.client, more_url=card_link(settings), text_renderer=render_text)
    if not adapter.socket_mode:
        app.router.add_post("/slack/events", adapter.handle_http)
    return adapter


def _teams(app: web.Application, runtime: Runtime, ports: dict[str, ChatPort]):
    """The Teams adapter on POST /api/messages. Without MicrosoftAppId it is the Bot Framework Emulator's
    unauthenticated mode, which only answers service URLs on loopback (see TeamsAdapter)."""
    if "teams" in ports:
        return None
    from bot.teams.app import TeamsAdapter
    from bot.teams.port import TeamsPort

    settings = runtime.settings
    if settings.microsoft_app_id and settings.microsoft_app_password is None:
        raise ConfigError("MicrosoftAppId is set but MicrosoftAppPassword is not: the bot could not reply "
                          "(set both, or neither for the Bot Framework Emulator)")
    adapter = TeamsAdapter(runtime.services, settings, redis=runtime.redis, dedup=app["metrics"].dedup,
                           wake_outbox=lambda: app["dispatcher"].wake())
    ports["teams"] = TeamsPort(adapter.cloud, adapter.references, app_id=settings.microsoft_app_id,
                               more_url=card_link(settings), text_renderer=render_text)
    app.router.add_post("/api/messages", adapter.handle_http)
    return adapter


DIGEST_CHECK_S = 300.0   # how often serve asks whether the weekly insights digest is due


async def weekly_digest(services, stop: asyncio.Event, *, every_s: float = DIGEST_CHECK_S) -> None:
    """Every few minutes: post the insights digest if its weekday and hour came (handlers/insights.py). Every
    replica asks; the database lets one of them post it per ISO week."""
    while not stop.is_set():
        try:
            await asyncio.to_thread(post_digest_if_due, services, datetime.now(timezone.utc))
        except Exception:
            log.exception("weekly insights digest failed; will retry")
        try:
            await asyncio.wait_for(stop.wait(), timeout=every_s)
        except asyncio.TimeoutError:
            pass


async def _background(app: web.Application):
    stop = app["stop"] = asyncio.Event()
    # Load the embedding model now rather than on the first alert (it takes a few seconds).
    warm = asyncio.create_task(asyncio.to_thread(app["services"].embedder.embed, ["warm up"]), name="warm-up")
    tasks = [warm, asyncio.create_task(app["annotator"].run(stop), name="annotator"),
             asyncio.create_task(app["dispatcher"].run(stop), name="outbox"),
             # Steps whose worker died mid-step are reported interrupted; approved steps whose enqueue was lost
             # are enqueued again (connectors/recovery.py).
             asyncio.create_task(sweep_forever(app["services"].pool, app["runtime"].redis,
                                               app["settings"].timing(), stop), name="recovery")]
    if app["services"].config.insights.digest is not None:
        tasks.append(asyncio.create_task(weekly_digest(app["services"], stop), name="insights-digest"))
    app["background"] = tasks
    socket_mode = None
    slack = app["slack"]
    if slack is not None:
        tasks.append(asyncio.create_task(slack.remember_identity(), name="slack-identity"))
        if slack.socket_mode:
            socket_mode = await slack.start_socket_mode()
    yield
    stop.set()  # stop taking new work; let the current drain finish
    if socket_mode is not None:
        await socket_mode.close_async()
    await asyncio.wait(tasks, timeout=15)


async def drain(app: web.Application, *, grace_s: float) -> int:
    """The graceful part of a shutdown, before the listener closes: /readyz answers 503 at once and new work
    is refused; requests under way, and the engine work they started after their ack, finish; the annotator
    and the sweeper stop; the outbox is sent until nothing is due. All within `grace_s` seconds. Returns how
    many outbox messages were left queued (for the next replica: nothing is dropped)."""
    deadline = time.monotonic() + grace_s
    app["draining"].set()
    log.info("draining: /readyz answers 503; finishing work under way (grace %.0fs)", grace_s)
    if not await app["requests_in_flight"].wait(deadline - time.monotonic()):
        log.warning("%d requests still under way at the end of the grace", app["requests_in_flight"].count)
    if not await handler_work.wait(deadline - time.monotonic()):
        log.warning("%d chat handlers still running at the end of the grace", handler_work.count)
    app["stop"].set()  # the annotator and the sweeper stop after what they are doing now
    background = [t for t in app["background"] if t.get_name() in ("annotator", "recovery", "outbox")]
    await asyncio.wait(background, timeout=max(0.0, deadline - time.monotonic()))
    left = await app["dispatcher"].drain_for_shutdown(deadline)
    if left:
        log.warning("shutdown grace over: %d outbox messages left queued for the next replica", left)
    else:
        log.info("outbox drained")
    return left
