"""The Slack stand-in, exercised with the real slack_sdk / slack_bolt clients it stands in for."""
from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import parse_qsl

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from tests.slack_standin import (CORPUS, SlackStandIn, app_mention_event, block_action, event, message_event, sign,
                                 signed_headers, slash_command, socket_envelope)

CHANNEL = "C0INCIDENT"
USERS = {"U0ALICE": {"name": "alice", "email": "alice@example.com", "real_name": "Alice Doe"}}


@pytest.fixture
def slack():
    with SlackStandIn(users=USERS) as standin:
        yield standin


@pytest.fixture
def web(slack) -> WebClient:
    return WebClient(token=slack.bot_token, base_url=slack.url)


@pytest.fixture
def aweb(slack) -> AsyncWebClient:
    return AsyncWebClient(token=slack.bot_token, base_url=slack.url)


def card(buttons: int = 2, label: str = "Approve") -> list[dict]:
    return [
        {"type": "header", "text": {"type": "plain_text", "text": "payments-api: elevated 5xx"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "*Likely cause:* a bad deploy"},
         "fields": [{"type": "mrkdwn", "text": "*Service*\npayments-api"}, {"type": "mrkdwn", "text": "*Sev*\n2"}]},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "runbook payments-high-error-rate"}]},
        {"type": "divider"},
        {"type": "actions", "block_id": "plan-7",
         "elements": [{"type": "button", "text": {"type": "plain_text", "text": label if i == 0 else f"Reject {i}"},
                       "action_id": f"warroom_{i}", "value": f"step-{i}", "style": "primary" if i == 0 else "danger",
                       **({"confirm": {"title": {"type": "plain_text", "text": "Sure?"},
                                       "text": {"type": "mrkdwn", "text": "Restarts payments-api"},
                                       "confirm": {"type": "plain_text", "text": "Run"},
                                       "deny": {"type": "plain_text", "text": "Cancel"}}} if i == 0 else {})}
                      for i in range(buttons)]},
    ]


# ---- signing and builders ---------------------------------------------------------------------------


def test_sign_matches_the_known_answer_vector_and_slack_sdk_verifier():
    vector = json.loads((CORPUS / "signature-test-vector.json").read_text())
    headers = sign(vector["signing_secret"], vector["body"], int(vector["timestamp"]))
    assert headers == {"X-Slack-Request-Timestamp": vector["timestamp"],
                       "X-Slack-Signature": vector["expected_signature"]}
    body, content_type = slash_command("status")
    fresh = signed_headers("s3cret", body, content_type)
    assert SignatureVerifier("s3cret").is_valid_request(body, fresh)
    assert not SignatureVerifier("other").is_valid_request(body, fresh)


async def test_builders_are_understood_by_bolt(slack):
    """Signed builder output dispatched through a real AsyncApp reaches the matching listeners."""
    from slack_bolt.app.async_app import AsyncApp
    from slack_bolt.request.async_request import AsyncBoltRequest

    app = AsyncApp(signing_secret="s3cret", client=AsyncWebClient(token=slack.bot_token, base_url=slack.url))
    seen: list[tuple] = []

    @app.command("/warroom")
    async def command(ack, command):
        await ack()
        seen.append(("command", command["text"], command["channel_id"], command["user_id"]))

    @app.action("warroom_approve")
    async def action(ack, body, action):
        await ack()
        seen.append(("action", action["value"], body["container"]["message_ts"], body["message"]["thread_ts"],
                     action["block_id"]))

    @app.event("app_mention")
    async def mention(event):
        seen.append(("mention", event["text"], event["thread_ts"]))

    @app.event("message")
    async def message(event):
        seen.append(("message", event["text"], event.get("bot_id")))

    clicked = {"type": "message", "ts": "1.000100", "text": "plan", "blocks": card()}
    clicked["blocks"][4]["elements"][0]["action_id"] = "warroom_approve"
    requests = [slash_command("status payments-api"),
                block_action("warroom_approve", "step-0", channel=CHANNEL, message_ts="1.000100",
                             thread_ts="1.000000", message=clicked),
                event(app_mention_event(CHANNEL, "<@U0WARROOM> help", user="U0ALICE", thread_ts="1.000000")),
                event(message_event(CHANNEL, "deploy done", bot_id="B0CI", user="U0CI"))]
    for body, content_type in requests:
        response = await app.async_dispatch(AsyncBoltRequest(body=body.decode(),
                                                             headers=signed_headers("s3cret", body, content_type)))
        assert response.status == 200, response.body
    for _ in range(50):  # event listeners run after the ack
        if len(seen) == 4:
            break
        await asyncio.sleep(0.02)
    assert sorted(seen) == sorted([
        ("command", "status payments-api", CHANNEL, "U0ALICE"),
        ("action", "step-0", "1.000100", "1.000000", "plan-7"),
        ("mention", "<@U0WARROOM> help", "1.000000"),
        ("message", "deploy done", "B0CI"),
    ])


def test_builder_shapes_follow_the_corpus_templates():
    fields = dict(parse_qsl(slash_command("x", response_url="http://r")[0].decode(), keep_blank_values=True))
    assert {"token", "team_id", "team_domain", "channel_id", "channel_name", "user_id", "user_name", "command",
            "text", "response_url", "trigger_id", "api_app_id"} <= set(fields)
    assert "enterprise_id" not in fields and fields["response_url"] == "http://r"

    payload = json.loads(dict(parse_qsl(block_action("a", "v", channel=CHANNEL, message_ts="2.0")[0].decode()))
                         ["payload"])
    assert payload["type"] == "block_actions" and payload["api_app_id"] == "A0WARROOM"
    assert payload["container"] == {"type": "message", "message_ts": "2.0", "channel_id": CHANNEL,
                                    "is_ephemeral": False}
    assert payload["message"]["ts"] == "2.0" and payload["actions"][0]["value"] == "v"

    envelope = json.loads(event(message_event(CHANNEL, "hi <@U0BOB>", user="U0ALICE"))[0])
    assert envelope["type"] == "event_callback" and envelope["authorizations"][0]["user_id"] == "U0WARROOM"
    inner = envelope["event"]
    assert inner["client_msg_id"] and inner["channel_type"] == "channel" and inner["event_ts"] == inner["ts"]
    assert inner["blocks"][0]["elements"][0]["elements"][1] == {"type": "user", "user_id": "U0BOB"}
    first, second = json.loads(event({})[0]), json.loads(event({})[0])
    assert first["event_id"] != second["event_id"]
    assert float(message_event(CHANNEL, "a")["ts"]) < float(message_event(CHANNEL, "b")["ts"])
    assert socket_envelope(*slash_command("x"))["type"] == "slash_commands"


# ---- Web API ----------------------------------------------------------------------------------------


def test_post_update_replies_round_trip(slack, web):
    parent = web.chat_postMessage(channel=CHANNEL, text="incident opened", blocks=card())
    reply = web.chat_postMessage(channel=CHANNEL, text="investigating", thread_ts=parent["ts"])
    assert float(reply["ts"]) > float(parent["ts"])
    assert parent["message"]["bot_id"] == "B0WARROOM" and parent["message"]["user"] == "U0WARROOM"
    assert reply["message"]["thread_ts"] == parent["ts"]

    updated = web.chat_update(channel=CHANNEL, ts=parent["ts"], text="incident resolved")
    assert updated["text"] == "incident resolved"

    thread = web.conversations_replies(channel=CHANNEL, ts=parent["ts"])
    assert [m["text"] for m in thread["messages"]] == ["incident resolved", "investigating"]
    assert thread["messages"][0]["reply_count"] == 1 and thread["messages"][0]["blocks"] == card()
    assert thread["messages"][0]["edited"]["user"] == "U0WARROOM"
    assert [m["ts"] for m in slack.thread(CHANNEL, reply["ts"])] == [parent["ts"], reply["ts"]]
    stored = slack.messages(CHANNEL)
    assert [(m["ts"], m.get("thread_ts")) for m in stored] == [(parent["ts"], None), (reply["ts"], parent["ts"])]
    assert thread["messages"][0]["thread_ts"] == parent["ts"]  # the API marks the parent, as Slack does
    assert [c.method for c in slack.calls] == ["chat.postMessage", "chat.postMessage", "chat.update",
                                               "conversations.replies"]
    assert slack.violations == []


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
def test_errors_match_slack():
    def error_of(call, **kwargs) -> str:
        with pytest.raises(SlackApiError) as caught:
            call(**kwargs)
        return caught.value.response["error"]

    with SlackStandIn(rate_limit=False) as slack:  # refused calls count against the bucket too
        web = WebClient(token=slack.bot_token, base_url=slack.url)
        assert error_of(web.chat_postMessage, channel="#general", text="x") == "channel_not_found"
        assert error_of(web.chat_postMessage, channel=CHANNEL, text="") == "no_text"
        assert error_of(web.chat_postMessage, channel=CHANNEL, text="x", thread_ts="1.0") == "thread_not_found"
        assert error_of(web.chat_update, channel=CHANNEL, ts="1.0", text="x") == "message_not_found"
        assert error_of(web.conversations_replies, channel=CHANNEL, ts="1.0") == "thread_not_found"
        assert error_of(web.chat_postMessage, channel=CHANNEL, text="x" * 40001) == "msg_too_long"
        assert error_of(web.api_call, api_method="chat.nonsense") == "unknown_method"
        person = slack.add_message(CHANNEL, text="hello", user="U0ALICE")
        assert error_of(web.chat_update, channel=CHANNEL, ts=person["ts"], text="x") == "cant_update_message"
        assert slack.violations == [f"chat.postMessage {CHANNEL}: text is 40001 chars > 40000"]


def test_invalid_auth(slack):
    with pytest.raises(SlackApiError) as wrong:
        WebClient(token="xoxb-wrong", base_url=slack.url).auth_test()
    assert wrong.value.response.status_code == 200 and wrong.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as app_token:
        WebClient(token=slack.app_token, base_url=slack.url).chat_postMessage(channel=CHANNEL, text="x")
    assert app_token.value.response["error"] == "not_allowed_token_type"
    with pytest.raises(SlackApiError) as none:
        WebClient(base_url=slack.url).auth_test()
    assert none.value.response["error"] == "not_authed"
    assert WebClient(token=slack.bot_token, base_url=slack.url).auth_test()["user_id"] == "U0WARROOM"
    assert [c.ok for c in slack.calls] == [False, False, False, True]
    assert slack.messages(CHANNEL) == []


async def test_rate_limit_429_after_the_burst(slack, aweb):
    for i in range(slack.burst):
        await aweb.chat_postMessage(channel=CHANNEL, text=f"m{i}")
    with pytest.raises(SlackApiError) as limited:
        await aweb.chat_postMessage(channel=CHANNEL, text="one too many")
    response = limited.value.response
    assert response.status_code == 429 and response["error"] == "ratelimited"
    assert response.headers["Retry-After"] == "1"
    # The default AsyncWebClient retry handlers only cover connection errors: the 429 was not retried.
    assert len(slack.calls_to("chat.postMessage")) == slack.burst + 1
    assert [(ch, ra) for ch, _, ra in slack.rate_limited] == [(CHANNEL, 1)]
    # The bucket is per channel; chat.update shares it.
    await aweb.chat_postMessage(channel="C0OTHER", text="elsewhere")
    with pytest.raises(SlackApiError):
        await aweb.chat_update(channel=CHANNEL, ts=slack.messages(CHANNEL)[0]["ts"], text="edit")
    # The sync WebClient surfaces the same header.
    with pytest.raises(SlackApiError) as sync_limited:
        WebClient(token=slack.bot_token, base_url=slack.url).chat_postMessage(channel=CHANNEL, text="sync")
    assert sync_limited.value.response.status_code == 429
    assert sync_limited.value.response.headers["Retry-After"] == "1"
    assert len(slack.messages(CHANNEL)) == slack.burst


async def test_early_retry_is_recorded_and_a_patient_one_is_not():
    with SlackStandIn(burst=1, retry_after=1) as slack:
        client = AsyncWebClient(token=slack.bot_token, base_url=slack.url)
        await client.chat_postMessage(channel=CHANNEL, text="first")
        with pytest.raises(SlackApiError) as first:
            await client.chat_postMessage(channel=CHANNEL, text="second")
        retry_after = float(first.value.response.headers["Retry-After"])
        with pytest.raises(SlackApiError) as impatient:
            await client.chat_postMessage(channel=CHANNEL, text="second, impatiently")
        assert impatient.value.response.status_code == 429
        assert len(slack.early_retries) == 1 and CHANNEL in slack.early_retries[0]
        await asyncio.sleep(retry_after)
        await client.chat_postMessage(channel=CHANNEL, text="second, patiently")
        assert len(slack.early_retries) == 1 and len(slack.rate_limited) == 2
        assert [m["text"] for m in slack.messages(CHANNEL)] == ["first", "second, patiently"]


def test_rate_limit_can_be_switched_off():
    with SlackStandIn(rate_limit=False) as slack:
        client = WebClient(token=slack.bot_token, base_url=slack.url)
        for i in range(10):
            client.chat_postMessage(channel=CHANNEL, text=str(i))
        assert slack.rate_limited == [] and len(slack.messages(CHANNEL)) == 10


@pytest.mark.parametrize("blocks, reason", [
    ([{"type": "divider"}] * 51, "blocks has 51 blocks > 50"),
    ([{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}], "blocks[0].text.text is 3001 chars > 3000"),
    (card(label="A" * 76), "blocks[4].elements[0].text.text is 76 chars > 75"),
])
def test_invalid_blocks_are_refused_and_recorded(slack, web, blocks, reason):
    with pytest.raises(SlackApiError) as refused:
        web.chat_postMessage(channel=CHANNEL, text="card", blocks=blocks)
    assert refused.value.response["error"] == "invalid_blocks"
    assert any(reason in error for error in refused.value.response["errors"])
    assert slack.violations == [f"chat.postMessage {CHANNEL}: {reason}"]
    assert slack.messages(CHANNEL) == []


def test_a_valid_card_with_buttons_is_accepted(slack, aweb, web):
    posted = asyncio.run(aweb.chat_postMessage(channel=CHANNEL, text="plan", blocks=card(buttons=3)))
    assert slack.messages(CHANNEL)[0]["blocks"] == card(buttons=3)
    # The same card as a form body (blocks JSON-encoded in a field) decodes to the same blocks.
    web.api_call("chat.update", data={"channel": CHANNEL, "ts": posted["ts"], "blocks": json.dumps(card(buttons=1))})
    assert slack.messages(CHANNEL)[0]["blocks"] == card(buttons=1)
    assert slack.calls[1].params["blocks"] == card(buttons=1)
    assert slack.violations == []


def test_fail_next_surfaces_once_then_succeeds(slack, web):
    slack.fail_next("chat.postMessage", status=500)
    with pytest.raises(SlackApiError) as failed:
        web.chat_postMessage(channel=CHANNEL, text="hello")
    assert failed.value.response.status_code == 500
    slack.fail_next("chat.postMessage", status=200, error="internal_error")
    with pytest.raises(SlackApiError) as soft:
        web.chat_postMessage(channel=CHANNEL, text="hello")
    assert soft.value.response.status_code == 200 and soft.value.response["error"] == "internal_error"
    assert web.chat_postMessage(channel=CHANNEL, text="hello")["ok"]
    assert [(c.status, c.ok) for c in slack.calls] == [(500, False), (200, False), (200, True)]
    assert len(slack.messages(CHANNEL)) == 1


async def test_async_client_sees_a_5xx_html_page_as_an_error(slack, aweb):
    slack.fail_next("chat.postMessage", status=503)
    with pytest.raises(SlackApiError) as failed:
        await aweb.chat_postMessage(channel=CHANNEL, text="hello")
    assert failed.value.response.status_code == 503 and failed.value.response.data == {}
    assert (await aweb.chat_postMessage(channel=CHANNEL, text="hello"))["ok"]


async def test_users_info(slack, aweb):
    alice = (await aweb.users_info(user="U0ALICE"))["user"]
    assert alice["id"] == "U0ALICE" and alice["name"] == "alice" and not alice["is_bot"]
    assert alice["profile"]["email"] == "alice@example.com" and alice["profile"]["real_name"] == "Alice Doe"
    with pytest.raises(SlackApiError) as unknown:
        await aweb.users_info(user="U0NOBODY")
    assert unknown.value.response["error"] == "user_not_found"
    # AsyncWebClient sends users.info as GET with a query string; the sync client as a form body.
    sync = WebClient(token=slack.bot_token, base_url=slack.url).users_info(user="U0ALICE")
    assert sync["user"]["profile"]["email"] == "alice@example.com"


def test_reactions_ephemerals_permalinks_and_injected_messages(slack, web):
    parent = web.chat_postMessage(channel=CHANNEL, text="incident")
    web.reactions_add(channel=CHANNEL, timestamp=parent["ts"], name="eyes")
    with pytest.raises(SlackApiError) as twice:
        web.reactions_add(channel=CHANNEL, timestamp=parent["ts"], name="eyes")
    assert twice.value.response["error"] == "already_reacted"
    assert slack.reactions == [{"channel": CHANNEL, "timestamp": parent["ts"], "name": "eyes", "user": "U0WARROOM"}]

    ephemeral = web.chat_postEphemeral(channel=CHANNEL, user="U0ALICE", text="only you", thread_ts=parent["ts"])
    assert ephemeral["message_ts"] and slack.ephemerals[0]["user"] == "U0ALICE"
    assert slack.ephemerals[0]["thread_ts"] == parent["ts"]

    alert = slack.add_message(CHANNEL, text="", bot_id="B0ALERTS", thread_ts=parent["ts"],
                              attachments=[{"color": "danger", "title": "PaymentsHighErrorRate", "text": "5xx > 5%"}])
    replies = web.conversations_replies(channel=CHANNEL, ts=parent["ts"])["messages"]
    assert replies[1]["bot_id"] == "B0ALERTS" and replies[1]["attachments"][0]["title"] == "PaymentsHighErrorRate"
    assert replies[1]["parent_user_id"] == "U0WARROOM" and replies[1]["ts"] == alert["ts"]

    link = web.chat_getPermalink(channel=CHANNEL, message_ts=parent["ts"])["permalink"]
    assert link == f"https://warroom-test.slack.com/archives/{CHANNEL}/p{parent['ts'].replace('.', '')}"
    assert web.conversations_info(channel=CHANNEL)["channel"]["id"] == CHANNEL
    # Replying to a reply works in Slack but is a mistake: recorded.
    web.chat_postMessage(channel=CHANNEL, text="x", thread_ts=alert["ts"])
    assert slack.violations == [f"chat.postMessage {CHANNEL}: thread_ts {alert['ts']} is a reply; "
                                f"use its parent {parent['ts']}"]


async def test_response_url_records_checks_and_replaces(slack, aweb):
    posted = await aweb.chat_postMessage(channel=CHANNEL, text="plan", blocks=card())
    webhook = AsyncWebhookClient(slack.response_url("r1", channel=CHANNEL, message_ts=posted["ts"]))
    accepted = await webhook.send(text="approved by alice", replace_original=True)
    assert (accepted.status_code, accepted.body) == (200, "ok")
    assert slack.responses == [{"text": "approved by alice", "replace_original": True}]
    assert slack.messages(CHANNEL)[0]["text"] == "approved by alice" and "blocks" not in slack.messages(CHANNEL)[0]

    too_long_header = [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}]
    refused = await webhook.send(text="x", blocks=too_long_header)
    assert (refused.status_code, refused.body) == (400, "invalid_blocks")
    assert slack.violations == ["response_url r1: blocks[0].text.text is 151 chars > 150"]
    assert len(slack.responses_to("r1")) == 1


# ---- Socket Mode ------------------------------------------------------------------------------------


async def test_socket_mode_hello_and_envelope_ack(slack):
    client = SocketModeClient(app_token=slack.app_token,
                              web_client=AsyncWebClient(token=slack.bot_token, base_url=slack.url))
    hellos: list[dict] = []

    async def on_message(client, message, raw):
        if message.get("type") == "hello":
            hellos.append(message)

    async def on_request(client, request):
        await client.send_socket_mode_response(SocketModeResponse(request.envelope_id,
                                                                  payload={"text": f"got {request.type}"}))

    client.message_listeners.append(on_message)
    client.socket_mode_request_listeners.append(on_request)
    await client.connect()
    try:
        assert await asyncio.to_thread(slack.socket_connected.wait, 3)
        envelope = {"envelope_id": "e1", "type": "slash_commands", "accepts_response_payload": True,
                    "payload": dict(parse_qsl(slash_command("status")[0].decode()))}
        ack = await slack.socket_send_async(envelope, timeout=3)
        assert ack == {"envelope_id": "e1", "payload": {"text": "got slash_commands"}}
        assert hellos and hellos[0]["connection_info"]["app_id"] == "A0WARROOM"
        assert slack.calls_to("apps.connections.open")[0].ok
        assert slack.violations == []
    finally:
        await client.close()


async def test_socket_mode_reconnects_after_disconnect_and_a_missing_ack_is_a_violation(slack):
    client = SocketModeClient(app_token=slack.app_token,
                              web_client=AsyncWebClient(token=slack.bot_token, base_url=slack.url))

    async def ack_only_commands(client, request):
        if request.type == "slash_commands":
            await client.send_socket_mode_response(SocketModeResponse(request.envelope_id))

    client.socket_mode_request_listeners.append(ack_only_commands)
    await client.connect()
    try:
        await asyncio.to_thread(slack.socket_disconnect, "refresh_requested")
        await asyncio.to_thread(slack.wait_for, lambda: len(slack.calls_to("apps.connections.open")) == 2, 3)
        # The second ticket is issued before its WebSocket is up: wait for the new session's hello, or
        # the envelope would go to the old socket the client is about to close.
        await asyncio.to_thread(slack.wait_for, lambda: slack.socket_connections == 2, 3)
        command = socket_envelope(*slash_command("status"), envelope_id="cmd-1")
        assert await slack.socket_send_async(command, timeout=3) == {"envelope_id": "cmd-1"}

        ignored = socket_envelope(*event(message_event(CHANNEL, "hi", user="U0ALICE")), envelope_id="ev-1")
        assert await slack.socket_send_async(ignored, timeout=0.3) is None
        assert slack.violations == ["socket: envelope ev-1 (events_api) was not acked within 0.3s"]
    finally:
        await client.close()


async def test_bolt_socket_mode_handler_acks_and_responds(slack):
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
    from slack_bolt.app.async_app import AsyncApp

    app = AsyncApp(client=AsyncWebClient(token=slack.bot_token, base_url=slack.url))

    @app.command("/warroom")
    async def command(ack, respond, command):
        await ack(f"working on `{command['text']}`")
        await respond(text="done", response_type="in_channel")

    handler = AsyncSocketModeHandler(app, slack.app_token)
    await handler.connect_async()
    try:
        response_url = slack.response_url("cmd", channel=CHANNEL)
        ack = await slack.socket_send_async(socket_envelope(*slash_command("status", response_url=response_url)),
                                            timeout=3)
        assert ack["payload"]["text"] == "working on `status`"
        await asyncio.to_thread(slack.wait_for, lambda: slack.responses_to("cmd"), 3)
        assert slack.responses_to("cmd") == [{"text": "done", "response_type": "in_channel"}]
        assert [m["text"] for m in slack.messages(CHANNEL)] == ["done"]
        assert slack.calls_to("auth.test")  # bolt checked its token against the stand-in
        assert slack.socket_acks[0]["latency"] < 3 and slack.violations == []
    finally:
        await handler.close_async()


def test_wait_for_explains_a_timeout(slack, web):
    web.chat_postMessage(channel=CHANNEL, text="only one")
    started = time.monotonic()
    with pytest.raises(AssertionError) as timed_out:
        slack.wait_for(lambda: len(slack.messages(CHANNEL)) == 2, timeout=0.2)
    assert time.monotonic() - started < 1
    assert "len(slack.messages(CHANNEL)) == 2" in str(timed_out.value)
    assert "chat.postMessage -> 200 ok" in str(timed_out.value)
