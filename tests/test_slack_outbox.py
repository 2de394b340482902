"""The outbox against a Slack that pushes back: a stand-in stricter than Slack itself (one message every
two seconds per channel, bursts of two), a transient 500, a channel that does not exist, and cards too
big for Block Kit. Nothing may be lost, no 429 may be retried early, and no limit may be broken."""
import json
import re
import urllib.parse
import urllib.request

import pytest

from tests.conftest import EXAMPLES
from tests.served import Served
from tests.slack_standin import SlackStandIn, sign, slash_command

SECRET = "outbox-test-signing-secret"
ALERTS = "C0STORMY"


@pytest.fixture(scope="module")
def slack(tmp_path_factory):
    root = tmp_path_factory.mktemp("slack-outbox")
    (root / "warroom.yml").write_text(f"slack:\n  alert_channel: {ALERTS}\n")
    standin = SlackStandIn(rate_per_s=0.5, burst=2, retry_after=2).start()
    served = Served(root / "data", WARROOM_CONFIG=str(root / "warroom.yml"), SLACK_BOT_TOKEN=standin.bot_token,
                    SLACK_SIGNING_SECRET=SECRET, SLACK_API_URL=standin.url,
                    WARROOM_PUBLIC_URL="http://127.0.0.1:1")
    yield served, standin
    served.stop()
    standin.stop()


def _alert(name: str) -> bytes:
    payload = json.loads((EXAMPLES / "alerts/payments-high-error-rate-firing.json").read_text())
    for labels in [payload["commonLabels"], payload["groupLabels"], *(a["labels"] for a in payload["alerts"])]:
        labels["alertname"] = name
        labels["severity"] = "warning"
    for alert in payload["alerts"]:
        alert.pop("fingerprint", None)  # Alertmanager's fingerprint follows the labels
    return json.dumps(payload).encode()


def test_a_burst_is_paced_429s_are_honoured_and_nothing_is_lost(slack):
    served, standin = slack
    standin.fail_next("chat.postMessage", status=500)  # one transient failure on top
    names = [f"StormAlert{i}" for i in range(6)]
    for name in names:
        assert served.post("/hooks/alertmanager", _alert(name))[0] == 202

    def delivered() -> bool:
        return served.query("SELECT count(*) FROM outbox WHERE status = 'pending'") == [(0,)] and len(
            [m for m in standin.messages(ALERTS) if m.get("thread_ts")]) == len(names)

    standin.wait_for(delivered, timeout=180)
    parents = [m for m in standin.messages(ALERTS) if not m.get("thread_ts")]
    assert sorted(n for n in names for m in parents if n in json.dumps(m)) == sorted(names)  # one parent each
    for parent in parents:  # and exactly one annotation in each thread
        assert len([m for m in standin.messages(ALERTS) if m.get("thread_ts") == parent["ts"]]) == 1
    assert standin.rate_limited, "the stand-in is stricter than our pacing, so some 429s were expected"
    assert standin.early_retries == []
    assert served.query("SELECT count(*) FROM outbox WHERE status = 'dead'") == [(0,)]
    assert standin.violations == []


def test_a_message_slack_refuses_for_good_is_parked_not_dropped(slack):
    served, standin = slack
    body, content_type = slash_command("help", channel="X0NOTACHANNEL", user="U0ALICE")
    status, _ = served.request("POST", "/slack/events", body, {"Content-Type": content_type, **sign(SECRET, body)})
    assert status == 200
    standin.wait_for(lambda: served.query(
        "SELECT status, last_error FROM outbox WHERE channel = 'X0NOTACHANNEL'") == [("dead", "slack: channel_not_found")])


def test_cards_too_big_for_block_kit_are_cut_with_a_link_to_the_full_text(slack):
    served, standin = slack
    question = "diagnose " + " ".join(f"payments-api-symptom-{i}" for i in range(400))  # ~9000 characters
    body, content_type = slash_command(question, channel="C0BIGCARD", user="U0ALICE")
    assert served.request("POST", "/slack/events", body, {"Content-Type": content_type, **sign(SECRET, body)})[0] == 200

    def posted() -> list[dict]:
        return [m for m in standin.messages("C0BIGCARD") if m.get("bot_id")]

    standin.wait_for(lambda: bool(posted()), timeout=60)
    card = posted()[0]
    header = card["blocks"][0]
    assert header["type"] == "header" and len(header["text"]["text"]) <= 150 and header["text"]["text"].endswith("…")
    assert standin.violations == []
    links = re.findall(r"<(http://127\.0\.0\.1:1/cards/\d+\?sig=[0-9a-f]+)\|full text>", json.dumps(card["blocks"]))
    assert links, "a cut card links to its full text"
    url = links[0].replace("http://127.0.0.1:1", f"http://127.0.0.1:{served.port}")
    with urllib.request.urlopen(url, timeout=10) as resp:
        full = resp.read().decode()
    assert "payments-api-symptom-399" in full
    forged = url.rsplit("sig=", 1)[0] + "sig=" + "0" * 32
    assert served.get(forged.split(str(served.port), 1)[1])[0] == 404


def test_socket_mode_serves_slack_without_an_inbound_url(tmp_path):
    """With SLACK_APP_TOKEN set, serve connects out over Socket Mode; /slack/events is not exposed."""
    standin = SlackStandIn(rate_limit=False).start()
    served = Served(tmp_path / "data", SLACK_BOT_TOKEN=standin.bot_token, SLACK_APP_TOKEN=standin.app_token,
                    SLACK_API_URL=standin.url)
    try:
        assert standin.socket_connected.wait(30)
        payload = dict(urllib.parse.parse_qsl(slash_command("help", channel="C0SOCKET", user="U0ALICE")[0].decode()))
        ack = standin.socket_send({"envelope_id": "env-1", "type": "slash_commands", "payload": payload,
                                   "accepts_response_payload": True})
        assert ack is not None and ack["envelope_id"] == "env-1"
        standin.wait_for(lambda: any(e["channel"] == "C0SOCKET" for e in standin.ephemerals), timeout=60)
        assert served.request("POST", "/slack/events", b"{}")[0] == 404
    finally:
        served.stop()
        standin.stop()
