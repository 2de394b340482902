"""Conversation memory rows: the turns of one chat thread (asked, answered, approved, rejected, ruled out,
confirmed, step results) and the threads that have ended. Text is redacted and bounded before it is stored."""
from __future__ import annotations

import json
import re
from typing import Any

import psycopg

from engine.redact import redact

TEXT_LIMIT = 500
KINDS = ("asked", "answered", "approved", "rejected", "ruled_out", "confirmed", "step_result")
OPEN_STEP_STATES = ("proposed", "approved", "queued", "running")
# Thread keys the bot itself gives the messages it posts (outbox message keys, alert group threads).
_LOGICAL_KEY = re.compile(r"(?:alert|storm|plan|answer|incident|group):\d+")


def conversation_key(conn: psycopg.Connection, *, platform: str, channel: str, thread: str | None) -> str | None:
    """The key of the conversation a thread id stands for: the logical key of the bot message it hangs off when
    known (alert:12, plan:7), a logical key as plans and incidents store it, else `ts:<thread id>`."""
    if not thread:
        return None
    row = conn.execute("SELECT key FROM chat_messages WHERE platform = %s AND channel = %s AND message_id = %s "
                       "ORDER BY created_at LIMIT 1", (platform, channel, thread)).fetchone()
    if row:
        return row["key"]
    return thread if _LOGICAL_KEY.fullmatch(thread) else f"ts:{thread}"


def plan_conversation(conn: psycopg.Connection, plan: dict[str, Any]) -> str | None:
    """The conversation a plan was proposed in: its thread's, or (a card posted at the top) its own card's."""
    if not plan.get("platform") or not plan.get("channel"):
        return None
    return conversation_key(conn, platform=plan["platform"], channel=plan["channel"], thread=plan["thread"]) \
        or f"plan:{plan['id']}"


def record(conn: psycopg.Connection, *, platform: str, channel: str, thread_key: str, kind: str, text: str,
           refs: dict[str, Any] | None = None, actor: str | None = None, workspace: str = "default") -> int:
    if kind not in KINDS:
        raise ValueError(f"unknown conversation turn kind {kind!r}")
    text = redact(" ".join(text.split()))
    if len(text) > TEXT_LIMIT:
        text = text[:TEXT_LIMIT - 1] + "…"
    row = conn.execute(
        """INSERT INTO conversation_turns (workspace, platform, channel, thread_key, kind, text, refs, actor)
           VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s) RETURNING id""",
        (workspace, platform, channel, thread_key, kind, text, json.dumps(refs or {}, default=str), actor)
    ).fetchone()
    return row["id"]


def record_for_plan(conn: psycopg.Connection, plan_id: int, *, kind: str, text: str,
                    refs: dict[str, Any] | None = None, actor: str | None = None,
                    workspace: str = "default") -> int | None:
    """A turn in whatever conversation the plan belongs to; None when the plan has no chat thread (CLI replay)."""
    plan = conn.execute("SELECT * FROM plans WHERE id = %s", (plan_id,)).fetchone()
    key = plan_conversation(conn, plan) if plan else None
    if key is None:
        return None
    return record(conn, platform=plan["platform"], channel=plan["channel"], thread_key=key, kind=kind, text=text,
                  refs={"plan_id": plan_id, **(refs or {})}, actor=actor, workspace=workspace)


def turns(conn: psycopg.Connection, *, platform: str, channel: str, thread_key: str, workspace: str = "default",
          limit: int = 200) -> list[dict[str, Any]]:
    """The thread's turns, oldest first (the newest `limit`)."""
    rows = conn.execute(
        """SELECT * FROM conversation_turns WHERE workspace = %s AND platform = %s AND channel = %s
           AND thread_key = %s ORDER BY id DESC LIMIT %s""",
        (workspace, platform, channel, thread_key, limit)).fetchall()
    return rows[::-1]


def end(conn: psycopg.Connection, *, platform: str, channel: str, thread_key: str, why: str,
        workspace: str = "default") -> None:
    """Mark a conversation ended: its summary is (re)indexed by the next process that has the embedder."""
    conn.execute(
        """INSERT INTO conversations_ended (workspace, platform, channel, thread_key, why) VALUES (%s, %s, %s, %s, %s)
           ON CONFLICT (workspace, platform, channel, thread_key)
           DO UPDATE SET why = EXCLUDED.why, ended_at = now(), indexed_at = NULL""",
        (workspace, platform, channel, thread_key, why))


def end_if_plan_done(conn: psycopg.Connection, plan_id: int, *, workspace: str = "default") -> bool:
    """A plan none of whose steps is still to be decided or running ends its conversation."""
    open_steps = conn.execute("SELECT count(*) AS n FROM plan_steps WHERE plan_id = %s AND status = ANY(%s)",
                              (plan_id, list(OPEN_STEP_STATES))).fetchone()["n"]
    plan = conn.execute("SELECT * FROM plans WHERE id = %s", (plan_id,)).fetchone()
    key = plan_conversation(conn, plan) if plan else None
    if open_steps or key is None:
        return False
    end(conn, platform=plan["platform"], channel=plan["channel"], thread_key=key, why=f"plan {plan_id} finished",
        workspace=workspace)
    return True


def pending_ended(conn: psycopg.Connection, *, workspace: str = "default", limit: int = 20) -> list[dict[str, Any]]:
    return conn.execute("SELECT * FROM conversations_ended WHERE workspace = %s AND indexed_at IS NULL "
                        "ORDER BY ended_at LIMIT %s", (workspace, limit)).fetchall()


def mark_indexed(conn: psycopg.Connection, row: dict[str, Any]) -> None:
    conn.execute("UPDATE conversations_ended SET indexed_at = now() WHERE workspace = %s AND platform = %s "
                 "AND channel = %s AND thread_key = %s",
                 (row["workspace"], row["platform"], row["channel"], row["thread_key"]))


def permalink(conn: psycopg.Connection, *, platform: str, thread_key: str) -> str | None:
    """The link to the message a conversation hangs off, when the platform gave one."""
    row = conn.execute("SELECT permalink FROM chat_messages WHERE platform = %s AND key = %s",
                       (platform, thread_key)).fetchone()
    return row["permalink"] if row else None


def new_answer_key(conn: psycopg.Connection) -> str:
    """The message key of an answer with no plan posted at the top: replies under it are its conversation."""
    row = conn.execute("SELECT nextval('conversation_answer_keys') AS n").fetchone()
    return f"answer:{row['n']}"
