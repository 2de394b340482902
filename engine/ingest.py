"""Turning files into documents and chunks: markdown (front matter, headings kept as context) and executable
runbook YAML here; HTML, Slack exports, ticket CSVs and logs in `engine.sources`. Pure functions; storage and
embedding are done by `engine.knowledge`."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from engine.chunking import chunk_blocks, embedding_windows, gist, humanize, parse_sections, to_blocks
from engine.chunking import split_words  # noqa: F401  (re-exported; it moved to engine.chunking)
from engine.models import Runbook, first_error

SOURCE_TYPES = ("markdown", "html", "yaml", "slack-export", "csv", "log")   # the CLI's --source-type


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


HEAD_BYTES = 4096   # how much of a file the type detection peeks at


def detect_type(path: Path, head: bytes | None = None) -> str | None:
    """The source type a file's name (and, for ambiguous names, its first bytes) says it is; None if unknown.
    Markdown and executable-runbook YAML by suffix; HTML, Slack exports, ticket CSVs and logs by
    `engine.sources.detect_source_type`."""
    from engine.sources import detect_source_type   # engine.sources builds on this module

    suffix = path.suffix.lower()
    if suffix in (".md", ".markdown"):
        return "markdown"
    if suffix in (".yml", ".yaml"):
        return "yaml"
    if head is None:
        with path.open("rb") as fh:
            head = fh.read(HEAD_BYTES)
    found = detect_source_type(path, head)
    if found is None and suffix == ".txt":
        return "markdown"     # plain notes: markdown without headings
    return found


def parse_file(path: Path, source_type: str = "auto") -> ParsedDocument:
    from engine.sources import PARSERS

    data = path.read_bytes()
    kind = detect_type(path, data[:HEAD_BYTES]) if source_type == "auto" else source_type
    if kind is None:
        raise IngestError(f"{path}: cannot tell the source type from the name or content (use --source-type)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestError(f"{path}: not UTF-8 text") from exc
    source, digest = str(path.resolve()), content_hash(data)
    if kind == "markdown":
        return parse_markdown(text, source=source, digest=digest)
    if kind == "yaml":
        return parse_runbook_yaml(text, source=source, digest=digest)
    if kind in PARSERS:
        return PARSERS[kind](text, source=source, digest=digest)
    raise IngestError(f"{path}: unsupported source type {kind!r} (one of: {', '.join(SOURCE_TYPES)})")


_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.S)


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
    """Front matter for title and services; the body chunked at headings (see `engine.chunking`)."""
    meta, body = _split_front_matter(text)
    heading = _first_h1(body)
    title = str(meta.get("title") or heading or Path(source).stem)
    services = _as_list(meta.get("services") or meta.get("service"))
    keywords = _keywords(title, heading, *_as_list(meta.get("alerts") or meta.get("alert")))
    chunks = build_chunks(body, title=title, source_type="markdown", services=services, keywords=keywords)
    # A page with no body (a section index, say) is still recorded, so re-ingesting it is a hash skip,
    # but it gets no chunk: a title alone would only crowd out the pages that say something.
    return ParsedDocument(source=source, source_type="markdown", title=title, content_hash=digest,
                          services=services, chunks=chunks,
                          metadata={k: v for k, v in meta.items() if isinstance(v, (str, int, float, list))})


def _first_h1(body: str) -> str:
    """The first level-1 heading outside code fences."""
    for trail, _, _ in parse_sections(body):
        if len(trail) == 1:
            return trail[0]
    return ""


def _keywords(*names: str) -> str:
    """Names split into words for the full-text index (`KubePodCrashLooping` -> `Kube Pod Crash Looping`)."""
    seen: list[str] = []
    for name in names:
        words = humanize(name)
        if words and words not in seen:
            seen.append(words)
    return " ".join(seen)


def build_chunks(body: str, *, title: str, source_type: str, services: list[str], keywords: str = ""
                 ) -> list[dict[str, Any]]:
    """Chunk dicts as storage takes them, each with the embedding windows that cover it and the document's
    opening sentence (`gist`), which is embedded with every window but stored nowhere."""
    blocks = to_blocks(body)
    opening = gist(blocks)
    return [{"title": title, "heading": chunk.heading, "text": chunk.text, "source_type": source_type,
             "services": services, "keywords": keywords, "gist": opening,
             "windows": [{"heading": " > ".join(trail), "text": text} for trail, text in embedding_windows(chunk)]}
            for chunk in chunk_blocks(blocks)]


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
    keywords = _keywords(meta.title, *meta.alerts)
    chunks = build_chunks(f"# Description\n{header}{runbook.description.strip()}\n# Steps\n{steps_text}",
                          title=meta.title, source_type="runbook", services=meta.services, keywords=keywords)
    return ParsedDocument(source=source, source_type="runbook", title=meta.title, content_hash=digest,
                          services=meta.services, chunks=chunks,
                          metadata={"runbook_id": meta.id, "alerts": meta.alerts},
                          runbook=runbook.model_dump(mode="json", by_alias=True))


def iter_files(paths: list[Path], source_type: str = "auto") -> list[Path]:
    """Files to ingest: each file named, and in each directory every non-hidden file of a known type (with an
    explicit `source_type`, every non-hidden file). A directory walk skips what it cannot read as knowledge
    (images, package.json); a file named on the command line that cannot be read is an error later."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            for p in sorted(path.rglob("*")):
                if not p.is_file() or any(part.startswith(".") for part in p.relative_to(path).parts):
                    continue
                if source_type != "auto" or _known_type(p):
                    out.append(p)
        elif path.exists():
            out.append(path)
        else:
            raise IngestError(f"{path}: no such file or directory")
    return out


def _known_type(path: Path) -> bool:
    try:
        return detect_type(path) is not None
    except OSError:
        return True   # unreadable: let parse_file report it with its reason
