"""Vault credential resolution (hvac, KV v2), done only inside workers, at run time.

Auth is a token (`VAULT_TOKEN`) or AppRole (`VAULT_ROLE_ID` + `VAULT_SECRET_ID`, mount `VAULT_APPROLE_MOUNT`).
An AppRole token that Vault stops honouring (its TTL ran out, it was revoked) is replaced by logging in again,
once per read. Values are cached in memory only, briefly, by mount/path. Every value, the secret id and every
token are registered with engine.redact, so they are masked wherever they turn up: step output, logs, prompts.
No message raised from here ever contains a secret value: only mounts, paths, field names and Vault's errors."""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

from connectors.base import ConnectorError, TransientError
from engine.redact import redact, register_secret

CACHE_SECONDS = 60.0
TIMEOUT_SECONDS = 10.0
RENEW_MARGIN = 0.9  # log in again once 90 % of an AppRole token's lease has gone, before Vault refuses it


class VaultResolver:
    """Resolves `vault:<mount>/data/<path>#<field>` references; values cached briefly, never logged."""

    def __init__(self, addr: str | None, token: str | None = None, *, role_id: str | None = None,
                 secret_id: str | None = None, approle_mount: str = "approle", namespace: str | None = None,
                 cache_seconds: float = CACHE_SECONDS, timeout: float = TIMEOUT_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.addr = addr
        self.token = token
        self.role_id = role_id
        self.secret_id = secret_id
        self.approle_mount = approle_mount or "approle"
        self.namespace = namespace or None
        self.cache_seconds = cache_seconds
        self.timeout = timeout
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
        self._lock = threading.RLock()
        self._client = None
        self._token_deadline: float | None = None  # AppRole: when to log in again without waiting for a 403
        register_secret(token)
        register_secret(secret_id)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "VaultResolver":
        """For a worker started without settings (an RQ worker run by hand): the same variables as Settings."""
        env = os.environ if env is None else env
        return cls(env.get("VAULT_ADDR"), env.get("VAULT_TOKEN"), role_id=env.get("VAULT_ROLE_ID"),
                   secret_id=env.get("VAULT_SECRET_ID"), approle_mount=env.get("VAULT_APPROLE_MOUNT") or "approle",
                   namespace=env.get("VAULT_NAMESPACE"),
                   cache_seconds=float(env.get("VAULT_CACHE_SECONDS") or CACHE_SECONDS))

    @property
    def uses_approle(self) -> bool:
        return bool(self.role_id and self.secret_id)

    # --- resolving ---------------------------------------------------------------------------------------------

    def resolve(self, reference: str) -> str:
        mount, path, field = parse_reference(reference)
        data = self._data(mount, path)
        if field not in data:
            known = ", ".join(sorted(map(str, data))) or "none"  # field names are not secret; values are
            raise ConnectorError(f"vault secret {mount}/{path} has no field {field!r} (fields: {known})")
        value = str(data[field])
        register_secret(value)  # from now on it is masked wherever it turns up: output, logs, prompts
        return value

    def _data(self, mount: str, path: str) -> dict[str, Any]:
        key = (mount, path)
        with self._lock:
            cached = self._cache.get(key)
            if cached and self._clock() - cached[0] < self.cache_seconds:
                return cached[1]
            data = self._read(mount, path)
            self._cache[key] = (self._clock(), data)
            return data

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def check(self) -> str:
        """`warroom doctor`: reach Vault and authenticate; returns a short description, raises like resolve."""
        import hvac.exceptions

        try:
            info = self._call(lambda client: client.auth.token.lookup_self(), "token lookup")
        except hvac.exceptions.Forbidden as exc:
            raise ConnectorError("vault refused the token (permission denied)") from exc
        policies = ", ".join((info.get("data") or {}).get("policies") or []) or "none"
        return f"{'AppRole' if self.uses_approle else 'token'} auth ok (policies: {policies})"

    def _read(self, mount: str, path: str) -> dict[str, Any]:
        import hvac.exceptions

        def read(client):
            return client.secrets.kv.v2.read_secret_version(path=path, mount_point=mount,
                                                            raise_on_deleted_version=True)
        try:
            response = self._call(read, f"{mount}/{path}")
        except hvac.exceptions.InvalidPath as exc:
            raise ConnectorError(f"vault secret {mount}/{path} does not exist") from exc
        except hvac.exceptions.Forbidden as exc:
            raise ConnectorError(f"vault refused access to {mount}/{path} (permission denied)") from exc
        data = ((response or {}).get("data") or {}).get("data")
        if not isinstance(data, dict):
            raise ConnectorError(f"vault secret {mount}/{path} is not a KV v2 secret")
        return data

    # --- talking to Vault -------------------------------------------------------------------------------------

    def _call(self, operation: Callable[[Any], Any], what: str) -> Any:
        """Run one hvac call. AppRole: a 403 means the token died, so log in again and retry, once."""
        import hvac.exceptions
        import requests

        try:
            try:
                return operation(self._authenticated())
            except hvac.exceptions.Forbidden:
                if not self.uses_approle:
                    raise
                self._login()
                return operation(self._client)
        except (requests.ConnectionError, requests.Timeout, hvac.exceptions.VaultDown,
                hvac.exceptions.BadGateway, hvac.exceptions.InternalServerError,
                hvac.exceptions.RateLimitExceeded) as exc:
            raise TransientError(f"vault unreachable at {self.addr} ({what}): {type(exc).__name__}") from exc

    def _authenticated(self):
        with self._lock:
            if self._client is None:
                self._client = self._new_client()
                if self.uses_approle:
                    self._login()
            elif self._token_deadline is not None and self._clock() >= self._token_deadline:
                self._login()
            return self._client

    def _new_client(self):
        if not self.addr:
            raise ConnectorError("a vault: reference needs VAULT_ADDR on the worker")
        if not self.token and not self.uses_approle:
            raise ConnectorError("a vault: reference needs VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID, "
                                 "on the worker")
        import hvac

        return hvac.Client(url=self.addr, token=None if self.uses_approle else self.token,
                           namespace=self.namespace, timeout=self.timeout)

    def _login(self) -> None:
        import hvac.exceptions

        with self._lock:
            try:
                response = self._client.auth.approle.login(role_id=self.role_id, secret_id=self.secret_id,
                                                           mount_point=self.approle_mount)
            except (hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden,
                    hvac.exceptions.Unauthorized) as exc:
                # Vault's own reason ("invalid role or secret ID") names no secret; redact anyway, it is text.
                reason = redact("; ".join(map(str, exc.errors or [])) or type(exc).__name__)
                raise ConnectorError(f"vault AppRole login at auth/{self.approle_mount} refused: {reason}") from exc
            auth = response["auth"]
            register_secret(auth["client_token"])
            lease = float(auth.get("lease_duration") or 0)
            self._token_deadline = self._clock() + lease * RENEW_MARGIN if lease > 0 else None


def parse_reference(reference: str) -> tuple[str, str, str]:
    """`vault:kv/data/ssh/web-01#private_key` -> ("kv", "ssh/web-01", "private_key")."""
    if not reference.startswith("vault:") or "#" not in reference:
        raise ConnectorError("not a vault reference: expected vault:<mount>/data/<path>#<field>")
    location, field = reference[len("vault:"):].split("#", 1)
    mount, sep, path = location.partition("/data/")
    if not sep or not mount or not path or not field:
        raise ConnectorError("vault reference must look like vault:<mount>/data/<path>#<field>")
    return mount, path, field


def resolve_target(target: dict[str, Any] | None, resolver: VaultResolver) -> tuple[dict[str, Any], dict[str, str]]:
    """Split a target into plain parameters and resolved secrets (by field name)."""
    plain: dict[str, Any] = {}
    secrets: dict[str, str] = {}
    for key, value in (target or {}).items():
        if isinstance(value, str) and value.startswith("vault:"):
            secrets[key] = resolver.resolve(value)
        else:
            plain[key] = value
    return plain, secrets
