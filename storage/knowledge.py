"""Documents, chunks and hybrid retrieval (pgvector HNSW cosine + full text, fused by reciprocal rank)."""
from __future__ import annotations

import json
import re
from typing import Any, Sequence

import numpy as np
import psycopg

RRF_K = 60          # the usual reciprocal-rank constant; 10-100 measured the same on the runbook eval
CANDIDATES = 40     # per arm: nearest windows and best full-text matches looked at (bounds the work per query)
# The full-text rank counts half of the dense rank. Alone it is the weaker ranker on paraphrased symptoms
# (hit@1 0.70 vs 0.82 on the eval's dev split), and with equal weights a (dense 1, text 5) chunk ties a
# (dense 5, text 1) one and the tie fell to the chunk id; any weight in 0.3-0.85 measured the same.
SPARSE_WEIGHT = 0.5
# Full-text matches ranked per query at most: the query's words are chosen to stay under it by the statistics
# (see _TEXT_QUERY), and it is enforced with a LIMIT because those estimates can be off several-fold (words that
# go together, like "route" and "host", are ANDed as if independent). ~10 us per ranked match.
TEXT_MATCH_BUDGET = 500
HNSW_EF_SEARCH = 200


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
                   windows: Sequence[np.ndarray] | None = None, embeddings: np.ndarray | None = None,
                   window_hashes: Sequence[Sequence[str]] | None = None, workspace: str = "default") -> None:
    """Swap a document's chunks for new ones in the caller's transaction (all or nothing).

    `windows[i]` holds chunk i's window vectors (one row per window); each becomes a `chunk_vectors` row, and
    the chunk's own `embedding` is their normalised mean. Callers with one vector per chunk pass `embeddings`.
    `window_hashes[i][j]` keys window j's vector by its text and model, so identical text is never embedded twice."""
    if windows is None:
        windows = [np.asarray(embeddings)[i:i + 1] for i in range(len(chunks))]
    conn.execute("DELETE FROM chunks WHERE document_id = %s", (document_id,))
    with conn.cursor() as cur:
        for i, chunk in enumerate(chunks):
            services = list(chunk.get("services", []))
            chunk_id = cur.execute(
                """INSERT INTO chunks (document_id, workspace, ordinal, title, heading, text, source_type,
                                       services, keywords, embedding)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
                (document_id, workspace, i, chunk["title"], chunk.get("heading", ""), chunk["text"],
                 chunk["source_type"], services, chunk.get("keywords", ""), _mean_unit(windows[i]))).fetchone()["id"]
            keys = window_hashes[i] if window_hashes is not None else [""] * len(windows[i])
            cur.executemany(
                """INSERT INTO chunk_vectors (chunk_id, workspace, source_type, services, embedding, text_hash)
                   VALUES (%s, %s, %s, %s, %s, %s)""",
                [(chunk_id, workspace, chunk["source_type"], services, vector, key)
                 for vector, key in zip(windows[i], keys)])


def _mean_unit(vectors: np.ndarray) -> np.ndarray:
    mean = np.asarray(vectors, dtype=np.float32).mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


def vectors_by_hash(conn: psycopg.Connection, hashes: Sequence[str], *, workspace: str = "default"
                    ) -> dict[str, np.ndarray]:
    """Stored window vectors for these text hashes (any one row per hash: identical text, identical vector)."""
    if not hashes:
        return {}
    rows = conn.execute(
        """SELECT DISTINCT ON (text_hash) text_hash, embedding FROM chunk_vectors
           WHERE workspace = %s AND text_hash = ANY(%s)""", (workspace, list(hashes))).fetchall()
    return {r["text_hash"]: _as_array(r["embedding"]) for r in rows}


def _as_array(vector: Any) -> np.ndarray:
    """pgvector hands back its own `Vector` type (or a numpy array, depending on the version)."""
    return np.asarray(vector.to_numpy() if hasattr(vector, "to_numpy") else vector, dtype=np.float32)


def delete_document(conn: psycopg.Connection, *, source: str, workspace: str = "default") -> bool:
    """Delete a document with its chunks and vectors. Its executable runbook versions stay for the audit trail's
    sake but stop being active, so a removed runbook can no longer be run."""
    row = conn.execute("SELECT id FROM documents WHERE workspace = %s AND source = %s",
                       (workspace, source)).fetchone()
    if row is None:
        return False
    conn.execute("UPDATE runbooks SET active = false WHERE document_id = %s AND active", (row["id"],))
    conn.execute("DELETE FROM documents WHERE id = %s", (row["id"],))
    return True


def sources_under(conn: psycopg.Connection, root: str, *, workspace: str = "default") -> list[str]:
    """Sources of the documents indexed from the file `root` or from anywhere under the directory `root`."""
    rows = conn.execute(
        """SELECT source FROM documents WHERE workspace = %(ws)s
           AND (source = %(root)s OR left(source, length(%(dir)s)) = %(dir)s) ORDER BY source""",
        {"ws": workspace, "root": root, "dir": root.rstrip("/") + "/"}).fetchall()
    return [r["source"] for r in rows]


def _or_query(text: str) -> str:
    """Words joined by OR: an engineer's sentence rarely contains every word of a runbook."""
    words = re.findall(r"[A-Za-z0-9]+", text.lower())
    return " ".join(words)


# Which query words the full-text arm searches for. An OR of every word of a chat sentence matches most of a large
# corpus ("pods", "node", "error" are everywhere), and ranking every match is a scan that grows with the corpus
# (~350 ms at 100k chunks). So the words are taken rarest first, by the planner's own statistics for chunks.tsv
# (pg_stats, kept fresh by autovacuum's ANALYZE; a word not in its most-common list counts as rare as the rarest
# listed), while their estimated matches stay within TEXT_MATCH_BUDGET rows: a word that common carries little
# information anyway. If even the rarest word alone matches more, the rarest words are ANDed, as few as bring the
# estimate under the budget. A table no bigger than the budget, or without statistics yet, searches every word,
# which is plainto_tsquery with `|` for `&`.
_TEXT_QUERY = """
    stats AS (
        SELECT greatest(c.reltuples, 0) AS n, s.most_common_elems::text::text[] AS w, s.most_common_elem_freqs AS f
        FROM pg_class c LEFT JOIN pg_stats s
          ON s.schemaname = current_schema() AND s.tablename = 'chunks' AND s.attname = 'tsv'
        WHERE c.oid = 'chunks'::regclass),
    words AS (
        SELECT lex, greatest(coalesce(f[array_position(w, lex)], f[array_length(w, 1) + 1], 0), 1e-9) AS freq, n
        FROM unnest(tsvector_to_array(to_tsvector('english', %(text)s))) AS lex, stats),
    ranked AS (
        SELECT lex, n, row_number() OVER w AS rn, least(n, n * sum(freq) OVER w) AS any_rows,
               ln(greatest(n, 1)) + sum(ln(freq)) OVER w AS ln_all_rows   -- a log: exp() of it would underflow
        FROM words WINDOW w AS (ORDER BY freq, lex)),
    q AS (
        SELECT CASE WHEN bool_or(any_rows <= %(budget)s)
                    THEN string_agg(quote_literal(lex), ' | ' ORDER BY rn) FILTER (WHERE any_rows <= %(budget)s)
                    ELSE string_agg(quote_literal(lex), ' & ' ORDER BY rn) FILTER (WHERE rn <= coalesce(
                        (SELECT min(rn) FROM ranked WHERE ln_all_rows <= ln(%(budget)s)), 1000000)) END::tsquery AS t
        FROM ranked),"""


def hybrid_search(conn: psycopg.Connection, *, query: str, vector: np.ndarray, top_k: int = 5,
                  workspace: str = "default", services: Sequence[str] | None = None,
                  source_types: Sequence[str] | None = None, candidates: int = CANDIDATES) -> list[dict[str, Any]]:
    """Chunks ranked by reciprocal-rank fusion of dense and full-text ranks.

    Dense: the `candidates` nearest windows (HNSW), grouped by chunk, a chunk ranked by its best window.
    Sparse: full-text matches of the query's rarer words (see _TEXT_QUERY), ranked by ts_rank with title and
    keywords (A) and headings (B) weighted up. The dense arm reads `candidates` rows and the full-text arm ranks
    at most TEXT_MATCH_BUDGET matches, so the work per query does not grow with the corpus."""
    params = {"ws": workspace, "q": vector, "text": _or_query(query), "n": candidates, "k": top_k,
              "budget": TEXT_MATCH_BUDGET, "services": list(services) if services else None,
              "types": list(source_types) if source_types else None}
    filters = ("workspace = %(ws)s AND (%(services)s::text[] IS NULL OR services && %(services)s::text[]) "
               "AND (%(types)s::text[] IS NULL OR source_type = ANY(%(types)s::text[]))")
    # pgvector >= 0.8: when filters (another workspace, a service, a source type) reject most of the nearest
    # windows, keep walking the HNSW graph until `candidates` rows pass, instead of returning too few.
    conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
    # The graph walk keeps ef_search candidates; pgvector's default (40) equals `candidates` and measured
    # recall@40 of 0.88 against exact search at 100k chunks, 100 measured 0.95 for ~0.5 ms (bench/README.md).
    conn.execute(f"SET LOCAL hnsw.ef_search = {max(HNSW_EF_SEARCH, candidates)}")
    sql = f"""
    WITH nearest AS (
        SELECT chunk_id, embedding <=> %(q)s AS dist FROM chunk_vectors WHERE {filters}
        ORDER BY embedding <=> %(q)s LIMIT %(n)s),
    dense AS (
        SELECT chunk_id AS id, row_number() OVER (ORDER BY min(dist)) AS rank FROM nearest GROUP BY chunk_id),
    {_TEXT_QUERY}
    matches AS (
        SELECT id, tsv FROM chunks, q WHERE q.t IS NOT NULL AND {filters} AND tsv @@ q.t LIMIT %(budget)s),
    sparse AS (
        SELECT id, row_number() OVER (ORDER BY r DESC) AS rank FROM (
            SELECT id, ts_rank(tsv, q.t) AS r FROM matches, q ORDER BY r DESC LIMIT %(n)s) s),
    fused AS (
        SELECT id, coalesce(1.0 / ({RRF_K} + dense.rank), 0)
                  + {SPARSE_WEIGHT} * coalesce(1.0 / ({RRF_K} + sparse.rank), 0) AS score
        FROM dense FULL OUTER JOIN sparse USING (id))
    SELECT c.id AS chunk_id, c.document_id, c.title, c.heading, c.text, c.services, c.source_type,
           d.source, d.metadata, fused.score
    FROM fused JOIN chunks c ON c.id = fused.id JOIN documents d ON d.id = c.document_id
    ORDER BY fused.score DESC, c.id LIMIT %(k)s"""
    return conn.execute(sql, params).fetchall()
