"""RQ job functions. A job takes a step id, claims the step with a guarded UPDATE, runs its connector,
and writes result, audit entry and thread update in one transaction."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg.rows import dict_row
from redis import Redis
from rq import get_current_job
from rq.timeouts import JobTimeoutException

from engine.log_context import bind, log_context
from connectors import registry
from connectors.base import ConnectorError, StepResult, TransientError, checked
from connectors.followups import add_rollback, freeze_reason, rollback_note, verified
from connectors.queue import BACKOFF_S, RETRIES, enqueue_step
from connectors.workflow import Advance, advance, is_workflow_step
from connectors.recovery import Heartbeat, Timing, announce as _announce, interrupt_stale, worker_name
from connectors.redact import redact, redact_obj
from connectors.vault import VaultResolver, resolve_target
from engine import incident_hooks
from engine.config import WarroomConfig, load_config
from storage import audit
from storage import memory as memory_store
from storage import plans as plan_store

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    database_url: str
    config: WarroomConfig
    vault: VaultResolver
    step_timeout: int = 120
    workspace: str = "default"
    timing: Timing = field(default_factory=Timing)


_context: WorkerContext | None = None


def configure(context: WorkerContext) -> None:
    """Called by `warroom worker` before it starts working; forked work horses inherit it."""
    global _context
    _context = context


def _ctx() -> WorkerContext:
    global _context
    if _context is None:  # a worker started by other means: read the environment now, not at import
        from pathlib import Path

        _context = WorkerContext(
            database_url=os.environ["DATABASE_URL"],
            config=load_config(Path(os.environ.get("WARROOM_CONFIG", "./warroom.yml"))),
            vault=VaultResolver.from_env(),
            timing=Timing.from_env())
    return _context


def run_step(step_id: int) -> dict[str, Any]:
    with log_context(correlation_id=f"step-{step_id}", step_id=step_id):  # every log line of this job
        outcome = _run_step(step_id)
        log.info("step %s: %s", step_id, outcome["status"])
        return outcome


def _run_step(step_id: int) -> dict[str, Any]:
    ctx = _ctx()
    with psycopg.connect(ctx.database_url, row_factory=dict_row) as conn:
        claimed = _claim(conn, step_id, ctx)
        bind(plan_id=(claimed or {}).get("plan_id"))  # undone with the rest when run_step's context ends
        if claimed is None:
            step = plan_store.get_step(conn, step_id)
            return {"step_id": step_id, "status": step["status"] if step else "missing", "ran": False}
        if claimed.get("refused"):
            return {"step_id": step_id, "status": "refused", "ran": False}
        with Heartbeat(ctx.database_url, step_id, claimed["worker"], ctx.timing.heartbeat_s):
            result, secrets, transient = _execute(claimed, ctx)
            if transient and claimed["attempts"] <= RETRIES:
                _hand_back(conn, claimed, redact(result.summary, secrets), ctx)
                # Sleep here rather than use RQ's retry interval: that needs RQ's scheduler (see queue.BACKOFF_S).
                time.sleep(BACKOFF_S[min(claimed["attempts"], len(BACKOFF_S)) - 1])
                raise RuntimeError(f"step {step_id}: transient failure, RQ will retry")
            return _finish(conn, claimed, result, secrets, ctx)


def _claim(conn: psycopg.Connection, step_id: int, ctx: WorkerContext) -> dict[str, Any] | None:
    """queued -> running, naming this work horse. A step found `running` is another delivery of the same job:
    left alone while its worker's heartbeat is fresh, reported interrupted (never re-run) once it is stale."""
    with conn.transaction():
        now = datetime.now(timezone.utc)
        refused = _refuse_if_frozen(conn, step_id, ctx)
        if refused is not None:
            return refused
        row = plan_store.transition(conn, step_id, from_=["queued"], to="running", started_at=now,
                                    heartbeat_at=now, worker=worker_name())
        if row is not None:
            job = get_current_job()
            audit.append(conn, actor="worker", action="step.started", subject=f"step:{step_id}",
                         detail={"key": row["key"], "attempt": row["attempts"], "worker": row["worker"],
                                 "rq_worker": os.environ.get("RQ_WORKER_ID"), "job_id": job.id if job else None},
                         workspace=ctx.workspace)
            return row
        interrupt_stale(conn, lease_s=ctx.timing.lease_s, step_id=step_id)
    return None


def _refuse_if_frozen(conn: psycopg.Connection, step_id: int, ctx: WorkerContext) -> dict[str, Any] | None:
    """A freeze that began after the click still stops a queued state change from starting."""
    step = plan_store.get_step(conn, step_id, lock=True)
    if step is None or step["status"] != "queued":
        return None
    why = freeze_reason(conn, step, ctx.config, ctx.workspace)
    if why is None:
        return None
    row = plan_store.transition(conn, step_id, from_=["queued"], to="refused", refusal=f"change freeze: {why}",
                                finished_at=datetime.now(timezone.utc))
    audit.append(conn, actor="worker", action="step.refused", subject=f"step:{step_id}",
                 detail={"key": row["key"], "rule": "freeze", "reason": why}, workspace=ctx.workspace)
    _announce(conn, row, f"Step {row['key']} was approved but not started: change freeze: {why}.", "warning")
    return {**row, "refused": True}


def _target(step: dict[str, Any], name: str | None, connector: str, ctx: WorkerContext,
            params: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The target config an action runs against: the one it names, else the only target of its connector (so
    runbooks need not name the single Prometheus or cluster a team has). An http action with an absolute URL
    and no target runs without one: no target's credentials are ever sent to a host it does not name."""
    if name is None:
        url = str((params if params is not None else step["params"] or {}).get("url") or "")
        if connector == "http" and url.startswith(("http://", "https://")):
            return None
        candidates = [n for n, t in ctx.config.targets.items() if t.connector == connector]
        if len(candidates) == 1:
            name = candidates[0]
        else:
            raise ConnectorError(f"step {step['key']} names no target and warroom.yml has {len(candidates)} "
                                 f"{connector} targets; name one with `target:`")
    target = ctx.config.targets.get(name)
    if target is None:
        raise ConnectorError(f"unknown target {name!r}")
    if target.connector != connector:
        raise ConnectorError(f"target {name!r} is a {target.connector} target, not {connector}")
    return {"connector": target.connector, **target.params()}


def _hand_back(conn: psycopg.Connection, step: dict[str, Any], error: str, ctx: WorkerContext) -> None:
    """running -> queued for RQ's retry; queued_at restarts so the sweeper's grace period counts from now."""
    with conn.transaction():
        plan_store.transition(conn, step["id"], from_=["running"], to="queued", queued_at=datetime.now(timezone.utc))
        audit.append(conn, actor="worker", action="step.retrying", subject=f"step:{step['id']}",
                     detail={"attempt": step["attempts"], "error": error}, workspace=ctx.workspace)


def _execute(step: dict[str, Any], ctx: WorkerContext) -> tuple[StepResult, list[str], bool]:
    """Run the connector (and the step's verify check); returns (result, secret values to redact, transient?)."""
    secrets: dict[str, str] = {}
    try:
        plain, secrets = resolve_target(_target(step, step["target"], step["connector"], ctx), ctx.vault)
        connector = registry.get(step["connector"])
        params = step["params"] or {}
        if ctx.config.execution.dry_run:
            checked(step["connector"], params)
            return StepResult(ok=True, summary=f"dry run: {connector.describe(params, target=plain)}",
                              data={"dry_run": True}), list(secrets.values()), False
        timeout = float(params.get("timeout") or ctx.step_timeout)
        result = connector.run(params, target=plain, secrets=secrets, timeout=timeout,
                               read_only=step["risk"] == "read_only")

        def run_check(action: dict[str, Any]) -> StepResult:
            check_plain, check_secrets = resolve_target(
                _target(step, action.get("target") or step["target"], action["connector"], ctx,
                        action.get("with") or {}), ctx.vault)
            secrets.update({f"verify.{k}": v for k, v in check_secrets.items()})
            try:
                return registry.get(action["connector"]).run(action.get("with") or {}, target=check_plain,
                                                             secrets=check_secrets, timeout=timeout, read_only=True)
            except (TransientError, ConnectorError) as exc:
                return StepResult(ok=False, summary=f"{type(exc).__name__}: {exc}")

        return verified(step, result, run_check), list(secrets.values()), False
    except JobTimeoutException:
        # RQ's job timeout fired mid-connector: the step may have half-happened, so it fails, never retried.
        job = get_current_job()
        limit = job.timeout if job else ctx.step_timeout
        return StepResult(ok=False, summary=f"timed out after {limit}s"), list(secrets.values()), False
    except TransientError as exc:
        return StepResult(ok=False, summary=f"transient failure: {exc}"), list(secrets.values()), True
    except ConnectorError as exc:
        return StepResult(ok=False, summary=f"refused: {exc}"), list(secrets.values()), False
    except Exception as exc:  # the step failed; the worker must still record it
        log.exception("step %s crashed", step["id"])
        return StepResult(ok=False, summary=f"error: {type(exc).__name__}: {exc}"), list(secrets.values()), False


def _finish(conn: psycopg.Connection, step: dict[str, Any], result: StepResult, secrets: list[str],
            ctx: WorkerContext) -> dict[str, Any]:
    stored = redact_obj({"ok": result.ok, "summary": result.summary, "output": result.output,
                         "data": result.data}, secrets)
    status = "succeeded" if result.ok else "failed"
    rollback = None
    flow = Advance()
    with conn.transaction():
        finished = plan_store.transition(conn, step["id"], from_=["running"], to=status, result=stored,
                                         finished_at=datetime.now(timezone.utc), only_worker=step["worker"])
        if finished is None:
            # The sweeper declared this attempt dead (or a retry owns the step now): record what it did, but
            # leave the step's status and thread to whoever owns it.
            audit.append(conn, actor="worker", action="step.late_result", subject=f"step:{step['id']}",
                         detail={"key": step["key"], "worker": step["worker"], "summary": stored["summary"]},
                         workspace=ctx.workspace)
            return {"step_id": step["id"], "status": "late", "ran": True, "summary": stored["summary"]}
        audit_id = audit.append(conn, actor="worker", action=f"step.{status}", subject=f"step:{step['id']}",
                                detail={"key": step["key"], "summary": stored["summary"],
                                        "dry_run": bool(result.data.get("dry_run"))}, workspace=ctx.workspace)
        _remember_result(conn, finished, status, stored["summary"], audit_id, ctx)
        incident_hooks.step_finished(conn, step, result, workspace=ctx.workspace)  # a working change mitigates
        if is_workflow_step(step):
            # Next steps, or stop and roll back: decided from the plan's state, in this same transaction.
            flow = advance(conn, step["plan_id"], config=ctx.config, workspace=ctx.workspace)
        elif not result.ok:
            rollback = add_rollback(conn, step, ctx.config, ctx.workspace)
        output = stored["output"].strip()
        text = stored["summary"] + (f"\n```\n{output[:1500]}\n```" if output else "")
        if rollback is not None:
            text += "\n" + rollback_note(rollback)
        text += "".join(f"\n{note}" for note in flow.notes)
        _announce(conn, step, text, "success" if result.ok else "error",
                  title=f"Step {step['key']} {status}: {step['title']}")
    if rollback is not None and rollback["status"] == "queued":
        _dispatch(rollback["id"], ctx)
    for step_id in flow.queued:   # parallel steps are enqueued together and run on whichever workers are free
        _dispatch(step_id, ctx)
    return {"step_id": step["id"], "status": status, "ran": True, "summary": stored["summary"]}


def _remember_result(conn: psycopg.Connection, step: dict[str, Any], status: str, summary: str, audit_id: int,
                     ctx: WorkerContext) -> None:
    """The result as a turn of the plan's conversation (the next answer there cites it instead of proposing the
    step again); a plan with nothing left to decide or run ends its conversation."""
    runbook = conn.execute("SELECT r.runbook_id FROM plans p JOIN runbooks r ON r.id = p.runbook_pk WHERE p.id = %s",
                           (step["plan_id"],)).fetchone()
    memory_store.record_for_plan(
        conn, step["plan_id"], kind="step_result", text=f"{step['title']}: {status} — {summary}", actor="worker",
        refs={"step_id": step["id"], "key": step["key"], "title": step["title"], "connector": step["connector"],
              "target": step["target"], "status": status, "summary": summary[:300], "audit_id": audit_id,
              "runbook": runbook["runbook_id"] if runbook else None}, workspace=ctx.workspace)
    memory_store.end_if_plan_done(conn, step["plan_id"], workspace=ctx.workspace)


def _dispatch(step_id: int, ctx: WorkerContext) -> None:
    """Enqueue a follow-up step after its row committed; if Redis fails now, the sweeper enqueues it later."""
    job = get_current_job()
    try:
        enqueue_step(job.connection if job else Redis.from_url(os.environ["REDIS_URL"]), step_id,
                     timeout=ctx.step_timeout)
    except Exception:  # noqa: BLE001 (the queued row is durable; recovery.requeue_lost picks it up)
        log.exception("could not enqueue follow-up step %s; the sweeper will", step_id)
