"""Ticket CSV exports (ServiceNow, Jira): one chunk group per ticket, repeated columns merged."""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

from engine.ingest import IngestError, ParsedDocument
from engine.sources.common import _check_text, _one_line, _unique, _windowed


# role -> header aliases, compared after lower-casing, "_" -> " ", and unwrapping Jira's "Custom field (X)"
_TICKET_COLUMNS: dict[str, tuple[str, ...]] = {
    "key": ("issue key", "number", "key", "ticket", "ticket number", "ticket id", "incident number",
            "incident", "id", "issue id", "sys id"),
    "summary": ("summary", "short description", "title", "subject", "name"),
    "description": ("description", "details", "problem description"),
    "priority": ("priority",),
    "severity": ("severity", "impact"),
    "state": ("status", "state", "incident state"),
    "resolution": ("resolution", "close code", "resolution code", "u resolution code"),
    "close_notes": ("close notes", "resolution notes", "u resolution notes", "resolution details"),
    "root_cause": ("u root cause", "root cause", "rca", "u rca", "root cause analysis"),
    "caused_by": ("caused by", "caused by change", "problem id", "problem"),
    "comments": ("comment", "comments", "comments and work notes", "work notes", "additional comments",
                 "activity"),
    "services": ("component/s", "components", "component", "cmdb ci", "configuration item", "business service",
                 "service", "services", "affected service", "u service", "application"),
    "labels": ("labels", "label", "tags"),
    "group": ("assignment group", "team", "assigned group"),
    "assignee": ("assigned to", "assignee"),
    "opened": ("opened at", "created", "opened", "sys created on", "created at", "created on"),
    "resolved": ("resolved at", "resolved", "closed at", "resolution date", "closed", "resolved on"),
    "type": ("issue type", "category", "type"),
}
_MERGED_ROLES = {"services", "comments", "labels"}
# ServiceNow journal fields hold every entry in one cell: "<date time> - <who> (Work notes)\n<text>\n\n..."
_SN_JOURNAL = re.compile(r"\n\s*\n(?=\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} - )")
_JIRA_COMMENT = re.compile(r"^(\d{1,2}/[A-Za-z]{3}/\d{2,4} \d{1,2}:\d{2}(?: [AP]M)?);([^;\n]*);(.*)$", re.S)


def _norm_header(name: str) -> str:
    name = name.strip().lstrip("\ufeff").strip().strip('"').lower().replace("_", " ")
    name = re.sub(r"\s+", " ", name)
    custom = re.fullmatch(r"custom field \((.+)\)", name)
    return custom.group(1).strip() if custom else name


def _map_columns(header: list[str]) -> dict[str, list[int]]:
    normalized = [_norm_header(h) for h in header]
    mapping: dict[str, list[int]] = {}
    taken: set[int] = set()
    for role, aliases in _TICKET_COLUMNS.items():
        for alias in aliases:          # the first alias present wins; repeated columns are all kept
            idx = [i for i, h in enumerate(normalized) if h == alias and i not in taken]
            if idx:
                mapping.setdefault(role, []).extend(idx)
                taken.update(idx)
                if role not in _MERGED_ROLES:    # services / comments / labels gather every alias present
                    break
    return {role: sorted(idx) for role, idx in mapping.items()}


def _delimiter(first_line: str) -> str:
    """The header line's most frequent separator outside quotes; csv.Sniffer when it has none."""
    counts = dict.fromkeys((",", ";", "\t", "|"), 0)
    quoted = False
    for char in first_line:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(counts, key=lambda d: counts[d])
    if counts[best]:
        return best
    try:
        return csv.Sniffer().sniff(first_line, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def _comment(value: str) -> str:
    match = _JIRA_COMMENT.match(value.strip())
    if match:     # Jira: "14/Mar/26 10:22 AM;jdoe;text"
        when, who, body = match.groups()
        return f"{when} {who.strip()}: {body.strip()}"
    return value.strip()


def parse_tickets_csv(text: str, *, source: str, digest: str) -> ParsedDocument:
    """A ticket export CSV: ServiceNow list exports (`number, short_description, close_notes, cmdb_ci`…),
    Jira "Export CSV (all fields)" (`Issue key, Summary, Component/s, Comment`… with repeated columns), or
    anything with key/summary-like columns. One chunk group per ticket, heading `"<key>: <summary>"`."""
    _check_text(text, source, "tickets")
    text = text.lstrip("\ufeff")
    first_line = text.split("\n", 1)[0].rstrip("\r")
    delimiter = _delimiter(first_line)
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error as exc:
        raise IngestError(f"{source}: not a readable CSV file: {exc}") from exc
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise IngestError(f"{source}: empty CSV file")
    header = rows[0]
    cols = _map_columns(header)
    if "key" not in cols and "summary" not in cols:
        shown = ", ".join(h.strip() for h in header[:8]) + (", …" if len(header) > 8 else "")
        raise IngestError(f"{source}: not a ticket export: no key (Issue key/number) or summary "
                          f"(Summary/short_description) column among: {shown}")
    key_header = _norm_header(header[cols["key"][0]]) if "key" in cols else ""
    system = {"issue key": "jira", "number": "servicenow"}.get(key_header, "csv")

    def values(row: list[str], role: str) -> list[str]:
        out = []
        for i in cols.get(role, []):
            if i < len(row):
                v = row[i].replace("\r\n", "\n").replace("\r", "\n").strip()
                if v:
                    out.append(v)
        return out

    def value(row: list[str], role: str) -> str:
        found = values(row, role)
        return found[0] if found else ""

    title = f"{Path(source).stem} tickets"
    chunks: list[dict[str, Any]] = []
    keys: list[str] = []
    all_services: list[str] = []
    for n, row in enumerate(rows[1:], start=2):
        key, summary, description = value(row, "key"), value(row, "summary"), value(row, "description")
        if not (key or summary or description):
            continue
        key = key or f"row {n}"
        if not summary and description:
            summary = _one_line(description.splitlines()[0], 80)
        heading = f"{key}: {_one_line(summary, 160)}" if summary else key
        services = _unique(s for v in values(row, "services") for s in re.split(r"[,;]", v))
        labels = _unique(s for v in values(row, "labels") for s in re.split(r"[,;]", v))
        facts = [(label, value(row, role)) for label, role in (
            ("Type", "type"), ("Priority", "priority"), ("Severity", "severity"), ("State", "state"),
            ("Resolution", "resolution"))]
        people = [(label, value(row, role)) for label, role in (
            ("Group", "group"), ("Assignee", "assignee"), ("Opened", "opened"), ("Resolved", "resolved"))]
        lines = []
        if any(v for _, v in facts):
            lines.append(" | ".join(f"{label}: {v}" for label, v in facts if v))
        if services:
            lines.append("Services: " + ", ".join(services))
        if labels:
            lines.append("Labels: " + ", ".join(labels))
        if any(v for _, v in people):
            lines.append(" | ".join(f"{label}: {v}" for label, v in people if v))
        if description:
            lines.append("Description:\n" + description)
        for label, role in (("Close notes", "close_notes"), ("Root cause", "root_cause"),
                            ("Caused by", "caused_by")):
            found = values(row, role)
            if found:
                lines.append(f"{label}:\n" + "\n".join(found) if "\n" in "".join(found) or len(found) > 1
                             else f"{label}: {found[0]}")
        comments = [_comment(c) for v in values(row, "comments") for c in _SN_JOURNAL.split(v) if c.strip()]
        if comments:
            lines.append("Comments:\n" + "\n".join(f"- {c}" for c in comments))
        body = "\n".join(lines)
        if not body.strip():
            body = heading
        _windowed(chunks, title, heading, body, "ticket", services)
        keys.append(key)
        all_services.extend(services)
    if not chunks:
        raise IngestError(f"{source}: ticket export has a header but no ticket rows")
    metadata = {"system": system, "tickets": keys, "columns": {r: [header[i].strip() for i in idx]
                                                              for r, idx in cols.items()}}
    return ParsedDocument(source=source, source_type="ticket", title=title, content_hash=digest,
                          services=_unique(all_services), chunks=chunks, metadata=metadata)
