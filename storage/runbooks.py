"""Executable runbooks: one active version per runbook id, older versions kept."""
from __future__ import annotations

import json
from typing import Any, Sequence

import psycopg


def upsert_runbook(conn: psycopg.Connection, *, spec: dict[str, Any], content_hash: str,
                   document_id: int | None, workspace: str = "default") -> tuple[int, bool]:
    """Store a runbook; unchanged content keeps its version, changed content becomes a new one.

    Returns (row id, True when a new version was written).
    """
    meta = spec["metadata"]
    current = conn.execute(
        "SELECT id, version, content_hash FROM runbooks WHERE workspace = %s AND runbook_id = %s AND active "
        "FOR UPDATE", (workspace, meta["id"])).fetchone()
    if current and current["content_hash"] == content_hash:
        return current["id"], False
    version = 1
    if current:
        conn.execute("UPDATE runbooks SET active = false WHERE id = %s", (current["id"],))
        version = current["version"] + 1
    row = conn.execute(
        """INSERT INTO runbooks (workspace, runbook_id, version, parent_version_id, document_id, title,
                                 services, alerts, spec, content_hash)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s) RETURNING id""",
        (workspace, meta["id"], version, current["id"] if current else None, document_id, meta["title"],
         meta.get("services", []), meta.get("alerts", []), json.dumps(spec), content_hash)).fetchone()
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO runbook_steps (runbook_pk, ordinal, step_id, title, connector, target, risk, spec)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb)""",
            [(row["id"], i, s["id"], s["title"], s["connector"], s.get("target"), s.get("risk", "read_only"),
              json.dumps(s)) for i, s in enumerate(spec["steps"])])
    return row["id"], True


def active_runbooks(conn: psycopg.Connection, *, workspace: str = "default") -> list[dict[str, Any]]:
    return conn.execute("SELECT * FROM runbooks WHERE workspace = %s AND active ORDER BY id",
                        (workspace,)).fetchall()


def runbooks_for(conn: psycopg.Connection, *, alert_name: str | None, service: str | None,
                 workspace: str = "default") -> list[dict[str, Any]]:
    """Active runbooks naming this alert first, then those naming the service."""
    return conn.execute(
        """SELECT *, (%s::text = ANY(alerts)) AS by_alert FROM runbooks
           WHERE workspace = %s AND active AND (%s::text = ANY(alerts) OR %s::text = ANY(services))
           ORDER BY by_alert DESC, id""",
        (alert_name, workspace, alert_name, service)).fetchall()


def runbooks_by_document(conn: psycopg.Connection, document_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    rows = conn.execute("SELECT * FROM runbooks WHERE active AND document_id = ANY(%s)",
                        (list(document_ids),)).fetchall()
    return {r["document_id"]: r for r in rows}


def deactivate_for_document(conn: psycopg.Connection, document_id: int) -> None:
    conn.execute("UPDATE runbooks SET active = false WHERE document_id = %s AND active", (document_id,))


def get_version(conn: psycopg.Connection, pk: int) -> dict[str, Any] | None:
    return conn.execute("SELECT * FROM runbooks WHERE id = %s", (pk,)).fetchone()


def active_version(conn: psycopg.Connection, runbook_id: str, *, workspace: str = "default",
                   lock: bool = False) -> dict[str, Any] | None:
    return conn.execute("SELECT * FROM runbooks WHERE workspace = %s AND runbook_id = %s AND active"
                        + (" FOR UPDATE" if lock else ""), (workspace, runbook_id)).fetchone()


def versions(conn: psycopg.Connection, runbook_id: str, *, workspace: str = "default") -> list[dict[str, Any]]:
    """Every version of a runbook, oldest first (older ones inactive, kept)."""
    return conn.execute("SELECT * FROM runbooks WHERE workspace = %s AND runbook_id = %s ORDER BY version",
                        (workspace, runbook_id)).fetchall()
