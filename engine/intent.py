"""Layered intent classification: explicit sub-command -> nearest labelled examples -> model when unsure.

The middle layer scores every intent from the labelled examples in `prompts/intents.yaml` (the mean
similarity of its closest examples blended with its centroid), adds a bonus for cue phrases
("mark resolved", "page the dba", "i'm on it"), and turns the scores into a distribution whose top
probability is the reported confidence: a close runner-up lowers it, so the model is consulted exactly
when the examples disagree. Entities come from rules (`extract_entities`), known services first.
"""
from __future__ import annotations

import re
import threading
import unicodedata
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
_FREE_TEXT_STARTERS = {"why", "investigate", "page", "query", "graph", "metrics"}

LOW_CONFIDENCE = 0.55      # below this the LLM fallback (when wired) is consulted
UNKNOWN_SIMILARITY = 0.30  # nothing labelled is even this close: not an incident message
CLASS_NEIGHBOURS = 5       # an intent's score is the mean similarity of its closest examples ...
CENTROID_WEIGHT = 0.3      # ... blended with the similarity to its centroid
TEMPERATURE = 0.05         # similarity units per e-fold of probability
CUE_BONUS = 0.16           # what a precise cue phrase adds to its intent's similarity score


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
        self._labels: np.ndarray = np.array([])
        self._intents: list[str] = []
        self._centroids: np.ndarray | None = None
        self._lock = threading.Lock()

    def _ensure(self) -> None:
        with self._lock:
            if self._matrix is not None:
                return
            examples = load_examples()
            texts = [normalise(t) for items in examples.values() for t in items]
            labels = [intent for intent, items in examples.items() for _ in items]
            matrix = self.embedder.embed(texts)
            self._intents = list(examples)
            self._labels = np.array([self._intents.index(label) for label in labels])
            centroids = np.stack([matrix[self._labels == i].mean(axis=0) for i in range(len(self._intents))])
            self._centroids = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
            self._matrix = matrix

    def classify(self, text: str) -> Classification:
        text = text.strip()
        entities = extract_entities(text, self.known_services())
        if not _strip_bot_address(text.lower()):
            return self._result(Intent.help, 1.0, entities, "subcommand", text)  # "@warroom" on its own
        clean = normalise(text)
        words = clean.split()
        head = words[0].strip(":,.!?") or words[0] if words else ""
        if head in SUBCOMMANDS and head not in _FREE_TEXT_STARTERS:
            return self._result(SUBCOMMANDS[head], 1.0, entities, "subcommand", text)
        if not re.search(r"[a-z0-9]", clean):
            return self._result(Intent.unknown, 1.0, entities, "fallback", text)  # emoji, filler, punctuation
        result = self._nearest(clean, text, entities)
        if result.confidence < LOW_CONFIDENCE and self.llm_fallback is not None:
            better = self.llm_fallback(text)
            if better is not None:
                return better.model_copy(update={"entities": {**entities, **better.entities}, "layer": "llm"})
        return result

    @staticmethod
    def _result(intent: Intent, confidence: float, entities: dict, layer: str, text: str) -> Classification:
        return Classification(intent=intent, confidence=round(confidence, 3), entities=entities, layer=layer,
                              text=text)

    def _scores(self, clean: str) -> tuple[dict[str, float], float]:
        """Per-intent scores (cue bonuses included) for normalised text, and the best single similarity."""
        self._ensure()
        assert self._matrix is not None and self._centroids is not None
        query = self.embedder.embed([clean])[0]
        sims = self._matrix @ query
        centroid_sims = self._centroids @ query
        cues = cue_intents(clean)
        out = {}
        for i, intent in enumerate(self._intents):
            closest = np.sort(sims[self._labels == i])[-CLASS_NEIGHBOURS:]
            score = (1 - CENTROID_WEIGHT) * float(closest.mean()) + CENTROID_WEIGHT * float(centroid_sims[i])
            out[intent] = score + (CUE_BONUS if intent in cues else 0.0)
        return out, float(sims.max())

    def _nearest(self, clean: str, text: str, entities: dict) -> Classification:
        scores, nearest = self._scores(clean)
        if nearest < UNKNOWN_SIMILARITY and not cue_intents(clean):
            return self._result(Intent.unknown, 1 - nearest, _without_service(entities), "fallback", text)
        names = list(scores)
        values = np.array([scores[n] for n in names]) / TEMPERATURE
        probabilities = np.exp(values - values.max())  # softmax: the runner-up's closeness lowers confidence
        probabilities /= probabilities.sum()
        best = int(probabilities.argmax())
        intent = Intent(names[best])
        if intent in (Intent.unknown, Intent.help):
            entities = _without_service(entities)
        return self._result(intent, float(probabilities[best]), entities, "embedding", text)


def _without_service(entities: dict) -> dict:
    """Chatter and questions about the bot are about no service ("anyone up for tacos" names no `tacos`)."""
    return {**entities, "service": None}


# --- normalising chat text ---------------------------------------------------------------------

# How people type in incident channels, spelled out so the embedding sees ordinary words.
_SHORTHAND = {
    "pls": "please", "plz": "please", "plss": "please", "rn": "right now", "u": "you", "ur": "your",
    "r": "are", "thru": "through", "wat": "what", "wut": "what",
    "y": "why", "ppl": "people", "bc": "because", "b/c": "because", "idk": "i do not know",
    "whats": "what is", "hows": "how is", "wheres": "where is", "whos": "who is", "im": "i am",
    "ive": "i have", "cant": "can not", "dont": "do not", "doesnt": "does not", "isnt": "is not",
    "theyre": "they are", "its": "it is", "thats": "that is", "ack'd": "acknowledged",
    "ackd": "acknowledged", "acked": "acknowledged", "acking": "acknowledging", "ack'ing": "acknowledging",
    "tldr": "tl;dr summary",
    "tl;dr": "tl;dr summary", "sitrep": "situation report status", "ic": "incident commander",
    "rca": "root cause", "runbok": "runbook", "runbk": "runbook", "resolv": "resolve",
    "k": "ok", "kk": "ok", "thx": "thanks", "ty": "thank you", "tx": "thanks", "brb": "be right back",
    "afk": "away from keyboard", "hbd": "happy birthday", "sry": "sorry", "yep": "yes", "yup": "yes",
    "nah": "no", "lmk": "let me know", "q": "question", "sev": "severity", "pm": "postmortem",
    "svc": "service", "prd": "prod", "stg": "staging", "env": "environment", "db": "database",
}
# Frustration and filler carry no intent; dropping them keeps the embedding on the content.
_FILLER = {"ffs", "wtf", "omg", "ugh", "fml", "lol", "lmao", "tbh", "fyi", "yo", "hey", "hi", "so", "um", "uh",
           "tho", "though", "again", "like", "crazy", "asap", "urgently"}
_BOT_ADDRESS = re.compile(r"^(?:<@\w+(?:\|[^>]*)?>|@?warroom\b|/warroom\b)[\s,:]*")
_EMOJI_CODE = re.compile(r":[a-z_+'-][a-z0-9_+'-]*:")  # :fire:, :+1: -- but not the :05: of 10:05:30
_WORD = re.compile(r"[a-z0-9][\w'/;+.-]*[a-z0-9]|[a-z0-9]")


def _strip_bot_address(lowered: str) -> str:
    previous = None
    while previous != lowered:  # "@warroom /warroom help" has two
        previous, lowered = lowered, _BOT_ADDRESS.sub("", lowered.strip())
    return lowered


def _strip_symbols(text: str) -> str:
    """Emoji and other pictographs become spaces; letters, digits and punctuation stay."""
    return "".join(" " if unicodedata.category(c) in ("So", "Sk", "Cs", "Co") else c for c in text)


def chat_text(text: str) -> str:
    """Lower-case text without the bot address, emoji, Slack link markup and filler words."""
    lowered = _strip_bot_address(_EMOJI_CODE.sub(" ", _strip_symbols(text.lower())))
    lowered = re.sub(r"<(https?://[^|>]+)(?:\|[^>]*)?>", r"\1", lowered)
    lowered = re.sub(r"(?<!\S)w/o(?!\S)", "without", re.sub(r"(?<!\S)w/(?=\s)", "with ", lowered))
    lowered = _WORD.sub(lambda m: "" if m.group(0) in _FILLER else m.group(0), lowered)
    return re.sub(r"\s+", " ", re.sub(r"\s+([,.!?])", r"\1", lowered)).strip(" ,.")


def normalise(text: str) -> str:
    """`chat_text` with chat shorthand spelled out, so the embedding sees ordinary words."""
    return _WORD.sub(lambda m: _SHORTHAND.get(m.group(0), m.group(0)), chat_text(text))


# --- cue phrases --------------------------------------------------------------------------------
# Phrasings characteristic of one intent (precise for ack/resolve/escalate/status/help, looser for the
# rest). They add a bonus to the embedding score rather than deciding outright, so an odd sentence that
# happens to contain one can still be outvoted, and two intents' cues cancel out.

_ABOUT_THE_BOT = re.compile(
    r"\b(you|the bot|this bot|warroom|this thing|these buttons|the buttons?)\b|\b(commands?|sub-?commands?|syntax)\b")
_HOW_DO_I = re.compile(r"^(?:help(?: me)?,? )?(how (do|can|should|would) (i|we)|how to|is there a way to|"
                       r"what is the (command|syntax)|what (should|do|can) i (type|say|ask)|what to type)\b")
_HELP_CUES = re.compile(
    r"\b(what can you do|what are you|what do you (support|understand|do)|your (commands|capabilities|features)|"
    r"capabilit(y|ies)|capable of|cheat ?sheet|^usage|how does (this|the) (bot|thing) work|how do i use|"
    r"list (of )?(your )?commands|what commands|help me use|getting started|(docs|manual|guide) (for|on) "
    r"(warroom|the bot|this bot|using)|what does the \w+ button do|how to use (you|warroom|the bot|this)|"
    r"^what does (/?warroom )?\S+ do|what (should|do|can) i (type|say))\b")

_CUES: dict[str, re.Pattern] = {
    "acknowledge": re.compile(
        r"^(ok |ok, |yes |yes, |sure |sure, |roger( that)?,? |copy,? |primary here,? )?"
        r"(acknowledg\w*|(i am |i'm )?on (it|this)|mine|dibs|taking (this|it|point|ownership|lead|the)|"
        r"grabbing|claiming|owning|got (it|this|the page)|i (got|have) (it|this|the)|i'll (take|own|handle|grab)|"
        r"will take|(i am|i'm) (the )?(incident commander|on it|on this|on the)|seen it|handling (it|this)|"
        r"(i'll |i will |i am |i'm )?(pick|picking) (it |this |this one )?up)\b"
        r"|\b(ack|acknowledged|acknowledging|i am on it|i'm on it|on it)$"),
    "resolve": re.compile(
        r"\b((mark|set)\w* (it |this |the incident |incident |as |to |it as )*(resolved|fixed|done|closed)|"
        r"^resolv\w*|resolv(e|ed|ing)( it| the incident| this)?$|(close|closing|closed) (it|this|the incident|"
        r"incident|out|the war room)|closing$|all clear|stand down|false (alarm|positive)|"
        r"back to (normal|baseline)|(we|you|can) (can )?(close|resolve)|good to (close|resolve)|"
        r"incident (is )?over|, (close|resolve)( it| this)?( please)?$)\b"),
    "escalate": re.compile(
        r"(^page\b(?! me)|\bpage (the|@|whoever|someone|secondary|primary|them|everyone|in)\b|\bescalat\w*|"
        r"\bwake (up )?(the|whoever|someone|\w+ up)|\b(bump|raise|upgrade)\w* (it |this )?(severity |sev )?"
        r"(to )?(severity ?[0-2]|sev ?[0-2]|p[0-2])\b|\bloop in\b|\bneed (more )?(hands|backup|reinforcements)|"
        r"\b(get|bring|pull|call)( in)? (the|someone|an?|more) [\w -]*(team|on-?call|owners?|expert|sme|folks|"
        r"devs|dba|lead|maintainers|leadership|management)\b)"),
    "incident_status": re.compile(
        r"(^(status|situation report|update|updates|recap|summary|tl;dr|eta)\b|\bany (update|updates|news|"
        r"progress|eta|movement)\b|\bwhere (are|do) we (stand|at)\b|\bwhere are we\b|\bcatch (me )?up\b|"
        r"\bwhat is the (latest|status|state|impact|eta|current)\b|"
        r"\bwho is (the )?(incident commander|on this|working|looking|leading)|\bstill "
        r"(firing|down|broken|degraded|open|ongoing|flapping)\b|^(is|are|has|have|did) .*\b(resolved|mitigated|"
        r"acknowledged|fixed|recovered|over)\b|\bwhat (have we|did we|has been) (tried|done|run)|\btimeline\b|"
        r"\bhow long has\b|\b(waiting for|pending) approval)"),
    "runbook": re.compile(
        r"\b(runbooks?|playbooks?|sop|procedures?|documented|wiki|checklist|how-?to|written (down|procedure|steps)|"
        r"docs? (on|for|about))\b"),
    "diagnose": re.compile(
        r"\b(why|root cause(?! (was|is))|investigate|what (broke|changed|happened)|"
        r"what is (wrong|causing|making|behind)|"
        r"explain|dig into|figure out|cause\??$)"),
    "query_metrics": re.compile(
        r"\b(graph|plot|chart|dashboards?|histogram|percentiles?|trend|p\d{2}|rps|qps|per (second|sec|minute|min|"
        r"hour)|(over|in) the (last|past)|(last|past) \d+ ?(m|h|d|mins?|minutes|hours?|days?)\b)"),
    "run_action": re.compile(
        r"^(please |can you |go ahead( and)?,? |yes,? |ok,? )?(restart|bounce|kick|scale|roll ?back|rollback|"
        r"redeploy|revert|flush|drain|failover|fail over|reload|kill|rerun|re-run|pause|resume|disable|enable|"
        r"purge|cordon|uncordon|promote|requeue|rotate|bump|increase|decrease|shift|execute|apply|approve|trigger|"
        r"warm|evict|step down|defrag|delete|clear|reset|unseal|block|unblock|turn (off|on)|stop|do the|run the)\b"),
}
_QUESTION_ABOUT_STATE = re.compile(r"^(is|are|has|have|did|was|were|any|when|who)\b|\byet\b.*\?")


def cue_intents(clean: str) -> set[str]:
    """Intents whose precise cue phrases occur in the (normalised) text."""
    if _HOW_DO_I.search(clean) and _ABOUT_THE_BOT.search(clean) or _HELP_CUES.search(clean):
        return {"help"}  # "how do i resolve an incident with you" is a question about the bot
    found = {intent for intent, pattern in _CUES.items() if pattern.search(clean)}
    if _QUESTION_ABOUT_STATE.search(clean):
        found -= {"resolve", "acknowledge"}  # "is it resolved yet?" asks for status
    return found


# --- entities -----------------------------------------------------------------------------------

_ENV_PATTERN = re.compile(r"\b(pre-?prod|prod|production|prd|staging|stage|stg|dev|development|qa)\b", re.I)
_TIME_RANGE = re.compile(
    r"\b(?:(?:in\s+|over\s+)?(?:the\s+)?(?:last|past)\s+(\d+\s*(?:s|sec|secs|m|min|mins|minutes?|h|hr|hrs|hours?|"
    r"d|days?|w|weeks?)|hour|day|week)|since\s+(\d{1,2}(?::\d{2})?\s*(?:am|pm)?|yesterday|midnight|this morning|"
    r"the deploy)|(today|yesterday|this morning|overnight))\b", re.I)
_ACTIONS = {
    "restart": "restart", "bounce": "restart", "reboot": "reboot", "rollback": "rollback", "roll back": "rollback",
    "revert": "rollback", "rollout undo": "rollback", "scale": "scale", "drain": "drain", "flush": "flush",
    "failover": "failover", "fail over": "failover", "redeploy": "redeploy", "kill": "kill", "purge": "purge",
    "rotate": "rotate", "cordon": "cordon", "reload": "reload", "pause": "pause", "disable": "disable",
}
# Well-known infrastructure that people name bare ("redis is full"); single words are services only
# when they are one of these, a known service, or stand where a service name stands.
WELL_KNOWN = {
    "redis", "postgres", "postgresql", "mysql", "mariadb", "mongo", "mongodb", "kafka", "zookeeper", "etcd",
    "consul", "vault", "nginx", "haproxy", "envoy", "traefik", "istio", "linkerd", "kong", "varnish",
    "memcached", "rabbitmq", "nats", "pulsar", "elasticsearch", "opensearch", "kibana", "logstash", "fluentd",
    "cassandra", "scylla", "clickhouse", "cockroachdb", "dynamodb", "rds", "s3", "sqs", "minio", "ceph",
    "airflow", "celery", "sidekiq", "spark", "flink", "jenkins", "argocd", "grafana", "prometheus", "thanos",
    "loki", "alertmanager", "pgbouncer", "keycloak", "coredns", "tomcat", "gunicorn", "temporal", "sentry",
}
_HYPHENATED_WORDS = {
    "non-zero", "follow-up", "follow-ups", "on-call", "read-only", "e-mail", "real-time", "re-run", "how-to",
    "all-hands", "step-by-step", "out-of-memory", "long-running", "end-to-end", "built-in", "opt-in", "opt-out",
    "sign-in", "sign-up", "log-in", "roll-out", "roll-back", "set-up", "start-up", "shut-down", "time-out",
    "dry-run", "third-party", "up-to-date", "back-off", "write-up", "post-mortem", "pre-prod", "non-prod",
    "in-flight", "one-off", "hot-fix", "x-ray", "double-check", "multi-region", "cross-region", "sub-command",
    "sub-commands", "oom-killed", "crash-looping", "5xx-rate", "per-second", "well-known", "high-priority",
}
# Words that stand where a service name stands but are not services: generic nouns, pronouns, places.
_NOT_A_SERVICE = {
    "the", "a", "an", "this", "that", "these", "those", "it", "its", "it's", "everything", "all", "everyone",
    "anyone", "someone", "something", "nothing", "we", "they", "you", "me", "us", "i", "he", "she", "which",
    "what", "who", "our", "my", "your", "their", "whole", "entire", "new", "old", "failed", "stuck", "bad",
    "current", "first", "last", "next", "same", "other", "main", "primary", "secondary", "disk", "disks", "cpu",
    "memory", "mem", "db", "database", "network", "networking", "dns", "cert", "certs", "ssl", "tls", "node",
    "nodes", "pod", "pods", "host", "hosts", "cluster", "k8s", "kube", "kubernetes", "edge", "cdn", "lb", "api",
    "app", "service", "alert", "alerts", "page", "incident", "outage", "issue", "issue's", "thing", "status",
    "health", "error", "errors", "latency", "traffic", "load", "queue", "cache", "logs", "storage", "security",
    "platform", "infra", "data", "cloud", "eu", "us", "region", "team", "web", "site",
    "website", "prod", "production", "staging", "stage", "dev", "development", "qa", "is", "are", "was", "be",
    "why", "how", "where", "when", "there", "here", "now", "today", "tonight", "again", "still", "just", "also",
    "please", "pls", "ok", "yes", "no", "not", "mine", "on", "in", "for", "of", "to", "with", "sre", "ops",
    "oncall", "secondary's", "management", "leadership", "customers", "users", "user", "request", "requests",
    "job", "jobs", "worker", "workers", "step", "plan", "runbook", "metrics", "dashboard", "graph", "vendor",
    "aws", "gcp", "azure", "everything's", "that's", "it", "one", "some", "any", "every", "more", "most",
    "fire", "down", "up", "slow", "back", "fine", "good", "green", "red", "config", "deploy", "release",
    "from", "into", "onto", "about", "after", "before", "over", "under", "very", "really", "many", "much", "few",
    "lot", "right", "morning", "evening", "night", "weekend", "tomorrow", "yesterday", "bot", "commands",
    "command", "approval", "approvals", "steps", "them", "him", "her", "whoever", "somebody", "anybody",
}
_NAME = r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*"
_HYPHENATED = re.compile(r"(?<![\w.@-])([a-z][a-z0-9]*(?:[-_][a-z0-9]+)+)(?:'s)?(?![\w-])")
_NOT_SERVICE_CONTEXT = re.compile(  # the name right after these is a namespace, flag, host or cluster
    r"(?:-n|--namespace|namespace|ns|flag|feature flag|host|node|cluster|region|zone|inc|ticket)\s+$")
_NOT_SERVICE_FOLLOWER = re.compile(r"^\s+(?:namespace|ns|cluster|region|zone|flag|node|nodes|host)\b")
_ENV_WORD = r"(?:(?:prod|production|prd|staging|stg|dev)\s+)?"
# Where a bare word stands for a service: before a service noun ("the onboarding service", "payouts job"),
# as the subject of a symptom ("loyalty is down", "prod checkout impacted"), as the object of an action
# ("restart ledger"), or closing a clause after a preposition ("p99 for ledger", "anything on billing?").
_SERVICE_NOUN = re.compile(  # a lookahead, so "how many jobs" still finds "many jobs" after rejecting "how"
    r"\b(?=(" + _NAME + r")(?:'s)?(?:\s+(?!(?:the|an?|this|that|my|our|your)\b)[a-z]+)?\s+(?:service|svc|api|"
    r"app|job|jobs|workers?|pods?|deployment|consumers?|queues?|incident|alert|page|outage|team|owners?|folks|"
    r"devs|on-?call|maintainers|expert|issue|thing|db|database|cache|logs|dashboards?|replicas|instances|batch|"
    r"cron|cluster|nodes)(?![\w-]))")  # "db" but not "db-07"
_SERVICE_SUBJECT = re.compile(
    r"(?:^|[,.;:!?(]\s*)(?:the\s+)?" + _ENV_WORD + r"(" + _NAME + r")(?:'s)?\s+(?:(?:is|are|was|has|keeps|kept"
    r"|started|still)\s+)?(?:down|slow|broken|failing|erroring|throwing|returning|returns|timing|crash\w*|oom\w*|"
    r"back|healthy|fixed|stable|degraded|flapping|stuck|dead|impacted|affected|recovered|dropping|dropped|"
    r"rejecting|refusing|hanging|lagging|latency|errors|p\d\d|rps|throughput|queries|requests|signups|memory|cpu|"
    r"no longer|not)\b")
_SERVICE_OBJECT = re.compile(
    r"\b(?:restart|bounce|kick|redeploy|revert|flush|drain|failover|reload|kill|rerun|pause|resume|warm|"
    r"requeue|escalate|page|scale(?: up| down)?|roll ?back|rollback|why (?:is|are|does|did|do|was|would))\s+"
    r"(?:the\s+)?(?:(?:stuck|failed|failing|bad|broken|old|new|whole|entire)\s+)?(" + _NAME + r")(?:'s)?\b")
_SERVICE_CLAUSE_END = re.compile(
    r"\b(?:on|with|for|of|about|at|from)\s+(?:the\s+)?" + _ENV_WORD + r"(" + _NAME + r")(?:'s)?"
    r"(?=\s*(?:$|[,.;:!?)])|\s+(?:right now|rn|today|since|last|past|over|in|on|please|pls|yet|now)\b)")
_SERVICE_CONTEXTS = (_SERVICE_NOUN, _SERVICE_SUBJECT, _SERVICE_OBJECT, _SERVICE_CLAUSE_END)


_VERBS = {*SUBCOMMANDS, *(a.split()[0] for a in _ACTIONS), "close", "closing", "acknowledge", "check", "checking",
          "get", "show", "find", "look", "looking", "take", "taking", "grab", "open", "need", "want", "escalated",
          "paged", "stand", "mark", "set", "wake", "bring", "call"}


def extract_entities(text: str, known_services: Iterable[str] = ()) -> dict[str, str | None]:
    """Service, environment, time range and action mentioned in free text (None when absent)."""
    lowered = chat_text(text)
    env_match = _ENV_PATTERN.search(lowered)
    time_match = _TIME_RANGE.search(lowered)
    action = next((canonical for word, canonical in _ACTIONS.items() if re.search(rf"\b{word}", lowered)), None)
    return {
        "service": find_service(lowered, known_services),
        "environment": _environment(env_match.group(1)) if env_match else None,
        "time_range": next((g for g in time_match.groups() if g), None) if time_match else None,
        "action": action,
    }


def _environment(word: str) -> str | None:
    return "staging" if word.lower().replace("-", "") == "preprod" else normalise_environment(word)


def find_service(lowered: str, known_services: Iterable[str] = ()) -> str | None:
    """The service a message is about: a known one first, then a service-shaped name, then a name
    standing where services stand. Hosts, regions, namespaces, clusters and flags are not services."""
    for name in sorted({s for s in known_services if s}, key=len, reverse=True):
        if re.search(rf"(?<![\w-]){re.escape(name.lower())}(?![\w-])", lowered):
            return name
    for match in _HYPHENATED.finditer(lowered):
        if _is_service_name(match.group(1), lowered, match.start(1), match.end(1)):
            return match.group(1)
    for word in re.findall(r"[a-z0-9]+", lowered):
        if word in WELL_KNOWN:
            return word
    candidates = [(m.start(1), m.group(1)) for pattern in _SERVICE_CONTEXTS for m in pattern.finditer(lowered)
                  if _is_bare_service_word(m.group(1), lowered, m.start(1), m.end(1))]
    return min(candidates)[1] if candidates else None


def _is_service_name(name: str, text: str, start: int, end: int) -> bool:
    """A hyphenated name is a service unless it is a host/region/zone (ends in a number), an English
    compound, an incident id, or stands where a namespace, flag or cluster name stands."""
    if name in _HYPHENATED_WORDS or name.startswith("kube-") or _ENV_PATTERN.fullmatch(name):
        return False
    if re.search(r"\d[a-z]?$", name) and not re.search(r"-v\d+$", name):
        return False  # web-01, lb-prod-2, eu-west-1, us-east-1a, ip-10-0-3-17, inc-4471
    if any(_ENV_PATTERN.fullmatch(part) for part in re.split(r"[-_]", name)):
        return False  # gke-prod, prod-eu, k8s-staging: clusters and namespaces carry the environment
    return not _in_non_service_position(text, start, end)


def _is_bare_service_word(word: str, text: str, start: int, end: int) -> bool:
    if word in _NOT_A_SERVICE or word in _SHORTHAND or word in _FILLER or len(word) < 3 or word in _VERBS:
        return False
    if re.search(r"\d", word) or _ENV_PATTERN.fullmatch(word) or "-" in word or "_" in word:
        return False  # hyphenated names were judged already
    return not _in_non_service_position(text, start, end)


def _in_non_service_position(text: str, start: int, end: int) -> bool:
    return bool(_NOT_SERVICE_CONTEXT.search(text[:start]) or _NOT_SERVICE_FOLLOWER.match(text[end:]))
