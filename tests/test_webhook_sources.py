"""Every alert webhook format, from the real public samples in ../shared/corpora/webhooks, normalised to one
`Alert`; detection of each sample; field-naming refusals; and the hooks of a real `warroom serve`."""
import copy
import hashlib
import hmac
import json
import os
from datetime import datetime, timezone

import psycopg
import pytest

from engine.alerts import AlertFormatError, decode, detect_source, normalise
from tests.conftest import CORPORA, EXAMPLES, TEMPLATE, warroom
from tests.served import Served

HOOKS = CORPORA / "webhooks"
PD_SECRET = "pd-subscription-secret"


def load(rel: str):
    return json.loads((HOOKS / rel).read_text())


def one(rel: str):
    alerts = normalise(load(rel))
    assert len(alerts) == 1
    return alerts[0]


def links(alert) -> dict[str, str]:
    return {link.title: link.url for link in alert.links}


# Every webhook body in the corpus with the format it must be detected as (holmesgpt issue_data are API alerts
# wrapped by another tool, not webhook bodies; the Datadog template is a template: tested apart).
SAMPLES = {
    **{f"alertmanager/{p}": "alertmanager" for p in (
        "zulip/alert.json", "zulip/single_alert.json", "prometheus-msteams/prom_post_request.json",
        "prometheus-msteams/card-grafana-inspired-payload.json")},
    **{f"grafana/{p}": "grafana" for p in (
        "zulip/alert-9.json", "zulip/alert-9-resolved.json", "zulip/alert-9-mixed.json",
        "zulip/alert_multiple_v8.json", "zulip/alert_values_v11.json", "keep/grafana12_test_notification.json")},
    **{f"pagerduty/zulip/{n}_v3.json": "pagerduty" for n in (
        "triggered", "acknowledged", "unacknowledged", "resolved", "reassigned", "escalate", "annotated",
        "priority_updated")},
    **{f"opsgenie/zulip/{n}.json": "opsgenie" for n in ("create", "acknowledge", "addnote", "close", "escalate")},
    **{f"datadog/keep/example_log_alert_{n}.json": "datadog" for n in ("triggered", "recovered", "warn")},
}


def test_the_sample_list_covers_every_webhook_body_in_the_corpus():
    on_disk = {str(p.relative_to(HOOKS)) for p in HOOKS.rglob("*.json")
               if "holmesgpt" not in str(p) and "DOCUMENTED" not in p.name}
    assert on_disk == set(SAMPLES)


@pytest.mark.parametrize("rel", sorted(SAMPLES))
def test_every_real_sample_is_detected_as_its_own_format_and_normalises(rel):
    payload = load(rel)
    assert detect_source(payload) == SAMPLES[rel]
    alerts = normalise(payload)
    assert alerts and all(a.source == SAMPLES[rel] for a in alerts)
    for alert in alerts:
        assert alert.name and alert.fingerprint and alert.status in ("firing", "resolved")
        assert alert.severity in ("critical", "warning", "info", "unknown")
        assert all(link.url.startswith(("http://", "https://")) for link in alert.links)


def test_every_real_datadog_delivery_is_detected_and_recoveries_match_their_trigger():
    raws = [json.loads(line) for line in (HOOKS / "datadog/keep/datadog_raw_alerts.jsonl").read_text().splitlines()]
    assert all(detect_source(raw) == "datadog" for raw in raws)
    alerts = [normalise(raw)[0] for raw in raws]
    assert len(alerts) == 43 and {a.source for a in alerts} == {"datadog"}
    assert sum(a.status == "firing" for a in alerts) == 25 and sum(a.status == "resolved" for a in alerts) == 18
    # a recovery of a monitor+group whose trigger is in the capture has the trigger's fingerprint: one alert,
    # two states (one recovery's trigger predates the capture)
    fired = {(r["monitor_id"], r["scopes"]): a.fingerprint for r, a in zip(raws, alerts) if a.status == "firing"}
    pairs = [(fired[(r["monitor_id"], r["scopes"])], a.fingerprint) for r, a in zip(raws, alerts)
             if a.status == "resolved" and (r["monitor_id"], r["scopes"]) in fired]
    assert len(pairs) == 17 and all(f == g for f, g in pairs)
    # every delivery carries service:<x> or a database_id scope; the service tag becomes Alert.service
    assert all(a.service or "database_id" in a.labels for a in alerts)


# --- Grafana ------------------------------------------------------------------------------------------------


def test_grafana_firing_alert_keeps_fingerprint_links_values_and_group_key():
    alert = one("grafana/zulip/alert-9.json")
    assert (alert.name, alert.status, alert.fingerprint) == ("Test alert", "firing", "d8a21484c9c25a60")
    assert alert.summary == "This is a summary field, failure on some_host"
    assert alert.description == "This is a description"
    assert alert.group_key == '{}/{test="true"}:{}'
    assert alert.starts_at == datetime(2022, 6, 17, 0, 41, 0, 782137, tzinfo=timezone.utc)
    assert alert.ends_at is None  # Grafana's zero time
    assert links(alert) == {
        "Source": "https://grafana.example.com/alerting/grafana/zTjxv_C7k/view",
        "Silence": "https://grafana.example.com/alerting/silence/new?alertmanager=grafana&matcher=alertname%3D"
                   "Test+alert&matcher=test%3Dtrue",
        "Runbook": "https://runbook.example.com/"}  # empty dashboard/panel URLs give no link
    assert "value=24" in alert.annotations["value_string"]


def test_grafana_resolved_is_the_same_alert_with_an_end():
    firing, resolved = one("grafana/zulip/alert-9.json"), one("grafana/zulip/alert-9-resolved.json")
    assert resolved.status == "resolved" and resolved.fingerprint == firing.fingerprint
    assert resolved.ends_at == datetime(2022, 6, 17, 0, 51, 24, 67337, tzinfo=timezone.utc)


def test_grafana_mixed_group_has_a_status_per_alert():
    alerts = normalise(load("grafana/zulip/alert-9-mixed.json"))
    assert [(a.name, a.status, a.labels.get("instance")) for a in alerts] == [
        ("Test alert", "resolved", "badhost.example.com"), ("Test alert", "resolved", "otherhost.example.com"),
        ("Second webhook test", "firing", None)]
    assert alerts[0].service == "rabbitmq"  # the job label
    assert len({a.fingerprint for a in alerts}) == 3 and {a.group_key for a in alerts} == {'{}/{test="true"}:{}'}


def test_grafana_11_values_dashboard_panel_image_and_folder():
    alert = one("grafana/zulip/alert_values_v11.json")
    assert alert.labels["grafana_folder"] == "device"
    assert alert.annotations["values"] == "A=2473545728, B=0, C=1, minute=9"
    assert alert.description == "Values: A=2473545728, B=0, C=1, minute=9"  # no description annotation
    assert links(alert)["Panel"].endswith("?orgId=1&viewPanel=2")
    assert links(alert)["Dashboard"] == "https://play.grafana.org/d/ece9fb32-7f71-4be9-bd94-2f23608ae5b9?orgId=1"
    assert links(alert)["Image"] == "https://grafana.com/assets/img/blog/mixed_styles.png"


def test_grafana_12_relative_generator_url_is_resolved_against_external_url():
    alert = one("grafana/keep/grafana12_test_notification.json")
    assert (alert.name, alert.fingerprint, alert.summary) == ("TestAlert", "c4edaaf9f9f839b0", "TEST")
    assert links(alert)["Source"] == "https://grafana.example.com/?orgId=1"
    assert alert.group_key == "webhook-c4edaaf9f9f839b0-1777986297"


def test_grafana_without_fingerprint_gets_a_stable_one_and_severity_label_is_normalised():
    payload = load("grafana/zulip/alert-9.json")
    del payload["alerts"][0]["fingerprint"]
    payload["alerts"][0]["labels"]["severity"] = "Page"
    first, again = normalise(payload)[0], normalise(copy.deepcopy(payload))[0]
    assert first.fingerprint == again.fingerprint and len(first.fingerprint) == 16
    assert first.severity == "critical" and first.labels["severity"] == "Page"


def test_grafana_v8_multiple_alerts_keep_their_zone_and_team():
    alerts = normalise(load("grafana/zulip/alert_multiple_v8.json"))
    assert [(a.name, a.labels["zone"], a.labels["team"]) for a in alerts] == [
        ("High memory usage", "us-1", "blue"), ("High CPU usage", "eu-1", "blue")]
    assert alerts[0].links[-1].url == "https://myrunbook.com/runbook/1234"


# --- PagerDuty ----------------------------------------------------------------------------------------------


def test_pagerduty_triggered_incident():
    alert = one("pagerduty/zulip/triggered_v3.json")
    assert (alert.source, alert.name, alert.status, alert.severity, alert.service) == (
        "pagerduty", "Test Incident 3", "firing", "critical", "pig208")  # urgency high
    assert alert.labels["event_type"] == "incident.triggered" and alert.labels["agent"] == "PIG 208"
    assert alert.labels["urgency"] == "high" and alert.labels["incident_id"] == "PFQZPSY"
    assert links(alert)["PagerDuty incident"] == "https://pig208.pagerduty.com/incidents/PFQZPSY"
    assert alert.starts_at == datetime(2021, 6, 4, 13, 35, 29, 781000, tzinfo=timezone.utc)
    assert alert.description == "triggered by PIG 208"


def test_pagerduty_only_resolved_resolves():
    statuses = {n: one(f"pagerduty/zulip/{n}_v3.json").status for n in (
        "triggered", "acknowledged", "unacknowledged", "resolved", "reassigned", "escalate", "annotated",
        "priority_updated")}
    assert statuses.pop("resolved") == "resolved"
    assert set(statuses.values()) == {"firing"}
    resolved = one("pagerduty/zulip/resolved_v3.json")
    assert resolved.ends_at == datetime(2021, 6, 4, 13, 16, 53, 816000, tzinfo=timezone.utc)


def test_pagerduty_events_of_one_incident_share_a_fingerprint_and_start():
    ack, unack = one("pagerduty/zulip/acknowledged_v3.json"), one("pagerduty/zulip/unacknowledged_v3.json")
    assert ack.fingerprint == unack.fingerprint  # both incident PQ1K5C8
    assert (ack.labels["event_type"], unack.labels["event_type"]) == (
        "incident.acknowledged", "incident.unacknowledged")
    escalated, reprioritised, noted = (one(f"pagerduty/zulip/{n}_v3.json")
                                       for n in ("escalate", "priority_updated", "annotated"))
    assert escalated.fingerprint == reprioritised.fingerprint == noted.fingerprint  # incident Q3B15VLMF3ASBD
    assert escalated.starts_at == reprioritised.starts_at == datetime(2026, 4, 1, 2, 7, 30, tzinfo=timezone.utc)
    assert one("pagerduty/zulip/triggered_v3.json").fingerprint != ack.fingerprint  # another incident


def test_pagerduty_priority_agent_and_note_are_kept():
    escalated = one("pagerduty/zulip/escalate_v3.json")
    assert (escalated.labels["priority"], escalated.severity) == ("P1", "critical")
    assert escalated.labels["incident_key"] == "d387d7bd2e0a4294a5307339dfe1669a"
    reprioritised = one("pagerduty/zulip/priority_updated_v3.json")
    assert reprioritised.labels["priority"] == "P2"
    assert reprioritised.annotations["agent"] == "Harsh Santwani"
    noted = one("pagerduty/zulip/annotated_v3.json")  # data is the note; the incident is a reference
    assert noted.name == "Critical: Checkout API High Latency"
    assert noted.annotations["note"] == "Running KILL on long-running queries from the reporting-service."
    assert noted.description.startswith("annotated by Harsh Santwani: Running KILL")
    assert noted.service is None and noted.severity == "unknown"


def test_pagerduty_low_urgency_without_priority_is_a_warning():
    payload = load("pagerduty/zulip/triggered_v3.json")
    payload["event"]["data"]["urgency"] = "low"
    assert normalise(payload)[0].severity == "warning"


def test_pagerduty_ping_is_not_an_alert():
    assert normalise({"event": {"event_type": "pagey.ping", "data": {}}}) == []


# --- Datadog ------------------------------------------------------------------------------------------------


def test_datadog_triggered_log_monitor():
    alert = one("datadog/keep/example_log_alert_triggered.json")
    assert (alert.name, alert.status, alert.severity) == ("Error monitor", "firing", "critical")  # alert_type error
    assert alert.service == "keep-api-matvey-kuk-workflows-fix"
    assert alert.labels["monitor_id"] == "160076582" and alert.labels["transition"] == "Triggered"
    assert alert.starts_at == datetime(2024, 12, 11, 15, 15, 33, tzinfo=timezone.utc)  # $DATE, epoch ms string
    assert links(alert)["Datadog event"] == "https://app.datadoghq.com/event/event?id=7879709198622396010"
    assert links(alert)["Monitor Status"].startswith("https://app.datadoghq.com/monitors/160076582?")
    assert "%%%" not in alert.description and "@webhook" not in alert.description
    assert "More than **0** log events matched" in alert.description


def test_datadog_recovery_resolves_the_same_alert():
    triggered = one("datadog/keep/example_log_alert_triggered.json")
    recovered = one("datadog/keep/example_log_alert_recovered.json")
    assert recovered.status == "resolved" and recovered.fingerprint == triggered.fingerprint
    assert recovered.ends_at == datetime(2024, 12, 11, 15, 28, 32, tzinfo=timezone.utc)
    assert recovered.starts_at == datetime(2024, 12, 11, 15, 22, 2, tzinfo=timezone.utc)  # "last triggered at"


def test_datadog_warn_carries_priority_and_environment_tags():
    alert = one("datadog/keep/example_log_alert_warn.json")
    assert (alert.name, alert.status, alert.severity) == ("Unauthorized access to API keep-api", "firing", "warning")
    assert (alert.service, alert.environment) == ("keep-api", "production")
    assert alert.labels["priority"] == "P2" and alert.labels["alert_type"] == "warning"


def test_datadog_default_template_is_read_from_the_title():
    """Only the documented default keys, substituted: transition and scope come from $EVENT_TITLE."""
    full = load("datadog/keep/example_log_alert_triggered.json")
    template = load("datadog/default-payload-template.DOCUMENTED.json")
    default = {key: full[key] for key in template}
    assert detect_source(default) == "datadog"
    alert = normalise(default)[0]
    assert (alert.name, alert.status, alert.service) == ("Error monitor", "firing",
                                                         "keep-api-matvey-kuk-workflows-fix")
    recovered = load("datadog/keep/example_log_alert_recovered.json")
    again = normalise({key: recovered[key] for key in template})[0]
    assert again.status == "resolved" and again.fingerprint == alert.fingerprint


def test_datadog_unsubstituted_template_is_refused_naming_the_transition():
    template = load("datadog/default-payload-template.DOCUMENTED.json")
    assert detect_source(template) == "datadog"
    with pytest.raises(AlertFormatError, match="alert_transition"):
        normalise(template)


# --- Opsgenie -----------------------------------------------------------------------------------------------


def test_opsgenie_create():
    alert = one("opsgenie/zulip/create.json")
    assert (alert.name, alert.status, alert.severity, alert.service) == ("another alert", "firing", "warning",
                                                                          "Server")  # priority 3 → P3; entity
    assert alert.labels["priority"] == "P3" and alert.labels["alias"] == "alert-alias"
    assert alert.labels["tags"] == "vip" and alert.labels["action"] == "Create"
    assert alert.starts_at == datetime(2017, 8, 14, 11, 25, 56, 288000, tzinfo=timezone.utc)  # epoch ms


def test_opsgenie_actions_of_one_alert_share_a_fingerprint_and_close_resolves():
    ack, note, close = (one(f"opsgenie/zulip/{n}.json") for n in ("acknowledge", "addnote", "close"))
    assert ack.fingerprint == note.fingerprint == close.fingerprint
    assert ack.starts_at == note.starts_at == close.starts_at
    assert [a.status for a in (ack, note, close)] == ["firing", "firing", "resolved"]
    assert close.ends_at.year == 2015  # updatedAt is epoch nanoseconds
    assert note.annotations["note"] == "note to test alert" and "note to test alert" in note.description
    assert ack.labels["tags"] == "tag1,tag2" and ack.annotations["by"] == "fili@ifountain.com"


def test_opsgenie_escalate_carries_only_the_alert_id():
    alert = one("opsgenie/zulip/escalate.json")
    assert alert.name == "Opsgenie alert 7ba97e3a-d328-4b5e-8f9a-39e945a3869a"
    assert alert.labels["escalation"] == "test_esc" and alert.status == "firing"
    create = load("opsgenie/zulip/create.json")
    create["alert"]["alertId"] = "7ba97e3a-d328-4b5e-8f9a-39e945a3869a"
    assert normalise(create)[0].fingerprint == alert.fingerprint


def test_opsgenie_priority_tags_give_severity_service_and_environment():
    payload = load("opsgenie/zulip/create.json")
    payload["alert"].update(priority="P1", tags=["service:payments-api", "env:prod", "vip"])
    alert = normalise(payload)[0]
    assert (alert.severity, alert.service, alert.environment) == ("critical", "payments-api", "production")


# --- generic ------------------------------------------------------------------------------------------------

GENERIC = {"name": "DiskFull", "severity": "P1", "service": "db", "environment": "prod",
           "summary": "disk 95% full", "labels": {"host": "db-1"},
           "links": [{"title": "Dashboard", "url": "https://grafana.example.com/d/disk"}],
           "starts_at": "2026-01-02T03:04:05Z"}


def test_generic_single_alert_with_defaults_and_a_stable_fingerprint():
    assert detect_source(GENERIC) == "generic"
    alert = normalise(GENERIC)[0]
    assert (alert.source, alert.name, alert.status, alert.severity) == ("generic", "DiskFull", "firing", "critical")
    assert (alert.service, alert.environment, alert.summary) == ("db", "production", "disk 95% full")
    assert alert.labels == {"host": "db-1", "severity": "P1"}  # the raw severity is kept
    assert links(alert) == {"Dashboard": "https://grafana.example.com/d/disk"}
    assert alert.starts_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    resolved = normalise({**GENERIC, "status": "resolved", "summary": "better now"})[0]
    assert resolved.fingerprint == alert.fingerprint  # name+service+environment+labels, not the text
    assert normalise({**GENERIC, "labels": {"host": "db-2"}})[0].fingerprint != alert.fingerprint
    assert normalise({**GENERIC, "fingerprint": "mine"})[0].fingerprint == "mine"


def test_generic_list_is_validated_whole():
    assert detect_source([GENERIC, {"name": "Other"}]) == "generic"
    assert [a.name for a in normalise([GENERIC, {"name": "Other"}])] == ["DiskFull", "Other"]
    with pytest.raises(AlertFormatError, match=r"\[1\]\.status must be firing or resolved"):
        normalise([GENERIC, {"name": "Other", "status": "open"}], "generic")


# --- refusals -----------------------------------------------------------------------------------------------


def _pd(mutate):
    payload = load("pagerduty/zulip/triggered_v3.json")
    mutate(payload)
    return payload


@pytest.mark.parametrize("source, payload, reason", [
    ("grafana", {"version": "1", "alerts": []}, "grafana payload has no alerts"),
    ("grafana", {"version": "1", "alerts": [{"status": "firing", "labels": {}}]}, "alerts[0] has no alertname"),
    ("grafana", {"version": "1", "alerts": [{"status": "odd", "labels": {"alertname": "A"}}]}, "alerts[0].status"),
    ("grafana", {"version": "1", "alerts": [{"status": "firing", "labels": {"alertname": "A"}, "values": [1]}]},
     "alerts[0].values must be an object"),
    ("pagerduty", _pd(lambda p: p["event"].pop("event_type")), "event.event_type is required"),
    ("pagerduty", _pd(lambda p: p["event"].update(event_type="service.updated")), "not an incident event"),
    ("pagerduty", _pd(lambda p: p["event"].update(data=[])), "event.data must be an object"),
    ("pagerduty", _pd(lambda p: p["event"]["data"].pop("id")), "incident id is required"),
    ("pagerduty", _pd(lambda p: p["event"]["data"].update(title="")), "event.data.title is required"),
    ("pagerduty", _pd(lambda p: p["event"]["data"].update(service="pig208")), "event.data.service must be an object"),
    ("pagerduty", _pd(lambda p: p["event"].update(occurred_at="yesterday")), "bad timestamp"),
    ("opsgenie", {"action": "Create", "alert": {"message": "m"}}, "alert.alertId (or alert.alias) is required"),
    ("opsgenie", {"action": "Create", "alert": {"alertId": "x", "tags": "vip"}}, "alert.tags must be a list"),
    ("opsgenie", {"action": "Create", "alert": {"alertId": "x", "createdAt": "soon"}}, "alert.createdAt"),
    ("datadog", {"title": "[Exploded] x", "event_type": "e", "date": "1"}, "alert_transition is missing"),
    ("datadog", {"title": "t", "alert_transition": "Exploded"}, "alert_transition 'Exploded'"),
    ("datadog", {"title": "[Triggered] x", "event_type": "e", "date": "later"}, "date must be an epoch"),
    ("datadog", {"title": "[Triggered] x", "event_type": "e", "date": "1", "org": "acme"}, "org must be an object"),
    ("generic", {"status": "firing"}, "name is required"),
    ("generic", {"name": "A", "sevrity": "high"}, "sevrity is not a generic alert field"),
    ("generic", {"name": "A", "labels": ["x"]}, "labels must be an object"),
    ("generic", {"name": "A", "links": [{"title": "t", "url": "javascript:x"}]}, "links[0].url must be an http(s) URL"),
    ("generic", {"name": {"x": 1}}, "name must be a string"),
    ("generic", [], "empty list"),
])
def test_bad_payloads_are_refused_naming_the_field(source, payload, reason):
    with pytest.raises(AlertFormatError) as caught:
        normalise(payload, source)
    assert reason in str(caught.value) and "\n" not in str(caught.value)


def test_unknown_shapes_are_not_guessed():
    for body in (b'{"hello": "world"}', b'{"event": "x"}', b'{"action": "Create"}', b'[{"title": "x"}]', b'"x"'):
        with pytest.raises(AlertFormatError, match="unknown alert format|must be a JSON object"):
            normalise(decode(body))


# --- a real `warroom serve` ---------------------------------------------------------------------------------


def _sign(body: bytes, secret: str = PD_SECRET) -> str:
    return "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.fixture(scope="module")
def hooks_db(pg_server):
    """One migrated database for the module's server, read directly by the tests."""
    name = f"hooks{os.getpid()}"
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    return pg_server.get_uri(database=name)


@pytest.fixture(scope="module")
def served(tmp_path_factory, hooks_db):
    s = Served(tmp_path_factory.mktemp("hooks") / "data", DATABASE_URL=hooks_db,
               PAGERDUTY_WEBHOOK_SECRET=PD_SECRET)
    yield s
    if s.proc.poll() is None:
        s.stop()


def _rows(db_url, sql="SELECT count(*) FROM alerts"):
    with psycopg.connect(db_url) as conn:
        return conn.execute(sql).fetchall()


def _post_sample(served, rel):
    body = (HOOKS / rel).read_bytes()
    source = SAMPLES[rel]
    headers = {"X-PagerDuty-Signature": _sign(body)} if source == "pagerduty" else {}
    return served.post(f"/hooks/{source}", body, **headers)


def test_each_hook_accepts_its_real_samples_and_stores_them(served, hooks_db):
    for rel, source in SAMPLES.items():
        status, body = _post_sample(served, rel)
        assert status == 202, (rel, body[:300])
        ids = json.loads(body)["alert_ids"]
        assert len(ids) == len(normalise(load(rel)))
        stored = _rows(hooks_db, f"SELECT DISTINCT source FROM alerts WHERE id IN ({','.join(map(str, ids))})")
        assert stored == [(source,)], rel
    generic = json.dumps([GENERIC, {"name": "QueueBacklog", "service": "jobs"}]).encode()
    status, body = served.post("/hooks/generic", generic)
    assert status == 202 and json.loads(body)["accepted"] == 2
    names = {n for (n,) in _rows(hooks_db, "SELECT name FROM alerts")}
    assert {"Test alert", "Test Incident 3", "another alert", "Error monitor", "DiskFull", "QueueBacklog",
            "High CPU Temperature", "Critical: Checkout API High Latency"} <= names
    # every PagerDuty event of one incident is stored under one fingerprint
    incidents = {load(r)["event"]["data"].get("incident", load(r)["event"]["data"])["id"]
                 for r in SAMPLES if SAMPLES[r] == "pagerduty"}
    assert _rows(hooks_db, "SELECT count(DISTINCT fingerprint) FROM alerts WHERE source = 'pagerduty'") == [
        (len(incidents),)]
    assert _rows(hooks_db, "SELECT DISTINCT status FROM alerts WHERE source = 'opsgenie' ORDER BY 1") == [
        ("firing",), ("resolved",)]


def test_pagerduty_signature_is_checked_before_anything_is_parsed(served, hooks_db):
    body = (HOOKS / "pagerduty/zulip/reassigned_v3.json").read_bytes()
    before = _rows(hooks_db)
    for headers in ({}, {"X-PagerDuty-Signature": _sign(body, "another-secret")},
                    {"X-PagerDuty-Signature": _sign(body + b" ")}, {"X-PagerDuty-Signature": "v1="},
                    {"Authorization": "Bearer whatever"}):
        status, text = served.post("/hooks/pagerduty", body, **headers)
        assert status == 401 and b"X-PagerDuty-Signature" in text, headers
    # a malformed body with no signature is refused as unsigned, not parsed
    assert served.post("/hooks/pagerduty", b'{"event": ')[0] == 401
    assert _rows(hooks_db) == before
    # during secret rotation PagerDuty sends several signatures; one valid is enough
    rotated = f"v1={'0' * 64}, {_sign(body)}"
    assert served.post("/hooks/pagerduty", body, **{"X-PagerDuty-Signature": rotated})[0] == 202


def test_malformed_json_is_400_and_writes_nothing(served, hooks_db):
    before = _rows(hooks_db)
    bad = b'{"alerts": ['
    for source in ("alertmanager", "grafana", "datadog", "opsgenie", "generic"):
        status, text = served.post(f"/hooks/{source}", bad)
        assert status == 400 and b"malformed JSON" in text, source
    status, text = served.post("/hooks/pagerduty", bad, **{"X-PagerDuty-Signature": _sign(bad)})
    assert status == 400 and b"malformed JSON" in text
    assert _rows(hooks_db) == before


def test_a_payload_on_the_wrong_hook_is_422_and_writes_nothing(served, hooks_db):
    before = _rows(hooks_db)
    wrong = [("grafana/zulip/alert-9.json", "alertmanager"),  # Alertmanager's shape, but Grafana's
             ("alertmanager/zulip/alert.json", "grafana"),
             ("opsgenie/zulip/create.json", "generic"),
             ("datadog/keep/example_log_alert_warn.json", "opsgenie"),
             ("grafana/zulip/alert-9.json", "datadog")]
    for rel, hook in wrong:
        status, text = served.post(f"/hooks/{hook}", (HOOKS / rel).read_bytes())
        assert status == 422 and f"not a {hook} payload (looks like {SAMPLES[rel]})".encode() in text, (rel, hook)
    body = (HOOKS / "opsgenie/zulip/close.json").read_bytes()
    status, text = served.post("/hooks/pagerduty", body, **{"X-PagerDuty-Signature": _sign(body)})
    assert status == 422 and b"looks like opsgenie" in text
    status, text = served.post("/hooks/generic", b'{"name": "A", "status": "open"}')
    assert status == 422 and b"status must be firing or resolved" in text
    assert _rows(hooks_db) == before


# --- replay -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rel, source, name", [
    ("grafana/zulip/alert_values_v11.json", "auto", "Memory (copy)"),
    ("pagerduty/zulip/escalate_v3.json", "auto", "Critical: Checkout API High Latency"),
    ("datadog/keep/example_log_alert_warn.json", "datadog", "Unauthorized access to API keep-api"),
    ("opsgenie/zulip/create.json", "auto", "another alert"),
])
def test_replay_reads_every_source(db_url, rel, source, name):
    out = warroom("replay", str(HOOKS / rel), "--source", source, "--json", env={"DATABASE_URL": db_url})
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[0])
    assert result["alert"]["name"] == name and result["alert"]["source"] == SAMPLES[rel]
    assert _rows(db_url, "SELECT name FROM alerts") == [(name,)]


def test_replay_reads_a_generic_list(db_url, tmp_path):
    path = tmp_path / "generic.json"
    path.write_text(json.dumps([GENERIC, {"name": "QueueBacklog"}]))
    out = warroom("replay", str(path), "--source", "generic", "--json", env={"DATABASE_URL": db_url})
    assert out.returncode == 0, out.stderr
    assert [json.loads(line)["alert"]["name"] for line in out.stdout.splitlines()] == ["DiskFull", "QueueBacklog"]
    refused = warroom("replay", str(EXAMPLES / "alerts/unknown-format.json"), "--source", "generic",
                      env={"DATABASE_URL": db_url})
    assert refused.returncode != 0 and "Traceback" not in refused.stderr


def test_without_the_secret_pagerduty_is_guarded_by_the_bearer_token(tmp_path, db_url):
    """PAGERDUTY_WEBHOOK_SECRET unset: a signature cannot be checked, so only WARROOM_WEBHOOK_TOKEN lets in."""
    s = Served(tmp_path / "data", DATABASE_URL=db_url, WARROOM_WEBHOOK_TOKEN="hook-token")
    try:
        body = (HOOKS / "pagerduty/zulip/triggered_v3.json").read_bytes()
        assert s.post("/hooks/pagerduty", body)[0] == 401
        assert s.post("/hooks/pagerduty", body, **{"X-PagerDuty-Signature": _sign(body)})[0] == 401
        assert s.post("/hooks/pagerduty", body, Authorization="Bearer wrong")[0] == 401
        assert _rows(db_url) == [(0,)]
        assert s.post("/hooks/pagerduty", body, Authorization="Bearer hook-token")[0] == 202
        assert _rows(db_url, "SELECT name, source FROM alerts") == [("Test Incident 3", "pagerduty")]
    finally:
        assert s.stop() == 0


def test_a_repeated_alert_without_a_start_time_is_counted_not_stored_again(db_url):
    """Opsgenie's Escalate carries no start time: its repeat must dedupe like any other re-notification."""
    from storage import alerts as alert_store
    from storage.db import connect

    alert = {"source": "opsgenie", "fingerprint": "og-1", "status": "firing", "name": "Disk", "severity": "warning",
             "service": None, "environment": None, "group_key": None, "starts_at": None, "ends_at": None}
    with connect(db_url) as conn:
        first, inserted = alert_store.insert_alert(conn, alert=alert)
        again, repeated = alert_store.insert_alert(conn, alert=alert)
        row = conn.execute("SELECT count(*) AS n, max(notifications) AS seen FROM alerts").fetchone()
    assert inserted and not repeated and first == again
    assert (row["n"], row["seen"]) == (1, 2)
