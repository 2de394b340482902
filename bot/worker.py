"""`warroom worker`: RQ workers holding the connectors."""
from __future__ import annotations

import logging

from redis import Redis
from rq import Worker

from bot import embedded
from bot.settings import Settings
from connectors.jobs import WorkerContext, configure
from connectors.queue import QUEUE
from connectors.vault import VaultResolver
from engine.config import load_config
from storage.db import migrate

log = logging.getLogger(__name__)


def run_worker(settings: Settings, queues: list[str] | None = None, *, burst: bool = False) -> int:
    config = load_config(settings.config_path)
    with embedded.services(settings.data_path, database_url=settings.database_url,
                           redis_url=settings.redis_url) as (database_url, redis_url):
        migrate(database_url)
        configure(WorkerContext(
            database_url=database_url, config=config,
            vault=VaultResolver(settings.vault_addr,
                                settings.vault_token.get_secret_value() if settings.vault_token else None),
            step_timeout=settings.step_timeout_s, workspace=settings.workspace))
        redis = Redis.from_url(redis_url)
        worker = Worker(queues or [QUEUE], connection=redis)
        log.info("worker %s listening on %s", worker.name, ", ".join(queues or [QUEUE]))
        worker.work(burst=burst, with_scheduler=True, logging_level="WARNING")
    return 0
