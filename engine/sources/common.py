"""What the source parsers share: chunk dicts, word windows, input checks, short labels."""
from __future__ import annotations

import re
from typing import Any

from engine.ingest import IngestError, split_words


def _chunk(title: str, heading: str, text: str, source_type: str, services: list[str]) -> dict[str, Any]:
    return {"title": title, "heading": heading, "text": text, "source_type": source_type,
            "services": list(services)}


def _windowed(chunks: list[dict[str, Any]], title: str, heading: str, text: str, source_type: str,
              services: list[str]) -> None:
    """Append `text` (windowed by `split_words`) under `heading`; blank text adds nothing."""
    text = text.strip()
    if not text:
        return
    for piece in split_words(text):
        if piece.strip():
            chunks.append(_chunk(title, heading, piece.strip(), source_type, services))


def _check_text(text: str, source: str, what: str) -> None:
    if not isinstance(text, str):
        raise IngestError(f"{source}: expected text, got {type(text).__name__}")
    if "\x00" in text:
        raise IngestError(f"{source}: binary data (NUL bytes), not {what}")
    if not text.strip():
        raise IngestError(f"{source}: empty file, no {what} to index")


def _unique(items) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        item = str(item).strip()
        if item and item not in seen:
            seen[item] = None
    return list(seen)


def _one_line(text: str, limit: int = 100) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0] if " " in text[:limit] else text[:limit]
    return cut.rstrip(" ,;:-") + "…"
