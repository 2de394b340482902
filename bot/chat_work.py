"""What every chat adapter does the same way once it has translated a request: run the handler off the event
loop and tell the asker when it fails, and recognise a request it has already handled."""
from __future__ import annotations

import asyncio
import logging
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from redis import Redis

from engine.cards import notice
from engine.log_context import bind, current, new_id, unbind
from engine.models import ChatMessage
from handlers.command import reply
from handlers.services import Services

log = logging.getLogger(__name__)


class InFlight:
    """Counts work under way, so a shutdown can let it finish before it stops the process."""

    def __init__(self) -> None:
        self.count = 0
        self._idle: asyncio.Event | None = None

    @contextmanager
    def track(self) -> Iterator[None]:
        self.count += 1
        try:
            yield
        finally:
            self.count -= 1
            if not self.count and self._idle is not None:
                self._idle.set()

    async def wait(self, timeout: float) -> bool:
        """True once nothing is under way; False if that took longer than `timeout` seconds."""
        if not self.count:
            return True
        self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=max(timeout, 0))
            return True
        except asyncio.TimeoutError:
            return self.count == 0


# Engine work the chat adapters started after acknowledging a request (one event loop per process).
handler_work = InFlight()


async def run_handler(services: Services, adapter: str, func: Callable[..., Any], /, *args,
                      on_error: ChatMessage | None = None, slots: asyncio.Semaphore | None = None, **kwargs) -> None:
    """Engine work off the event loop; a failure is told to the person who asked, never swallowed.
    Positional-only up to `func`, so handlers may take keyword arguments of any name (`platform=`).
    Logs name the platform, and the request's correlation id (Socket Mode has no request: one is made)."""
    token = bind(platform=adapter.lower(), correlation_id=current().get("correlation_id") or new_id())
    try:
        with handler_work.track():
            if slots is None:
                await _run(services, adapter, func, *args, on_error=on_error, **kwargs)
            else:
                async with slots:  # waiting here costs nothing; another thread would compete with the acks
                    await _run(services, adapter, func, *args, on_error=on_error, **kwargs)
    finally:
        unbind(token)


async def _run(services: Services, adapter: str, func: Callable[..., Any], /, *args,
               on_error: ChatMessage | None, **kwargs) -> None:
    try:
        await asyncio.to_thread(func, services, *args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - whatever failed, the asker hears about it
        log.exception("handling a %s request failed", adapter)
        if on_error is None:
            return
        try:
            await asyncio.to_thread(reply, services, on_error, notice(
                "Something went wrong", f"warroom could not answer ({type(exc).__name__}). Try again; if "
                "it keeps failing, an operator can run `warroom doctor`.", style="error"), private=True)
        except Exception:  # noqa: BLE001
            log.exception("could not even report the failure")


async def first_time(redis: Redis | None, key: str, ttl: int, *,
                     record: Callable[[str, bool], None] | None = None) -> bool:
    """True the first time a key is seen within `ttl` seconds (Redis SET NX), shared by every replica.
    `record(kind, first)` counts the outcome (bot.metrics.Metrics.dedup); kind comes from the key."""
    first = True
    if redis is not None:
        try:
            first = bool(await asyncio.to_thread(redis.set, key, "1", nx=True, ex=ttl))
        except Exception as exc:  # noqa: BLE001 - without Redis we still answer; the database guards keep clicks single
            log.warning("idempotency check unavailable (%s)", exc)
    if record is not None:
        record(dedup_kind(key), first)
    return first


def dedup_kind(key: str) -> str:
    """`warroom:slack:click:...` -> `slack_click`: the platform and what was delivered, never an id."""
    parts = key.split(":")
    return "_".join(parts[1:3]) if len(parts) >= 3 and parts[0] == "warroom" else "other"
