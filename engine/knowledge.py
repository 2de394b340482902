"""Knowledge base operations over storage: ingest files, and retrieve with provenance.

Indexing: each chunk (512-1024 tokens, see `engine.chunking`) is embedded as several windows that fit MiniLM's
256 word pieces, each prefixed with the document title, its opening sentence and the window's section headings;
the windows go to `chunk_vectors` and a chunk's dense score is that of its best window. Retrieval expands the
query's shorthand, fuses that dense ranking with Postgres full text (title and headings weighted up) by
reciprocal rank, then keeps the best chunk per document."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from psycopg_pool import ConnectionPool

from engine.chunking import WINDOW_OVERLAP, WINDOW_TOKENS, humanize, word_windows
from engine.embedder import Embedder
from engine.ingest import IngestError, ParsedDocument, content_hash, iter_files, parse_file
from engine.models import Citation
from storage import knowledge as kb
from storage import runbooks as rb

log = logging.getLogger(__name__)

# Stored in each document's metadata; a document indexed by another version is re-embedded on the next ingest
# even if its content is unchanged (chunking or embedding text changed, so its vectors are stale).
INDEX_VERSION = 2
EMBED_BATCH = 256   # windows per embedder call: several documents share one batch when they are small


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    chunks_embedded: int = 0     # chunks stored from new or changed documents
    windows_embedded: int = 0    # window texts the model embedded
    windows_reused: int = 0      # window vectors taken from identical text already indexed (no model work)


def ingest(pool: ConnectionPool, embedder: Embedder, paths: Sequence[Path], *, source_type: str = "auto",
           workspace: str = "default", prune: bool = False) -> IngestReport:
    """Index files; unchanged content (by hash) is skipped before any parsing or embedding.

    With `prune`, documents indexed from under the given paths whose files are gone are removed too (a path that
    no longer exists at all removes everything indexed from it). A file that exists but fails to parse keeps its
    previous chunks: bad input loses nothing."""
    report = IngestReport()
    paths = [Path(p) for p in paths]
    try:
        files = iter_files([p for p in paths if p.exists()] if prune else paths, source_type)
    except IngestError as exc:
        report.errors.append(str(exc))
        return report
    pending: list[tuple[ParsedDocument, bool]] = []   # parsed, waiting for a full embedding batch
    for path in files:
        source = str(path.resolve())
        try:
            digest = content_hash(path.read_bytes())
            with pool.connection() as conn:
                existing = kb.get_document(conn, source=source, workspace=workspace)
            if _is_current(existing, digest):
                report.unchanged.append(source)
                continue
            pending.append((parse_file(path, source_type), existing is not None))
        except (IngestError, OSError) as exc:
            report.errors.append(str(exc))
            continue
        if sum(len(_windows(c)) for doc, _ in pending for c in doc.chunks) >= EMBED_BATCH:
            _flush(pool, embedder, pending, workspace, report)
    _flush(pool, embedder, pending, workspace, report)
    if prune:
        report.removed = _prune(pool, paths, {str(f.resolve()) for f in files}, workspace)
    return report


def _prune(pool: ConnectionPool, roots: Sequence[Path], present: set[str], workspace: str) -> list[str]:
    """Remove the documents indexed from under `roots` that are not in `present` (their runbooks go with them)."""
    removed = []
    with pool.connection() as conn, conn.transaction():
        for root in roots:
            for source in kb.sources_under(conn, str(root.resolve()), workspace=workspace):
                if source not in present and kb.delete_document(conn, source=source, workspace=workspace):
                    removed.append(source)
    return removed


def remove(pool: ConnectionPool, sources: Sequence[str], *, workspace: str = "default") -> list[str]:
    """Delete documents by source (their chunks, vectors and executable runbooks go with them)."""
    with pool.connection() as conn, conn.transaction():
        return [s for s in sources if kb.delete_document(conn, source=s, workspace=workspace)]


def _is_current(existing: dict[str, Any] | None, digest: str) -> bool:
    return bool(existing) and existing["content_hash"] == digest and \
        (existing.get("metadata") or {}).get("index_version") == INDEX_VERSION


def _flush(pool: ConnectionPool, embedder: Embedder, pending: list[tuple[ParsedDocument, bool]], workspace: str,
           report: IngestReport) -> None:
    """Embed the windows of all pending documents in one call, then store each document in its own transaction."""
    if not pending:
        return
    embedded = _embed_documents(pool, embedder, [doc for doc, _ in pending], workspace, report)
    for (doc, replaced), windows in zip(pending, embedded):
        _store(pool, doc, windows, workspace)
        report.chunks_embedded += len(doc.chunks)
        (report.updated if replaced else report.added).append(doc.source)
    pending.clear()


def store_parsed(pool: ConnectionPool, embedder: Embedder, doc: ParsedDocument, *, workspace: str = "default") -> None:
    """Embed and store one already-parsed document (e.g. a resolved incident), replacing an older version."""
    _store(pool, doc, _embed_documents(pool, embedder, [doc], workspace)[0], workspace)


def window_hash(embedder: Embedder, text: str) -> str:
    """What a window vector is keyed by: the exact text embedded and the model that embedded it."""
    model = getattr(embedder, "model_name", type(embedder).__name__)
    return content_hash(f"{model}\0{text}".encode())


def _embed_documents(pool: ConnectionPool, embedder: Embedder, docs: Sequence[ParsedDocument], workspace: str,
                     report: IngestReport | None = None) -> list[list[tuple[np.ndarray, list[str]]]]:
    """Per document, per chunk: its window vectors and their hashes. A window whose text (and model) is already
    stored anywhere in the workspace reuses that vector, and a text repeated in the batch is embedded once, so a
    copied file or an edit to one section of a long page only embeds what is new. The rest goes to the embedder
    in one call."""
    texts = [[[_embedding_text(chunk, window) for window in _windows(chunk)] for chunk in doc.chunks] for doc in docs]
    hashes = [[[window_hash(embedder, t) for t in chunk] for chunk in doc] for doc in texts]
    by_hash = {h: t for doc_t, doc_h in zip(texts, hashes) for ct, ch in zip(doc_t, doc_h) for t, h in zip(ct, ch)}
    with pool.connection() as conn:
        known = kb.vectors_by_hash(conn, list(by_hash), workspace=workspace)
    missing = [h for h in by_hash if h not in known]
    fresh = dict(zip(missing, embedder.embed([by_hash[h] for h in missing]))) if missing else {}
    if report is not None:
        report.windows_embedded += len(missing)
        report.windows_reused += sum(1 for doc in hashes for chunk in doc for h in chunk) - len(missing)
    vectors = {**known, **fresh}
    return [[(np.asarray([vectors[h] for h in chunk], dtype=np.float32), chunk) for chunk in doc] for doc in hashes]


def _windows(chunk: dict) -> list[dict]:
    """A chunk's embedding windows; chunks built elsewhere (e.g. incident summaries) get word windows."""
    if chunk.get("windows"):
        return chunk["windows"]
    return [{"heading": chunk.get("heading", ""), "text": piece}
            for piece in word_windows(chunk["text"], WINDOW_TOKENS, WINDOW_OVERLAP)]


def _embedding_text(chunk: dict, window: dict | None = None) -> str:
    """Every window is embedded with its context in front: the title, the document's opening sentence and the
    section headings. They carry most of the meaning of a runbook section; a window deep in "Diagnosis" would
    otherwise not say what it is about. Alert-style names are split into words (`KubePodCrashLooping` ->
    `Kube Pod Crash Looping`) so the model reads them as words."""
    window = window or {"heading": chunk.get("heading", ""), "text": chunk["text"]}
    title = humanize(chunk["title"])
    opening = chunk.get("gist", "")
    trail = [humanize(h) for h in window.get("heading", "").split(" > ") if h]
    if trail and _same_name(trail[0], title):
        trail = trail[1:]     # the H1 usually repeats the title
    parts = [title, "" if opening in window["text"] else opening, " > ".join(trail), window["text"]]
    return "\n".join(p for p in parts if p)


def _same_name(a: str, b: str) -> bool:
    return re.sub(r"\W", "", a).lower() == re.sub(r"\W", "", b).lower()


def _store(pool: ConnectionPool, doc: ParsedDocument, windows: list[tuple[np.ndarray, list[str]]],
           workspace: str) -> None:
    with pool.connection() as conn, conn.transaction():
        store_in(conn, doc, windows, workspace=workspace)


def embed_parsed(pool: ConnectionPool, embedder: Embedder, doc: ParsedDocument, *, workspace: str = "default"
                 ) -> list[tuple[np.ndarray, list[str]]]:
    """A parsed document's window vectors, for `store_in`: the slow part, done before a transaction opens."""
    return _embed_documents(pool, embedder, [doc], workspace)[0]


def store_in(conn, doc: ParsedDocument, windows: list[tuple[np.ndarray, list[str]]], *,
             workspace: str = "default") -> tuple[int, tuple[int, bool] | None]:
    """Store a document inside the caller's transaction (an approved runbook draft is stored with its audit
    entry). Returns (document id, (runbook row id, new version?) for an executable runbook)."""
    metadata = {**doc.metadata, "index_version": INDEX_VERSION}
    doc_id = kb.upsert_document(conn, source=doc.source, source_type=doc.source_type, title=doc.title,
                                content_hash=doc.content_hash, services=doc.services,
                                metadata=metadata, workspace=workspace)
    kb.replace_chunks(conn, document_id=doc_id, chunks=doc.chunks, windows=[v for v, _ in windows],
                      window_hashes=[h for _, h in windows], workspace=workspace)
    if doc.runbook:
        return doc_id, rb.upsert_runbook(conn, spec=doc.runbook, content_hash=doc.content_hash,
                                         document_id=doc_id, workspace=workspace)
    rb.deactivate_for_document(conn, doc_id)
    return doc_id, None


# --- retrieval ------------------------------------------------------------------------------------------------

# Shorthand on-call engineers type, expanded so both the model and the full-text index see the word the
# runbooks use. The short form is kept too (runbooks say "PVC" and "HPA" as well). Written as a general ops
# glossary, not from the evaluation queries.
ABBREVIATIONS = {
    "k8s": "kubernetes", "kube": "kubernetes", "ns": "namespace", "po": "pod", "svc": "service",
    "deploy": "deployment", "sts": "statefulset", "ds": "daemonset", "rs": "replicaset", "cm": "configmap",
    "pv": "persistent volume", "pvc": "persistent volume claim", "hpa": "horizontal pod autoscaler",
    "crd": "custom resource definition", "cr": "custom resource", "sa": "service account", "ing": "ingress",
    "netpol": "network policy", "rbac": "role based access control", "ksm": "kube-state-metrics",
    "am": "alertmanager", "prom": "prometheus", "sched": "scheduler", "kcm": "kube-controller-manager",
    "apiserver": "api server", "cert": "certificate", "certs": "certificates",
    "fs": "filesystem", "fd": "file descriptor", "fds": "file descriptors", "nic": "network interface",
    "rx": "receive", "tx": "transmit", "ntp": "network time protocol", "oom": "out of memory",
    "oomkilled": "out of memory killed", "mem": "memory", "db": "database", "lb": "load balancer",
    "pct": "percent", "repl": "replication", "cfg": "configuration", "conf": "configuration",
    "config": "configuration", "env": "environment", "prod": "production", "err": "error", "errs": "errors",
    "msg": "message", "p99": "99th percentile latency", "p95": "95th percentile latency", "ha": "high availability",
}
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def expand_query(text: str) -> str:
    """The query with shorthand expanded and CamelCase identifiers split (`CrashLoopBackOff` -> `Crash Loop Back
    Off`), originals kept, so a chat message meets the runbook's own words."""
    def one(match: re.Match) -> str:
        word = match.group(0)
        extra = [ABBREVIATIONS[word.lower()]] if word.lower() in ABBREVIATIONS else []
        split = humanize(word)
        if split != word:
            extra.append(split)
        extra = [e for e in extra if e.lower() != word.lower()]
        return f"{word} ({', '.join(extra)})" if extra else word

    return _WORD.sub(one, text)


def query_vector(embedder: Embedder, query: str) -> np.ndarray:
    """The query's vector as `search` computes it (shorthand expanded). Callers that search one question several
    ways (documents, past incidents, fit) compute it once and pass it along."""
    return np.asarray(embedder.embed([expand_query(query)])[0], dtype=np.float32)


def search(pool: ConnectionPool, embedder: Embedder, query: str, *, top_k: int = 5, workspace: str = "default",
           services: Sequence[str] | None = None, source_types: Sequence[str] | None = None,
           per_document: bool = True, vector: np.ndarray | None = None) -> list[Citation]:
    """Hybrid retrieval; by default the best chunk of each document, so one long page cannot fill the list.
    `vector`: the query's `query_vector`, when the caller already has it."""
    expanded = expand_query(query)
    vector = query_vector(embedder, query) if vector is None else vector
    with pool.connection() as conn:
        rows = kb.hybrid_search(conn, query=expanded, vector=vector, top_k=top_k * 4 if per_document else top_k,
                                workspace=workspace, services=services, source_types=source_types,
                                candidates=max(kb.CANDIDATES, top_k * 8))
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
