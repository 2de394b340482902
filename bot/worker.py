"""`warroom worker`: RQ workers holding the connectors."""
from __future__ import annotations

import logging

from redis import Redis
from rq import Worker

from bot import embedded
from bot.settings import Settings
from connectors.jobs import WorkerContext, configure
from connectors.queue import QUEUE
from connectors.recovery import Timing, sweep_forever_in_thread, sweep_url
from engine.config import load_config
from storage.db import migrate

log = logging.getLogger(__name__)


def run_worker(settings: Settings, queues: list[str] | None = None, *, burst: bool = False) -> int:
    config = load_config(settings.config_path)
    with embedded.services(settings.data_path, database_url=settings.database_url,
                           redis_url=settings.redis_url) as (database_url, redis_url):
        migrate(database_url)
        timing = settings.timing()
        configure(WorkerContext(
            database_url=database_url, config=config,
            vault=settings.vault_resolver(),
            step_timeout=settings.step_timeout_s, workspace=settings.workspace, timing=timing))
        redis = Redis.from_url(redis_url)
        stop_sweeping = _start_recovery(database_url, redis, timing, burst=burst)
        worker = Worker(queues or [QUEUE], connection=redis)
        log.info("worker %s listening on %s", worker.name, ", ".join(queues or [QUEUE]))
        try:
            # SIGTERM/SIGINT: RQ's warm shutdown (the running step finishes in its work horse, then work()
            # returns); a second signal is a cold shutdown that kills the horse.
            worker.work(burst=burst, with_scheduler=True, logging_level="WARNING")
        finally:
            stop_sweeping()
        log.info("worker %s stopped", worker.name)
    return 0


def _start_recovery(database_url: str, redis: Redis, timing: Timing, *, burst: bool):
    """Sweep for steps left behind by dead workers or lost enqueues before taking work, then (unless this is a
    burst run) every WARROOM_SWEEP_INTERVAL seconds from a thread of this parent process. Returns a stopper."""
    if burst:
        sweep_url(database_url, redis, timing)
        return lambda: None
    return sweep_forever_in_thread(database_url, redis, timing).set
