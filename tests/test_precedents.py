"""Past incidents as knowledge: a resolved incident is indexed with its provenance, found by retrieval, and
a proposed cause that its resolution confirms is backed by `precedent` evidence in the scoring."""
import json
from datetime import datetime, timezone

import pytest

from engine.alerts import normalise
from engine.config import WarroomConfig
from engine.knowledge import search
from engine.models import Actor, ChatMessage
from handlers.alert import annotate_alert, receive
from handlers.annotate import annotate
from handlers.command import handle_message
from storage import alerts as alert_store
from tests.conftest import EXAMPLES, make_services

CHANNEL = "C0ALERTS"


@pytest.fixture
def services(pool, embedder, redis_url):
    config = WarroomConfig.model_validate({"slack": {"alert_channel": CHANNEL}})
    return make_services(pool, embedder, config, redis_url)


def _fire(services, name: str) -> int:
    payload = json.loads((EXAMPLES / "alerts/payments-high-error-rate-firing.json").read_text())
    for labels in [payload["commonLabels"], payload["groupLabels"], *(a["labels"] for a in payload["alerts"])]:
        labels["alertname"] = name
    for alert in payload["alerts"]:
        alert.pop("fingerprint", None)
    [alert_id] = receive(services, normalise(payload, "alertmanager"))
    with services.pool.connection() as conn:
        assert annotate_alert(services, alert_store.get_alert(conn, alert_id))
    return alert_id


def _deploy(services) -> None:
    with services.pool.connection() as conn, conn.transaction():
        alert_store.insert_change(conn, change={
            "service": "payments-api", "kind": "deploy", "summary": "payments-api v2.14.0 rolled out",
            "version": "v2.14.0", "author": "ci", "at": datetime.now(timezone.utc)}, workspace="default")


def test_a_resolved_incident_becomes_a_precedent_that_backs_the_same_cause(services):
    _deploy(services)
    _fire(services, "PaymentsHighErrorRate")
    with services.pool.connection() as conn:
        [(incident_id,)] = [tuple(r.values()) for r in conn.execute("SELECT id FROM incidents").fetchall()]
    before, _ = annotate(services, question="payments-api is returning 500s after the deploy",
                         service="payments-api")
    assert all(e.kind != "precedent" for h in before.hypotheses for e in h.evidence)

    handle_message(services, ChatMessage(platform="slack", channel=CHANNEL, user=Actor(id="U0ALICE"),
                                         text="resolve the v2.14.0 deploy of payments-api was bad; rolled it back"))

    with services.pool.connection() as conn:
        doc = conn.execute("SELECT * FROM documents WHERE source = %s", (f"incident:{incident_id}",)).fetchone()
    assert doc is not None and doc["source_type"] == "incident"
    assert "rolled it back" in doc["metadata"]["resolution"]
    found = search(services.pool, services.embedder, "payments 5xx errors after a release", source_types=["incident"])
    assert [c.source for c in found] == [f"incident:{incident_id}"]

    after, _ = annotate(services, question="payments-api is returning 500s after the deploy", service="payments-api")
    deploy = next(h for h in after.hypotheses if h.title.startswith("Recent deploy"))
    precedent = [e for e in deploy.evidence if e.kind == "precedent"]
    assert precedent and precedent[0].source == f"incident:{incident_id}"
    assert deploy.factors["precedent_frequency"] > 0
    old = next(h for h in before.hypotheses if h.title == deploy.title)
    assert deploy.confidence > old.confidence


def test_resolving_again_replaces_the_precedent_rather_than_duplicating_it(services):
    _fire(services, "CheckoutLatencyHigh")
    handle_message(services, ChatMessage(platform="slack", channel=CHANNEL, user=Actor(id="U0BOB"),
                                         text="resolve database pool exhausted; raised max connections"))
    from handlers.incident import index_incident

    with services.pool.connection() as conn:
        incident_id = conn.execute("SELECT id FROM incidents").fetchone()["id"]
    index_incident(services, incident_id)
    with services.pool.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM documents WHERE source_type = 'incident'").fetchone()["n"] == 1
