"""`warroom doctor`: configuration and connectivity, one line per check, each problem named with what to do.

Every check returns findings: `ok`, `warn` (works, but probably not as meant) or `FAIL` (a problem: exit 1).
A line is always one line, and passes through secret redaction before it is printed."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable
from urllib.parse import urlsplit, urlunsplit

from bot.settings import Settings
from engine.config import WarroomConfig

CONNECT_TIMEOUT_S = 5
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DOMAIN = re.compile(r"^(?=.{4,253}$)([a-zA-Z0-9-]{1,63}\.)+[a-zA-Z]{2,63}$")
# The placeholders deploy/k8s/secret.yaml ships; a deployment still carrying one was never filled in.
_PLACEHOLDER = re.compile(r"CHANGE[_-]ME", re.IGNORECASE)


@dataclass(frozen=True)
class Finding:
    level: str  # "ok", "warn" or "FAIL"
    text: str


def ok(text: str) -> Finding:
    return Finding("ok", text)


def warn(text: str) -> Finding:
    return Finding("warn", text)


def fail(text: str) -> Finding:
    return Finding("FAIL", text)


Check = Callable[[Settings, "WarroomConfig | None"], Iterable[Finding]]


def run_doctor(settings: Settings) -> int:
    """Print one line per check as it finishes, then a count; 1 when any check failed, else 0."""
    from engine.redact import redact

    secrets = [v.get_secret_value() for v in settings.model_dump().values() if hasattr(v, "get_secret_value")]
    counts = {"ok": 0, "warn": 0, "FAIL": 0}

    def report(findings: Iterable[Finding]) -> None:
        for finding in findings:
            counts[finding.level] += 1
            print(redact(f"{finding.level:<4} {' '.join(finding.text.split())}", secrets), flush=True)

    config, findings = _config_check(settings)
    report(findings)
    for check in CHECKS:
        try:
            report(check(settings, config))
        except Exception as exc:  # a doctor that crashes names nothing: report the check that broke instead
            report([fail(f"{check.__name__.strip('_')}: {_one_line(exc)}")])
    print(f"{counts['FAIL']} problem(s), {counts['warn']} warning(s)")
    return 1 if counts["FAIL"] else 0


# --- configuration -------------------------------------------------------------------------------------------


def _config_check(settings: Settings) -> tuple[WarroomConfig | None, list[Finding]]:
    from engine.config import ConfigError, load_config

    path = settings.config_path.expanduser()
    try:
        config = load_config(path)
    except ConfigError as exc:
        return None, [fail(f"config {exc} (fix the file, or point WARROOM_CONFIG at a valid one)")]
    except OSError as exc:  # unreadable: a directory, no permission
        return None, [fail(f"config {path}: cannot read it ({exc.strerror or exc}): make it a readable "
                           "file, or point WARROOM_CONFIG elsewhere")]
    if not path.exists():
        findings = [ok(f"config {path}: not found, using defaults (no targets, no approvers)")]
    else:
        findings = [ok(f"config {path}: {len(config.targets)} target(s)")]
    if not config.policy.approvers and not config.policy.approver_rules:
        findings.append(warn("policy.approvers is empty: anyone in the channel may approve steps"))
    return config, findings


def _placeholders(settings: Settings, config: WarroomConfig | None) -> Iterable[Finding]:
    for name in Settings.model_fields:
        value = getattr(settings, name)
        text = value.get_secret_value() if hasattr(value, "get_secret_value") else value
        if isinstance(text, str) and _PLACEHOLDER.search(text):
            yield fail(f"{_env_name(name)} still holds the placeholder value from deploy/k8s/secret.yaml: "
                       "set the real one")


def _vault_references(settings: Settings, config: WarroomConfig | None) -> Iterable[Finding]:
    """Workers resolve `vault:` credentials when a step runs; without VAULT_ADDR every such step fails."""
    if config is None or settings.vault_addr:
        return
    for name, target in config.targets.items():
        keys = sorted(k for k, v in _flatten(target.params()) if isinstance(v, str) and v.startswith("vault:"))
        if keys:
            yield fail(f"targets.{name}: {', '.join(keys)} "
                       f"{'is a vault: reference' if len(keys) == 1 else 'are vault: references'} but VAULT_ADDR "
                       "is not set: set VAULT_ADDR and VAULT_TOKEN (or VAULT_ROLE_ID and VAULT_SECRET_ID) for the "
                       "workers")


def _vault(settings: Settings, config: WarroomConfig | None) -> Iterable[Finding]:
    if not settings.vault_addr:
        return
    if not settings.vault_token and not (settings.vault_role_id and settings.vault_secret_id):
        # serve never resolves secrets, so a serve-only process rightly has no Vault login (deploy/k8s does this)
        yield warn(f"vault {settings.vault_addr}: no VAULT_TOKEN nor VAULT_ROLE_ID with VAULT_SECRET_ID here: "
                   "workers need one to resolve vault: credentials (run doctor in a worker to check its login)")
        return
    passed, text = _vault_check(settings)
    yield ok(text) if passed else fail(text)


def _vault_check(settings: Settings) -> tuple[bool, str]:
    """Reach Vault and authenticate as the worker will (token lookup-self; AppRole logs in first)."""
    try:
        return True, f"vault {settings.vault_addr}: {settings.vault_resolver().check()}"
    except Exception as exc:  # the resolver's messages name no secret
        return False, f"vault {settings.vault_addr}: {exc}"


# --- chat platforms ------------------------------------------------------------------------------------------


def _slack(settings: Settings, config: WarroomConfig | None) -> Iterable[Finding]:
    bot, app, signing = settings.slack_bot_token, settings.slack_app_token, settings.slack_signing_secret
    if bot is None:
        if app is not None or signing is not None:
            yield warn("slack: SLACK_APP_TOKEN/SLACK_SIGNING_SECRET are set but SLACK_BOT_TOKEN is not, so Slack "
                       "stays off: set SLACK_BOT_TOKEN (xoxb-...) to turn it on")
        return
    found = []
    if not bot.get_secret_value().startswith("xoxb-"):
        found.append(fail("slack: SLACK_BOT_TOKEN does not start with xoxb-: use the Bot User OAuth Token "
                          "(OAuth & Permissions page), not a user or app token"))
    if app is not None and not app.get_secret_value().startswith("xapp-"):
        found.append(fail("slack: SLACK_APP_TOKEN does not start with xapp-: use an app-level token with "
                          "connections:write (Basic Information page), or unset it for HTTP mode"))
    if app is None and signing is None:
        found.append(fail("slack: SLACK_BOT_TOKEN is set without SLACK_SIGNING_SECRET, so /slack/events "
                          "cannot verify requests (set it, or SLACK_APP_TOKEN for Socket Mode)"))
    if config is not None and not config.slack.alert_channel:
        found.append(warn("slack: slack.alert_channel is not set in the config: alerts have no Slack channel to "
                          "go to (set it to a channel id, e.g. C0123ABCD)"))
    if not any(f.level == "FAIL" for f in found):
        found.insert(0, ok(f"slack: {'Socket Mode' if app is not None else 'HTTP on /slack/events'}"))
    yield from found


def _teams(settings: Settings, config: WarroomConfig | None) -> Iterable[Finding]:
    app_id, password, tenant = (settings.microsoft_app_id, settings.microsoft_app_password,
                                settings.microsoft_app_tenant_id)
    if not app_id:
        if password is not None or tenant:
            yield warn("teams: MicrosoftAppPassword/MicrosoftAppTenantId are set but MicrosoftAppId is not, so "
                       "Teams runs unauthenticated (Emulator mode): set MicrosoftAppId")
        return
    found = []
    if password is None:
        found.append(fail("teams: MicrosoftAppId is set but MicrosoftAppPassword is not: the bot could not reply "
                          "(set both, or neither for the Bot Framework Emulator)"))
    if not _GUID.match(app_id):
        found.append(fail("teams: MicrosoftAppId is not a GUID: use the Application (client) ID of the bot's "
                          "Azure app registration"))
    if tenant and not (_GUID.match(tenant) or _DOMAIN.match(tenant)):
        found.append(fail(f"teams: MicrosoftAppTenantId {tenant!r} is neither a GUID nor a domain: use the "
                          "Directory (tenant) ID of the app registration"))
    if config is not None and not config.teams.alert_conversation:
        found.append(warn("teams: teams.alert_conversation is not set in the config: alerts have no Teams "
                          "conversation to go to"))
    if not any(f.level == "FAIL" for f in found):
        found.insert(0, ok(f"teams: app {app_id}" + (f", tenant {tenant}" if tenant else ", multi-tenant")))
    yield from found


def _public_url(settings: Settings, config: WarroomConfig | None) -> Iterable[Finding]:
    url = settings.public_url
    if url is None:
        return
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        yield fail(f"WARROOM_PUBLIC_URL {url!r} is not an http(s) URL: set it to where people reach "
                   "`warroom serve`, e.g. https://warroom.example.com")
    else:
        yield ok(f"public url {url}")


def _webhook_token(settings: Settings, config: WarroomConfig | None) -> Iterable[Finding]:
    if settings.webhook_token is None:
        yield warn("WARROOM_WEBHOOK_TOKEN is not set: /hooks/* accept alerts from anyone who can reach them "
                   "(set a random token and send it as `Authorization: Bearer`)")


# --- model providers -----------------------------------------------------------------------------------------


def _llm(settings: Settings, config: WarroomConfig | None) -> Iterable[Finding]:
    name = settings.llm_provider
    if name == "offline":
        yield ok("llm: offline (deterministic, no model)")
    elif name == "anthropic":
        if settings.anthropic_api_key is None:
            yield fail("llm: WARROOM_LLM=anthropic needs ANTHROPIC_API_KEY (set it, or WARROOM_LLM=offline)")
        else:
            yield ok(f"llm: anthropic {settings.anthropic_model} (key set, not contacted)")
    elif name == "openai":
        yield _openai(settings)
    else:
        yield fail(f"llm: WARROOM_LLM={name!r} is not a provider: use anthropic, openai or offline")


def _openai(settings: Settings) -> Finding:
    base = settings.openai_base_url
    if not base:
        if settings.openai_api_key is None:
            return fail("llm: WARROOM_LLM=openai needs OPENAI_BASE_URL (a local server) or OPENAI_API_KEY")
        return ok(f"llm: openai {settings.openai_model} (key set, not contacted)")
    import httpx

    try:  # any HTTP answer means the server is there; the model list needs no particular status
        status = httpx.get(base.rstrip("/") + "/models", timeout=CONNECT_TIMEOUT_S).status_code
    except httpx.HTTPError as exc:
        return fail(f"llm: OPENAI_BASE_URL {_where(base)} is not reachable ({type(exc).__name__}): start the "
                    "server or fix the URL")
    return ok(f"llm: openai {settings.openai_model} at {_where(base)} (HTTP {status})")


def _embedding_model(settings: Settings, config: WarroomConfig | None) -> Iterable[Finding]:
    """Load the model as serve and the workers will, and check it makes vectors the database column holds."""
    from engine.embedder import DIMENSIONS, SentenceTransformerEmbedder

    name = settings.embedding_model
    try:
        dims = SentenceTransformerEmbedder(name).embed(["doctor"]).shape[1]
    except Exception as exc:
        yield fail(f"embedding model {name}: cannot load it ({_one_line(exc)}): set WARROOM_EMBEDDING_MODEL to "
                   "a local sentence-transformers directory (HF_HUB_OFFLINE is on)")
        return
    if dims != DIMENSIONS:
        yield fail(f"embedding model {name}: {dims}-dimensional vectors, the schema stores {DIMENSIONS}: "
                   "use a 384-dimensional model such as all-MiniLM-L6-v2")
    else:
        yield ok(f"embedding model {name}: loads, {dims} dimensions")


# --- services ------------------------------------------------------------------------------------------------


def _database(settings: Settings, config: WarroomConfig | None) -> Iterable[Finding]:
    if not settings.database_url:
        yield ok(f"database: embedded PostgreSQL under {settings.data_path} (not started by doctor)")
        return
    import psycopg

    where = _database_where(settings.database_url)
    try:
        conn = psycopg.connect(settings.database_url, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True)
    except Exception as exc:
        yield fail(f"database {where}: not reachable ({_one_line(exc)}): check DATABASE_URL and that "
                   "PostgreSQL is running")
        return
    with conn:
        yield ok(f"database {where}: reachable")
        yield from _pgvector(conn)
        yield from _schema(conn)


def _pgvector(conn) -> Iterable[Finding]:
    row = conn.execute("""SELECT e.extversion FROM pg_available_extensions a
                          LEFT JOIN pg_extension e ON e.extname = a.name WHERE a.name = 'vector'""").fetchone()
    if row is None:
        yield fail("database: the pgvector extension is not available on this server: install it "
                   "(e.g. the pgvector/pgvector image) and run `warroom db migrate`")
    elif row[0] is None:
        yield fail("database: pgvector is available but not created in this database: run `warroom db migrate`")
    else:
        yield ok(f"database: pgvector {row[0]}")


def _schema(conn) -> Iterable[Finding]:
    from storage.db import migration_files

    packaged = [version for version, _ in migration_files()]
    if conn.execute("SELECT to_regclass('schema_migrations')").fetchone()[0] is None:
        yield fail("database: schema not created: run `warroom db migrate`")
        return
    applied = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
    pending = [v for v in packaged if v not in applied]
    unknown = sorted(applied - set(packaged))
    if pending:
        yield fail(f"database: {len(pending)} migration(s) pending ({pending[0]}...{pending[-1]}): "
                   "run `warroom db migrate`")
    elif unknown:
        yield warn(f"database: migration(s) {', '.join(unknown)} are newer than this warroom: upgrade it")
    else:
        yield ok(f"database: schema at {packaged[-1]}")


def _redis(settings: Settings, config: WarroomConfig | None) -> Iterable[Finding]:
    if not settings.redis_url:
        yield ok(f"redis: embedded under {settings.data_path} (serve starts a worker beside it)")
        return
    from redis import Redis
    from rq import Worker

    from connectors.queue import QUEUE

    where = _where(settings.redis_url)
    redis = Redis.from_url(settings.redis_url, socket_connect_timeout=CONNECT_TIMEOUT_S,
                           socket_timeout=CONNECT_TIMEOUT_S)
    try:
        redis.ping()
    except Exception as exc:
        yield fail(f"redis {where}: not reachable ({_one_line(exc)}): check REDIS_URL and that Redis is running")
        return
    try:
        yield ok(f"redis {where}: reachable")
        workers = [w for w in Worker.all(connection=redis) if QUEUE in w.queue_names()]
        if workers:
            yield ok(f"rq: {len(workers)} worker(s) on queue {QUEUE}")
        else:
            yield warn(f"rq: no worker is listening on queue {QUEUE}: approved steps would wait "
                       "(start `warroom worker`)")
    finally:
        redis.close()


CHECKS: tuple[Check, ...] = (_placeholders, _slack, _teams, _llm, _public_url, _webhook_token, _database, _redis,
                             _vault_references, _vault, _embedding_model)


# --- helpers -------------------------------------------------------------------------------------------------


def _env_name(field: str) -> str:
    alias = Settings.model_fields[field].validation_alias
    return alias.choices[0] if hasattr(alias, "choices") else field


def _where(url: str) -> str:
    """A service URL without its credentials."""
    parts = urlsplit(url)
    if not parts.netloc:
        return url
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _database_where(url: str) -> str:
    """host:port/dbname of a PostgreSQL URL or key=value DSN, never its password."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(url)
    except Exception:
        return "(unparsable DATABASE_URL)"
    return f"{info.get('host') or 'localhost'}:{info.get('port') or 5432}/{info.get('dbname') or ''}"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _flatten(params: dict, prefix: str = "") -> Iterable[tuple[str, object]]:
    for key, value in params.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value
