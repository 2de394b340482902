"""The Slack adapter end to end: `warroom serve` receives requests signed exactly as Slack signs them, and
the real slack_sdk client inside it talks to a Slack Web API stand-in that records calls, rate-limits with
429s and refuses anything breaking Block Kit's limits."""
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.conftest import RecordingTarget, runbook_yaml, warroom
from tests.http_helpers import texts_in
from tests.served import Served
from tests.slack_standin import (SlackStandIn, app_mention_event, block_action, event, message_event, sign,
                                 slash_command)

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
ALERTS = "C0ALERTS"
USERS = {"U0ALICE": {"name": "alice", "email": "alice@example.com"},
         "U0BOB": {"name": "bob", "email": "bob@example.com"},
         "U0CAROL": {"name": "carol", "email": "carol@example.com"}}
CONFIG = f"""
slack:
  alert_channel: {ALERTS}
policy:
  approvers: [U0BOB, carol@example.com]
  auto_run_read_only: true
  two_person_rule: true
"""


@pytest.fixture(scope="module")
def target():
    with RecordingTarget() as server:
        yield server


@pytest.fixture(scope="module")
def slack(tmp_path_factory, target):
    """One `warroom serve` with Slack configured, its Slack stand-in and the step target, for the module."""
    root = tmp_path_factory.mktemp("slack")
    (root / "warroom.yml").write_text(CONFIG)
    (root / "runbook.yaml").write_text(runbook_yaml(target.url("/health")))
    env = {"WARROOM_DATA_DIR": str(root / "data"), "WARROOM_CONFIG": str(root / "warroom.yml")}
    ingested = warroom("ingest", str(root / "runbook.yaml"), env={**env, "DATABASE_URL": "", "REDIS_URL": ""})
    assert ingested.returncode == 0, ingested.stderr
    standin = SlackStandIn(users=USERS).start()
    served = Served(root / "data", WARROOM_CONFIG=str(root / "warroom.yml"), SLACK_BOT_TOKEN=standin.bot_token,
                    SLACK_SIGNING_SECRET=SECRET, SLACK_API_URL=standin.url,
                    WARROOM_PUBLIC_URL="https://warroom.example.com")
    deploy = {"service": "payments-api", "kind": "deploy", "summary": "payments-api v2.14.0 rolled out",
              "version": "v2.14.0", "author": "ci", "at": datetime.now(timezone.utc).isoformat()}
    assert served.post("/hooks/changes", json.dumps(deploy).encode())[0] == 202  # evidence to reason over
    yield Slack(served, standin)
    served.stop()
    standin.stop()


class Slack:
    def __init__(self, served: Served, standin: SlackStandIn) -> None:
        self.served = served
        self.standin = standin

    def post(self, body: bytes, content_type: str, *, secret: str = SECRET, timestamp: int | None = None,
             headers: dict | None = None):
        signed = sign(secret, body, timestamp)
        return self.served.request("POST", "/slack/events", body,
                                   {"Content-Type": content_type, **signed, **(headers or {})})

    def command(self, text: str, *, channel: str, user: str = "U0ALICE"):
        body, content_type = slash_command(text, channel=channel, user=user, user_name=USERS[user]["name"],
                                           response_url=self.standin.response_url(f"{channel}-{time.time_ns()}"))
        status, answer = self.post(body, content_type)
        assert status == 200, answer
        return answer

    def plan_card(self, channel: str, *, user: str = "U0ALICE", text: str = "diagnose payments-api is returning 500s"):
        """Ask for a diagnosis; returns the plan card and its Approve button (action id, step id)."""
        self.command(text, channel=channel, user=user)
        card = self.wait_for_message(channel, lambda m: "warroom on" in _text_of(m))
        return (card, *_approve_button(card))

    def click(self, action_id: str, value: str, *, channel: str, message_ts: str, user: str, headers=None):
        body, content_type = block_action(action_id, value, channel=channel, message_ts=message_ts, user=user)
        status, answer = self.post(body, content_type, headers=headers)
        assert status == 200, answer

    def send_event(self, inner: dict, *, event_id: str | None = None, headers: dict | None = None):
        body, content_type = event(inner, event_id=event_id)
        status, answer = self.post(body, content_type, headers=headers)
        assert status == 200, answer

    def message(self, channel: str, ts: str) -> dict:
        return next(m for m in self.standin.messages(channel) if m["ts"] == ts)

    def wait_for_message(self, channel: str, predicate=lambda m: True, timeout: float = 60) -> dict:
        found: list[dict] = []

        def check() -> bool:
            found[:] = [m for m in self.standin.messages(channel) if m.get("bot_id") and predicate(m)]
            return bool(found)

        self.standin.wait_for(check, timeout=timeout)
        return found[0]

    def wait_for_ephemeral(self, channel: str, user: str, contains: str, timeout: float = 60) -> dict:
        def matches() -> list[dict]:
            return [e for e in self.standin.ephemerals
                    if e["channel"] == channel and e["user"] == user and contains in _text_of(e)]

        self.standin.wait_for(lambda: bool(matches()), timeout=timeout)
        return matches()[0]


def _text_of(message: dict) -> str:
    """Everything a message says: its fallback text and every text in its blocks."""
    return "\n".join([message.get("text") or "", *texts_in(message.get("blocks") or [])])


def _buttons(message: dict) -> dict[str, str]:
    """action_id -> value of every button on a message."""
    out = {}
    for block in message.get("blocks") or []:
        if block.get("type") == "actions":
            for element in block["elements"]:
                out[element["action_id"]] = element.get("value", "")
    return out


def _approve_button(message: dict) -> tuple[str, str]:
    return next((a, v) for a, v in _buttons(message).items() if a.startswith("warroom_approve_"))


# --- security ------------------------------------------------------------------------------------------

def test_forged_or_stale_requests_get_401_and_touch_nothing(slack):
    body, content_type = slash_command("diagnose payments-api 500s", channel="C0FORGED")
    assert slack.post(body, content_type, secret="not-the-secret")[0] == 401
    assert slack.post(body, content_type, timestamp=int(time.time()) - 600)[0] == 401
    unsigned = slack.served.request("POST", "/slack/events", body, {"Content-Type": content_type})
    assert unsigned[0] == 401
    time.sleep(2)
    assert slack.standin.messages("C0FORGED") == []
    assert slack.served.query("SELECT count(*) FROM plans WHERE channel = 'C0FORGED'") == [(0,)]
    assert slack.served.query("SELECT count(*) FROM outbox WHERE channel = 'C0FORGED'") == [(0,)]


def test_url_verification_challenge_is_answered(slack):
    body = json.dumps({"token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
                       "type": "url_verification"}).encode()
    status, answer = slack.post(body, "application/json")
    assert status == 200 and json.loads(answer) == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}


# --- slash commands --------------------------------------------------------------------------------------

def test_diagnose_answers_in_channel_with_hypotheses_citations_and_buttons(slack, target):
    channel = "C0DIAG"
    assert slack.command("diagnose payments-api is returning 500s", channel=channel) == b""  # bare ack
    card = slack.wait_for_message(channel, lambda m: "warroom on" in _text_of(m))
    text = _text_of(card)
    assert "confidence" in text and "Sources" in text and "Payments API elevated 5xx rate" in text
    assert card.get("thread_ts") is None  # asked in the channel, answered in the channel
    action_id, step_id = _approve_button(card)
    assert f"warroom_reject_{step_id}" in _buttons(card)
    # the read-only step ran by policy and the card was redrawn in place with its result
    slack.standin.wait_for(lambda: "succeeded" in _text_of(slack.message(channel, card["ts"])))
    assert "/health" in target.paths()
    assert slack.standin.violations == []


@pytest.mark.parametrize("channel, text", [("C0RUNBOOK", "runbook payments-api 500 errors"),
                                           ("C0RUN", "run restart payments-api"),
                                           ("C0FREE", "why is payments-api throwing 500s?")])
def test_runbook_run_and_free_text_propose_the_matching_plan(slack, channel, text):
    slack.command(text, channel=channel)
    card = slack.wait_for_message(channel, lambda m: "warroom on" in _text_of(m))
    assert "Restart payments-api" in _text_of(card) and _approve_button(card)


def test_help_and_errors_are_ephemeral_and_say_what_to_do(slack):
    channel = "C0HELP"
    slack.command("help", channel=channel)
    help_message = slack.wait_for_ephemeral(channel, "U0ALICE", "diagnose <what is wrong>")
    assert "ack | resolve" in _text_of(help_message)
    slack.command("qwzx plorf blat", channel=channel)
    confused = slack.wait_for_ephemeral(channel, "U0ALICE", "Not sure what you mean")
    assert "/warroom diagnose" in _text_of(confused)
    slack.command("status", channel=channel)
    slack.wait_for_ephemeral(channel, "U0ALICE", "No open incident")
    assert [m for m in slack.standin.messages(channel) if m.get("bot_id")] == []  # nothing public


# --- approvals ---------------------------------------------------------------------------------------------

def test_a_non_approver_is_told_why_and_nothing_runs(slack):
    channel = "C0NONAPPROVER"
    card, action_id, step_id = slack.plan_card(channel, user="U0BOB")
    slack.click(action_id, step_id, channel=channel, message_ts=card["ts"], user="U0ALICE")
    refusal = slack.wait_for_ephemeral(channel, "U0ALICE", "not an approver")
    assert "policy.approvers" in _text_of(refusal)
    time.sleep(1)
    assert slack.served.query(f"SELECT status, attempts FROM plan_steps WHERE id = {step_id}") == [("proposed", 0)]
    assert slack.served.query(
        f"SELECT count(*) FROM audit_log WHERE action = 'step.approval_refused' AND subject = 'step:{step_id}'"
    ) == [(1,)]


def test_approval_runs_once_despite_double_clicks_and_updates_the_card(slack, target):
    channel = "C0APPROVE"
    card, action_id, step_id = slack.plan_card(channel, user="U0ALICE")
    for _ in range(3):  # an impatient approver
        slack.click(action_id, step_id, channel=channel, message_ts=card["ts"], user="U0BOB")
    # and the same click delivered again by a flaky network
    slack.click(action_id, step_id, channel=channel, message_ts=card["ts"], user="U0BOB",
                headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})

    def finished() -> bool:
        return slack.served.query(f"SELECT status FROM plan_steps WHERE id = {step_id}")[0][0] == "succeeded"

    slack.standin.wait_for(finished)
    assert slack.served.query(f"SELECT attempts FROM plan_steps WHERE id = {step_id}") == [(1,)]
    assert slack.served.query(f"SELECT count(*) FROM approvals WHERE step_id = {step_id}") == [(1,)]
    slack.standin.wait_for(lambda: "by bob@example.com" in _text_of(slack.message(channel, card["ts"])))
    updated = slack.message(channel, card["ts"])
    assert f"warroom_approve_{step_id}" not in _buttons(updated)  # no buttons once decided
    updates = [c for c in slack.standin.calls_to("chat.update") if c.params.get("ts") == card["ts"]]
    assert updates, "the card is updated in place"
    # the result is also posted in the card's thread
    slack.wait_for_message(channel, lambda m: m.get("thread_ts") == card["ts"] and "Restart" in _text_of(m))


def test_an_approver_listed_by_email_may_approve(slack):
    channel = "C0EMAIL"
    card, action_id, step_id = slack.plan_card(channel, user="U0ALICE")
    slack.click(action_id, step_id, channel=channel, message_ts=card["ts"], user="U0CAROL")
    slack.standin.wait_for(lambda: slack.served.query(
        f"SELECT status FROM plan_steps WHERE id = {step_id}")[0][0] in ("queued", "running", "succeeded"))
    assert slack.served.query(f"SELECT actor FROM approvals WHERE step_id = {step_id}") == [("carol@example.com",)]


def test_two_person_rule_in_production(slack):
    channel = "C0PROD"
    card, action_id, step_id = slack.plan_card(channel, user="U0BOB",
                                               text="diagnose payments-api is returning 500s in production")
    slack.click(action_id, step_id, channel=channel, message_ts=card["ts"], user="U0BOB")
    slack.wait_for_ephemeral(channel, "U0BOB", "two-person rule")
    assert slack.served.query(f"SELECT status FROM plan_steps WHERE id = {step_id}") == [("proposed",)]
    slack.click(action_id, step_id, channel=channel, message_ts=card["ts"], user="U0CAROL")
    slack.standin.wait_for(lambda: slack.served.query(
        f"SELECT status FROM plan_steps WHERE id = {step_id}")[0][0] != "proposed")


def test_feedback_buttons_are_stored(slack):
    channel = "C0FEEDBACK"
    slack.command("diagnose payments-api is returning 500s", channel=channel)
    card = slack.wait_for_message(channel, lambda m: "warroom on" in _text_of(m))
    up = next((a, v) for a, v in _buttons(card).items() if a.startswith("warroom_feedback_up_"))
    slack.click(up[0], up[1], channel=channel, message_ts=card["ts"], user="U0CAROL")
    slack.wait_for_ephemeral(channel, "U0CAROL", "recorded")
    title = json.loads(up[1])["title"]
    assert slack.served.query(
        "SELECT title, helpful, actor FROM hypothesis_feedback WHERE actor = 'carol@example.com'"
    ) == [(title, True, "carol@example.com")]


# --- events: retries, mentions, alert threads ---------------------------------------------------------------

def test_a_retried_event_is_handled_once(slack):
    channel = "C0RETRY"
    text = "<@U0WARROOM> why is payments-api returning 500s?"
    said = slack.standin.add_message(channel, text=text, user="U0ALICE")
    mention = app_mention_event(channel, text, user="U0ALICE", ts=said["ts"])
    slack.send_event(mention, event_id="Ev0RETRY1")
    slack.send_event(mention, event_id="Ev0RETRY1", headers={"X-Slack-Retry-Num": "1",
                                                              "X-Slack-Retry-Reason": "http_timeout"})
    slack.wait_for_message(channel, lambda m: "warroom on" in _text_of(m))
    time.sleep(3)
    answers = [m for m in slack.standin.messages(channel) if m.get("bot_id") and "warroom on" in _text_of(m)]
    assert len(answers) == 1 and answers[0]["thread_ts"] == said["ts"]  # answered in a thread under the mention


def test_a_mention_in_a_thread_answers_there_with_the_thread_as_context(slack):
    channel = "C0THREAD"
    parent = slack.standin.add_message(channel, text="checkout is failing for customers", user="U0ALICE")
    slack.standin.add_message(channel, text="payments-api is returning 500 errors since the deploy",
                              user="U0CAROL", thread_ts=parent["ts"])
    slack.send_event(app_mention_event(channel, "<@U0WARROOM> what is going on?", user="U0ALICE",
                                       thread_ts=parent["ts"]))
    answer = slack.wait_for_message(channel, lambda m: m.get("thread_ts") == parent["ts"])
    assert "Payments API elevated 5xx rate" in _text_of(answer)  # found through the thread, not the question
    assert any(c.params.get("ts") == parent["ts"] for c in slack.standin.calls_to("conversations.replies"))


def test_webhook_alerts_get_a_parent_message_and_an_annotation_in_its_thread(slack):
    firing = (_examples() / "alerts/payments-high-error-rate-firing.json").read_bytes()
    assert slack.served.post("/hooks/alertmanager", firing)[0] == 202
    parent = slack.wait_for_message(ALERTS, lambda m: "PaymentsHighErrorRate" in _text_of(m)
                                    and m.get("thread_ts") is None)
    annotation = slack.wait_for_message(ALERTS, lambda m: m.get("thread_ts") == parent["ts"])
    assert "warroom on PaymentsHighErrorRate" in _text_of(annotation)
    # the parent offers "Mark as noise", which feeds the alert's noise score (tests/test_noise.py)
    value = _buttons(parent)["warroom_alert_noise"]
    slack.click("warroom_alert_noise", value, channel=ALERTS, message_ts=parent["ts"], user="U0CAROL")
    slack.wait_for_ephemeral(ALERTS, "U0CAROL", "Recorded: PaymentsHighErrorRate is noise")
    assert slack.served.query("SELECT alert_name, verdict, actor FROM alert_verdicts") \
        == [("PaymentsHighErrorRate", "noise", "carol@example.com")]


def test_the_bot_never_answers_its_own_messages(slack):
    text = "[FIRING:1] DiskWillFillIn4Hours (node-exporter critical)"
    mine = slack.standin.add_message(ALERTS, text=text, bot_id="B0WARROOM", subtype="bot_message",
                                     user="U0WARROOM")
    slack.send_event(message_event(ALERTS, text, bot_id="B0WARROOM", subtype="bot_message", user="U0WARROOM",
                                   ts=mine["ts"]))
    slack.send_event(app_mention_event("C0SELF", "<@U0WARROOM> diagnose me", user="U0WARROOM"))
    time.sleep(3)
    assert [m for m in slack.standin.messages(ALERTS) if m.get("thread_ts") == mine["ts"]] == []
    assert slack.served.query(f"SELECT count(*) FROM chat_messages WHERE message_id = '{mine['ts']}'") == [(0,)]
    assert slack.served.query("SELECT count(*) FROM alerts WHERE name = 'DiskWillFillIn4Hours'") == [(0,)]
    assert slack.standin.messages("C0SELF") == []


def _examples():
    from tests.conftest import EXAMPLES

    return EXAMPLES


def test_incident_lifecycle_from_slash_commands(slack):
    payload = json.loads((_examples() / "alerts/payments-high-error-rate-firing.json").read_text())
    for labels in [payload["commonLabels"], payload["groupLabels"], *(a["labels"] for a in payload["alerts"])]:
        labels["alertname"] = "LifecycleCheck"
    for alert in payload["alerts"]:
        alert.pop("fingerprint", None)  # Alertmanager's fingerprint follows the labels
    assert slack.served.post("/hooks/alertmanager", json.dumps(payload).encode())[0] == 202
    slack.wait_for_message(ALERTS, lambda m: "LifecycleCheck" in _text_of(m) and m.get("thread_ts") is None)
    slack.standin.wait_for(lambda: slack.served.query(
        "SELECT count(*) FROM incidents WHERE title LIKE 'LifecycleCheck%'")[0][0] == 1)

    slack.command("status", channel=ALERTS)
    slack.wait_for_message(ALERTS, lambda m: "DETECTED" in _text_of(m) and "LifecycleCheck" in _text_of(m))
    slack.command("ack", channel=ALERTS)
    slack.wait_for_message(ALERTS, lambda m: "Acknowledged by alice" in _text_of(m))
    slack.command("ack", channel=ALERTS, user="U0BOB")
    slack.wait_for_ephemeral(ALERTS, "U0BOB", "Already acknowledged")
    slack.command("escalate need a DBA", channel=ALERTS)
    slack.wait_for_message(ALERTS, lambda m: "Escalated by alice" in _text_of(m) and "need a DBA" in _text_of(m))
    slack.command("resolve rolled back the deploy", channel=ALERTS, user="U0CAROL")
    slack.wait_for_message(ALERTS, lambda m: "Resolved by carol" in _text_of(m))
    timeline = slack.served.query(
        "SELECT t.from_state, t.to_state, t.actor, t.note FROM incident_transitions t JOIN incidents i "
        "ON i.id = t.incident_id WHERE i.title LIKE 'LifecycleCheck%' ORDER BY t.id")
    assert timeline == [(None, "DETECTED", "warroom", "opened"),
                        ("DETECTED", "ACKNOWLEDGED", "U0ALICE", None),
                        ("ACKNOWLEDGED", "ACKNOWLEDGED", "U0ALICE", "escalated: need a DBA"),
                        ("ACKNOWLEDGED", "RESOLVED", "U0CAROL", "rolled back the deploy")]
    assert slack.standin.violations == []


FIXTURES = Path(__file__).parent / "fixtures/slack_integrations"


def _post_integration_message(slack, fixture: str) -> dict:
    """Another integration posts in the alert channel: the message exists in Slack, then its event arrives."""
    inner = json.loads((FIXTURES / fixture).read_text())["event"]
    stored = slack.standin.add_message(ALERTS, text=inner.get("text") or "", bot_id=inner.get("bot_id"),
                                       subtype=inner.get("subtype"), attachments=inner.get("attachments"),
                                       blocks=inner.get("blocks"))
    slack.send_event({**inner, "channel": ALERTS, "ts": stored["ts"], "event_ts": stored["ts"]})
    return stored


@pytest.mark.parametrize("fixture", ["alertmanager_firing_default_template.json", "grafana_firing.json",
                                     "pagerduty_triggered.json", "datadog_triggered.json",
                                     "opsgenie_created.json"])
def test_alert_messages_of_other_integrations_are_annotated_in_their_thread(slack, fixture):
    posted = _post_integration_message(slack, fixture)
    annotation = slack.wait_for_message(ALERTS, lambda m: m.get("thread_ts") == posted["ts"]
                                        and "warroom on" in _text_of(m))
    assert "Hypotheses" in _text_of(annotation) or "confidence" in _text_of(annotation)
    slack.standin.wait_for(lambda: any(r.get("timestamp") == posted["ts"] and r.get("name") == "eyes"
                                       for r in slack.standin.reactions))
    # warroom posted no parent of its own for it
    assert slack.served.query(
        f"SELECT count(*) FROM chat_messages WHERE platform = 'slack' AND message_id = '{posted['ts']}'")[0][0] >= 1
    # and links it the way Slack does, so summaries can cite the integration's message
    from slack_sdk import WebClient

    expected = WebClient(token=slack.standin.bot_token, base_url=slack.standin.url).chat_getPermalink(
        channel=ALERTS, message_ts=posted["ts"])["permalink"]
    [(link,)] = slack.served.query(
        f"SELECT DISTINCT permalink FROM chat_messages WHERE platform = 'slack' AND message_id = '{posted['ts']}'")
    assert link == expected


def test_a_reposted_alert_is_not_annotated_twice_and_its_resolution_lands_in_the_first_thread(slack):
    first = _post_integration_message(slack, "alertmanager_firing_grouped.json")  # two crash-looping pods
    slack.standin.wait_for(lambda: len([m for m in slack.standin.messages(ALERTS)
                                        if m.get("thread_ts") == first["ts"] and "warroom on" in _text_of(m)]) == 2)
    repeat = _post_integration_message(slack, "alertmanager_firing_grouped_repeat.json")  # repeat_interval
    time.sleep(4)
    assert [m for m in slack.standin.messages(ALERTS) if m.get("thread_ts") == repeat["ts"]] == []
    assert slack.served.query("SELECT count(*), min(notifications) FROM alerts WHERE name = 'KubePodCrashLooping' "
                              "AND status = 'firing'") == [(2, 2)]
    _post_integration_message(slack, "alertmanager_resolved_grouped.json")
    slack.standin.wait_for(lambda: len([m for m in slack.standin.messages(ALERTS)
                                        if m.get("thread_ts") == first["ts"] and "Resolved" in _text_of(m)]) == 2)
    assert slack.standin.violations == []
