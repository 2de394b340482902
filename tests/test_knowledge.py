import json

from engine.knowledge import ingest, search
from tests.conftest import EXAMPLES, warroom


def test_ingest_is_idempotent_and_replaces_changed_documents(pool, embedder, tmp_path):
    doc = tmp_path / "disk.md"
    doc.write_text("---\ntitle: Disk full\nservices: [web]\n---\n# Disk full\n## Symptoms\nNo space left on device.\n")
    first = ingest(pool, embedder, [tmp_path])
    assert len(first.added) == 1 and first.chunks_embedded >= 1
    again = ingest(pool, embedder, [tmp_path])
    assert again.unchanged == [str(doc.resolve())] and again.chunks_embedded == 0  # no embedding work
    doc.write_text("---\ntitle: Disk full\n---\n# Disk full\n## Mitigation\nDelete old rotated logs.\n")
    changed = ingest(pool, embedder, [tmp_path])
    assert len(changed.updated) == 1
    with pool.connection() as conn:
        texts = [r["text"] for r in conn.execute("SELECT text FROM chunks")]
    assert any("rotated logs" in t for t in texts) and not any("No space left" in t for t in texts)


def test_headings_are_kept_as_context(pool, embedder, tmp_path):
    (tmp_path / "a.md").write_text("# Runbook\n## Diagnosis\n### Check pool\nLook at pg_stat_activity.\n")
    ingest(pool, embedder, [tmp_path])
    with pool.connection() as conn:
        row = conn.execute("SELECT title, heading FROM chunks").fetchone()
    assert row["title"] == "Runbook" and row["heading"] == "Runbook > Diagnosis > Check pool"


def test_invalid_runbook_is_reported_and_writes_nothing(pool, embedder, tmp_path):
    (tmp_path / "bad.yaml").write_text("apiVersion: warroom/v1\nkind: Runbook\nmetadata: {id: x, title: X}\n"
                                       "steps:\n  - {id: s, title: S, connector: telnet}\n")
    report = ingest(pool, embedder, [tmp_path])
    assert report.errors and "connector" in report.errors[0]
    with pool.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM documents").fetchone()["n"] == 0


def test_hybrid_search_finds_the_right_runbook_with_provenance(pool, embedder):
    ingest(pool, embedder, [EXAMPLES / "runbooks"])
    results = search(pool, embedder, "no space left on device on web-01, /var is almost full", top_k=3)
    assert results[0].title == "Disk filling up on a host"
    assert results[0].source.endswith("node-filesystem-filling-up.yaml")
    assert all(r.document_id and r.chunk_id and r.score > 0 for r in results)
    runbook = search(pool, embedder, "pods keep restarting with CrashLoopBackOff", top_k=3)
    assert runbook[0].title == "Kubernetes pod crash looping"


def test_cli_ingest_and_search_json_batch(db_url):
    env = {"DATABASE_URL": db_url}
    done = warroom("ingest", str(EXAMPLES / "runbooks"), env=env)
    assert done.returncode == 0, done.stderr
    assert "6 added" in done.stdout
    out = warroom("search", "--json", "--top-k", "2", env=env,
                  stdin="payments api throwing 500 errors\nredis is evicting keys\n")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["query"] for line in lines] == ["payments api throwing 500 errors", "redis is evicting keys"]
    for line in lines:
        assert len(line["results"]) == 2
        assert set(line["results"][0]) == {"document_id", "chunk_id", "title", "source", "score", "text"}
    assert lines[1]["results"][0]["title"] == "Redis memory pressure"


def test_cli_ingest_reports_a_missing_path(db_url):
    done = warroom("ingest", "/no/such/dir", env={"DATABASE_URL": db_url})
    assert done.returncode == 1 and "no such file" in done.stderr
