"""Automatic incident moves: what warroom itself sees happen in an incident's thread moves the incident on,
with actor `warroom` and a note saying why, in the transaction of what caused it.

- a diagnosis asked in the thread, or the first approved step of its plans -> INVESTIGATING
- a state-changing step of its plans that succeeded for real (not a dry run) -> MITIGATED

Each hook is a single call from where the event happens (handlers.command, handlers.approval, connectors.jobs)
and never breaks that event: it runs in a savepoint and logs its own failures, because an approval or a step
result matters more than the incident's bookkeeping. A move the state machine does not allow (the incident
is already further along) is simply not made.
"""
from __future__ import annotations

import logging
from typing import Any

import psycopg

from engine import lifecycle
from storage import incidents as incident_store

log = logging.getLogger(__name__)

ACTOR = "warroom"


def diagnosed(conn: psycopg.Connection, *, channel: str, thread_key: str | None, asked_by: str,
              workspace: str = "default") -> dict[str, Any] | None:
    """Someone asked warroom to diagnose in an incident's own thread: people are investigating it."""
    if not thread_key:
        return None
    return _safely(conn, lambda: _move(
        conn, incident_store.in_thread(conn, channel=channel, thread=thread_key, workspace=workspace),
        lifecycle.INVESTIGATING, f"diagnosis asked in the incident thread by {asked_by}", workspace))


def step_approved(conn: psycopg.Connection, plan: dict[str, Any], step: dict[str, Any], *, approved_by: str,
                  workspace: str = "default") -> dict[str, Any] | None:
    """The first approved step of one of the incident's plans: someone is acting on it."""
    return _safely(conn, lambda: _move(
        conn, incident_store.for_plan(conn, plan), lifecycle.INVESTIGATING,
        f"step {step['key']} approved by {approved_by}", workspace, step_id=step["id"]))


def step_finished(conn: psycopg.Connection, step: dict[str, Any], result: Any, *,
                  workspace: str = "default") -> dict[str, Any] | None:
    """A step that changes state succeeded for real (`result` is a connectors StepResult: ok, data): the
    incident its plan belongs to is mitigated. Resolving stays a human's call."""
    if not result.ok or step.get("risk") == "read_only" or (result.data or {}).get("dry_run"):
        return None

    def move():
        plan = conn.execute("SELECT * FROM plans WHERE id = %s", (step["plan_id"],)).fetchone()
        incident = incident_store.for_plan(conn, plan) if plan else None
        return _move(conn, incident, lifecycle.MITIGATED, f"state-changing step {step['key']} succeeded",
                     workspace, step_id=step["id"])
    return _safely(conn, move)


def _move(conn: psycopg.Connection, incident: dict[str, Any] | None, to: str, note: str, workspace: str,
          **detail: Any) -> dict[str, Any] | None:
    if incident is None or not lifecycle.allowed(incident["state"], to):
        return None
    return incident_store.advance(conn, incident["id"], from_=lifecycle.sources(to), to=to, actor=ACTOR, note=note,
                                  workspace=workspace, automatic=True, **detail)


def _safely(conn: psycopg.Connection, move) -> dict[str, Any] | None:
    try:
        with conn.transaction():  # a savepoint inside the caller's transaction
            return move()
    except Exception:  # noqa: BLE001 (see the module docstring: bookkeeping must not break the event)
        log.exception("automatic incident move failed")
        return None
