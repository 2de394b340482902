"""`warroom doctor`: configuration and connectivity, one line per check, each problem named."""
from __future__ import annotations

from bot.settings import Settings


def run_doctor(settings: Settings) -> int:
    problems = 0

    def line(ok: bool, text: str) -> None:
        nonlocal problems
        problems += 0 if ok else 1
        print(f"{'ok  ' if ok else 'FAIL'} {text}")

    from engine.config import ConfigError, load_config

    try:
        config = load_config(settings.config_path)
        line(True, f"config {settings.config_path}: {len(config.targets)} target(s)")
        if not config.policy.approvers:
            print("warn policy.approvers is empty: anyone in the channel may approve steps")
    except ConfigError as exc:
        line(False, f"config: {exc}")
    if settings.database_url:
        try:
            import psycopg

            with psycopg.connect(settings.database_url, connect_timeout=5) as conn:
                has_vector = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone()
            line(bool(has_vector), "database reachable" + ("" if has_vector else ", but pgvector is not installed"))
        except Exception as exc:
            line(False, f"database {settings.database_url.split('@')[-1]}: {type(exc).__name__}: "
                        f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
    else:
        line(True, f"database: embedded PostgreSQL under {settings.data_path}")
    if settings.redis_url:
        try:
            from redis import Redis

            Redis.from_url(settings.redis_url, socket_connect_timeout=5).ping()
            line(True, "redis reachable")
        except Exception as exc:
            line(False, f"redis {settings.redis_url}: {type(exc).__name__}")
    else:
        line(True, f"redis: embedded under {settings.data_path}")
    try:
        from engine.embedder import resolve_model_path

        line(True, f"embedding model {settings.embedding_model}: {resolve_model_path(settings.embedding_model)}")
    except Exception as exc:
        line(False, f"embedding model {settings.embedding_model}: {exc}")
    if bool(settings.slack_bot_token) != bool(settings.slack_signing_secret) and not settings.slack_app_token:
        line(False, "slack: SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET must be set together")
    if settings.vault_addr:
        line(*_vault_check(settings))
    if settings.llm_provider == "anthropic" and not settings.anthropic_api_key:
        line(False, "llm: WARROOM_LLM=anthropic needs ANTHROPIC_API_KEY")
    print(f"{problems} problem(s)")
    return 1 if problems else 0


def _vault_check(settings: Settings) -> tuple[bool, str]:
    """Reach Vault and authenticate as the worker will (token lookup-self; AppRole logs in first)."""
    try:
        return True, f"vault {settings.vault_addr}: {settings.vault_resolver().check()}"
    except Exception as exc:  # the resolver's messages name no secret
        return False, f"vault {settings.vault_addr}: {exc}"
