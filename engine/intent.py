"""Layered intent classification: explicit sub-command -> nearest labelled examples -> model when unsure."""
from __future__ import annotations

import re
import threading
from importlib import resources
from typing import Callable, Iterable

import numpy as np
import yaml

from engine.alerts import normalise_environment
from engine.embedder import Embedder
from engine.models import Classification, Intent

SUBCOMMANDS: dict[str, Intent] = {
    "diagnose": Intent.diagnose, "why": Intent.diagnose, "investigate": Intent.diagnose,
    "runbook": Intent.runbook, "runbooks": Intent.runbook,
    "metrics": Intent.query_metrics, "query": Intent.query_metrics, "graph": Intent.query_metrics,
    "run": Intent.run_action,
    "status": Intent.incident_status,
    "ack": Intent.acknowledge, "acknowledge": Intent.acknowledge,
    "resolve": Intent.resolve, "resolved": Intent.resolve,
    "escalate": Intent.escalate, "page": Intent.escalate,
    "help": Intent.help, "?": Intent.help,
}
# Words that start ordinary sentences as often as commands ("why is x down", "page the dba"):
# they go through the classifier instead of being taken as sub-commands.
_FREE_TEXT_STARTERS = {"why", "investigate", "page", "query", "graph"}

LOW_CONFIDENCE = 0.55
UNKNOWN_SIMILARITY = 0.30
NEIGHBOURS = 7


def load_examples() -> dict[str, list[str]]:
    data = yaml.safe_load((resources.files("prompts") / "intents.yaml").read_text())
    examples = data["intents"]
    unknown = set(examples) - {i.value for i in Intent}
    if unknown:
        raise ValueError(f"prompts/intents.yaml names unknown intents: {sorted(unknown)}")
    return {k: [str(t) for t in v] for k, v in examples.items()}


class IntentClassifier:
    """Thread-safe; the example matrix is embedded once on first use."""

    def __init__(self, embedder: Embedder, *, known_services: Callable[[], Iterable[str]] | None = None,
                 llm_fallback: Callable[[str], Classification | None] | None = None) -> None:
        self.embedder = embedder
        self.known_services = known_services or (lambda: ())
        self.llm_fallback = llm_fallback
        self._matrix: np.ndarray | None = None
        self._labels: list[str] = []
        self._lock = threading.Lock()

    def _ensure(self) -> None:
        with self._lock:
            if self._matrix is None:
                examples = load_examples()
                texts = [t for intent, items in examples.items() for t in items]
                self._labels = [intent for intent, items in examples.items() for _ in items]
                self._matrix = self.embedder.embed(texts)

    def classify(self, text: str) -> Classification:
        text = text.strip()
        entities = extract_entities(text, self.known_services())
        if not text:
            return Classification(intent=Intent.help, confidence=1.0, entities=entities, layer="subcommand", text=text)
        words = text.split()
        head = words[0].lower().lstrip("/")
        if head in SUBCOMMANDS and head not in _FREE_TEXT_STARTERS:
            return Classification(intent=SUBCOMMANDS[head], confidence=1.0, entities=entities,
                                  layer="subcommand", text=text)
        result = self._nearest(text, entities)
        if result.confidence < LOW_CONFIDENCE and self.llm_fallback is not None:
            better = self.llm_fallback(text)
            if better is not None:
                return better.model_copy(update={"entities": {**entities, **better.entities}, "layer": "llm"})
        return result

    def _nearest(self, text: str, entities: dict) -> Classification:
        self._ensure()
        assert self._matrix is not None
        query = self.embedder.embed([text])[0]
        sims = self._matrix @ query
        top = np.argsort(-sims)[:NEIGHBOURS]
        if float(sims[top[0]]) < UNKNOWN_SIMILARITY:
            return Classification(intent=Intent.unknown, confidence=round(1 - float(sims[top[0]]), 3),
                                  entities=entities, layer="fallback", text=text)
        votes: dict[str, float] = {}
        for idx in top:
            weight = max(float(sims[idx]), 0.0) ** 4  # close neighbours dominate distant ones
            votes[self._labels[idx]] = votes.get(self._labels[idx], 0.0) + weight
        best = max(votes, key=votes.get)
        confidence = votes[best] / sum(votes.values())
        return Classification(intent=Intent(best), confidence=round(confidence, 3), entities=entities,
                              layer="embedding", text=text)


_ENV_PATTERN = re.compile(r"\b(prod|production|prd|staging|stage|stg|preprod|dev|development|qa)\b", re.I)
_SERVICE_PATTERN = re.compile(r"\b([a-z][a-z0-9]*(?:[-_][a-z0-9]+)+)\b")
_SERVICE_BEFORE_WORD = re.compile(r"\b([a-z][a-z0-9]+)\s+(?:service|api|svc|cluster|workers?|db|database)\b", re.I)
_TIME_RANGE = re.compile(r"\b(?:(?:in\s+the\s+)?(?:last|past)\s+(\d+\s*(?:s|sec|m|min|mins|minutes?|h|hr|hrs|hours?|d|days?))"
                         r"|since\s+(\d{1,2}:\d{2}|yesterday|this morning))\b", re.I)
_ACTIONS = ("restart", "rollback", "roll back", "scale", "drain", "flush", "failover", "reboot", "redeploy",
            "kill", "purge", "rotate", "cordon")
_NOT_SERVICES = {"non-zero", "follow-up", "on-call", "read-only", "e-mail", "real-time", "re-run"}


def extract_entities(text: str, known_services: Iterable[str] = ()) -> dict[str, str | None]:
    """Service, environment, time range and action mentioned in free text (None when absent)."""
    lowered = text.lower()
    service = None
    for name in sorted(set(known_services), key=len, reverse=True):
        if name and re.search(rf"(?<![\w-]){re.escape(name.lower())}(?![\w-])", lowered):
            service = name
            break
    if service is None:
        for match in _SERVICE_PATTERN.finditer(lowered):
            candidate = match.group(1)
            if candidate not in _NOT_SERVICES and not _ENV_PATTERN.fullmatch(candidate) and not re.fullmatch(
                    r"[\d:-]+", candidate) and not re.fullmatch(r"eu-|us-|ap-", candidate[:3]):
                service = candidate
                break
    if service is None:
        match = _SERVICE_BEFORE_WORD.search(text)
        if match and match.group(1).lower() not in {"the", "a", "our", "this", "that", "which", "prod", "staging"}:
            service = match.group(1).lower()
    env_match = _ENV_PATTERN.search(text)
    time_match = _TIME_RANGE.search(text)
    action = next((a for a in _ACTIONS if re.search(rf"\b{a}", lowered)), None)
    return {
        "service": service,
        "environment": normalise_environment(env_match.group(1)) if env_match else None,
        "time_range": (time_match.group(1) or time_match.group(2)) if time_match else None,
        "action": action.replace(" ", "") if action else None,
    }
