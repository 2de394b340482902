"""Past incidents as knowledge. A resolved incident becomes a document (what fired, the timeline, the root
cause given when it was resolved, the steps that ran, links) that retrieval finds like any runbook; and a
proposed cause that an earlier incident's resolution confirms gets `precedent` evidence, which is what the
precedent-frequency factor of the scoring counts."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from psycopg_pool import ConnectionPool

from engine.embedder import Embedder
from engine.ingest import ParsedDocument, content_hash
from engine.models import Evidence
from storage import incidents as incident_store

if TYPE_CHECKING:  # engine.llm imports engine.context, which imports this module
    from engine.llm import Candidate

SOURCE_TYPE = "incident"
SUPPORT_SIMILARITY = 0.55   # cosine between a candidate and a past resolution that counts as "seen before"
MAX_PRECEDENTS = 5


@dataclass(frozen=True)
class Precedent:
    incident_id: int
    title: str
    resolution: str     # root cause and what was done: what a candidate is compared with
    source: str
    link: str | None = None   # where a person can read it (an earlier conversation's thread permalink)


def incident_source(incident_id: int) -> str:
    return f"incident:{incident_id}"


def incident_document(incident: dict[str, Any], timeline: Sequence[dict[str, Any]],
                      steps: Sequence[dict[str, Any]], links: Sequence[dict[str, Any]] = ()) -> ParsedDocument:
    """A resolved incident as one searchable document with its provenance (source `incident:<id>`)."""
    root_cause = next((t["note"] for t in reversed(timeline) if t["to_state"] == "RESOLVED" and t["note"]), "")
    ran = [f"- {s['title']} ({s['connector']}{' on ' + s['target'] if s['target'] else ''}): {s['status']}"
           + (f" — {(s.get('result') or {}).get('summary')}" if (s.get("result") or {}).get("summary") else "")
           for s in steps if s["status"] in ("succeeded", "failed")]
    lines = [f"Incident #{incident['id']}: {incident['title']}",
             f"Service: {incident['service'] or 'unknown'} · severity {incident['severity']}"
             f" · environment {incident['environment'] or 'unknown'}",
             f"Root cause / resolution: {root_cause or 'not recorded'}"]
    if ran:
        lines += ["Steps that ran:", *ran]
    lines += ["Timeline:", *(f"- {t['at']:%Y-%m-%d %H:%M} {t['to_state']} by {t['actor']}"
                             + (f": {t['note']}" if t["note"] else "") for t in timeline)]
    lines += [f"{link['title']}: {link['url']}" for link in links]
    text = "\n".join(lines)
    services = [incident["service"]] if incident["service"] else []
    title = f"Incident #{incident['id']}: {incident['title']}"
    resolution = "; ".join(filter(None, [root_cause, *[s["title"] for s in steps if s["status"] == "succeeded"]]))
    return ParsedDocument(
        source=incident_source(incident["id"]), source_type=SOURCE_TYPE, title=title,
        content_hash=content_hash(text.encode()), services=services,
        chunks=[{"title": title, "heading": "Post-incident summary", "text": text, "source_type": SOURCE_TYPE,
                 "services": services}],
        metadata={"incident_id": incident["id"], "resolution": resolution, "root_cause": root_cause})


def load_incident_document(pool: ConnectionPool, incident_id: int) -> ParsedDocument | None:
    with pool.connection() as conn:
        incident = conn.execute("SELECT * FROM incidents WHERE id = %s", (incident_id,)).fetchone()
        if incident is None:
            return None
        timeline = incident_store.timeline(conn, incident_id)
        steps = conn.execute(
            """SELECT s.* FROM plan_steps s JOIN plans p ON p.id = s.plan_id
               WHERE p.incident_id = %(id)s OR (%(alert)s::bigint IS NOT NULL AND p.alert_id = %(alert)s)
               ORDER BY s.id""", {"id": incident_id, "alert": incident["alert_id"]}).fetchall()
        alert = conn.execute("SELECT payload FROM alerts WHERE id = %s", (incident["alert_id"],)).fetchone() \
            if incident["alert_id"] else None
    links = (alert["payload"].get("links") or []) if alert else []
    return incident_document(incident, timeline, steps, links)


def supported(candidates: list[Candidate], precedents: list[Precedent], embedder: Embedder) -> list[Candidate]:
    """Each candidate with `precedent` evidence for every past incident whose resolution says the same."""
    if not candidates or not precedents:
        return candidates
    vectors = embedder.embed([f"{c.title}. {c.cause}" for c in candidates] + [p.resolution for p in precedents])
    cand, past = np.asarray(vectors[: len(candidates)]), np.asarray(vectors[len(candidates):])
    similarity = cand @ past.T  # the embedder returns unit vectors
    out = []
    for i, candidate in enumerate(candidates):
        extra = [Evidence(kind="precedent", text=f"{p.title}: {p.resolution}", source=p.link or p.source,
                          score=round(float(similarity[i, j]), 3))
                 for j, p in enumerate(precedents) if similarity[i, j] >= SUPPORT_SIMILARITY]
        out.append(candidate.model_copy(update={"evidence": [*candidate.evidence, *extra]}) if extra else candidate)
    return out
