"""Process settings from the environment (and `.env`), one object built in main() and passed down."""
from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _alias(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class Settings(BaseSettings):
    """Environment contract of DESIGN.md. Secrets are SecretStr so they never print by accident."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True,
                                      env_ignore_empty=True)

    database_url: str | None = Field(None, validation_alias=_alias("DATABASE_URL"))
    redis_url: str | None = Field(None, validation_alias=_alias("REDIS_URL"))
    data_dir: Path = Field(Path("~/.local/share/warroom"), validation_alias=_alias("WARROOM_DATA_DIR"))
    config_path: Path = Field(Path("./warroom.yml"), validation_alias=_alias("WARROOM_CONFIG"))
    webhook_token: SecretStr | None = Field(None, validation_alias=_alias("WARROOM_WEBHOOK_TOKEN"))
    # GitHub cannot send a bearer token; /hooks/github checks X-Hub-Signature-256 (HMAC-SHA256) with this.
    github_webhook_secret: SecretStr | None = Field(None, validation_alias=_alias("GITHUB_WEBHOOK_SECRET"))
    # PagerDuty v3 signs deliveries; /hooks/pagerduty checks X-PagerDuty-Signature (HMAC-SHA256) with this.
    pagerduty_webhook_secret: SecretStr | None = Field(None, validation_alias=_alias("PAGERDUTY_WEBHOOK_SECRET"))
    workspace: str = Field("default", validation_alias=_alias("WARROOM_WORKSPACE"))

    slack_bot_token: SecretStr | None = Field(None, validation_alias=_alias("SLACK_BOT_TOKEN"))
    slack_signing_secret: SecretStr | None = Field(None, validation_alias=_alias("SLACK_SIGNING_SECRET"))
    slack_app_token: SecretStr | None = Field(None, validation_alias=_alias("SLACK_APP_TOKEN"))
    slack_api_url: str = Field("https://slack.com/api/", validation_alias=_alias("SLACK_API_URL"))
    # Where people reach `warroom serve` (the Slack request URL without /slack/events); cards cut to fit a
    # platform limit link to their full text there.
    public_url: str | None = Field(None, validation_alias=_alias("WARROOM_PUBLIC_URL"))

    microsoft_app_id: str | None = Field(None, validation_alias=_alias("MicrosoftAppId", "MICROSOFTAPPID"))
    microsoft_app_password: SecretStr | None = Field(
        None, validation_alias=_alias("MicrosoftAppPassword", "MICROSOFTAPPPASSWORD"))
    microsoft_app_tenant_id: str | None = Field(
        None, validation_alias=_alias("MicrosoftAppTenantId", "MICROSOFTAPPTENANTID"))

    anthropic_api_key: SecretStr | None = Field(None, validation_alias=_alias("ANTHROPIC_API_KEY"))
    anthropic_base_url: str | None = Field(None, validation_alias=_alias("ANTHROPIC_BASE_URL"))
    anthropic_model: str = Field("claude-sonnet-4-5", validation_alias=_alias("WARROOM_ANTHROPIC_MODEL"))
    llm: str | None = Field(None, validation_alias=_alias("WARROOM_LLM"))
    openai_base_url: str | None = Field(None, validation_alias=_alias("OPENAI_BASE_URL"))
    openai_api_key: SecretStr | None = Field(None, validation_alias=_alias("OPENAI_API_KEY"))
    openai_model: str = Field("local", validation_alias=_alias("WARROOM_OPENAI_MODEL"))
    # One model call, retries included, never takes longer than this; then the offline answer is used.
    llm_budget_s: float = Field(10.0, gt=0, validation_alias=_alias("WARROOM_LLM_BUDGET"))
    llm_max_attempts: int = Field(3, ge=1, le=10, validation_alias=_alias("WARROOM_LLM_MAX_ATTEMPTS"))
    # After this many failed attempts in a row the model is not asked for WARROOM_LLM_COOLDOWN seconds.
    llm_breaker_threshold: int = Field(3, ge=1, validation_alias=_alias("WARROOM_LLM_BREAKER_THRESHOLD"))
    llm_cooldown_s: float = Field(30.0, ge=0, validation_alias=_alias("WARROOM_LLM_COOLDOWN"))

    vault_addr: str | None = Field(None, validation_alias=_alias("VAULT_ADDR"))
    vault_token: SecretStr | None = Field(None, validation_alias=_alias("VAULT_TOKEN"))
    # AppRole instead of a token: the worker logs in, and again when Vault stops honouring its token.
    vault_role_id: str | None = Field(None, validation_alias=_alias("VAULT_ROLE_ID"))
    vault_secret_id: SecretStr | None = Field(None, validation_alias=_alias("VAULT_SECRET_ID"))
    vault_approle_mount: str = Field("approle", validation_alias=_alias("VAULT_APPROLE_MOUNT"))
    vault_namespace: str | None = Field(None, validation_alias=_alias("VAULT_NAMESPACE"))
    # How long a resolved secret is reused (in memory only) before Vault is asked again.
    vault_cache_s: float = Field(60.0, ge=0, validation_alias=_alias("VAULT_CACHE_SECONDS"))

    embedding_model: str = Field("all-MiniLM-L6-v2", validation_alias=_alias("WARROOM_EMBEDDING_MODEL"))
    max_body_bytes: int = Field(1_048_576, validation_alias=_alias("WARROOM_MAX_BODY_BYTES"))
    step_timeout_s: int = Field(120, validation_alias=_alias("WARROOM_STEP_TIMEOUT"))
    # A running step is stamped alive every heartbeat; silence longer than the lease means its worker died.
    heartbeat_interval_s: float = Field(5.0, gt=0, validation_alias=_alias("WARROOM_HEARTBEAT_INTERVAL"))
    step_lease_s: float | None = Field(None, gt=0, validation_alias=_alias("WARROOM_STEP_LEASE"))
    requeue_grace_s: float = Field(60.0, ge=0, validation_alias=_alias("WARROOM_REQUEUE_GRACE"))
    sweep_interval_s: float = Field(10.0, gt=0, validation_alias=_alias("WARROOM_SWEEP_INTERVAL"))

    # `json` (one object per line) or `text`; unset: json for serve and worker, text for the other commands.
    log_format: str | None = Field(None, validation_alias=_alias("WARROOM_LOG_FORMAT"))
    log_level: str | None = Field(None, validation_alias=_alias("WARROOM_LOG_LEVEL"))
    # On SIGTERM serve drains for at most this long: in-flight requests, then the outbox (what is left stays
    # queued in the database for the next replica).
    shutdown_grace_s: float = Field(20.0, ge=0, validation_alias=_alias("WARROOM_SHUTDOWN_GRACE"))
    # Chat handlers running at once per serve process; more wait their turn (after their ack). Their work is
    # mostly CPU (embedding, retrieval, cards): more threads than cores only slow the acks (bench/README.md).
    handler_concurrency: int = Field(3, ge=1, le=64, validation_alias=_alias("WARROOM_HANDLER_CONCURRENCY"))
    # USD per million tokens by model, overriding/adding to bot.metrics.LLM_PRICES, as JSON:
    # {"my-model": {"input": 3, "output": 15, "cache_read": 0.3, "cache_write": 3.75}}
    llm_prices: dict[str, dict[str, float]] = Field(default_factory=dict, validation_alias=_alias("WARROOM_LLM_PRICES"))

    def timing(self):
        """Heartbeat, lease and sweeper timing for workers and serve (the lease defaults to 30 s, and is never
        shorter than three heartbeats)."""
        from connectors.recovery import Timing

        return Timing(heartbeat_s=self.heartbeat_interval_s,
                      lease_s=self.step_lease_s or max(Timing.lease_s, 3 * self.heartbeat_interval_s),
                      requeue_grace_s=self.requeue_grace_s, sweep_every_s=self.sweep_interval_s,
                      step_timeout_s=self.step_timeout_s)

    def vault_resolver(self):
        """The worker's Vault client settings, as a resolver (nothing is contacted until a secret is needed)."""
        from connectors.vault import VaultResolver

        return VaultResolver(self.vault_addr, self.vault_token.get_secret_value() if self.vault_token else None,
                             role_id=self.vault_role_id,
                             secret_id=self.vault_secret_id.get_secret_value() if self.vault_secret_id else None,
                             approle_mount=self.vault_approle_mount, namespace=self.vault_namespace,
                             cache_seconds=self.vault_cache_s)

    @property
    def data_path(self) -> Path:
        return self.data_dir.expanduser()

    @property
    def llm_provider(self) -> str:
        """`anthropic` when a key is set, else `offline`, unless WARROOM_LLM says otherwise."""
        if self.llm:
            return self.llm
        return "anthropic" if self.anthropic_api_key else "offline"
