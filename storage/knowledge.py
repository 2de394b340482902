"""Documents, chunks and hybrid retrieval (pgvector HNSW cosine + full text, fused by reciprocal rank)."""
from __future__ import annotations

import json
import re
from typing import Any, Sequence

import numpy as np
import psycopg

RRF_K = 60


def get_document(conn: psycopg.Connection, *, source: str, workspace: str = "default") -> dict[str, Any] | None:
    return conn.execute("SELECT * FROM documents WHERE workspace = %s AND source = %s",
                        (workspace, source)).fetchone()


def upsert_document(conn: psycopg.Connection, *, source: str, source_type: str, title: str, content_hash: str,
                    services: Sequence[str], metadata: dict[str, Any], workspace: str = "default") -> int:
    row = conn.execute(
        """INSERT INTO documents (workspace, source, source_type, title, content_hash, services, metadata)
           VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb)
           ON CONFLICT (workspace, source) DO UPDATE SET source_type = EXCLUDED.source_type,
               title = EXCLUDED.title, content_hash = EXCLUDED.content_hash, services = EXCLUDED.services,
               metadata = EXCLUDED.metadata, updated_at = now()
           RETURNING id""",
        (workspace, source, source_type, title, content_hash, list(services), json.dumps(metadata))).fetchone()
    return row["id"]


def replace_chunks(conn: psycopg.Connection, *, document_id: int, chunks: Sequence[dict[str, Any]],
                   embeddings: np.ndarray, workspace: str = "default") -> None:
    """Swap a document's chunks for new ones in the caller's transaction (all or nothing)."""
    conn.execute("DELETE FROM chunks WHERE document_id = %s", (document_id,))
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO chunks (document_id, workspace, ordinal, title, heading, text, source_type,
                                   services, embedding)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            [(document_id, workspace, i, c["title"], c.get("heading", ""), c["text"], c["source_type"],
              list(c.get("services", [])), embeddings[i]) for i, c in enumerate(chunks)])


def delete_document(conn: psycopg.Connection, *, source: str, workspace: str = "default") -> bool:
    row = conn.execute("DELETE FROM documents WHERE workspace = %s AND source = %s RETURNING id",
                       (workspace, source)).fetchone()
    return row is not None


def _or_query(text: str) -> str:
    """Words joined by OR: an engineer's sentence rarely contains every word of a runbook."""
    words = re.findall(r"[A-Za-z0-9]+", text.lower())
    return " ".join(words)


def hybrid_search(conn: psycopg.Connection, *, query: str, vector: np.ndarray, top_k: int = 5,
                  workspace: str = "default", services: Sequence[str] | None = None,
                  source_types: Sequence[str] | None = None, candidates: int = 40) -> list[dict[str, Any]]:
    """Chunks ranked by reciprocal-rank fusion of dense and full-text ranks."""
    params = {"ws": workspace, "q": vector, "text": _or_query(query), "n": candidates, "k": top_k,
              "services": list(services) if services else None,
              "types": list(source_types) if source_types else None}
    filters = ("workspace = %(ws)s AND (%(services)s::text[] IS NULL OR services && %(services)s::text[]) "
               "AND (%(types)s::text[] IS NULL OR source_type = ANY(%(types)s::text[]))")
    sql = f"""
    WITH dense AS (
        SELECT id, row_number() OVER (ORDER BY dist) AS rank FROM (
            SELECT id, embedding <=> %(q)s AS dist FROM chunks WHERE {filters}
            ORDER BY embedding <=> %(q)s LIMIT %(n)s) d),
    q AS (SELECT replace(plainto_tsquery('english', %(text)s)::text, '&', '|') AS t),
    sparse AS (
        SELECT id, row_number() OVER (ORDER BY r DESC) AS rank FROM (
            SELECT id, ts_rank_cd(tsv, to_tsquery('english', q.t)) AS r FROM chunks, q
            WHERE q.t <> '' AND {filters} AND tsv @@ to_tsquery('english', q.t)
            ORDER BY r DESC LIMIT %(n)s) s),
    fused AS (
        SELECT id, coalesce(1.0 / ({RRF_K} + dense.rank), 0) + coalesce(1.0 / ({RRF_K} + sparse.rank), 0) AS score
        FROM dense FULL OUTER JOIN sparse USING (id))
    SELECT c.id AS chunk_id, c.document_id, c.title, c.heading, c.text, c.services, c.source_type,
           d.source, d.metadata, fused.score
    FROM fused JOIN chunks c ON c.id = fused.id JOIN documents d ON d.id = c.document_id
    ORDER BY fused.score DESC, c.id LIMIT %(k)s"""
    return conn.execute(sql, params).fetchall()
