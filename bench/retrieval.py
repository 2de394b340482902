"""Retrieval benchmark: latency of the real `storage.knowledge.hybrid_search` at 10k / 100k chunks beside an
exact (no HNSW) baseline measured in the same run, and recall of the HNSW dense part against exact search.

    .venv/bin/python -m bench.retrieval --sizes 10000 100000 --runs 5
    .venv/bin/python -m bench.retrieval --quick

See bench/README.md for what is measured and how the corpus and its embeddings are made."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import sys
import time
from pathlib import Path

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from bench.common import (SECTIONS, SERVICES, SYMPTOMS, OpsText, create_database, derive_embeddings, drop_database,
                          embedding_text, get_embedder, log, machine, median, p50_p95, percentile, pg_server,
                          server_facts, timed, unit)

# engine.knowledge.search(top_k=5, per_document=True) asks hybrid_search for top_k * 4 rows out of 40 candidates.
TOP_K = 20
CANDIDATES = 40

# The dense and sparse parts of the shipped query, alone (the same SQL as the CTEs in storage/knowledge.py).
FILTERS = ("workspace = %(ws)s AND (%(services)s::text[] IS NULL OR services && %(services)s::text[]) "
           "AND (%(types)s::text[] IS NULL OR source_type = ANY(%(types)s::text[]))")
# Window ids (not chunk ids) so recall can be compared with an exact top-k over the same stored window vectors.
DENSE_SQL = f"""SELECT id FROM chunk_vectors WHERE {FILTERS} ORDER BY embedding <=> %(q)s LIMIT %(n)s"""


def _sparse_sql() -> str:
    from storage.knowledge import _TEXT_QUERY

    return f"""WITH {_TEXT_QUERY}
    matches AS (SELECT id, tsv FROM chunks, q WHERE q.t IS NOT NULL AND {FILTERS} AND tsv @@ q.t LIMIT %(budget)s)
    SELECT id FROM matches, q ORDER BY ts_rank(tsv, q.t) DESC LIMIT %(n)s"""


# The full-text query before the fix: every word of the question ORed, every match ranked.
ALL_WORDS_Q = "q AS (SELECT replace(plainto_tsquery('english', %(text)s)::text, '&', '|')::tsquery AS t),"
ALL_WORDS_SQL = f"""WITH {ALL_WORDS_Q.removesuffix(',')}
    SELECT id FROM (SELECT id, ts_rank(tsv, q.t) AS r FROM chunks, q
                    WHERE q.t::text <> '' AND {FILTERS} AND tsv @@ q.t ORDER BY r DESC LIMIT %(n)s) s"""
MATCHES_SQL = """SELECT count(*) FROM chunks
    WHERE tsv @@ to_tsquery('english', replace(plainto_tsquery('english', %(text)s)::text, '&', '|'))"""

# Questions an engineer might ask of any ops knowledge base: their full-text match rate is compared between the real
# runbooks in shared/corpora and the synthetic corpus.
GENERIC_QUERIES = ["pod crash looping after deploy", "node disk filling up what to do", "prometheus target down",
                   "kube api server errors", "etcd leader changes high", "alertmanager notifications failing",
                   "container OOMKilled memory limit", "how do I fix certificate expiry",
                   "persistent volume almost full", "cpu throttling on my pods", "job failed to complete",
                   "deployment replicas mismatch"]


def all_words(sql: str) -> str:
    """The shipped query with its full-text arm as it was before the fix: the OR of every word of the question,
    every match ranked (no rare-word selection, no budget)."""
    start, end = sql.find("stats AS ("), sql.find("matches AS (")
    if start < 0 or end < 0 or "LIMIT %(budget)s" not in sql:
        raise RuntimeError("the shipped hybrid_search SQL changed; cannot apply the all-words rewrite")
    return (sql[:start] + ALL_WORDS_Q + "\n    " + sql[end:]).replace(" LIMIT %(budget)s", "", 1)


VARIANTS = {"all_words_or": all_words}
DEFAULT_VARIANTS = ["all_words_or"]


class Rewriting:
    """Stands in for the connection: passes hybrid_search's SQL through `rewrite` (or EXPLAIN) before running it."""

    def __init__(self, conn, rewrite=None, explain: bool = False):
        self.conn, self.rewrite, self.explain = conn, rewrite, explain

    def execute(self, sql, p=None):
        if not sql.lstrip().upper().startswith("WITH"):  # e.g. SET LOCAL: passed through as is
            return self.conn.execute(sql, p)
        sql = self.rewrite(sql) if self.rewrite else sql
        return self.conn.execute(("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " if self.explain else "") + sql, p)


# --------------------------------------------------------------------------- embeddings

def embed_bank(embedder, bank: OpsText) -> dict[str, np.ndarray]:
    texts = [s.text for s in bank.sentences]
    seconds, vecs = timed(lambda: embedder.embed(texts))
    log(f"embedded {len(texts)} bank sentences with MiniLM in {seconds:.1f} s ({len(texts) / seconds:.0f}/s)")
    return {"sentences": vecs, "services": embedder.embed(SERVICES), "symptoms": embedder.embed([s[0] for s in SYMPTOMS]),
            "sections": embedder.embed(SECTIONS), "bank_seconds": seconds}


def validate_derived(embedder, bank, chunks, derived: np.ndarray, qvecs: np.ndarray, sample: int) -> dict:
    """Real MiniLM on a sample of chunks: how long it takes (extrapolated to 100k), how close the derived vectors
    are, and whether query->chunk similarity looks the same for real and derived vectors."""
    rng = random.Random(3)
    idx = sorted(rng.sample(range(len(chunks)), min(sample, len(chunks))))
    texts = [embedding_text(chunks[i]) for i in idx]
    seconds, real = timed(lambda: embedder.embed(texts))
    cos = (real * derived[idx]).sum(axis=1)
    sims_real, sims_derived = qvecs @ real.T, qvecs @ derived[idx].T
    top_real = np.sort(sims_real, axis=1)[:, ::-1][:, :10]
    top_derived = np.sort(sims_derived, axis=1)[:, ::-1][:, :10]
    # Do real and derived vectors rank the sample the same way for each query? (overlap of top-10)
    tr = np.argsort(-sims_real, axis=1)[:, :10]
    td = np.argsort(-sims_derived, axis=1)[:, :10]
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(tr, td)])
    # Pairwise spread: mean cosine between random chunk pairs (how clustered the space is).
    pairs_real = float(np.mean((real @ real.T)[np.triu_indices(len(idx), 1)]))
    pairs_derived = float(np.mean((derived[idx] @ derived[idx].T)[np.triu_indices(len(idx), 1)]))
    out = {"sample": len(idx), "minilm_seconds": seconds, "minilm_chunks_per_s": len(idx) / seconds,
           "minilm_100k_minutes": 100_000 / (len(idx) / seconds) / 60,
           "cos_derived_vs_real_mean": float(cos.mean()), "cos_derived_vs_real_p5": percentile(cos, 5),
           "query_top1_sim_real": float(top_real[:, 0].mean()), "query_top1_sim_derived": float(top_derived[:, 0].mean()),
           "query_top10_sim_real": float(top_real[:, 9].mean()), "query_top10_sim_derived": float(top_derived[:, 9].mean()),
           "top10_overlap_real_vs_derived": float(overlap),
           "pair_cos_real": pairs_real, "pair_cos_derived": pairs_derived}
    log("derived-vs-real: " + json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}))
    return out


# --------------------------------------------------------------------------- loading

def window_vectors(vecs: np.ndarray, per_chunk: int, noise: float, seed: int = 11) -> np.ndarray:
    """`per_chunk` window vectors for each chunk, rows chunk by chunk (window id = row + 1): the chunk's own vector
    and `per_chunk - 1` variants with gaussian noise of norm `noise`. Real chunks of 512-1024 tokens are embedded
    as 3-5 windows of <= 200 tokens; what the benchmark needs from them is their number (HNSW and the dense arm
    scale with rows) and that a chunk's windows lie near each other, as windows of one section do."""
    rng = np.random.default_rng(seed)
    out = np.repeat(vecs, per_chunk, axis=0)
    if per_chunk > 1:
        extra = np.ones(len(out), dtype=bool)
        extra[::per_chunk] = False
        dim = vecs.shape[1]
        out[extra] = unit(out[extra] + rng.normal(0.0, noise / np.sqrt(dim), size=(int(extra.sum()), dim))
                          .astype(np.float32))
    return out


def load(url: str, docs: list[dict], chunks: list[dict], vecs: np.ndarray, wvecs: np.ndarray) -> dict[str, float]:
    """Bulk load with binary COPY: documents, chunks (with their own vector) and `wvecs` as the chunks' window
    vectors in chunk_vectors (len(wvecs) / len(chunks) per chunk, in chunk order). The search indexes (HNSW, GIN
    and other non-constraint indexes of chunks and chunk_vectors) are dropped first and rebuilt afterwards from
    their own definitions, i.e. the migrations'."""
    per_chunk = len(wvecs) // len(chunks)
    t: dict[str, float] = {}
    with psycopg.connect(url) as conn:
        register_vector(conn)
        defs = conn.execute("""SELECT indexname, indexdef FROM pg_indexes i
                               WHERE tablename IN ('chunks', 'chunk_vectors')
                                 AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)
                               ORDER BY tablename, indexname""").fetchall()
        for name, _ in defs:
            conn.execute(f"DROP INDEX {name}")
        start = time.perf_counter()
        with conn.cursor() as cur:
            with cur.copy("COPY documents (id, workspace, source, source_type, title, content_hash, services) "
                          "FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["int8", "text", "text", "text", "text", "text", "text[]"])
                for d in docs:
                    digest = hashlib.sha256(d["source"].encode()).hexdigest()
                    copy.write_row((d["id"], "default", d["source"], d["source_type"], d["title"], digest,
                                    d["services"]))
            cols = ["id", "document_id", "workspace", "ordinal", "title", "heading", "text", "source_type", "services",
                    "embedding", "keywords"]
            with cur.copy(f"COPY chunks ({', '.join(cols)}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["int8", "int8", "text", "int4", "text", "text", "text", "text", "text[]", "vector",
                                "text"])
                for c, v in zip(chunks, vecs):
                    copy.write_row((c["id"], c["document_id"], "default", c["ordinal"], c["title"], c["heading"],
                                    c["text"], c["source_type"], c["services"], v, ""))
            with cur.copy("COPY chunk_vectors (id, chunk_id, workspace, source_type, services, embedding) "
                          "FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["int8", "int8", "text", "text", "text[]", "vector"])
                for row, v in enumerate(wvecs):
                    c = chunks[row // per_chunk]
                    copy.write_row((row + 1, c["id"], "default", c["source_type"], c["services"], v))
            cur.execute("SELECT setval('chunk_vectors_id_seq', %s)", (len(wvecs),))
            cur.execute("SELECT setval('documents_id_seq', %s), setval('chunks_id_seq', %s)",
                        (len(docs), len(chunks)))
        conn.commit()
        t["copy_s"] = time.perf_counter() - start
        conn.execute("SET maintenance_work_mem = '2GB'")
        for name, definition in defs:
            start = time.perf_counter()
            conn.execute(definition)
            conn.commit()
            t[f"build_{name}_s"] = time.perf_counter() - start
    with psycopg.connect(url, autocommit=True) as conn:
        start = time.perf_counter()
        for table in ("documents", "chunks", "chunk_vectors"):
            conn.execute(f"VACUUM ANALYZE {table}")
        t["vacuum_analyze_s"] = time.perf_counter() - start
        t["chunks_table_mb"] = conn.execute("SELECT pg_total_relation_size('chunks') / 1048576.0").fetchone()[0]
        t["hnsw_mb"] = conn.execute("SELECT pg_relation_size('chunk_vectors_embedding_hnsw') / 1048576.0"
                                    ).fetchone()[0]
        t["window_vectors"] = len(wvecs)
    return {k: float(v) for k, v in t.items()}


# --------------------------------------------------------------------------- measuring

def hybrid(pool, query: str, vector: np.ndarray, *, exact: bool = False, variant: str | None = None,
           settings: tuple[str, ...] = ()) -> list[dict]:
    """The real query path of engine.knowledge.search, minus the query embedding (done up front)."""
    from storage import knowledge as kb

    with pool.connection() as conn:
        # One SET LOCAL in every arm so all pay the same extra round trip; the baseline turns plain index
        # scans off, which takes HNSW out (the GIN bitmap scan for full text is unaffected).
        conn.execute(f"SET LOCAL enable_indexscan = {'off' if exact else 'on'}")
        for s in settings:
            conn.execute(s)
        target = Rewriting(conn, VARIANTS[variant]) if variant else conn
        return kb.hybrid_search(target, query=query, vector=vector, top_k=TOP_K, candidates=CANDIDATES)


def params(query: str, vector: np.ndarray, n: int = CANDIDATES) -> dict:
    from storage.knowledge import _or_query

    from storage.knowledge import TEXT_MATCH_BUDGET

    return {"ws": "default", "q": vector, "text": _or_query(query), "n": n, "services": None, "types": None,
            "budget": TEXT_MATCH_BUDGET}


def measure_runs(pool, queries: list[dict], qvecs: np.ndarray, runs: int, arms: dict[str, dict]) -> dict:
    """Each run walks all queries in a fresh random order and, per query, times every arm in a rotating order,
    so arms share the same cache state and drift. Returns per-arm lists of per-run p50/p95 (ms), and the rows
    each arm returned for each query in the last run."""
    out: dict = {a: {"p50": [], "p95": [], "mean": []} for a in arms}
    last: dict[str, list] = {a: [None] * len(queries) for a in arms}
    names = list(arms)
    for r in range(runs):
        order = list(range(len(queries)))
        random.Random(100 + r).shuffle(order)
        times: dict[str, list[float]] = {a: [] for a in arms}
        for j, i in enumerate(order):
            rot = names[j % len(names):] + names[:j % len(names)]
            for a in rot:
                start = time.perf_counter()
                rows = hybrid(pool, queries[i]["text"], qvecs[i], **arms[a])
                times[a].append(time.perf_counter() - start)
                last[a][i] = [{"chunk_id": r["chunk_id"], "document_id": r["document_id"]} for r in rows]
        parts = []
        for a in names:
            p50, p95 = p50_p95(times[a])
            out[a]["p50"].append(p50)
            out[a]["p95"].append(p95)
            out[a]["mean"].append(1000 * float(np.mean(times[a])))
            parts.append(f"{a} p50 {p50:.1f} p95 {p95:.1f}")
        log(f"  run {r + 1}/{runs}: " + " | ".join(parts))
    return out, last


def recall(pool, queries, qvecs, wvecs: np.ndarray, ef_values: list[int]) -> dict:
    """recall@10 (first 10 of the dense list) and recall@40 (the whole candidate list the fusion sees) of the
    HNSW dense part against an exact numpy cosine top-k over the same stored window vectors."""
    sims = qvecs @ wvecs.T
    exact = np.argsort(-sims, axis=1)[:, :CANDIDATES] + 1  # window ids are 1..N in load order
    out = {}
    for ef in ef_values:
        r10, r40, got, took = [], [], [], []
        for i, q in enumerate(queries):
            with pool.connection() as conn:
                conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
                conn.execute(f"SET LOCAL hnsw.ef_search = {ef}")
                start = time.perf_counter()
                ids = [row["id"] for row in conn.execute(DENSE_SQL, params(q["text"], qvecs[i])).fetchall()]
                took.append(time.perf_counter() - start)
            got.append(len(ids))
            r10.append(len(set(ids[:10]) & set(exact[i, :10].tolist())) / 10)
            r40.append(len(set(ids) & set(exact[i].tolist())) / CANDIDATES)
        p50, p95 = p50_p95(took)
        out[ef] = {"recall@10": float(np.mean(r10)), "recall@40": float(np.mean(r40)),
                   "rows_returned_mean": float(np.mean(got)), "dense_p50_ms": p50, "dense_p95_ms": p95}
        log(f"  ef_search={ef}: recall@10 {np.mean(r10):.3f} recall@40 {np.mean(r40):.3f} rows {np.mean(got):.1f} "
            f"dense-only p50 {p50:.1f} ms p95 {p95:.1f} ms")
    return out


def components(pool, queries, qvecs) -> dict:
    """One pass timing the dense part (HNSW and exact) and the sparse part alone, plus full-text match counts."""
    t = {"dense_hnsw": [], "dense_exact": [], "sparse": [], "sparse_all_words": []}
    matches, dense, sparse = [], DENSE_SQL, _sparse_sql()
    for i, q in enumerate(queries):
        p = params(q["text"], qvecs[i])
        for name, sql, setting in (("dense_hnsw", dense, "on"), ("dense_exact", dense, "off"),
                                   ("sparse", sparse, "on"), ("sparse_all_words", ALL_WORDS_SQL, "on")):
            with pool.connection() as conn:
                conn.execute(f"SET LOCAL enable_indexscan = {setting}")
                start = time.perf_counter()
                conn.execute(sql, p).fetchall()
                t[name].append(time.perf_counter() - start)
        with pool.connection() as conn:
            matches.append(conn.execute(MATCHES_SQL, p).fetchone()["count"])
    from storage.knowledge import _or_query

    with pool.connection() as conn:
        total = conn.execute("SELECT count(*) FROM chunks").fetchone()["count"]
        generic = [conn.execute(MATCHES_SQL, {"text": _or_query(q)}).fetchone()["count"] / total
                   for q in GENERIC_QUERIES]
    out = {k: dict(zip(("p50", "p95"), p50_p95(v))) for k, v in t.items()}
    out["fulltext_matches_p50"] = percentile(matches, 50)
    out["fulltext_matches_p95"] = percentile(matches, 95)
    out["fulltext_matched_share_p50"] = percentile(matches, 50) / total
    out["generic_queries_matched_share_p50"] = percentile(generic, 50)
    log("  components: " + json.dumps({k: ({kk: round(vv, 1) for kk, vv in v.items()} if isinstance(v, dict)
                                             else round(v, 3)) for k, v in out.items()}))
    return out


def explain(pool, query: str, vector: np.ndarray, exact: bool = False, variant: str | None = None) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of exactly the SQL text hybrid_search sends (optionally rewritten)."""
    from storage import knowledge as kb

    with pool.connection() as conn:
        conn.execute(f"SET LOCAL enable_indexscan = {'off' if exact else 'on'}")
        rows = kb.hybrid_search(Rewriting(conn, VARIANTS[variant] if variant else None, explain=True), query=query,
                                vector=vector, top_k=TOP_K, candidates=CANDIDATES)
        plan = "\n".join(r["QUERY PLAN"] for r in rows)
    return re.sub(r"'\[[-0-9.e,]{200,}\]'", "'[...384 floats...]'", plan)


def quality(queries, rows_per_query: list[list[dict]], chunks: list[dict]) -> dict:
    """A rough relevance proxy (the corpus is synthetic, there are no human judgments): of the first 5 documents
    (best chunk each, as engine.knowledge.search returns them), the share about the service the query names,
    and the share about that service and symptom, for queries naming both."""
    svc_hits, topic_hits = [], []
    for q, rows in zip(queries, rows_per_query):
        docs, seen = [], set()
        for r in rows:
            if r["document_id"] not in seen:
                seen.add(r["document_id"])
                docs.append(chunks[r["chunk_id"] - 1])
        docs = docs[:5]
        if q["svc"] is not None and docs:
            svc_hits.append(np.mean([c["svc"] == q["svc"] for c in docs]))
            if q["sym"] is not None:
                topic_hits.append(np.mean([c["svc"] == q["svc"] and c["sym"] == q["sym"] for c in docs]))
    return {"service@5": float(np.mean(svc_hits)) if svc_hits else float("nan"),
            "service+symptom@5": float(np.mean(topic_hits)) if topic_hits else float("nan")}


def overlap(rows: list[list[dict]], reference: list[list[dict]]) -> float:
    """Mean share of the reference arm's top-20 chunks that the other arm also returns."""
    return float(np.mean([len({r["chunk_id"] for r in a} & {r["chunk_id"] for r in b}) / max(1, len(b))
                          for a, b in zip(rows, reference)]))


def runbooks_fulltext(server) -> dict:
    """How much of a real corpus the shipped OR query matches: the runbooks in shared/corpora, ingested with the
    real engine.knowledge.ingest and a stand-in embedder (vectors are not needed to count full-text matches)."""
    from bench.common import RUNBOOKS, RandomEmbedder
    from engine.knowledge import ingest
    from storage.db import open_pool
    from storage.knowledge import _or_query

    if not RUNBOOKS.exists():
        return {}
    url = create_database(server, "bench_runbooks_fts")
    pool = open_pool(url, max_size=1)
    try:
        ingest(pool, RandomEmbedder(), [RUNBOOKS])
        with pool.connection() as conn:
            total = conn.execute("SELECT count(*) FROM chunks").fetchone()["count"]
            share = [conn.execute(MATCHES_SQL, {"text": _or_query(q)}).fetchone()["count"] / total
                     for q in GENERIC_QUERIES]
    finally:
        pool.close()
        drop_database(server, "bench_runbooks_fts")
    out = {"chunks": total, "queries": len(share), "matched_share_p50": percentile(share, 50),
           "matched_share_max": max(share)}
    log(f"real runbooks: the generic queries' OR full-text query matches a median {out['matched_share_p50']:.0%} "
        f"of {total} chunks")
    return out


def shipped_sql() -> list[str]:
    """The statements storage.knowledge.hybrid_search sends, as measured (captured without a database)."""
    from storage import knowledge as kb

    sent: list[str] = []

    class Capture:
        def execute(self, sql, p=None):
            sent.append(sql)
            return self

        def fetchall(self):
            return []

    kb.hybrid_search(Capture(), query="x", vector=np.zeros(384, dtype=np.float32), top_k=TOP_K, candidates=CANDIDATES)
    return sent


def code_version() -> dict:
    """Which retrieval code was measured: HEAD plus whether the files under parallel change are modified."""
    import subprocess

    from bench.common import ROOT

    def git(*a):
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return {"head": git("rev-parse", "--short", "HEAD"),
            "modified": git("status", "--short", "storage", "engine/knowledge.py", "engine/ingest.py",
                            "engine/chunking.py").splitlines()}


# --------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="corpus sizes in chunks")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per size (the median of their p50/p95 is reported)")
    ap.add_argument("--queries", type=int, default=200, help="number of distinct queries per run")
    ap.add_argument("--bank", type=int, default=4000, help="bank sentences embedded with MiniLM")
    ap.add_argument("--noise", type=float, default=0.3, help="norm of the gaussian noise added to derived vectors")
    ap.add_argument("--validate", type=int, default=300, help="chunks embedded for real to check derived vectors")
    ap.add_argument("--windows", type=int, default=4, help="window vectors per chunk (real chunks have 3-5)")
    ap.add_argument("--ef", type=int, nargs="+", default=[40, 100, 200], help="hnsw.ef_search values for recall")
    ap.add_argument("--variants", nargs="*", default=DEFAULT_VARIANTS, choices=list(VARIANTS),
                    help="candidate query rewrites measured beside the shipped query")
    ap.add_argument("--arms", nargs="+", help="only these arms (default: hybrid, exact_baseline and the variants)")
    ap.add_argument("--skip-components", action="store_true", help="skip the per-part (dense/sparse) timing pass")
    ap.add_argument("--explain-dir", type=Path, help="write EXPLAIN ANALYZE of one query per size and arm here")
    ap.add_argument("--json", type=Path, help="write all results as JSON here")
    ap.add_argument("--quick", action="store_true", help="small and fast: sizes 2000 10000, 2 runs, 60 queries")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.runs, args.queries, args.bank, args.validate, args.ef = [2000, 10_000], 2, 60, 800, 64, [40]

    from storage.db import open_pool

    results: dict = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}, "sizes": {},
                     "code": code_version(), "measured_sql": shipped_sql()}
    log(f"code: {results['code']}")
    log(f"machine: {results['machine']}, load average {os.getloadavg()}")
    embedder = get_embedder()
    bank = OpsText(bank_size=args.bank)
    vec = embed_bank(embedder, bank)
    results["bank_embed_s"] = vec["bank_seconds"]
    queries = bank.queries(args.queries)
    qseconds, qvecs = timed(lambda: embedder.embed([q["text"] for q in queries]))
    single = []
    for q in queries[:50]:
        s, _ = timed(lambda: embedder.embed([q["text"]]))
        single.append(s)
    results["query_embed_ms"] = {"single_p50": median(single) * 1000, "single_p95": percentile(single, 95) * 1000,
                                 "batched_per_query": qseconds / len(queries) * 1000}
    log(f"query embedding (MiniLM, one query): p50 {results['query_embed_ms']['single_p50']:.1f} ms, "
        f"p95 {results['query_embed_ms']['single_p95']:.1f} ms")
    arms = {"hybrid": {}, "exact_baseline": {"exact": True}, **{v: {"variant": v} for v in args.variants}}
    if args.arms:
        arms = {a: arm for a, arm in arms.items() if a in args.arms}

    with pg_server() as server:
        results["runbooks_fulltext"] = runbooks_fulltext(server)
        for n, size in enumerate(args.sizes):
            log(f"=== {size} chunks")
            res: dict = {}
            start = time.perf_counter()
            docs, chunks = bank.corpus(size)
            vecs = derive_embeddings(bank, chunks, vec["sentences"], vec["services"], vec["symptoms"],
                                     vec["sections"], noise=args.noise)
            res["generate_s"] = time.perf_counter() - start
            res["documents"] = len(docs)
            res["words_per_chunk"] = float(np.mean([len(c["text"].split()) for c in chunks]))
            if n == 0 and args.validate:
                results["derived_vs_real"] = validate_derived(embedder, bank, chunks, vecs, qvecs, args.validate)
            name = f"bench_{size}"
            url = create_database(server, name)
            wvecs = window_vectors(vecs, args.windows, args.noise)
            res["load"] = load(url, docs, chunks, vecs, wvecs)
            log("  loaded: " + json.dumps({k: round(v, 1) for k, v in res["load"].items()}))
            results["server"] = server_facts(url)
            pool = open_pool(url, min_size=1, max_size=2)
            try:
                for i in range(min(20, len(queries))):  # warm the caches a little for every arm
                    for arm in arms.values():
                        hybrid(pool, queries[i]["text"], qvecs[i], **arm)
                res["latency"], per_arm = measure_runs(pool, queries, qvecs, args.runs, arms)
                res["recall"] = recall(pool, queries, qvecs, wvecs, args.ef)
                if not args.skip_components:
                    res["components"] = components(pool, queries, qvecs)
                for ref, key in (("exact_baseline", "top20_overlap_with_exact"), ("hybrid", "top20_overlap_with_shipped")):
                    if ref in per_arm:
                        res[key] = {a: overlap(r, per_arm[ref]) for a, r in per_arm.items() if a != ref}
                res["quality"] = {a: quality(queries, r, chunks) for a, r in per_arm.items()}
                log("  top-20 overlap with exact: " + json.dumps(res.get("top20_overlap_with_exact")))
                log("  quality: " + json.dumps(res["quality"]))
                if args.explain_dir:
                    args.explain_dir.mkdir(parents=True, exist_ok=True)
                    for a, arm in arms.items():
                        plan = explain(pool, queries[0]["text"], qvecs[0], **arm)
                        (args.explain_dir / f"explain_{size}_{a}.txt").write_text(
                            f"-- query: {queries[0]['text']}\n{plan}\n")
            finally:
                pool.close()
                drop_database(server, name)
            lat = res["latency"]
            res["summary"] = {a: {"p50_ms": median(lat[a]["p50"]), "p95_ms": median(lat[a]["p95"])} for a in lat}
            log(f"  summary (median of {args.runs} runs): " + json.dumps(
                {a: {k: round(v, 1) for k, v in s.items()} for a, s in res["summary"].items()}))
            results["sizes"][size] = res
    results["load_average_end"] = os.getloadavg()
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


def print_table(results: dict) -> None:
    print("\n| chunks | arm | p50 | p95 | top-20 overlap with exact | service@5 | service+symptom@5 |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for size, r in results["sizes"].items():
        for arm, s in r["summary"].items():
            ov = r.get("top20_overlap_with_exact", {}).get(arm)
            q = r["quality"][arm]
            print(f"| {size:,} | {arm} | {s['p50_ms']:.1f} ms | {s['p95_ms']:.1f} ms | "
                  f"{'-' if ov is None else f'{ov:.3f}'} | {q['service@5']:.3f} | {q['service+symptom@5']:.3f} |")
    print("\n| chunks | ef_search | recall@10 | recall@40 | dense-only p50 | dense-only p95 |")
    print("|---:|---:|---:|---:|---:|---:|")
    for size, r in results["sizes"].items():
        for ef, x in r["recall"].items():
            print(f"| {size:,} | {ef} | {x['recall@10']:.3f} | {x['recall@40']:.3f} | {x['dense_p50_ms']:.1f} ms "
                  f"| {x['dense_p95_ms']:.1f} ms |")
    q = results["query_embed_ms"]
    print(f"\nquery embedding (MiniLM, 1 query): p50 {q['single_p50']:.1f} ms, p95 {q['single_p95']:.1f} ms")


if __name__ == "__main__":
    sys.exit(main())
