"""parse_integration_message over Slack messages built from each integration's public templates and real alert
content. tests/fixtures/slack_integrations/README.md records where every fixture's shape comes from."""
from __future__ import annotations

import copy
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from bot.slack import integrations
from bot.slack.integrations import MAX_ALERTS, MAX_NAME, parse_integration_message, severity_of
from engine.alerts import fingerprint_of

FIXTURES = Path(__file__).parent / "fixtures" / "slack_integrations"
CORPORA = Path(__file__).resolve().parent.parent.parent / "shared" / "corpora"


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())["event"]


def fp(source: str, **identity: str) -> str:
    """How non-Alertmanager fingerprints are derived: source plus the identity the message states."""
    return fingerprint_of({"__source__": source, **identity})


AM_GRAPH = ("http://robusta-kube-prometheus-st-prometheus.default:9090/graph?g0.expr=max_over_time%28kube_pod_container_"
            "status_waiting_reason%7Bjob%3D%22kube-state-metrics%22%2Cnamespace%3D~%22.%2A%22%2Creason%3D%22"
            "CrashLoopBackOff%22%7D%5B5m%5D%29+%3E%3D+1&g0.tab=1")
AM_RUNBOOK = "https://runbooks.prometheus-operator.dev/runbooks/kubernetes/kubepodcrashlooping"
AM_UI = "http://robusta-kube-prometheus-st-alertmanager.default:9093/#/alerts?receiver=slack-notifications"
AM_LINKS = [("Source", AM_GRAPH), ("Runbook", AM_RUNBOOK), ("Alertmanager", AM_UI)]
POD_1, POD_2 = "payment-processing-worker-747ccfb9db-pd6wz", "payment-processing-worker-747ccfb9db-x7k2q"
# The first pod's labels are a real kube-prometheus alert whose Alertmanager fingerprint is a38bd979bba359db
# (webhooks/alertmanager/holmesgpt-issue-data/11_KubePodCrashLooping.issue_data.json).
AM_FP_1, AM_FP_2 = "a38bd979bba359db", "673cf76c00fa00ae"

G_SOURCE = "https://play.grafana.org/alerting/grafana/dd2f0260-3cfc-4c65-a4c4-f3f632c551f4/view?orgId=1"
G_LINKS = [
    ("Source", G_SOURCE),
    ("Silence", "https://play.grafana.org/alerting/silence/new?alertmanager=grafana&matcher=alertname%3DMemory+%28copy%29"
                "&matcher=debug%3Dtrue&matcher=grafana_folder%3Ddevice&orgId=1"),
    ("Dashboard", "https://play.grafana.org/d/ece9fb32-7f71-4be9-bd94-2f23608ae5b9?orgId=1"),
    ("Panel", "https://play.grafana.org/d/ece9fb32-7f71-4be9-bd94-2f23608ae5b9?orgId=1&viewPanel=2"),
]
G_LABELS = {"alertname": "Memory (copy)", "debug": "true", "grafana_folder": "device"}

PD_LINKS = [("Source", "https://harsh0303.pagerduty.com/incidents/Q3B15VLMF3ASBD")]
PD_LABELS = {"incident_number": "5", "incident_id": "Q3B15VLMF3ASBD", "account": "harsh0303", "priority": "P1",
             "urgency": "high", "assignee": "Harsh Santwani", "escalation_policy": "Default"}

DD_MONITOR = ("https://app.datadoghq.com/monitors/134462228?group=service%3Akeep-api&from_ts={}&to_ts={}"
              "&event_id={}&link_source=monitor_notif")
DD_EDIT = "https://app.datadoghq.com/monitors/134462228/edit?link_source=monitor_notif"
DD_QUERY = ("https://app.datadoghq.com/logs/analytics?query=%40http.status_code%3A%28401+OR+403%29&agg_m=count"
            "&agg_t=count&agg_q=service&index=%2A")
DD_LOGS = ("https://app.datadoghq.com/logs/analytics?query=%40http.status_code%3A%28401+OR+403%29&from_ts={}&to_ts={}"
           "&live=false&agg_m=count&agg_t=count&agg_q=service&index=%2A&link_source=monitor_notif")
DD_LABELS = {"environment": "production", "service": "keep-api", "monitor_id": "134462228", "priority": "P2",
             "group": "service:keep-api"}

OG_LINKS = [("Source", "https://acme.app.opsgenie.com/alert/detail/ec03dad6-62c8-4c94-b38b-d88f398e900f/details")]
OG_LABELS = {"tiny_id": "2", "alert_id": "ec03dad6-62c8-4c94-b38b-d88f398e900f", "priority": "P3", "tags": "vip",
             "entity": "Server", "opsgenie_source": "test@example.com"}


def _am(status: str, pod: str, fingerprint: str) -> dict:
    return dict(source="alertmanager", status=status, name="KubePodCrashLooping", severity="warning",
                service="robusta-kube-state-metrics", environment=None, fingerprint=fingerprint,
                summary="Pod is crash looping.",
                description=f'Pod default/{pod} (payment-processing-container) is in waiting state '
                            f'(reason: "CrashLoopBackOff").',
                group_key="KubePodCrashLooping default", starts_at=None, links=AM_LINKS,
                labels={"alertname": "KubePodCrashLooping", "container": "payment-processing-container",
                        "endpoint": "http", "instance": "10.244.0.3:8080", "job": "kube-state-metrics",
                        "namespace": "default", "pod": pod,
                        "prometheus": "default/robusta-kube-prometheus-st-prometheus", "reason": "CrashLoopBackOff",
                        "service": "robusta-kube-state-metrics", "severity": "warning",
                        "uid": {POD_1: "b9cc2b01-9250-4360-941f-40e522628f6c",
                                POD_2: "3f1d6a2e-8c4b-4e0f-9d7a-5b2c1e8f0a96"}[pod]})


def _grafana(status: str) -> dict:
    return dict(source="grafana", status=status, name="Memory (copy)", severity="unknown", service=None,
                environment=None, fingerprint=fp("grafana", **G_LABELS), summary="High memory usage",
                description="", group_key="Memory (copy) device", starts_at=None, links=G_LINKS, labels=G_LABELS,
                annotations={"summary": "High memory usage"})


def _pagerduty(status: str, state: str) -> dict:
    return dict(source="pagerduty", status=status, name="Critical: Checkout API High Latency", severity="critical",
                service="Default Service", environment=None, fingerprint=fp("pagerduty", incident="5"),
                summary="Critical: Checkout API High Latency", starts_at=None, links=PD_LINKS,
                labels={**PD_LABELS, "state": state})


def _datadog(status: str, name: str, transition: str, started: datetime, event: str, monitor: tuple, logs: tuple,
             first_logs: str | None) -> dict:
    links = [("Source", f"https://app.datadoghq.com/event/event?id={event}")]
    if first_logs:
        links.append(("Link", first_logs))
    links += [("@http.status_code:(401 OR 403)", DD_QUERY), ("Monitor Status", DD_MONITOR.format(*monitor)),
              ("Edit Monitor", DD_EDIT), ("Related Logs", DD_LOGS.format(*logs))]
    return dict(source="datadog", status=status, name=name, severity="high", service="keep-api",
                environment="production", fingerprint=fp("datadog", monitor_id="134462228", group="service:keep-api"),
                summary=name, starts_at=started, links=links, labels={**DD_LABELS, "transition": transition})


def _opsgenie(status: str, state: str) -> dict:
    return dict(source="opsgenie", status=status, name="another alert", severity="medium", service=None,
                environment=None, fingerprint=fp("opsgenie", tiny_id="2"), summary="another alert", starts_at=None,
                links=OG_LINKS, labels={**OG_LABELS, "state": state})


EXPECTED: dict[str, list[dict]] = {
    "alertmanager_firing_grouped.json": [_am("firing", POD_1, AM_FP_1), _am("firing", POD_2, AM_FP_2)],
    "alertmanager_firing_grouped_repeat.json": [_am("firing", POD_1, AM_FP_1), _am("firing", POD_2, AM_FP_2)],
    "alertmanager_resolved_grouped.json": [_am("resolved", POD_1, AM_FP_1), _am("resolved", POD_2, AM_FP_2)],
    "alertmanager_firing_default_template.json": [dict(
        source="alertmanager", status="firing", name="High CPU Temperature", severity="critical", service=None,
        environment=None, fingerprint=fp("alertmanager", group="High CPU Temperature critical"),
        summary="High CPU Temperature", description="", group_key="High CPU Temperature critical", starts_at=None,
        links=[("Source", "http://ops1:9093/#/alerts?receiver=ops-slack")], labels={"severity": "critical"})],
    "grafana_firing.json": [_grafana("firing")],
    "grafana_resolved.json": [_grafana("resolved")],
    "pagerduty_triggered.json": [_pagerduty("firing", "triggered")],
    "pagerduty_acknowledged.json": [_pagerduty("firing", "acknowledged")],
    "pagerduty_resolved.json": [_pagerduty("resolved", "resolved")],
    "datadog_triggered.json": [_datadog(
        "firing", "Unauthorized access to API keep-api", "Triggered", datetime(2024, 12, 11, 15, 24, 8, tzinfo=timezone.utc),
        "7879719351243698466", ("1733929748000", "1733930948000", "7879719351243698466"),
        ("1733930348000", "1733930648000"),
        "https://app.datadoghq.com/logs/analytics?query=%40http.status_code%3A%28401+OR+403%29&from_ts=1733930348000"
        "&to_ts=1733930648000&live=false&agg_m=count&agg_t=count&agg_q=service&index=%2A&event=AwAAAZO2UazNewhzMQAAA"
        "BhBWk8yVWFfSUFBQUtSTVFERHFvenF3QUEAAAAkMDE5M2I2NTEtYzYzNi00MDYyLThhMzAtYTMyZTEyNzY3ZWM2AABZ8g")],
    "datadog_recovered.json": [_datadog(
        "resolved", "Unauthorized access to API", "Recovered", datetime(2024, 12, 11, 15, 18, 8, tzinfo=timezone.utc),
        "7879718351573282995", ("1733929688000", "1733930888000", "7879718351573282995"),
        ("1733930288000", "1733930588000"), None)],
    "opsgenie_created.json": [_opsgenie("firing", "open")],
    "opsgenie_closed.json": [_opsgenie("resolved", "closed")],
}
NEGATIVES = ["human_message.json", "unrelated_bot_message.json", "empty_attachments.json"]
PAIRS = [  # (firing notification, later notification of the same alert(s), status it must carry)
    ("alertmanager_firing_grouped.json", "alertmanager_resolved_grouped.json", "resolved"),
    ("grafana_firing.json", "grafana_resolved.json", "resolved"),
    ("pagerduty_triggered.json", "pagerduty_acknowledged.json", "firing"),
    ("pagerduty_triggered.json", "pagerduty_resolved.json", "resolved"),
    ("datadog_triggered.json", "datadog_recovered.json", "resolved"),
    ("opsgenie_created.json", "opsgenie_closed.json", "resolved"),
]


def test_every_fixture_is_checked():
    assert {p.name for p in FIXTURES.glob("*.json")} == set(EXPECTED) | set(NEGATIVES)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_parses_to_the_stated_alerts(name):
    alerts = parse_integration_message(load(name))
    expected = EXPECTED[name]
    assert len(alerts) == len(expected)
    for alert, want in zip(alerts, expected):
        got = alert.model_dump()
        for key, value in want.items():
            if key == "links":
                assert [(link.title, link.url) for link in alert.links] == value
            else:
                assert got[key] == value, key


@pytest.mark.parametrize("name", NEGATIVES)
def test_not_an_integration_alert_gives_nothing(name):
    assert parse_integration_message(load(name)) == []


@pytest.mark.parametrize("first, later, status", PAIRS)
def test_later_notifications_keep_the_fingerprint(first, later, status):
    before, after = parse_integration_message(load(first)), parse_integration_message(load(later))
    assert [a.fingerprint for a in after] == [a.fingerprint for a in before]
    assert {a.status for a in before} == {"firing"}
    assert {a.status for a in after} == {status}


def test_a_repeat_notification_is_the_same_alerts():
    first = parse_integration_message(load("alertmanager_firing_grouped.json"))
    repeat = parse_integration_message(load("alertmanager_firing_grouped_repeat.json"))
    assert repeat == first


def test_fingerprints_do_not_depend_on_the_slack_timestamps():
    event = load("grafana_firing.json")
    moved = copy.deepcopy(event)
    moved["ts"] = moved["event_ts"] = "1999999999.999999"
    moved["attachments"][0]["ts"] = 1999999999
    assert parse_integration_message(moved)[0].fingerprint == parse_integration_message(event)[0].fingerprint


def test_different_alerts_have_different_fingerprints():
    firing = [n for n in EXPECTED if "resolved" not in n and "recovered" not in n and "closed" not in n
              and "acknowledged" not in n and "repeat" not in n]
    fingerprints = [a.fingerprint for name in firing for a in parse_integration_message(load(name))]
    assert len(fingerprints) == 7          # 2 Alertmanager pods, 1 Alertmanager group, 1 each for the others
    assert len(set(fingerprints)) == len(fingerprints)


def test_alertmanager_fingerprint_is_the_one_its_webhook_sends():
    issue = CORPORA / "webhooks/alertmanager/holmesgpt-issue-data/11_KubePodCrashLooping.issue_data.json"
    raw = json.loads(issue.read_text())["raw"]
    alert = parse_integration_message(load("alertmanager_firing_grouped.json"))[0]
    assert alert.labels == raw["labels"]
    assert alert.fingerprint == raw["fingerprint"]


def _renamed(event: dict) -> dict:
    event = copy.deepcopy(event)
    message = event.get("message", event)
    message["username"] = "ops-notifier"
    message["app_id"] = "A0UNKNOWN01"
    if isinstance(message.get("bot_profile"), dict):
        message["bot_profile"].update(name="ops-notifier", app_id="A0UNKNOWN01")
    return event


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_detected_by_shape_when_the_bot_is_renamed(name):
    renamed = parse_integration_message(_renamed(load(name)))
    original = parse_integration_message(load(name))
    assert [(a.source, a.fingerprint, a.status) for a in renamed] == [(a.source, a.fingerprint, a.status)
                                                                       for a in original]


def _bot(*, name: str = "notifier", app_id: str = "A0SOMEAPP01", ts: str = "1700000000.000100", **fields) -> dict:
    return {"type": "message", "user": "U0BOT000001", "bot_id": "B0SOMEBOT01", "app_id": app_id, "ts": ts,
            "bot_profile": {"id": "B0SOMEBOT01", "name": name, "app_id": app_id}, "channel": "C0ALERTS",
            "event_ts": ts, "channel_type": "channel", "text": "", **fields}


def test_a_configured_app_id_names_the_integration(monkeypatch):
    bare = _bot(attachments=[{"title": "#2: another alert", "text": "New alert created"}])
    assert parse_integration_message(bare) == []            # a bare "#n: title" could be a pull request
    monkeypatch.setitem(integrations.APP_IDS, "A0SOMEAPP01", "opsgenie")
    [alert] = parse_integration_message(bare)
    assert (alert.source, alert.name, alert.status, alert.fingerprint) == (
        "opsgenie", "another alert", "firing", fp("opsgenie", tiny_id="2"))


def test_grafana_message_as_its_own_tests_expect_it():
    # receivers/slack/v1/slack_test.go, "Message is sent": the attachment Grafana sends, verbatim.
    text = ("**Firing**\n\nValue: [no value]\nLabels:\n - alertname = alert1\n - lbl1 = val1\nAnnotations:\n - ann1 = annv1\n"
            "Silence: http://localhost/alerting/silence/new?alertmanager=grafana&amp;matcher=alertname%3Dalert1&amp;"
            "matcher=lbl1%3Dval1\n")
    event = _bot(subtype="bot_message", username="Grafana", attachments=[{
        "title": "[FIRING:1]  (val1)", "title_link": "http://localhost/alerting/list", "text": text,
        "fallback": "[FIRING:1]  (val1)", "footer": "Grafana v1234.0.0",
        "footer_icon": "https://grafana.com/static/assets/img/fav32.png", "color": "#D63232", "ts": 1700000000}])
    [alert] = parse_integration_message(_renamed(event))
    assert (alert.source, alert.status, alert.name) == ("grafana", "firing", "alert1")
    assert alert.labels == {"alertname": "alert1", "lbl1": "val1"}
    assert alert.annotations == {"ann1": "annv1"}
    assert [(link.title, link.url) for link in alert.links] == [
        ("Silence", "http://localhost/alerting/silence/new?alertmanager=grafana&matcher=alertname%3Dalert1"
                    "&matcher=lbl1%3Dval1"),
        ("Source", "http://localhost/alerting/list")]


def test_grafana_mixed_group_gives_each_alert_its_own_status():
    text = ("**Firing**\n\nValue: B=92\nLabels:\n - alertname = HighCPU\n - instance = web-1\n - severity = critical\n"
            "Annotations:\n - summary = CPU above 90%\n\n\n**Resolved**\n\nValue: B=12\nLabels:\n - alertname = HighCPU\n"
            " - instance = web-2\n - severity = critical\nAnnotations:\n - summary = CPU above 90%\n")
    event = _bot(name="Grafana", attachments=[{"title": "[FIRING:1, RESOLVED:1] HighCPU (critical)", "text": text,
                                               "footer": "Grafana v11.3.0", "color": "#D63232"}])
    alerts = parse_integration_message(event)
    assert [(a.source, a.labels["instance"], a.status, a.severity) for a in alerts] == [
        ("grafana", "web-1", "firing", "critical"), ("grafana", "web-2", "resolved", "critical")]
    assert alerts[0].fingerprint != alerts[1].fingerprint


def test_alertmanager_text_alert_list_gives_one_alert_each():
    # A receiver with text: '{{ template "__text_alert_list" .Alerts }}' (Alertmanager's default.tmpl).
    labels = {"alertname": "KubePodCrashLooping", "container": "payment-processing-container", "endpoint": "http",
              "instance": "10.244.0.3:8080", "job": "kube-state-metrics", "namespace": "default", "pod": POD_1,
              "prometheus": "default/robusta-kube-prometheus-st-prometheus", "reason": "CrashLoopBackOff",
              "service": "robusta-kube-state-metrics", "severity": "warning",
              "uid": "b9cc2b01-9250-4360-941f-40e522628f6c"}
    first = "".join(f" - {k} = {v}\n" for k, v in sorted(labels.items()))
    text = (f"Labels:\n{first}Annotations:\n - runbook_url = {AM_RUNBOOK}\n - summary = Pod is crash looping.\n"
            f"Source: {AM_GRAPH.replace('&', '&amp;')}\n"
            "Labels:\n - alertname = KubePodNotReady\n - namespace = default\n"
            " - pod = user-profile-resources-659d4dd659-cq4kq\n - severity = warning\n"
            "Annotations:\n - summary = Pod has been in a non-ready state for more than 15 minutes.\n"
            "Source: http://prometheus:9090/graph?g0.expr=kube_pod_status_phase\n")
    event = _bot(subtype="bot_message", username="prometheus", attachments=[{
        "title": "[FIRING:2]  (default warning)", "title_link": "http://am:9093/#/alerts?receiver=slack",
        "text": text, "color": "danger"}])
    crash, not_ready = parse_integration_message(event)
    assert (crash.name, crash.fingerprint, crash.summary) == ("KubePodCrashLooping", AM_FP_1, "Pod is crash looping.")
    assert [(link.title, link.url) for link in crash.links] == [("Source", AM_GRAPH), ("Runbook", AM_RUNBOOK),
                                                        ("Alertmanager", "http://am:9093/#/alerts?receiver=slack")]
    assert (not_ready.name, not_ready.labels["pod"], not_ready.service) == (
        "KubePodNotReady", "user-profile-resources-659d4dd659-cq4kq", None)
    assert not_ready.links[0].url == "http://prometheus:9090/graph?g0.expr=kube_pod_status_phase"


@pytest.mark.parametrize("status", ["firing", "resolved"])
def test_alertmanager_common_annotations_text_gives_the_group(status):
    # prometheus/docs notification_examples.md: text "<!channel> \nsummary: ...\ndescription: ..."
    prefix = "[FIRING:1]" if status == "firing" else "[RESOLVED]"
    event = _bot(subtype="bot_message", username="AlertManager", attachments=[{
        "title": f"{prefix} InstanceDown (localhost:9100 node page)",
        "title_link": "http://am:9093/#/alerts?receiver=team-x", "color": "danger" if status == "firing" else "good",
        "text": "<!channel> \nsummary: Instance localhost:9100 down\n"
                "description: localhost:9100 of job node has been down for more than 5 minutes."}])
    [alert] = parse_integration_message(event)
    assert (alert.status, alert.name, alert.severity, alert.summary) == (
        status, "InstanceDown", "page", "Instance localhost:9100 down")
    assert alert.description == "localhost:9100 of job node has been down for more than 5 minutes."
    assert alert.fingerprint == fp("alertmanager", group="InstanceDown")


def test_alertmanager_stated_start_time():
    # A common custom text: "*Start Time:* {{ .StartsAt }}" prints Go's time format.
    text = ("*Alert:* Disk almost full - `critical`\n*Start Time:* 2024-11-29 08:40:57.669 +0000 UTC\n*Details:*\n"
            " • *alertname:* `DiskFull`\n • *instance:* `db-1:9100`\n • *severity:* `critical`\n")
    [alert] = parse_integration_message(_bot(subtype="bot_message", username="AlertManager",
                                             attachments=[{"title": "[FIRING:1] DiskFull", "text": text}]))
    assert (alert.name, alert.summary, alert.severity) == ("DiskFull", "Disk almost full", "critical")
    assert alert.starts_at == datetime(2024, 11, 29, 8, 40, 57, 669000, tzinfo=timezone.utc)
    assert alert.labels == {"alertname": "DiskFull", "instance": "db-1:9100", "severity": "critical"}


def test_alertmanager_title_with_environment_and_custom_username():
    event = _bot(subtype="bot_message", username="k8s-alerts", attachments=[{
        "title": "[FIRING:3] HighErrorRate checkout (production critical)", "text": ""}])
    [alert] = parse_integration_message(event)
    assert (alert.source, alert.name, alert.severity, alert.environment, alert.group_key) == (
        "alertmanager", "HighErrorRate checkout", "critical", "production", "HighErrorRate checkout")


def test_an_alert_with_only_a_title_is_not_dropped():
    [am] = parse_integration_message(_bot(subtype="bot_message", username="AlertManager",
                                          attachments=[{"title": "[FIRING:1] DiskFull"}]))
    assert (am.source, am.name, am.status, am.links) == ("alertmanager", "DiskFull", "firing", [])
    [dd] = parse_integration_message(_bot(name="Datadog", attachments=[{"title": "[P1] [Triggered] Disk full on db-1"}]))
    assert (dd.source, dd.name, dd.status, dd.severity) == ("datadog", "Disk full on db-1", "firing", "critical")
    assert dd.fingerprint == fp("datadog", name="Disk full on db-1")


def test_datadog_colon_titles():
    monitor = "<https://app.datadoghq.com/monitors/42?group=env%3Aprod|Monitor Status>"
    fired = parse_integration_message(_bot(attachments=[{
        "title": "Triggered: [P1] High error rate on checkout", "text": f"Error rate 7%\n{monitor}"}]))
    recovered = parse_integration_message(_bot(attachments=[{
        "title": "Recovered: [P1] High error rate on checkout", "text": f"Error rate 0.2%\n{monitor}"}]))
    assert [(a.source, a.status, a.severity, a.name, a.environment) for a in fired + recovered] == [
        ("datadog", "firing", "critical", "High error rate on checkout", "production"),
        ("datadog", "resolved", "critical", "High error rate on checkout", "production")]
    assert fired[0].fingerprint == recovered[0].fingerprint == fp("datadog", monitor_id="42", group="env:prod")


def test_datadog_scope_title_without_priority():
    [alert] = parse_integration_message(_bot(name="Datadog", attachments=[{
        "title": "[Triggered on {host:web-01,env:staging}] CPU high", "color": "danger"}]))
    assert (alert.name, alert.severity, alert.environment) == ("CPU high", "unknown", "staging")
    assert alert.labels["host"] == "web-01"
    assert alert.labels["group"] == "host:web-01,env:staging"


def test_an_alertmanager_named_bot_without_a_title_is_not_an_alert():
    chatter = _bot(subtype="bot_message", username="AlertManager", text="Alertmanager restarted, config reloaded")
    assert parse_integration_message(chatter) == []


def test_a_plain_triggered_word_is_not_datadog():
    ci = _bot(name="ci-bot", attachments=[{"title": "Triggered: deploy pipeline #42", "color": "good"}])
    assert parse_integration_message(ci) == []


def test_opsgenie_alert_created_by_alertmanager_is_opsgenie():
    event = _bot(name="Opsgenie", attachments=[{
        "pretext": "Alert closed by Alertmanager", "title": "#23: [FIRING:1] KubePodNotReady default (warning)",
        "title_link": "https://acme.app.opsgenie.com/alert/detail/052652ac-5d1c-464a-812a-7dd18bbfba8c/details",
        "fields": [{"title": "Priority", "value": "P2"}, {"title": "Tags", "value": "env:staging, service:web"}]}])
    [alert] = parse_integration_message(event)
    assert (alert.source, alert.status, alert.name, alert.severity, alert.service, alert.environment) == (
        "opsgenie", "resolved", "[FIRING:1] KubePodNotReady default (warning)", "high", "web", "staging")
    assert alert.fingerprint == fp("opsgenie", tiny_id="23")


def test_pagerduty_notice_naming_no_incident_gives_nothing():
    notice = _bot(name="PagerDuty", text="Acknowledged by <@U0HARSH001>")
    assert parse_integration_message(notice) == []


def test_pagerduty_card_in_plain_text():
    event = _bot(name="PagerDuty", text=":large_green_circle: Resolved: <https://acme.eu.pagerduty.com/incidents/"
                                        "Q1ABCDEF|#1234 Disk full on db-1> · Urgency: Low")
    [alert] = parse_integration_message(event)
    assert (alert.status, alert.name, alert.severity, alert.fingerprint) == (
        "resolved", "Disk full on db-1", "low", fp("pagerduty", incident="1234"))


def test_thread_replies_are_not_announcements():
    reply = load("pagerduty_triggered.json")
    reply["thread_ts"] = "1775009000.000100"
    assert parse_integration_message(reply) == []


def test_a_deleted_message_gives_nothing():
    assert parse_integration_message({"type": "message", "subtype": "message_deleted", "channel": "C0ALERTS",
                                      "deleted_ts": "1775009251.000300", "previous_message": load(
                                          "pagerduty_triggered.json")}) == []


def test_links_are_unwrapped_and_unescaped():
    [alert] = parse_integration_message(load("datadog_triggered.json"))
    assert all("&amp;" not in link.url and "|" not in link.url for link in alert.links)
    assert "<http" not in alert.description and "&amp;" not in alert.description
    assert "@http.status_code:(401 OR 403)" in alert.description


_BOT = {"type": "message", "subtype": "bot_message", "username": "AlertManager", "bot_id": "B0ALERTMGR1",
        "ts": "1700000000.000100"}


@pytest.mark.parametrize("event", [
    None, "message", 42, [], {}, {"type": "message"}, {"type": "message", "text": None},
    {**_BOT, "attachments": "[FIRING:1] x"}, {**_BOT, "attachments": {"title": "[FIRING:1] x"}},
    {**_BOT, "attachments": None, "text": None, "blocks": None},
    {**_BOT, "attachments": [None, 5, "x", [], {}]},
    {**_BOT, "attachments": [{"title": None, "text": None, "fields": "x", "actions": 5, "blocks": "x"}]},
    {**_BOT, "blocks": [None, 1, {"type": "section", "text": None, "fields": [None, 3]}, {"type": "rich_text",
                                                                                          "elements": "x"}]},
    {"type": "message", "subtype": "message_changed", "message": None},
    {"type": "message", "subtype": "message_changed", "message": "x"},
    {"type": "message", "bot_id": "B1", "bot_profile": "PagerDuty", "username": 5, "text": ["x"]},
    {"type": "message", "bot_id": "B1", "bot_profile": {"name": None}, "attachments": [{"title": 12345}]},
])
def test_odd_input_gives_nothing_and_never_raises(event):
    assert parse_integration_message(event) == []


def test_odd_fields_inside_a_real_alert_still_give_the_alert():
    event = load("pagerduty_triggered.json")
    event["attachments"][0]["blocks"].insert(0, None)
    event["attachments"][0]["blocks"][2]["fields"].append({"type": "mrkdwn", "text": None})
    event["attachments"].append("garbage")
    [alert] = parse_integration_message(event)
    assert (alert.name, alert.fingerprint) == ("Critical: Checkout API High Latency", fp("pagerduty", incident="5"))


def test_huge_texts_are_handled_quickly():
    noise = "x" * 10_000
    many = "".join(f"Labels:\n - alertname = A{i}\n - pod = p{i}\n" for i in range(3_000))
    events = [
        _bot(subtype="bot_message", username="AlertManager", attachments=[{"title": "[FIRING:1] Big", "text": noise}]),
        _bot(subtype="bot_message", username="AlertManager", attachments=[{"title": "[FIRING:1] " + noise}]),
        _bot(subtype="bot_message", username="AlertManager", attachments=[{"title": "[FIRING:3000] Many",
                                                                          "text": many}]),
        _bot(name="PagerDuty", text=noise + " <https://a.pagerduty.com/incidents/Q1|#7 " + noise + ">"),
        _bot(name="Datadog", attachments=[{"title": "[Triggered] " + "(" * 10_000, "text": "<" * 10_000}]),
    ]
    started = time.monotonic()
    results = [parse_integration_message(event) for event in events]
    assert time.monotonic() - started < 5
    assert [(a.name, a.status) for a in results[0]] == [("Big", "firing")]
    assert len(results[1]) == 1 and results[1][0].name.startswith("xxx") and len(results[1][0].name) == MAX_NAME
    assert len(results[2]) == MAX_ALERTS and results[2][0].name == "A0"
    assert results[3][0].fingerprint == fp("pagerduty", incident="7")
    assert results[4][0].source == "datadog"


@pytest.mark.parametrize("value, severity", [
    ("P1", "critical"), ("p2", "high"), ("P3", "medium"), ("P4", "low"), ("P5", "info"), ("SEV-1", "critical"),
    ("sev2", "high"), ("CRIT", "critical"), ("Critical", "critical"), ("warn", "warning"), ("High", "high"),
    ("error", "error"), ("page", "page"), ("", None), ("banana", None), (None, None),
])
def test_severity_words_and_priorities(value, severity):
    assert severity_of(value) == severity
