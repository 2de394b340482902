"""Context assembly: everything a provider may reason over, each item with its provenance."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
from psycopg_pool import ConnectionPool

from engine import knowledge, live
from engine.config import WarroomConfig
from engine.embedder import Embedder
from engine.memory import SOURCE_TYPE as CONVERSATION_SOURCE, ThreadMemory, conversation_source
from engine.models import Alert, Change, Citation, Evidence
from engine.precedents import MAX_PRECEDENTS, SOURCE_TYPE as INCIDENT_SOURCE, Precedent
from storage import alerts as alert_store
from storage import runbooks as runbook_store

CHANGE_LOOKBACK = timedelta(hours=24)
RELATED_WINDOW = timedelta(hours=1)


@dataclass
class Context:
    alert: Alert | None
    question: str | None
    service: str | None
    environment: str | None
    now: datetime
    related_alerts: list[dict[str, Any]] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    citations: list[Citation] = field(default_factory=list)
    runbooks: list[dict[str, Any]] = field(default_factory=list)   # active runbook rows, best first
    feedback: dict[str, tuple[int, int]] = field(default_factory=dict)  # title -> (helpful, total)
    precedents: list[Precedent] = field(default_factory=list)           # similar resolved incidents
    # Changes on *other* services in the same window: evidence only when the alert names their service.
    nearby_changes: list[Change] = field(default_factory=list)
    # How closely each retrieved document (citations and precedents, by source) reads like the alert: cosine between
    # the query and the cited chunk's best window. Retrieval always returns its top k; this says whether they fit.
    similarity: dict[str, float] = field(default_factory=dict)
    doc_services: dict[str, list[str]] = field(default_factory=dict)   # source -> services the document is about
    # Live read-only query results (Prometheus, `context.prometheus` in warroom.yml), each with its graph URL; and
    # what was tried and did not answer within the budget (logged, never evidence).
    live: list[Evidence] = field(default_factory=list)
    live_notes: list[str] = field(default_factory=list)
    # What this chat thread has established so far (ruled-out causes, steps that ran, the conversation): used by
    # the ranking, the plan and the model prompt of the next answer in the thread (engine/memory.py).
    memory: ThreadMemory | None = None

    @property
    def anchor_time(self) -> datetime:
        return (self.alert.starts_at if self.alert and self.alert.starts_at else None) or self.now

    @property
    def query_text(self) -> str:
        if self.alert:  # a question asked in an alert's thread is about that alert
            return " ".join(filter(None, [self.question, self.alert.name, self.alert.summary,
                                          self.alert.description, self.alert.service]))
        return self.question or ""


def assemble(pool: ConnectionPool, embedder: Embedder, *, alert: Alert | None = None, question: str | None = None,
             service: str | None = None, environment: str | None = None, alert_id: int | None = None,
             workspace: str = "default", extra_changes: list[Change] | None = None, top_k: int = 5,
             config: WarroomConfig | None = None, memory: ThreadMemory | None = None) -> Context:
    """`config` with `context.prometheus` set adds live read-only queries, run alongside retrieval within
    `context.live_query_budget_s`."""
    now = datetime.now(timezone.utc)
    service = service or (alert.service if alert else None)
    environment = environment or (alert.environment if alert else None)
    ctx = Context(alert=alert, question=question, service=service, environment=environment, now=now, memory=memory)
    live_pool = live_future = None
    if config is not None and config.live_target() is not None:
        live_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warroom-live")
        live_future = live_pool.submit(live.gather, config, alert=alert, service=service, now=now)
    anchor = ctx.anchor_time
    # One embedding of the question serves the document search, the precedent search and the fit measure.
    question = knowledge.query_vector(embedder, ctx.query_text) if ctx.query_text else None
    ctx.citations = knowledge.search(pool, embedder, ctx.query_text, top_k=top_k, workspace=workspace,
                                     vector=question) if ctx.query_text else []
    with pool.connection() as conn:
        ctx.related_alerts = alert_store.related_alerts(
            conn, service=service, exclude_id=alert_id, since=now - RELATED_WINDOW, workspace=workspace)
        window = {"since": anchor - CHANGE_LOOKBACK, "until": anchor + timedelta(minutes=5), "workspace": workspace}
        ctx.changes = [_change(row) for row in alert_store.recent_changes(conn, service=service, **window)]
        if service:
            ctx.nearby_changes = [_change(row) for row in alert_store.recent_changes(conn, service=None, **window)
                                  if row["service"] != service]
        ctx.runbooks = _matching_runbooks(conn, ctx, workspace)
        ctx.feedback = _feedback(conn, service, workspace)
        found = _precedent_documents(pool, embedder, ctx, workspace, question) if question is not None else []
        if memory is not None:  # a thread is no precedent for itself
            found = [f for f in found if f.source != conversation_source(memory.key)]
        ctx.precedents = _precedents(conn, found)
        if question is not None:
            _measure_fit(conn, question, ctx, [*ctx.citations, *found])
    for change in extra_changes or []:
        if anchor - CHANGE_LOOKBACK <= change.at <= anchor + timedelta(minutes=5):
            (ctx.changes if service is None or change.service == service else ctx.nearby_changes).append(change)
    ctx.changes.sort(key=lambda c: c.at, reverse=True)
    ctx.nearby_changes.sort(key=lambda c: c.at, reverse=True)
    if live_future is not None:
        _collect_live(ctx, live_future, live_pool, config.context.live_query_budget_s)
    return ctx


def _collect_live(ctx: Context, future, pool: ThreadPoolExecutor, budget: float) -> None:
    """The live queries' results; they bound themselves by the budget, this waits a little past it at most."""
    try:
        result = future.result(timeout=budget + 1.0)
        ctx.live, ctx.live_notes = result.evidence, result.notes
    except Exception as exc:  # noqa: BLE001 — never fail an annotation for live data
        ctx.live_notes = [f"live queries did not finish: {type(exc).__name__}"]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _change(row: dict[str, Any]) -> Change:
    fields = ("service", "kind", "summary", "version", "author", "at", "source")
    return Change.model_validate({k: row.get(k) for k in fields if k in Change.model_fields})


def _matching_runbooks(conn, ctx: Context, workspace: str) -> list[dict[str, Any]]:
    """Runbooks naming the alert, then the service, then those whose document was retrieved."""
    rows = runbook_store.runbooks_for(conn, alert_name=ctx.alert.name if ctx.alert else None,
                                      service=ctx.service, workspace=workspace)
    by_doc = runbook_store.runbooks_by_document(conn, [c.document_id for c in ctx.citations])
    seen = {r["id"] for r in rows}
    scores = {c.document_id: c.score for c in ctx.citations}
    out = [dict(r, match="alert_name" if r.get("by_alert") else "service",
                retrieval_score=scores.get(r["document_id"])) for r in rows]
    for citation in ctx.citations:
        row = by_doc.get(citation.document_id)
        if row and row["id"] not in seen:
            seen.add(row["id"])
            out.append(dict(row, match="text", retrieval_score=citation.score))
    return out


def _precedent_documents(pool: ConnectionPool, embedder: Embedder, ctx: Context, workspace: str,
                         question: np.ndarray) -> list[Citation]:
    return knowledge.search(pool, embedder, ctx.query_text, top_k=MAX_PRECEDENTS, workspace=workspace,
                            source_types=[INCIDENT_SOURCE, CONVERSATION_SOURCE], vector=question)


def _precedents(conn, found: list[Citation]) -> list[Precedent]:
    """Resolved incidents and ended conversations that read like this one, with the resolution each recorded."""
    if not found:
        return []
    rows = conn.execute("SELECT id, title, source, metadata FROM documents WHERE id = ANY(%s)",
                        ([c.document_id for c in found],)).fetchall()
    by_id = {r["id"]: r for r in rows}
    out = []
    for citation in found:
        row = by_id.get(citation.document_id)
        metadata = (row or {}).get("metadata") or {}
        if row and metadata.get("resolution"):
            out.append(Precedent(incident_id=int(metadata.get("incident_id") or 0), title=row["title"],
                                 resolution=metadata["resolution"], source=row["source"], link=metadata.get("link")))
    return out


def _measure_fit(conn, query: np.ndarray, ctx: Context, found: list[Citation]) -> None:
    """Fill `ctx.similarity` and `ctx.doc_services` for the retrieved documents from their stored window vectors:
    one query, no embedding (the question's vector is the one the searches used)."""
    if not found:
        return
    rows = conn.execute(
        """SELECT c.id, c.services, max(1 - (v.embedding <=> %s)) AS similarity
           FROM chunks c JOIN chunk_vectors v ON v.chunk_id = c.id WHERE c.id = ANY(%s) GROUP BY c.id""",
        (query, [f.chunk_id for f in found])).fetchall()
    by_chunk = {r["id"]: r for r in rows}
    for item in found:
        row = by_chunk.get(item.chunk_id)
        if row is not None:
            ctx.similarity[item.source] = round(float(row["similarity"]), 3)
            ctx.doc_services[item.source] = list(row["services"] or [])


def _feedback(conn, service: str | None, workspace: str) -> dict[str, tuple[int, int]]:
    rows = conn.execute(
        """SELECT title, count(*) FILTER (WHERE helpful) AS helpful, count(*) AS total FROM hypothesis_feedback
           WHERE workspace = %s AND (%s::text IS NULL OR service = %s) GROUP BY title""",
        (workspace, service, service)).fetchall()
    return {r["title"]: (r["helpful"], r["total"]) for r in rows}
