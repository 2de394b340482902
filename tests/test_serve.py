"""`warroom serve` on the embedded default, as a user runs it: embedded PostgreSQL + pgvector, embedded
Redis and a worker, real HTTP on loopback."""
import json
import time

import pytest

from tests.conftest import EXAMPLES
from tests.served import Served

FIRING = (EXAMPLES / "alerts/payments-high-error-rate-firing.json").read_bytes()


@pytest.fixture
def served(tmp_path):
    s = Served(tmp_path / "data", WARROOM_MAX_BODY_BYTES="65536")
    yield s
    if s.proc.poll() is None:
        s.stop()


def test_health_ready_and_metrics(served):
    assert served.get("/healthz") == (200, b'{"status": "ok"}')
    assert json.loads(served.get("/readyz")[1]) == {"status": "ready"}
    status, body = served.get("/metrics")
    assert status == 200 and b"warroom_outbox_pending" in body


def test_alert_is_stored_before_the_answer_and_annotated(served):
    status, body = served.post("/hooks/alertmanager", FIRING)
    assert status == 202
    alert_id = json.loads(body)["alert_ids"][0]
    assert served.query(f"SELECT name FROM alerts WHERE id = {alert_id}") == [("PaymentsHighErrorRate",)]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if served.query(f"SELECT 1 FROM alerts WHERE id = {alert_id} AND annotated_at IS NOT NULL"):
            break
        time.sleep(0.3)
    else:
        pytest.fail("alert was not annotated")
    # a re-notification of the same alert is recorded, not annotated twice
    assert served.post("/hooks/alertmanager", FIRING)[0] == 202
    time.sleep(1)
    assert served.query("SELECT count(*), max(notifications) FROM alerts") == [(1, 2)]


def test_bad_bodies_get_a_clear_4xx_and_leave_no_rows(served):
    cases = [
        (b'{"alerts": [', 400, "malformed JSON"),
        (b'{"hello": "world"}', 422, "unknown alert format"),
        (b'{"version": "4", "groupKey": "g", "alerts": [{"status": "firing", "labels": {"alertname": "A"}}, '
         b'{"status": "firing", "labels": {}}]}', 422, "no alertname"),  # one bad alert: none stored
        (b'{"alerts": [], "pad": "' + b"x" * 70000 + b'"}', 413, ""),
    ]
    for body, status, reason in cases:
        got, text = served.post("/hooks/alertmanager", body)
        assert got == status, (got, text[:200])
        assert reason.encode() in text
    assert served.query("SELECT count(*) FROM alerts") == [(0,)]


def test_webhook_token_is_required_when_set(tmp_path):
    s = Served(tmp_path / "data", WARROOM_WEBHOOK_TOKEN="s3cret-token")
    try:
        assert s.post("/hooks/alertmanager", FIRING)[0] == 401
        assert s.post("/hooks/alertmanager", FIRING, Authorization="Bearer wrong")[0] == 401
        assert s.post("/hooks/alertmanager", FIRING, Authorization="Bearer s3cret-token")[0] == 202
        assert s.query("SELECT count(*) FROM alerts") == [(1,)]
    finally:
        s.stop()


def test_embedded_data_survives_a_restart(tmp_path):
    first = Served(tmp_path / "data")
    assert first.post("/hooks/alertmanager", FIRING)[0] == 202
    assert first.stop() == 0
    assert not (tmp_path / "data/postgres/postmaster.pid").exists()  # the embedded server stopped with it
    second = Served(tmp_path / "data")
    try:
        assert second.query("SELECT name FROM alerts") == [("PaymentsHighErrorRate",)]
    finally:
        assert second.stop() == 0


def test_changes_hook_accepts_a_list_and_refuses_bad_items_whole(served):
    changes = (EXAMPLES / "alerts/changes.json").read_bytes()
    status, body = served.post("/hooks/changes", changes)
    assert status == 202 and json.loads(body)["accepted"] == len(json.loads(changes))
    bad = b'[{"service": "a", "kind": "deploy", "summary": "ok"}, {"service": "b", "kind": "nope", "summary": "x"}]'
    status, body = served.post("/hooks/changes", bad)
    assert status == 422 and b"kind" in body
    assert served.query("SELECT count(*) FROM changes") == [(len(json.loads(changes)),)]
