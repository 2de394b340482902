"""The `http` connector: one HTTP request, status and a bounded excerpt of the body."""
from __future__ import annotations

from typing import Any
from urllib.parse import urljoin

import httpx

from connectors.base import ConnectorError, StepResult, TransientError

MAX_BODY = 4000
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


class HttpConnector:
    name = "http"

    def run(self, params: dict[str, Any], *, target: dict[str, Any] | None, secrets: dict[str, str],
            timeout: float) -> StepResult:
        method = str(params.get("method", "GET")).upper()
        if method not in METHODS:
            raise ConnectorError(f"unsupported HTTP method {method!r}")
        url = params.get("url") or params.get("path")
        if not url:
            raise ConnectorError("http step needs `url`")
        if target and target.get("base_url"):
            url = urljoin(str(target["base_url"]).rstrip("/") + "/", str(url).lstrip("/"))
        if not str(url).startswith(("http://", "https://")):
            raise ConnectorError(f"http step url must be http(s): {url!r}")
        headers = {str(k): str(v) for k, v in (params.get("headers") or {}).items()}
        if secrets.get("token") or secrets.get("bearer_token"):
            headers["Authorization"] = f"Bearer {secrets.get('token') or secrets.get('bearer_token')}"
        expect = params.get("expect_status")
        try:
            with httpx.Client(timeout=timeout, follow_redirects=False) as client:
                response = client.request(method, url, headers=headers, json=params.get("json"),
                                          content=params.get("body"))
        except (httpx.ConnectError, httpx.TimeoutException, httpx.RemoteProtocolError) as exc:
            raise TransientError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500 and expect is None and params.get("retry_5xx", False):
            raise TransientError(f"{method} {url}: HTTP {response.status_code}")
        body = response.text[:MAX_BODY]
        ok = response.status_code == int(expect) if expect is not None else response.status_code < 400
        return StepResult(ok=ok, summary=f"{method} {url} -> HTTP {response.status_code}", output=body,
                          data={"status": response.status_code, "elapsed_ms": int(response.elapsed.total_seconds()
                                                                                  * 1000)})
