import json

import pytest

from engine.alerts import AlertFormatError, decode, normalise, parse_time
from tests.conftest import CORPORA, EXAMPLES


def test_real_alertmanager_payload_is_normalised():
    payload = json.loads((CORPORA / "webhooks/alertmanager/zulip/alert.json").read_text())
    alerts = normalise(payload)
    assert len(alerts) == len(payload["alerts"]) == 2
    first = alerts[0]
    assert first.source == "alertmanager"
    assert first.name == "High CPU Temperature"
    assert first.severity == "critical"
    assert first.fingerprint == "a1bc48475b20e73d"
    assert first.status == "firing"
    assert first.ends_at is None  # Alertmanager's zero time
    assert first.starts_at.microsecond == 432911  # nanoseconds cut to what Python keeps
    assert first.links[0].url.startswith("http://cobalt:9090/graph")
    assert first.group_key == "{}/{}:{}"


def test_example_payload_carries_service_environment_and_runbook_link():
    alert = normalise(json.loads((EXAMPLES / "alerts/payments-high-error-rate-firing.json").read_text()))[0]
    assert alert.service == "payments-api"
    assert alert.environment == "production"  # label env=prod, normalised
    assert any(link.title == "Runbook" for link in alert.links)


@pytest.mark.parametrize("body, message", [
    (b"{not json", "malformed JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"hello": "world"}', "unknown alert format"),
    (b'{"version": "4", "groupKey": "x", "alerts": []}', "no alerts"),
    (b'{"version": "4", "groupKey": "x", "alerts": [{"labels": {}}]}', "no alertname"),
    (b'{"version": "4", "groupKey": "x", "alerts": [{"status": "odd", "labels": {"alertname": "A"}}]}', "status"),
])
def test_bad_payloads_are_refused_with_a_reason(body, message):
    with pytest.raises(AlertFormatError, match=message):
        normalise(decode(body))


def test_generated_fingerprint_is_stable_without_one():
    payload = {"version": "4", "groupKey": "g", "status": "firing",
               "alerts": [{"status": "firing", "labels": {"alertname": "A", "b": "1"}}]}
    assert normalise(payload)[0].fingerprint == normalise(payload)[0].fingerprint


def test_parse_time_handles_epoch_and_rejects_garbage():
    assert parse_time(0) is None
    assert parse_time(1700000000).year == 2023
    with pytest.raises(AlertFormatError):
        parse_time("yesterday-ish")
