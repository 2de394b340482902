"""RQ job functions. A job takes a step id, claims the step with a guarded UPDATE, runs its connector,
and writes result, audit entry and thread update in one transaction."""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg.rows import dict_row

from connectors import registry
from connectors.base import ConnectorError, StepResult, TransientError
from connectors.queue import RETRIES
from connectors.redact import redact, redact_obj
from connectors.vault import VaultResolver, resolve_target
from engine.cards import notice
from engine.config import WarroomConfig, load_config
from engine.plans import plan_message_key, redraw
from storage import audit, outbox
from storage import plans as plan_store

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    database_url: str
    config: WarroomConfig
    vault: VaultResolver
    step_timeout: int = 120
    workspace: str = "default"


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
            vault=VaultResolver(os.environ.get("VAULT_ADDR"), os.environ.get("VAULT_TOKEN")))
    return _context


def run_step(step_id: int) -> dict[str, Any]:
    ctx = _ctx()
    with psycopg.connect(ctx.database_url, row_factory=dict_row) as conn:
        claimed = _claim(conn, step_id, ctx)
        if claimed is None:
            step = plan_store.get_step(conn, step_id)
            return {"step_id": step_id, "status": step["status"] if step else "missing", "ran": False}
        result, secrets, transient = _execute(claimed, ctx)
        if transient and claimed["attempts"] <= RETRIES:
            with conn.transaction():
                plan_store.transition(conn, step_id, from_=["running"], to="queued")
                audit.append(conn, actor="worker", action="step.retrying", subject=f"step:{step_id}",
                             detail={"attempt": claimed["attempts"], "error": redact(result.summary, secrets)},
                             workspace=ctx.workspace)
            raise RuntimeError(f"step {step_id}: transient failure, RQ will retry")
        return _finish(conn, claimed, result, secrets, ctx)


def _claim(conn: psycopg.Connection, step_id: int, ctx: WorkerContext) -> dict[str, Any] | None:
    """queued -> running. A step found `running` was claimed by a worker that died: report it, never re-run."""
    with conn.transaction():
        row = plan_store.transition(conn, step_id, from_=["queued"], to="running",
                                    started_at=datetime.now(timezone.utc))
        if row is not None:
            audit.append(conn, actor="worker", action="step.started", subject=f"step:{step_id}",
                         detail={"key": row["key"], "attempt": row["attempts"], "pid": os.getpid()},
                         workspace=ctx.workspace)
            return row
        stale = plan_store.transition(
            conn, step_id, from_=["running"], to="interrupted", finished_at=datetime.now(timezone.utc),
            result={"summary": "interrupted: the worker stopped mid-step; not re-run automatically"})
        if stale is not None:
            audit.append(conn, actor="worker", action="step.interrupted", subject=f"step:{step_id}",
                         detail={"key": stale["key"]}, workspace=ctx.workspace)
            _announce(conn, stale, f"Step {stale['key']} was interrupted (worker stopped mid-step). "
                                   "It was not re-run; check its effect before approving it again.", "warning")
    return None


def _execute(step: dict[str, Any], ctx: WorkerContext) -> tuple[StepResult, list[str], bool]:
    """Run the connector; returns (result, secret values to redact, transient?)."""
    secrets: dict[str, str] = {}
    try:
        target_cfg = None
        if step["target"]:
            target = ctx.config.targets.get(step["target"])
            if target is None:
                raise ConnectorError(f"unknown target {step['target']!r}")
            target_cfg = {"connector": target.connector, **target.params()}
        plain, secrets = resolve_target(target_cfg, ctx.vault)
        connector = registry.get(step["connector"])
        timeout = float((step["params"] or {}).get("timeout") or ctx.step_timeout)
        return connector.run(step["params"] or {}, target=plain, secrets=secrets, timeout=timeout), \
            list(secrets.values()), False
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
    with conn.transaction():
        plan_store.transition(conn, step["id"], from_=["running"], to=status, result=stored,
                              finished_at=datetime.now(timezone.utc))
        audit.append(conn, actor="worker", action=f"step.{status}", subject=f"step:{step['id']}",
                     detail={"key": step["key"], "summary": stored["summary"]}, workspace=ctx.workspace)
        output = stored["output"].strip()
        text = stored["summary"] + (f"\n```\n{output[:1500]}\n```" if output else "")
        _announce(conn, step, text, "success" if result.ok else "error",
                  title=f"Step {step['key']} {status}: {step['title']}")
    return {"step_id": step["id"], "status": status, "ran": True, "summary": stored["summary"]}


def _announce(conn: psycopg.Connection, step: dict[str, Any], text: str, style: str, title: str | None = None) -> None:
    """Redraw the plan card in place and post the outcome in its thread."""
    redraw(conn, step["plan_id"])
    plan = plan_store.get_plan(conn, step["plan_id"])
    if plan and plan["platform"] and plan["channel"]:
        card = notice(title or f"Step {step['key']}", text, kind="step_result", style=style)
        outbox.enqueue(conn, platform=plan["platform"], channel=plan["channel"], op="post",
                       thread_key=plan_message_key(plan["id"]), card=json.loads(card.model_dump_json()))
