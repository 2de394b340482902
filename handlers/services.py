"""What every handler is handed: process-wide resources opened once in the bot's lifespan."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from psycopg_pool import ConnectionPool

from engine.config import WarroomConfig
from engine.embedder import Embedder
from engine.intent import IntentClassifier
from engine.llm import Provider
from engine.llm.offline import OfflineProvider

log = logging.getLogger(__name__)


@dataclass
class Services:
    pool: ConnectionPool
    embedder: Embedder
    classifier: IntentClassifier
    provider: Provider
    config: WarroomConfig
    dispatch: Callable[[int], None]          # hands a queued step to the workers
    workspace: str = "default"
    fallback: Provider = field(default_factory=OfflineProvider)
    _services_cache: tuple[float, list[str]] = field(default=(0.0, []), repr=False)

    SERVICES_TTL_S = 60.0  # every message is classified: do not scan the alerts table each time

    def known_services(self) -> list[str]:
        fetched_at, names = self._services_cache
        if time.monotonic() - fetched_at < self.SERVICES_TTL_S:
            return names
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT DISTINCT unnest(services) AS s FROM runbooks WHERE active UNION "
                "SELECT DISTINCT service FROM alerts WHERE service IS NOT NULL").fetchall()
        names = [r["s"] for r in rows]
        self._services_cache = (time.monotonic(), names)
        return names
