"""Ingest benchmark: chunks/s of the real `engine.knowledge.ingest` with the real MiniLM embedder over the runbook
corpus (copied under several names so nothing is hash-skipped), beside baselines measured in the same run:

  * no_embedding   - the same ingest with a stand-in embedder (random vectors): parse + store cost alone
  * one_at_a_time  - the real embedder called once per text: what batching buys

and the time of a re-ingest of the unchanged tree (it must embed nothing).

    .venv/bin/python -m bench.ingest --copies 3 --runs 3
    .venv/bin/python -m bench.ingest --quick
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (RUNBOOKS, OneAtATimeEmbedder, RandomEmbedder, create_database, drop_database,
                          get_embedder, log, machine, median, pg_server, server_facts)


class Counting:
    """Wraps an embedder and counts calls and texts (so a re-ingest can be shown to embed nothing)."""

    def __init__(self, inner) -> None:
        self.inner, self.dimensions = inner, inner.dimensions
        self.calls = self.texts = 0
        self.seconds = 0.0

    def embed(self, texts):
        self.calls += 1
        self.texts += len(texts)
        start = time.perf_counter()
        try:
            return self.inner.embed(texts)
        finally:
            self.seconds += time.perf_counter() - start


def make_tree(root: Path, source: Path, copies: int, limit: int | None = None) -> list[Path]:
    """`copies` copies of the corpus under different directory names (different sources, so none is skipped)."""
    files = sorted(p for p in source.rglob("*.md") if p.is_file())[:limit]
    tops = []
    for k in range(copies):
        top = root / f"copy{k:02d}"
        for f in files:
            dest = top / f.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dest)
        tops.append(top)
    return tops


def ingest_once(server, name: str, embedder, paths: list[Path]) -> dict:
    from engine.knowledge import ingest
    from storage.db import open_pool

    url = create_database(server, name)
    pool = open_pool(url, max_size=4)
    try:
        counting = Counting(embedder)
        start = time.perf_counter()
        report = ingest(pool, counting, paths)
        seconds = time.perf_counter() - start
        out = {"seconds": seconds, "chunks": report.chunks_embedded, "chunks_per_s": report.chunks_embedded / seconds,
               "texts_embedded": counting.texts, "embed_calls": counting.calls, "embed_seconds": counting.seconds,
               "files": len(report.added) + len(report.updated), "errors": len(report.errors)}
        if report.errors:
            log(f"    errors: {report.errors[:3]}")
        with pool.connection() as conn:
            out["chunks_stored"] = conn.execute("SELECT count(*) FROM chunks").fetchone()["count"]
        return out | {"url": url, "pool": pool}
    except BaseException:
        pool.close()
        raise


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, default=RUNBOOKS, help="markdown tree to ingest (copied --copies times)")
    ap.add_argument("--copies", type=int, default=3, help="copies of the tree, under different names")
    ap.add_argument("--runs", type=int, default=3, help="runs; the median chunks/s is reported")
    ap.add_argument("--unbatched-copies", type=int, default=1,
                    help="copies ingested by the one-text-per-call baseline (it is slow; chunks/s is comparable)")
    ap.add_argument("--limit", type=int, help="only the first N files of the tree")
    ap.add_argument("--json", type=Path, help="write all results as JSON here")
    ap.add_argument("--quick", action="store_true", help="30 files, 1 copy, 1 run")
    args = ap.parse_args(argv)
    if args.quick:
        args.limit, args.copies, args.runs, args.unbatched_copies = 30, 1, 1, 1
    if not args.source.exists():
        ap.error(f"{args.source} does not exist")

    results: dict = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}, "runs": []}
    log(f"machine: {results['machine']}, load average {os.getloadavg()}")
    model = get_embedder()
    arms = {"batched": model, "no_embedding": RandomEmbedder(), "one_at_a_time": OneAtATimeEmbedder(model)}
    with tempfile.TemporaryDirectory(prefix="warroom-bench-tree-") as tmp, pg_server() as server:
        tops = make_tree(Path(tmp), args.source, args.copies, args.limit)
        log(f"tree: {args.copies} copies of {len(list(tops[0].rglob('*.md')))} files")
        for r in range(args.runs):
            run: dict = {}
            names = list(arms)
            names = names[r % len(names):] + names[:r % len(names)]  # rotate the order between runs
            for arm in names:
                paths = tops[: args.unbatched_copies] if arm == "one_at_a_time" else tops
                db = f"bench_ingest_{arm}_{r}"
                out = ingest_once(server, db, arms[arm], paths)
                pool = out.pop("pool")
                url = out.pop("url")
                results.setdefault("server", server_facts(url))
                try:
                    if arm == "batched":
                        # Re-ingest of the unchanged tree: should embed nothing.
                        from engine.knowledge import ingest

                        counting = Counting(model)
                        start = time.perf_counter()
                        report = ingest(pool, counting, paths)
                        out["reingest"] = {"seconds": time.perf_counter() - start, "texts_embedded": counting.texts,
                                           "unchanged": len(report.unchanged),
                                           "changed": len(report.added) + len(report.updated)}
                finally:
                    pool.close()
                    drop_database(server, db)
                run[arm] = out
                log(f"  run {r + 1}/{args.runs} {arm}: {out['chunks']} chunks ({out['texts_embedded']} texts) in "
                    f"{out['seconds']:.1f} s = {out['chunks_per_s']:.1f} chunks/s"
                    + (f"; re-ingest {out['reingest']['seconds']:.2f} s, "
                       f"{out['reingest']['texts_embedded']} texts embedded" if "reingest" in out else ""))
            results["runs"].append(run)
    summary = {arm: {"chunks_per_s": median([r[arm]["chunks_per_s"] for r in results["runs"]]),
                     "texts_per_s": median([r[arm]["texts_embedded"] / r[arm]["seconds"] for r in results["runs"]]),
                     "seconds": median([r[arm]["seconds"] for r in results["runs"]]),
                     "chunks": results["runs"][0][arm]["chunks"],
                     "texts": results["runs"][0][arm]["texts_embedded"]} for arm in arms}
    summary["reingest"] = {"seconds": median([r["batched"]["reingest"]["seconds"] for r in results["runs"]]),
                           "texts_embedded": max(r["batched"]["reingest"]["texts_embedded"] for r in results["runs"]),
                           "files": results["runs"][0]["batched"]["reingest"]["unchanged"]}
    results["summary"] = summary
    results["load_average_end"] = os.getloadavg()
    print(f"\n| arm | chunks | texts embedded | seconds | chunks/s | texts/s |  (median of {args.runs} runs)")
    print("|---|---:|---:|---:|---:|---:|")
    for arm in arms:
        s = summary[arm]
        print(f"| {arm} | {s['chunks']} | {s['texts']} | {s['seconds']:.1f} | {s['chunks_per_s']:.1f} "
              f"| {s['texts_per_s']:.1f} |")
    s = summary["reingest"]
    print(f"\nre-ingest of the unchanged tree ({s['files']} files): {s['seconds']:.2f} s, "
          f"{s['texts_embedded']} texts embedded")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
