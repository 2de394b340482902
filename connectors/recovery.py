"""Nothing lost, nothing run twice: recovery of steps whose worker or whose enqueue was lost.

Liveness is warroom's own, not read from RQ's internals: the work horse running a step stamps
`plan_steps.heartbeat_at` from a background thread (`Heartbeat`). The sweeper

- marks `running` steps whose heartbeat is older than the lease as `interrupted` (one guarded UPDATE; audit
  `step.interrupted`; the thread is told). An interrupted step is never re-run automatically: a half-run state
  change must not run twice. A human may approve it again (engine.plans.retry_interrupted).
- re-enqueues `queued` steps older than a grace period whose RQ job is gone, finished or failed (the approval
  committed but Redis was down, or the process died between commit and enqueue). The job id `step-<id>` keeps
  it one job, and the row stays locked in `queued` while its job is looked at and replaced.
- resumes workflow plans (connectors/workflow.py): a step approved, or runnable without a click, whose needs have
  all succeeded is queued. After a restart the plan carries on from its stored state; nothing that already
  succeeded runs again, and a step that was running when its worker died is `interrupted` as above.

`warroom serve` runs it periodically, `warroom worker` at start-up and periodically; `sweep()` is callable on its
own (a cron job, a shell)."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

import psycopg
from psycopg.rows import dict_row
from redis import Redis

from connectors.queue import WAITING, enqueue_step, job_id, job_status
from engine.cards import notice
from engine.plans import plan_message_key, redraw
from storage import audit, outbox
from storage import plans as plan_store

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted: the worker stopped mid-step; not re-run automatically"


@dataclass(frozen=True)
class Timing:
    """How often a running step proves it is alive, and how long silence is tolerated. The lease is several
    heartbeats long so one slow database round trip is not taken for a dead worker."""

    heartbeat_s: float = 5.0
    lease_s: float = 30.0
    requeue_grace_s: float = 60.0
    sweep_every_s: float = 10.0
    step_timeout_s: int = 120

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, *, step_timeout_s: int | None = None) -> "Timing":
        """WARROOM_HEARTBEAT_INTERVAL, WARROOM_STEP_LEASE, WARROOM_REQUEUE_GRACE, WARROOM_SWEEP_INTERVAL."""
        heartbeat = float(env.get("WARROOM_HEARTBEAT_INTERVAL") or cls.heartbeat_s)
        return cls(heartbeat_s=heartbeat,
                   lease_s=float(env.get("WARROOM_STEP_LEASE") or max(cls.lease_s, 3 * heartbeat)),
                   requeue_grace_s=float(env.get("WARROOM_REQUEUE_GRACE") or cls.requeue_grace_s),
                   sweep_every_s=float(env.get("WARROOM_SWEEP_INTERVAL") or cls.sweep_every_s),
                   step_timeout_s=step_timeout_s or int(env.get("WARROOM_STEP_TIMEOUT") or cls.step_timeout_s))


def worker_name() -> str:
    """Who runs a step: host and pid of the work horse (the process a SIGKILL has to hit)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def announce(conn: psycopg.Connection, step: dict[str, Any], text: str, style: str, title: str | None = None) -> None:
    """Redraw the plan card in place and post the outcome in its thread."""
    redraw(conn, step["plan_id"])
    plan = plan_store.get_plan(conn, step["plan_id"])
    if plan and plan["platform"] and plan["channel"]:
        card = notice(title or f"Step {step['key']}", text, kind="step_result", style=style)
        outbox.enqueue(conn, platform=plan["platform"], channel=plan["channel"], op="post",
                       thread_key=plan_message_key(plan["id"]), card=json.loads(card.model_dump_json()))


class Heartbeat:
    """Stamps a running step as alive every `interval` seconds, on its own connection (the step's own
    connection is busy, or idle in a transaction, while the connector runs). Stops by itself once the step is
    no longer running under this worker."""

    def __init__(self, database_url: str, step_id: int, worker: str, interval: float) -> None:
        self.database_url, self.step_id, self.worker, self.interval = database_url, step_id, worker, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-step-{step_id}", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    def _run(self) -> None:
        conn = None
        while not self._stop.wait(self.interval):
            try:
                conn = conn or psycopg.connect(self.database_url, autocommit=True)
                if not plan_store.heartbeat(conn, self.step_id, self.worker):
                    return
            except psycopg.Error:
                # A missed beat is what the lease tolerates; reconnect next time.
                log.warning("heartbeat for step %s failed", self.step_id, exc_info=True)
                conn = None
        if conn is not None:
            conn.close()


def interrupt_stale(conn: psycopg.Connection, *, lease_s: float, step_id: int | None = None,
                    actor: str = "warroom") -> list[dict[str, Any]]:
    """Inside the caller's transaction: running steps silent for longer than the lease -> interrupted, each
    audited and announced. A step whose heartbeat is fresh is left alone, whoever asks."""
    rows = plan_store.interrupt_stale(conn, lease_s=lease_s, summary=INTERRUPTED, step_id=step_id)
    for row in rows:
        seen = row["heartbeat_at"] or row["started_at"]
        audit.append(conn, actor=actor, action="step.interrupted", subject=f"step:{row['id']}",
                     detail={"key": row["key"], "worker": row["worker"], "last_heartbeat": seen,
                             "attempt": row["attempts"], "lease_s": lease_s},
                     workspace=row["workspace"])
        who = f"worker {row['worker']}" if row["worker"] else "its worker"
        announce(conn, row, f"Step {row['key']} was interrupted: {who} stopped answering (last heard from "
                            f"{_clock(seen)}). It was not re-run; check its effect before approving it again.",
                 "warning", title=f"Step {row['key']} interrupted: {row['title']}")
    return rows


def requeue_lost(conn: psycopg.Connection, redis: Redis, *, grace_s: float, timeout: int) -> list[int]:
    """Queued steps older than the grace period whose RQ job will never be delivered get a fresh job."""
    done = []
    with conn.transaction():
        for row in plan_store.lock_stale_queued(conn, grace_s=grace_s):
            status = job_status(redis, job_id(row["id"]))
            if status in WAITING:
                continue
            enqueue_step(redis, row["id"], timeout=timeout)
            # Restart the grace period: a step is re-enqueued once per period at most, never in a loop.
            plan_store.transition(conn, row["id"], from_=["queued"], to="queued", queued_at=datetime.now(timezone.utc))
            audit.append(conn, actor="warroom", action="step.requeued", subject=f"step:{row['id']}",
                         detail={"key": row["key"], "job": status.value if status else "missing"},
                         workspace=row["workspace"])
            done.append(row["id"])
    return done


def resume_workflows(conn: psycopg.Connection, redis: Redis, *, timeout: int) -> list[int]:
    """Queue (and enqueue) the ready steps of workflow plans that nobody moved forward: the checkpoint resumed."""
    from connectors.workflow import advance   # connectors.workflow imports engine.plans, as this module does

    queued = []
    with conn.transaction():   # each statement in a transaction of its own: enqueue only what has committed
        candidates = plan_store.plans_with_waiting_steps(conn)
    for plan_id in candidates:
        with conn.transaction():
            plan = plan_store.get_plan(conn, plan_id)
            flow = advance(conn, plan_id, config=None, workspace=plan["workspace"])
            for note in flow.notes:
                log.warning("plan %s: %s", plan_id, note)
            if flow.queued:
                audit.append(conn, actor="warroom", action="plan.resumed", subject=f"plan:{plan_id}",
                             detail={"queued": flow.queued}, workspace=plan["workspace"])
                redraw(conn, plan_id)
        for step_id in flow.queued:   # after commit; a lost enqueue is caught by requeue_lost next time
            try:
                enqueue_step(redis, step_id, timeout=timeout)
            except Exception:  # noqa: BLE001
                log.exception("could not enqueue resumed step %s; the next sweep will", step_id)
        queued.extend(flow.queued)
    return queued


@dataclass
class SweepReport:
    interrupted: list[int]
    requeued: list[int]
    resumed: list[int] = field(default_factory=list)


def sweep(conn: psycopg.Connection, redis: Redis | None, timing: Timing) -> SweepReport:
    """One pass. Without Redis (a process with no queue) only the liveness half runs."""
    with conn.transaction():
        interrupted = [r["id"] for r in interrupt_stale(conn, lease_s=timing.lease_s)]
    requeued = requeue_lost(conn, redis, grace_s=timing.requeue_grace_s, timeout=timing.step_timeout_s) \
        if redis is not None else []
    resumed = resume_workflows(conn, redis, timeout=timing.step_timeout_s) if redis is not None else []
    if interrupted or requeued or resumed:
        log.warning("recovery: interrupted steps %s, re-enqueued steps %s, resumed workflow steps %s",
                    interrupted, requeued, resumed)
    return SweepReport(interrupted=interrupted, requeued=requeued, resumed=resumed)


def sweep_url(database_url: str, redis: Redis | None, timing: Timing) -> SweepReport:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        return sweep(conn, redis, timing)


def sweep_forever_in_thread(database_url: str, redis: Redis | None, timing: Timing) -> threading.Event:
    """For `warroom worker`: sweep now and every `sweep_every_s` from a daemon thread; set the event to stop.
    RQ's only periodic hook (maintenance) runs every 10 minutes and not while a job runs, so it is not used."""
    stop = threading.Event()

    def loop() -> None:
        while True:
            try:
                sweep_url(database_url, redis, timing)
            except Exception:
                log.exception("recovery sweep failed; will retry")
            if stop.wait(timing.sweep_every_s):
                return

    threading.Thread(target=loop, name="warroom-recovery", daemon=True).start()
    return stop


async def sweep_forever(pool, redis: Redis | None, timing: Timing, stop: asyncio.Event) -> None:
    """For `warroom serve`: the same sweep, in a thread, every `sweep_every_s` until `stop` is set."""
    def once() -> None:
        with pool.connection() as conn:
            sweep(conn, redis, timing)

    while not stop.is_set():
        try:
            await asyncio.to_thread(once)
        except Exception:
            log.exception("recovery sweep failed; will retry")
        try:
            await asyncio.wait_for(stop.wait(), timeout=timing.sweep_every_s)
        except asyncio.TimeoutError:
            pass


def _clock(at: datetime | None) -> str:
    return at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if at else "never"
