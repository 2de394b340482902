"""Small pieces the loopback stand-ins and tests share."""
from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any


def send_json(request: BaseHTTPRequestHandler, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
    """Answer a request with `body` as JSON (bytes are sent as they are)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request.send_response(status)
    request.send_header("Content-Type", "application/json")
    request.send_header("Content-Length", str(len(data)))
    for name, value in (headers or {}).items():
        request.send_header(name, value)
    request.end_headers()
    request.wfile.write(data)


def texts_in(node: Any) -> list[str]:
    """Every string under a `text` key, depth first: what a Block Kit message or an Adaptive Card says."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            found.extend([value] if key == "text" and isinstance(value, str) else texts_in(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(texts_in(item))
    return found
