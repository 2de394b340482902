"""Parsers for the other sources on-call knowledge lives in: Confluence/HTML pages, Slack export channel
files, ticket CSV exports (ServiceNow, Jira) and plain log files. Pure functions with the same contract as
`engine.ingest.parse_markdown`: `(text, *, source, digest) -> ParsedDocument`, chunks shaped
`{"title", "heading", "text", "source_type", "services"}`, never a chunk with empty text, and bad input
reported only as `IngestError` with a one-line reason that names the source.

`detect_source_type(path, head)` tells which of them fits a file; `PARSERS` maps the CLI's
`--source-type` names to the functions. One module per source; `common` holds what they share."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from engine.ingest import ParsedDocument
from engine.sources.confluence import parse_html
from engine.sources.logs import _ACCESS, _CONTINUATION, _LEVEL_PREFIX, _TS_PREFIX, parse_log
from engine.sources.slack_export import parse_slack_export
from engine.sources.tickets import parse_tickets_csv

__all__ = ["parse_html", "parse_slack_export", "parse_tickets_csv", "parse_log", "detect_source_type",
           "PARSERS"]


_NOT_OURS = {".md", ".markdown", ".yml", ".yaml"}
_JSONL_LOG_KEY = re.compile(r'"(?:level|severity|levelname|lvl|@timestamp|timestamp|time|ts|msg|message)"\s*:')


def _looks_like_slack(head: bytes) -> bool:
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not start.startswith(b"["):
        return False
    if not start[1:].lstrip().startswith(b"{"):
        return False
    return bool(re.search(rb'"ts"\s*:\s*"\d+\.\d+"', head)) and \
        bool(re.search(rb'"type"\s*:\s*"message"', head))


def _looks_like_log(head: bytes) -> bool:
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    lines = text.splitlines()
    if len(lines) > 1 and not text.endswith("\n"):
        lines = lines[:-1]            # the peek may end in the middle of a line
    heads = [ln for ln in lines if ln.strip() and not _CONTINUATION.match(ln)]
    if not heads:
        return False
    hits = sum(1 for ln in heads if _TS_PREFIX.match(ln) or _LEVEL_PREFIX.match(ln) or _ACCESS.match(ln)
               or (ln.startswith("{") and _JSONL_LOG_KEY.search(ln)))
    return hits >= max(1, 0.6 * len(heads))


def detect_source_type(path: Path, head: bytes) -> str | None:
    """"html", "slack-export", "csv" or "log" when the name and a peek at the first bytes say so; None to
    let the caller fall back (markdown/yaml by suffix, or an error)."""
    suffix = path.suffix.lower()
    if suffix in _NOT_OURS:
        return None
    if suffix in (".html", ".htm", ".xhtml"):
        return "html"
    if suffix == ".json":
        return "slack-export" if _looks_like_slack(head) else None
    if suffix == ".csv":
        return "csv"
    if suffix == ".log" or (suffix[1:].isdigit() and ".log" in [s.lower() for s in path.suffixes]):
        return "log"                  # app.log, app.log.1
    if suffix in ("", ".txt", ".out", ".err", ".jsonl", ".ndjson") and _looks_like_log(head):
        return "log"
    if suffix in ("", ".txt") and re.match(rb"\s*(?:<!doctype html|<html)", head.lstrip(b"\xef\xbb\xbf"), re.I):
        return "html"
    return None


PARSERS: dict[str, Callable[..., ParsedDocument]] = {
    "html": parse_html,
    "slack-export": parse_slack_export,
    "csv": parse_tickets_csv,
    "log": parse_log,
}
