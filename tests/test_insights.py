"""Candidate automations: a history built through the real alert path, approvals, a real worker and chat
resolves -> `/warroom insights` ranks the recurring cluster first with its counts, time and the manual step it
repeated, groups look-alike incidents by their embeddings, says when a runbook covers a cluster, and offers a
runbook draft (the normal learn review) for one nothing covers; the weekly digest goes out once per week however
many replicas ask, and not before its hour."""
import json
import threading
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from bot.slack.blocks import render as render_slack
from bot.teams.cards import render as render_teams
from engine import insights
from engine.alerts import normalise
from engine.cards import Card
from engine.config import DigestConfig, WarroomConfig
from engine.knowledge import ingest
from engine.models import Actor, ChatMessage, StepDecision
from handlers.alert import annotate_alert, receive
from handlers.approval import decide
from handlers.command import handle_message
from handlers.insights import post_digest_if_due
from handlers.learn import Where, click
from storage import alerts as alert_store
from storage import runbooks as runbook_store
from tests.conftest import EXAMPLES, make_services, run_worker_burst, runbook_yaml
from tests.slack_standin import block_kit_violations
from tests.teams_standin import card_violations

ALERTS = "C0ALERTS"
ALICE, BOB = Actor(id="U0ALICE", platform="shell"), Actor(id="U0BOB", platform="shell")
CONFIG = {"slack": {"alert_channel": ALERTS},
          "policy": {"approvers": ["U0ALICE", "U0BOB"], "auto_run_read_only": False},
          # the same alert firing again and again is what this test is about, not noise
          "alerts": {"noise": {"flap_firings": 1000, "threshold": 1.0}},
          "insights": {"min_incidents": 2, "digest": {"channel": "C0DIGEST", "conversation": "19:digest@thread",
                                                      "weekday": "monday", "hour_utc": 9}}}


def _query(services, sql, *args):
    with services.pool.connection() as conn:
        return conn.execute(sql, args).fetchall()


def _say(services, text, user="U0CAROL"):
    handle_message(services, ChatMessage(platform="shell", channel=ALERTS, text=text,
                                         user=Actor(id=user, name=user.lower(), platform="shell")))
    return _query(services, "SELECT * FROM outbox ORDER BY id DESC LIMIT 1")[0]


def _notification(name, service, summary, n, status="firing"):
    payload = json.loads((EXAMPLES / "alerts/payments-high-error-rate-firing.json").read_text())
    payload["status"] = status
    payload["groupKey"] = f'{{}}:{{alertname="{name}"}}'
    for labels in [payload["commonLabels"], payload["groupLabels"], *(a["labels"] for a in payload["alerts"])]:
        labels["alertname"] = name
        if "service" in labels or labels is payload["commonLabels"]:
            labels["service"] = service
    for alert in payload["alerts"]:
        alert.pop("fingerprint", None)   # computed from the labels: one alert's identity across its firings
        alert["status"] = status
        alert["annotations"]["summary"] = summary
        alert["startsAt"] = f"2026-11-{n:02d}T08:00:00Z"   # each firing its own alert state
        if status == "resolved":
            alert["endsAt"] = f"2026-11-{n:02d}T09:00:00Z"
    return normalise(payload, "alertmanager")


def _incident(services, db_url, redis_url, name, service, summary, n, *, minutes, cause, restart=False):
    """An alert fires and opens an incident; optionally its restart is approved by two people and run by a real
    worker; it is resolved from chat `minutes` after detection, and the alert resolves."""
    [alert_id] = receive(services, _notification(name, service, summary, n))
    with services.pool.connection() as conn:
        assert annotate_alert(services, alert_store.get_alert(conn, alert_id))
    [incident] = _query(services, "SELECT id FROM incidents WHERE alert_id = %s", alert_id)
    if restart:
        [step] = _query(services, "SELECT s.id FROM plan_steps s JOIN plans p ON p.id = s.plan_id "
                                  "WHERE p.alert_id = %s AND s.key = 'restart'", alert_id)
        assert decide(services, StepDecision(step_id=step["id"], approve=True, actor=ALICE)).ok
        assert decide(services, StepDecision(step_id=step["id"], approve=True, actor=BOB)).ok
        run_worker_burst(db_url, redis_url)
        assert _query(services, "SELECT status FROM plan_steps WHERE id = %s", step["id"])[0]["status"] == "succeeded"
    _say(services, f"resolve {cause}")
    assert _query(services, "SELECT state FROM incidents WHERE id = %s", incident["id"])[0]["state"] == "RESOLVED"
    # As if detected `minutes` before the resolve: the incident and its first timeline entry.
    with services.pool.connection() as conn, conn.transaction():
        conn.execute("""UPDATE incidents i SET created_at = t.at - make_interval(mins => %s)
                        FROM incident_transitions t WHERE i.id = %s AND t.incident_id = i.id
                          AND t.to_state = 'RESOLVED'""", (minutes, incident["id"]))
        conn.execute("""UPDATE incident_transitions SET at = (SELECT created_at FROM incidents WHERE id = %s)
                        WHERE incident_id = %s AND from_state IS NULL""", (incident["id"], incident["id"]))
    [resolved] = receive(services, _notification(name, service, summary, n, status="resolved"))
    with services.pool.connection() as conn:
        annotate_alert(services, alert_store.get_alert(conn, resolved))   # closes the alert group
    return incident["id"]


@pytest.fixture
def history(pool, embedder, redis_url, db_url, tmp_path, http_target):
    services = make_services(pool, embedder, WarroomConfig.model_validate(CONFIG), redis_url)
    (tmp_path / "rb").mkdir()
    (tmp_path / "rb/rb.yaml").write_text(runbook_yaml(f"http://127.0.0.1:{http_target.server_port}/health"))
    ingest(services.pool, services.embedder, [tmp_path / "rb"])
    payments = "payments-api 5xx error rate above 5% (currently 12.4%)"
    ids = {"payments": [], "checkout": [], "disk": [], "one_off": []}
    for n in range(1, 5):   # the recurring one: 45 minutes each, the same restart approved and run every time
        ids["payments"].append(_incident(services, db_url, redis_url, "PaymentsHighErrorRate", "payments-api",
                                         payments, n, minutes=45, cause="restart cleared the stuck pool",
                                         restart=True))
    ids["one_off"].append(_incident(services, db_url, redis_url, "TLSCertificateExpiring", "edge",
                                    "TLS certificate for api.example.com expires in 3 days", 10, minutes=300,
                                    cause="renewed the certificate"))
    for n in (11, 12):      # a smaller recurring cluster, no manual steps
        ids["checkout"].append(_incident(services, db_url, redis_url, "CheckoutLatencyHigh", "checkout",
                                         "checkout p99 latency above 2s", n, minutes=20,
                                         cause="scaled checkout up"))
    # two different alerts (different fingerprints and names) about the same thing: only embeddings join them
    ids["disk"].append(_incident(services, db_url, redis_url, "OrdersDbDiskFull", "orders-db",
                                 "Disk almost full on orders-db primary volume", 13, minutes=30,
                                 cause="cleaned the WAL archive"))
    ids["disk"].append(_incident(services, db_url, redis_url, "OrdersDbVolumeAlmostFull", "orders-db",
                                 "orders-db primary disk space nearly exhausted", 14, minutes=30,
                                 cause="cleaned the WAL archive again"))
    return services, ids


def _card(row) -> Card:
    return Card.model_validate(row["card"])


def _valid_everywhere(card: Card) -> None:
    _, blocks = render_slack(card)
    assert block_kit_violations(blocks) == []
    assert card_violations(render_teams(card)) == []


def test_insights_rank_the_recurring_cluster_first_and_offer_a_draft_nothing_covers(history):
    services, ids = history
    answer = _say(services, "/warroom insights")
    assert answer["op"] == "post" and answer["channel"] == ALERTS   # answered in the channel, for everyone
    card = _card(answer)
    assert card.kind == "insights" and card.title.startswith("Insights: recurring incidents, last 30 days")
    _valid_everywhere(card)

    found = insights_now(services)
    assert [c.incident_ids for c in found] == [ids["payments"], ids["disk"], ids["checkout"]]   # no one-off
    top = found[0]
    assert top.label == "PaymentsHighErrorRate · payments-api"
    assert top.total_hours == pytest.approx(3.0, abs=0.01) and top.median_hours == pytest.approx(0.75, abs=0.01)
    assert top.repeated_steps == [insights.RepeatedStep(title="Restart payments-api", connector="http",
                                                        incidents=4, runs=4)]
    assert top.runbook == "payments-high-error-rate" and "covers it" in top.action
    assert found[1].label.startswith("OrdersDb") and found[1].repeated_steps == []
    assert found[1].runbook is None and found[2].runbook is None

    text = "\n".join(b.text for b in card.blocks if b.type == "text")
    assert "*1. PaymentsHighErrorRate · payments-api* — 4 incidents, 3.0 h in incident (median 45 min" in text
    assert "Repeated by hand: Restart payments-api (http) ×4 in 4 incidents" in text
    assert "Incidents: " + ", ".join(f"#{i}" for i in ids["payments"]) in text
    assert "Runbook: `payments-high-error-rate` covers it" in text
    # nothing covers the others, but none of their incidents ran a step to learn from: no button, and why
    assert [b for b in card.blocks if b.type == "learn"] == []
    assert "no resolved incident of it ran a step" in found[1].action
    refused = _say(services, f"insights draft {ids['checkout'][1]}")
    assert refused["op"] == "ephemeral" and "ran no step successfully" in _card(refused).blocks[0].text
    assert _query(services, "SELECT * FROM runbook_drafts") == []

    # once the runbook is retired, the recurring cluster is offered a draft from its latest resolved incident
    with services.pool.connection() as conn, conn.transaction():
        [rb] = runbook_store.active_runbooks(conn)
        runbook_store.deactivate_for_document(conn, rb["document_id"])
    card = _card(_say(services, "insights"))
    _valid_everywhere(card)
    [button] = [b for b in card.blocks if b.type == "learn"]
    assert (button.incident_id, button.actions) == (ids["payments"][-1], ["draft"])
    assert "Runbook: none covers it" in card.blocks[1].text
    assert f"`/warroom insights draft {ids['payments'][-1]}`" in card.blocks[1].text

    # the button is the postmortem card's learn button: a runbook draft for review, never a runbook
    reply, public = click(services, ALICE, action="draft", incident_id=button.incident_id, draft_id=None,
                          where=Where(platform="shell", channel=ALERTS))
    assert public and "is waiting for review" in reply.blocks[0].text
    [draft] = _query(services, "SELECT * FROM runbook_drafts")
    assert (draft["incident_id"], draft["status"]) == (ids["payments"][-1], "proposed")
    assert "restart" in draft["yaml"] and runbook_store.active_runbooks(services.pool.connection().__enter__()) == []
    # and so is the command the card proposes
    answer = _say(services, f"insights draft {ids['payments'][-2]}")
    assert answer["op"] == "post" and f"from incident #{ids['payments'][-2]}" in _card(answer).blocks[0].text
    assert len(_query(services, "SELECT * FROM runbook_drafts WHERE status = 'proposed'")) == 2
    missing = _say(services, "insights draft 99999")
    assert missing["op"] == "ephemeral" and "no incident here to learn from" in _card(missing).blocks[0].text


def insights_now(services):
    from handlers.insights import clusters

    return clusters(services, datetime.now(timezone.utc))


def test_bad_insights_commands_get_one_line_and_help_lists_it(history):
    services, _ = history
    answer = _say(services, "insights sideways")
    assert answer["op"] == "ephemeral" and "Not understood: `insights` ranks recurring incidents" in \
        _card(answer).blocks[0].text
    help_text = _card(_say(services, "help")).blocks[0].text
    assert "insights draft N" in help_text


# --- the weekly digest -------------------------------------------------------------------------------------

MONDAY_0859 = datetime(2026, 11, 23, 8, 59, tzinfo=timezone.utc)   # ISO week 2026-W48


def _digests(services):
    return _query(services, "SELECT platform, channel, card FROM outbox WHERE card->>'kind' = 'insights' "
                            "ORDER BY id")


def test_the_weekly_digest_is_posted_once_per_week_by_one_of_many_replicas(pool, embedder, redis_url):
    services = make_services(pool, embedder, WarroomConfig.model_validate(CONFIG), redis_url)
    assert post_digest_if_due(services, MONDAY_0859) is False   # not before its hour
    assert _digests(services) == []

    due = MONDAY_0859 + timedelta(minutes=6)
    barrier, results = threading.Barrier(2), []

    def replica():
        barrier.wait()
        results.append(post_digest_if_due(services, due))

    threads = [threading.Thread(target=replica) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, True]
    assert post_digest_if_due(services, due) is False               # a third replica, a little later
    assert post_digest_if_due(services, due + timedelta(days=3)) is False   # later the same week
    rows = _digests(services)
    assert [(r["platform"], r["channel"]) for r in rows] == [("slack", "C0DIGEST"), ("teams", "19:digest@thread")]
    assert rows[0]["card"]["title"].startswith("Weekly insights")
    _valid_everywhere(Card.model_validate(rows[0]["card"]))
    assert [r["week"] for r in _query(services, "SELECT week FROM insight_digests")] == ["2026-W48"]

    assert post_digest_if_due(services, due + timedelta(days=7)) is True   # next Monday: next week's digest
    assert len(_digests(services)) == 4


def test_no_digest_without_a_destination(pool, embedder, redis_url):
    config = WarroomConfig.model_validate({**CONFIG, "insights": {"digest": {"weekday": "monday"}}})
    services = make_services(pool, embedder, config, redis_url)
    assert post_digest_if_due(services, MONDAY_0859 + timedelta(hours=1)) is False
    assert _digests(services) == [] and _query(services, "SELECT * FROM insight_digests") == []


# --- the pure parts ------------------------------------------------------------------------------------------


def test_digest_due_on_its_weekday_and_hour_once_a_week():
    cfg = DigestConfig(channel="C1", weekday="wed", hour_utc=14)
    wednesday = datetime(2026, 11, 25, 14, 0, tzinfo=timezone.utc)
    assert cfg.weekday == "wednesday"
    assert not insights.digest_due(wednesday - timedelta(minutes=1), cfg, None)
    assert insights.digest_due(wednesday, cfg, None)
    assert insights.digest_due(wednesday + timedelta(days=2), cfg, "2026-W47")   # a replica down at 14:00
    assert not insights.digest_due(wednesday + timedelta(days=2), cfg, "2026-W48")
    assert not insights.digest_due(datetime(2026, 11, 30, 9, tzinfo=timezone.utc), cfg, "2026-W48")  # next Mon
    assert insights.iso_week(datetime(2027, 1, 1, tzinfo=timezone.utc)) == "2026-W53"


def test_bad_digest_weekday_is_one_clear_error():
    with pytest.raises(ValueError, match="must be a day of the week"):
        WarroomConfig.model_validate({"insights": {"digest": {"weekday": "someday"}}})


def _record(i, *, alerts=(), steps=(), minutes=30, service="svc"):
    start = datetime(2026, 11, 1, tzinfo=timezone.utc) + timedelta(days=i)
    return insights.IncidentRecord(id=i, title=f"incident {i}", service=service, state="RESOLVED",
                                   detected_at=start, resolved_at=start + timedelta(minutes=minutes),
                                   alerts=tuple(alerts), manual_steps=tuple(steps))


def test_clusters_are_single_link_and_deterministic():
    a = ("fp-a", "A", "svc")
    b = ("fp-b", "B", "svc")
    records = [_record(5, alerts=[b]), _record(1, alerts=[a]), _record(3, alerts=[a, b]), _record(9),
               _record(7, alerts=[("fp-c", "C", "other")])]
    vectors = {9: np.array([1.0, 0.0]), 7: np.array([0.96, 0.28]), 1: np.array([0.0, 1.0])}
    groups = insights.cluster_incidents(records, vectors, similarity=0.8)
    # 1-3 share A, 3-5 share B (chained); 7 and 9 only by embedding
    assert [[r.id for r in g] for g in groups] == [[1, 3, 5], [7, 9]]
    assert insights.cluster_incidents(list(reversed(records)), vectors, similarity=0.8) == groups
    assert len(insights.cluster_incidents(records, vectors, similarity=0.99)) == 3


def test_toil_ranks_a_cluster_with_repeated_manual_steps_above_an_equally_long_one():
    restart = ("Restart api", "kubernetes")
    toil = [_record(1, alerts=[("f1", "X", "svc")], steps=[restart]),
            _record(2, alerts=[("f1", "X", "svc")], steps=[restart, ("Look once", "http")])]
    quiet = [_record(3, alerts=[("f2", "Y", "svc2")]), _record(4, alerts=[("f2", "Y", "svc2")])]
    lone = [_record(5, alerts=[("f3", "Z", "z")], minutes=600)]
    toil = [toil[0], insights.IncidentRecord(**{**toil[1].__dict__, "succeeded_steps": 2})]
    ranked = insights.rank([*quiet, *toil, *lone], {}, runbooks=[{"runbook_id": "y-book", "alerts": ["Y"],
                                                                   "services": []}],
                           similarity=0.8, min_incidents=2, now=datetime(2026, 12, 1, tzinfo=timezone.utc))
    assert [c.incident_ids for c in ranked] == [[1, 2], [3, 4]]
    assert ranked[0].repeated_steps == [insights.RepeatedStep("Restart api", "kubernetes", 2, 2)]
    assert ranked[0].cost_hours == pytest.approx(1.0 + 2 * insights.STEP_TOIL_HOURS)
    assert ranked[1].runbook == "y-book" and ranked[0].runbook is None and ranked[0].latest_resolved == 2
