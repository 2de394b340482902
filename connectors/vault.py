"""Vault credential resolution (hvac, KV v2), done only inside workers, at run time."""
from __future__ import annotations

import threading
import time
from typing import Any

from connectors.base import ConnectorError, TransientError
from engine.redact import register_secret

CACHE_SECONDS = 60


class VaultResolver:
    """Resolves `vault:<mount>/data/<path>#<field>` references; values cached briefly, never logged."""

    def __init__(self, addr: str | None, token: str | None) -> None:
        self.addr = addr
        self.token = token
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._client = None

    def _hvac(self):
        if self._client is None:
            if not self.addr or not self.token:
                raise ConnectorError("a vault: reference needs VAULT_ADDR and VAULT_TOKEN on the worker")
            import hvac

            self._client = hvac.Client(url=self.addr, token=self.token, timeout=10)
        return self._client

    def resolve(self, reference: str) -> str:
        mount, path, field = parse_reference(reference)
        key = f"{mount}/{path}"
        with self._lock:
            cached = self._cache.get(key)
            if cached and time.monotonic() - cached[0] < CACHE_SECONDS:
                data = cached[1]
            else:
                data = self._read(mount, path)
                self._cache[key] = (time.monotonic(), data)
        if field not in data:
            raise ConnectorError(f"vault secret {mount}/{path} has no field {field!r}")
        value = str(data[field])
        register_secret(value)  # from now on it is masked wherever it turns up: output, logs, prompts
        return value

    def _read(self, mount: str, path: str) -> dict[str, Any]:
        import hvac.exceptions
        import requests

        try:
            response = self._hvac().secrets.kv.v2.read_secret_version(path=path, mount_point=mount,
                                                                       raise_on_deleted_version=True)
        except hvac.exceptions.InvalidPath as exc:
            raise ConnectorError(f"vault secret {mount}/{path} does not exist") from exc
        except hvac.exceptions.Forbidden as exc:
            raise ConnectorError(f"vault refused access to {mount}/{path}") from exc
        except (requests.ConnectionError, requests.Timeout, hvac.exceptions.VaultDown) as exc:
            raise TransientError(f"vault unreachable: {type(exc).__name__}") from exc
        return response["data"]["data"]


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
