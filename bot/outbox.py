"""The outbox dispatcher: drains queued messages to the chat ports in order, each channel at a pace the
platform accepts (a token bucket: about one message a second with short bursts), honouring 429
Retry-After; safe with several replicas (FOR UPDATE SKIP LOCKED). A message is never dropped: it is sent,
retried, or parked as `dead` with the reason."""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from psycopg_pool import ConnectionPool

from engine.cards import Card
from engine.ports import ChatPort, PermanentFailure, RateLimited
from storage import outbox

log = logging.getLogger(__name__)

WAIT_FOR_PARENT_S = 0.5


@dataclass(frozen=True)
class Pace:
    """Per-channel sending rate: `rate` messages a second on average, bursts of up to `burst`. `windows` adds
    hard caps a token bucket alone cannot promise, as (at most N messages, in any S seconds) pairs: Teams
    allows 7 a second *and* 60 in 30 seconds per conversation."""

    rate: float
    burst: int = 1
    windows: tuple[tuple[int, float], ...] = ()


class TokenBucket:
    def __init__(self, pace: Pace) -> None:
        self.pace = pace
        self.tokens = float(pace.burst)
        self.updated = time.monotonic()
        longest = max((limit for limit, _ in pace.windows), default=0)
        self.sent: deque[float] = deque(maxlen=longest or None)  # send times, for the windows

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.pace.burst, self.tokens + (now - self.updated) * self.pace.rate)
        self.updated = now
        for limit, seconds in self.pace.windows:
            if sum(1 for at in self.sent if now - at < seconds) >= limit:
                return False
        if self.tokens >= 1:
            self.tokens -= 1
            if self.pace.windows:
                self.sent.append(now)
            return True
        return False

    def drain(self) -> None:
        """The platform said slow down: start again from an empty bucket."""
        self.tokens = 0.0
        self.updated = time.monotonic()


def backlog(conn, platforms: list[str] | None = None) -> dict[str, Any]:
    """pending (unsent rows), due (of those, the ones whose time has come), lag_s (seconds since the oldest
    due row became due) and dead (parked rows); only these platforms' rows when given."""
    row = conn.execute(
        """SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
                  count(*) FILTER (WHERE status = 'pending' AND next_attempt_at <= now()) AS due,
                  coalesce(extract(epoch FROM now() - min(next_attempt_at)
                           FILTER (WHERE status = 'pending' AND next_attempt_at <= now())), 0)::float AS lag_s,
                  count(*) FILTER (WHERE status = 'dead') AS dead
           FROM outbox WHERE %(all)s OR platform = ANY(%(platforms)s)""",
        {"all": platforms is None, "platforms": platforms or []}).fetchone()
    return dict(row)


class OutboxDispatcher:
    def __init__(self, pool: ConnectionPool, ports: dict[str, ChatPort], *, poll_interval: float = 0.2,
                 pace: dict[str, Pace] | None = None, batch: int = 50) -> None:
        self.pool = pool
        self.ports = ports
        self.poll_interval = poll_interval
        self.pace = pace or {}
        self.batch = batch
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self.sent = 0
        self._woken: asyncio.Event | None = None

    def wake(self) -> None:
        """Something was just queued in this process: look now rather than at the next poll (rows queued by
        other replicas and workers are still found by polling). Call it on the event loop."""
        if self._woken is not None:
            self._woken.set()

    async def run(self, stop: asyncio.Event) -> None:
        self._woken = asyncio.Event()
        while not stop.is_set():
            self._woken.clear()
            try:
                handled = await self.drain_once()
            except Exception:
                log.exception("outbox drain failed; retrying")
                handled = 0
            if not handled:
                waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._woken.wait())]
                await asyncio.wait(waits, timeout=self.poll_interval, return_when=asyncio.FIRST_COMPLETED)
                for waiting in waits:
                    waiting.cancel()

    async def drain_for_shutdown(self, deadline: float) -> int:
        """Send until nothing this process can send is due, or the monotonic `deadline` passes; returns how many
        rows are left unsent (they stay queued in the database for the next replica)."""
        def left(due_only: bool) -> int:
            with self.pool.connection() as conn:
                state = backlog(conn, list(self.ports))
            return state["due"] if due_only else state["pending"]

        if not self.ports:
            return 0
        while time.monotonic() < deadline:
            try:
                sent = await self.drain_once()
                if not sent and not await asyncio.to_thread(left, True):
                    break
            except Exception:
                log.exception("outbox drain failed; retrying")
                sent = 0
            if not sent:  # paced, deferred or failing: wait a little rather than spin
                await asyncio.sleep(min(self.poll_interval, max(0.0, deadline - time.monotonic())))
        return await asyncio.to_thread(left, False)

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
                    continue  # keep per-channel order: nothing overtakes a message that is waiting
                if await self._send(conn, row):
                    sent += 1
                else:
                    blocked.add(key)
            await asyncio.to_thread(conn.commit)
        except BaseException:
            await asyncio.to_thread(conn.rollback)
            raise
        finally:
            self.pool.putconn(conn)
        self.sent += sent
        return sent

    def _bucket(self, platform: str, channel: str) -> TokenBucket | None:
        pace = self.pace.get(platform)
        if pace is None:
            return None
        return self._buckets.setdefault((platform, channel), TokenBucket(pace))

    async def _send(self, conn, row: dict[str, Any]) -> bool:
        port = self.ports[row["platform"]]
        card = Card.model_validate(row["card"])
        thread_id = row["thread_id"]
        if row["thread_key"]:
            parent = await asyncio.to_thread(outbox.find_message, conn, row["thread_key"], row["platform"])
            if parent is not None:
                thread_id = parent["thread_id"] or parent["message_id"]
            elif await asyncio.to_thread(outbox.is_pending, conn, row["thread_key"],
                                         platform=row["platform"], op="post"):
                await asyncio.to_thread(outbox.defer, conn, row["id"], seconds=WAIT_FOR_PARENT_S, count_attempt=False)
                return False
            else:  # the parent will never be posted (it was parked): say it at the top level instead
                log.warning("outbox %s: parent %s was never posted; posting top-level", row["id"], row["thread_key"])
        target = None
        if row["op"] == "update":
            target = await asyncio.to_thread(outbox.find_message, conn, row["message_key"], row["platform"])
            if target is None:
                if await asyncio.to_thread(outbox.is_pending, conn, row["message_key"],
                                                platform=row["platform"], op="post"):
                    await asyncio.to_thread(outbox.defer, conn, row["id"], seconds=WAIT_FOR_PARENT_S,
                                            count_attempt=False)
                    return False
                await asyncio.to_thread(outbox.defer, conn, row["id"], seconds=0, max_attempts=0,
                                        error="the message to update was never posted")
                return True  # parked: it does not hold the channel up
        bucket = self._bucket(row["platform"], row["channel"])
        if bucket is not None and not bucket.take():
            return False  # this channel's budget is spent; its rows wait for the next drain
        ref = str(row["id"])
        try:
            if row["op"] == "update":
                await port.update(row["channel"], target["message_id"], card, ref=ref)
            elif row["op"] == "ephemeral" and row["recipient"] and hasattr(port, "ephemeral"):
                await port.ephemeral(row["channel"], row["recipient"], card, thread_id=thread_id, ref=ref)
            else:
                posted = await port.post(row["channel"], card, thread_id=thread_id, ref=ref)
                if row["message_key"]:
                    await asyncio.to_thread(outbox.remember_message, conn, key=row["message_key"],
                                            platform=row["platform"], channel=row["channel"],
                                            message_id=posted.message_id, thread_id=thread_id,
                                            permalink=posted.permalink)
        except RateLimited as exc:
            log.info("%s rate limited on %s; retry in %ss", row["platform"], row["channel"], exc.retry_after)
            if bucket is not None:
                bucket.drain()
            await asyncio.to_thread(outbox.defer, conn, row["id"], seconds=exc.retry_after, error=str(exc),
                                    count_attempt=False)
            return False
        except PermanentFailure as exc:
            log.warning("outbox %s parked: %s", row["id"], exc)
            await asyncio.to_thread(outbox.defer, conn, row["id"], seconds=0, error=str(exc), max_attempts=0)
            return True
        except Exception as exc:
            backoff = min(60.0, 2 ** row["attempts"]) * (0.5 + random.random() / 2)
            log.warning("sending outbox %s failed (%s); retry in %.1fs", row["id"], exc, backoff)
            await asyncio.to_thread(outbox.defer, conn, row["id"], seconds=backoff, error=f"{type(exc).__name__}: {exc}")
            return False
        await asyncio.to_thread(outbox.mark_sent, conn, row["id"])
        return True
