"""Driving the real outbox dispatcher in-process, for tests that build Services themselves (no `warroom serve`)."""
from __future__ import annotations

import asyncio


def deliver_to_slack(pool, standin, *, rounds: int = 20) -> None:
    """The real outbox dispatcher and Slack port, against the Slack stand-in, until nothing is pending."""
    from slack_sdk.web.async_client import AsyncWebClient

    from bot.outbox import OutboxDispatcher
    from bot.slack.port import SlackPort

    async def drain():
        port = SlackPort(AsyncWebClient(token=standin.bot_token, base_url=standin.url))
        dispatcher = OutboxDispatcher(pool, {"slack": port})
        for _ in range(rounds):
            if not await dispatcher.drain_once():
                return

    asyncio.run(drain())
