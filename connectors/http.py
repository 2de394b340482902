"""The `http` connector: one HTTP request, status and a bounded excerpt of the body."""
from __future__ import annotations

from typing import Any
from urllib.parse import urljoin

import httpx

from connectors.base import ConnectorError, StepResult, TransientError, bounded, checked

MAX_BODY = 4000


SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}   # retrying these cannot change anything


class HttpConnector:
    name = "http"

    def run(self, params: dict[str, Any], *, target: dict[str, Any] | None, secrets: dict[str, str],
            timeout: float, read_only: bool = True) -> StepResult:
        # read_only is not enforced here: a read can be a POST (search APIs), so the method says too little.
        p = checked(self.name, params)
        method, url = p["method"], _url(p, target)
        headers = dict(p["headers"])
        token = secrets.get("token") or secrets.get("bearer_token")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        expect = p.get("expect_status")
        try:
            with httpx.Client(timeout=timeout, follow_redirects=False) as client:
                response = client.request(method, url, headers=headers, json=p.get("json"), content=p.get("body"))
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise TransientError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc  # nothing was sent
        except (httpx.TimeoutException, httpx.RemoteProtocolError) as exc:
            # The request went out: a write may have happened, so only a step that just reads is retried.
            if read_only and method in SAFE_METHODS:
                raise TransientError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
            return StepResult(ok=False, summary=f"{method} {url}: {type(exc).__name__} after the request was sent; "
                                                "it may have taken effect, so it is not retried")
        if response.status_code >= 500 and expect is None and p["retry_5xx"] and method in SAFE_METHODS:
            raise TransientError(f"{method} {url}: HTTP {response.status_code}")
        ok = response.status_code == expect if expect is not None else response.status_code < 400
        return StepResult(ok=ok, summary=f"{method} {url} -> HTTP {response.status_code}",
                          output=bounded(response.text, MAX_BODY),
                          data={"status": response.status_code,
                                "elapsed_ms": int(response.elapsed.total_seconds() * 1000)})

    def describe(self, params: dict[str, Any], *, target: dict[str, Any] | None) -> str:
        p = checked(self.name, params)
        what = f"would send {p['method']} {_url(p, target)}"
        if "json" in p or "body" in p:
            what += " with a JSON body" if "json" in p else " with a body"
        if p.get("expect_status") is not None:
            what += f", expecting HTTP {p['expect_status']}"
        return what


def _url(p: dict[str, Any], target: dict[str, Any] | None) -> str:
    url = p.get("url") or p["path"]
    if target and target.get("base_url"):
        url = urljoin(str(target["base_url"]).rstrip("/") + "/", url.lstrip("/"))
    if not url.startswith(("http://", "https://")):
        raise ConnectorError(f"http step url must be http(s): {url!r}")
    return url
