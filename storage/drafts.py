"""Runbook drafts: proposals written from resolved incidents, waiting for Approve / Edit / Reject."""
from __future__ import annotations

import json
from typing import Any

import psycopg


def create(conn: psycopg.Connection, *, incident_id: int, runbook_id: str, yaml_text: str,
           citations: list[dict[str, Any]], base_version_id: int | None, created_by: str,
           platform: str | None = None, channel: str | None = None, thread: str | None = None,
           revision_of: int | None = None, workspace: str = "default") -> int:
    return conn.execute(
        """INSERT INTO runbook_drafts (workspace, incident_id, runbook_id, yaml, citations, base_version_id,
                                       revision_of, created_by, platform, channel, thread)
           VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s) RETURNING id""",
        (workspace, incident_id, runbook_id, yaml_text, json.dumps(citations), base_version_id, revision_of,
         created_by, platform, channel, thread)).fetchone()["id"]


def get(conn: psycopg.Connection, draft_id: int, *, lock: bool = False) -> dict[str, Any] | None:
    return conn.execute("SELECT * FROM runbook_drafts WHERE id = %s" + (" FOR UPDATE" if lock else ""),
                        (draft_id,)).fetchone()


def decide(conn: psycopg.Connection, draft_id: int, *, status: str, actor: str,
           version_id: int | None = None) -> bool:
    """Close a proposed draft; False when it was no longer proposed (decided or replaced meanwhile)."""
    row = conn.execute(
        """UPDATE runbook_drafts SET status = %s, decided_by = %s, decided_at = now(), version_id = %s
           WHERE id = %s AND status = 'proposed' RETURNING id""",
        (status, actor, version_id, draft_id)).fetchone()
    return row is not None


def for_incident(conn: psycopg.Connection, incident_id: int) -> list[dict[str, Any]]:
    return conn.execute("SELECT * FROM runbook_drafts WHERE incident_id = %s ORDER BY id",
                        (incident_id,)).fetchall()
