"""The Teams adapter end to end: `warroom serve` receives Bot Framework activities shaped like Teams' own
captures (shared corpus), and the real botbuilder client inside it replies to a Bot Framework connector
stand-in on loopback (the activities' serviceUrl). Every Adaptive Card the stand-in receives is validated
against the official 1.5 schema; Teams' message size and per-conversation rate limits are enforced there."""
import json
import threading
import time
from datetime import datetime, timezone

import pytest

from bot.teams.cards import MAX_CARD_BYTES, render, size
from engine.cards import Card, CardStep, HypothesesBlock, StepsBlock
from engine.models import Evidence, Hypothesis
from tests.conftest import EXAMPLES, RecordingTarget, runbook_yaml, warroom
from tests.http_helpers import texts_in
from tests.served import Served
from tests.teams_standin import (TeamsStandIn, bot_added, card_action, card_violations, channel_mention,
                                 personal_message)

TENANT = "50612dbb-0237-4969-b378-8d42590f9c00"
TEAM = "19:66P469zibfbsGI-_a0aN_toLTZpyzS6u7CT3TsXdgPw1@thread.tacv2"
ALERTS = "19:a1e575a1e575a1e575a1e575a1e575a1@thread.tacv2"
BOT = {"id": "28:0b6fe6d1-fece-44f7-9a48-56465e2d5ab8", "name": "warroom"}
ALICE = {"id": "29:1alice", "name": "Alice", "aadObjectId": "a11ce000-0000-4000-8000-000000000001"}
BOB = {"id": "29:1bob", "name": "Bob", "aadObjectId": "b0b00000-0000-4000-8000-000000000002"}
CAROL = {"id": "29:1carol", "name": "Carol", "aadObjectId": "ca201000-0000-4000-8000-000000000003"}
DAVE = {"id": "29:1dave", "name": "Dave", "aadObjectId": "da4e0000-0000-4000-8000-000000000004"}
MEMBERS = {  # what GET /v3/conversations/{id}/members/{userId} answers
    ALICE["id"]: {"name": "Alice", "aadObjectId": ALICE["aadObjectId"], "email": "alice@example.com",
                  "userPrincipalName": "alice@example.com", "tenantId": TENANT},
    BOB["id"]: {"name": "Bob", "aadObjectId": BOB["aadObjectId"], "email": "bob@example.com",
                "userPrincipalName": "bob@example.com", "tenantId": TENANT},
    # a guest account: no mailbox, so no email, only a UPN
    CAROL["id"]: {"name": "Carol", "aadObjectId": CAROL["aadObjectId"], "userPrincipalName": "carol@example.com",
                  "tenantId": TENANT},
    # a mailbox whose address is not the sign-in name
    DAVE["id"]: {"name": "Dave", "aadObjectId": DAVE["aadObjectId"], "email": "dave@example.com",
                 "userPrincipalName": "dsmith@corp.example.com", "tenantId": TENANT},
}
CONFIG = f"""
teams:
  alert_conversation: "{ALERTS}"
policy:
  approvers: [{BOB["aadObjectId"]}, carol@example.com, dsmith@corp.example.com]
  auto_run_read_only: true
  two_person_rule: true
"""
INVOKE_DEADLINE_S = 5.0


@pytest.fixture(scope="module")
def target():
    with RecordingTarget() as server:
        yield server


@pytest.fixture(scope="module")
def teams(tmp_path_factory, target):
    """One `warroom serve` in Emulator mode (no MicrosoftAppId), its connector stand-in and a step target."""
    root = tmp_path_factory.mktemp("teams")
    (root / "warroom.yml").write_text(CONFIG)
    (root / "runbook.yaml").write_text(runbook_yaml(target.url("/health")))
    env = {"WARROOM_DATA_DIR": str(root / "data"), "WARROOM_CONFIG": str(root / "warroom.yml")}
    ingested = warroom("ingest", str(root / "runbook.yaml"), env={**env, "DATABASE_URL": "", "REDIS_URL": ""})
    assert ingested.returncode == 0, ingested.stderr
    standin = TeamsStandIn(users=MEMBERS).start()
    served = Served(root / "data", WARROOM_CONFIG=str(root / "warroom.yml"),
                    WARROOM_PUBLIC_URL="https://warroom.example.com")
    deploy = {"service": "payments-api", "kind": "deploy", "summary": "payments-api v2.14.0 rolled out",
              "version": "v2.14.0", "author": "ci", "at": datetime.now(timezone.utc).isoformat()}
    assert served.post("/hooks/changes", json.dumps(deploy).encode())[0] == 202
    yield Teams(served, standin)
    served.stop()
    standin.stop()


class Teams:
    def __init__(self, served: Served, standin: TeamsStandIn) -> None:
        self.served = served
        self.standin = standin

    def send(self, activity: dict, headers: dict | None = None):
        status, body = self.served.request("POST", "/api/messages", json.dumps(activity).encode(), headers)
        return status, json.loads(body) if body else None

    def mention(self, text: str, *, channel: str, user: dict = ALICE, root: str | None = None) -> dict:
        """@warroom in a channel; `root` is the thread it was said in (its own id for a new post)."""
        activity_id = str(time.time_ns() // 1000)
        activity = channel_mention(text, service_url=self.standin.url, channel=channel, root=root or activity_id,
                                   user=user, bot=BOT, activity_id=activity_id)
        status, _ = self.send(activity)
        assert status == 200
        return activity

    def chat(self, text: str, *, conversation: str, user: dict = ALICE) -> None:
        status, _ = self.send(personal_message(text, service_url=self.standin.url, conversation=conversation,
                                               user=user, bot=BOT, activity_id=str(time.time_ns())))
        assert status == 200

    def click(self, verb: str, data: dict, *, channel: str, root: str, message_id: str, user: dict):
        """Action.Execute on a card in a channel thread; returns (HTTP status, invoke response, seconds)."""
        activity = card_action(verb, data, service_url=self.standin.url, reply_to=message_id, user=user, bot=BOT,
                               conversation={"id": f"{channel};messageid={root}", "isGroup": True,
                                             "conversationType": "channel", "tenantId": TENANT},
                               channel_data={"team": {"id": TEAM}, "channel": {"id": channel}})
        started = time.monotonic()
        status, body = self.send(activity)
        return status, body, time.monotonic() - started

    def wait_for_message(self, channel: str, predicate=lambda m: True, timeout: float = 60) -> dict:
        return self.standin.wait_for(lambda: next((m for m in self.standin.messages(channel) if predicate(m)), None),
                                     timeout=timeout)

    def message(self, channel: str, message_id: str) -> dict:
        return next(m for m in self.standin.messages(channel) if m["id"] == message_id)

    def plan_card(self, channel: str, *, user: dict = ALICE, text: str = "diagnose payments-api is returning 500s"):
        """Ask in a channel; returns (the thread root, the plan card, the restart step's id)."""
        asked = self.mention(text, channel=channel, user=user)
        card = self.wait_for_message(channel, lambda m: "warroom on" in text_of(m))
        return asked["id"], card, step_of(card, "Restart payments-api")


def card_of(message: dict) -> dict:
    return next(a["content"] for a in message["attachments"] if a["contentType"].endswith("card.adaptive"))


def text_of(message: dict) -> str:
    """Everything a message says: its text and every text of its card."""
    return "\n".join([message.get("text") or "", *texts_in(message.get("attachments") or [])])


def actions_of(message: dict) -> list[dict]:
    found = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "Action.Execute":
                found.append(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(message.get("attachments") or [])
    return found


def step_of(message: dict, title: str) -> int:
    """The step id behind the Approve button of the step titled `title`."""
    for container in card_of(message)["body"]:
        if container.get("type") == "Container" and title in json.dumps(container.get("items")):
            for action in actions_of({"attachments": [{"content": container}]}):
                if action["verb"] == "approve":
                    return action["data"]["step_id"]
    raise AssertionError(f"no Approve for {title!r}")


def step_status(teams: Teams, step_id: int) -> str:
    return teams.served.query(f"SELECT status FROM plan_steps WHERE id = {step_id}")[0][0]


# --- conversation ---------------------------------------------------------------------------------------

def test_a_mention_in_a_channel_gets_a_schema_valid_card_in_its_thread(teams, target):
    channel = "19:d1a90000000000000000000000000001@thread.tacv2"
    asked = teams.mention("diagnose payments-api is returning 500s", channel=channel)
    card = teams.wait_for_message(channel, lambda m: "warroom on" in text_of(m))
    assert card["thread"] == asked["id"]  # answered in the thread the mention started
    content = card_of(card)
    assert card_violations(content) == [] and content["version"] == "1.5"
    text = text_of(card)
    assert "confidence" in text and "Sources" in text and "Payments API elevated 5xx rate" in text
    verbs = {(a["verb"], a["data"].get("step_id")) for a in actions_of(card)}
    step_id = step_of(card, "Restart payments-api")
    assert ("approve", step_id) in verbs and ("reject", step_id) in verbs
    assert all(a["type"] == "Action.Execute" for a in actions_of(card))  # Universal Actions only
    # the read-only step ran by policy and the card was redrawn in place with its result
    teams.standin.wait_for(lambda: "succeeded" in text_of(teams.message(channel, card["id"])))
    assert teams.message(channel, card["id"])["updates"] >= 1
    assert "/health" in target.paths()
    assert teams.standin.violations == []


def test_personal_chat_needs_no_mention_and_help_is_answered(teams):
    chat = "a:1personal-alice-help"
    teams.chat("runbook payments-api 500 errors", conversation=chat)
    card = teams.wait_for_message(chat, lambda m: "warroom on" in text_of(m))
    assert "Restart payments-api" in text_of(card) and card["thread"] is None
    teams.chat("help", conversation=chat)
    teams.wait_for_message(chat, lambda m: "diagnose <what is wrong>" in text_of(m))
    assert teams.standin.violations == []


def test_the_same_activity_delivered_twice_is_answered_once(teams):
    channel = "19:d1a90000000000000000000000000002@thread.tacv2"
    activity = teams.mention("why is payments-api throwing 500s?", channel=channel)
    assert teams.send(activity)[0] == 200  # the connector re-delivers what it thinks we missed
    teams.wait_for_message(channel, lambda m: "warroom on" in text_of(m))
    time.sleep(3)
    assert len([m for m in teams.standin.messages(channel) if "warroom on" in text_of(m)]) == 1


def test_conversation_update_is_accepted_and_says_nothing(teams):
    channel = "19:d1a90000000000000000000000000003@thread.tacv2"
    status, _ = teams.send(bot_added(service_url=teams.standin.url, channel=channel, team=TEAM, bot=BOT,
                                     user=ALICE, tenant=TENANT))
    assert status == 200
    time.sleep(1)
    assert teams.standin.messages(channel) == []


def test_unauthenticated_mode_answers_only_loopback_service_urls(teams):
    activity = channel_mention("diagnose payments-api", service_url="https://smba.example.net/amer/",
                               channel="19:ssrf@thread.tacv2", root="1", user=ALICE, bot=BOT, activity_id="1")
    assert teams.send(activity)[0] == 401
    assert teams.served.query("SELECT count(*) FROM outbox WHERE channel = '19:ssrf@thread.tacv2'") == [(0,)]


# --- approvals ------------------------------------------------------------------------------------------

def test_a_non_approver_is_told_why_in_the_invoke_answer_and_nothing_runs(teams):
    channel = "19:d1a90000000000000000000000000004@thread.tacv2"
    root, card, step_id = teams.plan_card(channel, user=BOB)
    status, answer, took = teams.click("approve", {"verb": "approve", "step_id": step_id}, channel=channel,
                                       root=root, message_id=card["id"], user=ALICE)
    assert status == 200 and took < INVOKE_DEADLINE_S
    assert answer["statusCode"] == 200 and answer["type"] == "application/vnd.microsoft.activity.message"
    assert "not an approver" in answer["value"]
    time.sleep(1)
    assert teams.served.query(f"SELECT status, attempts FROM plan_steps WHERE id = {step_id}") == [("proposed", 0)]
    assert teams.served.query(
        f"SELECT actor FROM audit_log WHERE action = 'step.approval_refused' AND subject = 'step:{step_id}'"
    ) == [("alice@example.com",)]


def test_an_approver_clicking_twice_runs_the_step_once_and_the_card_is_updated(teams, target):
    channel = "19:d1a90000000000000000000000000005@thread.tacv2"
    root, card, step_id = teams.plan_card(channel, user=ALICE)
    answers = []

    def click():
        answers.append(teams.click("approve", {"verb": "approve", "step_id": step_id}, channel=channel, root=root,
                                   message_id=card["id"], user=BOB))

    clickers = [threading.Thread(target=click) for _ in range(2)]  # a double click: two invokes at once
    for clicker in clickers:
        clicker.start()
    for clicker in clickers:
        clicker.join()
    assert [a[0] for a in answers] == [200, 200] and all(a[2] < INVOKE_DEADLINE_S for a in answers)
    assert any("running it now" in a[1]["value"] for a in answers)
    teams.standin.wait_for(lambda: step_status(teams, step_id) == "succeeded")
    assert teams.served.query(f"SELECT attempts FROM plan_steps WHERE id = {step_id}") == [(1,)]
    assert teams.served.query(f"SELECT actor FROM approvals WHERE step_id = {step_id}") == [("bob@example.com",)]
    assert target.paths().count("/health?restart=1") >= 1

    def updated() -> bool:
        message = teams.message(channel, card["id"])
        return "by bob@example.com" in text_of(message) and "succeeded" in text_of(message)

    teams.standin.wait_for(updated)
    after = teams.message(channel, card["id"])
    assert ("approve", step_id) not in {(a["verb"], a["data"].get("step_id")) for a in actions_of(after)}
    updates = [c for c in teams.standin.calls_to("update", channel) if c["path"][4] == card["id"]]
    assert updates and all(";messageid=" + root in c["path"][2] for c in updates)  # PUT in its thread
    assert teams.standin.violations == []


def test_an_approver_listed_by_upn_may_approve(teams):
    channel = "19:d1a90000000000000000000000000006@thread.tacv2"
    root, card, step_id = teams.plan_card(channel, user=ALICE)
    status, answer, _ = teams.click("approve", {"verb": "approve", "step_id": step_id}, channel=channel, root=root,
                                    message_id=card["id"], user=CAROL)
    assert status == 200 and "running it now" in answer["value"]
    assert teams.served.query(f"SELECT actor FROM approvals WHERE step_id = {step_id}") == [("carol@example.com",)]


def test_an_approver_listed_by_upn_may_approve_even_when_the_email_differs(teams):
    channel = "19:d1a90000000000000000000000000009@thread.tacv2"
    root, card, step_id = teams.plan_card(channel, user=ALICE)
    status, answer, _ = teams.click("approve", {"verb": "approve", "step_id": step_id}, channel=channel, root=root,
                                    message_id=card["id"], user=DAVE)
    assert status == 200 and "running it now" in answer["value"]
    assert teams.served.query(f"SELECT actor FROM approvals WHERE step_id = {step_id}") == [("dave@example.com",)]


def test_reject_and_feedback(teams):
    channel = "19:d1a90000000000000000000000000007@thread.tacv2"
    root, card, step_id = teams.plan_card(channel, user=ALICE)
    status, answer, _ = teams.click("reject", {"verb": "reject", "step_id": step_id}, channel=channel, root=root,
                                    message_id=card["id"], user=BOB)
    assert status == 200 and "Rejected" in answer["value"]
    assert step_status(teams, step_id) == "rejected"
    feedback = next(a for a in actions_of(card) if a["verb"] == "feedback" and a["data"]["helpful"])
    status, answer, _ = teams.click("feedback", feedback["data"], channel=channel, root=root, message_id=card["id"],
                                    user=CAROL)
    assert status == 200 and "recorded" in answer["value"]
    assert teams.served.query("SELECT helpful, actor FROM hypothesis_feedback WHERE actor = 'carol@example.com'") \
        == [(True, "carol@example.com")]


# --- alerts, limits -------------------------------------------------------------------------------------

def test_webhook_alerts_are_posted_proactively_and_annotated_in_their_reply_chain(teams):
    # Installing the app in the team is what tells the bot where the alert channel lives.
    assert teams.send(bot_added(service_url=teams.standin.url, channel=ALERTS, team=TEAM, bot=BOT, user=ALICE,
                                tenant=TENANT))[0] == 200
    firing = (EXAMPLES / "alerts/payments-high-error-rate-firing.json").read_bytes()
    assert teams.served.post("/hooks/alertmanager", firing)[0] == 202
    parent = teams.wait_for_message(ALERTS, lambda m: "PaymentsHighErrorRate" in text_of(m) and m["thread"] is None)
    assert any(c["body"]["activity"]["attachments"] for c in teams.standin.calls_to("create", ALERTS))
    annotation = teams.wait_for_message(ALERTS, lambda m: m["thread"] == parent["id"])
    assert "warroom on PaymentsHighErrorRate" in text_of(annotation)
    noise = next(a for a in actions_of(parent) if a["verb"] == "alert" and a["data"]["action"] == "noise")
    status, answer, _ = teams.click("alert", noise["data"], channel=ALERTS, root=parent["id"],
                                    message_id=parent["id"], user=ALICE)
    assert status == 200 and "Recorded: PaymentsHighErrorRate is noise" in answer["value"]
    assert teams.served.query("SELECT verdict, actor FROM alert_verdicts") == [("noise", "alice@example.com")]
    assert teams.standin.violations == []


def test_429_412_502_504_are_retried_and_the_message_arrives_once(teams):
    chat = "a:1personal-alice-flaky"
    teams.standin.fail_next("send", 429, channel=chat, retry_after=1)
    for status in (412, 502, 504):
        teams.standin.fail_next("send", status, channel=chat)
    teams.chat("help", conversation=chat)
    teams.wait_for_message(chat, lambda m: "diagnose <what is wrong>" in text_of(m), timeout=90)
    time.sleep(1)
    assert len(teams.standin.messages(chat)) == 1
    sends = teams.standin.calls_to("send", chat)
    assert len(sends) == 5
    assert sends[1]["at"] - sends[0]["at"] >= 0.9  # Retry-After was honoured


def test_a_burst_is_paced_under_teams_limits(teams):
    chat = "a:1personal-alice-burst"
    for _ in range(12):
        teams.chat("help", conversation=chat)
    teams.standin.wait_for(lambda: len(teams.standin.messages(chat)) == 12, timeout=90)
    assert teams.standin.rate_limited == []
    sends = sorted(c["at"] for c in teams.standin.calls_to("send", chat))
    assert all(later - earlier >= 1.0 for earlier, later in zip(sends, sends[7:]))  # never 8 within a second


def test_a_huge_card_is_cut_to_fit_and_stays_valid():
    evidence = [Evidence(kind="alert", text="e" * 3000)] * 40
    hypotheses = [Hypothesis(title=f"cause {i}", cause="c" * 5000, confidence=0.5, evidence=evidence)
                  for i in range(3)]
    steps = [CardStep(step_id=i, index=i, title="s" * 200, connector="http", risk="state_change", status="proposed",
                      actions=["approve", "reject"]) for i in range(1, 30)]
    card = Card(kind="annotation", title="T" * 400,
                blocks=[HypothesesBlock(items=hypotheses), StepsBlock(plan_id=1, title="Plan", items=steps)])
    rendered = render(card, more_url="https://warroom.example.com/cards/1?sig=x")
    assert size(rendered) <= MAX_CARD_BYTES and card_violations(rendered) == []
    assert len([a for a in actions_of({"attachments": [{"content": rendered}]}) if a["verb"] == "approve"]) == 29
    assert "https://warroom.example.com/cards/1" in json.dumps(rendered)


# --- authentication --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def authenticated(tmp_path_factory):
    root = tmp_path_factory.mktemp("teams-auth")
    standin = TeamsStandIn(users=MEMBERS).start()
    served = Served(root / "data", MicrosoftAppId="00000000-0000-4000-8000-00000000b075",
                    MicrosoftAppPassword="not-a-real-secret")
    yield served, standin
    served.stop()
    standin.stop()


def test_with_an_app_id_requests_without_a_valid_token_get_401_and_touch_nothing(authenticated):
    served, standin = authenticated
    channel = "19:f0a9ed0000000000000000000000000@thread.tacv2"
    activity = channel_mention("diagnose payments-api is returning 500s", service_url=standin.url, channel=channel,
                               root="1", user=ALICE, bot=BOT, activity_id="1")
    body = json.dumps(activity).encode()
    forged = ("eyJhbGciOiJSUzI1NiIsImtpZCI6ImZvcmdlZCIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJodHRwczovL2FwaS5ib3RmcmFtZXdv"
              "cmsuY29tIiwiYXVkIjoiMDAwMDAwMDAtMDAwMC00MDAwLTgwMDAtMDAwMDAwMDBiMDc1IiwiZXhwIjo0MTAyNDQ0ODAwfQ.c2ln")
    for headers in ({}, {"Authorization": "Bearer not-a-jwt"}, {"Authorization": f"Bearer {forged}"}):
        status, _ = served.request("POST", "/api/messages", body, headers)
        assert status == 401, headers
    time.sleep(1)
    assert standin.calls == []
    assert served.query(f"SELECT count(*) FROM outbox WHERE channel = '{channel}'") == [(0,)]
    assert served.query(f"SELECT count(*) FROM plans WHERE channel = '{channel}'") == [(0,)]


def test_the_app_package_is_complete():
    """teams/manifest.json names the bot and both icons, at the sizes Teams requires."""
    import struct
    import uuid

    from tests.conftest import ROOT

    package = ROOT / "teams"
    manifest = json.loads((package / "manifest.json").read_text())
    assert manifest["manifestVersion"] == "1.17" and f"v{manifest['manifestVersion']}" in manifest["$schema"]
    uuid.UUID(manifest["id"])
    bot = manifest["bots"][0]
    uuid.UUID(bot["botId"])
    assert set(bot["scopes"]) == {"personal", "team", "groupChat"}
    assert len(manifest["name"]["short"]) <= 30 and len(manifest["description"]["short"]) <= 80
    for name, side in (("color", 192), ("outline", 32)):
        data = (package / manifest["icons"][name]).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", data[16:24]) == (side, side)
