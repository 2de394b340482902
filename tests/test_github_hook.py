"""GitHub `deployment_status` webhooks over real HTTP to `warroom serve`: signed deliveries become changes with
provenance that the next annotation of the service uses; bad signatures, pings, other events and malformed
bodies get the answer GitHub expects and write nothing."""
import copy
import hashlib
import hmac
import json
import urllib.parse
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from engine.context import assemble
from handlers.annotate import annotate
from tests.served import Served

SECRET = "gh-webhook-secret"
FIXTURES = Path(__file__).parent / "fixtures/github"
DEPLOYED = json.loads((FIXTURES / "deployment_status_success.json").read_text())
PING = (FIXTURES / "ping.json").read_bytes()
LOG_URL = DEPLOYED["deployment_status"]["log_url"]


@pytest.fixture
def served(tmp_path, db_url):
    """`warroom serve` on the test's database, so the engine here reads what the hook stored there."""
    s = Served(tmp_path / "data", DATABASE_URL=db_url, GITHUB_WEBHOOK_SECRET=SECRET)
    yield s
    if s.proc.poll() is None:
        s.stop()


def _signed(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _post(served, body: bytes, event: str | None = "deployment_status", *, signature: str | None = None,
          content_type: str = "application/json"):
    headers = {"X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958", "Content-Type": content_type,
               "X-Hub-Signature-256": _signed(body) if signature is None else signature}
    if event:
        headers["X-GitHub-Event"] = event
    status, answer = served.post("/hooks/github", body, **headers)
    return status, json.loads(answer)


def _deployment(state: str = "success", minutes_ago: int = 10, **status) -> bytes:
    """The sample delivery, moved to now (recent changes are what hypotheses look at)."""
    payload = copy.deepcopy(DEPLOYED)
    at = (datetime.now(timezone.utc) - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    payload["deployment_status"].update({"state": state, "created_at": at, "updated_at": at, **status})
    return json.dumps(payload).encode()


def _changes(pool) -> list[dict]:
    with pool.connection() as conn:
        return conn.execute("SELECT * FROM changes ORDER BY id").fetchall()


def test_a_signed_deployment_becomes_one_change_the_next_annotation_uses(served, pool, services):
    status, answer = _post(served, _deployment("success", minutes_ago=10))
    assert status == 202 and answer["new"] and answer["service"] == "payments-api"
    [change] = _changes(pool)
    assert (change["service"], change["kind"], change["version"], change["author"], change["source"]) == (
        "payments-api", "deploy", "v2.14.1 (9c1e4f7)", "dana-ops", LOG_URL)
    assert "acme/payments-api" in change["summary"] and "production: success" in change["summary"]

    # GitHub's redelivery (here form-encoded, as hooks set to that content type send it) updates the same row;
    # so does the earlier in_progress status arriving late: it moves `at` back but does not undo "success"
    form = urllib.parse.urlencode({"payload": _deployment("success", minutes_ago=10).decode()}).encode()
    assert _post(served, form, content_type="application/x-www-form-urlencoded")[1]["new"] is False
    assert _post(served, _deployment("in_progress", minutes_ago=14))[0] == 202
    [change] = _changes(pool)
    assert "production: success" in change["summary"]
    assert datetime.now(timezone.utc) - change["at"] > timedelta(minutes=13)

    context = assemble(pool, services.embedder, question="payments-api returns 500s", service="payments-api")
    assert [(c.service, c.version, c.author) for c in context.changes] == [
        ("payments-api", "v2.14.1 (9c1e4f7)", "dana-ops")]
    annotation, _ = annotate(services, question="payments-api returns 500s", service="payments-api")
    deploy = next(h for h in annotation.hypotheses if h.title == "Recent deploy of payments-api v2.14.1 (9c1e4f7)")
    assert any(e.kind == "change" and "GitHub deployment 1203948577" in e.text for e in deploy.evidence)


def test_bad_signatures_pings_other_events_and_bad_bodies_write_nothing(served, pool):
    body = _deployment()
    assert _post(served, body, signature="")[0] == 401
    status, answer = _post(served, body, signature=_signed(body, "not-the-secret"))
    assert status == 401 and "X-Hub-Signature-256" in answer["error"]
    assert _post(served, body, signature=_signed(body + b" "))[0] == 401      # signed a different body

    assert _post(served, PING, "ping") == (200, {"ok": True, "zen": "Keep it logically awesome.",
                                                 "delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"})
    status, answer = _post(served, b'{"ref": "refs/heads/main"}', "push")
    assert status == 202 and "'push' is not recorded" in answer["ignored"]
    status, answer = _post(served, _deployment("queued"))
    assert status == 202 and "'queued' changes nothing yet" in answer["ignored"]

    broken = json.loads(_deployment())
    del broken["deployment"]["id"]
    no_time = json.loads(_deployment(created_at="yesterday"))
    for bad, code, reason in [
        (b'{"deployment_status": ', 400, "malformed JSON"),
        (b'[1, 2]', 422, "must be a JSON object"),
        (json.dumps({**json.loads(_deployment()), "deployment": None}).encode(), 422, "deployment: missing"),
        (json.dumps(broken).encode(), 422, "deployment.id"),
        (json.dumps(no_time).encode(), 422, "deployment_status.created_at"),
        (_deployment("exploded"), 422, "unknown state 'exploded'"),
    ]:
        status, answer = _post(served, bad)
        assert (status, reason in answer["error"]) == (code, True), (bad[:80], answer)
    status, answer = _post(served, body, event=None)
    assert status == 400 and "X-GitHub-Event" in answer["error"]
    assert _changes(pool) == []


def test_without_a_secret_the_hook_is_closed_once_other_hooks_need_a_token(tmp_path):
    served = Served(tmp_path / "data", WARROOM_WEBHOOK_TOKEN="hook-token")
    try:
        status, answer = _post(served, _deployment(), signature="")
        assert status == 401 and "GITHUB_WEBHOOK_SECRET is not set" in answer["error"]
        assert served.query("SELECT count(*) FROM changes") == [(0,)]
    finally:
        served.stop()
