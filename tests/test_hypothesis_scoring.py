"""The five scoring factors, one behaviour at a time: what moves each of them and what must not."""
from datetime import datetime, timedelta, timezone

from engine.cards import factor_breakdown
from engine.context import Context
from engine.hypotheses import SHOW_ABOVE, WEIGHTS, rank, score
from engine.llm import Candidate
from engine.llm.offline import OfflineProvider
from engine.models import Actor, Alert, Change, Evidence, Link
from handlers.annotate import annotate
from handlers.feedback import record_feedback
from storage import alerts as alert_store

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=timezone.utc)


def _alert(**extra) -> Alert:
    fields = {"source": "alertmanager", "fingerprint": "f1", "status": "firing", "name": "PaymentsHighErrorRate",
              "severity": "critical", "service": "payments-api", "summary": "payments-api 5xx above 5%",
              "starts_at": NOW, "links": [Link(title="Source", url="http://prometheus/graph")], **extra}
    return Alert(**fields)


def _context(alert: Alert | None = None, **fields) -> Context:
    alert = alert or _alert()
    return Context(alert=alert, question=None, service=alert.service, environment=None, now=NOW, **fields)


def _deploy(service: str, minutes_before: float, version: str = "v1") -> Change:
    return Change(service=service, kind="deploy", summary=f"Deploy {service} {version}", version=version,
                  author="ci", at=NOW - timedelta(minutes=minutes_before))


def _by_service(candidates: list[Candidate]) -> dict[str, Candidate]:
    return {c.title.split(" of ")[1].split()[0]: c for c in candidates if c.title.startswith("Recent")}


def test_a_deploy_elsewhere_is_no_evidence_unless_the_alert_names_that_service():
    context = _context(changes=[_deploy("payments-api", 10)], nearby_changes=[_deploy("search-api", 5)])
    assert set(_by_service(OfflineProvider().hypotheses(context))) == {"payments-api"}

    named = _alert(description="payments-api is slow because search-api times out")
    context = _context(named, changes=[_deploy("payments-api", 10)], nearby_changes=[_deploy("search-api", 10)])
    proposed = _by_service(OfflineProvider().hypotheses(context))
    own, other = score(proposed["payments-api"], context), score(proposed["search-api"], context)
    assert own.confidence > other.confidence > SHOW_ABOVE
    assert own.factors["signal_strength"] > other.factors["signal_strength"]
    assert own.factors["temporal_correlation"] == other.factors["temporal_correlation"] == 1.0


def test_time_before_the_onset_decides_temporal_correlation():
    context = _context()

    def temporal(minutes_before: float) -> float:
        change = Evidence(kind="change", text="deploy", source="ci", match="service",
                          at=NOW - timedelta(minutes=minutes_before))
        return score(Candidate(title="c", cause="", evidence=[change]), context).factors["temporal_correlation"]

    assert temporal(10) == 1.0
    assert 0.9 > temporal(60) > temporal(5 * 60) > temporal(20 * 60)
    assert temporal(20 * 60) < 0.01
    assert temporal(-2) < 0.5        # within clock slack after the onset: possible, unlikely
    assert temporal(-10) == 0.0      # a change after the alert started did not cause it


def test_related_alerts_back_the_candidate_they_fit_not_every_candidate():
    related = [{"id": 7, "name": "PaymentsDBPoolSaturated", "status": "firing", "severity": "warning",
                "service": "payments-api", "received_at": NOW,
                "payload": {"summary": "payments-api database connection pool at 100%",
                            "starts_at": (NOW - timedelta(minutes=4)).isoformat()}}]
    deploy = _deploy("payments-api", 30)
    context = _context(changes=[deploy], related_alerts=related)
    citation_text = "Database connection pool exhausted: the connection pool is at its limit, requests queue."
    from engine.models import Citation

    context.citations = [Citation(document_id=1, chunk_id=1, title="Database connection pool exhausted",
                                  source="/kb/db-pool.md", score=0.03, text=citation_text),
                         Citation(document_id=2, chunk_id=2, title="Redis memory pressure", source="/kb/redis.md",
                                  score=0.02, text="Redis evicts keys near maxmemory.")]
    hypotheses = {c.title: score(c, context) for c in OfflineProvider().hypotheses(context)}
    pool, redis = hypotheses["Database connection pool exhausted"], hypotheses["Redis memory pressure"]
    assert any(e.kind == "related_alert" for e in pool.evidence)
    assert not any(e.kind == "related_alert" for e in redis.evidence)
    assert pool.factors["temporal_correlation"] > redis.factors["temporal_correlation"] == 0.0
    # the pool alert started after the deploy, so it counts for the deploy too
    assert any(e.kind == "related_alert" for e in hypotheses["Recent deploy of payments-api v1"].evidence)


def test_text_similarity_alone_never_makes_a_shown_hypothesis():
    context = _context(similarity={"/kb/doc.md": 0.95})
    text_only = Candidate(title="Doc", cause="", evidence=[
        Evidence(kind="runbook", text="documentation matches", source="/kb/doc.md", match="text"),
        Evidence(kind="alert", text="PaymentsHighErrorRate", source="http://prometheus/graph", match="alert_name")])
    hypothesis = score(text_only, context)
    assert hypothesis.confidence < SHOW_ABOVE
    assert rank([text_only], context)[0] == []


def test_confidence_of_085_needs_past_incidents_on_top_of_a_fitting_change():
    runbook = Evidence(kind="runbook", text="lists a deploy among the usual causes", source="runbook:pay v1",
                       match="alert_name")
    change = Evidence(kind="change", text="deploy payments-api v2", source="ci", match="service",
                      at=NOW - timedelta(minutes=5))
    best_without = score(Candidate(title="deploy", cause="", evidence=[change, runbook]), _context())
    assert 0.6 < best_without.confidence < 0.85
    precedents = [Evidence(kind="precedent", text=f"incident {i}", source=f"incident:{i}") for i in range(3)]
    with_history = score(Candidate(title="deploy", cause="", evidence=[change, runbook, *precedents]), _context())
    assert with_history.confidence >= 0.85
    assert with_history.factors["precedent_frequency"] > 0.8


def test_the_card_shows_how_the_factors_add_up():
    hypothesis = score(Candidate(title="t", cause="", evidence=[
        Evidence(kind="change", text="deploy", source="ci", match="service", at=NOW)]), _context())
    text = factor_breakdown(hypothesis)
    for name, weight in WEIGHTS.items():
        assert f"{name.replace('_', ' ')} {hypothesis.factors[name]:.2f}×{weight:.2f}" in text
    assert text.endswith(f"= {hypothesis.confidence:.2f}")


def test_thumbs_up_raises_validation_history_and_thumbs_down_lowers_it(services):
    with services.pool.connection() as conn, conn.transaction():
        alert_store.insert_change(conn, change={"service": "payments-api", "kind": "deploy", "version": "v9",
                                                "summary": "Deploy payments-api v9", "author": "ci",
                                                "at": datetime.now(timezone.utc) - timedelta(minutes=5)})
    question = "payments-api is returning 500s"

    def deploy_hypothesis():
        annotation, _ = annotate(services, question=question, service="payments-api")
        return next(h for h in annotation.hypotheses if "v9" in h.title)

    before = deploy_hypothesis()
    assert before.factors["validation_history"] == 0.5
    for voter in ("U1", "U2"):
        record_feedback(services, actor=Actor(id=voter), title=before.title, service="payments-api", helpful=True)
    liked = deploy_hypothesis()
    assert liked.factors["validation_history"] == 0.75 and liked.confidence > before.confidence
    for voter in ("U3", "U4", "U5", "U6"):
        record_feedback(services, actor=Actor(id=voter), title=before.title, service="payments-api", helpful=False)
    disliked = deploy_hypothesis()
    assert disliked.factors["validation_history"] < 0.5 and disliked.confidence < before.confidence
