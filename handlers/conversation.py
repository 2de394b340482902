"""Conversation memory at the edges: load what a thread established before answering in it, record what was
asked and answered, and index ended conversations so later threads recall them as precedents."""
from __future__ import annotations

import logging
from typing import Iterable

from engine import memory as engine_memory
from engine.memory import ThreadMemory
from engine.models import Annotation, ChatMessage
from handlers.services import Services
from storage import memory as memory_store

log = logging.getLogger(__name__)


def speaker(message: ChatMessage) -> str:
    return message.user.name or message.user.email or message.user.id


def thread_memory(services: Services, message: ChatMessage, key: str) -> ThreadMemory:
    """The thread's memory, with "not the X" read from the thread's own messages (the platform's thread context,
    whose authors it does not give) and from this message; newly read ones are recorded for later answers."""
    with services.pool.connection() as conn, conn.transaction():
        where = {"platform": message.platform, "channel": message.channel, "thread_key": key,
                 "workspace": services.workspace}
        turns = memory_store.turns(conn, **where)
        known = {(t.get("refs") or {}).get("phrase") for t in turns if t["kind"] == "ruled_out"}
        added = False
        for text in message.thread_context:
            for phrase in engine_memory.ruled_out_phrases(text):
                if phrase not in known:
                    known.add(phrase)
                    memory_store.record(conn, kind="ruled_out", text=text, refs={"phrase": phrase}, **where)
                    added = True
        if added:
            turns = memory_store.turns(conn, **where)
        link = memory_store.permalink(conn, platform=message.platform, thread_key=key)
    return engine_memory.from_turns(key, turns, link=link, extra_texts=[(speaker(message), message.text)])


def record_exchange(conn, services: Services, message: ChatMessage, *, key: str, question: str,
                    annotation: Annotation, plan_id: int | None, message_key: str | None) -> None:
    """The question and the answer's top hypotheses, as two turns of the thread."""
    where = {"platform": message.platform, "channel": message.channel, "thread_key": key,
             "workspace": services.workspace}
    memory_store.record(conn, kind="asked", text=question, actor=speaker(message),
                        refs={"message_id": message.message_id}, **where)
    titles = [h.title for h in annotation.hypotheses]
    answer = "; ".join(f"{h.title} ({h.confidence:.0%})" for h in annotation.hypotheses) or "inconclusive"
    if annotation.plan and annotation.plan.steps:
        answer += f". Plan: {annotation.plan.title} ({', '.join(s.title for s in annotation.plan.steps)})"
    memory_store.record(conn, kind="answered", text=answer, actor="warroom",
                        refs={"plan_id": plan_id, "message_key": message_key, "hypotheses": titles}, **where)


def index_ended(services: Services) -> int:
    """Index every ended conversation not indexed yet (a worker ends them; it has no embedder). Returns how many."""
    from engine.knowledge import store_parsed   # ingest imports stay off the chat path until needed

    with services.pool.connection() as conn:
        pending = memory_store.pending_ended(conn, workspace=services.workspace)
    done = 0
    for row in pending:
        with services.pool.connection() as conn:
            turns = memory_store.turns(conn, platform=row["platform"], channel=row["channel"],
                                       thread_key=row["thread_key"], workspace=services.workspace)
            link = memory_store.permalink(conn, platform=row["platform"], thread_key=row["thread_key"])
            services_named = _services_of(conn, turns)
        doc = engine_memory.conversation_document(row["thread_key"], turns, why=row["why"], link=link,
                                                  services=services_named)
        if doc is not None:
            store_parsed(services.pool, services.embedder, doc, workspace=services.workspace)
            done += 1
        with services.pool.connection() as conn, conn.transaction():
            memory_store.mark_indexed(conn, row)
    return done


def index_ended_quietly(services: Services) -> None:
    try:
        index_ended(services)
    except Exception:  # an answer never fails for the index; the rows stay pending and are tried next time
        log.exception("indexing ended conversations failed")


def _services_of(conn, turns: Iterable[dict]) -> list[str]:
    plan_ids = {(t.get("refs") or {}).get("plan_id") for t in turns} - {None}
    if not plan_ids:
        return []
    rows = conn.execute("SELECT DISTINCT service FROM plans WHERE id = ANY(%s) AND service IS NOT NULL",
                        (list(plan_ids),)).fetchall()
    return sorted(r["service"] for r in rows)
