"""Policy depth: every rule refuses what it should, says why to the person who clicked, and is audited.

The pure rules (engine.approvals) are checked at fixed times; the same rules are then driven through the real
approval handler against PostgreSQL, with plans made from a runbook the way users make them."""
import json
from datetime import datetime, timedelta, timezone

import pytest

from engine import approvals
from engine.approvals import Facts
from engine.config import WarroomConfig
from engine.knowledge import ingest
from engine.models import Actor, Alert, ChatMessage, StepDecision
from handlers.alert import annotate_pending, receive
from handlers.approval import decide, step_by_index
from handlers.command import handle_message
from tests.conftest import make_services

NOW = datetime(2026, 11, 25, 14, 30, tzinfo=timezone.utc)   # a Wednesday
RUNBOOK = """apiVersion: warroom/v1
kind: Runbook
metadata:
  id: payments-high-error-rate
  title: Payments API elevated 5xx rate
  services: [payments-api]
  alerts: [PaymentsHighErrorRate]
description: |
  payments-api returns 500 errors. Usual causes: a bad deploy, an exhausted database pool.
steps:
  - id: check-health
    title: Check the health endpoint
    connector: http
    risk: read_only
    with: {{method: GET, url: "{url}/health"}}
  - id: restart
    title: Restart payments-api
    connector: http
    risk: state_change
    with: {{method: POST, url: "{url}/restart"}}
  - id: failover
    title: Fail over the payments database
    connector: http
    risk: high
    with: {{method: POST, url: "{url}/failover"}}
"""


def policy(**settings) -> WarroomConfig:
    return WarroomConfig.model_validate({"policy": {"auto_run_read_only": False, **settings}})


def facts(risk="state_change", *, actor="alice", environment="production", service="payments-api",
          requested_by="carol", created=NOW - timedelta(minutes=5), **more) -> Facts:
    step = {"id": 1, "key": "restart", "risk": risk, "status": "proposed", "params": {"command": "restart"}}
    plan = {"service": service, "environment": environment, "requested_by": requested_by, "created_at": created}
    return Facts(step=step, plan=plan, actor=Actor(id=actor, platform="slack"), now=NOW, **more)


# --- the rules, at fixed times ----------------------------------------------------------------------------

def test_approvers_per_service_and_environment_with_groups():
    config = policy(approvers=["alice"], groups={"dba": ["U0DBA", "dana@example.com"]},
                    approver_rules=[{"services": ["payments-api"], "environments": ["prod"],
                                     "approvers": ["group:dba"]}]).policy
    refused = approvals.decide(facts(actor="alice"), config)
    assert not refused.allowed and refused.rule == "approvers"
    assert "not an approver for payments-api in production" in refused.reason and "group:dba" in refused.reason
    assert approvals.decide(facts(actor="U0DBA"), config).allowed
    dana = Actor(id="U0SOMEONE", platform="teams", email="Dana@Example.com")
    assert approvals.is_approver(dana, config, "payments-api", "production")
    # outside the rule's scope the global list applies
    assert approvals.decide(facts(actor="alice", environment="staging"), config).allowed
    assert not approvals.decide(facts(actor="U0DBA", environment="staging"), config).allowed


def test_undefined_group_is_a_config_error():
    with pytest.raises(ValueError, match="group:sre"):
        policy(approvers=["group:sre"])


def test_two_person_rule_counts_people_not_clicks():
    config = policy(approvers=["alice", "bob", "carol"]).policy
    own = approvals.decide(facts(actor="carol", requested_by="carol"), config)
    assert not own.allowed and own.rule == "two_person" and "requester" in own.reason
    # asked by carol, approved by alice: two people, it runs
    assert approvals.decide(facts(actor="alice"), config) == approvals.Decision(True, "approved by alice", "approved")
    # proposed by the bot for an alert: two approvers
    first = approvals.decide(facts(actor="alice", requested_by=None), config)
    assert first.allowed and first.more_needed == 1 and "1 of 2" in first.reason
    again = approvals.decide(facts(actor="alice", requested_by=None, earlier_approvers=["slack:alice"]), config)
    assert not again.allowed and "different approver" in again.reason
    second = approvals.decide(facts(actor="bob", requested_by=None, earlier_approvers=["slack:alice"]), config)
    assert second.allowed and second.more_needed == 0
    # high risk: two approvers besides the requester
    high = approvals.decide(facts("high", actor="alice"), config)
    assert high.allowed and high.more_needed == 1
    # not production, or read-only: one approval
    assert approvals.decide(facts(actor="carol", requested_by="carol", environment="staging"), config).more_needed == 0
    assert approvals.decide(facts("read_only", actor="carol", requested_by="carol"), config).allowed


def test_the_same_person_on_two_platforms_is_one_approver():
    config = policy(approvers=["alice@example.com", "U0ALICE"]).policy
    on_teams = Actor(id="29:1abc", platform="teams", email="alice@example.com")
    on_slack = Actor(id="U0ALICE", platform="slack", email="ALICE@example.com")
    assert approvals.identity(on_teams) == approvals.identity(on_slack) == "alice@example.com"
    step = facts("high", requested_by=None, earlier_approvers=[approvals.identity(on_teams)])
    second = approvals.decide(Facts(**{**step.__dict__, "actor": on_slack}), config)
    assert not second.allowed and second.rule == "two_person"


def test_approval_expires_with_the_card_age():
    config = policy(approval_expiry_minutes=60).policy
    stale = approvals.decide(facts(created=NOW - timedelta(minutes=61)), config)
    assert not stale.allowed and stale.rule == "expiry" and "61 minutes old" in stale.reason
    assert approvals.decide(facts(created=NOW - timedelta(minutes=59)), config).allowed
    assert approvals.decide(facts(created=NOW - timedelta(days=9)), policy(approval_expiry_minutes=0).policy).allowed


def test_change_window_refuses_outside_and_names_the_next_opening():
    window = {"environments": ["production"], "days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00",
              "end": "17:00", "timezone": "Europe/Berlin"}
    config = policy(change_windows=[window], approval_expiry_minutes=0).policy
    assert approvals.decide(facts(), config).allowed                       # 15:30 in Berlin on a Wednesday
    evening = facts().__dict__ | {"now": datetime(2026, 11, 25, 17, 30, tzinfo=timezone.utc)}
    refused = approvals.decide(Facts(**evening), config)
    assert not refused.allowed and refused.rule == "change_window"
    assert "mon,tue,wed,thu,fri 09:00-17:00 Europe/Berlin" in refused.reason
    assert "next window opens Thu 2026-11-26 09:00 CET" in refused.reason
    friday_night = facts().__dict__ | {"now": datetime(2026, 11, 27, 22, 0, tzinfo=timezone.utc)}
    assert "opens Mon 2026-11-30 09:00" in approvals.decide(Facts(**friday_night), config).reason
    # read-only steps and other environments are not held to the window
    assert approvals.decide(Facts(**(facts("read_only").__dict__ | {"now": evening["now"]})), config).allowed
    assert approvals.decide(Facts(**(facts(environment="staging").__dict__ | {"now": evening["now"]})), config).allowed


def test_planned_freeze_and_emergency_freeze_stop_state_changes():
    config = policy(freezes=[{"start": "2026-11-20T00:00:00Z", "end": "2026-11-30T00:00:00Z",
                              "environments": ["production"], "reason": "Black Friday freeze"}]).policy
    refused = approvals.decide(facts(), config)
    assert not refused.allowed and refused.rule == "freeze" and "Black Friday freeze" in refused.reason
    assert approvals.decide(facts("read_only"), config).allowed
    emergency = [{"service": "payments-api", "reason": "db failover in progress", "frozen_by": "bob"}]
    stopped = approvals.decide(facts(freezes=emergency), policy().policy)
    assert not stopped.allowed and "frozen by bob: db failover in progress" in stopped.reason
    assert approvals.decide(facts(freezes=emergency, service="search-api"), policy().policy).allowed


def test_rate_limit_per_service_per_hour():
    config = policy(max_state_changes_per_hour=3).policy
    assert approvals.decide(facts(recent_changes=2), config).allowed
    refused = approvals.decide(facts(recent_changes=3), config)
    assert not refused.allowed and refused.rule == "rate_limit" and "3 state changes in the last hour" in refused.reason
    assert approvals.decide(facts(recent_changes=50), policy(max_state_changes_per_hour=0).policy).allowed


def test_blocked_pattern_is_checked_again_at_the_click():
    config = policy(blocked_commands=["restart"]).policy
    refused = approvals.decide(facts(), config)
    assert not refused.allowed and refused.rule == "blocked_pattern" and "'restart'" in refused.reason


# --- the same rules through the approval handler, against PostgreSQL ----------------------------------------

@pytest.fixture
def runbook(tmp_path, pool, embedder, http_target):
    (tmp_path / "rb.yaml").write_text(RUNBOOK.format(url=f"http://127.0.0.1:{http_target.server_port}"))
    ingest(pool, embedder, [tmp_path])


def _ask(services, channel="c1", user="carol", text="why is payments-api returning 500s in prod?"):
    handle_message(services, ChatMessage(platform="shell", channel=channel, text=text, user=Actor(id=user)))
    return [step_by_index(services, platform="shell", channel=channel, index=i) for i in (1, 2, 3)]


def _click(services, step_id, who, approve=True, **actor):
    return decide(services, StepDecision(step_id=step_id, approve=approve, actor=Actor(id=who, **actor)))


def _audit(pool, action):
    with pool.connection() as conn:
        return conn.execute("SELECT * FROM audit_log WHERE action = %s ORDER BY id", (action,)).fetchall()


def _status(pool, step_id):
    with pool.connection() as conn:
        return conn.execute("SELECT status FROM plan_steps WHERE id = %s", (step_id,)).fetchone()["status"]


def test_high_risk_step_needs_two_distinct_approvers(pool, embedder, redis_url, runbook):
    services = make_services(pool, embedder, policy(approvers=["alice", "bob", "carol"]), redis_url)
    _, restart, failover = _ask(services)
    first = _click(services, failover, "alice")
    assert first.ok and "not run yet" in first.text and "1 of 2" in first.text
    assert _status(pool, failover) == "proposed"
    assert not _click(services, failover, "alice").ok        # the same person again
    assert not _click(services, failover, "carol").ok        # the requester
    assert _click(services, failover, "bob").ok
    assert _status(pool, failover) == "queued"
    recorded = _audit(pool, "step.approval_recorded")
    assert [r["actor"] for r in recorded] == ["alice"] and recorded[0]["detail"]["identity"] == "shell:alice"
    refusals = [(r["actor"], r["detail"]["rule"]) for r in _audit(pool, "step.approval_refused")]
    assert refusals == [("alice", "two_person"), ("carol", "two_person")]
    with pool.connection() as conn:
        card = conn.execute("SELECT card FROM plans").fetchone()["card"]
    assert "queued" in str(card)


def test_alert_plan_in_production_needs_two_approvers(pool, embedder, redis_url, runbook):
    services = make_services(pool, embedder, policy(approvers=["alice", "bob"]), redis_url)
    receive(services, [Alert(source="alertmanager", fingerprint="fp1", status="firing",
                             name="PaymentsHighErrorRate", severity="warning", service="payments-api",
                             environment="production", summary="payments-api 5xx above 5%",
                             starts_at=datetime.now(timezone.utc))])
    assert annotate_pending(services) == 1
    with pool.connection() as conn:
        plan = conn.execute("SELECT * FROM plans").fetchone()
        restart = conn.execute("SELECT id FROM plan_steps WHERE key = 'restart'").fetchone()["id"]
    assert plan["requested_by"] is None and plan["service"] == "payments-api"
    assert "1 of 2" in _click(services, restart, "alice").text
    assert _status(pool, restart) == "proposed"
    assert _click(services, restart, "bob").ok and _status(pool, restart) == "queued"


def test_expired_card_refuses_and_loses_its_buttons(pool, embedder, redis_url, runbook):
    services = make_services(pool, embedder, policy(approvers=["alice"], approval_expiry_minutes=30), redis_url)
    _, restart, _ = _ask(services)
    with pool.connection() as conn:
        conn.execute("UPDATE plans SET created_at = now() - interval '45 minutes'")
    reply = _click(services, restart, "alice")
    assert not reply.ok and "45 minutes old" in reply.text and "fresh plan" in reply.text
    assert _status(pool, restart) == "expired"
    with pool.connection() as conn:
        steps = conn.execute("SELECT card FROM plans").fetchone()["card"]["blocks"]
    drawn = next(b for b in steps if b["type"] == "steps")["items"]
    assert all(not s["actions"] for s in drawn) and drawn[1]["note"] == "approval expired"
    assert [r["detail"]["rule"] for r in _audit(pool, "step.approval_refused")] == ["expiry"]
    assert len(_audit(pool, "step.expired")) == 3   # the whole card is stale, not just the clicked step


def test_emergency_freeze_from_chat(pool, embedder, redis_url, runbook):
    services = make_services(pool, embedder, policy(approvers=["alice"]), redis_url)
    check, restart, _ = _ask(services)

    def say(text, user):
        handle_message(services, ChatMessage(platform="shell", channel="c1", text=text, user=Actor(id=user)))
        with pool.connection() as conn:
            return conn.execute("SELECT op, card FROM outbox ORDER BY id DESC LIMIT 1").fetchone()

    frozen = say("/warroom freeze payments-api db failover in progress", "mallory")   # anyone may pull the brake
    assert frozen["op"] == "post" and "froze state changes for payments-api: db failover" in str(frozen["card"])
    refused = _click(services, restart, "alice")
    assert not refused.ok and "frozen by mallory: db failover in progress" in refused.text
    assert _click(services, check, "alice").ok       # read-only steps still run
    assert "Already frozen" in str(say("/warroom freeze payments-api", "bob")["card"])
    kept = say("/warroom unfreeze payments-api", "mallory")
    assert kept["op"] == "ephemeral" and "only an approver may lift" in str(kept["card"])
    assert "lifted the freeze on payments-api" in str(say("/warroom unfreeze payments-api", "alice")["card"])
    assert _click(services, restart, "alice").ok
    assert [r["action"] for r in _audit(pool, "policy.freeze") + _audit(pool, "policy.unfreeze")] == \
        ["policy.freeze", "policy.unfreeze"]
    assert _audit(pool, "policy.unfreeze_refused")[0]["actor"] == "mallory"


def test_freeze_all_covers_every_service(pool, embedder, redis_url, runbook):
    services = make_services(pool, embedder, policy(approvers=["alice"]), redis_url)
    _, restart, _ = _ask(services)
    handle_message(services, ChatMessage(platform="shell", channel="c1", text="/warroom freeze all game day",
                                         user=Actor(id="bob")))
    assert "all state changes are frozen by bob: game day" in _click(services, restart, "alice").text


def test_rate_limit_counts_dispatched_state_changes_of_the_service(pool, embedder, redis_url, runbook):
    services = make_services(pool, embedder, policy(approvers=["alice", "bob"], max_state_changes_per_hour=1),
                             redis_url)
    _, first_restart, _ = _ask(services, channel="c1")
    _, second_restart, _ = _ask(services, channel="c2")
    assert _click(services, first_restart, "alice").ok
    refused = _click(services, second_restart, "bob")
    assert not refused.ok and "payments-api already had 1 state changes in the last hour" in refused.text
    assert _audit(pool, "step.approval_refused")[0]["detail"]["rule"] == "rate_limit"


def test_change_window_through_the_handler(pool, embedder, redis_url, runbook):
    today = datetime.now(timezone.utc).strftime("%a").lower()
    other_days = [d for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun") if d != today]
    config = policy(approvers=["alice"], change_windows=[{"days": other_days, "environments": ["production"]}])
    services = make_services(pool, embedder, config, redis_url)
    check, restart, _ = _ask(services)
    refused = _click(services, restart, "alice")
    assert not refused.ok and "outside the change window for payments-api in production" in refused.text
    assert "next window opens" in refused.text
    assert _click(services, check, "alice").ok


def test_reject_needs_an_approver_of_that_scope(pool, embedder, redis_url, runbook):
    config = policy(approvers=["alice"], approver_rules=[{"services": ["payments-api"], "approvers": ["dana"]}])
    services = make_services(pool, embedder, config, redis_url)
    _, restart, _ = _ask(services)
    refused = _click(services, restart, "alice", approve=False)
    assert not refused.ok and "policy.approver_rules[0]: dana" in refused.text
    assert _click(services, restart, "dana", approve=False).ok and _status(pool, restart) == "rejected"


def test_interrupted_step_is_retried_by_one_approver_once(pool, embedder, redis_url, runbook):
    from bot.slack.app import _STEP_ACTION
    from bot.slack.blocks import render as slack_render
    from bot.teams.cards import render as teams_render
    from engine.cards import Card
    from engine.plans import redraw

    services = make_services(pool, embedder, policy(approvers=["alice", "bob"]), redis_url)
    _, restart, _ = _ask(services, text="why is payments-api returning 500s in staging?")
    assert _click(services, restart, "alice").ok
    with pool.connection() as conn:   # what the sweeper leaves behind when a worker dies mid-step
        conn.execute("UPDATE plan_steps SET status = 'interrupted' WHERE id = %s", (restart,))
        card = Card.model_validate(redraw(conn, conn.execute("SELECT id FROM plans").fetchone()["id"]).model_dump())
    step = next(b for b in card.blocks if b.type == "steps").items[1]
    assert step.actions == ["retry"]
    _, blocks = slack_render(card)
    buttons = {b["block_id"]: b["elements"] for b in blocks if b["type"] == "actions"}
    retry = buttons[f"step_{restart}"]
    assert [e["text"]["text"] for e in retry] == ["Retry"] and _STEP_ACTION.match(retry[0]["action_id"])
    assert '"verb": "retry"' in json.dumps(teams_render(card))
    assert not _click(services, restart, "mallory").ok
    first, second = _click(services, restart, "bob"), _click(services, restart, "bob")
    assert first.ok and first.text.startswith("Retrying step restart")
    assert not second.ok and _status(pool, restart) == "queued"
    assert [r["actor"] for r in _audit(pool, "step.retry_approved")] == ["bob"]
