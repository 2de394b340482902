"""Process logging: one JSON object per line (or readable text) on stderr, each line carrying the correlation
id and the ids of what it is about (request, alert, incident, plan, step, platform), which
`engine/log_context.py` keeps as the work goes."""
from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any

from engine.log_context import FIELDS, current

FORMATS = ("json", "text")


def _ids(record: logging.LogRecord) -> dict[str, Any]:
    """Bound ids, overridden by any passed with `extra=` (the access log names its request that way)."""
    ids = current()
    for name in ("correlation_id", *FIELDS):
        value = getattr(record, name, None)
        if value is not None:
            ids[name] = value
    return ids


def _masked(record: logging.LogRecord) -> logging.LogRecord:
    # The record factory installed by engine.redact masks at creation; this covers records made before it was
    # installed, or by code that builds LogRecords itself. It is idempotent.
    from engine.redact import redact_record

    return redact_record(record)


class JsonFormatter(logging.Formatter):
    """{"ts", "level", "logger", "msg", "correlation_id", ids..., "exc_info"}: masked text, one line."""

    def format(self, record: logging.LogRecord) -> str:
        record = _masked(record)
        ids = _ids(record)
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
                  .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "correlation_id": ids.get("correlation_id"),
        }
        out.update({name: ids[name] for name in FIELDS if name in ids})
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc_info"] = record.exc_text
        if record.stack_info:
            out["stack_info"] = record.stack_info
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The readable form for a terminal: `time LEVEL logger: message [ids]`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(_masked(record))
        ids = _ids(record)
        tags = " ".join(f"{k}={ids[k]}" for k in ("correlation_id", *FIELDS) if k in ids)
        if not tags:
            return text
        first, _, rest = text.partition("\n")  # ids on the message line, before any traceback
        return f"{first} [{tags}]" + (f"\n{rest}" if rest else "")


def configure_logging(*, fmt: str, level: str) -> None:
    """One stderr handler on the root logger in the chosen format; every library logger (aiohttp.access, rq,
    slack_bolt...) propagates to it. Calling again replaces it (settings read from `.env` may change it)."""
    if fmt not in FORMATS:
        raise ValueError(f"WARROOM_LOG_FORMAT must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if not isinstance(logging.getLevelName(level.upper()), int):
        raise ValueError(f"WARROOM_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {level!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def default_format(command: str) -> str:
    """JSON for the long-running services (read by a log pipeline); text for commands a person runs."""
    return "json" if command in ("serve", "worker") else "text"
