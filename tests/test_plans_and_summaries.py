"""Model-proposed plans pass the schema and the validators or are refused; incident summaries and the
postmortem draft cite their chat messages and audit ids, and reach the incident thread through the outbox."""
import json
import re
from datetime import datetime, timezone

import jsonschema
import pytest

from engine.config import WarroomConfig
from engine.context import Context
from engine.models import Actor, ChatMessage, StepDecision
from engine.plan_schema import ProposedPlan, ProposedPlanError, proposed_plan_schema, validate_proposed_plan
from engine.planner import build_plan
from engine.policy import is_read_only_command, is_read_only_sql, minimum_risk
from handlers.approval import decide
from handlers.command import handle_message
from storage import audit
from tests.conftest import ROOT, annotated_payments_alert, run_worker_burst
from tests.slack_standin import SlackStandIn
from tests.outbox_helpers import deliver_to_slack

NOW = datetime(2026, 11, 24, 14, 0, tzinfo=timezone.utc)


def _config(**web_01) -> WarroomConfig:
    return WarroomConfig.model_validate({
        "policy": {"blocked_commands": ["rm -rf /", "DROP DATABASE", "mkfs"]},
        "targets": {
            "payments-http": {"connector": "http", "base_url": "http://payments.internal:8080"},
            "web-01": {"connector": "ssh", "host": "10.0.0.5", "username": "ops",
                       "private_key": "vault:kv/data/ssh/web-01#private_key", **web_01},
            "payments-db": {"connector": "sql", "dsn": "postgresql://ro@db.internal/payments",
                            "password": "vault:kv/data/db/payments#password"},
            "staging-01": {"connector": "ssh", "host": "10.1.0.5", "environment": "staging"},
        }})


CONFIG = _config()


def _context(environment="production", runbooks=None) -> Context:
    return Context(alert=None, question="payments-api is slow", service="payments-api", environment=environment,
                   now=NOW, runbooks=runbooks or [])


def _step(**overrides) -> dict:
    step = {"title": "Check health", "connector": "http", "target": "payments-http", "risk": "read_only",
            "params": {"method": "GET", "url": "/health"}, "why": "the alert says 5xx"}
    return {**step, **overrides}


def _plan(*steps) -> dict:
    return {"title": "Investigate payments-api", "steps": list(steps) or [_step()]}


def _only(plan):
    [step] = plan.steps
    return step


# --- the proposed plan: schema and validators ---------------------------------------------------------------


def test_shipped_json_schema_is_the_models_schema():
    assert proposed_plan_schema() == ProposedPlan.model_json_schema()
    jsonschema.Draft202012Validator.check_schema(proposed_plan_schema())
    jsonschema.validate(_plan(), proposed_plan_schema())  # what the model is told matches what we accept
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(_plan(_step(connector="terraform")), proposed_plan_schema())
    assert json.loads((ROOT / "prompts/schemas/proposed_plan.json").read_text())["additionalProperties"] is False


def test_a_good_proposed_plan_passes_as_a_model_plan():
    restart = _step(title="Restart payments-api", connector="ssh", target="web-01", risk="state_change",
                    params={"command": "sudo systemctl restart payments-api"},
                    rollback={"connector": "ssh", "params": {"command": "sudo systemctl start payments-api"}},
                    why="the service leaks connections until restarted")
    plan = validate_proposed_plan(_plan(_step(), restart), _context(), CONFIG)
    assert plan.source == "model" and plan.runbook_id is None and plan.title == "Investigate payments-api"
    health, restart = plan.steps
    assert [s.status for s in plan.steps] == ["proposed", "proposed"] and not health.refusal
    assert (health.key, health.risk.value, health.why) == ("model-1", "read_only", "the alert says 5xx")
    assert restart.requires_approval and restart.risk.value == "state_change"
    assert restart.rollback.target == "web-01"  # a rollback without a target runs where its step ran


@pytest.mark.parametrize("raw, where", [
    ("{not json", "model plan fails the schema"),
    ({"title": "x", "steps": []}, "steps"),
    (_plan(_step(connector="terraform")), "steps.0.connector"),           # unknown connector: not in the enum
    (_plan({k: v for k, v in _step().items() if k != "why"}), "steps.0.why"),
    (_plan(_step(risk="harmless")), "steps.0.risk"),
    (_plan(_step(target=None)), "steps.0.target"),                       # model steps must name a target
    (_plan(_step(shell="rm -rf /")), "steps.0.shell"),                     # unknown fields are refused
    (_plan(*[_step()] * 9), "steps"),
])
def test_output_failing_the_schema_is_refused_whole(raw, where):
    with pytest.raises(ProposedPlanError, match=re.escape(where)):
        validate_proposed_plan(raw, _context(), CONFIG)


@pytest.mark.parametrize("step, reason", [
    (_step(target="db-99"), "unknown target 'db-99'"),
    (_step(target="web-01"), "target 'web-01' is a ssh target, not http"),
    (_step(params={"method": "GET", "url": "http://evil.example/steal"}), "leaves target 'payments-http'"),
    (_step(connector="ssh", target="web-01", risk="high", params={"command": "sudo rm -rf / --no-preserve-root"},
           rollback={"connector": "ssh", "params": {"command": "true"}}), "blocked pattern 'rm -rf /'"),
    (_step(connector="sql", target="payments-db", risk="high", params={"query": "drop   database payments"},
           rollback={"connector": "sql", "params": {"query": "select 1"}}), "blocked pattern 'DROP DATABASE'"),
    (_step(connector="ssh", target="web-01", risk="state_change", params={"command": "sudo systemctl restart x"}),
     "changes state in production without a rollback"),
    (_step(connector="ssh", target="web-01", risk="state_change", params={"command": "sudo systemctl restart x"},
           rollback={"connector": "ssh", "target": "web-99", "params": {"command": "x"}}),
     "rollback: unknown target 'web-99'"),
])
def test_unsafe_steps_stay_on_the_card_refused_with_the_reason(step, reason):
    refused = _only(validate_proposed_plan(_plan(step), _context(), CONFIG))
    assert refused.status == "refused" and reason in refused.refusal


def test_a_state_change_without_rollback_is_fine_outside_production():
    restart = _step(connector="ssh", target="web-01", risk="state_change", params={"command": "sudo reboot"})
    assert _only(validate_proposed_plan(_plan(restart), _context("staging"), CONFIG)).status == "proposed"
    # ...but a target that says it is production is production, whatever the context says
    prod_target = _config(environment="production")
    assert _only(validate_proposed_plan(_plan(restart), _context(None), prod_target)).status == "refused"


@pytest.mark.parametrize("step, risk", [
    (_step(params={"method": "POST", "url": "/admin/flush-cache"}), "state_change"),
    (_step(params={"method": "delete", "url": "/sessions"}), "state_change"),
    (_step(connector="ssh", target="staging-01", params={"command": "sudo systemctl restart payments-api"}),
     "state_change"),
    (_step(connector="ssh", target="staging-01", params={"command": "journalctl -u payments-api | tail -n 50 > /x"}),
     "state_change"),
    (_step(connector="ssh", target="staging-01", params={"command": "journalctl -u payments-api -n 200 | grep -c 500"}),
     "read_only"),
    (_step(connector="sql", target="payments-db", params={"query": "SELECT pg_terminate_backend(4242)"}),
     "state_change"),
    (_step(connector="sql", target="payments-db", params={"query": "select count(*) from pg_stat_activity"}),
     "read_only"),
    (_step(risk="high"), "high"),  # a model may always ask for more care
])
def test_a_model_cannot_call_a_state_changing_step_read_only(step, risk):
    planned = _only(validate_proposed_plan(_plan(step), _context("staging"), CONFIG))
    assert planned.risk.value == risk
    assert planned.requires_approval == (risk != "read_only")


def test_read_only_recognition_is_conservative():
    assert is_read_only_command("ps aux | grep payments | wc -l")
    assert is_read_only_command("sudo dmesg -T")
    for writer in ("dmesg -C", "dmesg -Tc", "journalctl --vacuum-size=1G", "cat /etc/hosts; reboot",
                   "ls $(rm -rf /tmp/x)", "tail -f log &", "sort -o /etc/passwd x", "sed -i s/a/b/ f", "tee x"):
        assert not is_read_only_command(writer), writer
    assert is_read_only_sql("WITH a AS (SELECT 1) SELECT * FROM a;")
    for writer in ("select 1; delete from t", "EXPLAIN ANALYZE delete from t", "SELECT * INTO t2 FROM t",
                   "select setval('s', 1)", "select * from t for update"):
        assert not is_read_only_sql(writer), writer
    assert minimum_risk("prometheus", {"query": "up"}) == "read_only"
    assert minimum_risk("kubernetes", {"command": "kubectl rollout restart deploy/payments-api"}) == "state_change"
    assert minimum_risk("kubernetes", {"verb": "get"}) == "read_only"


def test_runbook_first_then_the_model_then_the_offline_answer():
    spec = {"apiVersion": "warroom/v1", "kind": "Runbook",
            "metadata": {"id": "payments-5xx", "title": "Payments 5xx", "services": ["payments-api"]},
            "steps": [{"id": "health", "title": "Health", "connector": "http", "with": {"url": "http://x/h"}}]}
    runbook = {"id": 1, "spec": spec, "match": "service", "retrieval_score": None}
    plan, row = build_plan(_context(runbooks=[runbook]), CONFIG, proposed=_plan())
    assert plan.source == "runbook" and row is runbook                   # a fitting runbook wins
    plan, row = build_plan(_context(), CONFIG, proposed=_plan())
    assert plan.source == "model" and row is None and plan.steps[0].status == "proposed"
    plan, _ = build_plan(_context(), CONFIG, proposed=_plan(_step(connector="terraform")))
    assert plan.source == "none" and plan.steps == []                    # invalid output: the offline answer
    assert build_plan(_context(), CONFIG)[0].title == "No runbook matches"


# --- incident summaries and the postmortem draft -------------------------------------------------------------

ALERTS = "C0ALERTS"


@pytest.fixture
def slack():
    with SlackStandIn(rate_limit=False) as standin:
        yield standin


@pytest.fixture
def incident(pool, embedder, redis_url, tmp_path, http_target):
    """A critical alert with a runbook: incident opened, alert and plan posted to Slack (a stand-in)."""
    services, alert_id = annotated_payments_alert(pool, embedder, redis_url, tmp_path, http_target,
                                                  approvers=["U0ALICE"])
    return services, alert_id


def _deliver(services, standin) -> None:
    deliver_to_slack(services.pool, standin)


def _say(services, text: str, user: str = "U0ALICE") -> None:
    handle_message(services, ChatMessage(platform="slack", channel=ALERTS, text=text, user=Actor(id=user)))


def _last_card(services, title_part: str) -> dict:
    with services.pool.connection() as conn:
        rows = conn.execute("SELECT * FROM outbox WHERE card->>'title' LIKE %s ORDER BY id DESC",
                            (f"%{title_part}%",)).fetchall()
    assert rows, f"no card titled like {title_part!r}"
    return rows[0]


def _text(card: dict) -> str:
    return "\n".join(b.get("text", "") for b in card["blocks"])


def _slack_permalink(standin, channel: str, ts: str) -> str:
    """What Slack's chat.getPermalink answers for a message (the stand-in speaks the documented shapes)."""
    from slack_sdk import WebClient

    return WebClient(token=standin.bot_token, base_url=standin.url).chat_getPermalink(
        channel=channel, message_ts=ts)["permalink"]


def _cited(permalink: str, key: str) -> str:
    """How a summary cites a message whose permalink was recorded: a mrkdwn link labelled with its key."""
    return f"<{permalink.replace('&', '&amp;')}|{key}>"


def _audit_ids(services, action: str, subject_prefix: str = "") -> list[int]:
    with services.pool.connection() as conn:
        return [r["id"] for r in conn.execute("SELECT id FROM audit_log WHERE action = %s AND subject LIKE %s "
                                              "ORDER BY id", (action, subject_prefix + "%"))]


def test_status_summarises_the_incident_citing_messages_and_audit_ids(incident, slack, db_url, redis_url):
    services, alert_id = incident
    _deliver(services, slack)
    _say(services, "ack")
    with services.pool.connection() as conn:
        plan = conn.execute("SELECT id FROM plans WHERE alert_id = %s", (alert_id,)).fetchone()
        step_id = conn.execute("SELECT id FROM plan_steps WHERE plan_id = %s ORDER BY ordinal",
                               (plan["id"],)).fetchone()["id"]
        posted = {r["key"]: r for r in conn.execute("SELECT * FROM chat_messages")}
    assert decide(services, StepDecision(step_id=step_id, approve=True, actor=Actor(id="U0ALICE",
                                                                                    platform="slack"))).ok
    run_worker_burst(db_url, redis_url)

    _say(services, "status")
    row = _last_card(services, "Incident #")
    assert row["op"] == "post" and row["channel"] == ALERTS
    text = _text(row["card"])
    assert "PaymentsHighErrorRate" in text and "State *INVESTIGATING*" in text  # the approval moved it on
    # what fired: a link to the alert message the bot posted, the very permalink Slack gives for it
    alert_key = f"alert:{alert_id}"
    alert_link = _slack_permalink(slack, ALERTS, posted[alert_key]["message_id"])
    assert posted[alert_key]["permalink"] == alert_link and "?thread_ts=" not in alert_link
    assert _cited(alert_link, alert_key) in text and "ts `" not in text
    [opened_audit] = _audit_ids(services, "incident.opened")
    assert f"audit #{opened_audit}" in text      # the DETECTED line, audited when the critical alert opened it
    [ack_audit] = _audit_ids(services, "incident.acknowledged")
    assert "*Acknowledged* by U0ALICE at" in text and f"audit #{ack_audit}" in text
    # hypotheses with their confidence, cited by a link to the plan card: a reply in the alert's thread
    plan_key = f"plan:{plan['id']}"
    plan_link = _slack_permalink(slack, ALERTS, posted[plan_key]["message_id"])
    assert posted[plan_key]["permalink"] == plan_link
    assert plan_link.endswith(f"?thread_ts={posted[alert_key]['message_id']}&cid={ALERTS}")
    assert re.search(r"\*\d+%\*", text) and text.count(_cited(plan_link, plan_key)) >= 2  # hypotheses, plan
    # the step, its result and every audit entry about it
    assert "succeeded: GET http://127.0.0.1:" in text and "decided by U0ALICE" in text
    step_audits = [_audit_ids(services, action, f"step:{step_id}")[0]
                   for action in ("step.approved", "step.dispatched", "step.started", "step.succeeded")]
    assert "audit " + ", ".join(f"#{i}" for i in step_audits) in text
    [proposed] = _audit_ids(services, "plan.proposed")
    assert f"audit #{proposed}" in text
    _deliver(services, slack)
    assert slack.violations == []  # the summary renders as valid Block Kit


def test_resolve_posts_and_keeps_a_postmortem_draft_in_the_incident_thread(incident, slack):
    services, alert_id = incident
    _deliver(services, slack)
    assert len(slack.calls_to("auth.test")) == 1  # the workspace URL is asked once, not once per message
    _say(services, "ack")
    _say(services, "resolve the v2.14.0 deploy exhausted the DB pool; rolled back", user="U0CAROL")

    draft = _last_card(services, "Postmortem draft")
    assert draft["thread_key"] == f"alert:{alert_id}" and draft["channel"] == ALERTS  # the incident's thread
    text = _text(draft["card"])
    [resolved] = _audit_ids(services, "incident.resolved")
    assert "the v2.14.0 deploy exhausted the DB pool; rolled back — as given on resolve by U0CAROL" in text
    assert f"(resolved, audit #{resolved})" in text and "*Impact window*" in text
    with services.pool.connection() as conn:
        posted = {r["key"]: r["message_id"] for r in conn.execute("SELECT key, message_id FROM chat_messages")}
        plan_key = conn.execute("SELECT message_key FROM plans WHERE alert_id = %s", (alert_id,)).fetchone()[
            "message_key"]
    alert_cite = _cited(_slack_permalink(slack, ALERTS, posted[f"alert:{alert_id}"]), f"alert:{alert_id}")
    assert f"first alert {alert_cite}" in text and f"alert fired: PaymentsHighErrorRate — {alert_cite}" in text
    # hypotheses considered: cited by the plan card's link, a reply in the alert's thread
    assert _cited(_slack_permalink(slack, ALERTS, posted[plan_key]), plan_key) in text
    assert "RESOLVED by U0CAROL" in text and "ACKNOWLEDGED by U0ALICE" in text
    assert "Nothing was run through warroom." in text and "*Follow-ups*" in text
    with services.pool.connection() as conn:
        [stored] = conn.execute("SELECT * FROM incident_postmortems").fetchall()
        assert stored["card"] == draft["card"] and stored["author"] == "U0CAROL"
        assert audit.verify(conn).ok
    assert "postmortem draft is in the incident thread" in _text(_last_card(services, "Resolved by")["card"])

    _deliver(services, slack)
    parent = next(m for m in slack.messages(ALERTS) if "PaymentsHighErrorRate" in json.dumps(m)
                  and not m.get("thread_ts"))
    assert any("Postmortem draft" in json.dumps(m) for m in slack.thread(ALERTS, parent["ts"]))
    assert slack.violations == []

    _say(services, "resolve again", user="U0CAROL")  # nothing open any more: no second draft
    with services.pool.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM incident_postmortems").fetchone()["n"] == 1


def test_a_resolve_without_a_reason_leaves_the_root_cause_to_fill_in(incident):
    services, _ = incident
    _say(services, "resolve")
    text = _text(_last_card(services, "Postmortem draft")["card"])
    assert "_Not given on resolve (`/warroom resolve <why>`). Fill in._" in text
    assert "`alert:" in text and "(not posted yet)" in text  # not delivered: cited by key alone
