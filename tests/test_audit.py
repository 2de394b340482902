import json

import psycopg
import pytest

from storage import audit
from storage.db import connect
from tests.conftest import warroom


def _append_three(db_url):
    with connect(db_url) as conn:
        for i in range(3):
            audit.append(conn, actor="alice", action="step.approved", subject=f"step:{i}", detail={"n": i})
        conn.commit()


def test_untouched_chain_verifies(db_url):
    _append_three(db_url)
    with connect(db_url) as conn:
        result = audit.verify(conn)
    assert result.ok and result.rows == 3


def test_update_and_delete_are_refused_by_the_trigger(db_url):
    _append_three(db_url)
    with connect(db_url) as conn:
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("UPDATE audit_log SET actor = 'mallory'")
        conn.rollback()
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("DELETE FROM audit_log")
        conn.rollback()
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("TRUNCATE audit_log")


def _tamper(db_url, sql):
    """What an attacker with superuser rights could do behind the bot's back."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
        conn.execute(sql)
        conn.execute("ALTER TABLE audit_log ENABLE TRIGGER USER")


def test_altered_row_is_named(db_url):
    _append_three(db_url)
    with connect(db_url) as conn:
        second = conn.execute("SELECT id FROM audit_log ORDER BY id OFFSET 1 LIMIT 1").fetchone()["id"]
    _tamper(db_url, f"UPDATE audit_log SET actor = 'mallory' WHERE id = {second}")
    with connect(db_url) as conn:
        result = audit.verify(conn)
    assert not result.ok and result.broken_id == second and "altered" in result.reason


def test_removed_row_breaks_the_next_link(db_url):
    _append_three(db_url)
    with connect(db_url) as conn:
        ids = [r["id"] for r in conn.execute("SELECT id FROM audit_log ORDER BY id")]
    _tamper(db_url, f"DELETE FROM audit_log WHERE id = {ids[1]}")
    with connect(db_url) as conn:
        result = audit.verify(conn)
    assert not result.ok and result.broken_id == ids[2]


def test_cli_verify_against_an_external_database(db_url):
    """DATABASE_URL pointing at a PostgreSQL the CLI did not start (here: the test server)."""
    _append_three(db_url)
    ok = warroom("audit", "verify", env={"DATABASE_URL": db_url})
    assert ok.returncode == 0, ok.stderr
    assert "intact: 3 rows" in ok.stdout
    with connect(db_url) as conn:
        last = conn.execute("SELECT max(id) AS id FROM audit_log").fetchone()["id"]
    _tamper(db_url, f"UPDATE audit_log SET detail = '{{\"n\": 99}}' WHERE id = {last}")
    broken = warroom("audit", "verify", env={"DATABASE_URL": db_url})
    assert broken.returncode == 1
    assert f"broken at row {last}" in broken.stdout


def test_cli_export_writes_json_lines_a_siem_can_reverify(db_url):
    _append_three(db_url)
    _tamper(db_url, "UPDATE audit_log SET at = at - interval '3 days' WHERE id = (SELECT min(id) FROM audit_log)")
    everything = warroom("audit", "export", env={"DATABASE_URL": db_url})
    assert everything.returncode == 0, everything.stderr
    lines = [json.loads(line) for line in everything.stdout.splitlines()]
    assert [e["subject"] for e in lines] == ["step:0", "step:1", "step:2"]
    assert {"id", "at", "workspace", "actor", "action", "subject", "detail", "prev_hash", "hash"} <= set(lines[0])
    assert lines[1]["prev_hash"] == lines[0]["hash"] and lines[2]["detail"] == {"n": 2}   # the chain travels along
    recent = warroom("audit", "export", "--since", "24h", env={"DATABASE_URL": db_url})
    assert [json.loads(line)["subject"] for line in recent.stdout.splitlines()] == ["step:1", "step:2"]
    since_time = warroom("audit", "export", "--since", lines[1]["at"], env={"DATABASE_URL": db_url})
    assert [json.loads(line)["subject"] for line in since_time.stdout.splitlines()] == ["step:1", "step:2"]
    bad = warroom("audit", "export", "--since", "last tuesday", env={"DATABASE_URL": db_url})
    assert bad.returncode == 2 and "not a time or an age: 'last tuesday'" in bad.stderr
