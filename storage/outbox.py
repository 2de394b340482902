"""The outbox: every message the bot sends is a row here first, so a crash loses nothing."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg


def enqueue(conn: psycopg.Connection, *, platform: str, channel: str, card: dict[str, Any], op: str = "post",
            message_key: str | None = None, thread_key: str | None = None, thread_id: str | None = None,
            recipient: str | None = None) -> int:
    row = conn.execute(
        """INSERT INTO outbox (platform, channel, op, message_key, thread_key, thread_id, recipient, card)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb) RETURNING id""",
        (platform, channel, op, message_key, thread_key, thread_id, recipient, json.dumps(card, default=str))
    ).fetchone()
    return row["id"]


def claim(conn: psycopg.Connection, *, platforms: list[str], limit: int = 20) -> list[dict[str, Any]]:
    """Lock due rows for this dispatcher; other replicas skip them (FOR UPDATE SKIP LOCKED)."""
    return conn.execute(
        """SELECT * FROM outbox WHERE status = 'pending' AND next_attempt_at <= now() AND platform = ANY(%s)
           ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED""", (platforms, limit)).fetchall()


def mark_sent(conn: psycopg.Connection, outbox_id: int) -> None:
    conn.execute("UPDATE outbox SET status = 'sent', sent_at = now(), attempts = attempts + 1 WHERE id = %s",
                 (outbox_id,))


def defer(conn: psycopg.Connection, outbox_id: int, *, seconds: float, error: str | None = None,
          count_attempt: bool = True, max_attempts: int = 20) -> None:
    """Try again later; after too many failed attempts the row is parked as dead, never silently dropped."""
    at = datetime.now(timezone.utc) + timedelta(seconds=seconds)
    conn.execute(
        """UPDATE outbox SET next_attempt_at = %s, last_error = coalesce(%s, last_error),
                  attempts = attempts + %s,
                  status = CASE WHEN attempts + %s >= %s THEN 'dead' ELSE status END
           WHERE id = %s""",
        (at, error, int(count_attempt), int(count_attempt), max_attempts, outbox_id))


def remember_message(conn: psycopg.Connection, *, key: str, platform: str, channel: str, message_id: str,
                     thread_id: str | None = None) -> None:
    conn.execute(
        """INSERT INTO chat_messages (key, platform, channel, message_id, thread_id) VALUES (%s, %s, %s, %s, %s)
           ON CONFLICT (key) DO NOTHING""", (key, platform, channel, message_id, thread_id))


def find_message(conn: psycopg.Connection, key: str) -> dict[str, Any] | None:
    return conn.execute("SELECT * FROM chat_messages WHERE key = %s", (key,)).fetchone()


def pending_count(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) AS n FROM outbox WHERE status = 'pending'").fetchone()["n"]
