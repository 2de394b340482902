"""`warroom doctor` run as a user runs it: one line per check, every problem named on its own line, exit 1."""
import socket

import psycopg
from rq import Worker

from bot.settings import Settings
from connectors.queue import QUEUE
from storage.db import migration_files
from tests.conftest import warroom

# Every setting blank (env_ignore_empty: blank is unset), so nothing from the caller's environment leaks in.
BLANK = {name: "" for field in Settings.model_fields.values()
         for name in getattr(field.validation_alias, "choices", [])}
TEAMS_APP = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"
TENANT = "0a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c3d"
PACKAGED = [version for version, _ in migration_files()]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def doctor(tmp_path, config: str, **env: str):
    path = tmp_path / "warroom.yml"
    path.write_text(config)
    result = warroom("doctor", env={**BLANK, "WARROOM_CONFIG": str(path), "WARROOM_DATA_DIR": str(tmp_path / "data"),
                                    **env})
    lines = result.stdout.splitlines()
    assert lines and all(line[:5] in ("ok   ", "warn ", "FAIL ") for line in lines[:-1]), result.stdout
    return result, lines


def failures(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("FAIL ")]


def only_line(lines: list[str], *words: str) -> str:
    """The one line naming all these words."""
    found = [line for line in lines if all(w in line for w in words)]
    assert len(found) == 1, f"{words} named on {len(found)} lines:\n" + "\n".join(lines)
    return found[0]


def test_broken_configuration_names_each_problem_on_its_own_line(tmp_path):
    config = """
policy: {approvers: [alice]}
targets:
  web-01:
    connector: ssh
    host: 10.0.0.5
    private_key: "vault:kv/data/ssh/web-01#private_key"
"""
    result, lines = doctor(
        tmp_path, config,
        DATABASE_URL=f"postgresql://warroom:db-password-123@127.0.0.1:{closed_port()}/warroom",
        REDIS_URL=f"redis://:redis-password-456@127.0.0.1:{closed_port()}/0",
        SLACK_BOT_TOKEN="xoxb-1111-2222-abcdefghijkl",
        MicrosoftAppId=TEAMS_APP,
        WARROOM_LLM="anthropic",
        WARROOM_PUBLIC_URL="ftp://x",
        WARROOM_WEBHOOK_TOKEN="CHANGE_ME")
    assert result.returncode == 1, result.stdout + result.stderr
    problems = [
        only_line(lines, "FAIL database", "not reachable", "DATABASE_URL"),
        only_line(lines, "FAIL redis", "not reachable", "REDIS_URL"),
        only_line(lines, "FAIL slack", "SLACK_BOT_TOKEN", "without SLACK_SIGNING_SECRET"),
        only_line(lines, "FAIL teams", "MicrosoftAppId is set but MicrosoftAppPassword is not"),
        only_line(lines, "FAIL llm", "WARROOM_LLM=anthropic needs ANTHROPIC_API_KEY"),
        only_line(lines, "FAIL targets.web-01", "private_key", "VAULT_ADDR is not set"),
        only_line(lines, "FAIL WARROOM_PUBLIC_URL", "'ftp://x'", "not an http(s) URL"),
        only_line(lines, "FAIL WARROOM_WEBHOOK_TOKEN", "placeholder"),
    ]
    assert sorted(failures(lines)) == sorted(problems)
    assert lines[-1] == f"{len(problems)} problem(s), 2 warning(s)"
    only_line(lines, "warn slack", "slack.alert_channel")          # Slack on, but no channel for alerts
    only_line(lines, "warn teams", "teams.alert_conversation")
    assert "db-password-123" not in result.stdout and "redis-password-456" not in result.stdout
    assert "abcdefghijkl" not in result.stdout


def test_config_errors_wrong_token_shapes_and_an_unmigrated_database(tmp_path, pg_server):
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE doctor_unmigrated")  # from template1: no pgvector, no schema
    try:
        result, lines = doctor(
            tmp_path, "policy:\n  approvers: [alice]\n  two_person_rule: maybe\n",
            DATABASE_URL=pg_server.get_uri(database="doctor_unmigrated"),
            SLACK_BOT_TOKEN="xoxp-user-token-1234", SLACK_APP_TOKEN="xoxb-not-an-app-token",
            MicrosoftAppId="my-bot", MicrosoftAppPassword="pw-123456", MicrosoftAppTenantId="not a tenant",
            WARROOM_LLM="openai", OPENAI_BASE_URL=f"http://127.0.0.1:{closed_port()}/v1",
            WARROOM_WEBHOOK_TOKEN="hook-token-1")
    finally:
        with psycopg.connect(pg_server.get_uri(), autocommit=True) as conn:
            conn.execute("DROP DATABASE doctor_unmigrated")
    assert result.returncode == 1
    problems = [
        only_line(lines, "FAIL config", "warroom.yml", "two_person_rule"),
        only_line(lines, "FAIL slack", "SLACK_BOT_TOKEN does not start with xoxb-"),
        only_line(lines, "FAIL slack", "SLACK_APP_TOKEN does not start with xapp-"),
        only_line(lines, "FAIL teams", "MicrosoftAppId is not a GUID"),
        only_line(lines, "FAIL teams", "MicrosoftAppTenantId 'not a tenant'"),
        only_line(lines, "FAIL llm", "OPENAI_BASE_URL", "not reachable"),
        only_line(lines, "FAIL database", "pgvector is available but not created", "warroom db migrate"),
        only_line(lines, "FAIL database", "schema not created", "warroom db migrate"),
    ]
    assert sorted(failures(lines)) == sorted(problems)
    only_line(lines, "ok   database", "reachable")


def test_pending_migrations_are_counted(tmp_path, db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM schema_migrations WHERE version = ANY(%s)", (PACKAGED[-2:],))
    result, lines = doctor(tmp_path, "policy: {approvers: [alice]}\n", DATABASE_URL=db_url,
                           WARROOM_WEBHOOK_TOKEN="hook-token-1")
    assert result.returncode == 1
    assert failures(lines) == [only_line(lines, "FAIL database", "2 migration(s) pending",
                                         f"({PACKAGED[-2]}...{PACKAGED[-1]})", "warroom db migrate")]


def test_healthy_configuration_has_no_problem(tmp_path, db_url, redis_url, redis_server):
    config = """
slack: {alert_channel: C0ALERTS}
teams: {alert_conversation: "19:alerts@thread.tacv2"}
policy: {approvers: [alice, bob]}
targets:
  status-page: {connector: http, base_url: "http://127.0.0.1:9/"}
"""
    worker = Worker([QUEUE], connection=redis_server)  # a real RQ worker's registration, as `warroom worker` makes
    worker.register_birth()
    try:
        result, lines = doctor(
            tmp_path, config, DATABASE_URL=db_url, REDIS_URL=redis_url,
            SLACK_BOT_TOKEN="xoxb-1111-2222-abcdefghijkl", SLACK_SIGNING_SECRET="signing-secret-1",
            MicrosoftAppId=TEAMS_APP, MicrosoftAppPassword="teams-password-1", MicrosoftAppTenantId=TENANT,
            WARROOM_LLM="offline", WARROOM_PUBLIC_URL="https://warroom.example.com",
            WARROOM_WEBHOOK_TOKEN="hook-token-1")
    finally:
        worker.register_death()
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines[-1] == "0 problem(s), 0 warning(s)", result.stdout
    for words in (("config", "1 target(s)"), ("slack", "HTTP on /slack/events"), ("teams", TEAMS_APP, TENANT),
                  ("database", "reachable"), ("database", "pgvector"), ("database", f"schema at {PACKAGED[-1]}"),
                  ("redis", "reachable"), ("rq", "1 worker(s)"), ("embedding model", "384 dimensions"),
                  ("public url",), ("llm: offline",)):
        assert only_line(lines, *words).startswith("ok   ")


def test_no_worker_listening_is_a_warning_not_a_problem(tmp_path, db_url, redis_url):
    result, lines = doctor(tmp_path, "policy: {approvers: [alice]}\n", DATABASE_URL=db_url, REDIS_URL=redis_url,
                           WARROOM_WEBHOOK_TOKEN="hook-token-1")
    assert result.returncode == 0, result.stdout
    assert only_line(lines, "warn rq", "no worker", "warroom worker")
    assert lines[-1] == "0 problem(s), 1 warning(s)"


def test_the_kubernetes_serve_pod_environment_passes_once_its_secrets_are_filled(tmp_path, db_url, redis_url):
    """deploy/k8s as a serve pod sees it (ConfigMaps, Secrets, its own env), placeholders replaced with values and
    the services pointed at this test's: no problem. Vault stays a warning there, since only workers log in."""
    import yaml

    from tests.test_packaging import env_of, k8s_objects

    objects = k8s_objects()
    env = {key: value.replace("CHANGE_ME", "filled-in-1") for key, value in env_of(objects, "warroom-serve").items()}
    config = objects["ConfigMap", "warroom-config"]["data"]["warroom.yml"]
    assert yaml.safe_load(config)["targets"]
    env.update(DATABASE_URL=db_url, REDIS_URL=redis_url, WARROOM_DATA_DIR=str(tmp_path / "data"))
    result, lines = doctor(tmp_path, config, **{k: v for k, v in env.items() if k != "WARROOM_CONFIG"})
    assert result.returncode == 0, result.stdout
    assert lines[-1] == "0 problem(s), 2 warning(s)", result.stdout
    only_line(lines, "warn vault", "run doctor in a worker")
    only_line(lines, "warn rq", "no worker")
    only_line(lines, "ok   slack", "HTTP on /slack/events")
    only_line(lines, "ok   llm: anthropic")


def test_each_kind_of_config_error_is_one_line(tmp_path):
    from bot.doctor import _config_check

    cases = {
        "broken.yml": ("policy: [unclosed\n", "not valid YAML"),
        "unknown-key.yml": ("polcy: {approvers: [alice]}\n", "polcy"),
        "list.yml": ("- a\n- b\n", "top level must be a mapping"),
    }
    for name, (text, expected) in cases.items():
        (tmp_path / name).write_text(text)
        config, findings = _config_check(Settings(_env_file=None, config_path=tmp_path / name))
        assert config is None and len(findings) == 1
        assert findings[0].level == "FAIL" and expected in findings[0].text and name in findings[0].text
    (tmp_path / "a-directory.yml").mkdir()
    config, (finding,) = _config_check(Settings(_env_file=None, config_path=tmp_path / "a-directory.yml"))
    assert config is None and finding.level == "FAIL" and "cannot read it" in finding.text
    config, findings = _config_check(Settings(_env_file=None, config_path=tmp_path / "missing.yml"))
    assert config is not None and [f.level for f in findings] == ["ok", "warn"]  # defaults; nobody approves
    assert "not found, using defaults" in findings[0].text


def test_a_malformed_setting_or_an_unreadable_config_is_one_line_for_every_command(tmp_path):
    """Not only doctor: every command reads the settings and the config first, and must say what is wrong."""
    for args in (("doctor",), ("search", "disk full")):
        bad = warroom(*args, env={"WARROOM_STEP_TIMEOUT": "soon", "WARROOM_CONFIG": str(tmp_path / "none.yml")})
        assert bad.returncode == 2 and "Traceback" not in bad.stderr
        assert bad.stderr.strip().splitlines()[-1].startswith("warroom: setting WARROOM_STEP_TIMEOUT: ")
    unreadable = warroom("search", "disk full", env={"WARROOM_CONFIG": str(tmp_path)})  # a directory
    assert unreadable.returncode == 2 and "Traceback" not in unreadable.stderr
    assert f"warroom: {tmp_path}: cannot read it" in unreadable.stderr
