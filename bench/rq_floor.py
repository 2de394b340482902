"""The floor for Approve -> step started: a bare RQ enqueue -> job start on the same Redis, worked by the same
worker class `warroom worker` uses (rq.Worker, which forks a work horse per job).

    python -m bench.rq_floor REDIS_URL      # the worker, listening on the `bench-floor` queue"""
from __future__ import annotations

import sys
import time

QUEUE = "bench-floor"


def started() -> float:
    """The job: when its work horse began running it (wall clock, like plan_steps.started_at)."""
    return time.time()


def main() -> None:
    from redis import Redis
    from rq import Worker

    Worker([QUEUE], connection=Redis.from_url(sys.argv[1])).work(with_scheduler=True, logging_level="WARNING")


if __name__ == "__main__":
    main()
