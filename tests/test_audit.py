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
