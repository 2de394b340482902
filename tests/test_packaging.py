"""What can be checked of the deployment files without a Docker engine, a cluster or a Slack workspace: that they
agree with each other and with the code (routes, settings names, ports, users, shutdown timing).
The linters themselves run in test_deploy_lint.py."""
import re
import tomllib

import yaml

from bot.settings import Settings
from tests.conftest import ROOT
from tests.served import Served

K8S = ROOT / "deploy" / "k8s"
# Read by libraries, not by warroom's settings.
LIBRARY_ENV = {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PATH"}
SETTINGS_ENV = {name for field in Settings.model_fields.values()
                for name in getattr(field.validation_alias, "choices", [])}


def k8s_objects() -> dict[tuple[str, str], dict]:
    """Every object of deploy/k8s by (kind, name)."""
    objects = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                objects[doc["kind"], doc["metadata"]["name"]] = doc
    return objects


def pod(objects, name: str) -> dict:
    return objects["Deployment", name]["spec"]["template"]["spec"]


def env_of(objects, name: str) -> dict[str, str]:
    """The environment a Deployment's single container starts with: envFrom sources, then its own env."""
    container, = pod(objects, name)["containers"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(objects["ConfigMap", source["configMapRef"]["name"]]["data"])
        else:
            env.update(objects["Secret", source["secretRef"]["name"]]["stringData"])
    env.update({e["name"]: e["value"] for e in container.get("env", [])})
    return env


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


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
    text = dockerfile()
    assert text.count("\nFROM ") >= 2
    assert "torch==2.13.0" in text and "whl/cpu" in text
    # the builder's pin is the one scripts/setup.sh installs, so the image runs what the tests ran
    assert "torch==2.13.0" in (ROOT / "scripts" / "setup.sh").read_text()
    user = [line for line in text.splitlines() if line.startswith("USER ")][-1]
    uid = user.split()[1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric, so runAsNonRoot can verify it
    assert f"--uid {uid}" in text
    assert 'ENTRYPOINT ["warroom"]' in text
    runtime_stage = text[text.rindex("\nFROM "):]
    assert "build-essential" not in runtime_stage  # compilers stay in the builder


def test_dockerfile_env_names_are_settings():
    names = set(re.findall(r"\b(WARROOM_[A-Z_]+)=", dockerfile()))
    assert names and names <= SETTINGS_ENV


def test_compose_runs_postgres_redis_serve_and_worker():
    services = compose()["services"]
    assert {"postgres", "redis", "serve", "worker"} <= set(services)
    assert services["postgres"]["image"].startswith("pgvector/pgvector:")
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "ping" in services["redis"]["healthcheck"]["test"]
    for name in ("serve", "worker"):
        service = services[name]
        assert {"postgres", "redis"} == set(service["depends_on"])
        assert all(d["condition"] == "service_healthy" for d in service["depends_on"].values())
        assert service["env_file"][0]["path"] == ".env" and service["env_file"][0]["required"] is False
        env = service["environment"]
        assert set(env) <= SETTINGS_ENV
        assert env["DATABASE_URL"].split("@")[1].startswith("postgres:5432/")  # the service's own name and port
        assert env["REDIS_URL"].startswith("redis://redis:6379/")
    assert services["worker"]["command"] == ["worker"]
    assert services["serve"]["command"][0] == "serve"


def test_compose_stop_grace_covers_draining_and_the_running_step():
    services = compose()["services"]
    defaults = Settings.model_fields
    assert _seconds(services["serve"]["stop_grace_period"]) > defaults["shutdown_grace_s"].default
    assert _seconds(services["worker"]["stop_grace_period"]) > defaults["step_timeout_s"].default


def test_one_http_port_everywhere():
    """Dockerfile EXPOSE, the serve command of the image, compose and Kubernetes all say the same port."""
    port = int(re.search(r"^EXPOSE (\d+)$", dockerfile(), re.M).group(1))
    assert f'"--port", "{port}"' in dockerfile()
    serve = compose()["services"]["serve"]
    assert serve["ports"] == [f"{port}:{port}"] and serve["command"][-1] == str(port)
    objects = k8s_objects()
    container, = pod(objects, "warroom-serve")["containers"]
    assert container["args"][container["args"].index("--port") + 1] == str(port)
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named == {"http": port}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in named
    service = objects["Service", "warroom-serve"]["spec"]
    assert service["ports"][0]["targetPort"] in named
    annotations = objects["Deployment", "warroom-serve"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)


def test_probe_and_scrape_paths_answer_on_a_real_serve(tmp_path, db_url, redis_url):
    """The paths the manifests and the image's HEALTHCHECK name, asked of a running `warroom serve`."""
    objects = k8s_objects()
    deployment = objects["Deployment", "warroom-serve"]
    container, = deployment["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    paths = {container[p]["httpGet"]["path"] for p in ("readinessProbe", "livenessProbe", "startupProbe")}
    paths.add(deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"])
    paths.update(re.findall(r"http://127\.0\.0\.1:\d+(/\w+)", dockerfile()))  # HEALTHCHECK
    served = Served(tmp_path / "data", DATABASE_URL=db_url, REDIS_URL=redis_url)
    try:
        answers = {path: served.get(path)[0] for path in sorted(paths)}
    finally:
        served.stop()
    assert answers == {path: 200 for path in paths} and {"/readyz", "/healthz", "/metrics"} <= set(answers)


def test_kubernetes_set_is_complete_and_in_one_namespace():
    objects = k8s_objects()
    kinds = {kind for kind, _ in objects}
    assert {"Namespace", "ConfigMap", "Secret", "Deployment", "Service", "HorizontalPodAutoscaler",
            "PodDisruptionBudget"} <= kinds
    assert objects["Namespace", "warroom"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert all(o["metadata"].get("namespace") == "warroom" for (kind, _), o in objects.items() if kind != "Namespace")
    hpa = objects["HorizontalPodAutoscaler", "warroom-serve"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "warroom-serve"}
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    assert objects["Deployment", "warroom-serve"]["spec"]["replicas"] >= 2


def test_selectors_pick_the_right_pods():
    objects = k8s_objects()
    serve_labels = objects["Deployment", "warroom-serve"]["spec"]["template"]["metadata"]["labels"]
    worker_labels = objects["Deployment", "warroom-worker"]["spec"]["template"]["metadata"]["labels"]

    def picks(selector: dict, labels: dict) -> bool:
        return selector.items() <= labels.items()

    for selector in (objects["Service", "warroom-serve"]["spec"]["selector"],
                     objects["PodDisruptionBudget", "warroom-serve"]["spec"]["selector"]["matchLabels"],
                     objects["Deployment", "warroom-serve"]["spec"]["selector"]["matchLabels"]):
        assert picks(selector, serve_labels) and not picks(selector, worker_labels)
    assert picks(objects["Deployment", "warroom-worker"]["spec"]["selector"]["matchLabels"], worker_labels)


def test_pods_meet_the_restricted_pod_security_standard():
    objects = k8s_objects()
    uid = int([line for line in dockerfile().splitlines() if line.startswith("USER ")][-1].split()[1].split(":")[0])
    for name in ("warroom-serve", "warroom-worker"):
        spec = pod(objects, name)
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == uid
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec["automountServiceAccountToken"] is False
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False and context["capabilities"]["drop"] == ["ALL"]
            assert context["readOnlyRootFilesystem"] is True
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]) <= set(resources["limits"])
            # with a read-only root, everything warroom writes must be a mounted volume
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert {"/tmp", "/var/lib/warroom", "/home/warroom/.cache"} <= mounts


def test_every_environment_name_is_a_setting():
    objects = k8s_objects()
    names = set()
    for (kind, name), obj in objects.items():
        if kind == "Secret":
            names |= set(obj["stringData"])
        elif (kind, name) == ("ConfigMap", "warroom-env"):
            names |= set(obj["data"])
    for name in ("warroom-serve", "warroom-worker"):
        names |= set(env_of(objects, name))
    unknown = names - SETTINGS_ENV - LIBRARY_ENV
    assert not unknown, f"not read by bot/settings.py: {sorted(unknown)}"


def test_config_map_config_loads_and_is_where_warroom_looks():
    from engine.config import WarroomConfig

    objects = k8s_objects()
    text = objects["ConfigMap", "warroom-config"]["data"]["warroom.yml"]
    config = WarroomConfig.model_validate(yaml.safe_load(text))
    assert config.targets and config.policy.approvers
    for name in ("warroom-serve", "warroom-worker"):
        path = env_of(objects, name)["WARROOM_CONFIG"]
        mounts = pod(objects, name)["containers"][0]["volumeMounts"]
        mounted = {m["mountPath"] for m in mounts if m["name"] == "config"}
        assert path.rsplit("/", 1) == [*mounted, "warroom.yml"]
    assert "WARROOM_CONFIG=/etc/warroom/warroom.yml" in dockerfile()


def test_secrets_hold_placeholders_only_and_doctor_names_each():
    from bot.doctor import _placeholders

    objects = k8s_objects()
    values = {key: value for (kind, _), obj in objects.items() if kind == "Secret"
              for key, value in obj["stringData"].items()}
    assert values and all("CHANGE_ME" in value for value in values.values())
    assert "kubectl -n warroom create secret" in (K8S / "secret.yaml").read_text()  # how to make them for real
    settings = Settings(_env_file=None, **values)
    named = {f.text.split()[0] for f in _placeholders(settings, None) if f.level == "FAIL"}
    assert named == set(values)


def test_vault_credentials_reach_only_workers():
    objects = k8s_objects()
    serve, worker = env_of(objects, "warroom-serve"), env_of(objects, "warroom-worker")
    assert not {"VAULT_TOKEN", "VAULT_ROLE_ID", "VAULT_SECRET_ID"} & set(serve)  # serve never resolves secrets
    assert {"VAULT_ADDR", "VAULT_TOKEN"} <= set(worker)
    assert not {"SLACK_BOT_TOKEN", "ANTHROPIC_API_KEY", "MicrosoftAppPassword"} & set(worker)
    assert {"DATABASE_URL", "REDIS_URL"} <= set(serve) & set(worker)


def test_serve_drains_before_it_is_killed():
    """preStop keeps the pod serving while endpoints stop routing to it; then SIGTERM starts the drain of at most
    WARROOM_SHUTDOWN_GRACE seconds; the kill comes only after both."""
    objects = k8s_objects()
    spec = pod(objects, "warroom-serve")
    container, = spec["containers"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0].endswith("sleep")
    pre_stop = float(command[1])
    grace = float(env_of(objects, "warroom-serve")["WARROOM_SHUTDOWN_GRACE"])
    assert 0 < pre_stop and grace >= 1
    assert spec["terminationGracePeriodSeconds"] >= pre_stop + grace + 5
    # /readyz goes 503 while draining: it must fail fast enough to matter inside the drain
    probe = container["readinessProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] <= grace


def test_worker_finishes_its_step_before_it_is_killed():
    objects = k8s_objects()
    spec = pod(objects, "warroom-worker")
    container, = spec["containers"]
    assert container["command"] == ["warroom", "worker"]
    step_timeout = int(env_of(objects, "warroom-worker").get("WARROOM_STEP_TIMEOUT",
                                                            Settings.model_fields["step_timeout_s"].default))
    assert spec["terminationGracePeriodSeconds"] >= step_timeout + 10


def test_console_script_and_packaged_data():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["warroom"] == "bot.cli:main"
    data = project["tool"]["setuptools"]["package-data"]
    assert "migrations/*.sql" in data["storage"] and "*.yaml" in data["prompts"]


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, f"stop_grace_period {duration!r}: write it in seconds"
    return float(match.group(1))
