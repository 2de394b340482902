"""The `prometheus` connector: one PromQL query (instant or range) against the HTTP API, summarised.

Queries only read, so every failure to get an answer (connection, timeout, 5xx) is worth retrying; an answer
with `status: error` (bad PromQL, a query Prometheus gave up on) is a failed result."""
from __future__ import annotations

import math
import time
from typing import Any

import httpx

from connectors.base import ConnectorError, StepResult, TransientError, checked
from connectors.redact import redact
from engine.connector_params import parse_duration, parse_time

MAX_SERIES = 20        # series shown in the output
MAX_LABELS = 200       # characters of one series' labels
RANGE_POINTS = 250     # points per series when the step is not given
DEFAULT_RANGE = "-1h"


class PrometheusConnector:
    name = "prometheus"

    def run(self, params: dict[str, Any], *, target: dict[str, Any] | None, secrets: dict[str, str],
            timeout: float, read_only: bool = True) -> StepResult:
        p = checked(self.name, params)
        base = _base(target)
        path, query = _request(p, time.time(), timeout)
        headers = {"Authorization": f"Bearer {secrets['token']}"} if secrets.get("token") else {}
        try:
            with httpx.Client(timeout=timeout, follow_redirects=False) as client:
                response = client.get(f"{base}{path}", params=query, headers=headers)
        except httpx.HTTPError as exc:
            raise TransientError(f"GET {base}{path}: {type(exc).__name__}: "
                                 f"{redact(str(exc), secrets.values())}") from None
        if response.status_code >= 500 and not _is_api_answer(response):
            raise TransientError(f"GET {base}{path}: HTTP {response.status_code}")
        if response.status_code in (401, 403):
            raise ConnectorError(f"GET {base}{path}: HTTP {response.status_code}: not authorised")
        if not _is_api_answer(response):
            return StepResult(ok=False, summary=f"HTTP {response.status_code}, not a Prometheus API answer",
                              output=response.text[:500])
        body = response.json()
        if body.get("status") != "success":
            if response.status_code >= 500 and body.get("errorType") in ("timeout", "internal", "unavailable"):
                raise TransientError(f"Prometheus {body.get('errorType')}: {body.get('error', '')}")
            return StepResult(ok=False, summary=f"Prometheus {body.get('errorType', 'error')}: "
                                                f"{body.get('error', '(no message)')}")
        return summarise(p["query"], body.get("data") or {}, body.get("warnings") or [])

    def describe(self, params: dict[str, Any], *, target: dict[str, Any] | None) -> str:
        p = checked(self.name, params)
        base = str((target or {}).get("url") or "(no target url)").rstrip("/")
        if p["type"] == "range":
            span = f" from {p.get('start', DEFAULT_RANGE)} to {p.get('end', 'now')}"
            span += f" every {p['step']}" if p.get("step") else ""
            return f"would run the range query `{p['query']}`{span} on {base}"
        at = f" at {p['time']}" if p.get("time") is not None else ""
        return f"would run the instant query `{p['query']}`{at} on {base}"


def _base(target: dict[str, Any] | None) -> str:
    url = str((target or {}).get("url") or "")
    if not url.startswith(("http://", "https://")):
        raise ConnectorError("prometheus step needs a target with an http(s) `url`")
    return url.rstrip("/")


def _request(p: dict[str, Any], now: float, timeout: float) -> tuple[str, dict[str, str]]:
    """(API path, query parameters); Prometheus is told our timeout so it gives up when we do."""
    query = {"query": p["query"], "timeout": f"{max(1, int(timeout * 1000))}ms"}
    if p["type"] == "instant":
        if p.get("time") is not None:
            query["time"] = f"{parse_time(p['time'], now):.3f}"
        return "/api/v1/query", query
    start, end = parse_time(p.get("start", DEFAULT_RANGE), now), parse_time(p.get("end", "now"), now)
    if end <= start:
        raise ConnectorError("range query: `end` must be after `start`")
    step = parse_duration(p["step"]) if p.get("step") else max(1.0, math.ceil((end - start) / RANGE_POINTS))
    query.update(start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}")
    return "/api/v1/query_range", query


def _is_api_answer(response: httpx.Response) -> bool:
    try:
        return isinstance(response.json(), dict) and "status" in response.json()
    except ValueError:
        return False


def summarise(expr: str, data: dict[str, Any], warnings: list[str]) -> StepResult:
    """Series count, then each series' labels and last value, largest first."""
    kind, result = data.get("resultType"), data.get("result")
    if kind in ("scalar", "string"):
        value = result[1] if isinstance(result, list) and len(result) == 2 else result
        return StepResult(ok=True, summary=f"{kind}: {_number(value)}", output=f"{expr} = {_number(value)}",
                          data={"result_type": kind, "value": value})
    if kind not in ("vector", "matrix") or not isinstance(result, list):
        return StepResult(ok=False, summary=f"unexpected resultType {kind!r}")
    series = []
    for item in result:
        points = [item["value"]] if kind == "vector" else item.get("values") or []
        if not points:
            continue
        last = str(points[-1][1])
        series.append({"labels": _labels(item.get("metric") or {}), "last": last, "points": len(points)})
    series.sort(key=lambda s: -_float(s["last"]) if not math.isnan(_float(s["last"])) else math.inf)
    lines = [f"{_number(s['last'])}  {s['labels'] or '{}'}" + (f"  ({s['points']} points)" if kind == "matrix"
                                                                else "") for s in series[:MAX_SERIES]]
    if len(series) > MAX_SERIES:
        lines.append(f"… and {len(series) - MAX_SERIES} more series")
    lines += [f"warning: {w}" for w in warnings]
    if not series:
        summary = "no series (the query matched nothing)"
    elif len(series) == 1:
        summary = f"1 series, last value {_number(series[0]['last'])}"
    else:
        summary = f"{len(series)} series, largest last value {_number(series[0]['last'])}"
    return StepResult(ok=True, summary=summary, output="\n".join(lines),
                      data={"result_type": kind, "series": series[:MAX_SERIES], "series_count": len(series)})


def _labels(metric: dict[str, Any]) -> str:
    name = metric.get("__name__", "")
    pairs = ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
    text = f"{name}{{{pairs}}}" if pairs else name
    return text if len(text) <= MAX_LABELS else text[:MAX_LABELS - 1] + "…"


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _number(value: Any) -> str:
    """Prometheus sends values as strings (`"0.12400000000000001"`, `"NaN"`): four significant digits."""
    number = _float(value)
    return str(value) if math.isnan(number) or math.isinf(number) else f"{number:.4g}"
