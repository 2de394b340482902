"""Every connector against a real server on loopback: an asyncssh SSH server running real commands, the
embedded PostgreSQL, a Kubernetes API stand-in over real TLS, a Prometheus API stand-in. Nothing is mocked."""
from __future__ import annotations

import json
import socket
import time
from datetime import datetime, timezone

import asyncssh
import psycopg
import pytest

from connectors.base import ConnectorError, TransientError
from connectors.http import HttpConnector
from connectors.kubernetes import RESTARTED_AT, KubernetesConnector
from connectors.prometheus import PrometheusConnector
from connectors.registry import get
from connectors.sql import SqlConnector
from connectors.ssh import SshConnector
from engine.connector_params import validate_params
from engine.policy import minimum_risk
from tests.k8s_standin import KubeStandin, make_ca, pem
from tests.prometheus_standin import PrometheusStandin
from tests.ssh_server import PASSWORD, SshServer

TOKEN = "k8s-token-0123456789abcdef"


def _closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- ssh: a real asyncssh server that runs the requested command ----------------------------------------------

@pytest.fixture
def ssh_server():
    with SshServer() as server:
        yield server


def test_ssh_runs_the_command_remotely_with_key_auth(ssh_server):
    result = SshConnector().run({"command": "echo hello from the host"}, target=ssh_server.target(),
                                secrets=ssh_server.key_secret(), timeout=10, read_only=True)
    assert result.ok and result.data["exit_status"] == 0
    assert result.output.strip() == "hello from the host"
    assert result.summary == f"ops@127.0.0.1:{ssh_server.port}: exit status 0"
    assert ssh_server.commands == ["echo hello from the host"]


def test_ssh_password_auth_and_non_zero_exit_with_stderr(ssh_server):
    result = SshConnector().run({"command": "sh -c 'echo partial; echo disk full >&2; exit 3'"},
                                target=ssh_server.target(), secrets={"password": PASSWORD}, timeout=10)
    assert not result.ok and result.data["exit_status"] == 3
    assert "exit status 3" in result.summary
    assert "partial" in result.output and "--- stderr ---\ndisk full" in result.output


def test_ssh_expect_exit_makes_a_non_zero_status_a_success(ssh_server):
    result = SshConnector().run({"command": "sh -c 'exit 1'", "expect_exit": 1}, target=ssh_server.target(),
                                secrets=ssh_server.key_secret(), timeout=10)
    assert result.ok and result.data["exit_status"] == 1


def test_ssh_bounds_long_output_and_says_so(ssh_server):
    result = SshConnector().run({"command": "seq 1 20000"}, target=ssh_server.target(),
                                secrets=ssh_server.key_secret(), timeout=10)
    assert result.ok and result.data["truncated"] and result.data["stdout_chars"] > 8000
    assert "[truncated:" in result.output and len(result.output) < 8200


def test_ssh_refuses_a_host_key_that_does_not_match(ssh_server):
    impostor = asyncssh.generate_private_key("ssh-ed25519")
    target = ssh_server.target(known_hosts=ssh_server.known_hosts(impostor))
    with pytest.raises(ConnectorError, match="host key mismatch"):
        SshConnector().run({"command": "echo hi"}, target=target, secrets=ssh_server.key_secret(), timeout=10)
    assert ssh_server.commands == []


def test_ssh_refuses_a_target_without_known_hosts(ssh_server):
    target = ssh_server.target()
    del target["known_hosts"]
    with pytest.raises(ConnectorError, match="refusing: no known_hosts for target"):
        SshConnector().run({"command": "echo hi"}, target=target, secrets=ssh_server.key_secret(), timeout=10)


def test_ssh_wrong_password_is_refused_not_retried_and_never_shown(ssh_server):
    with pytest.raises(ConnectorError, match="authentication failed") as failure:
        SshConnector().run({"command": "echo hi"}, target=ssh_server.target(), secrets={"password": "wrong-pass"},
                           timeout=10)
    assert "wrong-pass" not in str(failure.value)
    assert ssh_server.commands == []


def test_ssh_connection_refused_is_transient():
    port = _closed_port()
    key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    target = {"host": "127.0.0.1", "port": port, "username": "ops", "known_hosts": f"[127.0.0.1]:{port} {key}"}
    with pytest.raises(TransientError, match="could not connect"):
        SshConnector().run({"command": "echo hi"}, target=target, secrets={"password": PASSWORD}, timeout=5)


def test_ssh_a_command_outliving_its_timeout_fails_without_retry(ssh_server):
    started = time.monotonic()
    result = SshConnector().run({"command": "sh -c 'echo started; sleep 30'"}, target=ssh_server.target(),
                                secrets=ssh_server.key_secret(), timeout=1.5)
    assert time.monotonic() - started < 10
    assert not result.ok
    assert "timed out after 1.5s; the command may have partly run" in result.summary
    assert result.data["exit_status"] is None


def test_ssh_describe_names_command_and_host_without_io():
    target = {"host": "10.0.0.5", "port": 22, "username": "ops"}
    assert SshConnector().describe({"command": "sudo systemctl restart x"}, target=target) == \
        "would run `sudo systemctl restart x` on ops@10.0.0.5:22"


# --- sql: the embedded PostgreSQL ----------------------------------------------------------------------------

@pytest.fixture
def sql_target(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, status text, amount numeric, at timestamptz)")
        conn.execute("INSERT INTO orders VALUES (1, 'paid', 10.50, '2026-01-01T00:00:00Z'), "
                     "(2, 'failed', 3, NULL), (3, 'paid', 7, NULL)")
    return {"connector": "sql", "dsn": db_url}


def _count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM orders").fetchone()[0]


def test_sql_read_only_step_cannot_write(sql_target):
    result = SqlConnector().run({"query": "INSERT INTO orders VALUES (4, 'paid', 1, NULL)"}, target=sql_target,
                                secrets={}, timeout=10, read_only=True)
    assert not result.ok
    assert "read-only transaction" in result.summary and result.data["sqlstate"] == "25006"
    assert _count(sql_target["dsn"]) == 3


def test_sql_state_changing_step_commits(sql_target):
    result = SqlConnector().run({"sql": "UPDATE orders SET status = %s WHERE status = 'failed'",
                                 "params": ["retried"]}, target=sql_target, secrets={}, timeout=10, read_only=False)
    assert result.ok and result.data["rowcount"] == 1
    assert "UPDATE 1" in result.summary and "committed" in result.summary
    with psycopg.connect(sql_target["dsn"]) as conn:
        assert conn.execute("SELECT status FROM orders WHERE id = 2").fetchone()[0] == "retried"


def test_sql_select_returns_rows_columns_and_a_table(sql_target):
    result = SqlConnector().run({"query": "SELECT id, status, amount, at FROM orders ORDER BY id", "max_rows": 2},
                                target=sql_target, secrets={}, timeout=10)
    assert result.ok
    assert result.data["columns"] == ["id", "status", "amount", "at"]
    assert result.data["rows"] == [[1, "paid", "10.50", "2026-01-01T00:00:00+00:00"], [2, "failed", "3", None]]
    assert result.data["truncated"] is True and "first 2 shown" in result.summary
    json.dumps(result.data)  # what the worker stores must be JSON
    lines = result.output.splitlines()
    assert lines[0].split(" | ")[:2] == ["id", "status"] and "NULL" in lines[3]
    assert lines[-1] == "(2 rows, more not shown)"


def test_sql_error_is_a_failed_result_with_the_server_message(sql_target):
    result = SqlConnector().run({"query": "SELEC 1"}, target=sql_target, secrets={}, timeout=10)
    assert not result.ok
    assert result.summary == 'SQL error 42601: syntax error at or near "SELEC"'


def test_sql_statement_timeout_stops_the_query_at_the_server(sql_target):
    started = time.monotonic()
    result = SqlConnector().run({"query": "SELECT pg_sleep(20)"}, target=sql_target, secrets={}, timeout=0.5)
    assert time.monotonic() - started < 5
    assert not result.ok and result.summary.startswith("timed out after 0.5s (statement_timeout)")


def test_sql_unreachable_server_is_transient():
    target = {"dsn": f"postgresql://warroom@127.0.0.1:{_closed_port()}/payments"}
    with pytest.raises(TransientError, match="could not connect"):
        SqlConnector().run({"query": "SELECT 1"}, target=target, secrets={"password": "db-pass-123"}, timeout=3)


def test_sql_describe_shows_query_and_database_not_credentials():
    text = SqlConnector().describe({"query": "SELECT  count(*)\n FROM orders"},
                                   target={"dsn": "postgresql://ro:hunter22@db.internal:5432/payments"})
    assert text == "would run `SELECT count(*) FROM orders` on db.internal/payments"


# --- kubernetes: the API over real TLS -----------------------------------------------------------------------

DEPLOY = "/apis/apps/v1/namespaces/checkout/deployments/checkout-api"
POD = "/api/v1/namespaces/checkout/pods/checkout-api-6f9c7d8b5-x7k2p"


def _template(image: str, hash_: str) -> dict:
    return {"metadata": {"labels": {"app": "checkout-api", "pod-template-hash": hash_}},
            "spec": {"containers": [{"name": "api", "image": image}]}}


@pytest.fixture
def kube(tmp_path):
    with KubeStandin(tmp_path, TOKEN) as server:
        server.put(DEPLOY, {
            "kind": "Deployment", "metadata": {"name": "checkout-api", "namespace": "checkout", "uid": "d-1",
                                               "generation": 7, "annotations": {"deployment.kubernetes.io/revision": "2"}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "checkout-api"}},
                     "template": {"metadata": {"labels": {"app": "checkout-api"}},
                                  "spec": {"containers": [{"name": "api", "image": "checkout:2"}]}}},
            "status": {"readyReplicas": 3, "updatedReplicas": 3, "observedGeneration": 7,
                       "conditions": [{"type": "Available", "status": "True"}]}})
        for revision, hash_ in ((1, "aaa"), (2, "bbb")):
            server.put(f"/apis/apps/v1/namespaces/checkout/replicasets/checkout-api-{hash_}", {
                "metadata": {"name": f"checkout-api-{hash_}", "namespace": "checkout",
                             "labels": {"app": "checkout-api", "pod-template-hash": hash_},
                             "annotations": {"deployment.kubernetes.io/revision": str(revision)},
                             "ownerReferences": [{"kind": "Deployment", "uid": "d-1"}]},
                "spec": {"template": _template(f"checkout:{revision}", hash_)}})
        server.put(POD, {
            "metadata": {"name": "checkout-api-6f9c7d8b5-x7k2p", "namespace": "checkout"},
            "spec": {"nodeName": "node-3"}, "_log": ["booting", "connecting to db", "panic: pool exhausted"],
            "status": {"phase": "Running", "containerStatuses": [{
                "name": "api", "ready": False, "restartCount": 12,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}})
        yield server


def _k8s(kube, params, *, read_only=True, target=None, token=TOKEN):
    target = target or {"url": kube.url, "namespace": "checkout", "ca_cert": kube.ca_pem}
    return KubernetesConnector().run(params, target=target, secrets={"token": token}, timeout=5, read_only=read_only)


def test_k8s_get_deployment_summary_over_verified_tls(kube):
    result = _k8s(kube, {"action": "get", "kind": "deployment", "name": "checkout-api"})
    assert result.ok
    assert result.summary == "deployment checkout/checkout-api: 3/3 ready, 3 up-to-date, generation 7"
    assert kube.requests[0]["path"] == DEPLOY
    assert kube.requests[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"


def test_k8s_get_pod_says_why_it_is_not_ready(kube):
    result = _k8s(kube, {"action": "get", "kind": "pods", "name": "checkout-api-6f9c7d8b5-x7k2p"})
    assert result.ok
    assert "Running, 0/1 containers ready, 12 restarts, node node-3" in result.summary
    assert "api: waiting CrashLoopBackOff (last exit 137 OOMKilled)" in result.summary


def test_k8s_list_and_logs(kube):
    listed = _k8s(kube, {"action": "list", "kind": "replicaset", "label_selector": "app=checkout-api"})
    assert listed.ok and listed.summary == "2 replicasets in checkout"
    assert kube.requests[-1]["query"] == {"labelSelector": ["app=checkout-api"]}
    logs = _k8s(kube, {"action": "logs", "kind": "pod", "name": "checkout-api-6f9c7d8b5-x7k2p", "previous": True,
                       "tail_lines": 2})
    assert logs.ok and logs.output == "connecting to db\npanic: pool exhausted\n"
    assert kube.requests[-1]["path"] == POD + "/log"
    assert kube.requests[-1]["query"] == {"previous": ["true"], "tailLines": ["2"]}


def test_k8s_rollout_restart_sends_a_strategic_merge_patch(kube):
    result = _k8s(kube, {"action": "rollout_restart", "kind": "deployment", "name": "checkout-api"},
                  read_only=False)
    assert result.ok and "restarted deployment checkout/checkout-api" in result.summary
    patch = kube.requests[-1]
    assert patch["method"] == "PATCH" and patch["path"] == DEPLOY
    assert patch["headers"]["Content-Type"] == "application/strategic-merge-patch+json"
    body = json.loads(patch["body"])
    stamp = body["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
    assert stamp == result.data["restarted_at"] and stamp.endswith("Z")
    assert kube.objects[DEPLOY]["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT] == stamp
    assert kube.objects[DEPLOY]["spec"]["template"]["spec"]["containers"][0]["image"] == "checkout:2"


def test_k8s_scale_patches_the_scale_subresource(kube):
    result = _k8s(kube, {"action": "scale", "kind": "deployment", "name": "checkout-api", "replicas": 8},
                  read_only=False)
    assert result.ok and result.summary == "scaled deployment checkout/checkout-api from 3 to 8 replicas"
    patch = kube.requests[-1]
    assert (patch["method"], patch["path"]) == ("PATCH", DEPLOY + "/scale")
    assert patch["headers"]["Content-Type"] == "application/merge-patch+json"
    assert json.loads(patch["body"]) == {"spec": {"replicas": 8}}
    assert kube.objects[DEPLOY]["spec"]["replicas"] == 8


def test_k8s_rollout_undo_restores_the_previous_template(kube):
    result = _k8s(kube, {"action": "rollout_undo", "kind": "deployment", "name": "checkout-api"}, read_only=False)
    assert result.ok and "from revision 2 to the template of revision 1" in result.summary
    assert kube.requests[-1]["headers"]["Content-Type"] == "application/json-patch+json"
    assert kube.objects[DEPLOY]["spec"]["template"] == {
        "metadata": {"labels": {"app": "checkout-api"}}, "spec": {"containers": [{"name": "api", "image": "checkout:1"}]}}


def test_k8s_read_only_step_may_not_change_state(kube):
    with pytest.raises(ConnectorError, match="declared read_only"):
        _k8s(kube, {"action": "scale", "kind": "deployment", "name": "checkout-api", "replicas": 0})
    assert kube.requests == []


def test_k8s_wrong_token_is_refused_by_name(kube):
    with pytest.raises(ConnectorError, match=r"unauthorized \(401\)") as failure:
        _k8s(kube, {"action": "get", "kind": "deployment", "name": "checkout-api"}, token="stolen-token-xyz")
    assert "stolen-token-xyz" not in str(failure.value)


def test_k8s_a_ca_that_does_not_match_is_a_tls_refusal(kube):
    _, other_ca = make_ca("someone-else")
    target = {"url": kube.url, "namespace": "checkout", "ca_cert": pem(other_ca)}
    with pytest.raises(ConnectorError, match="TLS verification"):
        _k8s(kube, {"action": "rollout_restart", "kind": "deployment", "name": "checkout-api"}, target=target,
             read_only=False)
    assert kube.requests == []


def test_k8s_missing_object_is_a_failed_result(kube):
    result = _k8s(kube, {"action": "get", "kind": "deployment", "name": "nope"})
    assert not result.ok and "HTTP 404" in result.summary and "not found" in result.summary


def test_k8s_unreachable_api_is_transient(kube):
    target = {"url": f"https://127.0.0.1:{_closed_port()}", "ca_cert": kube.ca_pem}
    with pytest.raises(TransientError, match="cannot connect"):
        _k8s(kube, {"action": "get", "kind": "deployment", "name": "checkout-api"}, target=target)


def test_k8s_describe():
    text = KubernetesConnector().describe({"action": "scale", "kind": "deploy", "name": "checkout-api",
                                           "namespace": "checkout", "replicas": 8},
                                          target={"url": "https://k8s.internal:6443"})
    assert text == "would scale deployment checkout/checkout-api to 8 replicas via https://k8s.internal:6443"


# --- prometheus ----------------------------------------------------------------------------------------------

def test_prometheus_instant_query_summarises_series():
    with PrometheusStandin(token="prom-token-123") as prom:
        result = PrometheusConnector().run({"query": "up"}, target={"url": prom.url},
                                           secrets={"token": "prom-token-123"}, timeout=5)
    assert result.ok and result.summary == "2 series, largest last value 1"
    assert result.output.splitlines() == ['1  up{instance="10.0.0.5:9100", job="api"}',
                                          '0  up{instance="10.0.0.6:9100", job="api"}']
    assert prom.requests[0]["path"] == "/api/v1/query"
    assert prom.requests[0]["authorization"] == "Bearer prom-token-123"
    assert prom.requests[0]["query"]["timeout"] == "5000ms"


def test_prometheus_range_query_with_relative_times():
    with PrometheusStandin() as prom:
        before = time.time()
        result = PrometheusConnector().run({"query": "rate(x[5m])", "type": "range", "start": "-15m", "end": "now",
                                            "step": "1m"}, target={"url": prom.url}, secrets={}, timeout=5)
    sent = prom.requests[0]["query"]
    assert prom.requests[0]["path"] == "/api/v1/query_range"
    assert float(sent["end"]) - float(sent["start"]) == pytest.approx(900, abs=0.01)
    assert float(sent["end"]) == pytest.approx(before, abs=5) and sent["step"] == "60"
    assert result.ok and result.summary == "1 series, last value 1.5"
    assert result.output == '1.5  rate{route="/pay"}  (16 points)'


def test_prometheus_rfc3339_range_and_error_answer():
    with PrometheusStandin() as prom:
        connector = PrometheusConnector()
        connector.run({"query": "up", "type": "range", "start": "2026-11-24T10:00:00Z", "end": "2026-11-24T11:00:00Z"},
                      target={"url": prom.url}, secrets={}, timeout=5)
        failed = connector.run({"query": "bad(up"}, target={"url": prom.url}, secrets={}, timeout=5)
    start = datetime(2026, 11, 24, 10, tzinfo=timezone.utc).timestamp()
    assert prom.requests[0]["query"]["start"] == f"{start:.3f}" and prom.requests[0]["query"]["step"] == "15"
    assert not failed.ok
    assert failed.summary == 'Prometheus bad_data: invalid parameter "query": 1:5: parse error: unexpected end'


def test_prometheus_unreachable_is_transient():
    with pytest.raises(TransientError):
        PrometheusConnector().run({"query": "up"}, target={"url": f"http://127.0.0.1:{_closed_port()}"},
                                  secrets={}, timeout=2)


def test_prometheus_describe():
    assert PrometheusConnector().describe({"query": "up", "type": "range", "start": "-15m"},
                                          target={"url": "http://prom:9090/"}) == \
        "would run the range query `up` from -15m to now on http://prom:9090"


# --- http ----------------------------------------------------------------------------------------------------

def test_http_runs_and_describes(http_target):
    url = f"http://127.0.0.1:{http_target.server_address[1]}"
    result = HttpConnector().run({"path": "/health"}, target={"base_url": url}, secrets={}, timeout=5)
    assert result.ok and result.summary == f"GET {url}/health -> HTTP 200" and http_target.hits == ["/health"]
    assert HttpConnector().describe({"method": "post", "url": "http://x/y", "json": {"a": 1}, "expect_status": 202},
                                    target=None) == "would send POST http://x/y with a JSON body, expecting HTTP 202"


# --- parameter schemas ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("connector", "params", "message"), [
    ("http", {"url": "http://x", "methd": "GET"}, "http step: unknown key `methd` (allowed: method, url, path"),
    ("http", {"method": "GET"}, "give exactly one of `url` or `path`"),
    ("http", {"url": "http://x", "method": "FETCH"}, "`method`: must be one of GET"),
    ("ssh", {"cmd": "ls"}, "ssh step: unknown key `cmd`"),
    ("ssh", {}, "ssh step: `command` is required"),
    ("ssh", {"command": "ls", "expect_exit": 300}, "`expect_exit`"),
    ("sql", {"query": "select 1", "rows": 5}, "unknown key `rows` (allowed: query|sql, params, max_rows, timeout)"),
    ("sql", {}, "sql step: `query` is required"),
    ("kubernetes", {"action": "scale", "kind": "deployment", "name": "a"}, "`replicas` is required for scale"),
    ("kubernetes", {"action": "delete", "kind": "pod", "name": "a"}, "`action`"),
    ("kubernetes", {"action": "get", "kind": "secret", "name": "a"}, "unsupported kind 'secret'"),
    ("kubernetes", {"action": "rollout_restart", "kind": "pod", "name": "a"}, "rollout_restart works on"),
    ("kubernetes", {"action": "get", "kind": "pod"}, "`name` is required for get"),
    ("prometheus", {"query": "up", "start": "-5m"}, "only for type: range"),
    ("prometheus", {"query": "up", "type": "range", "start": "yesterday"}, "`start`: 'yesterday' is not RFC3339"),
    ("prometheus", {"expr": "up"}, "unknown key `expr`"),
    ("nosuch", {}, "unknown connector 'nosuch'"),
])
def test_validate_params_names_the_bad_field(connector, params, message):
    with pytest.raises(ValueError) as failure:
        validate_params(connector, params)
    assert message in str(failure.value) and "\n" not in str(failure.value)


def test_validate_params_normalises():
    assert validate_params("sql", {"sql": "select 1"}) == {"query": "select 1", "max_rows": 50}
    assert validate_params("kubernetes", {"action": "get", "kind": "Deployments", "name": "a"})["kind"] == "deployment"
    assert validate_params("http", {"url": "http://x", "method": "post", "json": {"a": 1}})["json"] == {"a": 1}


def test_connectors_refuse_invalid_params_before_any_io():
    for name in ("http", "ssh", "sql", "kubernetes", "prometheus"):
        with pytest.raises(ConnectorError, match=f"{name} step: unknown key `bogus`"):
            get(name).run({"bogus": 1}, target=None, secrets={}, timeout=1)


def test_kubernetes_actions_keep_policy_risk():
    assert minimum_risk("kubernetes", {"action": "get"}) == "read_only"
    assert minimum_risk("kubernetes", {"action": "list"}) == "read_only"
    assert minimum_risk("kubernetes", {"action": "logs"}) == "read_only"
    for action in ("rollout_restart", "rollout_undo", "scale"):
        assert minimum_risk("kubernetes", {"action": action}) == "state_change"
