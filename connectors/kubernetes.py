"""The `kubernetes` connector: the Kubernetes REST API over HTTPS with a bearer token (httpx; no kubectl).

Reads (get, list, logs) are retried on connection errors and 5xx. A write (PATCH) is retried only when it
certainly was not sent (the connection never opened): a 5xx or a read timeout after sending may have applied."""
from __future__ import annotations

import json
import ssl
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import httpx

from connectors.base import ConnectorError, StepResult, TransientError, bounded, checked
from connectors.redact import redact

MAX_OUTPUT = 6000
MAX_LISTED = 30
READ_ACTIONS = ("get", "list", "logs")
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
REVISION = "deployment.kubernetes.io/revision"
STRATEGIC = "application/strategic-merge-patch+json"
# kind -> (API prefix, resource plural, namespaced)
RESOURCES = {
    "pod": ("/api/v1", "pods", True), "service": ("/api/v1", "services", True),
    "configmap": ("/api/v1", "configmaps", True), "event": ("/api/v1", "events", True),
    "persistentvolumeclaim": ("/api/v1", "persistentvolumeclaims", True),
    "node": ("/api/v1", "nodes", False), "namespace": ("/api/v1", "namespaces", False),
    "deployment": ("/apis/apps/v1", "deployments", True), "statefulset": ("/apis/apps/v1", "statefulsets", True),
    "daemonset": ("/apis/apps/v1", "daemonsets", True), "replicaset": ("/apis/apps/v1", "replicasets", True),
    "job": ("/apis/batch/v1", "jobs", True), "cronjob": ("/apis/batch/v1", "cronjobs", True),
    "ingress": ("/apis/networking.k8s.io/v1", "ingresses", True),
    "horizontalpodautoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers", True),
}


class KubernetesConnector:
    name = "kubernetes"

    def run(self, params: dict[str, Any], *, target: dict[str, Any] | None, secrets: dict[str, str],
            timeout: float, read_only: bool = True) -> StepResult:
        p = checked(self.name, params)
        if read_only and p["action"] not in READ_ACTIONS:
            raise ConnectorError(f"{p['action']} changes state but the step is declared read_only")
        api = _Api(target, secrets, timeout)
        with api:
            return _ACTIONS[p["action"]](api, p, _namespace(p, target))

    def describe(self, params: dict[str, Any], *, target: dict[str, Any] | None) -> str:
        p = checked(self.name, params)
        url = str((target or {}).get("url") or "(no target url)")
        ns = _namespace(p, target)
        what = {"get": "read", "list": "list", "logs": "read the logs of", "rollout_restart": "rollout-restart",
                "rollout_undo": "roll back to the previous revision of", "scale": "scale"}[p["action"]]
        subject = _label(p["kind"], ns, p.get("name")) if p["action"] != "list" else \
            f"{RESOURCES[p['kind']][1]} in {ns if RESOURCES[p['kind']][2] else 'the cluster'}"
        extra = f" to {p['replicas']} replicas" if p["action"] == "scale" else ""
        if p.get("label_selector"):
            extra += f" matching {p['label_selector']}"
        return f"would {what} {subject}{extra} via {url}"


class _Api:
    """One httpx client for the target: its CA, its token, our timeout; errors classified for retrying."""

    def __init__(self, target: dict[str, Any] | None, secrets: dict[str, str], timeout: float) -> None:
        if not target or not str(target.get("url", "")).startswith("https://"):
            raise ConnectorError("kubernetes step needs a target with an https `url`")
        if not secrets.get("token"):
            raise ConnectorError("kubernetes target has no `token`")
        self.hidden = list(secrets.values())
        self.client = httpx.Client(base_url=str(target["url"]).rstrip("/"), timeout=timeout,
                                   verify=_tls(target), follow_redirects=False,
                                   headers={"Authorization": f"Bearer {secrets['token']}",
                                            "Accept": "application/json"})

    def __enter__(self) -> "_Api":
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def get(self, path: str, params: dict[str, Any] | None = None, *, text: bool = False) -> Any:
        response = self._send("GET", path, params=params)
        return response.text if text else response.json()

    def patch(self, path: str, body: Any, content_type: str) -> Any:
        return self._send("PATCH", path, content=json.dumps(body), headers={"Content-Type": content_type}).json()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        reading = method == "GET"
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            if _tls_failure(exc):
                raise ConnectorError(f"TLS verification of the API server failed: {exc}") from None
            raise TransientError(f"{method} {path}: cannot connect: {exc}") from None
        except httpx.ConnectTimeout as exc:
            raise TransientError(f"{method} {path}: connect timed out") from exc
        except httpx.HTTPError as exc:   # sent, then the answer was lost: a write may have applied
            if reading:
                raise TransientError(f"{method} {path}: {type(exc).__name__}: {exc}") from None
            raise _Failed(f"{method} {path}: {type(exc).__name__} after the request was sent; "
                          "it may have been applied") from None
        status = response.status_code
        if status in (401, 403):
            word = "unauthorized (401): the token was rejected" if status == 401 else "forbidden (403)"
            raise ConnectorError(f"{method} {path}: {word}: {redact(_message(response), self.hidden)}")
        if status >= 500 and reading:
            raise TransientError(f"{method} {path}: HTTP {status}: {_message(response)}")
        if status >= 400:
            may = "; it may have been applied" if status >= 500 else ""
            raise _Failed(f"{method} {path}: HTTP {status}: {_message(response)}{may}")
        return response


class _Failed(Exception):
    """The API answered with a definite failure (404, 409, 422, a 5xx on a write): a failed result, not retried."""


def _tls(target: dict[str, Any]) -> ssl.SSLContext | bool:
    if target.get("ca_cert"):
        try:
            return ssl.create_default_context(cadata=str(target["ca_cert"]))
        except (ssl.SSLError, ValueError):
            raise ConnectorError("target ca_cert is not a valid PEM certificate") from None
    if target.get("insecure_skip_tls_verify") is True:
        return False   # explicit opt-in in warroom.yml, as kubeconfig's insecure-skip-tls-verify
    return True


def _tls_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _message(response: httpx.Response) -> str:
    """The `message` of a Kubernetes Status object, or the start of the body."""
    try:
        return str(response.json().get("message") or response.reason_phrase)[:300]
    except (ValueError, AttributeError):
        return response.text[:300] or response.reason_phrase


def _namespace(p: dict[str, Any], target: dict[str, Any] | None) -> str:
    return p.get("namespace") or str((target or {}).get("namespace") or "default")


def _path(kind: str, namespace: str, name: str | None = None, sub: str | None = None) -> str:
    prefix, plural, namespaced = RESOURCES[kind]
    path = f"{prefix}/namespaces/{quote(namespace)}/{plural}" if namespaced else f"{prefix}/{plural}"
    if name:
        path += f"/{quote(name)}"
    return path + (f"/{sub}" if sub else "")


def _label(kind: str, namespace: str, name: str | None) -> str:
    return f"{kind} {namespace}/{name}" if RESOURCES[kind][2] else f"{kind} {name}"


def _guarded(action):
    """A definite API failure becomes a failed result."""
    def run(api: _Api, p: dict[str, Any], ns: str) -> StepResult:
        try:
            return action(api, p, ns)
        except _Failed as exc:
            return StepResult(ok=False, summary=str(exc))
    return run


# --- actions ---------------------------------------------------------------------------------------------------

@_guarded
def _get(api: _Api, p: dict[str, Any], ns: str) -> StepResult:
    obj = api.get(_path(p["kind"], ns, p["name"]))
    obj.get("metadata", {}).pop("managedFields", None)
    return StepResult(ok=True, summary=summarise(p["kind"], obj), output=bounded(json.dumps(obj, indent=1),
                                                                                MAX_OUTPUT), data={"object": obj})


@_guarded
def _list(api: _Api, p: dict[str, Any], ns: str) -> StepResult:
    query = {"labelSelector": p["label_selector"]} if p.get("label_selector") else None
    items = api.get(_path(p["kind"], ns), query).get("items") or []
    lines = [summarise(p["kind"], item) for item in items[:MAX_LISTED]]
    if len(items) > MAX_LISTED:
        lines.append(f"… and {len(items) - MAX_LISTED} more")
    where = f" in {ns}" if RESOURCES[p["kind"]][2] else ""
    names = [item.get("metadata", {}).get("name") for item in items]
    return StepResult(ok=True, summary=f"{len(items)} {RESOURCES[p['kind']][1]}{where}", output="\n".join(lines),
                      data={"names": names})


@_guarded
def _logs(api: _Api, p: dict[str, Any], ns: str) -> StepResult:
    query = {k: v for k, v in {"container": p.get("container"), "previous": "true" if p["previous"] else None,
                               "tailLines": p.get("tail_lines")}.items() if v is not None}
    text = api.get(_path("pod", ns, p["name"], "log"), query, text=True)
    which = "previous container's " if p["previous"] else ""
    return StepResult(ok=True, summary=f"{which}logs of pod {ns}/{p['name']}: {len(text.splitlines())} lines",
                      output=_tail(text, MAX_OUTPUT))


def _tail(text: str, limit: int) -> str:
    """The end of a log is where the crash is: cut from the front."""
    if len(text) <= limit:
        return text
    return f"[… {len(text) - limit} earlier characters cut]\n" + text[-limit:]


@_guarded
def _rollout_restart(api: _Api, p: dict[str, Any], ns: str) -> StepResult:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}}
    obj = api.patch(_path(p["kind"], ns, p["name"]), body, STRATEGIC)
    generation = obj.get("metadata", {}).get("generation")
    return StepResult(ok=True, summary=f"restarted {_label(p['kind'], ns, p['name'])} ({RESTARTED_AT}={now}, "
                                       f"generation {generation})", data={"restarted_at": now})


@_guarded
def _scale(api: _Api, p: dict[str, Any], ns: str) -> StepResult:
    path = _path(p["kind"], ns, p["name"], "scale")
    before = api.get(path).get("spec", {}).get("replicas")
    after = api.patch(path, {"spec": {"replicas": p["replicas"]}}, "application/merge-patch+json")
    replicas = after.get("spec", {}).get("replicas")
    return StepResult(ok=replicas == p["replicas"],
                      summary=f"scaled {_label(p['kind'], ns, p['name'])} from {before} to {replicas} replicas",
                      data={"previous_replicas": before, "replicas": replicas})


@_guarded
def _rollout_undo(api: _Api, p: dict[str, Any], ns: str) -> StepResult:
    """What `kubectl rollout undo` does client-side: put the previous ReplicaSet's pod template back."""
    deployment = api.get(_path("deployment", ns, p["name"]))
    meta = deployment.get("metadata", {})
    current = int(meta.get("annotations", {}).get(REVISION, 0))
    selector = deployment.get("spec", {}).get("selector", {}).get("matchLabels") or {}
    query = {"labelSelector": ",".join(f"{k}={v}" for k, v in sorted(selector.items()))} if selector else None
    owned = [rs for rs in api.get(_path("replicaset", ns), query).get("items") or []
             if any(ref.get("uid") == meta.get("uid") for ref in rs.get("metadata", {}).get("ownerReferences", []))]
    older = sorted((int(rs["metadata"].get("annotations", {}).get(REVISION, 0)), rs) for rs in owned
                   if int(rs["metadata"].get("annotations", {}).get(REVISION, 0)) < current)
    if not older:
        return StepResult(ok=False, summary=f"deployment {ns}/{p['name']}: no previous revision to roll back to "
                                            f"(current revision {current})")
    revision, previous = older[-1][0], older[-1][1]
    template = json.loads(json.dumps(previous["spec"]["template"]))
    template.get("metadata", {}).get("labels", {}).pop("pod-template-hash", None)
    # The test op makes the API refuse (409/422) if the deployment changed since we read it.
    patch = [{"op": "test", "path": "/metadata/resourceVersion", "value": meta.get("resourceVersion")},
             {"op": "replace", "path": "/spec/template", "value": template}]
    api.patch(_path("deployment", ns, p["name"]), patch, "application/json-patch+json")
    return StepResult(ok=True, summary=f"rolled back deployment {ns}/{p['name']} from revision {current} to the "
                                       f"template of revision {revision}", data={"to_revision": revision})


_ACTIONS = {"get": _get, "list": _list, "logs": _logs, "rollout_restart": _rollout_restart, "scale": _scale,
            "rollout_undo": _rollout_undo}


# --- what an SRE wants to read ---------------------------------------------------------------------------------

def summarise(kind: str, obj: dict[str, Any]) -> str:
    meta, spec, status = obj.get("metadata", {}), obj.get("spec", {}), obj.get("status", {})
    label = _label(kind, meta.get("namespace", ""), meta.get("name"))
    if kind in ("deployment", "statefulset", "replicaset"):
        want = spec.get("replicas", 1)
        text = (f"{label}: {status.get('readyReplicas', 0)}/{want} ready, {status.get('updatedReplicas', 0)} "
                f"up-to-date, generation {meta.get('generation')}")
        if status.get("observedGeneration") not in (None, meta.get("generation")):
            text += f" (controller has seen {status['observedGeneration']}: rollout pending)"
        unhealthy = [f"{c['type']}={c['status']} ({c.get('reason', '')})" for c in status.get("conditions", [])
                     if c.get("status") != "True"]
        return text + (f"; {'; '.join(unhealthy)}" if unhealthy else "")
    if kind == "daemonset":
        return (f"{label}: {status.get('numberReady', 0)}/{status.get('desiredNumberScheduled', 0)} ready, "
                f"{status.get('updatedNumberScheduled', 0)} up-to-date, generation {meta.get('generation')}")
    if kind == "pod":
        containers = status.get("containerStatuses", [])
        ready = sum(1 for c in containers if c.get("ready"))
        restarts = sum(c.get("restartCount", 0) for c in containers)
        text = (f"{label}: {status.get('phase', 'Unknown')}, {ready}/{len(containers)} containers ready, "
                f"{restarts} restarts, node {spec.get('nodeName', '-')}")
        for c in containers:
            waiting = c.get("state", {}).get("waiting")
            last = c.get("lastState", {}).get("terminated")
            if waiting:
                text += f"; {c.get('name')}: waiting {waiting.get('reason', '')}"
                if last:
                    text += f" (last exit {last.get('exitCode')} {last.get('reason', '')})".rstrip()
        return text
    return f"{label} (created {meta.get('creationTimestamp', '?')})"
