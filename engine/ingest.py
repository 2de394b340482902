"""Turning files into documents and chunks: markdown (front matter, headings kept as context) and
executable runbook YAML. Pure functions; storage and embedding are done by `engine.knowledge`."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from engine.models import Runbook, first_error

CHUNK_WORDS = 220       # MiniLM reads 256 word pieces; keep each chunk inside what it embeds
OVERLAP_WORDS = 55      # ~25 % overlap so a fact split across a boundary is found from both sides
SOURCE_TYPES = ("markdown", "yaml")


class IngestError(ValueError):
    """A file cannot be ingested; the message says which and why."""


@dataclass
class ParsedDocument:
    source: str
    source_type: str
    title: str
    content_hash: str
    services: list[str]
    chunks: list[dict[str, Any]]
    metadata: dict[str, Any] = field(default_factory=dict)
    runbook: dict[str, Any] | None = None


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def detect_type(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".md", ".markdown", ".txt"):
        return "markdown"
    if suffix in (".yml", ".yaml"):
        return "yaml"
    raise IngestError(f"{path}: cannot tell the source type from the name (use --source-type)")


def parse_file(path: Path, source_type: str = "auto") -> ParsedDocument:
    data = path.read_bytes()
    kind = detect_type(path) if source_type == "auto" else source_type
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IngestError(f"{path}: not UTF-8 text") from exc
    source = str(path.resolve())
    if kind == "markdown":
        return parse_markdown(text, source=source, digest=content_hash(data))
    if kind == "yaml":
        return parse_runbook_yaml(text, source=source, digest=content_hash(data))
    raise IngestError(f"{path}: unsupported source type {kind!r}")


_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.S)
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError:
        return {}, text
    return (meta if isinstance(meta, dict) else {}), text[match.end():]


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def parse_markdown(text: str, *, source: str, digest: str) -> ParsedDocument:
    meta, body = _split_front_matter(text)
    sections: list[tuple[list[str], list[str]]] = [([], [])]
    title = str(meta.get("title") or "")
    in_code = False
    for line in body.splitlines():
        if line.strip().startswith("```"):
            in_code = not in_code
        match = None if in_code else _HEADING.match(line)
        if match:
            level, heading = len(match.group(1)), match.group(2).strip()
            if level == 1 and not title:
                title = heading
            trail = sections[-1][0][: level - 1] + [heading]
            sections.append((trail, []))
        else:
            sections[-1][1].append(line)
    title = title or Path(source).stem
    services = _as_list(meta.get("services") or meta.get("service"))
    chunks = []
    for trail, lines in sections:
        content = "\n".join(lines).strip()
        if not content:
            continue
        heading = " > ".join(trail)
        for piece in split_words(content):
            chunks.append({"title": title, "heading": heading, "text": piece, "source_type": "markdown",
                           "services": services})
    if not chunks:
        chunks.append({"title": title, "heading": "", "text": title, "source_type": "markdown",
                       "services": services})
    return ParsedDocument(source=source, source_type="markdown", title=title, content_hash=digest,
                          services=services, chunks=chunks,
                          metadata={k: v for k, v in meta.items() if isinstance(v, (str, int, float, list))})


def split_words(text: str, size: int = CHUNK_WORDS, overlap: int = OVERLAP_WORDS) -> list[str]:
    """Windows of `size` words overlapping by `overlap`; line breaks inside a window are kept."""
    tokens = re.findall(r"\S+\s*", text)
    if len(tokens) <= size:
        return [text]
    out, start = [], 0
    while start < len(tokens):
        out.append("".join(tokens[start:start + size]).strip())
        if start + size >= len(tokens):
            break
        start += size - overlap
    return out


def validate_runbook(data: Any, *, where: str = "runbook") -> Runbook:
    if not isinstance(data, dict):
        raise IngestError(f"{where}: a runbook must be a YAML mapping")
    try:
        return Runbook.model_validate(data)
    except ValidationError as exc:
        raise IngestError(f"{where}: {first_error(exc)}") from exc


def parse_runbook_yaml(text: str, *, source: str, digest: str) -> ParsedDocument:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise IngestError(f"{source}: not valid YAML: {str(exc).splitlines()[0]}") from exc
    runbook = validate_runbook(data, where=source)
    ids = [s.id for s in runbook.steps]
    if len(ids) != len(set(ids)):
        raise IngestError(f"{source}: step ids must be unique")
    meta = runbook.metadata
    steps_text = "\n".join(f"- {s.title} ({s.connector}, {s.risk.value})" for s in runbook.steps)
    header = f"Alerts: {', '.join(meta.alerts)}\nServices: {', '.join(meta.services)}\n" if (
        meta.alerts or meta.services) else ""
    chunks = [{"title": meta.title, "heading": "Description", "text": piece, "source_type": "runbook",
               "services": meta.services}
              for piece in split_words(header + runbook.description.strip())]
    chunks.append({"title": meta.title, "heading": "Steps", "text": steps_text, "source_type": "runbook",
                   "services": meta.services})
    return ParsedDocument(source=source, source_type="runbook", title=meta.title, content_hash=digest,
                          services=meta.services, chunks=chunks,
                          metadata={"runbook_id": meta.id, "alerts": meta.alerts},
                          runbook=runbook.model_dump(mode="json", by_alias=True))


def iter_files(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
                              and p.suffix.lower() in (".md", ".markdown", ".yml", ".yaml", ".txt")))
        elif path.exists():
            out.append(path)
        else:
            raise IngestError(f"{path}: no such file or directory")
    return out
