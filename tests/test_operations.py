"""Operations: JSON logs with correlation ids, graceful shutdown of serve and worker, and /metrics after real
traffic. Everything runs for real: `warroom serve` and `warroom worker` subprocesses, the Slack stand-in at the
network edge, Prometheus' own parser on the scrape."""
from __future__ import annotations

import io
import json
import logging
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bot.logs import JsonFormatter, TextFormatter
from engine.log_context import log_context, request_id_from
from connectors.queue import enqueue_step
from engine.cards import notice
from engine.redact import register_secret
from tests.conftest import warroom
from tests.served import Served
from tests.slack_standin import SlackStandIn, event, message_event, sign
from tests.test_worker_crash import HoldingTarget, Workers, approved_step, step, wait_for

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
CHANNEL = "C0DRAIN"
ALERT = {"name": "DiskFull", "service": "payments-api", "severity": "warning", "summary": "disk 95% full"}


def _slack_serve(root: Path, standin: SlackStandIn, **env: str) -> Served:
    (root / "warroom.yml").write_text(f"slack:\n  alert_channel: {CHANNEL}\n")
    return Served(root / "data", WARROOM_CONFIG=str(root / "warroom.yml"), SLACK_BOT_TOKEN=standin.bot_token,
                  SLACK_SIGNING_SECRET=SECRET, SLACK_API_URL=standin.url, **env)


@pytest.fixture(scope="module")
def standin():
    s = SlackStandIn().start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def served(tmp_path_factory, standin):
    s = _slack_serve(tmp_path_factory.mktemp("ops"), standin)
    yield s
    s.stop()


def _get(served: Served, path: str, headers: dict | None = None):
    """(status, headers, body) of a GET; urllib's own request, so the response headers are there to read."""
    req = urllib.request.Request(f"http://127.0.0.1:{served.port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def _json_lines(text: str) -> list[dict]:
    """The JSON log lines of an output (Python's own warnings, printed by the interpreter, are not logs)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _samples(served: Served) -> dict[str, list]:
    status, _, body = _get(served, "/metrics")
    assert status == 200
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def _value(samples: dict[str, list], name: str, **labels: str) -> float:
    matching = [s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matching) == 1, (name, labels, samples.get(name))
    return matching[0]


# --- logs ------------------------------------------------------------------------------------------------------

def _record(formatter: logging.Formatter, fn) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger("warroom.test_operations")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        fn(logger)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_json_lines_carry_bound_ids_and_stay_masked_tracebacks_included():
    secret = "hunter2-operations-secret-value"
    register_secret(secret)

    def log(logger):
        with log_context(correlation_id="req-1", request_id="req-1", platform="slack"):
            with log_context(step_id=7, plan_id=3):
                try:
                    raise RuntimeError(f"could not log in with {secret}")
                except RuntimeError:
                    logger.exception("step failed using %s", secret)
            logger.info('a "quoted"\nmessage')
        logger.warning("outside any request")

    first, second, third = _json_lines(_record(JsonFormatter(), log))
    assert first["level"] == "ERROR" and first["logger"] == "warroom.test_operations"
    assert first["ts"].endswith("Z") and "T" in first["ts"]
    assert (first["correlation_id"], first["request_id"], first["platform"], first["step_id"], first["plan_id"]) \
        == ("req-1", "req-1", "slack", 7, 3)
    assert secret not in json.dumps(first) and "[REDACTED]" in first["msg"]
    assert "RuntimeError: could not log in with [REDACTED]" in first["exc_info"]
    assert second["msg"] == 'a "quoted"\nmessage' and "step_id" not in second   # the inner block's ids are gone
    assert third["correlation_id"] is None and "request_id" not in third


def test_text_format_names_the_ids_on_the_message_line():
    def log(logger):
        with log_context(correlation_id="step-9", step_id=9):
            logger.warning("slow target")

    line = _record(TextFormatter(), log).strip()
    assert line.endswith("WARNING warroom.test_operations: slow target [correlation_id=step-9 step_id=9]")


def test_request_ids_from_outside_are_sanitised():
    assert request_id_from("abc-123_x.y") == "abc-123_x.y"
    for hostile in ("a b", "x" * 65, 'quote"d', "new\nline", "", None):
        made = request_id_from(hostile)
        assert made != hostile and len(made) == 16


def test_a_bad_log_format_is_one_line_and_exit_2():
    out = warroom("doctor", env={"WARROOM_LOG_FORMAT": "xml"})
    assert out.returncode == 2 and out.stderr.strip() == \
        "warroom: WARROOM_LOG_FORMAT must be one of json, text, not 'xml'"


def test_serve_logs_json_with_the_request_id_it_echoes(served):
    status, headers, _ = _get(served, "/healthz", {"X-Request-Id": "ops-probe-1"})
    assert status == 200 and headers["X-Request-Id"] == "ops-probe-1"
    status, headers, _ = _get(served, "/healthz", {"X-Request-Id": "bad id with spaces"})
    made = headers["X-Request-Id"]
    assert status == 200 and made != "bad id with spaces" and len(made) == 16

    body = json.dumps(ALERT | {"name": "LogCorrelation"}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{served.port}/hooks/generic", data=body, method="POST",
                                 headers={"Content-Type": "application/json", "X-Request-Id": "ops-alert-1"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 202 and resp.headers["X-Request-Id"] == "ops-alert-1"
        alert_id = json.loads(resp.read())["alert_ids"][0]

    def annotated_lines():
        lines = _json_lines(served.log())
        return lines if any(line.get("alert_id") == alert_id for line in lines) else None

    lines = wait_for(annotated_lines, "the annotator to log about the alert")
    assert all({"ts", "level", "logger", "msg", "correlation_id"} <= set(line) for line in lines)
    access = [line for line in lines if line["logger"] == "aiohttp.access" and line.get("request_id") == "ops-alert-1"]
    assert access and "POST /hooks/generic 202" in access[0]["msg"] and access[0]["correlation_id"] == "ops-alert-1"
    about_alert = [line for line in lines if line.get("alert_id") == alert_id]
    assert all(line["correlation_id"] == f"alert-{alert_id}" for line in about_alert)


# --- metrics ---------------------------------------------------------------------------------------------------

def test_metrics_after_real_traffic(served, standin):
    before = _samples(served)
    alerts_before = {o: _value(before, "warroom_dedup_total", kind="alert", outcome=o) for o in ("first", "duplicate")}

    body = json.dumps(ALERT).encode()
    for _ in range(2):  # the second delivery is a re-notification of a state already stored
        status, answer = served.post("/hooks/generic", body)
        assert status == 202, answer

    inner = message_event("C0CHAT", "is anyone looking at checkout?", user="U0ALICE")
    raw, content_type = event(inner, event_id="Ev0OPSRETRY")
    for retry in ({}, {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}):  # Slack retries once
        status, answer = served.request("POST", "/slack/events", raw,
                                        {"Content-Type": content_type, **sign(SECRET, raw), **retry})
        assert status == 200, answer

    after = _samples(served)
    assert _value(after, "warroom_dedup_total", kind="slack_event", outcome="first") == 1
    assert _value(after, "warroom_dedup_total", kind="slack_event", outcome="duplicate") == 1
    assert _value(after, "warroom_dedup_total", kind="alert", outcome="first") == alerts_before["first"] + 1
    assert _value(after, "warroom_dedup_total", kind="alert", outcome="duplicate") == alerts_before["duplicate"] + 1
    assert _value(after, "warroom_outbox_lag_seconds") >= 0
    assert _value(after, "warroom_outbox_pending") >= 0 and _value(after, "warroom_outbox_dead") == 0
    assert _value(after, "warroom_queue_depth", queue="warroom-steps", state="queued") >= 0
    assert _value(after, "warroom_queue_depth", queue="warroom-steps", state="started") >= 0
    assert _value(after, "warroom_steps", status="succeeded") >= 0
    assert _value(after, "warroom_webhooks_total", source="generic", outcome="accepted") >= 2
    routes = {s.labels["route"] for s in after["warroom_http_request_seconds_count"]}
    assert {"/hooks/generic", "/slack/events"} <= routes
    assert "warroom_incident_mtta_seconds_count" in after or "warroom_incidents_open" in after


def test_llm_cost_and_prompt_cache_from_usage():
    """The recorder the model provider reports to: cost from the price table, prompt-cache hits and misses."""
    from bot.metrics import Metrics
    from engine.llm.base import Usage

    metrics = Metrics(models={"anthropic": "claude-sonnet-4-5-20250929", "openai": "local"},
                      prices={"local": {"input": 1.0, "output": 2.0, "cache_read": 0.5}})
    metrics.llm_call("anthropic", "ok", 1.0, Usage(input_tokens=1000, output_tokens=500, cache_write_tokens=2000))
    metrics.llm_call("anthropic", "ok", 1.0, Usage(input_tokens=1000, output_tokens=500, cache_read_tokens=2000))
    # OpenAI-style usage counts the cached prompt tokens inside input_tokens: billed once, at the cache price
    metrics.llm_call("openai", "ok", 1.0, Usage(input_tokens=1000, output_tokens=100, cache_read_tokens=400))
    metrics.llm_call("anthropic", "ok", 1.0, Usage(input_tokens=10, output_tokens=5))
    metrics.models.clear()   # a provider whose model has no price: tokens counted, cost 0
    metrics.llm_call("anthropic", "ok", 1.0, Usage(input_tokens=10, output_tokens=5))
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    # (1000*3 + 500*15 + 2000*3.75) + (1000*3 + 500*15 + 2000*0.30) + (10*3 + 5*15) per million
    assert _value(samples, "warroom_llm_cost_usd_total", provider="anthropic",
                  model="claude-sonnet-4-5-20250929") == pytest.approx(0.029205)
    # (600*1 + 100*2 + 400*0.5) per million
    assert _value(samples, "warroom_llm_cost_usd_total", provider="openai", model="local") == pytest.approx(0.001)
    assert _value(samples, "warroom_llm_cost_usd_total", provider="anthropic", model="unknown") == 0
    assert _value(samples, "warroom_llm_tokens_total", provider="anthropic", kind="output") == 1010
    assert _value(samples, "warroom_cache_requests_total", cache="llm_prompt", outcome="hit") == 2
    assert _value(samples, "warroom_cache_requests_total", cache="llm_prompt", outcome="miss") == 3


# --- graceful shutdown -----------------------------------------------------------------------------------------

def test_sigterm_drains_the_outbox_while_readyz_says_draining(tmp_path):
    standin = SlackStandIn().start()
    served = None
    try:
        served = _slack_serve(tmp_path, standin, WARROOM_SHUTDOWN_GRACE="120")
        titles = [f"drain message {i}" for i in range(8)]
        cards = [json.dumps(notice(t, "queued before shutdown").model_dump(mode="json")) for t in titles]
        values = ", ".join(f"('slack', '{CHANNEL}', 'post', '{card}'::jsonb)" for card in cards)
        served.query(f"INSERT INTO outbox (platform, channel, op, card) VALUES {values} RETURNING id")
        served.proc.send_signal(signal.SIGTERM)   # at ~1 message a second, most are still queued now

        seen = []
        refused_work = None
        while served.proc.poll() is None:
            try:
                status, _, body = _get(served, "/readyz")
            except OSError:  # the listener closed: the drain is over
                break
            seen.append((status, json.loads(body)))
            if status == 503 and refused_work is None:
                refused_work = served.post("/hooks/generic", json.dumps(ALERT).encode())
            time.sleep(0.1)
        served.proc.wait(timeout=180)
        code = served.stop()

        assert (503, {"status": "draining"}) in seen
        assert refused_work is not None and refused_work[0] == 503 and b"draining" in refused_work[1]
        assert code == 0
        posted = [m["text"] for m in standin.messages(CHANNEL)]
        for title in titles:
            assert sum(title in text for text in posted) == 1, (title, posted)
        log = served.log()
        assert "outbox drained" in log and "draining: /readyz answers 503" in log
    finally:
        if served is not None and served.proc.poll() is None:  # a failure above: never leave serve running
            served.stop()
        standin.stop()


def test_worker_sigterm_lets_the_running_step_finish(pool, redis_url, db_url, tmp_path):
    from redis import Redis
    from rq import Worker

    target = HoldingTarget()
    workers = Workers(db_url, redis_url, tmp_path)
    redis = Redis.from_url(redis_url)
    try:
        step_id = approved_step(pool, target.url("/hold"))
        enqueue_step(redis, step_id)
        worker = workers.start()
        assert target.seen.wait(60), "the step's request never reached the target"
        wait_for(lambda: step(pool, step_id)["status"] == "running", "the step to be running")

        worker.send_signal(signal.SIGTERM)   # as Kubernetes does: to the worker process, not its horse
        wait_for(lambda: any(w.shutdown_requested_date for w in Worker.all(connection=redis)),
                 "the worker to take the warm shutdown request")
        assert step(pool, step_id)["status"] == "running"   # the shutdown waits for it
        target.let_go()                      # only now does the step's request complete
        assert worker.wait(timeout=120) == 0, workers.log(worker)

        finished = step(pool, step_id)
        assert finished["status"] == "succeeded", finished
        assert target.hits == ["/hold"]
        lines = _json_lines(workers.log(worker))
        assert any(line["msg"].startswith("worker ") and line["msg"].endswith(" stopped") for line in lines)
        [done] = [line for line in lines if line["msg"] == f"step {step_id}: succeeded"]  # logged in the horse
        assert (done["correlation_id"], done["step_id"], done["plan_id"]) == \
            (f"step-{step_id}", step_id, finished["plan_id"])
    finally:
        workers.close()
        redis.close()
        target.close()
