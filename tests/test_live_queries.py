"""Live read-only queries during context assembly, driven through the real annotation pipeline.

A stand-in of the Prometheus HTTP API (`GET /api/v1/query`, the real JSON envelope) runs on loopback and can be
scripted per expression: answer, delay, or fail. What is proven: the alert's own expression (from Alertmanager's
generatorURL) and the configured per-service templates are asked of the *configured* Prometheus, and their values
reach the card with a graph link; a slow Prometheus is cut off at the budget and the annotation still arrives;
errors are notes, never failures; the values enter the model prompt as quoted, redacted data and leave the scores
alone; a target that carries credentials is refused when the config is loaded."""
from __future__ import annotations

import json
import select
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote_plus, urlsplit

import pytest
from pydantic import ValidationError

from engine import live
from engine.alerts import normalise
from engine.config import ConfigError, WarroomConfig, load_config
from engine.context import Context
from engine.hypotheses import score
from engine.knowledge import ingest
from engine.llm import Candidate
from engine.llm.prompting import hypotheses_prompt
from engine.models import Alert, Evidence, Link
from handlers.alert import annotate_alert, receive
from handlers.annotate import annotate
from storage import alerts as alert_store
from tests.conftest import EXAMPLES, make_services
from tests.http_helpers import send_json

CHANNEL = "C0ALERTS"
PAYLOAD = EXAMPLES / "alerts/payments-high-error-rate-firing.json"
GENERATOR_URL = json.loads(PAYLOAD.read_text())["alerts"][0]["generatorURL"]
ALERT_EXPR = parse_qs(urlsplit(GENERATOR_URL).query)["g0.expr"][0]
TEMPLATE = 'sum by (instance) (rate(http_requests_total{service="{service}",code=~"5.."}[5m]))'
TEMPLATE_EXPR = TEMPLATE.replace("{service}", "payments-api")


# --- a Prometheus HTTP API stand-in -------------------------------------------------------------------------------

def vector(*series: tuple[dict, str], at: float | None = None) -> dict:
    at = time.time() if at is None else at
    return {"status": "success", "data": {"resultType": "vector",
                                          "result": [{"metric": m, "value": [at, v]} for m, v in series]}}


class PrometheusStandIn:
    """`GET /api/v1/query` answered from a script keyed by expression: `{"body": …, "status": 200,
    "delay": seconds, "raw": bytes}`. Unknown expressions get an empty vector. Records every query's parameters
    and which requests the client abandoned while the answer was delayed."""

    def __init__(self) -> None:
        self.script: dict[str, dict] = {}
        self.queries: list[dict[str, str]] = []
        self.cut_off: list[str] = []
        self.cut_off_event = threading.Event()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                parts = urlsplit(self.path)
                params = {k: v[0] for k, v in parse_qs(parts.query).items()}
                standin.queries.append({"path": parts.path, **params})
                if parts.path != "/api/v1/query" or "query" not in params:
                    return self._send(400, {"status": "error", "errorType": "bad_data", "error": "no query"})
                plan = standin.script.get(params["query"], {"body": vector()})
                if plan.get("delay") and not self._wait(plan["delay"]):
                    standin.cut_off.append(params["query"])
                    standin.cut_off_event.set()
                    return
                if "raw" in plan:
                    return self._send(plan.get("status", 200), plan["raw"])
                self._send(plan.get("status", 200), plan["body"])

            def _wait(self, seconds: float) -> bool:
                """Sleep, but notice the client hanging up: False when it did."""
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline:
                    readable, _, _ = select.select([self.connection], [], [], 0.05)
                    if readable:
                        try:
                            if self.connection.recv(1, socket.MSG_PEEK) == b"":
                                return False
                        except OSError:
                            return False
                return True

            def _send(self, status: int, body) -> None:
                send_json(self, status, body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "PrometheusStandIn":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def asked(self) -> list[str]:
        return [q["query"] for q in self.queries if "query" in q]


@pytest.fixture
def prometheus():
    with PrometheusStandIn() as api:
        yield api


def live_config(url: str, **context) -> WarroomConfig:
    return WarroomConfig.model_validate({
        "slack": {"alert_channel": CHANNEL},
        "targets": {"prom": {"connector": "prometheus", "url": url}},
        "context": {"prometheus": "prom", **context}})


@pytest.fixture
def knowledge(pool, embedder):
    """A runbook and a deploy, so the offline provider has candidates to carry the live evidence."""
    ingest(pool, embedder, [EXAMPLES / "runbooks" / "payments-high-error-rate.yaml"])
    with pool.connection() as conn, conn.transaction():
        alert_store.insert_change(conn, change={
            "service": "payments-api", "kind": "deploy", "summary": "payments-api v2.14.0 rolled out",
            "version": "v2.14.0", "author": "ci", "at": datetime.now(timezone.utc) - timedelta(minutes=8)},
            workspace="default")


def fire(services) -> float:
    """An Alertmanager webhook, stored and annotated as a real delivery would be; seconds the annotation took."""
    payload = json.loads(PAYLOAD.read_text())
    started_at = (datetime.now(timezone.utc) - timedelta(minutes=2)).isoformat().replace("+00:00", "Z")
    for alert in payload["alerts"]:
        alert.pop("fingerprint", None)
        alert["startsAt"] = started_at
    [alert_id] = receive(services, normalise(payload, "alertmanager"))
    started = time.monotonic()
    with services.pool.connection() as conn:
        assert annotate_alert(services, alert_store.get_alert(conn, alert_id))
    return time.monotonic() - started


def thread_card(services) -> dict:
    with services.pool.connection() as conn:
        rows = conn.execute("SELECT card FROM outbox WHERE thread_key IS NOT NULL ORDER BY id").fetchall()
    assert rows, "no annotation card was posted"
    return rows[-1]["card"]


def card_evidence(card: dict, kind: str = live.KIND) -> list[dict]:
    """The evidence of `kind` on the card's hypotheses, de-duplicated (every hypothesis carries the symptoms)."""
    found = []
    for block in card["blocks"]:
        for item in block.get("items") or []:
            for evidence in item.get("evidence") or [] if isinstance(item, dict) else []:
                if evidence["kind"] == kind and evidence not in found:
                    found.append(evidence)
    return found


# --- through the pipeline -----------------------------------------------------------------------------------------

def test_the_alerts_expression_and_the_service_template_are_queried_and_reach_the_card(
        pool, embedder, redis_url, knowledge, prometheus):
    prometheus.script[ALERT_EXPR] = {"body": vector(({}, "0.12400000000000001"))}
    prometheus.script[TEMPLATE_EXPR] = {"body": vector(({"instance": "web-01:8080"}, "3.5"),
                                                       ({"instance": "web-02:8080"}, "0.25"))}
    services = make_services(pool, embedder, live_config(prometheus.url, queries=[TEMPLATE]), redis_url)
    fire(services)

    # Asked of the configured Prometheus (the generatorURL's host, prometheus.internal, is never contacted),
    # as instant queries with an evaluation time and a server-side timeout equal to the budget.
    assert sorted(prometheus.asked()) == sorted([ALERT_EXPR, TEMPLATE_EXPR])  # concurrently: either order
    for q in prometheus.queries:
        assert q["path"] == "/api/v1/query" and q["timeout"] == "1500ms"
        assert abs(float(q["time"]) - time.time()) < 120

    by_text = {e["text"].split(" = ")[0]: e for e in card_evidence(thread_card(services))}
    own = by_text[ALERT_EXPR]
    assert own["text"].startswith(f"{ALERT_EXPR} = 0.124 at ")
    assert own["source"] == f"{prometheus.url}/graph?g0.expr={quote_plus(ALERT_EXPR)}&g0.tab=1"
    templated = by_text[TEMPLATE_EXPR]
    assert '3.5 {instance="web-01:8080"}; 0.25 {instance="web-02:8080"}' in templated["text"]
    assert templated["source"].startswith(f"{prometheus.url}/graph?g0.expr=")


def test_a_slow_prometheus_is_cut_off_at_the_budget_and_the_annotation_still_arrives(
        pool, embedder, redis_url, knowledge, prometheus):
    prometheus.script[ALERT_EXPR] = {"delay": 20, "body": vector(({}, "0.124"))}
    prometheus.script[TEMPLATE_EXPR] = {"body": vector(({}, "7"))}
    services = make_services(pool, embedder, live_config(prometheus.url, live_query_budget_s=0.5,
                                                         queries=[TEMPLATE]), redis_url)
    took = fire(services)

    assert prometheus.cut_off_event.wait(5), "the slow request was never abandoned"
    assert prometheus.cut_off == [ALERT_EXPR]
    assert took < 15  # loose: far below the 20 s the stand-in would have made it wait
    card = thread_card(services)
    texts = [e["text"] for e in card_evidence(card)]
    assert texts and all(t.startswith(f"{TEMPLATE_EXPR} = 7 at ") for t in texts)  # the fast one made it
    assert "0.124" not in json.dumps(card_evidence(card))
    assert card_evidence(card, "alert")  # the annotation itself is whole


def test_prometheus_errors_are_notes_and_never_fail_the_annotation(pool, embedder, redis_url, knowledge, prometheus):
    prometheus.script[ALERT_EXPR] = {"status": 422, "body": {
        "status": "error", "errorType": "execution", "error": "query processing would load too many samples"}}
    prometheus.script[TEMPLATE_EXPR] = {"status": 502, "raw": b"<html>Bad Gateway</html>"}
    services = make_services(pool, embedder, live_config(prometheus.url, queries=[TEMPLATE]), redis_url)
    fire(services)
    card = thread_card(services)
    assert card_evidence(card) == [] and card_evidence(card, "alert")

    alert = normalise(json.loads(PAYLOAD.read_text()), "alertmanager")[0]
    result = live.gather(services.config, alert=alert, service="payments-api")
    assert result.evidence == []
    assert any("HTTP 422 execution: query processing would load too many samples" in n for n in result.notes)
    assert any("HTTP 502, not a Prometheus API answer" in n for n in result.notes)


def test_an_unreachable_prometheus_is_a_note(pool, embedder, redis_url):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = live_config(f"http://127.0.0.1:{port}")
    alert = normalise(json.loads(PAYLOAD.read_text()), "alertmanager")[0]
    result = live.gather(config, alert=alert, service="payments-api")
    assert result.evidence == [] and len(result.notes) == 1 and "live query failed" in result.notes[0]


def test_live_queries_are_off_unless_configured(pool, embedder, redis_url, knowledge, prometheus):
    config = WarroomConfig.model_validate({  # a prometheus target alone (for workers) does not turn them on
        "slack": {"alert_channel": CHANNEL}, "targets": {"prom": {"connector": "prometheus", "url": prometheus.url}}})
    assert config.live_target() is None
    fire(make_services(pool, embedder, config, redis_url))
    assert prometheus.queries == []


def test_a_question_about_a_service_runs_the_templates(pool, embedder, redis_url, knowledge, prometheus):
    prometheus.script[TEMPLATE_EXPR] = {"body": vector(({}, "2"))}
    services = make_services(pool, embedder, live_config(prometheus.url, queries=[TEMPLATE]), redis_url)
    annotation, _ = annotate(services, question="why is payments-api returning 500s?", service="payments-api")
    assert prometheus.asked() == [TEMPLATE_EXPR]
    live_items = {e for h in annotation.hypotheses for e in h.evidence if e.kind == live.KIND}
    assert [e.text.split(" at ")[0] for e in live_items] == [f"{TEMPLATE_EXPR} = 2"]


# --- what is asked, and how answers read -------------------------------------------------------------------------

def _alert(**fields) -> Alert:
    return Alert(source="alertmanager", fingerprint="f", status="firing", name="X", **fields)


def test_the_expression_comes_from_a_prometheus_graph_link():
    assert live.alert_expression(_alert(links=[Link(title="Source", url=GENERATOR_URL)])) == ALERT_EXPR
    assert live.alert_expression(_alert(links=[Link(title="Runbook", url="https://runbooks.internal/x")])) is None
    assert live.alert_expression(None) is None


def test_templates_escape_the_service_and_respect_their_service_list():
    config = live_config("http://prom:9090", alert_expression=False, queries=[
        'up{service="{service}"}', {"expr": "node_load1", "services": ["payments-api"]}, "vector(1)"])
    hostile = 'x"} or vector(1) or up{a="\\'
    assert live.planned_queries(config, alert=None, service=hostile) == [
        'up{service="x\\"} or vector(1) or up{a=\\"\\\\"}', "vector(1)"]
    assert live.planned_queries(config, alert=None, service="payments-api") == [
        'up{service="payments-api"}', "node_load1", "vector(1)"]
    assert live.planned_queries(config, alert=None, service=None) == ["vector(1)"]  # `{service}` needs a service
    own = live_config("http://prom:9090", alert_expression=False)
    assert live.planned_queries(own, alert=_alert(links=[Link(title="Source", url=GENERATOR_URL)]),
                                service=None) == []


@pytest.mark.parametrize("result_type,result,shown", [
    ("scalar", [1700000000, "1.5"], "vector(1) = 1.5 at 2023-11-14T22:13:20+00:00"),
    ("vector", [], "vector(1) = no series at 2023-11-14T22:13:20+00:00"),
    ("vector", [{"metric": {"__name__": "up", "job": "a"}, "value": [1700000000, "NaN"]}],
     "vector(1) = NaN at 2023-11-14T22:13:20+00:00"),
    ("vector", [{"metric": {"i": str(n)}, "value": [1700000000, str(n)]} for n in range(5)],
     'vector(1) = 4 {i="4"}; 3 {i="3"}; 2 {i="2"} (+2 more series) at 2023-11-14T22:13:20+00:00'),
    ("matrix", [{"metric": {}, "values": [[1699999990, "1"], [1700000000, "2"]]}],
     "vector(1) = 2 at 2023-11-14T22:13:20+00:00"),
])
def test_answers_read_as_one_line_with_the_sample_time(result_type, result, shown):
    evidence = live._evidence("http://prom:9090/", "vector(1)", 1700000000.0, result_type, result)
    assert evidence.kind == "live_query" and evidence.text == shown
    assert evidence.source == "http://prom:9090/graph?g0.expr=vector%281%29&g0.tab=1"


def _context(*live_items: Evidence) -> Context:
    alert = _alert(severity="critical", summary="5xx above 5%", service="payments-api",
                   links=[Link(title="Source", url=GENERATOR_URL)], starts_at=datetime.now(timezone.utc))
    return Context(alert=alert, question=None, service="payments-api", environment="prod",
                   now=datetime.now(timezone.utc), live=list(live_items))


LIVE = Evidence(kind="live_query", text=f'{TEMPLATE_EXPR} = 3.5 {{password="hunter2-planted-pw"}} at 2026-01-01',
                source="http://prom:9090/graph?g0.expr=x&g0.tab=1")


def test_live_values_enter_the_prompt_as_quoted_redacted_symptoms():
    prompt = hypotheses_prompt(_context(LIVE))
    assert prompt.evidence["L1"] == LIVE and LIVE in prompt.symptoms
    text = prompt.request.volatile
    assert "L1: " in text and "3.5" in text
    assert "hunter2-planted-pw" not in text


def test_live_values_describe_the_symptom_and_leave_the_scores_alone():
    change = Evidence(kind="change", text="deploy payments-api v2.14.0", source="ci",
                      at=datetime.now(timezone.utc) - timedelta(minutes=8), match="service")
    plain = Candidate(title="Recent deploy", cause="", evidence=[change])
    with_live = Candidate(title="Recent deploy", cause="", evidence=[change, LIVE])
    assert score(with_live, _context(LIVE)).confidence == score(plain, _context()).confidence


# --- config -------------------------------------------------------------------------------------------------------

def _load(tmp_path: Path, text: str) -> WarroomConfig:
    path = tmp_path / "warroom.yml"
    path.write_text(text)
    return load_config(path)


def test_config_defaults_to_off_and_reads_the_documented_shape(tmp_path):
    assert WarroomConfig().context.prometheus is None and WarroomConfig().live_target() is None
    config = _load(tmp_path, """
targets:
  prom: {connector: prometheus, url: "http://prometheus.internal:9090"}
context:
  prometheus: prom
  live_query_budget_s: 2
  queries:
    - 'sum(rate(http_requests_total{service="{service}",code=~"5.."}[5m]))'
    - {expr: "pg_stat_activity_count", services: [payments-db]}
""")
    assert config.live_target().params()["url"] == "http://prometheus.internal:9090"
    assert config.context.live_query_budget_s == 2 and config.context.alert_expression is True
    assert [q.expr for q in config.context.queries][1] == "pg_stat_activity_count"


@pytest.mark.parametrize("target", [
    {"connector": "prometheus", "url": "http://prom:9090", "bearer_token": "vault:kv/data/prom#token"},
    {"connector": "prometheus", "url": "http://prom:9090", "headers": {"X-Token": "vault:kv/data/prom#token"}},
    {"connector": "prometheus", "url": "https://reader:pw@prom:9090"},
])
def test_a_target_with_credentials_is_refused_because_secrets_are_resolved_only_in_workers(tmp_path, target):
    text = json.dumps({"targets": {"prom": target}, "context": {"prometheus": "prom"}})
    with pytest.raises(ConfigError) as raised:
        _load(tmp_path, text)  # JSON is YAML
    assert "context.prometheus" in str(raised.value) and "secrets are resolved only in workers" in str(raised.value)
    # The same target is fine for workers, which resolve its credentials; only live queries refuse it.
    _load(tmp_path, json.dumps({"targets": {"prom": target}}))


@pytest.mark.parametrize("config,message", [
    ({"context": {"prometheus": "nope"}}, "is not defined in targets"),
    ({"targets": {"prom": {"connector": "http", "url": "http://p"}}, "context": {"prometheus": "prom"}},
     "not 'prometheus'"),
    ({"targets": {"prom": {"connector": "prometheus"}}, "context": {"prometheus": "prom"}}, "http(s) url"),
    ({"targets": {"prom": {"connector": "prometheus", "url": "file:///etc/passwd"}},
      "context": {"prometheus": "prom"}}, "http(s) url"),
    ({"context": {"live_query_budget_s": 0}}, "live_query_budget_s"),
    ({"context": {"live_query_budget_s": 60}}, "live_query_budget_s"),
    ({"context": {"promethues": "prom"}}, "promethues"),
    ({"context": {"queries": [""]}}, "queries"),
])
def test_config_mistakes_are_refused_with_where(config, message):
    with pytest.raises(ValidationError) as raised:
        WarroomConfig.model_validate(config)
    assert message in str(raised.value)
