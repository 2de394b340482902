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


def enqueue_latest(conn: psycopg.Connection, *, platform: str, channel: str, message_key: str,
                   card: dict[str, Any]) -> int:
    """Show `card` as the message `message_key`, coalescing with what is still queued for it: a message that
    changes many times a second (an alert group's parent while alerts pour in) must not become one chat.update
    per change at ~1 message a second. A pending post of the message gets the new card (it goes out already
    up to date); else a pending update of it does; else a new update is queued.

    A row the dispatcher is sending right now is locked by its claim: the UPDATE waits for that drain to
    commit, then sees the row is no longer pending and falls through, so the newest card is never lost."""
    body = json.dumps(card, default=str)
    for op in ("post", "update"):
        row = conn.execute(
            """UPDATE outbox SET card = %s::jsonb
               WHERE platform = %s AND message_key = %s AND op = %s AND status = 'pending'
               RETURNING id""", (body, platform, message_key, op)).fetchone()
        if row is not None:
            return row["id"]
    return enqueue(conn, platform=platform, channel=channel, card=card, op="update", message_key=message_key)


def claim(conn: psycopg.Connection, *, platforms: list[str], limit: int = 50,
          per_channel: int = 5) -> list[dict[str, Any]]:
    """Lock the rows due now for this dispatcher; other replicas skip them (FOR UPDATE SKIP LOCKED).

    Per channel only the head of the queue is due: a row waiting (Retry-After, backoff, a parent not yet
    posted) holds back every later row of its channel, so messages never overtake each other. At most
    `per_channel` rows a channel, so one busy channel cannot starve the others.
    """
    return conn.execute(
        """SELECT * FROM outbox WHERE id IN (
               SELECT id FROM (
                   SELECT id, next_attempt_at <= now() AS due,
                          bool_and(next_attempt_at <= now()) OVER w AS head_due,
                          row_number() OVER w AS rn
                   FROM outbox WHERE status = 'pending' AND platform = ANY(%s)
                   WINDOW w AS (PARTITION BY platform, channel ORDER BY id ROWS UNBOUNDED PRECEDING)
               ) queue WHERE head_due AND rn <= %s)
           ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED""", (platforms, per_channel, limit)).fetchall()


def is_pending(conn: psycopg.Connection, message_key: str, *, platform: str, op: str | None = None) -> bool:
    """Is a message with this key still waiting to be sent (so what depends on it should wait too)?"""
    row = conn.execute(
        "SELECT 1 FROM outbox WHERE message_key = %s AND platform = %s AND status = 'pending' "
        "AND (%s::text IS NULL OR op = %s) LIMIT 1", (message_key, platform, op, op)).fetchone()
    return row is not None


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
                     thread_id: str | None = None, permalink: str | None = None) -> None:
    conn.execute(
        """INSERT INTO chat_messages (key, platform, channel, message_id, thread_id, permalink)
           VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (platform, key) DO NOTHING""",
        (key, platform, channel, message_id, thread_id, permalink))


def find_message(conn: psycopg.Connection, key: str, platform: str) -> dict[str, Any] | None:
    return conn.execute("SELECT * FROM chat_messages WHERE platform = %s AND key = %s",
                        (platform, key)).fetchone()


def find_by_message_id(conn: psycopg.Connection, *, platform: str, channel: str,
                       message_id: str) -> dict[str, Any] | None:
    """Which logical message (alert:12, plan:7) a platform message is: for clicks, threads and mentions."""
    return conn.execute("SELECT * FROM chat_messages WHERE platform = %s AND channel = %s AND message_id = %s "
                        "ORDER BY created_at LIMIT 1", (platform, channel, message_id)).fetchone()


def pending_count(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) AS n FROM outbox WHERE status = 'pending'").fetchone()["n"]
