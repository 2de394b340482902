"""HashiCorp Vault, stood in for on loopback: the real `hvac` client talks to it over HTTP.

What warroom uses of Vault's API, answered the way Vault 1.x answers (checked against hvac 2.4's request
code: paths, `X-Vault-Token`, `X-Vault-Namespace`, JSON bodies):

- `GET /v1/<mount>/data/<path>` (KV v2 read): `{"data": {"data": {...}, "metadata": {"version": N, ...}}}`;
  a path holding nothing: 404 `{"errors": []}`; a missing, unknown or expired token, or one whose policy does
  not cover the path: 403 `{"errors": ["permission denied"]}` (Vault checks the token before the path).
- `POST /v1/auth/<approle mount>/login` `{"role_id", "secret_id"}`: `{"auth": {"client_token", "accessor",
  "lease_duration", "renewable": true, "policies", "token_policies", "metadata"}}`; wrong ids: 400
  `{"errors": ["invalid role or secret ID"]}` (Vault's own words, the same for either id, so ids can't be probed).
- `GET /v1/auth/token/lookup-self`: `{"data": {"id", "ttl", "policies", ...}}`, 403 for a bad token.

Every request is recorded (method, path, namespace, whether it was authorised) so tests can count reads and
logins. Tokens can be issued with a TTL and expired on demand, to test logging in again."""
from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Seen:
    method: str
    path: str
    status: int
    namespace: str | None


@dataclass
class _Token:
    policies: list[str]
    paths: tuple[str, ...] | None          # KV paths (`mount/path`) this token may read; None: all
    expires_at: float | None               # time.monotonic(); None: never
    ttl: int


@dataclass
class _Secret:
    data: dict[str, Any]
    version: int = 1
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()))


class VaultStandIn:
    """`with VaultStandIn() as vault: vault.put("kv", "app/db", {"password": ...}); vault.url`"""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self._secrets: dict[tuple[str, str], _Secret] = {}
        self._tokens: dict[str, _Token] = {}
        self._approles: dict[tuple[str, str], tuple[str, int, tuple[str, ...] | None]] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True

    # --- lifecycle -------------------------------------------------------------------------------------------

    def __enter__(self) -> "VaultStandIn":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # --- what the test sets up -------------------------------------------------------------------------------

    def put(self, mount: str, path: str, data: dict[str, Any]) -> None:
        """Write a KV v2 secret (a new version when the path exists)."""
        with self._lock:
            old = self._secrets.get((mount, path))
            self._secrets[(mount, path)] = _Secret(dict(data), version=old.version + 1 if old else 1)

    def add_token(self, token: str | None = None, *, ttl: int = 0, paths: list[str] | None = None,
                  policies: list[str] | None = None) -> str:
        """A token that works for `ttl` seconds (0: until expired on demand), limited to `paths` when given."""
        token = token or "hvs." + secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = _Token(policies or ["default"], tuple(paths) if paths is not None else None,
                                         time.monotonic() + ttl if ttl else None, ttl)
        return token

    def add_approle(self, role_id: str, secret_id: str, *, mount: str = "approle", token_ttl: int = 3600,
                    paths: list[str] | None = None) -> None:
        with self._lock:
            self._approles[(mount, role_id)] = (secret_id, token_ttl, tuple(paths) if paths is not None else None)

    def expire(self, token: str | None = None) -> None:
        """Expire one token, or every token issued so far (a lease running out, a revocation)."""
        with self._lock:
            for name in [token] if token else list(self._tokens):
                self._tokens.pop(name, None)

    # --- what the test asserts -------------------------------------------------------------------------------

    def count(self, method: str, path: str, *, status: int | None = None) -> int:
        with self._lock:
            return sum(1 for s in self.seen if s.method == method and s.path == path
                       and (status is None or s.status == status))

    def reads(self, mount: str, path: str, *, status: int | None = None) -> int:
        return self.count("GET", f"/v1/{mount}/data/{path}", status=status)

    def logins(self, mount: str = "approle", *, status: int | None = None) -> int:
        return self.count("POST", f"/v1/auth/{mount}/login", status=status)

    # --- the API -----------------------------------------------------------------------------------------------

    def _handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as Vault's server

            def do_GET(self):  # noqa: N802 (http.server's naming)
                self._answer(*standin._route("GET", self.path, self.headers, None))

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8", "replace") if length else ""
                try:
                    body = json.loads(raw) if raw else {}
                except json.JSONDecodeError:
                    body = None
                self._answer(*standin._route("POST", self.path, self.headers, body))

            def _answer(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        return Handler

    def _route(self, method: str, raw_path: str, headers, body: dict[str, Any] | None) -> tuple[int, dict]:
        path = raw_path.split("?", 1)[0]
        status, payload = self._dispatch(method, path, headers, body)
        with self._lock:
            self.seen.append(Seen(method, path, status, headers.get("X-Vault-Namespace")))
        return status, payload

    def _dispatch(self, method: str, path: str, headers, body) -> tuple[int, dict]:
        if not path.startswith("/v1/"):
            return 404, {"errors": []}
        rest = path[len("/v1/"):]
        if method == "POST" and rest.startswith("auth/") and rest.endswith("/login"):
            return self._login(rest[len("auth/"):-len("/login")], body)
        token = self._valid_token(headers.get("X-Vault-Token"))
        if token is None:
            return 403, {"errors": ["permission denied"]}
        if method == "GET" and rest == "auth/token/lookup-self":
            return 200, self._lookup(headers.get("X-Vault-Token"), token)
        mount, sep, secret_path = rest.partition("/data/")
        if method == "GET" and sep and mount and secret_path:
            return self._read(token, mount, secret_path)
        return 404, {"errors": []}

    def _valid_token(self, name: str | None) -> _Token | None:
        with self._lock:
            token = self._tokens.get(name or "")
            if token is not None and token.expires_at is not None and time.monotonic() >= token.expires_at:
                del self._tokens[name]   # Vault revokes a token when its TTL runs out
                token = None
            return token

    def _login(self, mount: str, body: dict[str, Any] | None) -> tuple[int, dict]:
        if not isinstance(body, dict) or not body.get("role_id"):
            return 400, {"errors": ["missing role_id"]}
        with self._lock:
            role = self._approles.get((mount, str(body["role_id"])))
        if role is None and not any(m == mount for m, _ in self._approles):
            return 400, {"errors": [f"no handler for route \"auth/{mount}/login\". route entry not found."]}
        if role is None or not secrets.compare_digest(role[0], str(body.get("secret_id") or "")):
            return 400, {"errors": ["invalid role or secret ID"]}
        _, ttl, paths = role
        token = self.add_token(ttl=ttl, paths=list(paths) if paths is not None else None,
                               policies=["default", "warroom"])
        return 200, {"request_id": secrets.token_hex(8), "lease_id": "", "renewable": False, "lease_duration": 0,
                     "data": None, "wrap_info": None, "warnings": None,
                     "auth": {"client_token": token, "accessor": secrets.token_urlsafe(16),
                              "policies": ["default", "warroom"], "token_policies": ["default", "warroom"],
                              "metadata": {"role_name": "warroom"}, "lease_duration": ttl, "renewable": True,
                              "entity_id": "", "token_type": "service", "orphan": True}}

    def _lookup(self, name: str, token: _Token) -> dict:
        ttl = max(0, int(token.expires_at - time.monotonic())) if token.expires_at else 0
        return {"request_id": secrets.token_hex(8), "lease_id": "", "renewable": False, "lease_duration": 0,
                "data": {"accessor": "standin", "creation_ttl": token.ttl, "display_name": "token",
                         "expire_time": None, "explicit_max_ttl": 0, "id": name, "meta": None,
                         "num_uses": 0, "orphan": True, "path": "auth/token/create", "policies": token.policies,
                         "renewable": bool(token.ttl), "ttl": ttl, "type": "service"},
                "wrap_info": None, "warnings": None, "auth": None}

    def _read(self, token: _Token, mount: str, path: str) -> tuple[int, dict]:
        if token.paths is not None and f"{mount}/{path}" not in token.paths:
            return 403, {"errors": ["1 error occurred:\n\t* permission denied\n\n"]}
        with self._lock:
            secret = self._secrets.get((mount, path))
        if secret is None:
            return 404, {"errors": []}
        return 200, {"request_id": secrets.token_hex(8), "lease_id": "", "renewable": False, "lease_duration": 0,
                     "data": {"data": dict(secret.data),
                              "metadata": {"created_time": secret.created, "custom_metadata": None,
                                           "deletion_time": "", "destroyed": False, "version": secret.version}},
                     "wrap_info": None, "warnings": None, "auth": None}
