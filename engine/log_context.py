"""The ids a log line is about (request, alert, incident, plan, step, platform), kept in a context variable so
they follow the work without being passed around: an aiohttp middleware binds a request's, `asyncio.to_thread`
and new tasks copy the context into handler threads, the annotator binds an alert's while it works on one, and
an RQ work horse binds its step's for the whole job. Platform-neutral, so handlers and workers can bind ids;
`bot/logs.py` formats them."""
from __future__ import annotations

import re
import uuid
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any, Iterator

FIELDS = ("request_id", "alert_id", "group_id", "incident_id", "plan_id", "step_id", "platform")

_bound: ContextVar[dict[str, Any]] = ContextVar("warroom_log_context", default={})

REQUEST_ID_MAX = 64
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,%d}" % REQUEST_ID_MAX)


def bind(**fields: Any) -> Token:
    """Add ids to this context (None values are ignored); undo with `unbind(token)`."""
    return _bound.set({**_bound.get(), **{k: v for k, v in fields.items() if v is not None}})


def unbind(token: Token) -> None:
    _bound.reset(token)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Ids bound for the duration of a block, and anything bound inside it undone at its end."""
    token = bind(**fields)
    try:
        yield
    finally:
        unbind(token)


def current() -> dict[str, Any]:
    return dict(_bound.get())


def new_id() -> str:
    return uuid.uuid4().hex[:16]


def request_id_from(header: str | None) -> str:
    """An incoming X-Request-Id if it is a plain token of bounded length (it ends up in logs and headers, so
    nothing else is trusted), else a fresh one."""
    value = (header or "").strip()
    return value if _REQUEST_ID.fullmatch(value) else new_id()
