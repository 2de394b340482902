"""Handing steps to RQ: JSON arguments (the step id), job id keyed by step so a step is one job.

Exactly-once is not RQ's promise, so it is not asked of RQ: the database's guarded claim (queued -> running)
is what makes a step run at most once. RQ's side is kept tidy on top of that: at most one live job per step."""
from __future__ import annotations

from redis import Redis
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError, NoSuchJobError
from rq.job import Job, JobStatus

QUEUE = "warroom-steps"
RETRIES = 2
# Slept in the work horse before handing a transient failure back to RQ (jobs.run_step). RQ's own retry
# `interval` would park the job in the ScheduledJobRegistry, which only a worker holding the scheduler lock
# moves back: `--burst` workers never do after start-up, and a worker starting after a SIGKILLed one waits
# for the dead scheduler's lock to expire. An immediate RQ retry after a short sleep needs neither.
BACKOFF_S = (1.0, 3.0)
# A job in one of these states will still be delivered to a worker: enqueueing again adds nothing.
WAITING = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


def job_id(step_id: int) -> str:
    return f"step-{step_id}"


def enqueue_step(redis: Redis, step_id: int, *, timeout: int = 120) -> str:
    """Enqueue the step's job unless one is already waiting to be delivered; a second enqueue of a waiting step
    (a double dispatch, a sweeper race) is a no-op. Callers enqueue only a step they have just moved to
    `queued` (or hold locked there), so any other job under its id is left over: finished or failed by an
    earlier run (the step was retried by a human or re-queued by the sweeper), or STARTED by a worker that
    died. That one is replaced. Were it in fact a live delivery about to claim, the claim decides: one of the
    two deliveries runs the step, the other finds it taken."""
    queue = Queue(QUEUE, connection=redis)
    jid = job_id(step_id)
    for _ in range(3):  # each pass either enqueues, finds a live job, or clears a dead one
        try:
            queue.enqueue("connectors.jobs.run_step", step_id, job_id=jid, job_timeout=timeout, unique=True,
                          retry=Retry(max=RETRIES), result_ttl=86_400, failure_ttl=7 * 86_400)
            return jid
        except DuplicateJobError:
            status = job_status(redis, jid)
            if status in WAITING:
                return jid
            _discard(redis, jid)
    raise RuntimeError(f"could not enqueue {jid}: its job keeps reappearing")


def job_status(redis: Redis, jid: str) -> JobStatus | None:
    """The RQ job's status, None when Redis has no such job (never enqueued, expired, or Redis lost it)."""
    try:
        return Job.fetch(jid, connection=redis).get_status(refresh=False)
    except NoSuchJobError:
        return None


def _discard(redis: Redis, jid: str) -> None:
    try:
        Job.fetch(jid, connection=redis).delete()
    except NoSuchJobError:
        pass
