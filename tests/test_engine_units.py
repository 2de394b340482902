"""Pure engine pieces: scoring policy, config validation, redaction, chunking."""
from datetime import datetime, timedelta, timezone

import pytest

from connectors.redact import MASK, redact
from engine.config import ConfigError, WarroomConfig, load_config
from engine.context import Context
from engine.hypotheses import WEIGHTS, rank, score
from engine.ingest import split_words
from engine.llm import Candidate
from engine.models import Alert, Evidence

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def _context(severity="critical", feedback=None):
    alert = Alert(source="alertmanager", fingerprint="f", status="firing", name="A", severity=severity,
                  service="svc", starts_at=NOW)
    return Context(alert=alert, question=None, service="svc", environment=None, now=NOW, feedback=feedback or {})


def test_weights_are_the_designed_five():
    assert WEIGHTS == {"signal_strength": 0.25, "temporal_correlation": 0.20, "precedent_frequency": 0.20,
                       "evidence_quality": 0.20, "validation_history": 0.15}


def test_a_change_just_before_the_alert_outranks_one_a_day_earlier():
    recent = Candidate(title="recent", cause="", evidence=[
        Evidence(kind="change", text="deploy", source="ci", at=NOW - timedelta(minutes=8), match="service")])
    old = Candidate(title="old", cause="", evidence=[
        Evidence(kind="change", text="deploy", source="ci", at=NOW - timedelta(hours=20), match="service")])
    ranked, inconclusive = rank([old, recent], _context())
    assert [h.title for h in ranked][0] == "recent" and not inconclusive
    assert ranked[0].factors["temporal_correlation"] == 1.0


def test_thin_evidence_is_inconclusive_rather_than_a_guess():
    weak = Candidate(title="weak", cause="", evidence=[Evidence(kind="thread", text="hmm")])
    ranked, inconclusive = rank([weak], _context(severity="info"))
    assert inconclusive and ranked[0].confidence < 0.3
    assert rank([], _context()) == ([], True)


def test_feedback_moves_the_validation_factor():
    candidate = Candidate(title="t", cause="", evidence=[Evidence(kind="runbook", text="x", match="alert_name")])
    liked = score(candidate, _context(feedback={"t": (5, 5)}))
    disliked = score(candidate, _context(feedback={"t": (0, 5)}))
    assert liked.confidence > disliked.confidence
    assert liked.factors["validation_history"] > 0.8 > 0.2 > disliked.factors["validation_history"]


def test_config_refuses_literal_secrets_and_unknown_connectors(tmp_path):
    with pytest.raises(ValueError, match="vault: reference"):
        WarroomConfig.model_validate({"targets": {"db": {"connector": "sql", "password": "hunter2"}}})
    with pytest.raises(ValueError, match="unknown connector"):
        WarroomConfig.model_validate({"targets": {"x": {"connector": "telnet"}}})
    bad = tmp_path / "w.yml"
    bad.write_text("policy: [")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    assert load_config(tmp_path / "missing.yml") == WarroomConfig()


def test_redaction_masks_known_values_and_credential_shapes():
    text = ("password=hunter2 token: abc123456 https://bob:pa55w0rd@db.internal/x "
            "Authorization: Bearer eyJhbGciOi.sig xoxb-1234567890-abcdefghij AKIAABCDEFGHIJKLMNOP "
            "resolved-vault-value-42")
    out = redact(text, secrets=["resolved-vault-value-42"])
    for secret in ("hunter2", "abc123456", "pa55w0rd", "eyJhbGciOi", "xoxb-1234567890", "AKIAABCDEFGHIJKLMNOP",
                   "resolved-vault-value-42"):
        assert secret not in out
    assert out.count(MASK) >= 7 and "db.internal" in out


def test_redaction_leaves_counts_and_kinds_of_tokens_readable():
    usage = "max_tokens: 1024, tokens_used=812, token_count: 40, token_type: bearer, tokenizer=bpe"
    assert redact(usage) == usage
    for leak in ("api_token=s3cr3t-v4lue", "slack_token: s3cr3t-v4lue", 'tokenValue: "s3cr3t-v4lue"',
                 "refresh_token=s3cr3t-v4lue"):
        assert "s3cr3t-v4lue" not in redact(leak), leak


def test_chunks_overlap():
    words = " ".join(f"w{i}" for i in range(500))
    chunks = split_words(words, size=200, overlap=50)
    assert len(chunks) == 3
    assert chunks[0].split()[-50:] == chunks[1].split()[:50]
