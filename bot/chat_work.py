"""What every chat adapter does the same way once it has translated a request: run the handler off the event
loop and tell the asker when it fails, and recognise a request it has already handled."""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from redis import Redis

from engine.cards import notice
from engine.models import ChatMessage
from handlers.command import reply
from handlers.services import Services

log = logging.getLogger(__name__)


async def run_handler(services: Services, adapter: str, func: Callable[..., Any], /, *args,
                      on_error: ChatMessage | None = None, **kwargs) -> None:
    """Engine work off the event loop; a failure is told to the person who asked, never swallowed.
    Positional-only up to `func`, so handlers may take keyword arguments of any name (`platform=`)."""
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


async def first_time(redis: Redis | None, key: str, ttl: int) -> bool:
    """True the first time a key is seen within `ttl` seconds (Redis SET NX), shared by every replica."""
    if redis is None:
        return True
    try:
        return bool(await asyncio.to_thread(redis.set, key, "1", nx=True, ex=ttl))
    except Exception as exc:  # noqa: BLE001 - without Redis we still answer; the database guards keep clicks single
        log.warning("idempotency check unavailable (%s)", exc)
        return True
