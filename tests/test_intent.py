import json
from pathlib import Path

import yaml

from engine.intent import IntentClassifier, extract_entities
from engine.models import Intent
from tests.conftest import ROOT, warroom


def test_subcommands_skip_classification(embedder):
    classifier = IntentClassifier(embedder)
    for text, intent in [("ack", Intent.acknowledge), ("resolve", Intent.resolve), ("status", Intent.incident_status),
                         ("help", Intent.help), ("runbook disk full", Intent.runbook),
                         ("run restart payments-api", Intent.run_action), ("escalate to dba", Intent.escalate)]:
        result = classifier.classify(text)
        assert (result.intent, result.layer, result.confidence) == (intent, "subcommand", 1.0), text


def test_free_text_goes_through_the_embedding_layer(embedder):
    classifier = IntentClassifier(embedder)
    result = classifier.classify("why is payments-api returning 500s?")
    assert result.intent is Intent.diagnose and result.layer == "embedding"
    assert result.entities["service"] == "payments-api"
    assert classifier.classify("anyone up for lunch?").intent is Intent.unknown


def test_entities():
    entities = extract_entities("restart checkout in prod, errors since 10:05", known_services=["checkout"])
    assert entities == {"service": "checkout", "environment": "production", "time_range": "10:05",
                        "action": "restart"}
    assert extract_entities("p99 of auth-service over the last 30m in stg")["time_range"] == "30m"
    assert extract_entities("p99 of auth-service over the last 30m in stg")["environment"] == "staging"


def test_heldout_accuracy_offline(embedder):
    """Held-out utterances (not in prompts/intents.yaml), offline path only."""
    cases = yaml.safe_load(Path(ROOT / "evals/intents/heldout.yaml").read_text())["cases"]
    classifier = IntentClassifier(embedder)
    right = sum(classifier.classify(c["text"]).intent.value == c["intent"] for c in cases)
    accuracy = right / len(cases)
    print(f"intent accuracy {accuracy:.3f} on {len(cases)} held-out utterances")
    assert accuracy >= 0.80


def test_cli_classify_json_batch(db_url):
    out = warroom("classify", "--json", env={"DATABASE_URL": db_url},
                  stdin="ack\nwhy is checkout slow in prod?\n")
    assert out.returncode == 0, out.stderr
    first, second = [json.loads(line) for line in out.stdout.splitlines()]
    assert first["intent"] == "acknowledge" and first["confidence"] == 1.0
    assert second["intent"] == "diagnose" and 0 <= second["confidence"] <= 1
    assert second["entities"]["environment"] == "production"
