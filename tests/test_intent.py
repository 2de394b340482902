import json

import pytest

from engine.intent import LOW_CONFIDENCE, IntentClassifier, cue_intents, extract_entities, normalise
from engine.models import Classification, Intent
from evals.intents.run import evaluate, load_cases, summary
from tests.conftest import warroom

# The bar, on the held-out set (heldout_v2.yaml), offline path only.
HELDOUT_INTENT_ACCURACY = 0.90
SERVICE_ACCURACY = 0.85
# The dev set (heldout.yaml) was looked at while tuning; its floor guards against regressions only.
DEV_INTENT_ACCURACY = 0.90


@pytest.fixture(scope="module")
def classifier(embedder):
    return IntentClassifier(embedder)


def test_subcommands_skip_classification(classifier):
    for text, intent in [("ack", Intent.acknowledge), ("resolve", Intent.resolve), ("status", Intent.incident_status),
                         ("help", Intent.help), ("runbook disk full", Intent.runbook),
                         ("run restart payments-api", Intent.run_action), ("escalate to dba", Intent.escalate),
                         ("@warroom ack", Intent.acknowledge), ("/warroom status", Intent.incident_status),
                         ("<@U0WARROOM> resolve", Intent.resolve), ("ACK", Intent.acknowledge),
                         ("diagnose: checkout 502s", Intent.diagnose), ("help?", Intent.help)]:
        result = classifier.classify(text)
        assert (result.intent, result.layer, result.confidence) == (intent, "subcommand", 1.0), text


def test_bare_mention_is_help_and_emoji_alone_is_chatter(classifier):
    assert classifier.classify("@warroom").intent is Intent.help
    assert classifier.classify("").intent is Intent.help
    for text in ["👍", ":tada: :tada:", "lol"]:
        result = classifier.classify(text)
        assert (result.intent, result.layer) == (Intent.unknown, "fallback"), text


def test_free_text_goes_through_the_embedding_layer(classifier):
    result = classifier.classify("why is payments-api returning 500s?")
    assert result.intent is Intent.diagnose and result.layer == "embedding"
    assert result.entities["service"] == "payments-api"
    assert classifier.classify("anyone up for lunch?").intent is Intent.unknown


def test_clear_phrasings_are_confident(classifier):
    for text, intent in [("orders-svc back to normal, mark it resolved", Intent.resolve),
                         ("i'm on it, looking at the dashboards", Intent.acknowledge),
                         ("wake up the db on-call please", Intent.escalate)]:
        result = classifier.classify(text)
        assert result.intent is intent and result.confidence >= LOW_CONFIDENCE, (text, result)


def test_model_is_consulted_only_below_low_confidence(embedder):
    asked: list[str] = []

    def fallback(text: str) -> Classification:
        asked.append(text)
        return Classification(intent=Intent.diagnose, confidence=0.9, entities={"service": "from-model"})

    classifier = IntentClassifier(embedder, llm_fallback=fallback)
    offline = IntentClassifier(embedder)
    for text in ["mark it resolved, all green", "ack", "hmm the thing with the stuff", "maybe later, or now?"]:
        before = len(asked)
        result = classifier.classify(text)
        own = offline.classify(text)
        if own.layer == "subcommand" or own.confidence >= LOW_CONFIDENCE:
            assert len(asked) == before and result == own, text
        else:
            assert asked[-1] == text and result.layer == "llm" and result.entities["service"] == "from-model"
    assert "ack" not in asked and "mark it resolved, all green" not in asked
    assert "hmm the thing with the stuff" in asked  # both layers were exercised


def test_chatter_and_help_name_no_service(classifier):
    assert classifier.classify("anyone up for tacos at the food-court?").entities["service"] is None
    assert classifier.classify("how do i page someone with the bot").entities["service"] is None


def test_heldout_v2_accuracy_offline(classifier):
    """The issue's bar: held-out utterances written before tuning, scored with the offline path only."""
    outcomes = evaluate(classifier, load_cases("heldout"))
    scores = summary(outcomes)
    misses = [(o.case.text, o.intent, o.case.intent) for o in outcomes if not o.intent_ok]
    print(f"heldout_v2: {scores}")
    assert scores["n"] >= 250
    assert scores["intent"] >= HELDOUT_INTENT_ACCURACY, misses
    assert scores["service"] >= SERVICE_ACCURACY, [(o.case.text, o.service, o.case.service)
                                                  for o in outcomes if not o.service_ok]


def test_dev_set_accuracy_offline(classifier):
    scores = summary(evaluate(classifier, load_cases("dev")))
    print(f"dev: {scores}")
    assert scores["intent"] >= DEV_INTENT_ACCURACY
    assert scores["service"] >= SERVICE_ACCURACY
    assert scores["environment"] >= 0.95


# --- entities (rules only, no model) ---------------------------------------------------------------

def test_entities():
    entities = extract_entities("restart checkout in prod, errors since 10:05", known_services=["checkout"])
    assert entities == {"service": "checkout", "environment": "production", "time_range": "10:05",
                        "action": "restart"}
    assert extract_entities("p99 of auth-service over the last 30m in stg")["time_range"] == "30m"
    assert extract_entities("p99 of auth-service over the last 30m in stg")["environment"] == "staging"


@pytest.mark.parametrize("text, service", [
    ("reload haproxy on lb-02", "haproxy"), ("high load on web-07 since noon, why", None), ("drain ip-10-0-3-17", None),
    ("latency from eu-west-1 to us-east-1a is up", None), ("pods in kube-system keep restarting", None),
    ("restart the pods -n edge-routing", None), ("restart the gateway pods -n edge-routing", "gateway"),
    ("disable feature flag new-checkout-flow", None), ("errors on the gke-prod cluster", None),
    ("status of INC-4471", None), ("write a follow-up for the on-call", None),
    ("disk usage on db-07 last 24h", None),   # "db" in a host name is not the word "db"
    ("playbook for a region evacuation", None), ("stand down, all good", None),
])
def test_hosts_regions_namespaces_clusters_flags_are_not_services(text, service):
    assert extract_entities(text)["service"] == service


@pytest.mark.parametrize("text, service", [
    ("why is invoice-api 500ing on prod", "invoice-api"),             # hyphenated names as typed
    ("kubectl rollout undo deployment/quote-svc -n pricing", "quote-svc"),
    ("restart payments-api on web-01", "payments-api"),               # the host is not the service
    ("what's making kong's latency jump", "kong"),                    # well-known software, possessive
    ("why are feature-store reads timing out against redis", "feature-store"),  # the subject, not the dependency
    ("something is off with the onboarding service", "onboarding"),   # a bare word before a service noun
    ("loyalty is down again", "loyalty"),                             # the subject of a symptom
    ("ffs billing is down, why", "billing"),                          # after filler
    ("escalate to sev2, prod checkout impacted", "checkout"),         # after an environment word
    ("requeue the stuck fulfillment orders", "fulfillment"),          # the object of an action
    ("any news on ledger?", "ledger"),                                # closing a clause after a preposition
    ("p99 for ledger right now", "ledger"),
    ("roll back loyalty to yesterday's build", "loyalty"),           # "roll" is a verb, not a subject
    ("@warroom why is cart-service slow :fire:", "cart-service"),     # Slack mention and emoji code ignored
])
def test_service_as_typed(text, service):
    assert extract_entities(text)["service"] == service


def test_known_services_come_first():
    assert extract_entities("errors on web-01 for payments since the deploy",
                            known_services=["payments"])["service"] == "payments"
    assert extract_entities("redis is slow for checkout-api", known_services=["redis"])["service"] == "redis"
    # the longest known name wins over one it contains
    assert extract_entities("ledger-api down", known_services=["ledger", "ledger-api"])["service"] == "ledger-api"


@pytest.mark.parametrize("text, environment", [
    ("broken in prd", "production"), ("broken in production", "production"), ("stg only", "staging"),
    ("pre-prod is fine", "staging"), ("on dev", "development"), ("in eu-west-1", None), ("all good", None),
])
def test_environment(text, environment):
    assert extract_entities(text)["environment"] == environment


def test_time_range_and_action():
    assert extract_entities("error rate for checkout past 2h")["time_range"] == "2h"
    assert extract_entities("graph it since 9am")["time_range"] == "9am"
    assert extract_entities("show it since midnight")["time_range"] == "midnight"
    assert extract_entities("bounce nginx")["action"] == "restart"
    assert extract_entities("revert pricing-engine to v4")["action"] == "rollback"
    assert extract_entities("why is it slow")["action"] is None


# --- normalising and cue phrases -------------------------------------------------------------------

def test_normalise_spells_out_chat_shorthand():
    assert (normalise("@warroom ffs whats up w/ checkout rn pls :fire: 🔥")
            == "what is up with checkout right now please")
    assert normalise("<@U0BOT|warroom> ack'd") == "acknowledged"


def test_cue_phrases():
    assert cue_intents(normalise("mark it resolved")) == {"resolve"}
    assert cue_intents(normalise("page the dba")) == {"escalate"}
    assert cue_intents(normalise("k im on it")) == {"acknowledge"}
    assert cue_intents(normalise("sitrep?")) == {"incident_status"}
    # a question about the bot is help, whatever lifecycle word it contains
    assert cue_intents(normalise("how do i resolve an incident with you")) == {"help"}
    # asking whether something is resolved asks for status
    assert cue_intents(normalise("is the checkout incident resolved yet?")) == {"incident_status"}
    assert cue_intents(normalise("is it tea time yet")) == set()


def test_cli_classify_json_batch(db_url):
    out = warroom("classify", "--json", env={"DATABASE_URL": db_url},
                  stdin="ack\nwhy is checkout slow in prod?\n")
    assert out.returncode == 0, out.stderr
    first, second = [json.loads(line) for line in out.stdout.splitlines()]
    assert first["intent"] == "acknowledge" and first["confidence"] == 1.0
    assert second["intent"] == "diagnose" and 0 <= second["confidence"] <= 1
    assert second["entities"]["environment"] == "production"
