"""Connection pool and migrations. Sync psycopg: the aiohttp app calls it through a thread."""
from __future__ import annotations

import logging
from importlib import resources

import psycopg
from pgvector.psycopg import register_vector
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)

_MIGRATION_LOCK = 7_305_001  # pg_advisory_xact_lock key: one migrator at a time across processes


def _configure(conn: psycopg.Connection) -> None:
    register_vector(conn)
    conn.commit()  # register_vector reads the catalog; leave no transaction open in the pool


def open_pool(url: str, *, min_size: int = 1, max_size: int = 8) -> ConnectionPool:
    """Open a pool whose connections return dict rows and understand `vector`."""
    pool = ConnectionPool(
        url, min_size=min_size, max_size=max_size, open=False,
        kwargs={"row_factory": dict_row, "autocommit": False}, configure=_configure)
    pool.open(wait=True, timeout=30)
    return pool


def connect(url: str) -> psycopg.Connection:
    conn = psycopg.connect(url, row_factory=dict_row)
    try:
        register_vector(conn)
    except psycopg.ProgrammingError:
        conn.rollback()  # extension not there yet: migrate() creates it
    conn.commit()
    return conn


def migration_files() -> list[tuple[str, str]]:
    folder = resources.files("storage") / "migrations"
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(name.removesuffix(".sql"), (folder / name).read_text()) for name in names]


def migrate(url: str) -> list[str]:
    """Apply pending migrations, each in its own transaction; returns what was applied."""
    applied: list[str] = []
    with psycopg.connect(url, autocommit=False) as conn:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
                                version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())""")
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            for version, sql in migration_files():
                if version in done:
                    continue
                log.info("applying migration %s", version)
                conn.execute(sql)
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                applied.append(version)
    return applied
