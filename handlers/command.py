"""Slash commands, mentions and shell lines: classify, then answer in the same channel and thread."""
from __future__ import annotations

import json
import logging

from engine.cards import Card, TextBlock, notice
from engine.models import ChatMessage, Classification, Intent
from engine.plans import store_annotation_plan
from handlers.annotate import annotate
from handlers.dispatch import auto_run
from handlers.services import Services
from storage import outbox

log = logging.getLogger(__name__)

HELP = """Ask in plain words, or use a sub-command:
  diagnose <what is wrong>   ranked hypotheses with evidence, matching runbooks and a plan
  runbook <symptom>          the runbooks that match, with a plan from the best one
  run <action>               find a runbook step that does it and propose it for approval
  status | ack | resolve | escalate   incident lifecycle
  help                       this text
Steps that change state carry Approve / Reject; read-only steps may run on their own (policy)."""


def handle_message(services: Services, message: ChatMessage) -> Classification:
    """Answer one message; every reply goes through the outbox. Returns the classification."""
    classification = services.classifier.classify(_strip_subcommand_noise(message.text))
    intent = classification.intent
    if intent in (Intent.diagnose, Intent.runbook, Intent.run_action):
        _answer_with_annotation(services, message, classification)
    elif intent is Intent.help:
        _reply(services, message, Card(kind="help", title="warroom help", blocks=[TextBlock(text=HELP)]))
    elif intent is Intent.query_metrics:
        _reply(services, message, notice(
            "Metrics", "No Prometheus target is configured: add a `prometheus` target to warroom.yml "
                       "(targets.<name>.connector: prometheus) to query metrics from chat.", style="warning"))
    elif intent in (Intent.incident_status, Intent.acknowledge, Intent.resolve, Intent.escalate):
        _reply(services, message, notice(
            intent.value.replace("_", " ").title(),
            "There is no open incident in this channel. Incidents open from critical alert groups.",
            style="muted"))
    else:
        _reply(services, message, notice(
            "Not sure what you mean", "Try `help`, or describe the symptom, e.g. "
                                      "`why is payments-api returning 500s?`", style="muted"))
    return classification


def _strip_subcommand_noise(text: str) -> str:
    return text.strip().removeprefix("/warroom").strip()


def _answer_with_annotation(services: Services, message: ChatMessage, classification: Classification) -> None:
    entities = classification.entities
    annotation, runbook_row = annotate(services, question=message.text, service=entities.get("service"),
                                       environment=entities.get("environment"))
    with services.pool.connection() as conn, conn.transaction():
        plan_id, card = store_annotation_plan(
            conn, annotation, runbook_pk=runbook_row["id"] if runbook_row else None, alert_id=None,
            requested_by=message.user.id, platform=message.platform, channel=message.channel,
            thread=message.thread, environment=entities.get("environment"), workspace=services.workspace)
        outbox.enqueue(conn, platform=message.platform, channel=message.channel, op="post",
                       message_key=f"plan:{plan_id}" if plan_id else None, thread_id=message.thread,
                       card=json.loads(card.model_dump_json()))
        queued = auto_run(conn, plan_id, services) if plan_id else []
    for step_id in queued:
        services.dispatch(step_id)


def _reply(services: Services, message: ChatMessage, card: Card) -> None:
    with services.pool.connection() as conn, conn.transaction():
        outbox.enqueue(conn, platform=message.platform, channel=message.channel, op="post",
                       thread_id=message.thread, card=json.loads(card.model_dump_json()))
