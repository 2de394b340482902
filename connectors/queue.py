"""Handing steps to RQ: JSON arguments (the step id), job id keyed by step so a step is one job."""
from __future__ import annotations

from redis import Redis
from rq import Queue, Retry

QUEUE = "warroom-steps"
RETRIES = 2


def enqueue_step(redis: Redis, step_id: int, *, timeout: int = 120) -> str:
    queue = Queue(QUEUE, connection=redis)
    job = queue.enqueue("connectors.jobs.run_step", step_id, job_id=f"step-{step_id}", job_timeout=timeout,
                        retry=Retry(max=RETRIES, interval=[1, 3]), result_ttl=86_400, failure_ttl=7 * 86_400)
    return job.id
