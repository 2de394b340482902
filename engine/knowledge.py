"""Knowledge base operations over storage: ingest files, and retrieve with provenance."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from psycopg_pool import ConnectionPool

from engine.embedder import Embedder
from engine.ingest import IngestError, ParsedDocument, content_hash, iter_files, parse_file
from engine.models import Citation
from storage import knowledge as kb
from storage import runbooks as rb

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    chunks_embedded: int = 0


def ingest(pool: ConnectionPool, embedder: Embedder, paths: Sequence[Path], *, source_type: str = "auto",
           workspace: str = "default") -> IngestReport:
    """Index files; unchanged content (by hash) is skipped before any parsing or embedding."""
    report = IngestReport()
    try:
        files = iter_files(list(paths))
    except IngestError as exc:
        report.errors.append(str(exc))
        return report
    for path in files:
        source = str(path.resolve())
        try:
            digest = content_hash(path.read_bytes())
            with pool.connection() as conn:
                existing = kb.get_document(conn, source=source, workspace=workspace)
            if existing and existing["content_hash"] == digest:
                report.unchanged.append(source)
                continue
            doc = parse_file(path, source_type)
        except (IngestError, OSError) as exc:
            report.errors.append(str(exc))
            continue
        vectors = embedder.embed([_embedding_text(c) for c in doc.chunks])
        _store(pool, doc, vectors, workspace)
        report.chunks_embedded += len(doc.chunks)
        (report.updated if existing else report.added).append(source)
    return report


def _embedding_text(chunk: dict) -> str:
    """Title and heading go in front: they carry most of the meaning of a runbook section."""
    parts = [chunk["title"], chunk.get("heading", ""), chunk["text"]]
    return "\n".join(p for p in parts if p)


def _store(pool: ConnectionPool, doc: ParsedDocument, vectors, workspace: str) -> None:
    with pool.connection() as conn, conn.transaction():
        doc_id = kb.upsert_document(conn, source=doc.source, source_type=doc.source_type, title=doc.title,
                                    content_hash=doc.content_hash, services=doc.services,
                                    metadata=doc.metadata, workspace=workspace)
        kb.replace_chunks(conn, document_id=doc_id, chunks=doc.chunks, embeddings=vectors, workspace=workspace)
        if doc.runbook:
            rb.upsert_runbook(conn, spec=doc.runbook, content_hash=doc.content_hash, document_id=doc_id,
                              workspace=workspace)
        else:
            rb.deactivate_for_document(conn, doc_id)


def search(pool: ConnectionPool, embedder: Embedder, query: str, *, top_k: int = 5, workspace: str = "default",
           services: Sequence[str] | None = None, source_types: Sequence[str] | None = None,
           per_document: bool = True) -> list[Citation]:
    """Hybrid retrieval; by default the best chunk of each document, so one long page cannot fill the list."""
    vector = embedder.embed([query])[0]
    with pool.connection() as conn:
        rows = kb.hybrid_search(conn, query=query, vector=vector, top_k=top_k * 4 if per_document else top_k,
                                workspace=workspace, services=services, source_types=source_types,
                                candidates=max(40, top_k * 8))
    seen: set[int] = set()
    out: list[Citation] = []
    for row in rows:
        if per_document and row["document_id"] in seen:
            continue
        seen.add(row["document_id"])
        out.append(Citation(document_id=row["document_id"], chunk_id=row["chunk_id"], title=row["title"],
                            source=row["source"], score=round(float(row["score"]), 6), text=row["text"]))
        if len(out) >= top_k:
            break
    return out
