"""The outbox dispatcher: drains queued messages to the chat ports in order, one channel at a pace the
platform accepts, honouring 429 Retry-After; safe with several replicas (FOR UPDATE SKIP LOCKED)."""
from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

from psycopg_pool import ConnectionPool

from engine.cards import Card
from engine.ports import ChatPort, PermanentFailure, RateLimited
from storage import outbox

log = logging.getLogger(__name__)

WAIT_FOR_PARENT_S = 0.5


class OutboxDispatcher:
    def __init__(self, pool: ConnectionPool, ports: dict[str, ChatPort], *, poll_interval: float = 0.2,
                 min_interval: dict[str, float] | None = None, batch: int = 20) -> None:
        self.pool = pool
        self.ports = ports
        self.poll_interval = poll_interval
        self.min_interval = min_interval or {}
        self.batch = batch
        self._last_sent: dict[tuple[str, str], float] = {}
        self.sent = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                handled = await self.drain_once()
            except Exception:
                log.exception("outbox drain failed; retrying")
                handled = 0
            if not handled:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=self.poll_interval)
                except asyncio.TimeoutError:
                    pass

    async def drain_once(self) -> int:
        """Send what is due; returns how many rows were sent."""
        if not self.ports:
            return 0
        conn = await asyncio.to_thread(self.pool.getconn)
        sent = 0
        try:
            rows = await asyncio.to_thread(outbox.claim, conn, platforms=list(self.ports), limit=self.batch)
            blocked: set[tuple[str, str]] = set()
            for row in rows:
                key = (row["platform"], row["channel"])
                if key in blocked:
                    continue  # keep per-channel order: nothing overtakes a deferred message
                if not await self._send(conn, row):
                    blocked.add(key)
                else:
                    sent += 1
            await asyncio.to_thread(conn.commit)
        except BaseException:
            await asyncio.to_thread(conn.rollback)
            raise
        finally:
            self.pool.putconn(conn)
        self.sent += sent
        return sent

    async def _send(self, conn, row: dict[str, Any]) -> bool:
        port = self.ports[row["platform"]]
        card = Card.model_validate(row["card"])
        thread_id = row["thread_id"]
        if row["thread_key"]:
            parent = await asyncio.to_thread(outbox.find_message, conn, row["thread_key"])
            if parent is None:
                await asyncio.to_thread(outbox.defer, conn, row["id"], seconds=WAIT_FOR_PARENT_S, count_attempt=False)
                return False
            thread_id = parent["thread_id"] or parent["message_id"]
        await self._pace(row["platform"], row["channel"])
        try:
            if row["op"] == "update":
                target = await asyncio.to_thread(outbox.find_message, conn, row["message_key"])
                if target is None:
                    await asyncio.to_thread(outbox.defer, conn, row["id"], seconds=WAIT_FOR_PARENT_S,
                                            count_attempt=False)
                    return False
                await port.update(row["channel"], target["message_id"], card)
            else:
                posted = await port.post(row["channel"], card, thread_id=thread_id)
                if row["message_key"]:
                    await asyncio.to_thread(outbox.remember_message, conn, key=row["message_key"],
                                            platform=row["platform"], channel=row["channel"],
                                            message_id=posted.message_id, thread_id=thread_id)
        except RateLimited as exc:
            log.info("%s rate limited on %s; retry in %ss", row["platform"], row["channel"], exc.retry_after)
            await asyncio.to_thread(outbox.defer, conn, row["id"], seconds=exc.retry_after, error=str(exc),
                                    count_attempt=False)
            return False
        except PermanentFailure as exc:
            await asyncio.to_thread(outbox.defer, conn, row["id"], seconds=0, error=str(exc), max_attempts=0)
            return False
        except Exception as exc:
            backoff = min(60.0, 2 ** row["attempts"]) * (0.5 + random.random() / 2)
            log.warning("sending outbox %s failed (%s); retry in %.1fs", row["id"], exc, backoff)
            await asyncio.to_thread(outbox.defer, conn, row["id"], seconds=backoff, error=f"{type(exc).__name__}: {exc}")
            return False
        await asyncio.to_thread(outbox.mark_sent, conn, row["id"])
        self._last_sent[(row["platform"], row["channel"])] = time.monotonic()
        return True

    async def _pace(self, platform: str, channel: str) -> None:
        gap = self.min_interval.get(platform, 0.0)
        last = self._last_sent.get((platform, channel))
        if gap and last is not None:
            wait = gap - (time.monotonic() - last)
            if wait > 0:
                await asyncio.sleep(wait)
