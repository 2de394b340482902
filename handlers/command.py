"""Slash commands, mentions and shell lines: classify, then answer in the same channel and thread.
Answers everyone should see are posted; errors and refusals go only to the person who asked."""
from __future__ import annotations

import json
import logging
import re
from typing import Any

from engine.cards import Card, TextBlock, notice
from engine.models import Alert, ChatMessage, Classification, Intent
from engine.plans import store_annotation_plan
from handlers.annotate import annotate
from handlers.conversation import record_exchange, thread_memory
from handlers.dispatch import auto_run
from handlers.freeze import handle_freeze, is_freeze_command
from handlers.incident import diagnosed, handle_lifecycle, handle_lifecycle_command, is_lifecycle_command
from handlers.insights import handle_insights_command, is_insights_command
from handlers.learn import Where, handle_learn_command, is_learn_command
from handlers.services import Services
from storage import alerts as alert_store
from storage import incidents as incident_store
from storage import memory as memory_store
from storage import outbox

log = logging.getLogger(__name__)

HELP = """Ask in plain words, or use a sub-command:
  diagnose <what is wrong>   ranked hypotheses with evidence, matching runbooks and a plan
  runbook <symptom>          the runbooks that match, with a plan from the best one
  run <action>               find a runbook step that does it and propose it for approval
  status                     the open incident here: state, age, timeline
  ack | resolve [why] | escalate [why]   move the open incident along
  investigating | mitigated | inconclusive [note]   say where the investigation is
  learned [note]             the postmortem is done (after resolve)
  learn                      draft a runbook from the resolved incident here (what ran, cited), for review
  learn approve|reject N     decide runbook draft N (approvers only); approval makes a new runbook version
  learn edit N <yaml>        replace draft N with corrected runbook YAML (validated before it is stored)
  insights                   recurring incidents ranked by time lost and manual steps repeated
  insights draft N           draft a runbook from resolved incident N (for review, like learn)
  freeze [service] [why]     emergency stop: no state change is approved or started until unfreeze
  unfreeze [service]         lift a freeze (approvers only)
  help                       this text
Steps that change state carry Approve / Reject; read-only steps may run on their own (policy)."""

ANNOTATING = (Intent.diagnose, Intent.runbook, Intent.run_action)
LIFECYCLE = (Intent.incident_status, Intent.acknowledge, Intent.resolve, Intent.escalate)
THREAD_CONTEXT_MESSAGES = 8


def handle_message(services: Services, message: ChatMessage) -> Classification:
    """Answer one message; every reply goes through the outbox. Returns the classification."""
    text = _strip_subcommand_noise(message.text)
    if not text:
        text = "help"
    if is_freeze_command(text):  # the emergency stop is a control command, not something to classify
        card, public = handle_freeze(services, message, text)
        reply(services, message, card, private=not public)
        return Classification(intent=Intent.run_action, confidence=1.0, layer="subcommand", text=text)
    if is_learn_command(text):  # runbook drafts: not an intent of its own either (the intent list is fixed)
        # The raw text keeps its newlines: `learn edit N` carries YAML.
        raw = _ADDRESSED.sub("", message.text).strip() or text
        card, public = handle_learn_command(services, message.user, raw, Where(
            platform=message.platform, channel=message.channel, thread_id=message.thread,
            thread_key=_thread_key(services, message)))
        reply(services, message, card, private=not public)
        return Classification(intent=Intent.incident_status, confidence=1.0, layer="subcommand", text=text)
    if is_insights_command(text):  # candidate automations: a sub-command too, answered in the channel
        card, public = handle_insights_command(services, message.user, text, Where(
            platform=message.platform, channel=message.channel, thread_id=message.thread,
            thread_key=_thread_key(services, message)))
        reply(services, message, card, private=not public)
        return Classification(intent=Intent.incident_status, confidence=1.0, layer="subcommand", text=text)
    if is_lifecycle_command(text):  # mitigated, learned, …: incident moves that are not intents of their own
        card, public = handle_lifecycle_command(services, message, text, thread_key=_thread_key(services, message))
        reply(services, message, card, private=not public)
        return Classification(intent=Intent.incident_status, confidence=1.0, layer="subcommand", text=text)
    classification = services.classifier.classify(text)
    intent = classification.intent
    thread_key = _thread_key(services, message)
    if _vague_question_in_a_thread(services, message, classification, thread_key):
        intent = Intent.diagnose  # "what is going on?" under a discussion: diagnose what the thread is about
    if intent in ANNOTATING:
        _answer_with_annotation(services, message, classification, thread_key)
        diagnosed(services, message, thread_key)  # asked in an incident's thread: it is being investigated
    elif intent is Intent.help:
        reply(services, message, Card(kind="help", title="warroom help", blocks=[TextBlock(text=HELP)]),
              private=True)
    elif intent is Intent.query_metrics:
        reply(services, message, notice(
            "Metrics", "No Prometheus target is configured: add a `prometheus` target to warroom.yml "
                       "(targets.<name>.connector: prometheus) to query metrics from chat.", style="warning"),
              private=True)
    elif intent in LIFECYCLE:
        card, public = handle_lifecycle(services, message, intent, thread_key=thread_key,
                                        reason=_argument(text) if classification.layer == "subcommand" else "")
        reply(services, message, card, private=not public)
    else:
        reply(services, message, notice(
            "Not sure what you mean", "Try `/warroom help`, or describe the symptom, e.g. "
                                      "`/warroom diagnose payments-api is returning 500s`.", style="muted"),
              private=True)
    return classification


def _vague_question_in_a_thread(services: Services, message: ChatMessage, classification: Classification,
                                thread_key: str | None) -> bool:
    if classification.layer == "subcommand" or not (message.thread_context or thread_key):
        return False
    if classification.intent is Intent.unknown:
        return True
    if classification.intent is Intent.incident_status:
        with services.pool.connection() as conn:
            return incident_store.find_open(conn, channel=message.channel, thread=thread_key,
                                            workspace=services.workspace) is None
    return False


_ADDRESSED = re.compile(r"^\s*(?:/warroom|@warroom)\b[\s,:]*", re.I)


def _strip_subcommand_noise(text: str) -> str:
    """The message without the way it was addressed to the bot (`/warroom`, or a typed `@warroom`; adapters
    remove real platform mentions), so `@warroom resolve fixed by rollback` has the reason `fixed by rollback`."""
    return _ADDRESSED.sub("", text).strip()


def _question(text: str, classification: Classification) -> str:
    """What was asked, without the sub-command word that routed it."""
    text = _strip_subcommand_noise(text)
    return (_argument(text) or text) if classification.layer == "subcommand" else text


def _argument(text: str) -> str:
    parts = text.split(maxsplit=1)
    return parts[1].strip() if len(parts) > 1 else ""


def _thread_key(services: Services, message: ChatMessage) -> str | None:
    """The logical key (alert:12, plan:7) of the message a thread hangs off, when the bot knows it."""
    if not message.thread:
        return None
    with services.pool.connection() as conn:
        row = outbox.find_by_message_id(conn, platform=message.platform, channel=message.channel,
                                        message_id=message.thread)
    return row["key"] if row else None


def _thread_alert(services: Services, thread_key: str | None) -> tuple[Alert, int] | None:
    if not thread_key or not thread_key.startswith("alert:"):
        return None
    with services.pool.connection() as conn:
        row = alert_store.get_alert(conn, int(thread_key.split(":", 1)[1]))
    return (Alert.model_validate(row["payload"]), row["id"]) if row else None


def _answer_with_annotation(services: Services, message: ChatMessage, classification: Classification,
                            thread_key: str | None) -> None:
    entities = classification.entities
    alert = _thread_alert(services, thread_key)
    background = "\n".join(message.thread_context[-THREAD_CONTEXT_MESSAGES:]) or None
    # The conversation this answer belongs to: the thread's (by the bot message it hangs off when known); an ask at
    # the top of a channel starts one under the answer's own message key.
    conversation = thread_key or (f"ts:{message.thread}" if message.thread else None)
    memory = thread_memory(services, message, conversation) if conversation else None
    question = _question(message.text, classification)
    annotation, runbook_row = annotate(
        services, alert=alert[0] if alert else None, alert_id=alert[1] if alert else None,
        question=question, service=entities.get("service"),
        environment=entities.get("environment"), background=background, memory=memory)
    environment = entities.get("environment") or (alert[0].environment if alert else None)
    with services.pool.connection() as conn, conn.transaction():
        plan_id, card = store_annotation_plan(
            conn, annotation, runbook_pk=runbook_row["id"] if runbook_row else None,
            alert_id=alert[1] if alert else None, requested_by=message.user.id, platform=message.platform,
            channel=message.channel, thread=message.thread, environment=environment, workspace=services.workspace)
        message_key = f"plan:{plan_id}" if plan_id else None
        if conversation is None and message_key is None:
            message_key = memory_store.new_answer_key(conn)   # so replies under this answer are its thread
        record_exchange(conn, services, message, key=conversation or message_key, question=question,
                        annotation=annotation, plan_id=plan_id, message_key=message_key)
        outbox.enqueue(conn, platform=message.platform, channel=message.channel, op="post",
                       message_key=message_key, thread_id=message.thread, card=_dump(card))
        queued = auto_run(conn, plan_id, services) if plan_id else []
    for step_id in queued:
        services.dispatch(step_id)


def reply(services: Services, message: ChatMessage, card: Card, *, private: bool = False) -> None:
    """Answer in the message's channel and thread; `private` shows it to the asker only where possible."""
    with services.pool.connection() as conn, conn.transaction():
        outbox.enqueue(conn, platform=message.platform, channel=message.channel,
                       op="ephemeral" if private else "post", recipient=message.user.id if private else None,
                       thread_id=message.thread, card=_dump(card))


def _dump(card: Card) -> dict[str, Any]:
    return json.loads(card.model_dump_json())
