"""The deployment files through real linters, run as a user would run them (installed by the `test` extras, all
offline): hadolint for the Dockerfile, kubernetes-validate (the packaged OpenAPI schemas) for deploy/k8s, and
check-jsonschema with its vendored compose-spec schema for docker-compose.yml.

Each linter is also shown a broken copy, so a linter that silently checks nothing cannot pass these tests."""
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import ROOT

K8S_FILES = sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
# The oldest Kubernetes these manifests promise to work on, and the newest the schemas know.
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
OBJECTS = sum(1 for p in K8S_FILES for doc in yaml.safe_load_all(p.read_text()) if doc)


def tool(name: str) -> str:
    """The linter installed beside this Python (the venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} is not installed: pip install -e '.[test]' (scripts/setup.sh does)"
    return found


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)


def hadolint(path: Path) -> subprocess.CompletedProcess:
    # `style` is the lowest severity: every finding fails, not only errors
    return run(tool("hadolint"), "--no-color", "--failure-threshold", "style", str(path))


def kubernetes_validate(version: str, *paths: Path) -> subprocess.CompletedProcess:
    return run(tool("kubernetes-validate"), "--strict", "--kubernetes-version", version, *map(str, paths))


def compose_check(path: Path) -> subprocess.CompletedProcess:
    return run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path))


def test_dockerfile_passes_hadolint():
    result = hadolint(ROOT / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_root_image_on_a_floating_tag(tmp_path):
    text = (ROOT / "Dockerfile").read_text()
    broken = text.replace("USER 10001:10001", "USER root").replace("ARG PYTHON_IMAGE=python:3.11-slim",
                                                                   "ARG PYTHON_IMAGE=python:latest")
    assert broken.count("USER root") == 1
    (tmp_path / "Dockerfile").write_text(broken + "FROM python:latest\nRUN apt-get install -y curl\n")
    result = hadolint(tmp_path / "Dockerfile")
    assert result.returncode == 1
    assert {"DL3002", "DL3007", "DL3008"} <= set(result.stdout.split()), result.stdout


def test_kubernetes_manifests_validate_strictly():
    assert len(K8S_FILES) >= 7
    for version in KUBERNETES_VERSIONS:
        result = kubernetes_validate(version, *K8S_FILES)
        assert result.returncode == 0, result.stdout + result.stderr
        # every object was checked against a schema, none skipped as unknown
        passed = [line for line in result.stdout.splitlines() if " passed for resource " in line]
        assert len(passed) == OBJECTS, result.stdout


def test_kubernetes_validate_catches_a_misspelt_probe(tmp_path):
    text = (ROOT / "deploy" / "k8s" / "serve-deployment.yaml").read_text()
    broken = tmp_path / "serve-deployment.yaml"
    broken.write_text(text.replace("readinessProbe:", "readynessProbe:"))
    result = kubernetes_validate(KUBERNETES_VERSIONS[-1], broken)
    assert result.returncode == 1 and "readynessProbe" in result.stdout + result.stderr, result.stdout


def test_compose_file_matches_the_compose_spec():
    result = compose_check(ROOT / "docker-compose.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_check_catches_a_wrong_depends_on_condition(tmp_path):
    text = (ROOT / "docker-compose.yml").read_text()
    assert "condition: service_healthy" in text
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace("condition: service_healthy", "condition: healthy", 1))
    result = compose_check(broken)
    assert result.returncode == 1 and "'healthy' is not one of" in result.stdout, result.stdout
