"""Process-wide resources, opened once and handed down: the `lifespan` of every warroom command."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from pydantic import SecretStr

from redis import Redis

from bot import embedded
from bot.metrics import Metrics
from bot.settings import Settings
from connectors.queue import enqueue_step
from engine.config import WarroomConfig, load_config
from engine.embedder import SentenceTransformerEmbedder
from engine.intent import IntentClassifier
from engine.llm import Provider, make_provider
from engine.llm.guard import GuardPolicy
from engine.redact import register_secret
from handlers.services import Services
from storage.db import migrate, open_pool

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    config: WarroomConfig
    database_url: str
    redis_url: str | None
    services: Services
    redis: Redis | None
    metrics: Metrics


@contextmanager
def open_runtime(settings: Settings, *, need_redis: bool = True, config: WarroomConfig | None = None) -> Iterator[Runtime]:
    config = config or load_config(settings.config_path)
    register_settings_secrets(settings)
    metrics = Metrics(models={"anthropic": settings.anthropic_model, "openai": settings.openai_model},
                      prices=settings.llm_prices)  # the model each provider calls, for warroom_llm_cost_usd
    provider = make_llm_provider(settings, metrics)
    with embedded.services(settings.data_path, database_url=settings.database_url, redis_url=settings.redis_url,
                           need_redis=need_redis) as (database_url, redis_url):
        migrate(database_url)
        pool = open_pool(database_url)
        redis = Redis.from_url(redis_url) if redis_url else None
        try:
            embedder = SentenceTransformerEmbedder(settings.embedding_model)

            def dispatch(step_id: int) -> None:
                if redis is None:
                    raise RuntimeError("no Redis: steps cannot be dispatched from this command")
                enqueue_step(redis, step_id, timeout=settings.step_timeout_s)

            services = Services(pool=pool, embedder=embedder, classifier=None,  # type: ignore[arg-type]
                                provider=provider, config=config, dispatch=dispatch, workspace=settings.workspace)
            # The model is asked about an utterance only when the labelled examples leave it unsure.
            services.classifier = IntentClassifier(embedder, known_services=services.known_services,
                                                   llm_fallback=getattr(provider, "classify", None))
            yield Runtime(settings=settings, config=config, database_url=database_url, redis_url=redis_url,
                          services=services, redis=redis, metrics=metrics)
        finally:
            close = getattr(provider, "close", None)
            if close:
                close()
            if redis is not None:
                redis.close()
            pool.close()


def make_llm_provider(settings: Settings, metrics: Metrics) -> Provider:
    """The provider WARROOM_LLM names, reporting to these metrics; a misconfiguration fails here, at start-up."""
    policy = GuardPolicy(budget_s=settings.llm_budget_s, max_attempts=settings.llm_max_attempts,
                         failure_threshold=settings.llm_breaker_threshold, cooldown_s=settings.llm_cooldown_s)
    return make_provider(settings, recorder=metrics, policy=policy)


def register_settings_secrets(settings: Settings) -> None:
    """Every secret in the settings is masked wherever it turns up: prompts, step output, logs."""
    for value in settings.model_dump().values():
        if isinstance(value, SecretStr):
            register_secret(value.get_secret_value())


@contextmanager
def embedded_worker(runtime: Runtime) -> Iterator[subprocess.Popen | None]:
    """With REDIS_URL unset, run one `warroom worker` beside this process against the embedded Redis."""
    if runtime.settings.redis_url is not None or runtime.redis_url is None:
        yield None
        return
    env = {**os.environ, "DATABASE_URL": runtime.database_url, "REDIS_URL": runtime.redis_url,
           "WARROOM_CONFIG": str(runtime.settings.config_path)}
    # Its own session: a Ctrl-C meant for serve must not reach it too, or the SIGTERM sent after serve's drain
    # would be RQ's second signal, a cold shutdown that kills the running step.
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "worker"], env=env, start_new_session=True)
    try:
        yield proc
    finally:
        proc.terminate()  # RQ's warm shutdown: the current step finishes first
        log.info("waiting for the embedded worker (pid %s) to finish its current step", proc.pid)
        try:
            code = proc.wait(timeout=runtime.settings.step_timeout_s + 10)
            log.info("embedded worker exited with status %s", code)
        except subprocess.TimeoutExpired:
            log.warning("embedded worker still busy after %ss: killed", runtime.settings.step_timeout_s + 10)
            proc.kill()
