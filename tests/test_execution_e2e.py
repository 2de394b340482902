"""The whole path a user takes, for the ssh, sql and kubernetes connectors: a runbook is ingested, a question is
asked in chat, an approver clicks, and a real `warroom worker --burst` process resolves the target's credential
from Vault (a stand-in on loopback), runs the step against a real server and reports in the thread. The
credential must never leave the worker."""
from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from connectors.kubernetes import RESTARTED_AT
from engine.config import WarroomConfig
from engine.knowledge import ingest
from engine.models import Actor, ChatMessage, StepDecision
from handlers.approval import decide, step_by_index
from handlers.command import handle_message
from tests.conftest import ROOT, make_services
from tests.k8s_standin import KubeStandin
from tests.ssh_server import SshServer
from tests.test_vault import assert_absent, planted
from tests.vault_standin import VaultStandIn

POLICY = {"approvers": ["alice", "bob"], "auto_run_read_only": False}
QUESTION = "why is payments-api returning 500s in staging?"


def runbook(steps: str) -> str:
    return f"""apiVersion: warroom/v1
kind: Runbook
metadata:
  id: payments-high-error-rate
  title: Payments API elevated 5xx rate
  services: [payments-api]
  alerts: [PaymentsHighErrorRate]
description: |
  payments-api returns 500 errors. Usual causes: a bad deploy, an exhausted database pool, stuck workers.
steps:
{steps}"""


@pytest.fixture
def vault():
    with VaultStandIn() as standin:
        yield standin


@pytest.fixture
def vault_token(vault) -> str:
    return vault.add_token(f"hvs.{secrets.token_hex(16)}")   # a hex core, so `spellings` can find it escaped


class Setup:
    """warroom.yml on disk, the serving side's services, and the ingested runbook."""

    def __init__(self, pool, embedder, redis_url, tmp_path: Path, targets: dict, steps: str) -> None:
        document = {"policy": POLICY, "targets": targets}
        self.config_path = tmp_path / "warroom.yml"
        self.config_path.write_text(json.dumps(document))   # JSON is YAML
        self.services = make_services(pool, embedder, WarroomConfig.model_validate(document), redis_url)
        (tmp_path / "runbooks").mkdir()
        (tmp_path / "runbooks" / "payments.yaml").write_text(runbook(steps))
        ingest(pool, embedder, [tmp_path / "runbooks"])

    def ask(self) -> None:
        handle_message(self.services, ChatMessage(platform="shell", channel="c1", text=QUESTION,
                                                  user=Actor(id="carol")))

    def approve(self, index: int) -> None:
        step_id = step_by_index(self.services, platform="shell", channel="c1", index=index)
        reply = decide(self.services, StepDecision(step_id=step_id, approve=True, actor=Actor(id="alice")))
        assert reply.ok, reply.text


def run_worker(db_url: str, redis_url: str, config_path: Path, extra_env: dict[str, str]) -> str:
    """A real `warroom worker --burst` (works every queued job, then exits); returns all it printed."""
    env = {**os.environ, "DATABASE_URL": db_url, "REDIS_URL": redis_url, "WARROOM_CONFIG": str(config_path),
           "WARROOM_LOG_LEVEL": "DEBUG", **extra_env}
    done = subprocess.run([sys.executable, "-m", "bot.cli", "worker", "--burst"], env=env, capture_output=True,
                          text=True, timeout=120, cwd=ROOT)   # on timeout subprocess.run kills it: nothing leaks
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def steps(pool) -> list[dict]:
    with pool.connection() as conn:
        return conn.execute("SELECT key, risk, status, result, refusal, why FROM plan_steps ORDER BY ordinal").fetchall()


def posted(pool) -> list[dict]:
    """Cards posted in the thread (not the plan card's in-place redraws)."""
    with pool.connection() as conn:
        return [r["card"] for r in conn.execute("SELECT op, card FROM outbox WHERE platform = 'shell' ORDER BY id")
                if r["op"] == "post"]


def dump(pool, table: str) -> str:
    with pool.connection() as conn:
        return "\n".join(r["t"] for r in conn.execute(f"SELECT row_to_json(x)::text AS t FROM {table} x"))


def assert_kept_secret(pool, printed: str, *secret_values: str) -> None:
    """No credential in what the worker printed or in anything stored: steps, audit, chat."""
    for where, text in [("the worker's stdout/stderr", printed), *[(t, dump(pool, t)) for t in
                                                                    ("plan_steps", "audit_log", "outbox")]]:
        for value in secret_values:
            assert_absent(value, where, text)


def key_lines(private_key: str) -> list[str]:
    """An OpenSSH private key as it could leak: whole, JSON-escaped, or any one line of its base64 body."""
    body = [line for line in private_key.splitlines() if line and not line.startswith("-----")]
    return [private_key, json.dumps(private_key)[1:-1], *body]


# --- ssh -------------------------------------------------------------------------------------------------------


def test_ssh_step_runs_with_a_key_from_vault(pool, embedder, db_url, redis_url, tmp_path, vault, vault_token):
    with SshServer() as ssh:
        private_key = ssh.key_secret()["private_key"]
        vault.put("kv", "ssh/web-01", {"private_key": private_key})
        setup = Setup(pool, embedder, redis_url, tmp_path, targets={"web-01": {
            "connector": "ssh", "host": "127.0.0.1", "port": ssh.port, "username": "ops",
            "private_key": "vault:kv/data/ssh/web-01#private_key", "known_hosts": ssh.known_hosts()}}, steps="""
  - id: restart
    title: Restart payments-api
    connector: ssh
    target: web-01
    risk: state_change
    with: {command: "echo restarted payments-api"}
""")
        setup.ask()
        [step] = steps(pool)
        assert (step["status"], step["risk"]) == ("proposed", "state_change")   # nothing runs before the click
        setup.approve(1)
        printed = run_worker(db_url, redis_url, setup.config_path,
                             {"VAULT_ADDR": vault.url, "VAULT_TOKEN": vault_token})
        assert ssh.commands == ["echo restarted payments-api"]   # the host really ran it, once

    assert vault.reads("kv", "ssh/web-01", status=200) == 1
    [step] = steps(pool)
    assert step["status"] == "succeeded", step
    assert step["result"]["output"].strip() == "restarted payments-api"
    assert step["result"]["summary"] == f"ops@127.0.0.1:{ssh.port}: exit status 0"
    last = posted(pool)[-1]
    assert last["title"] == "Step restart succeeded: Restart payments-api"
    assert "restarted payments-api" in json.dumps(last)
    assert_kept_secret(pool, printed, vault_token)
    for where, text in [("the worker's output", printed), *[(t, dump(pool, t)) for t in
                                                             ("plan_steps", "audit_log", "outbox")]]:
        for form in key_lines(private_key):
            assert form not in text, f"the private key leaked into {where}"


# --- sql -------------------------------------------------------------------------------------------------------


@pytest.fixture
def payments_db(pg_server) -> str:
    """A second database, the one the runbook's steps run against."""
    name = f"payments_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    dsn = pg_server.get_uri(database=name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, status text)")
        conn.execute("INSERT INTO orders VALUES (1, 'paid'), (2, 'failed'), (3, 'paid')")
    return dsn


def _statuses(dsn: str) -> dict[int, str]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT id, status FROM orders ORDER BY id").fetchall())


SQL_STEPS = """
  - id: list-orders
    title: List orders
    connector: sql
    target: payments-db
    risk: read_only
    with: {query: "SELECT id, status FROM orders ORDER BY id"}
  - id: sneaky-retry
    title: Retry failed orders (mislabelled read-only)
    connector: sql
    target: payments-db
    risk: read_only
    with: {query: "UPDATE orders SET status = 'retried' WHERE status = 'failed'"}
  - id: retry-failed
    title: Retry failed orders
    connector: sql
    target: payments-db
    risk: state_change
    with: {query: "UPDATE orders SET status = 'retried' WHERE status = 'failed'"}
"""


def test_sql_steps_read_expose_a_disguised_write_and_commit_an_approved_one(
        pool, embedder, db_url, redis_url, tmp_path, vault, vault_token, payments_db):
    password = planted("db-password")
    vault.put("kv", "db/payments", {"password": password})
    setup = Setup(pool, embedder, redis_url, tmp_path, targets={"payments-db": {
        "connector": "sql", "dsn": payments_db, "password": "vault:kv/data/db/payments#password"}}, steps=SQL_STEPS)
    setup.ask()
    # A runbook step cannot talk its risk down: the UPDATE labelled read_only is drawn as a state change, with
    # the reason, so it waits for a click even where read-only steps run on their own.
    assert [(s["key"], s["risk"], s["status"]) for s in steps(pool)] == [
        ("list-orders", "read_only", "proposed"), ("sneaky-retry", "state_change", "proposed"),
        ("retry-failed", "state_change", "proposed")]
    assert "treated as state_change" in steps(pool)[1]["why"]
    setup.approve(1)
    printed = run_worker(db_url, redis_url, setup.config_path, {"VAULT_ADDR": vault.url, "VAULT_TOKEN": vault_token})

    listed, sneaky, retry = steps(pool)
    assert listed["status"] == "succeeded", listed
    assert listed["result"]["data"]["columns"] == ["id", "status"]
    assert listed["result"]["data"]["rows"] == [[1, "paid"], [2, "failed"], [3, "paid"]]
    assert _statuses(payments_db) == {1: "paid", 2: "failed", 3: "paid"}
    assert sneaky["status"] == retry["status"] == "proposed"   # never approved: neither ran
    titles = [card["title"] for card in posted(pool)]
    assert "Step list-orders succeeded: List orders" in titles

    setup.approve(3)   # the honest state_change step, approved, commits
    printed += run_worker(db_url, redis_url, setup.config_path,
                          {"VAULT_ADDR": vault.url, "VAULT_TOKEN": vault_token})
    retry = steps(pool)[2]
    assert retry["status"] == "succeeded", retry
    assert "UPDATE 1" in retry["result"]["summary"] and "committed" in retry["result"]["summary"]
    assert _statuses(payments_db) == {1: "paid", 2: "retried", 3: "paid"}
    assert vault.reads("kv", "db/payments", status=200) >= 2   # one per worker process at least
    assert_kept_secret(pool, printed, password, vault_token)


# --- kubernetes ------------------------------------------------------------------------------------------------

DEPLOY = "/apis/apps/v1/namespaces/payments/deployments/payments-api"


def test_kubernetes_rollout_restart_with_a_token_from_vault(pool, embedder, db_url, redis_url, tmp_path, vault):
    token = planted("k8s-token")
    vault.put("kv", "k8s/prod", {"token": token})
    secret_id = planted("secret-id")
    vault.add_approle("warroom-worker", secret_id)   # this worker logs in with AppRole rather than a token
    (tmp_path / "tls").mkdir()
    with KubeStandin(tmp_path / "tls", token) as kube:
        kube.put(DEPLOY, {
            "kind": "Deployment", "metadata": {"name": "payments-api", "namespace": "payments", "generation": 4},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "payments-api"}},
                     "template": {"metadata": {"labels": {"app": "payments-api"}},
                                  "spec": {"containers": [{"name": "api", "image": "payments:7"}]}}}})
        setup = Setup(pool, embedder, redis_url, tmp_path, targets={"staging-cluster": {
            "connector": "kubernetes", "url": kube.url, "ca_cert": kube.ca_pem,
            "token": "vault:kv/data/k8s/prod#token"}}, steps="""
  - id: rollout-restart
    title: Rollout-restart payments-api
    connector: kubernetes
    risk: state_change
    with: {action: rollout_restart, kind: deployment, name: payments-api, namespace: payments}
""")
        setup.ask()
        setup.approve(1)
        printed = run_worker(db_url, redis_url, setup.config_path, {
            "VAULT_ADDR": vault.url, "VAULT_ROLE_ID": "warroom-worker", "VAULT_SECRET_ID": secret_id})

    [patch] = [r for r in kube.requests if r["method"] == "PATCH"]
    assert patch["path"] == DEPLOY and patch["headers"]["Authorization"] == f"Bearer {token}"
    assert patch["headers"]["Content-Type"] == "application/strategic-merge-patch+json"
    stamp = json.loads(patch["body"])["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
    assert kube.objects[DEPLOY]["spec"]["template"]["metadata"]["annotations"] == {RESTARTED_AT: stamp}
    assert vault.logins(status=200) == 1 and vault.reads("kv", "k8s/prod", status=200) == 1
    [step] = steps(pool)
    assert step["status"] == "succeeded", step
    assert "restarted deployment payments/payments-api" in step["result"]["summary"]
    assert posted(pool)[-1]["title"] == "Step rollout-restart succeeded: Rollout-restart payments-api"
    assert_kept_secret(pool, printed, token, secret_id)
    assert not re.search(r"Bearer pl4nted", printed + dump(pool, "outbox"))
