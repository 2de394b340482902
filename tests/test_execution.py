"""Approval -> policy -> audit -> RQ job on a real worker -> http connector -> result, audit, thread update."""
import json

import pytest

from engine.config import WarroomConfig
from engine.knowledge import ingest
from engine.models import Actor, ChatMessage, StepDecision
from handlers.approval import decide, step_by_index
from handlers.command import handle_message
from storage import audit
from tests.conftest import make_services, run_worker_burst, runbook_yaml


@pytest.fixture
def planned(services, tmp_path, http_target):
    """A plan for a question, from a runbook whose steps hit the local HTTP server."""
    url = f"http://127.0.0.1:{http_target.server_port}/health"
    (tmp_path / "rb.yaml").write_text(runbook_yaml(url))
    ingest(services.pool, services.embedder, [tmp_path])
    handle_message(services, ChatMessage(platform="shell", channel="c1", text="why is payments-api returning 500s?",
                                         user=Actor(id="carol")))
    return services


def _steps(pool):
    with pool.connection() as conn:
        return conn.execute("SELECT * FROM plan_steps ORDER BY id").fetchall()


def test_approve_runs_once_on_a_real_worker(planned, db_url, redis_url, http_target):
    step_id = step_by_index(planned, platform="shell", channel="c1", index=1)
    alice = Actor(id="alice", platform="shell")
    first = decide(planned, StepDecision(step_id=step_id, approve=True, actor=alice))
    second = decide(planned, StepDecision(step_id=step_id, approve=True, actor=alice))
    assert first.ok and "running" in first.text
    assert not second.ok and "already" in second.text
    run_worker_burst(db_url, redis_url)
    run_worker_burst(db_url, redis_url)  # nothing left: a second worker pass runs nothing
    assert http_target.hits == ["/health"]
    step = _steps(planned.pool)[0]
    assert step["status"] == "succeeded" and step["result"]["data"]["status"] == 200
    with planned.pool.connection() as conn:
        actions = [r["action"] for r in conn.execute("SELECT action FROM audit_log ORDER BY id")]
        messages = conn.execute("SELECT op, card FROM outbox WHERE platform = 'shell' ORDER BY id").fetchall()
        assert audit.verify(conn).ok
    # the double click is audited too, as a refused approval
    assert actions == ["plan.proposed", "step.approved", "step.dispatched", "step.approval_refused",
                       "step.started", "step.succeeded"]
    assert messages[-1]["op"] == "post" and "succeeded" in messages[-1]["card"]["title"]
    assert any(m["op"] == "update" for m in messages)  # the plan card redrawn in place


def test_non_approver_runs_nothing(planned, redis_url, db_url, http_target):
    step_id = step_by_index(planned, platform="shell", channel="c1", index=1)
    reply = decide(planned, StepDecision(step_id=step_id, approve=True, actor=Actor(id="mallory")))
    assert not reply.ok and "not an approver" in reply.text
    run_worker_burst(db_url, redis_url)
    assert http_target.hits == []
    assert _steps(planned.pool)[0]["status"] == "proposed"
    with planned.pool.connection() as conn:
        refused = conn.execute("SELECT detail FROM audit_log WHERE action = 'step.approval_refused'").fetchone()
    assert "not an approver" in refused["detail"]["reason"]


def test_reject_means_it_never_runs(planned, redis_url, db_url, http_target):
    step_id = step_by_index(planned, platform="shell", channel="c1", index=1)
    assert decide(planned, StepDecision(step_id=step_id, approve=False, actor=Actor(id="bob"))).ok
    assert not decide(planned, StepDecision(step_id=step_id, approve=True, actor=Actor(id="alice"))).ok
    run_worker_burst(db_url, redis_url)
    assert http_target.hits == [] and _steps(planned.pool)[0]["status"] == "rejected"


def test_two_person_rule_in_production(pool, embedder, redis_url, tmp_path, http_target):
    config = WarroomConfig.model_validate({"policy": {"approvers": ["carol", "alice"], "auto_run_read_only": False}})
    services = make_services(pool, embedder, config, redis_url)
    (tmp_path / "rb.yaml").write_text(runbook_yaml(f"http://127.0.0.1:{http_target.server_port}/health"))
    ingest(pool, embedder, [tmp_path])
    handle_message(services, ChatMessage(platform="shell", channel="c2", user=Actor(id="carol"),
                                         text="why is payments-api returning 500s in prod?"))
    restart = step_by_index(services, platform="shell", channel="c2", index=2)
    own = decide(services, StepDecision(step_id=restart, approve=True, actor=Actor(id="carol")))
    assert not own.ok and "two-person rule" in own.text
    assert decide(services, StepDecision(step_id=restart, approve=True, actor=Actor(id="alice"))).ok


def test_auto_run_read_only_dispatches_without_a_click(pool, embedder, redis_url, db_url, tmp_path, http_target):
    config = WarroomConfig.model_validate({"policy": {"auto_run_read_only": True}})
    services = make_services(pool, embedder, config, redis_url)
    (tmp_path / "rb.yaml").write_text(runbook_yaml(f"http://127.0.0.1:{http_target.server_port}/health"))
    ingest(pool, embedder, [tmp_path])
    handle_message(services, ChatMessage(platform="shell", channel="c3", user=Actor(id="carol"),
                                         text="why is payments-api returning 500s?"))
    run_worker_burst(db_url, redis_url)
    statuses = [s["status"] for s in _steps(pool)]
    assert statuses == ["succeeded", "proposed"]  # the state-changing step still waits for a human
    assert http_target.hits == ["/health"]


def test_blocked_command_is_refused_before_a_card_is_drawn(pool, embedder, redis_url, tmp_path):
    config = WarroomConfig.model_validate({"policy": {"blocked_commands": ["restart=1"]}})
    services = make_services(pool, embedder, config, redis_url)
    (tmp_path / "rb.yaml").write_text(runbook_yaml("http://127.0.0.1:9/health"))
    ingest(pool, embedder, [tmp_path])
    handle_message(services, ChatMessage(platform="shell", channel="c4", user=Actor(id="carol"),
                                         text="payments-api 500 errors, why?"))
    restart = _steps(pool)[1]
    assert restart["status"] == "refused" and "blocked pattern" in restart["refusal"]
    with pool.connection() as conn:
        card = conn.execute("SELECT card FROM outbox ORDER BY id LIMIT 1").fetchone()["card"]
    steps = [b for b in card["blocks"] if b["type"] == "steps"][0]["items"]
    assert steps[1]["actions"] == [] and "blocked" in steps[1]["note"]


def test_failed_step_is_reported(planned, db_url, redis_url, http_target):
    with planned.pool.connection() as conn:
        conn.execute("UPDATE plan_steps SET params = %s::jsonb WHERE ordinal = 0",
                     (json.dumps({"method": "GET", "url": f"http://127.0.0.1:{http_target.server_port}/fail"}),))
        conn.commit()
    step_id = step_by_index(planned, platform="shell", channel="c1", index=1)
    assert decide(planned, StepDecision(step_id=step_id, approve=True, actor=Actor(id="alice"))).ok
    run_worker_burst(db_url, redis_url)
    step = _steps(planned.pool)[0]
    assert step["status"] == "failed" and "HTTP 500" in step["result"]["summary"]
