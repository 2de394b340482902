"""`/warroom learn`: a resolved incident whose steps ran on a real worker becomes a runbook draft that validates
against the runbook schema and cites its audit entries, messages and documents; approval makes a new runbook
version (parent_version_id, the old one kept), audited and findable by `warroom search`; only approvers decide,
an invalid edit stores nothing, and an unresolved incident is refused."""
import json

import numpy as np
import pytest
import yaml

from engine import drafting
from engine.ingest import validate_runbook
from engine.models import Actor, ChatMessage, StepDecision
from handlers.approval import decide
from handlers.command import handle_message
from storage import audit
from storage import runbooks as runbook_store
from tests.conftest import annotated_payments_alert, run_worker_burst, warroom

ALERTS = "C0ALERTS"


@pytest.fixture
def incident(pool, embedder, redis_url, tmp_path, http_target):
    """A critical alert with the payments runbook: the incident opened and its plan proposed in the thread."""
    services, alert_id = annotated_payments_alert(pool, embedder, redis_url, tmp_path, http_target,
                                                  approvers=["U0ALICE", "U0BOB"])
    with services.pool.connection() as conn:
        [row] = conn.execute("SELECT * FROM incidents").fetchall()
    return services, row["id"], alert_id


def _say(services, text, user="U0ALICE"):
    handle_message(services, ChatMessage(platform="shell", channel=ALERTS, text=text,
                                         user=Actor(id=user, name=user.lower(), platform="shell")))
    with services.pool.connection() as conn:
        return conn.execute("SELECT * FROM outbox ORDER BY id DESC LIMIT 1").fetchone()


def _text(row):
    return row["card"]["title"] + "\n" + "\n".join(b.get("text", "") for b in row["card"]["blocks"])


def _step(services, key):
    with services.pool.connection() as conn:
        return conn.execute("SELECT * FROM plan_steps WHERE key = %s ORDER BY id", (key,)).fetchone()


def _query(services, sql, *args):
    with services.pool.connection() as conn:
        return conn.execute(sql, args).fetchall()


def _run_and_resolve(services, db_url, redis_url):
    """The check and the restart approved, run by a real worker, then resolved with a reason."""
    alice, bob = Actor(id="U0ALICE", platform="shell"), Actor(id="U0BOB", platform="shell")
    assert decide(services, StepDecision(step_id=_step(services, "check-health")["id"], approve=True, actor=alice)).ok
    restart = _step(services, "restart")["id"]
    assert decide(services, StepDecision(step_id=restart, approve=True, actor=alice)).ok
    assert decide(services, StepDecision(step_id=restart, approve=True, actor=bob)).ok   # two people in production
    run_worker_burst(db_url, redis_url)
    assert _step(services, "restart")["status"] == "succeeded"
    _say(services, "resolve the restart cleared the stuck pool", user="U0CAROL")


def test_learn_drafts_a_cited_runbook_update_and_approval_versions_it(incident, db_url, redis_url, http_target):
    services, iid, alert_id = incident
    refused = _say(services, "learn")   # not resolved yet
    assert refused["op"] == "ephemeral" and f"Incident #{iid} is DETECTED: resolve it first" in _text(refused)
    assert _query(services, "SELECT * FROM runbook_drafts") == []

    _run_and_resolve(services, db_url, redis_url)
    postmortem = next(r for r in _query(services, "SELECT card FROM outbox WHERE card->>'title' LIKE 'Postmortem%%'"))
    assert {"type": "learn", "incident_id": iid, "draft_id": None, "actions": ["draft"], "yaml": ""} in \
        postmortem["card"]["blocks"]   # the resolve card's "Draft runbook" button

    assert "Draft #" in _text(_say(services, "learn", user="U0CAROL"))
    [draft] = _query(services, "SELECT * FROM runbook_drafts")
    [v1] = runbook_store.versions(services.pool.connection().__enter__(), "payments-high-error-rate")
    # an update of the runbook the incident ran, not a new one
    assert (draft["runbook_id"], draft["base_version_id"], draft["status"]) == (
        "payments-high-error-rate", v1["id"], "proposed")
    runbook = validate_runbook(yaml.safe_load(draft["yaml"]))   # what `warroom ingest` accepts
    assert [s.id for s in runbook.steps] == ["check-health", "restart"]
    assert "Root cause (given on resolve): the restart cleared the stuck pool" in runbook.description
    # every fact cites its source: the steps' audit entries, the resolve's, the thread messages, the documents
    cites = draft["citations"]
    step_audits = [r["id"] for r in _query(services, "SELECT id FROM audit_log WHERE subject = %s ORDER BY id",
                                           f"step:{_step(services, 'restart')['id']}")]
    assert {"kind": "step", "fact": "restart: Restart payments-api succeeded", "step": "restart",
            "audit_ids": step_audits} in cites
    [resolved] = _query(services, "SELECT id FROM audit_log WHERE action = 'incident.resolved'")
    assert any(c["kind"] == "root_cause" and c["audit_ids"] == [resolved["id"]] for c in cites)
    assert f"(audit #{resolved['id']})" in runbook.description
    assert any(c["kind"] == "message" and c["fact"] == f"alert:{alert_id}" for c in cites)
    [doc] = _query(services, "SELECT id FROM documents WHERE source LIKE '%%rb.yaml'")
    assert any(c["kind"] == "document" and c["document_id"] == doc["id"] for c in cites)
    card = _query(services, "SELECT card FROM outbox WHERE card->>'kind' = 'runbook_draft'")[0]["card"]
    assert card["blocks"][-1] == {"type": "learn", "incident_id": iid, "draft_id": draft["id"],
                                  "actions": ["approve", "edit", "reject"], "yaml": draft["yaml"]}
    assert "apiVersion: warroom/v1" in card["blocks"][1]["text"] and "audit #" in card["blocks"][2]["text"]

    # a non-approver cannot approve; the refusal is audited and nothing changes
    answer = _say(services, f"learn approve {draft['id']}", user="U0CAROL")
    assert answer["op"] == "ephemeral" and "Not approved: u0carol is not an approver (policy.approvers: U0ALICE, U0BOB)" in _text(answer)
    assert [r["action"] for r in _query(services, "SELECT action FROM audit_log WHERE subject = %s",
                                        f"runbook_draft:{draft['id']}")] == ["runbook_draft.proposed",
                                                                              "runbook_draft.refused"]
    # an edit that is not a runbook: one line saying why, nothing stored
    answer = _say(services, f"learn edit {draft['id']}\napiVersion: warroom/v1\nkind: Runbook\nsteps: []")
    assert answer["op"] == "ephemeral" and "Not stored: metadata: Field required" in _text(answer)
    assert len(_query(services, "SELECT * FROM runbook_drafts")) == 1

    answer = _say(services, f"learn approve {draft['id']}", user="U0ALICE")
    assert answer["op"] == "post" and "version 2, replacing version 1 (kept) is active" in _text(answer)
    v1_after, v2 = runbook_store.versions(services.pool.connection().__enter__(), "payments-high-error-rate")
    assert (v1_after["id"], v1_after["active"]) == (v1["id"], False)       # the old version is still there
    assert (v2["version"], v2["parent_version_id"], v2["active"]) == (2, v1["id"], True)
    assert v2["spec"] == runbook.model_dump(mode="json", by_alias=True)
    [approved] = _query(services, "SELECT * FROM audit_log WHERE action = 'runbook_draft.approved'")
    assert approved["detail"]["parent_version_id"] == v1["id"] and approved["detail"]["version_id"] == v2["id"]
    assert _query(services, "SELECT state FROM incidents WHERE id = %s", iid)[0]["state"] == "LEARNED"
    with services.pool.connection() as conn:
        assert audit.verify(conn).ok
    again = _say(services, f"learn approve {draft['id']}", user="U0BOB")
    assert again["op"] == "ephemeral" and "already approved by U0ALICE" in _text(again)

    found = warroom("search", "payments restart cleared the stuck pool", "--json",
                    env={"DATABASE_URL": db_url, "REDIS_URL": redis_url, "HF_HUB_OFFLINE": "1"})
    assert found.returncode == 0, found.stderr
    results = json.loads(found.stdout)["results"]
    assert any(r["source"] == "runbook:payments-high-error-rate" and "stuck pool" in r["text"] for r in results)


def test_reject_stores_nothing_and_edit_makes_a_revision(incident, db_url, redis_url):
    services, iid, _ = incident
    _run_and_resolve(services, db_url, redis_url)
    _say(services, "learn")
    [draft] = _query(services, "SELECT * FROM runbook_drafts")
    spec = yaml.safe_load(draft["yaml"])
    spec["metadata"]["title"] = "Payments 5xx: restart when the pool is stuck"
    answer = _say(services, f"learn edit {draft['id']} {json.dumps(spec)}", user="U0CAROL")   # anyone may propose
    assert answer["op"] == "post" and f"replaces draft #{draft['id']}" in _text(answer)
    old, new = _query(services, "SELECT * FROM runbook_drafts ORDER BY id")
    assert (old["status"], new["status"], new["revision_of"]) == ("superseded", "proposed", old["id"])
    assert "Payments 5xx: restart when the pool is stuck" in new["yaml"]
    assert _say(services, f"learn approve {old['id']}")["op"] == "ephemeral"   # the replaced one is closed

    answer = _say(services, f"learn reject {new['id']}", user="U0BOB")
    assert answer["op"] == "post" and "Nothing was stored" in _text(answer)
    assert len(runbook_store.versions(services.pool.connection().__enter__(), "payments-high-error-rate")) == 1
    assert _query(services, "SELECT state FROM incidents WHERE id = %s", iid)[0]["state"] == "RESOLVED"
    assert _query(services, "SELECT action FROM audit_log WHERE subject = %s", f"runbook_draft:{new['id']}")[-1][
        "action"] == "runbook_draft.rejected"


# --- the pure part -------------------------------------------------------------------------------------------


def _row(i, key, status, **extra):
    return {"id": i, "plan_id": 1, "key": key, "title": key.replace("-", " "), "connector": "http", "target": None,
            "risk": "read_only", "params": {"method": "GET", "url": f"http://svc/{key}"}, "rollback": None,
            "verify": None, "status": status, "result": None, "refusal": None, "kind": "step", **extra}


FACTS = drafting.LearnFacts(
    incident={"id": 9, "title": "CheckoutLatencyHigh", "service": "checkout", "resolved_at": None},
    steps=[_row(1, "drain-node", "failed", result={"summary": "HTTP 503 from the node API"}),
           _row(2, "scale-up", "succeeded", risk="state_change",
                rollback={"connector": "http", "with": {"url": "http://svc/scale-down"}})],
    step_audits={1: [11, 12], 2: [13, 14]}, alert_name="CheckoutLatencyHigh")


def test_only_what_worked_becomes_steps_and_a_failure_becomes_a_note():
    draft = drafting.draft_runbook(FACTS)
    runbook = validate_runbook(yaml.safe_load(draft.yaml()))
    assert runbook.metadata.id == "checkout-latency-high" and runbook.metadata.services == ["checkout"]
    [step] = runbook.steps
    assert step.id == "scale-up" and step.rollback.with_ == {"url": "http://svc/scale-down"}
    assert "tried `drain-node` (drain node): failed: HTTP 503 from the node API (audit #11, #12)" in \
        runbook.description
    assert {"kind": "step", "fact": "scale-up: scale up succeeded", "step": "scale-up", "audit_ids": [13, 14]} in \
        draft.citations


def test_an_update_keeps_the_runbooks_steps_and_adds_the_new_ones():
    base = {"id": 5, "version": 3, "spec": {
        "apiVersion": "warroom/v1", "kind": "Runbook", "description": "Checkout is slow.",
        "metadata": {"id": "checkout-slow", "title": "Checkout slow", "services": ["checkout"], "alerts": []},
        "steps": [{"id": "scale-up", "title": "Scale", "connector": "http", "risk": "read_only",
                   "with": {"url": "http://other"}}]}}
    runbook = drafting.draft_runbook(FACTS, base=base).runbook
    assert runbook.metadata.id == "checkout-slow" and runbook.metadata.alerts == ["CheckoutLatencyHigh"]
    assert [s.id for s in runbook.steps] == ["scale-up", "scale-up-2"]   # same id, another action: added
    assert runbook.description.startswith("Checkout is slow.\n\nLearned from incident #9")


def test_nothing_that_worked_is_nothing_to_learn():
    facts = drafting.LearnFacts(incident=FACTS.incident, steps=[FACTS.steps[0]], step_audits=FACTS.step_audits)
    with pytest.raises(drafting.NothingToLearn, match="ran no step successfully"):
        drafting.draft_runbook(facts)


def test_the_similar_runbook_is_the_one_that_ran_else_the_closest_above_the_threshold():
    a, b = {"id": 1, "runbook_id": "a"}, {"id": 2, "runbook_id": "b"}
    vectors, draft = np.array([[1.0, 0.0], [0.6, 0.8]]), np.array([0.6, 0.8])
    assert drafting.pick_base([a, b], vectors, draft, threshold=0.8, ran_from=set())[0] is b
    assert drafting.pick_base([a, b], vectors, draft, threshold=0.8, ran_from={"a"})[0] is a
    assert drafting.pick_base([a], vectors[:1], draft, threshold=0.8, ran_from=set())[0] is None   # 0.6 < 0.8


def test_the_resolve_and_draft_cards_render_valid_block_kit_adaptive_cards_and_shell_text(incident, db_url, redis_url):
    """The buttons as each platform shows them: Slack action ids the adapter routes, Teams verbs with the YAML
    editable in place, shell commands; every rendering valid for its platform."""
    from bot.shell import render_text
    from bot.slack.app import _LEARN_ACTION
    from bot.slack.blocks import render as slack_render
    from bot.teams.cards import render as teams_render
    from engine.cards import Card
    from tests.slack_standin import block_kit_violations
    from tests.teams_standin import card_violations

    services, iid, _ = incident
    _run_and_resolve(services, db_url, redis_url)
    _say(services, "learn")
    [draft] = _query(services, "SELECT id FROM runbook_drafts")
    for title, buttons in [("Postmortem%%", {f"warroom_learn_draft_{iid}"}),
                           ("Runbook draft%%", {f"warroom_learn_{a}_{draft['id']}" for a in ("approve", "edit",
                                                                                            "reject")})]:
        card = Card.model_validate(_query(
            services, "SELECT card FROM outbox WHERE card->>'title' LIKE %s AND card->>'kind' <> 'notice'",
            title)[0]["card"])
        _, blocks = slack_render(card, more_url="https://warroom.example.com/cards/1")
        assert block_kit_violations(blocks) == []
        ids = {e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]}
        assert buttons <= ids and all(_LEARN_ACTION.match(i) for i in buttons)
        adaptive = teams_render(card)
        assert card_violations(adaptive) == []
        verbs = json.dumps(adaptive)
        assert ('"learn_draft"' in verbs) == title.startswith("Postmortem")
        assert ('"learn_approve"' in verbs) == title.startswith("Runbook draft")
        text = render_text(card)
        assert ("`learn` drafts a runbook" in text) if "Postmortem" in title else \
            (f"`learn approve {draft['id']}`" in text and "apiVersion: warroom/v1" in text)
    adaptive = teams_render(card)
    [editor] = [b for b in adaptive["body"] if b["type"] == "Input.Text"]
    assert editor["isMultiline"] and editor["value"].startswith("apiVersion: warroom/v1")
