"""Append-only, hash-chained audit log. Each row's hash covers its content and the previous hash."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterator

import psycopg
from psycopg.rows import dict_row

GENESIS = "0" * 64
_CHAIN_LOCK = 7_305_002  # serialises appends so the chain never forks


def _canonical(at: datetime, workspace: str, actor: str, action: str, subject: str,
               detail: dict[str, Any], prev_hash: str) -> bytes:
    body = {
        "at": at.astimezone(timezone.utc).isoformat(timespec="microseconds"),
        "workspace": workspace, "actor": actor, "action": action, "subject": subject,
        "detail": detail, "prev_hash": prev_hash,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def row_hash(row: dict[str, Any], prev_hash: str) -> str:
    return hashlib.sha256(_canonical(row["at"], row["workspace"], row["actor"], row["action"],
                                     row["subject"], row["detail"], prev_hash)).hexdigest()


def lock_chain(conn: psycopg.Connection) -> None:
    """Take the lock every append takes, until the caller's transaction ends. Since every change to a step is
    audited, holding it also means no other step change can commit meanwhile (connectors/workflow.py)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_CHAIN_LOCK,))


def append(conn: psycopg.Connection, *, actor: str, action: str, subject: str,
           detail: dict[str, Any] | None = None, workspace: str = "default") -> int:
    """Append one entry inside the caller's transaction; returns its id."""
    detail = json.loads(json.dumps(detail or {}, default=str))  # what jsonb will give back
    lock_chain(conn)
    last = conn.execute("SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1").fetchone()
    prev = _value(last, "hash") if last else GENESIS
    at = datetime.now(timezone.utc)
    entry = {"at": at, "workspace": workspace, "actor": actor, "action": action,
             "subject": subject, "detail": detail}
    digest = row_hash(entry, prev)
    row = conn.execute(
        """INSERT INTO audit_log (at, workspace, actor, action, subject, detail, prev_hash, hash)
           VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s, %s) RETURNING id""",
        (at, workspace, actor, action, subject, json.dumps(detail), prev, digest)).fetchone()
    return _value(row, "id")


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    rows: int
    broken_id: int | None = None
    reason: str = ""


def verify(conn: psycopg.Connection) -> VerifyResult:
    """Walk the chain in id order; the first row whose links or content do not match is named."""
    prev = GENESIS
    count = 0
    for row in _rows(conn):
        count += 1
        if row["prev_hash"] != prev:
            return VerifyResult(False, count, row["id"], "prev_hash does not match the previous row "
                                "(a row was removed or inserted)")
        if row_hash(row, prev) != row["hash"]:
            return VerifyResult(False, count, row["id"], "content does not match its hash (row altered)")
        prev = row["hash"]
    return VerifyResult(True, count)


def entries(conn: psycopg.Connection, *, since: datetime | None = None) -> Iterator[dict[str, Any]]:
    """Entries in chain order, streamed through a server-side cursor (an export may be millions of rows)."""
    sql = "SELECT id, at, workspace, actor, action, subject, detail, prev_hash, hash FROM audit_log"
    params: tuple = ()
    if since is not None:
        sql += " WHERE at >= %s"
        params = (since,)
    with conn.transaction():
        with conn.cursor(name="audit_export", row_factory=dict_row) as cur:
            cur.execute(sql + " ORDER BY id", params)
            yield from cur


def _rows(conn: psycopg.Connection) -> Iterator[dict[str, Any]]:
    cur = _dict_cursor(conn)
    cur.execute("SELECT id, at, workspace, actor, action, subject, detail, prev_hash, hash "
                "FROM audit_log ORDER BY id")
    yield from cur


def _dict_cursor(conn: psycopg.Connection) -> psycopg.Cursor:
    return conn.cursor(row_factory=dict_row)


def _value(row: Any, key: str) -> Any:
    return row[key] if isinstance(row, dict) else row[0]
