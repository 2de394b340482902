"""Moving steps to the workers: auto-run of read-only steps and the approval click share one path."""
from __future__ import annotations

import psycopg

from engine.plans import approve_and_queue, redraw
from handlers.services import Services
from storage import plans as plan_store


def auto_run(conn: psycopg.Connection, plan_id: int, services: Services) -> list[int]:
    """Queue the steps policy lets run without a click; returns their ids (dispatch after commit)."""
    queued = []
    for step in plan_store.plan_steps(conn, plan_id):
        if step["status"] == "proposed" and not step["requires_approval"]:
            if approve_and_queue(conn, step["id"], actor="warroom", platform="policy",
                                 reason="auto_run_read_only", workspace=services.workspace):
                queued.append(step["id"])
    if queued:
        redraw(conn, plan_id)
    return queued
