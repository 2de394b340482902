"""Plain log files: lines grouped by error signature (ids, numbers and hex normalised away)."""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from engine.ingest import ParsedDocument
from engine.sources.common import _check_text, _chunk, _one_line


# A line that starts a new record: a timestamp (ISO 8601, syslog, bracketed, klog), a level word, a JSON
# object, or an access-log client address.
_TS_PREFIX = re.compile(
    r"^\[?(?P<ts>\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?"
    r"|[A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2}"
    r"|\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2}(?: [+-]\d{4})?"
    r"|[IWEF]\d{4} \d{2}:\d{2}:\d{2}\.\d+)\]?")
_LEVEL_PREFIX = re.compile(r"^\[?(?:FATAL|CRITICAL|ERROR|WARN(?:ING)?|INFO|DEBUG|TRACE|NOTICE|SEVERE)\b")
_ACCESS = re.compile(r'^(?P<ip>\S+) \S+ \S+ \[(?P<ts>[^\]]+)\] "(?P<method>[A-Z]+) (?P<path>[^\s"]+)[^"]*" '
                     r"(?P<status>\d{3})\b")
_SYSLOG = re.compile(r"^(?P<ts>[A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2}) (?P<host>\S+) "
                     r"(?P<prog>[\w./@-]+?)(?:\[\d+\])?: ?(?P<msg>.*)$")
_SPRING = re.compile(r"^([A-Z]+)\s+\d+ --- \[[^\]]*\]\s+")
_LEVEL_WORD = re.compile(r"\b(FATAL|CRITICAL|CRIT|EMERG|ALERT|ERROR|ERR|SEVERE|WARNING|WARN|NOTICE|INFO|DEBUG|"
                         r"TRACE)\b")
_LEVEL_LOWER = re.compile(r"(?:level[=:]\s*\"?|\[)(fatal|critical|error|err|warning|warn|notice|info|debug|"
                          r"trace)\b", re.I)
_ERROR_WORDS = re.compile(r"error|fail|exception|fatal|panic|refused|timed? ?out|denied|no space left|"
                          r"out of memory|oom|killed process|unreachable|expired|exhausted|segfault|traceback",
                          re.I)
_CONTINUATION = re.compile(
    r"^(?:\s|Traceback \(most recent call last\)|Caused by:|During handling of the above|"
    r"The above exception was|\.\.\. \d+ (?:more|common frames)|goroutine \d+ \[|"
    r"(?:[A-Za-z_$][\w$]*\.)*[A-Za-z_$][\w$]*(?:Error|Exception|Exit|Interrupt|Warning|Throwable|Failure|"
    r"Timeout|Exhausted)\w*(?::|$))")
_EXC_LINE = re.compile(r"^(?:Caused by: )?(?:[A-Za-z_$][\w$]*\.)*[A-Za-z_$][\w$]*(?:Error|Exception|Exit|"
                       r"Interrupt|Warning|Throwable|Failure|Timeout|Exhausted)\w*(?::|$)")
_SEVERITY = {"FATAL": "FATAL", "EMERG": "FATAL", "ALERT": "FATAL", "CRITICAL": "CRITICAL", "CRIT": "CRITICAL",
             "SEVERE": "ERROR", "ERROR": "ERROR", "ERR": "ERROR", "WARNING": "WARN", "WARN": "WARN",
             "NOTICE": "INFO", "INFO": "INFO", "DEBUG": "DEBUG", "TRACE": "DEBUG"}
_RANK = {"FATAL": 4, "CRITICAL": 3, "ERROR": 2, "WARN": 1, "INFO": 0, "DEBUG": -1}
def _random_id(match: re.Match) -> str:
    """Generated ids (`ch_3OqZx2Lk9aBcD`, `nvme1n1p1`) flip between letters and digits; names don't."""
    token = match.group(0)
    flips = len(re.findall(r"(?<=[A-Za-z])\d|(?<=\d)[A-Za-z]", token))
    return "<id>" if flips >= 3 else token


def _path_digits(match: re.Match) -> str:
    """Numbers anywhere in a path: `/dev/sda3`, `/v2/orders/991` -> `/dev/sda<n>`, `/v<n>/orders/<n>`."""
    return re.sub(r"\d+", "<n>", match.group(0))


_NORMALIZERS = [
    (re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?"), "<ts>"),
    (re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"), "<uuid>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "<hex>"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), "<ip>"),
    (re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"), "<email>"),
    (re.compile(r"(?<![0-9A-Za-z])(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}(?![0-9A-Za-z])"), "<hex>"),
    (re.compile(r'"[^"\n]*"'), '"<*>"'),
    (re.compile(r"(?<![\w])'[^'\n]*'(?![\w])"), "'<*>'"),
    (re.compile(r"\b([A-Za-z_][\w.-]*)=(?!<)[^\s,;)\]}]+"), r"\1=<*>"),
    (re.compile(r"(?<![\w<>.])/[^\s\"'()\[\]{},;]*\d[^\s\"'()\[\]{},;]*"), _path_digits),
    (re.compile(r"\b(?=[A-Za-z_]*\d)\w{8,}\b"), _random_id),
    (re.compile(r"(?<=[A-Za-z_])\d{3,}"), "<n>"),
    (re.compile(r"(?<![A-Za-z\d])\d+(?:\.\d+)*"), "<n>"),
    (re.compile(r"\s+"), " "),
]
_MAX_SIGNATURES = 200
_EXAMPLE_LINES = 30
_EXAMPLE_LINE_CHARS = 300
_CHUNK_CHARS = 2400
_JSON_LEVEL = ("level", "severity", "levelname", "lvl", "log.level", "level_name", "loglevel")
_JSON_MSG = ("message", "msg", "event", "log", "text", "error.message")
_JSON_TS = ("@timestamp", "timestamp", "time", "ts", "asctime", "datetime", "t")
_JSON_STACK = ("exc_info", "stack_trace", "stacktrace", "exception", "stack", "error.stack_trace",
               "error.stack", "traceback")
_JSON_SERVICE = ("service", "service.name", "app", "application", "service_name")


def _normalize(text: str) -> str:
    for pattern, repl in _NORMALIZERS:
        text = pattern.sub(repl, text)
    return text.strip()


def _json_get(obj: dict[str, Any], key: str) -> Any:
    if key in obj:
        return obj[key]
    head, _, rest = key.partition(".")
    if rest and isinstance(obj.get(head), dict):
        return obj[head].get(rest)
    return None


def _json_first(obj: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        value = _json_get(obj, key)
        if value not in (None, "", [], {}):
            return value
    return None


class _Record:
    __slots__ = ("line_no", "lines", "level", "ts", "message", "service", "extra", "prefix")

    def __init__(self, line_no: int, line: str):
        self.line_no = line_no
        self.lines = [line]
        self.level = ""
        self.ts = ""
        self.message = ""
        self.service = ""
        self.prefix = ""              # kept as is in the signature (an access line's status and method)
        self.extra: list[str] = []


class _Signature:
    __slots__ = ("heading", "level", "count", "first_ts", "last_ts", "first_line", "examples", "last")

    def __init__(self, heading: str, level: str, first_line: int):
        self.heading = heading
        self.level = level
        self.count = 0
        self.first_ts = self.last_ts = ""
        self.first_line = first_line
        self.examples: list[_Record] = []
        self.last: _Record | None = None


def _classify(rec: _Record) -> None:
    """Fill level, timestamp, message (the head line without its timestamp) and service of a record."""
    head = rec.lines[0]
    if head.startswith("{") and head.rstrip().endswith("}"):
        try:
            obj = json.loads(head)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            level = str(_json_first(obj, _JSON_LEVEL) or "").upper()
            rec.level = _SEVERITY.get(level, "INFO" if level else "")
            rec.ts = str(_json_first(obj, _JSON_TS) or "")
            msg = _json_first(obj, _JSON_MSG)
            rec.message = msg if isinstance(msg, str) else json.dumps(msg) if msg is not None else head
            service = _json_first(obj, _JSON_SERVICE)
            rec.service = service if isinstance(service, str) else ""
            stack = _json_first(obj, _JSON_STACK)
            if isinstance(stack, list):
                stack = "\n".join(str(s) for s in stack)
            if isinstance(stack, str) and stack.strip():
                rec.extra = stack.strip().splitlines()
            if not rec.level:
                rec.level = "ERROR" if rec.extra or _ERROR_WORDS.search(rec.message) else "INFO"
            rec.message = f"{rec.level} {rec.message}"
            return
    access = _ACCESS.match(head)
    if access:
        rec.ts = access.group("ts")
        status = access.group("status")
        path = access.group("path").split("?", 1)[0]
        rec.prefix = f"HTTP {status} {access.group('method')} "
        rec.message = path
        rec.level = "ERROR" if status.startswith("5") else "INFO"
        return
    syslog = _SYSLOG.match(head)
    if syslog:
        rec.ts = syslog.group("ts")
        rec.message = f"{syslog.group('prog')}: {syslog.group('msg')}"
    else:
        ts = _TS_PREFIX.match(head)
        if ts:
            rec.ts = ts.group("ts")
            rec.message = head[ts.end():].lstrip(" \t-|:,")
            if head[0] in "IWEF" and head[1:5].isdigit():      # klog: E0314 10:02:11.123456 ...
                rec.level = {"I": "INFO", "W": "WARN", "E": "ERROR", "F": "FATAL"}[head[0]]
        else:
            rec.message = head.strip()
    # Spring Boot: "ERROR 1 --- [nio-8080-exec-7] c.a.l.Controller : msg" -> "ERROR c.a.l.Controller : msg"
    rec.message = _SPRING.sub(r"\1 ", rec.message, count=1)
    if not rec.level:
        word = _LEVEL_WORD.search(rec.message[:80])
        if word:
            rec.level = _SEVERITY[word.group(1)]
        else:
            lower = _LEVEL_LOWER.search(rec.message[:80])
            if lower:
                rec.level = _SEVERITY[lower.group(1).upper()]
            elif len(rec.lines) > 1 or _ERROR_WORDS.search(rec.message):
                rec.level = "ERROR"
            elif "warn" in rec.message.lower():
                rec.level = "WARN"
            else:
                rec.level = "INFO"
    if "service=" in rec.message:
        match = re.search(r"\bservice=([\w.-]+)", rec.message)
        rec.service = match.group(1) if match else ""


def _exception_line(rec: _Record) -> str:
    exc = ""
    for line in rec.lines[1:] + rec.extra:
        stripped = line.strip()
        if _EXC_LINE.match(stripped):
            exc = stripped          # the last one: Python's raised exception, Java's root "Caused by"
    return exc


def _signature_of(rec: _Record) -> str:
    sig = (rec.prefix + _normalize(rec.message)).strip() or "(empty line)"
    exc = _exception_line(rec)
    if exc:
        exc_sig = _normalize(exc)
        if exc_sig and exc_sig not in sig:
            return f"{_one_line(sig, 140)} — {_one_line(exc_sig, 100)}"
    return _one_line(sig, 200)


def _example_text(rec: _Record, full: bool) -> str:
    lines = rec.lines + rec.extra
    if not full and len(lines) > 2:     # later occurrences: the head line and the exception are enough
        exc = _exception_line(rec) or lines[-1].strip()
        lines = [lines[0], f"  … ({len(lines) - 2} lines)", exc]
    shown = [ln.rstrip()[:_EXAMPLE_LINE_CHARS] for ln in lines[:_EXAMPLE_LINES]]
    if len(lines) > _EXAMPLE_LINES:
        shown.append(f"  … ({len(lines) - _EXAMPLE_LINES} more lines)")
    return "\n".join(shown)


def _cap(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit("\n", 1)[0]
    return cut + "\n… (truncated)"


def parse_log(text: str, *, source: str, digest: str) -> ParsedDocument:
    """A plain log file: syslog, application logs with ISO timestamps, JSON lines, access logs, with Python
    tracebacks and Java stack traces attached to the line that logged them.

    WARN-and-above records (and level-less ones that read as errors, or carry a traceback, or are 5xx access
    lines) are grouped by *signature*: the message (syslog host/pid, Spring pid/thread dropped) with
    timestamps, UUIDs, hex and generated ids, IPs, e-mails, quoted values, `key=value` values, digits inside
    paths and standalone numbers replaced by placeholders, plus the final exception line (Python's raised
    exception, Java's last `Caused by:`) when there is one. One chunk per signature (heading = signature; text = level, count, first/last seen and up
    to 3 example occurrences, capped in size — not windowed, so one chunk per signature). INFO/DEBUG lines
    are only counted: they go into a single "Summary" chunk with line/level counts, the time range and the
    list of signatures. At most 200 signature chunks (most severe, then most frequent); the rest are
    listed only by count in the summary."""
    _check_text(text, source, "log lines")
    name = Path(source).name
    services: dict[str, None] = {}
    signatures: dict[str, _Signature] = {}
    level_counts: Counter[str] = Counter()
    first_ts = last_ts = ""
    line_count = 0
    records = 0
    current: _Record | None = None

    def finish(rec: _Record) -> None:
        nonlocal first_ts, last_ts, records
        records += 1
        _classify(rec)
        level_counts[rec.level] += 1
        if rec.ts:
            first_ts = first_ts or rec.ts
            last_ts = rec.ts
        if rec.service:
            services[rec.service] = None
        if _RANK.get(rec.level, 0) < 1:
            return
        sig = _signature_of(rec)
        entry = signatures.get(sig)
        if entry is None:
            entry = signatures[sig] = _Signature(sig, rec.level, rec.line_no)
        entry.count += 1
        if _RANK[rec.level] > _RANK[entry.level]:
            entry.level = rec.level
        if rec.ts:
            entry.first_ts = entry.first_ts or rec.ts
            entry.last_ts = rec.ts
        if len(entry.examples) < 2:
            entry.examples.append(rec)
        entry.last = rec

    is_start = _TS_PREFIX.match
    is_level = _LEVEL_PREFIX.match
    is_cont = _CONTINUATION.match
    for line_count, line in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        if not line.strip():
            continue
        if current is not None and not is_start(line) and not is_level(line) and not line.startswith("{") \
                and is_cont(line):
            current.lines.append(line)
            continue
        if current is not None:
            finish(current)
        current = _Record(line_count, line)
    if current is not None:
        finish(current)

    ranked = sorted(signatures.values(), key=lambda s: (-_RANK[s.level], -s.count, s.first_line))
    kept = sorted(ranked[:_MAX_SIGNATURES], key=lambda s: s.first_line)
    dropped = len(ranked) - len(kept)
    service_list = list(services)
    chunks: list[dict[str, Any]] = []
    for entry in kept:
        examples = list(entry.examples)
        if entry.count > 2 and entry.last is not None:
            examples.append(entry.last)
        parts = [f"Level: {entry.level}", f"Occurrences: {entry.count}"]
        if entry.first_ts:
            parts.append(f"First seen: {entry.first_ts}")
            parts.append(f"Last seen: {entry.last_ts}")
        for i, rec in enumerate(examples, start=1):
            parts.append(f"Example {i} (line {rec.line_no}):\n{_example_text(rec, full=i == 1)}")
        chunks.append(_chunk(name, entry.heading, _cap("\n".join(parts), _CHUNK_CHARS), "log", service_list))

    levels = ", ".join(f"{lvl} {level_counts[lvl]}"
                       for lvl in sorted(level_counts, key=lambda name: -_RANK.get(name, 0)))
    summary = [f"Log file: {name}", f"Lines: {line_count} ({records} records)", f"Levels: {levels}"]
    if first_ts:
        summary.append(f"Time range: {first_ts} .. {last_ts}")
    summary.append(f"Warning/error signatures: {len(ranked)}")
    summary.extend(f"- [{s.count}x {s.level}] {_one_line(s.heading, 140)}" for s in ranked[:20])
    if len(ranked) > 20:
        summary.append(f"- … {len(ranked) - 20} more")
    if dropped:
        summary.append(f"{dropped} rarer signatures were not indexed as chunks")
    chunks.insert(0, _chunk(name, "Summary", _cap("\n".join(summary), _CHUNK_CHARS), "log", service_list))

    metadata = {"lines": line_count, "records": records, "levels": dict(level_counts),
                "signatures": len(ranked), "signatures_indexed": len(kept)}
    if first_ts:
        metadata.update(first_seen=first_ts, last_seen=last_ts)
    return ParsedDocument(source=source, source_type="log", title=name, content_hash=digest,
                          services=service_list, chunks=chunks, metadata=metadata)
