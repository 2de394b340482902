"""The knowledge base end to end: every source type ingested from a realistic sample into the real database and
found by search with its provenance; the document lifecycle (unchanged, changed, deleted, pruned); filters."""
import json
import shutil

from engine.knowledge import ingest, remove, search
from tests.conftest import EXAMPLES, warroom
from tests.test_ingest_sources import FIX as FIXTURES

SAMPLES = {   # fixture (see tests/fixtures/sources/README.md) -> (stored source_type, a query an engineer types)
    "confluence/SRE-Payments-API-5xx-runbook_2293760.html": ("html", "runbook for payments api returning 5xx"),
    "slack/incidents/2026-03-14.json": ("slack", "what did we do last time payments ran out of db connections"),
    "tickets/servicenow_incident.csv": ("ticket", "past ticket: payments 5xx from connection pool exhaustion"),
    "logs/payments-api.log": ("log", "PoolError connection pool exhausted in payments-api"),
}


def _copy_samples(tmp_path):
    tree = tmp_path / "kb"
    for rel in [*SAMPLES, "logs/syslog"]:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURES / rel, tree / rel)
    shutil.copytree(EXAMPLES / "runbooks", tree / "runbooks")
    (tree / "notes").mkdir()
    (tree / "notes" / "package.json").write_text('{"name": "not knowledge"}')   # skipped by the walk
    (tree / "notes" / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return tree


def test_every_source_type_is_ingested_by_auto_detection_and_found_with_provenance(pool, embedder, tmp_path):
    tree = _copy_samples(tmp_path)
    report = ingest(pool, embedder, [tree])
    assert not report.errors, report.errors
    with pool.connection() as conn:
        kinds = {r["source"]: r["source_type"] for r in conn.execute("SELECT source, source_type FROM documents")}
    assert set(kinds.values()) == {"markdown", "html", "slack", "ticket", "log", "runbook"}
    assert not any(s.endswith(("package.json", "logo.png")) for s in kinds)
    assert kinds[str((tree / "logs" / "syslog").resolve())] == "log"        # no suffix: detected by content

    for rel, (source_type, query) in SAMPLES.items():
        source = str((tree / rel).resolve())
        assert kinds[source] == source_type
        found = search(pool, embedder, query, top_k=3, source_types=[source_type])
        assert found and found[0].source == source, (rel, [c.source for c in found])
        assert found[0].document_id and found[0].chunk_id and found[0].score > 0 and found[0].text

    again = ingest(pool, embedder, [tree])
    assert again.chunks_embedded == 0 and not again.added and not again.updated and not again.errors


def test_an_explicit_source_type_overrides_detection_and_a_wrong_one_is_a_clear_error(pool, embedder, tmp_path):
    notes = tmp_path / "export.txt"
    shutil.copy(FIXTURES / "slack/incidents/2026-03-14.json", notes)
    report = ingest(pool, embedder, [notes], source_type="slack-export")
    assert len(report.added) == 1 and not report.errors
    wrong = tmp_path / "page.csv"
    wrong.write_text("not,a\nticket")
    report = ingest(pool, embedder, [wrong], source_type="slack-export")
    assert report.errors and str(wrong) in report.errors[0] and not report.added
    unknown = tmp_path / "blob.bin"
    unknown.write_bytes(b"\x00\x01binary")
    report = ingest(pool, embedder, [unknown])
    assert report.errors and "--source-type" in report.errors[0]


def test_a_broken_edit_keeps_the_previous_version(pool, embedder, tmp_path):
    tickets = tmp_path / "tickets.csv"
    shutil.copy(FIXTURES / "tickets/servicenow_incident.csv", tickets)
    ingest(pool, embedder, [tickets])
    with pool.connection() as conn:
        before = conn.execute("SELECT count(*) AS n FROM chunks").fetchone()["n"]
    tickets.write_text("")           # truncated by a bad export
    report = ingest(pool, embedder, [tickets])
    assert report.errors and "empty" in report.errors[0]
    with pool.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM chunks").fetchone()["n"] == before


def test_prune_removes_deleted_files_and_their_runbooks_and_remove_deletes_by_source(pool, embedder, tmp_path):
    tree = tmp_path / "runbooks"
    shutil.copytree(EXAMPLES / "runbooks", tree)
    ingest(pool, embedder, [tree])
    gone = tree / "node-filesystem-filling-up.yaml"
    gone.unlink()
    kept = ingest(pool, embedder, [tree])             # without --prune nothing is removed
    assert kept.removed == []
    assert search(pool, embedder, "no space left on device, disk almost full", top_k=1)[0].source == \
        str(gone.resolve())

    pruned = ingest(pool, embedder, [tree], prune=True)
    assert pruned.removed == [str(gone.resolve())] and pruned.chunks_embedded == 0
    with pool.connection() as conn:
        assert conn.execute("SELECT count(*) AS n FROM documents WHERE source = %s",
                            (str(gone.resolve()),)).fetchone()["n"] == 0
        assert conn.execute("SELECT count(*) AS n FROM chunk_vectors v LEFT JOIN chunks c ON c.id = v.chunk_id "
                            "WHERE c.id IS NULL").fetchone()["n"] == 0
        active = [r["runbook_id"] for r in conn.execute("SELECT runbook_id FROM runbooks WHERE active")]
    assert sorted(active) == ["checkout-high-latency", "kube-pod-crash-looping", "payments-high-error-rate"]
    assert all(c.source != str(gone.resolve())
               for c in search(pool, embedder, "no space left on device, disk almost full", top_k=5))

    other = str((tree / "redis-memory-pressure.md").resolve())
    assert remove(pool, [other, "/never/indexed.md"]) == [other]
    shutil.rmtree(tree)
    wiped = ingest(pool, embedder, [tree], prune=True)   # the whole tree is gone
    assert len(wiped.removed) == 4 and not wiped.errors


def test_search_filters_by_service_and_source_type(pool, embedder, tmp_path):
    (tmp_path / "a.md").write_text("---\nservices: [payments-api]\n---\n# Payments 5xx\nRoll back the deploy.\n")
    (tmp_path / "b.md").write_text("---\nservices: [checkout]\n---\n# Checkout 5xx\nRoll back the deploy.\n")
    ingest(pool, embedder, [tmp_path])
    assert [c.title for c in search(pool, embedder, "5xx after deploy", services=["checkout"])] == ["Checkout 5xx"]
    assert [c.title for c in search(pool, embedder, "5xx after deploy", services=["payments-api"])] == \
        ["Payments 5xx"]
    assert search(pool, embedder, "5xx after deploy", source_types=["ticket"]) == []
    assert len(search(pool, embedder, "5xx after deploy", source_types=["markdown"])) == 2
    assert search(pool, embedder, "5xx after deploy", workspace="other") == []


def test_cli_prune_and_search_filters(db_url, tmp_path):
    env = {"DATABASE_URL": db_url}
    tree = tmp_path / "kb"
    shutil.copytree(EXAMPLES / "runbooks", tree / "runbooks")
    shutil.copy(FIXTURES / "tickets/jira_export.csv", tree / "jira.csv")
    done = warroom("ingest", str(tree), env=env)
    assert done.returncode == 0, done.stderr
    assert "7 added" in done.stdout
    out = warroom("search", "--json", "--source-type", "ticket", "database connections", env=env)
    assert out.returncode == 0, out.stderr
    [line] = [json.loads(x) for x in out.stdout.splitlines()]
    assert line["results"] and {r["source"] for r in line["results"]} == {str((tree / "jira.csv").resolve())}
    (tree / "jira.csv").unlink()
    done = warroom("ingest", "--prune", str(tree), env=env)
    assert done.returncode == 0, done.stderr
    assert "1 removed" in done.stdout and "0 added" in done.stdout
    out = warroom("search", "--json", "--source-type", "ticket", "database connections", env=env)
    assert json.loads(out.stdout)["results"] == []
    bad = warroom("search", "--source-type", "pdf", "x", env=env)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_a_long_question_of_rare_words_is_searchable(pool, embedder, tmp_path):
    """Many words the full-text statistics have never seen once made the match estimate underflow (an error)."""
    (tmp_path / "a.md").write_text("# Datadog monitor\nThe checkout p99 latency monitor triggered.\n")
    ingest(pool, embedder, [tmp_path])
    question = " ".join(f"zyx{i}qv" for i in range(60)) + " checkout latency monitor"
    assert [c.title for c in search(pool, embedder, question)] == ["Datadog monitor"]


def _long_page(sections: dict[str, str]) -> str:
    body = ["# Payments API runbook", "", "What to do when payments-api misbehaves.", ""]
    for heading, fact in sections.items():
        body += [f"## {heading}", ""] + [f"{fact} Step {i}: " + " ".join(["check the dashboards"] * 12)
                                         for i in range(8)] + [""]
    return "\n".join(body)


def test_identical_text_is_never_embedded_twice(pool, embedder, tmp_path):
    """Dedup by content hash reaches below the document: a copied page reuses every vector, and an edit to one
    section of a long page embeds only the windows whose text changed."""
    sections = {name: f"The {name.lower()} notes." for name in ("Symptoms", "Diagnosis", "Mitigation", "Rollback")}
    page = tmp_path / "a" / "payments.md"
    page.parent.mkdir()
    page.write_text(_long_page(sections))
    first = ingest(pool, embedder, [tmp_path])
    assert first.windows_embedded >= 4 and first.windows_reused == 0

    copy = tmp_path / "b" / "payments.md"
    copy.parent.mkdir()
    copy.write_text(page.read_text())
    copied = ingest(pool, embedder, [tmp_path])
    assert copied.added == [str(copy.resolve())] and copied.windows_embedded == 0
    assert copied.windows_reused == first.windows_embedded

    page.write_text(_long_page({**sections, "Rollback": "Roll back with helm rollback payments-api."}))
    edited = ingest(pool, embedder, [tmp_path])
    assert edited.updated == [str(page.resolve())]
    assert 0 < edited.windows_embedded < first.windows_embedded and edited.windows_reused > 0
    found = search(pool, embedder, "how do I roll back payments with helm", top_k=1)
    assert found[0].source == str(page.resolve())
    with pool.connection() as conn:   # a reused vector is the same vector the model gave the original text
        rows = conn.execute("""SELECT count(DISTINCT embedding::text) AS vectors, count(DISTINCT text_hash) AS texts
                               FROM chunk_vectors""").fetchone()
    assert rows["vectors"] == rows["texts"]
