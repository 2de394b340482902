"""A Prometheus HTTP API stand-in on loopback: `/api/v1/query` and `/api/v1/query_range` answering with the
real response shapes (vector, matrix, error), and every request recorded."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from tests.http_helpers import send_json

VECTOR = [
    {"metric": {"__name__": "up", "job": "api", "instance": "10.0.0.5:9100"}, "value": [1732500000.0, "1"]},
    {"metric": {"__name__": "up", "job": "api", "instance": "10.0.0.6:9100"}, "value": [1732500000.0, "0"]},
]


class PrometheusStandin:
    """`with PrometheusStandin(token=None) as prom`: answers by query text; `bad(` is a parse error."""

    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.requests: list[dict] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "PrometheusStandin":
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                standin.handle(self)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        url = urlsplit(request.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.requests.append({"path": url.path, "query": query, "authorization": request.headers.get("Authorization")})
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return send_json(request, 401, b"Unauthorized\n")
        expr = query.get("query", "")
        if expr.startswith("bad("):
            return send_json(request, 400, {"status": "error", "errorType": "bad_data",
                                            "error": 'invalid parameter "query": 1:5: parse error: unexpected end'})
        if url.path == "/api/v1/query":
            return send_json(request, 200, {"status": "success", "data": {"resultType": "vector", "result": VECTOR}})
        if url.path == "/api/v1/query_range":
            start, end, step = float(query["start"]), float(query["end"]), float(query["step"])
            times = [start + i * step for i in range(int((end - start) // step) + 1)]
            result = [{"metric": {"__name__": "rate", "route": "/pay"},
                       "values": [[t, str(0.1 * i)] for i, t in enumerate(times)]}]
            return send_json(request, 200, {"status": "success", "data": {"resultType": "matrix", "result": result}})
        return send_json(request, 404, b"404 page not found\n")
