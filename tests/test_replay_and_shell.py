"""The CLI paths a new user tries first, run as subprocesses exactly as typed."""
import json

from tests.conftest import EXAMPLES, runbook_yaml, warroom

FIRING = str(EXAMPLES / "alerts/payments-high-error-rate-firing.json")


def _count_rows(db_url):
    import psycopg

    with psycopg.connect(db_url) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("alerts", "plans", "plan_steps", "outbox", "audit_log", "changes")}


def test_replay_prints_hypotheses_citations_and_plan(db_url):
    env = {"DATABASE_URL": db_url}
    assert warroom("ingest", str(EXAMPLES / "runbooks"), env=env).returncode == 0
    out = warroom("replay", FIRING, "--changes", str(EXAMPLES / "alerts/changes.json"), "--json", env=env)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["alert"]["name"] == "PaymentsHighErrorRate"
    top = result["hypotheses"][0]
    assert "v2.14.0" in top["title"]  # the deploy 10 minutes before the alert ranks first
    for hypothesis in result["hypotheses"]:
        assert 0.4 < hypothesis["confidence"] <= 1 and hypothesis["evidence"]
        assert set(hypothesis["factors"]) == {"signal_strength", "temporal_correlation", "precedent_frequency",
                                              "evidence_quality", "validation_history"}
    assert result["citations"][0]["title"] == "Payments API elevated 5xx rate"
    assert {"document_id", "chunk_id", "title", "source", "score"} <= set(result["citations"][0])
    steps = result["plan"]["steps"]
    assert [s["id"] for s in steps] == ["check-health", "restart"]
    assert [s["risk"] for s in steps] == ["read_only", "state_change"]


def test_replay_without_changes_still_answers_from_the_runbook(db_url):
    env = {"DATABASE_URL": db_url}
    warroom("ingest", str(EXAMPLES / "runbooks"), env=env)
    result = json.loads(warroom("replay", FIRING, "--json", env=env).stdout)
    assert result["hypotheses"][0]["title"] == "Payments API elevated 5xx rate"


def test_replay_refuses_bad_input_with_one_line_and_writes_nothing(db_url):
    env = {"DATABASE_URL": db_url}
    before = _count_rows(db_url)
    for name, reason in [("malformed.json", "malformed JSON"), ("unknown-format.json", "unknown alert format")]:
        out = warroom("replay", str(EXAMPLES / "alerts" / name), "--json", env=env)
        assert out.returncode != 0
        assert out.stdout == ""
        assert len(out.stderr.strip().splitlines()) == 1 and reason in out.stderr
        assert "Traceback" not in out.stderr
    missing = warroom("replay", "/nope.json", env=env)
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert _count_rows(db_url) == before


def test_shell_question_approve_runs_once(db_url, redis_url, tmp_path, http_target):
    (tmp_path / "runbooks").mkdir()
    (tmp_path / "runbooks/rb.yaml").write_text(runbook_yaml(f"http://127.0.0.1:{http_target.server_port}/health"))
    config = tmp_path / "warroom.yml"
    config.write_text("policy:\n  auto_run_read_only: false\n")
    env = {"DATABASE_URL": db_url, "WARROOM_CONFIG": str(config), "WARROOM_DATA_DIR": str(tmp_path / "data")}
    assert warroom("ingest", str(tmp_path / "runbooks"), env=env).returncode == 0
    # REDIS_URL unset: the shell starts the embedded Redis and one real RQ worker beside it
    out = warroom("shell", env=env, stdin="why is payments-api returning 500s?\napprove 1\napprove 1\n", timeout=240)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "Plan: Payments API elevated 5xx rate" in text
    assert "`approve 1`" in text
    assert "Approved step check-health" in text
    assert "Step check-health succeeded" in text and "HTTP 200" in text
    assert "already" in text.split("Approved step check-health", 1)[1]
    assert http_target.hits == ["/health"]  # approved twice, run once
