"""What can be checked of the deployment files without a Docker engine or a Slack workspace."""
import tomllib

import yaml

from tests.conftest import ROOT


def test_slack_manifest_points_every_request_at_one_url():
    manifest = yaml.safe_load((ROOT / "manifest.yml").read_text())
    command = manifest["features"]["slash_commands"][0]
    assert command["command"] == "/warroom" and command["url"].endswith("/slack/events")
    settings = manifest["settings"]
    assert settings["interactivity"]["is_enabled"] and settings["interactivity"]["request_url"].endswith("/slack/events")
    assert settings["event_subscriptions"]["request_url"].endswith("/slack/events")
    assert {"message.channels", "message.groups", "app_mention"} <= set(settings["event_subscriptions"]["bot_events"])
    assert {"chat:write", "commands", "channels:history", "groups:history", "app_mentions:read", "users:read",
            "users:read.email", "reactions:write"} <= set(manifest["oauth_config"]["scopes"]["bot"])
    assert "socket_mode_enabled" in settings


def test_dockerfile_is_multi_stage_non_root_with_cpu_torch():
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("\nFROM ") >= 2
    assert "torch==2.13.0" in text and "whl/cpu" in text
    user = [line for line in text.splitlines() if line.startswith("USER ")][-1]
    assert user.split()[1].split(":")[0] not in ("root", "0")
    assert 'ENTRYPOINT ["warroom"]' in text


def test_compose_runs_postgres_redis_serve_and_worker():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert {"postgres", "redis", "serve", "worker"} <= set(compose["services"])
    assert "pgvector" in compose["services"]["postgres"]["image"]


def test_console_script_and_packaged_data():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["warroom"] == "bot.cli:main"
    data = project["tool"]["setuptools"]["package-data"]
    assert "migrations/*.sql" in data["storage"] and "*.yaml" in data["prompts"]
