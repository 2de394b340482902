"""Vault credentials through the real hvac client against a Vault stand-in on loopback, and the guarantee
that a resolved secret never leaves the worker: not in logs, stored results, audit, chat, approvals or prompts."""
from __future__ import annotations

import base64
import io
import json
import logging
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from connectors.base import ConnectorError, TransientError
from connectors.vault import VaultResolver, resolve_target
from engine.redact import MASK, SECRETS, RedactingFilter, redact, register_secret
from tests.vault_standin import VaultStandIn

ROOT = Path(__file__).resolve().parent.parent


def planted(label: str) -> str:
    """A distinctive random secret with characters that URL-encoding changes (`/`, `+`, `=`)."""
    return f"pl4nted-{label}-{secrets.token_hex(10)}/q+r=s"


def spellings(secret: str) -> list[str]:
    """The secret as it would leak: raw, its random core (which survives any escaping: JSON, \\u, repr),
    URL-encoded, base64, and inside a Basic auth header."""
    return [secret, re.search(r"[0-9a-f]{20}", secret).group(0), quote(secret, safe=""), quote_plus(secret, safe=""),
            *(base64.b64encode(f"{prefix}{secret}".encode()).decode() for prefix in ("", "svc:", "ab:"))]


def assert_absent(secret: str, where: str, text: str) -> None:
    for form in spellings(secret):
        assert form not in text, f"the secret leaked into {where} (as {form!r})"


class Clock:
    """An injectable monotonic clock: tests move time instead of sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def vault():
    with VaultStandIn() as standin:
        yield standin


# --- resolving ---------------------------------------------------------------------------------------------------


def test_token_auth_reads_kv_v2_and_masks_the_value_from_then_on(vault):
    secret = planted("token")
    vault.put("kv", "db/payments", {"password": secret, "user": "payments"})
    token = vault.add_token()
    resolver = VaultResolver(vault.url, token)
    plain, found = resolve_target({"connector": "sql", "dsn": "postgresql://db/payments",
                                   "password": "vault:kv/data/db/payments#password"}, resolver)
    assert found == {"password": secret} and plain == {"connector": "sql", "dsn": "postgresql://db/payments"}
    assert vault.reads("kv", "db/payments", status=200) == 1
    assert redact(f"connected with {secret}") == f"connected with {MASK}"
    assert token not in redact(f"X-Vault-Token: {token}")  # the worker's own Vault token is masked too


def test_namespace_is_sent_as_vault_expects(vault):
    vault.put("kv", "ns/app", {"token": planted("ns")})
    VaultResolver(vault.url, vault.add_token(), namespace="team-a").resolve("vault:kv/data/ns/app#token")
    assert [s.namespace for s in vault.seen] == ["team-a"]


def test_approle_logs_in_once_and_again_when_vault_stops_honouring_the_token(vault):
    secret, secret_id = planted("approle"), planted("secret-id")
    vault.put("kv", "svc/api", {"token": secret})
    vault.add_approle("warroom-role", secret_id)
    clock = Clock()
    resolver = VaultResolver(vault.url, role_id="warroom-role", secret_id=secret_id, cache_seconds=60, clock=clock)
    ref = "vault:kv/data/svc/api#token"
    assert resolver.resolve(ref) == secret
    clock.now += 61  # past the cache: a second read, on the same token
    assert resolver.resolve(ref) == secret
    assert (vault.logins(status=200), vault.reads("kv", "svc/api", status=200)) == (1, 2)

    vault.expire()   # revoked (or its TTL ran out) behind the worker's back
    clock.now += 61
    assert resolver.resolve(ref) == secret
    # the read was refused once, the worker logged in again, and the retried read worked
    assert vault.reads("kv", "svc/api", status=403) == 1
    assert (vault.logins(status=200), vault.reads("kv", "svc/api", status=200)) == (2, 3)
    assert redact(f"secret_id={secret_id[::-1]} and {secret_id}").endswith(MASK)  # the secret id is registered


def test_approle_token_is_renewed_before_its_lease_runs_out(vault):
    vault.put("kv", "svc/api", {"token": planted("lease")})
    vault.add_approle("warroom-role", "secret-id-123456", token_ttl=100)
    clock = Clock()
    resolver = VaultResolver(vault.url, role_id="warroom-role", secret_id="secret-id-123456", cache_seconds=0,
                             clock=clock)
    resolver.resolve("vault:kv/data/svc/api#token")
    clock.now += 95  # past 90 % of the 100 s lease: log in again rather than wait for a refusal
    resolver.resolve("vault:kv/data/svc/api#token")
    assert vault.logins(status=200) == 2 and vault.reads("kv", "svc/api", status=403) == 0


def test_wrong_approle_ids_are_refused_with_vaults_reason_and_no_secret(vault):
    vault.add_approle("warroom-role", "the-right-secret-id")
    wrong = planted("wrong-secret-id")
    resolver = VaultResolver(vault.url, role_id="warroom-role", secret_id=wrong)
    with pytest.raises(ConnectorError) as refused:
        resolver.resolve("vault:kv/data/svc/api#token")
    assert "invalid role or secret ID" in str(refused.value) and "approle" in str(refused.value)
    assert_absent(wrong, "the error", str(refused.value))
    assert vault.logins(status=400) == 1


def test_cache_is_brief_and_keyed_by_mount_and_path(vault):
    vault.put("kv", "db/payments", {"password": planted("pw"), "user": "payments"})
    vault.put("secret", "db/payments", {"password": planted("other-mount")})
    clock = Clock()
    resolver = VaultResolver(vault.url, vault.add_token(), cache_seconds=60, clock=clock)
    resolver.resolve("vault:kv/data/db/payments#password")
    clock.now += 30
    assert resolver.resolve("vault:kv/data/db/payments#user") == "payments"  # same path, other field: cached
    assert vault.reads("kv", "db/payments") == 1
    assert resolver.resolve("vault:secret/data/db/payments#password").startswith("pl4nted-other-mount")
    assert vault.reads("secret", "db/payments") == 1  # another mount is another secret
    clock.now += 31  # 61 s after the first read
    resolver.resolve("vault:kv/data/db/payments#password")
    assert vault.reads("kv", "db/payments") == 2


def test_failures_name_what_is_wrong_and_never_the_secret(vault):
    secret = planted("never-in-errors")
    vault.put("kv", "db/payments", {"password": secret})
    vault.put("kv", "db/other", {"password": secret})
    resolver = VaultResolver(vault.url, vault.add_token(paths=["kv/db/payments", "kv/db/missing"]))

    def failure(ref: str) -> str:
        with pytest.raises(ConnectorError) as exc:
            resolver.resolve(ref)
        message = str(exc.value)
        assert_absent(secret, "an error message", message)
        return message

    assert "has no field 'pasword'" in failure("vault:kv/data/db/payments#pasword")
    assert "password" in failure("vault:kv/data/db/payments#pasword")  # the field names that exist are listed
    assert "kv/db/missing does not exist" in failure("vault:kv/data/db/missing#password")
    assert "refused access to kv/db/other (permission denied)" in failure("vault:kv/data/db/other#password")
    bad_token = VaultResolver(vault.url, "hvs.not-a-token-vault-knows-00000")
    with pytest.raises(ConnectorError, match="permission denied"):
        bad_token.resolve("vault:kv/data/db/payments#password")
    with pytest.raises(ConnectorError, match="VAULT_ADDR"):
        VaultResolver(None, "t").resolve("vault:kv/data/db/payments#password")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_vault_is_transient_so_the_step_is_retried():
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(TransientError, match="vault unreachable"):
        VaultResolver(url, "hvs.some-token-000000000000", timeout=2).resolve("vault:kv/data/a/b#c")
    with pytest.raises(TransientError, match="vault unreachable"):  # the AppRole login, too
        VaultResolver(url, role_id="r", secret_id="secret-id-xyz", timeout=2).resolve("vault:kv/data/a/b#c")


def test_doctor_checks_vault_reachability_and_auth(vault, capsys):
    from bot.doctor import _vault_check
    from bot.settings import Settings

    vault.add_approle("warroom-role", "doctor-secret-id-1")
    good = Settings(_env_file=None, vault_addr=vault.url, vault_role_id="warroom-role",
                    vault_secret_id="doctor-secret-id-1")
    ok, text = _vault_check(good)
    assert ok and "AppRole auth ok" in text and "warroom" in text
    bad = Settings(_env_file=None, vault_addr=vault.url, vault_token="hvs.expired-or-unknown-token-0000")
    ok, text = _vault_check(bad)
    assert not ok and "permission denied" in text and "hvs.expired" not in text


# --- redaction of logs -------------------------------------------------------------------------------------------


def test_log_filter_masks_secrets_their_encodings_and_tracebacks():
    secret = planted("log")
    register_secret(secret)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("warroom.test.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        basic = base64.b64encode(f"svc:{secret}".encode()).decode()
        logger.debug("sending Authorization: Basic %s", basic)
        logger.info("callback https://idp.example/cb?access=%s&next=1", quote_plus(secret, safe=""))
        logger.info("raw %s and base64 %s", secret, base64.b64encode(secret.encode()).decode())
        logger.warning("args as a mapping: %(value)s", {"value": secret})
        try:
            raise RuntimeError(f"upstream rejected {secret}")
        except RuntimeError:
            logger.exception("step crashed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert_absent(secret, "the log", text)
    assert text.count(MASK) >= 6 and "RuntimeError: upstream rejected" in text and "step crashed" in text


def test_short_values_are_not_registered_so_ordinary_text_stays_readable():
    before = len(SECRETS)
    register_secret("abc")
    register_secret("admin")
    assert len(SECRETS) == before
    assert redact("the admin said abc") == "the admin said abc"


# --- end to end: a real worker, a real step, every place the secret could land ----------------------------------


class Echo(BaseHTTPRequestHandler):
    """An upstream API that echoes the credential it was sent, the ways real APIs do by accident."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        auth = self.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ")
        if self.path.startswith("/headers"):
            body = json.dumps({"headers": dict(self.headers)})
        elif self.path.startswith("/basic"):
            basic = base64.b64encode(f"svc:{token}".encode()).decode()
            body = (f"forwarding with Authorization: Basic {basic}\n"
                    f"token, base64: {base64.b64encode(token.encode()).decode()}")
        else:
            body = f"login at https://idp.example/cb?access={quote_plus(token, safe='')}&next=%2F"
        data = body.encode()
        self.send_response(200)
        self.send_header("X-Upstream-Token", token)  # httpcore logs response headers at DEBUG
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def echo():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


CHANNEL = "C0ALERTS"
RUNBOOK = """apiVersion: warroom/v1
kind: Runbook
metadata:
  id: payments-upstream-auth
  title: Payments API upstream checks
  services: [payments-api]
  alerts: [PaymentsHighErrorRate]
description: |
  payments-api returns 500 errors. Check what the upstream API sees.
steps:
  - {id: upstream-headers, title: Show upstream request headers, connector: http, target: upstream,
     risk: read_only, with: {method: GET, url: /headers}}
  - {id: upstream-basic, title: Show upstream forwarded auth, connector: http, target: upstream,
     risk: read_only, with: {method: GET, url: /basic}}
  - {id: upstream-callback, title: Show upstream login callback, connector: http, target: upstream,
     risk: read_only, with: {method: GET, url: /callback}}
"""


def run_worker(db_url: str, redis_url: str, config_path: Path, extra_env: dict[str, str]) -> str:
    """A real `warroom worker --burst`, logging at DEBUG; returns everything it printed."""
    env = {**os.environ, "DATABASE_URL": db_url, "REDIS_URL": redis_url, "WARROOM_CONFIG": str(config_path),
           "WARROOM_LOG_LEVEL": "DEBUG", **extra_env}
    done = subprocess.run([sys.executable, "-m", "bot.cli", "worker", "--burst"], env=env, capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


# Everything else the serving side keeps that a step result could reach: the knowledge base (precedents),
# the posted messages, the postmortem draft, the incident timeline.
KEPT = ("documents", "chunks", "chat_messages", "incident_postmortems", "incident_transitions")


def _rows(pool, table: str) -> str:
    with pool.connection() as conn:
        return "\n".join(r["t"] for r in conn.execute(f"SELECT row_to_json(x)::text AS t FROM {table} x"))


def test_a_vault_secret_never_leaves_the_worker(pool, embedder, db_url, redis_url, tmp_path, vault, echo):
    from engine.alerts import normalise
    from engine.config import load_config
    from engine.knowledge import ingest
    from engine.models import Actor, ChatMessage, StepDecision
    from handlers.alert import annotate_alert, receive
    from handlers.annotate import annotate
    from handlers.approval import decide, step_by_index
    from handlers.command import handle_message
    from storage import alerts as alert_store
    from bot.metrics import Metrics
    from bot.runtime import make_llm_provider
    from bot.settings import Settings
    from tests.anthropic_standin import AnthropicStandIn
    from tests.conftest import EXAMPLES, make_services

    secret, secret_id = planted("e2e"), planted("e2e-secret-id")
    vault.put("kv", "payments/upstream", {"token": secret})
    vault.add_approle("warroom-worker", secret_id)
    config_path = tmp_path / "warroom.yml"
    config_path.write_text(json.dumps({
        "slack": {"alert_channel": CHANNEL},
        "policy": {"approvers": ["alice"], "auto_run_read_only": False},
        "targets": {"upstream": {"connector": "http", "base_url": echo,
                                 "token": "vault:kv/data/payments/upstream#token"}}}))
    services = make_services(pool, embedder, load_config(config_path), redis_url)
    (tmp_path / "runbooks").mkdir()
    (tmp_path / "runbooks" / "upstream.yaml").write_text(RUNBOOK)
    ingest(pool, embedder, [tmp_path / "runbooks"])

    # An alert fires; its annotation carries the runbook's plan; alice approves all three steps.
    payload = json.loads((EXAMPLES / "alerts/payments-high-error-rate-firing.json").read_text())
    for alert in payload["alerts"]:
        alert.pop("fingerprint", None)
    [alert_id] = receive(services, normalise(payload, "alertmanager"))
    with pool.connection() as conn:
        assert annotate_alert(services, alert_store.get_alert(conn, alert_id))
    for index in (1, 2, 3):
        step_id = step_by_index(services, platform="slack", channel=CHANNEL, index=index)
        assert decide(services, StepDecision(step_id=step_id, approve=True, actor=Actor(id="alice"))).ok

    printed = run_worker(db_url, redis_url, config_path, {
        "VAULT_ADDR": vault.url, "VAULT_ROLE_ID": "warroom-worker", "VAULT_SECRET_ID": secret_id})

    # It really ran: the worker logged in to Vault, read the secret, and the upstream saw (and echoed) it.
    assert vault.logins(status=200) >= 1 and vault.reads("kv", "payments/upstream", status=200) >= 1
    # The worker logged at DEBUG, response headers included: the echoed token was logged, and masked.
    assert f"(b'X-Upstream-Token', b'{MASK}')" in printed
    with pool.connection() as conn:
        steps = conn.execute("SELECT key, status, result FROM plan_steps ORDER BY ordinal").fetchall()
    assert [s["status"] for s in steps] == ["succeeded"] * 3, steps
    outputs = [s["result"]["output"] for s in steps]
    assert MASK in outputs[0] and "Bearer" in outputs[0]
    assert "Authorization: Basic" in outputs[1] and MASK in outputs[1]
    assert "https://idp.example/cb?access=" in outputs[2] and MASK in outputs[2]

    # The incident is resolved: the postmortem draft goes to chat and the incident becomes a precedent,
    # which is how step results reach a model's prompt.
    handle_message(services, ChatMessage(platform="slack", channel=CHANNEL, user=Actor(id="alice"),
                                         text="resolve the upstream rejected our token; rotated it"))
    with AnthropicStandIn() as api:
        services.provider = make_llm_provider(Settings(
            _env_file=None, llm="anthropic", anthropic_api_key="sk-ant-test-key-for-the-standin-000000",
            anthropic_base_url=api.url, anthropic_model="claude-test", llm_budget_s=5.0), Metrics())
        try:
            annotate(services, question="payments-api 500s, upstream checks", service="payments-api")
        finally:
            services.provider.close()
        prompts = [r.raw for r in api.requests]
    assert prompts, "the model was never asked"
    assert any("Steps that ran:" in p and "/headers -" in p for p in prompts), "no step result reached the prompt"

    for where, text in [("the worker's stdout/stderr", printed), ("plan_steps", _rows(pool, "plan_steps")),
                        ("audit_log", _rows(pool, "audit_log")), ("outbox (chat)", _rows(pool, "outbox")),
                        ("approvals", _rows(pool, "approvals")),
                        *[(table, _rows(pool, table)) for table in KEPT],
                        ("the model's prompts", "\n".join(prompts))]:
        assert_absent(secret, where, text)
        assert_absent(secret_id, where, text)
