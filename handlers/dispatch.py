"""Moving steps to the workers: auto-run of read-only steps and the approval click share one path."""
from __future__ import annotations

import psycopg

from engine.plans import approve_and_queue, redraw
from engine.workflow import waiting_on
from handlers.services import Services
from storage import plans as plan_store


def auto_run(conn: psycopg.Connection, plan_id: int, services: Services) -> list[int]:
    """Queue the steps policy lets run without a click; returns their ids (dispatch after commit). A workflow
    step that waits for others stays `proposed` until its needs succeed: the worker queues it then."""
    queued = []
    steps = plan_store.plan_steps(conn, plan_id)
    statuses = {s["key"]: s["status"] for s in steps if s["kind"] == "step"}
    for step in steps:
        if step["status"] == "proposed" and not step["requires_approval"]:
            if waiting_on(step["needs"], statuses):
                continue
            row = approve_and_queue(conn, step["id"], actor="warroom", platform="policy",
                                    reason="auto_run_read_only", workspace=services.workspace)
            if row is not None and row["status"] == "queued":
                queued.append(step["id"])
    if queued:
        redraw(conn, plan_id)
    return queued
