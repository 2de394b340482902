"""Message links: the Slack permalink and the Teams deep link each port builds for a posted message (in the
documented shapes, with no API call per message), how a summary cites them, and how a Teams card shows them."""
import asyncio
import re
from datetime import datetime, timezone

import pytest
from botbuilder.integration.aiohttp import CloudAdapter, ConfigurationBotFrameworkAuthentication
from botbuilder.schema import Activity, ActivityTypes, ChannelAccount, ConversationAccount
from slack_sdk import WebClient
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.port import SlackPort, permalink
from bot.teams import cards as teams_cards
from bot.teams.port import TeamsPort, deep_link
from bot.teams.references import References
from engine.cards import Card, TextBlock, notice
from engine.summaries import IncidentFacts, cite_message
from tests.slack_standin import TEAM_DOMAIN, SlackStandIn
from tests.teams_standin import TeamsStandIn

CHANNEL = "C0ALERTS"
TEAMS_CHANNEL = "19:3997a8734ee5432bb9cdedb7c432ae7d@thread.tacv2"
TENANT = "0d9b645f-597b-41f0-a2a3-ef103fbd91bb"


# --- the formats -------------------------------------------------------------------------------------------


def test_slack_permalink_is_the_documented_shape():
    # chat.getPermalink's documented answers: a message, and a reply in a thread
    assert permalink("https://ghostbusters.slack.com/", "C1H9RESGA", "1358546515.000008") == \
        "https://ghostbusters.slack.com/archives/C1H9RESGA/p1358546515000008"
    assert permalink("https://ghostbusters.slack.com/", "C1H9RESGL", "1358546517.000023",
                     thread_ts="1358546515.000008") == \
        "https://ghostbusters.slack.com/archives/C1H9RESGL/p1358546517000023?thread_ts=1358546515.000008&cid=C1H9RESGL"
    # a thread's root is a plain message link
    assert "?" not in permalink("https://acme.slack.com", "C1", "1.000001", thread_ts="1.000001")


def test_teams_deep_link_is_the_documented_shape():
    top = deep_link(TEAMS_CHANNEL, "1648741500652", conversation_type="channel", tenant_id=TENANT)
    assert top == (f"https://teams.microsoft.com/l/message/{TEAMS_CHANNEL}/1648741500652?tenantId={TENANT}"
                   "&parentMessageId=1648741500652&createdTime=1648741500652")
    reply = deep_link(f"{TEAMS_CHANNEL};messageid=1648741500652", "1648741509999", conversation_type="channel",
                      tenant_id=TENANT, parent_id="1648741500652")
    assert reply.startswith(f"https://teams.microsoft.com/l/message/{TEAMS_CHANNEL}/1648741509999?")  # no ;messageid
    assert "parentMessageId=1648741500652" in reply
    chat = deep_link("19:253f5895_f1b94dcf@unq.gbl.spaces", "1563480968434", conversation_type="groupChat")
    assert chat == ("https://teams.microsoft.com/l/message/19:253f5895_f1b94dcf@unq.gbl.spaces/1563480968434"
                    "?context=%7B%22contextType%22%3A%22chat%22%7D")
    # a personal chat with a bot (a:…) has no documented deep link; nor has a message without an id
    assert deep_link("a:1xyz", "1563480968434", conversation_type="personal") is None
    assert deep_link(TEAMS_CHANNEL, "", conversation_type="channel") is None


# --- the Slack port against the stand-in ---------------------------------------------------------------------


def test_slack_port_links_each_post_with_one_auth_test_and_matches_get_permalink():
    with SlackStandIn(rate_limit=False) as slack:
        async def post():
            port = SlackPort(AsyncWebClient(token=slack.bot_token, base_url=slack.url))
            root = await port.post(CHANNEL, notice("Alert", "fired"))
            reply = await port.post(CHANNEL, notice("Plan", "steps"), thread_id=root.message_id)
            again = await port.post(CHANNEL, notice("Alert", "another"))
            return root, reply, again

        root, reply, again = asyncio.run(post())
        web = WebClient(token=slack.bot_token, base_url=slack.url)
        for posted in (root, reply, again):
            assert posted.permalink == web.chat_getPermalink(channel=CHANNEL, message_ts=posted.message_id)["permalink"]
        assert root.permalink.startswith(f"https://{TEAM_DOMAIN}.slack.com/archives/{CHANNEL}/p")
        assert reply.permalink.endswith(f"?thread_ts={root.message_id}&cid={CHANNEL}")
        assert len(slack.calls_to("auth.test")) == 1
        assert len(slack.calls_to("chat.getPermalink")) == 3  # the test's own three: the port asked none


def test_a_failed_auth_test_never_fails_a_send_and_is_not_asked_per_message():
    with SlackStandIn(rate_limit=False) as slack:
        slack.fail_next("auth.test", status=200, error="invalid_auth")

        async def post():
            port = SlackPort(AsyncWebClient(token=slack.bot_token, base_url=slack.url))
            return [await port.post(CHANNEL, notice("Alert", f"fired {i}")) for i in range(2)]

        posted = asyncio.run(post())
        assert [p.permalink for p in posted] == [None, None] and all(p.message_id for p in posted)
        assert len(slack.messages(CHANNEL)) == 2 and len(slack.calls_to("auth.test")) == 1


# --- the Teams port against the connector stand-in -------------------------------------------------------------


class _NoAuth:
    APP_ID = APP_PASSWORD = APP_TENANTID = ""


def test_teams_port_links_channel_posts_and_thread_replies():
    standin = TeamsStandIn().start()
    try:
        references = References()
        references.remember(Activity(
            type=ActivityTypes.message, service_url=standin.url, channel_id="msteams",
            conversation=ConversationAccount(id=f"{TEAMS_CHANNEL};messageid=1", conversation_type="channel",
                                             tenant_id=TENANT, is_group=True),
            recipient=ChannelAccount(id="28:warroom", name="warroom"), from_property=ChannelAccount(id="29:alice")))

        async def post():
            port = TeamsPort(CloudAdapter(ConfigurationBotFrameworkAuthentication(_NoAuth())), references,
                             app_id=None)
            root = await port.post(TEAMS_CHANNEL, notice("Alert", "fired"))
            reply = await port.post(TEAMS_CHANNEL, notice("Plan", "steps"), thread_id=root.message_id)
            return root, reply

        root, reply = asyncio.run(post())
    finally:
        standin.stop()
    [first, second] = standin.messages(TEAMS_CHANNEL)
    assert root.permalink == deep_link(TEAMS_CHANNEL, first["id"], conversation_type="channel", tenant_id=TENANT)
    assert f"/l/message/{TEAMS_CHANNEL}/{first['id']}?tenantId={TENANT}" in root.permalink
    assert reply.message_id == f"{first['id']}|{second['id']}"
    assert f"/l/message/{TEAMS_CHANNEL}/{second['id']}?" in reply.permalink
    assert f"parentMessageId={first['id']}" in reply.permalink and ";messageid" not in reply.permalink


# --- citing and rendering ------------------------------------------------------------------------------------


def _facts(**row) -> IncidentFacts:
    incident = {"id": 1, "channel": CHANNEL, "created_at": datetime(2026, 11, 24, tzinfo=timezone.utc)}
    return IncidentFacts(incident=incident, messages={"alert:7": {"key": "alert:7", "platform": "slack",
                                                                   "channel": CHANNEL, "message_id": "1.000100",
                                                                   **row}})


def test_a_summary_cites_the_link_when_recorded_else_key_channel_and_ts():
    link = f"https://acme.slack.com/archives/{CHANNEL}/p1000200?thread_ts=1.000100&cid={CHANNEL}"
    assert cite_message(_facts(permalink=link), "alert:7") == f"<{link.replace('&', '&amp;')}|alert:7>"
    assert cite_message(_facts(permalink=None), "alert:7") == f"`alert:7` in <#{CHANNEL}> ts `1.000100`"
    # a stored value that would break out of `<url|label>` is not trusted as a link
    assert cite_message(_facts(permalink="https://x/a|b>c"), "alert:7").startswith("`alert:7` in")
    assert cite_message(_facts(), "plan:3") == "`plan:3` (not posted yet)"


def test_teams_cards_show_cited_links_as_markdown_links():
    link = deep_link(TEAMS_CHANNEL, "1648741500652", conversation_type="channel", tenant_id=TENANT)
    facts = _facts(platform="teams", channel=TEAMS_CHANNEL, message_id="1648741500652", permalink=link)
    cite = cite_message(facts, "alert:7")
    assert "&amp;parentMessageId=" in cite  # mrkdwn-escaped in the platform-neutral card
    card = Card(kind="status", title="Incident #1", blocks=[TextBlock(
        text=f"• *PaymentsHighErrorRate* — {cite} · <https://runbooks.example/pay> · a &lt;b&gt;")])
    [text] = [b["text"] for b in teams_cards.render(card)["body"] if "PaymentsHighErrorRate" in b.get("text", "")]
    assert f"[alert:7]({link})" in text  # the deep link as Teams must open it: plain `&`
    assert "[https://runbooks.example/pay](https://runbooks.example/pay)" in text and "<http" not in text
    assert "a &lt;b&gt;" in text  # escaped text stays text


@pytest.mark.parametrize("label", ["alert:7 [old]", "x](https://evil.example)"])
def test_a_label_cannot_end_the_markdown_link_early(label):
    text = teams_cards.mrkdwn_links(f"<https://acme.slack.com/archives/C1/p1|{label}>")
    assert text.startswith("[") and text.endswith("](https://acme.slack.com/archives/C1/p1)")
    assert not re.search(r"(?<!\\)\]\(https://evil", text)  # every bracket of the label is escaped
