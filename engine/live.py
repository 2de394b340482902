"""Live read-only queries during context assembly: PromQL instant queries against the configured Prometheus.

What is asked: the alert's own expression (Alertmanager's `generatorURL`, `/graph?g0.expr=<expr>`) and the
configured per-service templates (`context.queries` in warroom.yml). Only `GET /api/v1/query` is ever sent, to the
configured target's URL — never to the host a webhook's `generatorURL` names — with `time` and a `timeout` equal to
the budget, so Prometheus gives up when we do.

All queries run concurrently within one wall-clock budget (`context.live_query_budget_s`). Whatever has not
answered by then is cancelled (its connection is closed); a timeout, an HTTP error or a Prometheus
`"status": "error"` never fails the annotation: it is logged and kept in `Context.live_notes`, and no evidence is
made of it. Each answer becomes one `live_query` evidence item, `<expr> = <value(s)> at <time>`, whose source is the
Prometheus graph URL of that expression.

The bot process never resolves secrets (workers do, from Vault), so the target must answer without credentials;
`engine.config` refuses a credentialed one when the config is loaded."""
from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, quote_plus, urlsplit

import httpx

from engine.config import WarroomConfig
from engine.models import Alert, Evidence

log = logging.getLogger(__name__)

KIND = "live_query"
MAX_QUERIES = 8            # the alert's expression plus templates, after de-duplication
MAX_SERIES_SHOWN = 3       # series named in one evidence line; the rest are counted
MAX_EXPR_SHOWN = 240       # characters of the expression quoted in the evidence text
MAX_LABELS_SHOWN = 120
_CANCEL_GRACE_S = 0.25     # how long cancelled requests get to close their connections


@dataclass
class LiveResult:
    evidence: list[Evidence] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)    # what was tried and failed, for logs and callers


class LiveQueryError(Exception):
    """Prometheus answered, but not with a result."""


# --- what to ask -------------------------------------------------------------------------------------------------

def alert_expression(alert: Alert | None) -> str | None:
    """The PromQL expression of an alert whose link is a Prometheus graph URL (`/graph?g0.expr=…`)."""
    for link in alert.links if alert else []:
        parts = urlsplit(link.url)
        if parts.scheme not in ("http", "https"):
            continue
        expr = parse_qs(parts.query).get("g0.expr")
        if expr and expr[0].strip():
            return expr[0].strip()
    return None


def escape_label_value(value: str) -> str:
    """A string made safe inside a double-quoted PromQL label value."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def planned_queries(config: WarroomConfig, *, alert: Alert | None, service: str | None) -> list[str]:
    """The expressions to run, the alert's own first, de-duplicated, at most MAX_QUERIES."""
    out: list[str] = []
    settings = config.context
    if settings.alert_expression:
        expr = alert_expression(alert)
        if expr and len(expr) <= 2000:
            out.append(expr)
    for query in settings.queries:
        if query.services and service not in query.services:
            continue
        if "{service}" in query.expr:
            if not service:
                continue
            expr = query.expr.replace("{service}", escape_label_value(service))
        else:
            expr = query.expr
        if expr not in out:
            out.append(expr)
    return out[:MAX_QUERIES]


def graph_url(base: str, expr: str) -> str:
    """Where a person sees this expression in Prometheus (the same shape as Alertmanager's generatorURL)."""
    return f"{base.rstrip('/')}/graph?g0.expr={quote_plus(expr)}&g0.tab=1"


# --- asking ------------------------------------------------------------------------------------------------------

def gather(config: WarroomConfig | None, *, alert: Alert | None, service: str | None,
           now: datetime | None = None) -> LiveResult:
    """Run the live queries for this alert or service within the budget; empty when live queries are off.
    Never raises: a failure is a note, not an error."""
    target = config.live_target() if config else None
    if target is None:
        return LiveResult()
    exprs = planned_queries(config, alert=alert, service=service)
    if not exprs:
        return LiveResult()
    base = str(target.params()["url"]).rstrip("/")
    budget = config.context.live_query_budget_s
    at = (now or datetime.now(timezone.utc)).timestamp()
    try:
        return _run(_query_all(base, exprs, at, budget))
    except Exception as exc:  # noqa: BLE001 — live data is a bonus; the annotation must still arrive
        log.warning("live queries to %s failed: %s", base, exc)
        return LiveResult(notes=[f"live queries failed: {exc}"])


def _run(coro):
    """Run a coroutine to completion from sync code, also when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="warroom-live") as pool:
        return pool.submit(asyncio.run, coro).result()


async def _query_all(base: str, exprs: list[str], at: float, budget: float) -> LiveResult:
    started = time.monotonic()
    result = LiveResult()
    timeout = httpx.Timeout(budget)
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False,
                                 headers={"Accept": "application/json", "User-Agent": "warroom-live-query"}) as client:
        tasks = {asyncio.create_task(_query(client, base, expr, at, budget)): expr for expr in exprs}
        done, pending = await asyncio.wait(tasks, timeout=budget)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=_CANCEL_GRACE_S)
        for task, expr in tasks.items():  # in the planned order: the alert's own expression first
            if task in pending:
                note = f"live query abandoned after {budget:g} s: {_shorten(expr)}"
            elif task.exception() is not None:
                note = f"live query failed: {_shorten(expr)}: {_reason(task.exception())}"
            else:
                result.evidence.append(_evidence(base, expr, at, *task.result()))
                continue
            result.notes.append(note)
    for note in result.notes:
        log.warning("%s (prometheus %s)", note, base)
    log.debug("live queries: %d answered, %d not, in %.2f s", len(result.evidence), len(result.notes),
              time.monotonic() - started)
    return result


async def _query(client: httpx.AsyncClient, base: str, expr: str, at: float, budget: float) -> tuple[str, Any]:
    """One instant query: `GET /api/v1/query`; (resultType, result) or LiveQueryError."""
    params = {"query": expr, "time": f"{at:.3f}", "timeout": f"{max(1, int(budget * 1000))}ms"}
    response = await client.get(f"{base}/api/v1/query", params=params)
    try:
        body = response.json()
    except ValueError:
        raise LiveQueryError(f"HTTP {response.status_code}, not a Prometheus API answer") from None
    if not isinstance(body, dict) or body.get("status") != "success":
        kind = body.get("errorType", "error") if isinstance(body, dict) else "error"
        message = body.get("error", "") if isinstance(body, dict) else ""
        raise LiveQueryError(f"HTTP {response.status_code} {kind}: {message}".strip())
    data = body.get("data")
    if not isinstance(data, dict) or "resultType" not in data:
        raise LiveQueryError("answer has no data.resultType")
    return str(data["resultType"]), data.get("result")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, LiveQueryError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"[:200]


# --- answers as evidence -----------------------------------------------------------------------------------------

def _evidence(base: str, expr: str, at: float, result_type: str, result: Any) -> Evidence:
    shown, sample_at = _values(result_type, result, at)
    when = datetime.fromtimestamp(sample_at, timezone.utc)
    return Evidence(kind=KIND, text=f"{_shorten(expr)} = {shown} at {when.isoformat(timespec='seconds')}",
                    source=graph_url(base, expr), at=when)


def _values(result_type: str, result: Any, at: float) -> tuple[str, float]:
    """(`0.124`, `0.3 {instance="a"}; 0.1 {instance="b"} (+2 more series)`, `no series`), and the sample time."""
    if result_type in ("scalar", "string"):
        ts, value = _sample(result, at)
        return (_number(value) if result_type == "scalar" else repr(value)), ts
    if result_type not in ("vector", "matrix") or not isinstance(result, list):
        raise LiveQueryError(f"unexpected resultType {result_type!r}")
    series = []
    for item in result:
        if not isinstance(item, dict):
            continue
        point = item.get("value") if result_type == "vector" else (item.get("values") or [None])[-1]
        ts, value = _sample(point, at)
        series.append((_as_float(value), ts, _number(value), _labels(item.get("metric") or {})))
    if not series:
        return "no series", at
    series.sort(key=lambda s: (math.isnan(s[0]), -s[0] if not math.isnan(s[0]) else 0))  # largest first
    shown = "; ".join(f"{value} {labels}".strip() if len(series) > 1 else value
                      for _, _, value, labels in series[:MAX_SERIES_SHOWN])
    if len(series) > MAX_SERIES_SHOWN:
        shown += f" (+{len(series) - MAX_SERIES_SHOWN} more series)"
    return shown, max(s[1] for s in series)


def _sample(point: Any, at: float) -> tuple[float, str]:
    if isinstance(point, (list, tuple)) and len(point) == 2:
        try:
            return float(point[0]), str(point[1])
        except (TypeError, ValueError):
            pass
    raise LiveQueryError("sample is not [<time>, <value>]")


def _as_float(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return math.nan


def _number(value: str) -> str:
    """Prometheus sends values as strings (`"0.12400000000000001"`, `"NaN"`, `"+Inf"`): four significant digits."""
    number = _as_float(value)
    if math.isnan(number) or math.isinf(number):
        return value
    return f"{number:.4g}"


def _labels(metric: dict) -> str:
    pairs = [f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__"]
    text = "{" + ", ".join(pairs) + "}" if pairs else ""
    return text if len(text) <= MAX_LABELS_SHOWN else text[:MAX_LABELS_SHOWN - 2] + "…}"


def _shorten(expr: str) -> str:
    flat = " ".join(expr.split())
    return flat if len(flat) <= MAX_EXPR_SHOWN else flat[:MAX_EXPR_SHOWN - 1] + "…"
