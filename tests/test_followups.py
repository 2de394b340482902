"""What a worker does around a step: rollback on failure, verify after success, dry run, a freeze at claim time,
the default target, and which http failures are retried.

Plans come from a runbook ingested from disk and asked for in chat; steps are approved through the real handler
and run by real `warroom worker --burst` processes against a small HTTP server on loopback that records hits."""
from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from connectors.followups import add_rollback
from connectors.queue import RETRIES
from engine.config import WarroomConfig
from engine.knowledge import ingest
from engine.models import Actor, ChatMessage, StepDecision
from handlers.approval import decide, step_by_index
from handlers.command import handle_message
from storage import audit
from storage import freezes as freeze_store
from tests.conftest import make_services, run_worker_burst

QUESTION = "why is payments-api returning 500s in staging?"
ALICE = Actor(id="alice")


# --- a target that records what it was asked ---------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    def _answer(self, status: int) -> None:
        body = json.dumps({"ok": status < 400}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        self.server.hits.append(f"GET {self.path}")
        self._answer(200 if self.path != "/health" or self.server.healthy else 503)

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.hits.append(f"POST {self.path}")
        if self.path == "/hang":
            time.sleep(3)  # past the step's 1 s timeout: the request was read, the answer never comes in time
        status = {"/restart-fail": 500, "/undo": self.server.undo_status}.get(self.path, 200)
        self._answer(status)

    def log_message(self, *args):
        pass


@pytest.fixture
def target():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.hits, server.healthy, server.undo_status = [], True, 200
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.base_url = f"http://127.0.0.1:{server.server_port}"
    yield server
    server.shutdown()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- building a plan the way users do ----------------------------------------------------------------------

def runbook(*steps: dict) -> str:
    return yaml.safe_dump({
        "apiVersion": "warroom/v1", "kind": "Runbook",
        "metadata": {"id": "payments-high-error-rate", "title": "Payments API elevated 5xx rate",
                     "services": ["payments-api"], "alerts": ["PaymentsHighErrorRate"]},
        "description": "payments-api returns 500 errors. Usual causes: a bad deploy, an exhausted database pool.",
        "steps": [{"id": "check-health", "title": "Check the health endpoint", "connector": "http",
                   "risk": "read_only", "target": "web", "with": {"method": "GET", "url": "/health"}}, *steps]})


def restart(url: str = "/restart", **more) -> dict:
    return {"id": "restart", "title": "Restart payments-api", "connector": "http", "risk": "state_change",
            "target": "web", "with": {"method": "POST", "url": url}, **more}


UNDO = {"connector": "http", "with": {"method": "POST", "url": "/undo"}}
HEALTH_CHECK = {"connector": "http", "with": {"method": "GET", "url": "/health", "expect_status": 200}}


class Scenario:
    """Services and a worker config file that agree, and a plan asked for in chat."""

    def __init__(self, pool, embedder, redis_url, db_url, tmp_path: Path, settings: dict, *steps: dict):
        self.pool, self.db_url, self.redis_url = pool, db_url, redis_url
        self.config_path = tmp_path / "warroom.yml"
        self.config_path.write_text(yaml.safe_dump(settings))
        self.services = make_services(pool, embedder, WarroomConfig.model_validate(settings), redis_url)
        (tmp_path / "runbooks").mkdir()
        (tmp_path / "runbooks" / "rb.yaml").write_text(runbook(*steps))
        ingest(pool, embedder, [tmp_path / "runbooks"])
        handle_message(self.services, ChatMessage(platform="shell", channel="c1", text=QUESTION,
                                                  user=Actor(id="carol")))

    def approve(self, index: int) -> int:
        step_id = step_by_index(self.services, platform="shell", channel="c1", index=index)
        reply = decide(self.services, StepDecision(step_id=step_id, approve=True, actor=ALICE))
        assert reply.ok, reply.text
        return step_id

    def work(self) -> None:
        run_worker_burst(self.db_url, self.redis_url, self.config_path)

    def steps(self) -> dict[str, dict]:
        with self.pool.connection() as conn:
            return {r["key"]: r for r in conn.execute("SELECT * FROM plan_steps ORDER BY id")}

    def audit_rows(self, action: str | None = None) -> list[dict]:
        with self.pool.connection() as conn:
            rows = conn.execute("SELECT * FROM audit_log ORDER BY id").fetchall()
            assert audit.verify(conn).ok
        return [r for r in rows if action is None or r["action"] == action]

    def posts(self) -> list[str]:
        """Every thread post's card, as text, oldest first."""
        with self.pool.connection() as conn:
            rows = conn.execute("SELECT card FROM outbox WHERE op = 'post' ORDER BY id").fetchall()
        return [json.dumps(r["card"]) for r in rows]

    def latest_plan_card(self) -> dict:
        with self.pool.connection() as conn:
            return conn.execute("SELECT card FROM outbox WHERE op = 'update' ORDER BY id DESC LIMIT 1"
                                ).fetchone()["card"]


def settings(target, *, policy: dict | None = None, targets: dict | None = None, **more) -> dict:
    return {"policy": {"approvers": ["alice", "bob"], "auto_run_read_only": False, **(policy or {})},
            "targets": targets if targets is not None else {"web": {"connector": "http", "base_url": target.base_url}},
            **more}


@pytest.fixture
def scenario(pool, embedder, redis_url, db_url, tmp_path):
    return lambda settings, *steps: Scenario(pool, embedder, redis_url, db_url, tmp_path, settings, *steps)


# --- rollback ----------------------------------------------------------------------------------------------

def test_failed_step_rolls_back_automatically_once(scenario, target):
    s = scenario(settings(target), restart("/restart-fail", rollback=UNDO))
    s.approve(2)
    s.work()
    steps = s.steps()
    failed, rollback = steps["restart"], steps["restart-rollback"]
    assert failed["status"] == "failed" and "HTTP 500" in failed["result"]["summary"]
    assert rollback["kind"] == "rollback" and rollback["parent_step_id"] == failed["id"]
    assert rollback["title"] == "Roll back: Restart payments-api" and rollback["target"] == "web"
    assert rollback["status"] == "succeeded" and rollback["params"]["url"] == "/undo"
    assert target.hits == ["POST /restart-fail", "POST /undo"]
    dispatched = s.audit_rows("step.rollback_dispatched")
    assert [(r["actor"], r["subject"]) for r in dispatched] == [("warroom", f"step:{rollback['id']}")]
    assert dispatched[0]["detail"]["rolls_back"] == failed["id"]
    assert [r["action"] for r in s.audit_rows()][-5:] == [
        "step.started", "step.failed", "step.rollback_dispatched", "step.started", "step.succeeded"]
    assert any("Rolling back automatically" in p and "restart-rollback" in p for p in s.posts())
    # a redelivered job handling the same failure adds no second rollback
    with s.pool.connection() as conn, conn.transaction():
        assert add_rollback(conn, failed, s.services.config, "default") is None
    assert len([k for k in s.steps() if k.endswith("-rollback")]) == 1


def test_rollback_is_proposed_when_auto_rollback_is_off_and_a_failed_rollback_stops(scenario, target):
    s = scenario(settings(target, policy={"auto_rollback": False}), restart("/restart-fail", rollback=UNDO))
    s.approve(2)
    s.work()
    rollback = s.steps()["restart-rollback"]
    assert rollback["status"] == "proposed" and rollback["requires_approval"]
    assert target.hits == ["POST /restart-fail"]  # nothing undone without a click
    proposed = s.audit_rows("step.rollback_proposed")
    assert len(proposed) == 1 and proposed[0]["actor"] == "warroom"
    assert proposed[0]["detail"]["reason"] == "policy.auto_rollback is off"
    assert s.audit_rows("step.rollback_dispatched") == []
    assert any("Rollback step restart-rollback is proposed" in p for p in s.posts())
    card_steps = [b for b in s.latest_plan_card()["blocks"] if b["type"] == "steps"][0]["items"]
    assert len(card_steps) == 3 and card_steps[2]["actions"]  # approve buttons on the rollback
    # approved by a person, it runs; it fails too, and a rollback gets no rollback of its own
    target.undo_status = 500
    assert decide(s.services, StepDecision(step_id=rollback["id"], approve=True, actor=ALICE)).ok
    s.work()
    steps = s.steps()
    assert steps["restart-rollback"]["status"] == "failed"
    assert list(steps) == ["check-health", "restart", "restart-rollback"]
    assert target.hits == ["POST /restart-fail", "POST /undo"]


# --- verify ------------------------------------------------------------------------------------------------

def test_verify_passes(scenario, target):
    s = scenario(settings(target), restart(verify=HEALTH_CHECK, rollback=UNDO))
    s.approve(2)
    s.work()
    step = s.steps()["restart"]
    assert step["status"] == "succeeded" and "verified:" in step["result"]["summary"]
    assert step["result"]["data"]["verification"]["ok"] is True
    assert target.hits == ["POST /restart", "GET /health"]
    assert "restart-rollback" not in s.steps()


def test_failed_verification_fails_the_step_and_rolls_it_back(scenario, target):
    target.healthy = False
    s = scenario(settings(target), restart(verify=HEALTH_CHECK, rollback=UNDO))
    s.approve(2)
    s.work()
    steps = s.steps()
    step, rollback = steps["restart"], steps["restart-rollback"]
    assert step["status"] == "failed" and ", but verification failed: " in step["result"]["summary"]
    assert step["result"]["data"]["verification"]["ok"] is False
    assert rollback["verify"] == step["verify"] and step["verify"]["with"]["url"] == "/health"
    # the rollback ran, and was checked by the same (still failing) verification
    assert target.hits == ["POST /restart", "GET /health", "POST /undo", "GET /health"]
    assert rollback["status"] == "failed" and "verification failed" in rollback["result"]["summary"]


def test_a_verify_that_changes_state_is_refused_by_the_planner(scenario, target):
    s = scenario(settings(target), restart(verify={"connector": "http", "with": {"method": "POST", "url": "/x"}}))
    step = s.steps()["restart"]
    assert step["status"] == "refused" and "verify must be a read-only check" in step["refusal"]


# --- dry run -----------------------------------------------------------------------------------------------

def test_dry_run_says_what_would_run_without_calling_the_target(scenario, target):
    s = scenario(settings(target, execution={"dry_run": True}), restart())
    s.approve(2)
    s.work()
    step = s.steps()["restart"]
    assert step["status"] == "succeeded"
    assert step["result"]["summary"] == f"dry run: would send POST {target.base_url}/restart"
    assert step["result"]["data"]["dry_run"] is True
    assert target.hits == []
    assert s.audit_rows("step.succeeded")[0]["detail"]["dry_run"] is True


# --- a freeze that starts after the click ------------------------------------------------------------------

def test_freeze_after_approval_refuses_the_state_change_at_claim(scenario, target):
    s = scenario(settings(target), restart())
    s.approve(1)
    s.approve(2)
    assert s.steps()["restart"]["status"] == "queued"
    handle_message(s.services, ChatMessage(platform="shell", channel="c1", text="/warroom freeze payments-api db failover",
                                           user=Actor(id="bob")))
    s.work()
    steps = s.steps()
    assert steps["check-health"]["status"] == "succeeded"  # read-only steps still run
    frozen = steps["restart"]
    assert frozen["status"] == "refused" and frozen["refusal"].startswith("change freeze: ")
    assert "payments-api is frozen by bob: db failover" in frozen["refusal"]
    assert target.hits == ["GET /health"]
    refused = s.audit_rows("step.refused")
    assert [(r["subject"], r["detail"]["rule"]) for r in refused] == [(f"step:{frozen['id']}", "freeze")]
    assert s.audit_rows("step.started")[0]["subject"] == f"step:{steps['check-health']['id']}"
    assert len(s.audit_rows("step.started")) == 1
    assert any("was approved but not started: change freeze" in p for p in s.posts())


def test_a_freeze_turns_the_automatic_rollback_into_a_proposal(scenario, target):
    s = scenario(settings(target), restart("/restart-fail", rollback=UNDO))
    s.approve(2)
    with s.pool.connection() as conn, conn.transaction():  # frozen after the step started, before it failed
        conn.execute("UPDATE plan_steps SET status = 'running', worker = 'test' WHERE key = 'restart'")
        freeze_store.freeze(conn, service="payments-api", reason="db failover", frozen_by="bob")
        step = conn.execute("SELECT * FROM plan_steps WHERE key = 'restart'").fetchone()
        row = add_rollback(conn, step, s.services.config, "default")
    assert row["status"] == "proposed" and row["requires_approval"]
    assert s.steps()["restart-rollback"]["status"] == "proposed"
    reason = s.audit_rows("step.rollback_proposed")[0]["detail"]["reason"]
    assert reason.startswith("change freeze: payments-api is frozen by bob")


# --- default target ----------------------------------------------------------------------------------------

def test_a_step_without_a_target_uses_the_only_one_of_its_connector(scenario, target):
    s = scenario(settings(target), restart(target=None))
    s.approve(2)
    s.work()
    step = s.steps()["restart"]
    assert step["target"] is None and step["status"] == "succeeded"
    assert step["result"]["summary"] == f"POST {target.base_url}/restart -> HTTP 200"
    assert target.hits == ["POST /restart"]


def test_a_step_without_a_target_is_refused_when_two_could_be_meant(scenario, target):
    two = {"web": {"connector": "http", "base_url": target.base_url},
           "admin": {"connector": "http", "base_url": target.base_url}}
    s = scenario(settings(target, targets=two), restart(target=None))
    s.approve(2)
    s.work()
    step = s.steps()["restart"]
    assert step["status"] == "failed"
    assert "names no target and warroom.yml has 2 http targets" in step["result"]["summary"]
    assert target.hits == []


# --- which http failures are retried -----------------------------------------------------------------------

def test_a_post_that_hangs_after_being_read_fails_without_retry(scenario, target):
    s = scenario(settings(target), restart("/hang") | {"with": {"method": "POST", "url": "/hang", "timeout": 1}})
    s.approve(2)
    s.work()
    step = s.steps()["restart"]
    assert step["status"] == "failed" and step["attempts"] == 1
    assert "it may have taken effect, so it is not retried" in step["result"]["summary"]
    assert s.audit_rows("step.retrying") == []
    assert target.hits == ["POST /hang"]


def test_a_read_only_get_against_a_closed_port_is_retried(scenario, target):
    url = f"http://127.0.0.1:{closed_port()}/health"
    s = scenario(settings(target, targets={}),
                 {"id": "probe", "title": "Probe the health endpoint", "connector": "http", "risk": "read_only",
                  "with": {"method": "GET", "url": url}})
    probe = s.steps()["probe"]
    assert decide(s.services, StepDecision(step_id=probe["id"], approve=True, actor=ALICE)).ok
    s.work()  # RQ's retries are plain requeues: one burst works them all
    step = s.steps()["probe"]
    assert step["status"] == "failed" and step["attempts"] == RETRIES + 1
    assert step["result"]["summary"].startswith("transient failure: GET")
    retrying = [r for r in s.audit_rows("step.retrying") if r["subject"] == f"step:{probe['id']}"]
    assert [r["detail"]["attempt"] for r in retrying] == list(range(1, RETRIES + 1))
