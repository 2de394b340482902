"""SlackPort: the outbox's way into Slack's Web API. It maps Slack's answers onto the three outcomes the
dispatcher understands: sent, retry later (429 Retry-After, 5xx, network), or park for good."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.blocks import render, truncate
from engine.cards import Card
from engine.ports import PermanentFailure, PostedMessage, RateLimited

log = logging.getLogger(__name__)

# Errors retrying cannot fix: the row is parked as dead (kept, never dropped) with the reason.
PERMANENT_ERRORS = {
    "channel_not_found", "not_in_channel", "is_archived", "msg_too_long", "no_text", "invalid_auth",
    "not_authed", "account_inactive", "token_revoked", "missing_scope", "message_not_found",
    "cant_update_message", "edit_window_closed", "user_not_in_channel", "restricted_action",
    "thread_not_found", "invalid_arguments", "team_access_not_granted",
}
BLOCK_ERRORS = {"invalid_blocks", "invalid_blocks_format", "invalid_attachments"}
MAX_TEXT = 40000
AUTH_TEST_TIMEOUT_S = 5.0
AUTH_TEST_RETRY_S = 300.0   # after a failed auth.test, messages go without links for this long, then one more try


def permalink(workspace_url: str, channel: str, ts: str, *, thread_ts: str | None = None) -> str:
    """The documented permalink shape (what chat.getPermalink answers), built locally:
    `https://acme.slack.com/archives/C123/p1358546515000008`, and for a thread reply
    `…/p1358546517000023?thread_ts=1358546515.000008&cid=C123`."""
    link = f"{workspace_url.rstrip('/')}/archives/{channel}/p{ts.replace('.', '')}"
    if thread_ts and thread_ts != ts:
        link += f"?thread_ts={thread_ts}&cid={channel}"
    return link


class SlackPort:
    def __init__(self, client: AsyncWebClient, *, more_url: Callable[[str], str] | None = None,
                 text_renderer: Callable[[Card], str] | None = None) -> None:
        self.client = client
        self.more_url = more_url          # outbox ref -> a link to the full card, for truncated messages
        self.text_renderer = text_renderer
        self._workspace_url: str | None = None   # from auth.test, once: https://acme.slack.com/
        self._workspace_retry_at = 0.0
        self._workspace_lock = asyncio.Lock()

    async def post(self, channel: str, card: Card, *, thread_id: str | None = None,
                   ref: str | None = None) -> PostedMessage:
        text, blocks = render(card, more_url=self._more(ref))
        try:
            response = await self._call(self.client.chat_postMessage, card, channel=channel, text=text,
                                        blocks=blocks, thread_ts=thread_id, unfurl_links=False)
        except PermanentFailure as exc:
            if thread_id is None or str(exc) != "slack: thread_not_found":
                raise
            # The thread's parent was deleted: say it in the channel rather than not at all.
            log.warning("thread %s in %s is gone; posting at the top level", thread_id, channel)
            thread_id = None
            response = await self._call(self.client.chat_postMessage, card, channel=channel, text=text,
                                        blocks=blocks, unfurl_links=False)
        ts = response["ts"]
        return PostedMessage(message_id=ts, thread_id=thread_id,
                             permalink=await self._permalink(channel, ts, thread_id))

    async def update(self, channel: str, message_id: str, card: Card, *, ref: str | None = None) -> None:
        text, blocks = render(card, more_url=self._more(ref))
        await self._call(self.client.chat_update, card, channel=channel, ts=message_id, text=text, blocks=blocks)

    async def ephemeral(self, channel: str, user: str, card: Card, *, thread_id: str | None = None,
                        ref: str | None = None) -> None:
        text, blocks = render(card, more_url=self._more(ref))
        await self._call(self.client.chat_postEphemeral, card, channel=channel, user=user, text=text,
                         blocks=blocks, thread_ts=thread_id)

    async def react(self, channel: str, message_id: str, name: str) -> None:
        """Best effort: a reaction is a courtesy, so failing to add one is logged, never retried."""
        try:
            await self.client.reactions_add(channel=channel, timestamp=message_id, name=name)
        except SlackApiError as exc:
            log.info("could not add :%s: to %s/%s: %s", name, channel, message_id, exc.response.get("error"))

    async def workspace_url(self) -> str | None:
        """The workspace's URL from auth.test, asked once and kept; None (and no link) while it cannot be had."""
        if self._workspace_url is not None:
            return self._workspace_url
        async with self._workspace_lock:
            if self._workspace_url is None and time.monotonic() >= self._workspace_retry_at:
                try:
                    me = await asyncio.wait_for(self.client.auth_test(), AUTH_TEST_TIMEOUT_S)
                    url = me.get("url")
                    if isinstance(url, str) and url.startswith("https://"):
                        self._workspace_url = url
                    else:
                        raise ValueError(f"auth.test answered no workspace url: {url!r}")
                except Exception as exc:  # noqa: BLE001 - a link is a courtesy: never fail a send for one
                    self._workspace_retry_at = time.monotonic() + AUTH_TEST_RETRY_S
                    log.warning("Slack auth.test failed (%s); messages are recorded without permalinks for now", exc)
        return self._workspace_url

    async def _permalink(self, channel: str, ts: str, thread_ts: str | None) -> str | None:
        try:
            base = await self.workspace_url()
            return permalink(base, channel, ts, thread_ts=thread_ts) if base else None
        except Exception as exc:  # noqa: BLE001 - never fail a send for a link
            log.warning("no permalink for %s/%s: %s", channel, ts, exc)
            return None

    def _more(self, ref: str | None) -> str | None:
        return self.more_url(ref) if self.more_url and ref else None

    async def _call(self, method, card: Card, **kwargs):
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        try:
            return await method(**kwargs)
        except SlackApiError as exc:
            error = _error_of(exc)
            if error in BLOCK_ERRORS and self.text_renderer is not None:
                # Our blocks were refused: say the same thing as plain text rather than not at all.
                log.warning("Slack refused the blocks (%s); sending the card as text", error)
                kwargs.pop("blocks", None)
                kwargs["text"] = truncate(self.text_renderer(card), MAX_TEXT)
                try:
                    return await method(**kwargs)
                except SlackApiError as again:
                    exc, error = again, _error_of(again)
            _raise_for(exc, error)


def _error_of(exc: SlackApiError) -> str:
    data = exc.response.data if isinstance(exc.response.data, dict) else {}
    return str(data.get("error") or f"http_{exc.response.status_code}")


def _raise_for(exc: SlackApiError, error: str):
    status = exc.response.status_code
    if status == 429 or error == "ratelimited":
        raise RateLimited(_retry_after(exc.response.headers)) from exc
    if error in PERMANENT_ERRORS or error in BLOCK_ERRORS:
        raise PermanentFailure(f"slack: {error}") from exc
    raise exc  # 5xx, internal_error, fatal_error...: the dispatcher backs off and retries


def _retry_after(headers) -> float:
    for name, value in (headers or {}).items():
        if name.lower() == "retry-after":
            try:
                return max(1.0, float(value if not isinstance(value, list) else value[0]))
            except (TypeError, ValueError):
                break
    return 1.0
