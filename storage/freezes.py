"""Emergency freezes set from chat (`/warroom freeze [service]`): while one is active, no state-changing step
in its scope is approved or started."""
from __future__ import annotations

from typing import Any

import psycopg


def active(conn: psycopg.Connection, *, workspace: str = "default") -> list[dict[str, Any]]:
    return conn.execute("SELECT * FROM freezes WHERE workspace = %s AND lifted_at IS NULL ORDER BY id",
                        (workspace,)).fetchall()


def freeze(conn: psycopg.Connection, *, service: str | None, reason: str, frozen_by: str,
           workspace: str = "default") -> dict[str, Any] | None:
    """Start a freeze; None when one with the same scope is already active."""
    return conn.execute(
        """INSERT INTO freezes (workspace, service, reason, frozen_by) VALUES (%s, %s, %s, %s)
           ON CONFLICT (workspace, coalesce(service, '')) WHERE lifted_at IS NULL DO NOTHING RETURNING *""",
        (workspace, service, reason, frozen_by)).fetchone()


def lift(conn: psycopg.Connection, *, service: str | None, lifted_by: str,
         workspace: str = "default") -> list[dict[str, Any]]:
    """Lift the freeze of this scope; `service=None` lifts every active freeze. Returns what was lifted."""
    return conn.execute(
        """UPDATE freezes SET lifted_by = %s, lifted_at = now()
           WHERE workspace = %s AND lifted_at IS NULL AND (%s::text IS NULL OR service = %s) RETURNING *""",
        (lifted_by, workspace, service, service)).fetchall()
