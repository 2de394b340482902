"""Moving a workflow plan forward: what a worker does after a step of a workflow finished, and what the recovery
sweeper does for a plan a restart left waiting. The database is the checkpoint: step statuses and their `needs`
say everything, so `advance` may run any number of times, from anywhere, and does each thing once.

- Ready set: a step approved (or runnable without a click) whose needs have all succeeded is queued.
- Stop on failure: once a step fails, no other step of the plan starts (those not started are `skipped`); when
  nothing of the plan is running any more, the steps that completed are rolled back in reverse completion order
  as a chain of rollback steps, each waiting for the one before (auto or proposed per `policy.auto_rollback`).
  A failed rollback stops the rest of the chain: a person takes over.
- A step that needs one that will never succeed (rejected, refused, expired, skipped) is skipped.

Concurrency: every step change is audited, and audit appends take one lock (storage.audit.lock_chain) held to
commit, so `advance` takes it first and reads the statuses after: workers advancing plans take turns and each sees
the others' commits. A step row another transaction holds (a click deciding it) is left alone, never waited for
(waiting there while holding the chain lock would deadlock): that click reads the statuses under the same lock
after we commit, and queues the step itself (engine.plans.approve_and_queue). What is left over either way, the
sweeper's next pass finishes."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import psycopg

from connectors.followups import add_rollback
from engine.config import WarroomConfig
from engine.plans import approve_and_queue, queue_approved
from engine.workflow import waiting_on
from storage import audit
from storage import plans as plan_store

log = logging.getLogger(__name__)

NOT_STARTED = ("proposed", "approved", "queued")
NEVER_SUCCEEDS = ("rejected", "refused", "expired", "skipped")


@dataclass
class Advance:
    queued: list[int] = field(default_factory=list)      # dispatch these after commit
    notes: list[str] = field(default_factory=list)       # what the thread is told


def is_workflow_step(step: dict[str, Any]) -> bool:
    return step.get("needs") is not None


def advance(conn: psycopg.Connection, plan_id: int, *, config: WarroomConfig | None,
            workspace: str = "default") -> Advance:
    """Inside the caller's transaction. Without `config` (a sweeper that has none) a rollback chain is not
    started; everything else is done."""
    out = Advance()
    audit.lock_chain(conn)
    steps = plan_store.plan_steps(conn, plan_id)
    if not any(is_workflow_step(s) for s in steps):
        return out
    failed = [s for s in steps if s["kind"] == "step" and s["status"] == "failed"]
    if failed:
        _skip(conn, steps, "step", f"step {failed[0]['key']} failed", workspace, out)
        running = [s for s in steps if s["kind"] == "step" and s["status"] == "running"]
        chain_started = any(s["kind"] == "rollback" for s in steps)
        if config is not None and not running and not chain_started:
            _rollback_chain(conn, steps, config, workspace, out)
    failed_rollbacks = [s for s in steps if s["kind"] == "rollback" and s["status"] == "failed"]
    if failed_rollbacks:
        _skip(conn, plan_store.plan_steps(conn, plan_id), "rollback",
              f"rollback {failed_rollbacks[0]['key']} failed; the rest is left to a person", workspace, out)
    _skip_unreachable(conn, plan_id, workspace, out)
    _queue_ready(conn, plan_id, workspace, out)
    return out


def _skip(conn: psycopg.Connection, steps: list[dict[str, Any]], kind: str, why: str, workspace: str,
          out: Advance) -> int:
    """Not-started steps of `kind` -> skipped; returns how many."""
    skipped = []
    for step in steps:
        if step["kind"] != kind or step["needs"] is None or step["status"] not in NOT_STARTED:
            continue
        if not plan_store.lock_if_free(conn, step["id"]):
            continue
        row = plan_store.transition(conn, step["id"], from_=NOT_STARTED, to="skipped", refusal=f"skipped: {why}")
        if row is not None:
            audit.append(conn, actor="warroom", action="step.skipped", subject=f"step:{row['id']}",
                         detail={"key": row["key"], "reason": why}, workspace=workspace)
            skipped.append(row["key"])
    if skipped:
        out.notes.append(f"Stopped: {why}. Not started: {', '.join(skipped)}.")
    return len(skipped)


def _skip_unreachable(conn: psycopg.Connection, plan_id: int, workspace: str, out: Advance) -> None:
    """Steps waiting for a step that will never succeed; repeated until nothing changes (a chain of them)."""
    while True:
        steps = plan_store.plan_steps(conn, plan_id)
        statuses = {(s["kind"], s["key"]): s["status"] for s in steps}
        changed = False
        for step in steps:
            if step["needs"] is None or step["status"] not in ("proposed", "approved"):
                continue
            dead = [n for n in step["needs"] if statuses.get((step["kind"], n)) in NEVER_SUCCEEDS]
            if dead:
                why = f"needs {dead[0]}, which was {statuses[(step['kind'], dead[0])]}"
                changed = _skip(conn, [step], step["kind"], why, workspace, out) > 0 or changed
        if not changed:
            return


def _queue_ready(conn: psycopg.Connection, plan_id: int, workspace: str, out: Advance) -> None:
    steps = plan_store.plan_steps(conn, plan_id)
    statuses = {kind: {s["key"]: s["status"] for s in steps if s["kind"] == kind} for kind in ("step", "rollback")}
    for step in steps:
        if step["needs"] is None or waiting_on(step["needs"], statuses[step["kind"]]):
            continue
        if step["status"] not in ("approved", "proposed") or not plan_store.lock_if_free(conn, step["id"]):
            continue
        row = None
        if step["status"] == "approved":
            row = queue_approved(conn, step["id"], workspace=workspace)
        elif step["status"] == "proposed" and not step["requires_approval"]:
            reason = "policy.auto_rollback" if step["kind"] == "rollback" else "auto_run_read_only"
            row = approve_and_queue(conn, step["id"], actor="warroom", platform="policy", reason=reason,
                                    workspace=workspace)
        if row is not None and row["status"] == "queued":
            out.queued.append(row["id"])


def _rollback_chain(conn: psycopg.Connection, steps: list[dict[str, Any]], config: WarroomConfig,
                    workspace: str, out: Advance) -> None:
    """The completed steps' rollbacks, last completed first, each waiting for the one before it. The failed
    step counts as completed (it may have half-happened); a succeeded read-only step changed nothing."""
    done = [s for s in steps if s["kind"] == "step" and s["rollback"]
            and (s["status"] == "failed" or (s["status"] == "succeeded" and s["risk"] != "read_only"))]
    done.sort(key=lambda s: (s["finished_at"], s["ordinal"]), reverse=True)
    previous: list[str] = []
    chain = []
    for step in done:
        row = add_rollback(conn, step, config, workspace, after=previous)
        if row is None:
            continue
        chain.append(row)
        previous = [row["key"]]
    if chain:
        how = ("automatically (policy.auto_rollback)" if not chain[0]["requires_approval"]
               else f"once approved on the plan card ({chain[0]['why_not_automatic']})")
        out.notes.append(f"Rolling back in reverse order, {how}: {' → '.join(r['key'] for r in chain)}.")
