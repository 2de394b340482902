"""Conversation memory, pure: what one thread has established, applied to the next answer in it.

A thread's turns (storage/memory.py) become a `ThreadMemory`: the causes ruled out (👎, or a person writing "not the
deploy"), the steps that already ran with their results, and a bounded "conversation so far" for a model. The next
answer ranks ruled-out hypotheses down with a note saying who ruled them out, cites steps that already ran instead of
proposing them again, and gives the model the conversation as quoted data. Across threads, an ended conversation is
summarised as a document (`conversation:<thread key>`) that retrieval recalls as a precedent, with its link."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Sequence

from engine.ingest import ParsedDocument, content_hash
from engine.models import Evidence, Hypothesis, Plan

SOURCE_TYPE = "conversation"
RULED_OUT_WEIGHT = 0.5        # a ruled-out cause keeps half its score: still visible, never on top of a live one
CONVERSATION_TURNS = 12       # the newest turns a model sees
CONVERSATION_CHARS = 300      # per turn
_PHRASE_WORDS = 4             # "not the <at most four words>"


@dataclass(frozen=True)
class RuledOut:
    what: str                 # a hypothesis title (👎) or a phrase ("deploy")
    actor: str | None
    by_title: bool            # True: 👎 on this exact title; False: a phrase matched against titles


@dataclass(frozen=True)
class RanStep:
    title: str
    key: str | None
    runbook: str | None
    connector: str | None
    target: str | None
    status: str               # succeeded | failed
    summary: str
    at: datetime | None

    def citation(self) -> str:
        when = f" {self.at:%H:%M}" if self.at else ""
        return f"{self.title} — {self.status}{when}" + (f": {self.summary}" if self.summary else "")


@dataclass
class ThreadMemory:
    key: str
    link: str | None = None
    ruled_out: list[RuledOut] = field(default_factory=list)
    ran: list[RanStep] = field(default_factory=list)
    conversation: list[dict[str, Any]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.ruled_out or self.ran or self.conversation)


def from_turns(key: str, turns: Sequence[dict[str, Any]], *, link: str | None = None,
               extra_texts: Iterable[tuple[str | None, str]] = ()) -> ThreadMemory:
    """`turns`: conversation_turns rows, oldest first. `extra_texts`: (author, text) of thread messages the bot did
    not record (the thread context a platform hands over), read for "not the X" like recorded asks."""
    verdicts: dict[str, RuledOut | None] = {}   # the latest 👍/👎 per title wins
    phrases: dict[str, RuledOut] = {}
    ran: dict[tuple, RanStep] = {}
    for turn in turns:
        kind, refs = turn["kind"], turn.get("refs") or {}
        title = refs.get("hypothesis")
        if kind == "ruled_out" and title:
            verdicts[_norm(title)] = RuledOut(what=title, actor=turn.get("actor"), by_title=True)
        elif kind == "ruled_out" and refs.get("phrase"):
            phrases.setdefault(_norm(refs["phrase"]), RuledOut(refs["phrase"], turn.get("actor"), False))
        elif kind == "confirmed" and title:
            verdicts[_norm(title)] = None
        elif kind == "step_result" and refs.get("status") in ("succeeded", "failed"):
            step = RanStep(title=refs.get("title") or turn["text"], key=refs.get("key"), runbook=refs.get("runbook"),
                           connector=refs.get("connector"), target=refs.get("target"), status=refs["status"],
                           summary=refs.get("summary") or "", at=turn.get("at"))
            ran[(step.runbook, step.key, _norm(step.title))] = step   # the latest result of a step counts
        if kind == "asked":
            for phrase in ruled_out_phrases(turn["text"]):
                phrases.setdefault(_norm(phrase), RuledOut(phrase, turn.get("actor"), False))
    for author, text in extra_texts:
        for phrase in ruled_out_phrases(text):
            phrases.setdefault(_norm(phrase), RuledOut(phrase, author, False))
    conversation = [{"kind": t["kind"], "actor": t.get("actor"), "text": t["text"][:CONVERSATION_CHARS],
                     "at": t["at"].isoformat() if isinstance(t.get("at"), datetime) else t.get("at")}
                    for t in turns[-CONVERSATION_TURNS:]]
    return ThreadMemory(key=key, link=link, ruled_out=[v for v in verdicts.values() if v] + list(phrases.values()),
                        ran=list(ran.values()), conversation=conversation)


# --- "not the deploy": ruled out in plain words -------------------------------------------------------------------

_X = r"(?P<x>[a-z0-9][\w .'/-]*?)"
_END = r"(?=\s*(?:[.,;:!?)]|$|\b(?:so|but|and|or|what|either|any|then|because|since|now)\b))"
_RULED_OUT_PATTERNS = [
    re.compile(rf"\brul(?:ed|e)\s+out\s+(?:the\s+|a\s+|an\s+)?{_X}{_END}", re.I),
    re.compile(rf"\b(?:(?:it'?s|it\s+is|that'?s|that\s+is|this\s+is|it\s+was)\s+not|isn'?t|wasn'?t)\s+"
               rf"(?:the\s+|a\s+|an\s+)?{_X}{_END}", re.I),
    re.compile(rf"(?:^|[.,;!?]\s*|\b(?:but|and|so|definitely|probably|surely)\s+)not\s+(?:the\s+|a\s+|an\s+){_X}{_END}",
               re.I),
    re.compile(r"\b(?:the\s+)?(?P<x>[a-z0-9][\w.'/-]*(?:\s+[a-z0-9][\w.'/-]*)?)\s+(?:is|was|looks|seems|are)\s+"
               r"(?:fine|ok|okay|healthy|good|normal|not\s+it|not\s+the\s+(?:cause|problem|issue))\b", re.I),
]
_NOT_A_CAUSE = frozenset("it this that there what which everything nothing something anything all problem issue "
                         "cause".split())


def ruled_out_phrases(text: str) -> list[str]:
    """What a message says is not the cause: "not the deploy", "ruled out the db pool", "it's not DNS",
    "the database is fine" -> ["deploy", "db pool", "dns", "database"]. Deterministic, conservative."""
    found = []
    for pattern in _RULED_OUT_PATTERNS:
        for match in pattern.finditer(text or ""):
            phrase = " ".join(match.group("x").lower().split()[:_PHRASE_WORDS]).strip(" '\"")
            if phrase and phrase not in found and not set(phrase.split()) <= _NOT_A_CAUSE:
                found.append(phrase)
    return found


# --- (a) ruled-out hypotheses ranked down -------------------------------------------------------------------------

_SYNONYMS = {"deploy": {"deploy", "deploym", "releas", "rollou", "rolled", "rollba"},
             "databa": {"databa", "postgr", "db"}, "db": {"databa", "postgr", "db"}}
_GENERIC = frozenset("the a an of in on recent cause problem issue".split())


def ruled_out_by(hypothesis: Hypothesis, memory: ThreadMemory | None) -> RuledOut | None:
    if memory is None:
        return None
    title = _norm(hypothesis.title)
    words = _stems(hypothesis.title)
    for item in memory.ruled_out:
        if item.by_title:
            if _norm(item.what) == title:
                return item
            continue
        wanted = _stems(item.what)
        if wanted and all(words & _SYNONYMS.get(w, {w}) for w in wanted):
            return item
    return None


def rank_down(hypotheses: list[Hypothesis], memory: ThreadMemory | None) -> tuple[list[Hypothesis], list[Hypothesis]]:
    """(live, ruled out): the ruled-out ones with their score scaled down and a note saying who ruled them out."""
    live, ruled = [], []
    for hypothesis in hypotheses:
        item = ruled_out_by(hypothesis, memory)
        if item is None:
            live.append(hypothesis)
            continue
        note = f"Ruled out earlier in this thread by {item.actor or 'someone'}" + \
               ("" if item.by_title else f" (“not the {item.what}”)")
        ruled.append(hypothesis.model_copy(update={
            "confidence": round(hypothesis.confidence * RULED_OUT_WEIGHT, 3),
            "evidence": [Evidence(kind="thread", text=note, source=memory.link or f"thread {memory.key}"),
                         *hypothesis.evidence]}))
    return live, ruled


# --- (b) steps that already ran: cited, not proposed again ---------------------------------------------------------

def skip_ran_steps(plan: Plan, memory: ThreadMemory | None) -> tuple[Plan, list[str]]:
    """The plan without the steps that already succeeded in this thread, and a line citing each step's result
    (failed ones stay proposed: running them again is a person's call, with the earlier failure in view)."""
    if memory is None or not memory.ran or not plan.steps:
        return plan, []
    notes, dropped, kept = [], set(), []
    for step in plan.steps:
        earlier = _earlier_run(step, plan.runbook_id, memory.ran)
        if earlier is None:
            kept.append(step)
            continue
        notes.append(f"Already ran in this thread: {earlier.citation()}")
        if earlier.status == "succeeded":
            dropped.add(step.key)
        else:
            kept.append(step)
    if not dropped:
        return plan, notes
    # A step waiting for one that already succeeded here waits for nothing any more.
    kept = [s.model_copy(update={"needs": [n for n in s.needs if n not in dropped]}) if s.needs is not None else s
            for s in kept if s.key not in dropped]
    return plan.model_copy(update={"steps": kept}), notes


def _earlier_run(step, runbook: str | None, ran: list[RanStep]) -> RanStep | None:
    for earlier in ran:
        if runbook and earlier.runbook == runbook and earlier.key == step.key:
            return earlier
        if _norm(earlier.title) == _norm(step.title) and earlier.connector == step.connector \
                and earlier.target == step.target:
            return earlier
    return None


# --- across threads: an ended conversation as a precedent ----------------------------------------------------------

def conversation_source(key: str) -> str:
    return f"{SOURCE_TYPE}:{key}"


def conversation_document(key: str, turns: Sequence[dict[str, Any]], *, why: str, link: str | None,
                          services: list[str] | None = None) -> ParsedDocument | None:
    """A short summary of one thread (question, confirmed cause, what ran, outcome) as a searchable document."""
    asked = [t["text"] for t in turns if t["kind"] == "asked"]
    if not asked:
        return None
    memory = from_turns(key, turns, link=link)
    confirmed = [(t.get("refs") or {}).get("hypothesis") for t in turns if t["kind"] == "confirmed"]
    answered = [t["text"] for t in turns if t["kind"] == "answered"]
    cause = next((c for c in reversed(confirmed) if c), None) or (answered[-1] if answered else "")
    succeeded = [r.title for r in memory.ran if r.status == "succeeded"]
    when = next((t["at"] for t in turns if isinstance(t.get("at"), datetime)), None)
    title = f"Earlier thread{f' of {when:%Y-%m-%d}' if when else ''}: {asked[0][:100]}"
    lines = [title, f"Question: {asked[0]}"]
    lines += [f"Follow-up: {a}" for a in asked[1:4]]
    if cause:
        lines.append(f"{'Confirmed cause' if confirmed else 'Answer'}: {cause}")
    lines += [f"Ruled out: {r.what} (by {r.actor or 'someone'})" for r in memory.ruled_out]
    lines += [f"Ran: {r.citation()}" for r in memory.ran]
    lines.append(f"Outcome: {why}")
    if link:
        lines.append(f"Thread: {link}")
    text = "\n".join(lines)
    resolution = "; ".join(filter(None, [cause, *succeeded]))
    return ParsedDocument(
        source=conversation_source(key), source_type=SOURCE_TYPE, title=title,
        content_hash=content_hash(text.encode()), services=services or [],
        chunks=[{"title": title, "heading": "Conversation summary", "text": text, "source_type": SOURCE_TYPE,
                 "services": services or []}],
        metadata={"thread_key": key, "resolution": resolution or why, "link": link})


# --- pieces ---------------------------------------------------------------------------------------------------------

def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _stems(text: str) -> set[str]:
    words = re.findall(r"[a-z0-9][a-z0-9_]*", text.lower())
    return {w[:6] for w in words if w not in _GENERIC and (len(w) > 2 or w == "db")}
