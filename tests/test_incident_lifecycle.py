"""The incident lifecycle: the state machine allows exactly its moves and words every refusal; people move an
incident from chat, warroom moves it itself (first approval -> INVESTIGATING, a state change that succeeded on a
real worker -> MITIGATED), every move is in the timeline and the audit log with who and when, one thread has
one open incident, and MTTA / MTTR / open incidents are on /metrics of a real `warroom serve`."""
import itertools
import threading

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bot.metrics import Metrics
from engine import lifecycle
from engine.models import Actor, ChatMessage, StepDecision
from handlers.approval import decide
from handlers.command import handle_message
from storage import audit
from storage import incidents as incident_store
from storage.db import open_pool
from tests.conftest import annotated_payments_alert, run_worker_burst
from tests.served import Served
from tests.slack_standin import SlackStandIn
from tests.outbox_helpers import deliver_to_slack

ALERTS = "C0ALERTS"


# --- the state machine ----------------------------------------------------------------------------------------

ALLOWED = [(a, b) for a, targets in lifecycle.TRANSITIONS.items() for b in targets]
REFUSED = [(a, b) for a, b in itertools.product(lifecycle.STATES, lifecycle.STATES) if (a, b) not in ALLOWED]


def test_the_machine_is_the_documented_one():
    assert set(ALLOWED) == {
        ("DETECTED", "ACKNOWLEDGED"), ("DETECTED", "INVESTIGATING"), ("DETECTED", "MITIGATED"),
        ("DETECTED", "RESOLVED"), ("DETECTED", "INCONCLUSIVE"),
        ("ACKNOWLEDGED", "INVESTIGATING"), ("ACKNOWLEDGED", "MITIGATED"), ("ACKNOWLEDGED", "RESOLVED"),
        ("ACKNOWLEDGED", "INCONCLUSIVE"),
        ("INVESTIGATING", "MITIGATED"), ("INVESTIGATING", "RESOLVED"), ("INVESTIGATING", "INCONCLUSIVE"),
        ("MITIGATED", "RESOLVED"), ("MITIGATED", "INVESTIGATING"),
        ("RESOLVED", "LEARNED"),
        ("INCONCLUSIVE", "INVESTIGATING"), ("INCONCLUSIVE", "RESOLVED")}
    # storage filters "open" with its own copy (it imports nothing above it): the two must agree
    assert incident_store.OPEN_STATES == lifecycle.OPEN
    assert set(lifecycle.OPEN) | set(lifecycle.CLOSED) == set(lifecycle.STATES)


@pytest.mark.parametrize("current,to", ALLOWED)
def test_every_allowed_move_is_allowed(current, to):
    assert lifecycle.allowed(current, to) and lifecycle.refusal(4, current, to) is None
    assert current in lifecycle.sources(to)


@pytest.mark.parametrize("current,to", REFUSED)
def test_every_other_move_is_refused_with_what_is_possible(current, to):
    why = lifecycle.refusal(4, current, to)
    assert why.startswith(f"incident #4 is {'already ' if current == to else ''}{current}")
    assert all(target in why for target in lifecycle.TRANSITIONS[current])
    assert current not in lifecycle.sources(to)


def test_refusals_say_why():
    assert lifecycle.refusal(4, "RESOLVED", "INVESTIGATING") == (
        "incident #4 is RESOLVED; it can only move to LEARNED (a recurrence after resolve opens a new incident)")
    assert lifecycle.refusal(4, "LEARNED", "RESOLVED") == "incident #4 is LEARNED: its lifecycle is over"
    assert lifecycle.refusal(7, "MITIGATED", "LEARNED") == (
        "incident #7 is MITIGATED; it can move to RESOLVED or INVESTIGATING")
    assert lifecycle.refusal(7, "DETECTED", "BOGUS").startswith("BOGUS is not an incident state")


def test_every_allowed_move_is_made_in_the_database_and_every_refused_one_is_not(pool):
    """storage.advance guarded by lifecycle.sources: the database accepts exactly the machine's moves."""
    with pool.connection() as conn, conn.transaction():
        for current, to in ALLOWED + REFUSED:
            incident_id = incident_store.open_incident(conn, title=f"{current}->{to}", service="svc",
                                                       environment="production", severity="critical",
                                                       alert_id=None, channel="C1", thread=None)
            conn.execute("UPDATE incidents SET state = %s WHERE id = %s", (current, incident_id))  # set the stage
            moved = incident_store.advance(conn, incident_id, from_=lifecycle.sources(to), to=to, actor="alice")
            state = incident_store.get(conn, incident_id)["state"]
            if (current, to) in ALLOWED:
                assert moved is not None and moved["old_state"] == current and state == to
            else:
                assert moved is None and state == current


# --- one open incident per thread -------------------------------------------------------------------------------


def _open(conn, thread="alert:1", title="PaymentsHighErrorRate"):
    return incident_store.open_incident(conn, title=title, service="payments-api", environment="production",
                                        severity="critical", alert_id=None, channel=ALERTS, thread=thread)


def test_one_open_incident_per_thread_even_when_two_replicas_race(db_url, pool):
    with pool.connection() as conn, conn.transaction():
        first = _open(conn)
        assert _open(conn) == first                      # the group fired again: same incident
        assert _open(conn, thread="alert:2") != first    # another thread: its own incident
        assert len(incident_store.timeline(conn, first)) == 1

    # two replicas annotate alerts of the same thread at once: the second waits for the first and joins it
    other_pool = open_pool(db_url, max_size=1)
    try:
        result = {}
        racer = threading.Thread(target=lambda: result.setdefault("id", _in_tx(other_pool, "alert:9")))
        with pool.connection() as a:
            with a.transaction():
                winner = _open(a, thread="alert:9")
                racer.start()
                racer.join(1.0)
                assert racer.is_alive()  # blocked on the unique index until the first commits
            racer.join(30)
        assert result["id"] == winner
    finally:
        other_pool.close()
    with pool.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM incidents WHERE thread = 'alert:9'").fetchone()["n"] == 1

    # closed incidents leave the index: a recurrence after resolve opens a new incident
    with pool.connection() as conn, conn.transaction():
        incident_store.advance(conn, first, from_=lifecycle.sources("RESOLVED"), to="RESOLVED", actor="alice")
        assert _open(conn) != first


def _in_tx(pool, thread):
    with pool.connection() as conn, conn.transaction():
        return _open(conn, thread=thread)


# --- from chat, and by warroom itself ------------------------------------------------------------------------------


@pytest.fixture
def incident(pool, embedder, redis_url, tmp_path, http_target):
    """A critical alert with a runbook (a read-only check, a state-changing restart): the incident opened by
    the alert path, the plan proposed in its thread."""
    services, alert_id = annotated_payments_alert(pool, embedder, redis_url, tmp_path, http_target,
                                                  approvers=["U0ALICE", "U0BOB"])
    with services.pool.connection() as conn:
        [row] = conn.execute("SELECT * FROM incidents").fetchall()
    assert row["state"] == "DETECTED" and row["thread"] == f"alert:{alert_id}"
    return services, row["id"]


def _say(services, text, user="U0ALICE", name=None, platform="shell", thread=None):
    handle_message(services, ChatMessage(platform=platform, channel=ALERTS, text=text, thread=thread,
                                         user=Actor(id=user, name=name, platform=platform)))
    with services.pool.connection() as conn:
        return conn.execute("SELECT op, recipient, card FROM outbox WHERE platform = %s ORDER BY id DESC LIMIT 1",
                            (platform,)).fetchone()


def _text(row):
    return row["card"]["title"] + "\n" + "\n".join(b.get("text", "") for b in row["card"]["blocks"])


def _state(services, incident_id):
    with services.pool.connection() as conn:
        return incident_store.get(conn, incident_id)["state"]


def _timeline(services, incident_id):
    with services.pool.connection() as conn:
        return incident_store.timeline(conn, incident_id)


def test_people_move_the_incident_from_chat_and_refusals_are_explained(incident):
    services, iid = incident
    assert "State *DETECTED*" in _text(_say(services, "status"))

    answer = _say(services, "ack", name="alice")
    assert answer["op"] == "post" and answer["card"]["title"] == "Acknowledged by alice"
    refused = _say(services, "ack", user="U0BOB")
    assert refused["op"] == "ephemeral" and refused["recipient"] == "U0BOB"  # only the asker hears the refusal
    assert refused["card"]["title"] == "Already acknowledged"
    assert f"Incident #{iid} is already ACKNOWLEDGED; it can move to INVESTIGATING, MITIGATED, RESOLVED or " \
           "INCONCLUSIVE" in _text(refused)
    refused = _say(services, "learned")
    assert refused["op"] == "ephemeral" and f"Incident #{iid} is ACKNOWLEDGED; it can move to" in _text(refused)
    assert _state(services, iid) == "ACKNOWLEDGED"

    for text, state in [("investigating checking the DB pool", "INVESTIGATING"),
                        ("mitigated rolled back v2.14.0", "MITIGATED"),
                        ("investigating it came back", "INVESTIGATING"),    # MITIGATED -> INVESTIGATING
                        ("inconclusive no cause found yet", "INCONCLUSIVE"),
                        ("investigating found a lead", "INVESTIGATING")]:   # INCONCLUSIVE -> INVESTIGATING
        answer = _say(services, text, user="U0CAROL")
        assert answer["op"] == "post" and text.split(" ", 1)[1] in _text(answer), text
        assert _state(services, iid) == state
    refused = _say(services, "inconclusive")      # INVESTIGATING -> INCONCLUSIVE is allowed ...
    assert _state(services, iid) == "INCONCLUSIVE"
    refused = _say(services, "mitigated")         # ... INCONCLUSIVE -> MITIGATED is not
    assert refused["op"] == "ephemeral" and refused["card"]["title"] == "Not mitigated"
    assert f"Incident #{iid} is INCONCLUSIVE; it can move to INVESTIGATING or RESOLVED" in _text(refused)

    answer = _say(services, "resolve pool exhausted by v2.14.0", user="U0CAROL", name="carol")
    assert answer["card"]["title"] == "Resolved by carol" and _state(services, iid) == "RESOLVED"
    answer = _say(services, "learned postmortem reviewed on Monday", user="U0DAVE")
    assert answer["card"]["title"].startswith("Marked learned") and _state(services, iid) == "LEARNED"
    assert "No open incident" in _text(_say(services, "ack"))

    rows = _timeline(services, iid)
    assert [(t["from_state"], t["to_state"], t["actor"], t["note"]) for t in rows] == [
        (None, "DETECTED", "warroom", "opened"),
        ("DETECTED", "ACKNOWLEDGED", "U0ALICE", None),
        ("ACKNOWLEDGED", "INVESTIGATING", "U0CAROL", "checking the DB pool"),
        ("INVESTIGATING", "MITIGATED", "U0CAROL", "rolled back v2.14.0"),
        ("MITIGATED", "INVESTIGATING", "U0CAROL", "it came back"),
        ("INVESTIGATING", "INCONCLUSIVE", "U0CAROL", "no cause found yet"),
        ("INCONCLUSIVE", "INVESTIGATING", "U0CAROL", "found a lead"),
        ("INVESTIGATING", "INCONCLUSIVE", "U0ALICE", None),
        ("INCONCLUSIVE", "RESOLVED", "U0CAROL", "pool exhausted by v2.14.0"),
        ("RESOLVED", "LEARNED", "U0DAVE", "postmortem reviewed on Monday")]
    _assert_times_and_audit(services, iid, rows)
    with services.pool.connection() as conn:  # the learned incident is (re)indexed as a precedent
        assert conn.execute("SELECT count(*) AS n FROM documents WHERE source = %s",
                            (f"incident:{iid}",)).fetchone()["n"] == 1


def _assert_times_and_audit(services, iid, rows):
    """Times in order, and each move's audit entry (linked from the timeline) records the same who and what."""
    assert [t["at"] for t in rows] == sorted(t["at"] for t in rows)
    with services.pool.connection() as conn:
        entries = {r["id"]: r for r in conn.execute("SELECT * FROM audit_log WHERE subject = %s",
                                                     (f"incident:{iid}",))}
        assert audit.verify(conn).ok
    for t in rows:
        entry = entries[t["audit_id"]]
        action = "incident.opened" if t["from_state"] is None else f"incident.{t['to_state'].lower()}"
        assert (entry["action"], entry["actor"]) == (action, t["actor"])
        if t["from_state"] is not None:
            assert entry["detail"]["from"] == t["from_state"] and entry["detail"]["note"] == t["note"]


def _deliver(services, standin) -> None:
    deliver_to_slack(services.pool, standin)


def _step(services, key):
    with services.pool.connection() as conn:
        return conn.execute("SELECT * FROM plan_steps WHERE key = %s ORDER BY id", (key,)).fetchone()


def test_warroom_moves_the_incident_on_approval_and_after_a_state_change_on_a_real_worker(
        incident, db_url, redis_url, http_target):
    services, iid = incident
    alice = Actor(id="U0ALICE", platform="slack")
    check, restart = _step(services, "check-health"), _step(services, "restart")
    assert restart["risk"] == "state_change"

    assert decide(services, StepDecision(step_id=check["id"], approve=True, actor=alice)).ok
    assert _state(services, iid) == "INVESTIGATING"   # the first approval: someone is acting on it
    run_worker_burst(db_url, redis_url)
    assert _step(services, "check-health")["status"] == "succeeded"
    assert _state(services, iid) == "INVESTIGATING"   # a read-only step mitigates nothing

    assert decide(services, StepDecision(step_id=restart["id"], approve=True, actor=alice)).ok
    # a state change in production takes two approvers; the second approval moves nothing (already investigating)
    assert "running" in decide(services, StepDecision(step_id=restart["id"], approve=True,
                                                      actor=Actor(id="U0BOB", platform="slack"))).text
    run_worker_burst(db_url, redis_url)
    assert _step(services, "restart")["status"] == "succeeded" and "/health?restart=1" in http_target.hits
    assert _state(services, iid) == "MITIGATED"       # a state change worked, on the worker process

    status = _text(_say(services, "status"))
    assert "State *MITIGATED*" in status and "MITIGATED by warroom" in status
    _say(services, "resolve restart fixed it", user="U0CAROL")
    _say(services, "learned", user="U0CAROL")
    rows = _timeline(services, iid)
    assert [(t["from_state"], t["to_state"], t["actor"], t["note"]) for t in rows] == [
        (None, "DETECTED", "warroom", "opened"),
        ("DETECTED", "INVESTIGATING", "warroom", "step check-health approved by U0ALICE"),
        ("INVESTIGATING", "MITIGATED", "warroom", "state-changing step restart succeeded"),
        ("MITIGATED", "RESOLVED", "U0CAROL", "restart fixed it"),
        ("RESOLVED", "LEARNED", "U0CAROL", None)]
    _assert_times_and_audit(services, iid, rows)
    with services.pool.connection() as conn:
        auto = conn.execute("SELECT detail FROM audit_log WHERE action = 'incident.mitigated'").fetchone()
        draft = conn.execute("SELECT card FROM incident_postmortems WHERE incident_id = %s", (iid,)).fetchone()
    assert auto["detail"]["automatic"] is True and auto["detail"]["step_id"] == restart["id"]
    postmortem = "\n".join(b.get("text", "") for b in draft["card"]["blocks"])
    assert "INVESTIGATING by warroom" in postmortem and "MITIGATED by warroom" in postmortem


def test_a_diagnosis_asked_in_the_incident_thread_means_it_is_being_investigated(incident):
    services, iid = incident
    with SlackStandIn(rate_limit=False) as slack:
        _deliver(services, slack)  # the alert message exists in Slack: its ts is the incident thread
        with services.pool.connection() as conn:
            incident_row = incident_store.get(conn, iid)
            ts = conn.execute("SELECT message_id FROM chat_messages WHERE key = %s",
                              (incident_row["thread"],)).fetchone()["message_id"]
        _say(services, "diagnose payments-api 500s", user="U0BOB", platform="slack", thread="1700000000.000001")
        assert _state(services, iid) == "DETECTED"    # another thread of the channel: not this incident
        _say(services, "diagnose payments-api 500s", user="U0BOB", platform="slack", thread=ts)
    assert _state(services, iid) == "INVESTIGATING"
    last = _timeline(services, iid)[-1]
    assert (last["actor"], last["note"]) == ("warroom", "diagnosis asked in the incident thread by U0BOB")


# --- MTTA, MTTR and open incidents on /metrics -----------------------------------------------------------------


def _backdate(services, iid, seconds):
    """As if the alert had fired `seconds` ago (the incident and its DETECTED entry)."""
    with services.pool.connection() as conn, conn.transaction():
        conn.execute("UPDATE incidents SET created_at = created_at - make_interval(secs => %s) WHERE id = %s",
                     (seconds, iid))
        conn.execute("UPDATE incident_transitions SET at = at - make_interval(secs => %s) "
                     "WHERE incident_id = %s AND from_state IS NULL", (seconds, iid))


def _samples(text):
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_collector_reads_mtta_mttr_and_open_incidents_from_the_database(services):
    with services.pool.connection() as conn, conn.transaction():
        acked = _open(conn, thread="alert:1")
        fixed = _open(conn, thread="alert:2")
        minor = incident_store.open_incident(conn, title="disk", service="x", environment=None, severity="warning",
                                             alert_id=None, channel=ALERTS, thread="alert:3")
    _backdate(services, acked, 90)
    _backdate(services, fixed, 1000)
    _backdate(services, minor, 20)
    with services.pool.connection() as conn, conn.transaction():
        for iid, to in [(acked, "ACKNOWLEDGED"), (fixed, "ACKNOWLEDGED"), (fixed, "RESOLVED"),
                        (minor, "INVESTIGATING")]:
            assert incident_store.advance(conn, iid, from_=lifecycle.sources(to), to=to, actor="alice")
    metrics = Metrics()
    metrics.watch_incidents(services.pool)
    metrics.watch_incidents(services.pool)   # registering twice must not double the series
    s = _samples(generate_latest(metrics.registry).decode())
    crit = ("severity", "critical")
    assert s[("warroom_incident_mtta_seconds_count", (crit,))] == 2
    assert 1090 <= s[("warroom_incident_mtta_seconds_sum", (crit,))] < 1100     # 90 s + 1000 s
    assert s[("warroom_incident_mtta_seconds_bucket", (("le", "60.0"), crit))] == 0
    assert s[("warroom_incident_mtta_seconds_bucket", (("le", "120.0"), crit))] == 1
    assert s[("warroom_incident_mtta_seconds_bucket", (("le", "1800.0"), crit))] == 2
    assert s[("warroom_incident_mtta_seconds_bucket", (("le", "+Inf"), crit))] == 2
    assert s[("warroom_incident_mttr_seconds_count", (crit,))] == 1
    assert s[("warroom_incident_mttr_seconds_bucket", (("le", "900.0"), crit))] == 0
    assert s[("warroom_incident_mttr_seconds_bucket", (("le", "1800.0"), crit))] == 1
    assert ("warroom_incident_mtta_seconds_count", (("severity", "warning"),)) not in s  # never acknowledged
    assert s[("warroom_incidents_open", (("state", "ACKNOWLEDGED"),))] == 1
    assert s[("warroom_incidents_open", (("state", "INVESTIGATING"),))] == 1
    assert s[("warroom_incidents_open", (("state", "DETECTED"),))] == 0             # zeros are exported too
    assert ("warroom_incidents_open", (("state", "RESOLVED"),)) not in s            # closed is not open


def test_serve_exports_mtta_and_mttr_after_an_incident_is_acked_and_resolved(services, db_url, tmp_path):
    """A real `warroom serve` on the test's database: the moves happen in this process (as they would in a
    replica or a worker), and serve's /metrics shows them, because the collector reads the database."""
    served = Served(tmp_path / "data", DATABASE_URL=db_url)
    try:
        before = _samples(served.get("/metrics")[1].decode())
        assert ("warroom_incident_mtta_seconds_count", (("severity", "critical"),)) not in before
        assert before[("warroom_incidents_open", (("state", "DETECTED"),))] == 0
        with services.pool.connection() as conn, conn.transaction():
            iid = _open(conn)
        _backdate(services, iid, 90)
        assert _samples(served.get("/metrics")[1].decode())[("warroom_incidents_open", (("state", "DETECTED"),))] == 1
        _say(services, "ack")
        _say(services, "resolve fixed")
        status, body = served.get("/metrics")
    finally:
        assert served.stop() == 0
    assert status == 200
    s = _samples(body.decode())
    crit = ("severity", "critical")
    assert s[("warroom_incident_mtta_seconds_count", (crit,))] == 1
    assert s[("warroom_incident_mtta_seconds_bucket", (("le", "60.0"), crit))] == 0
    assert s[("warroom_incident_mtta_seconds_bucket", (("le", "120.0"), crit))] == 1
    assert s[("warroom_incident_mttr_seconds_count", (crit,))] == 1
    assert 90 <= s[("warroom_incident_mttr_seconds_sum", (crit,))] < 300
    assert s[("warroom_incidents_open", (("state", "DETECTED"),))] == 0
    assert s[("warroom_incidents_open", (("state", "ACKNOWLEDGED"),))] == 0
