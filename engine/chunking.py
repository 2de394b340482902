"""Heading-aware chunking of markdown, and the embedding windows inside each chunk.

Two sizes on purpose:
- A chunk is what is stored, cited and shown: 512–1024 tokens with ~25 % overlap, cut at heading and
  paragraph boundaries so a citation reads as whole sections.
- MiniLM reads at most 256 word pieces, so a chunk is embedded as several windows of at most
  `WINDOW_TOKENS`, each embedded behind the title, the document's opening sentence and its section headings
  (see `embedding_windows`, `gist` and `engine.knowledge`); a chunk scores as its best window.

"Tokens" are MiniLM word pieces, estimated without loading the tokenizer: the number of words and
punctuation marks times 1.25 (the median ratio measured on the runbook corpus is 1.24, range 1.12–1.56).
Pure functions; no I/O."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

CHUNK_MAX_TOKENS = 1024     # the range is 512–1024 tokens per chunk
CHUNK_MIN_TOKENS = 512      # below this a chunk keeps taking sections (a whole short document is one chunk)
CHUNK_OVERLAP = 0.25        # share of a chunk repeated at the start of the next one (20–30 %)
WINDOW_TOKENS = 200         # with the ~60-token prefix, inside MiniLM's 256 pieces (485 of 486 corpus windows)
WINDOW_OVERLAP = 0.25
PIECES_PER_TOKEN = 1.25

_PRE_TOKEN = re.compile(r"\w+|[^\w\s]")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def count_tokens(text: str) -> int:
    """Estimated MiniLM word pieces of `text`."""
    return math.ceil(len(_PRE_TOKEN.findall(text)) * PIECES_PER_TOKEN)


@dataclass(frozen=True)
class Block:
    """A paragraph, list, table or fenced code block, with the headings it sits under."""
    trail: tuple[str, ...]
    text: str
    tokens: int
    opens_section: bool = False   # the first block under a heading (a chunk may start here cleanly)


@dataclass
class Chunk:
    blocks: list[Block] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(b.tokens for b in self.blocks)

    @property
    def heading(self) -> str:
        """Where the chunk starts: the heading trail of its first block."""
        return " > ".join(self.blocks[0].trail) if self.blocks else ""

    @property
    def text(self) -> str:
        return "\n\n".join(b.text for b in self.blocks)


def parse_sections(body: str) -> list[tuple[tuple[str, ...], str, str]]:
    """(heading trail, heading line, section text) in document order; `#` inside code fences is not a heading."""
    sections: list[tuple[tuple[str, ...], str, list[str]]] = [((), "", [])]
    in_code = False
    for line in body.splitlines():
        if _FENCE.match(line):
            in_code = not in_code
        match = None if in_code else _HEADING.match(line)
        if match:
            level, heading = len(match.group(1)), match.group(2).strip()
            trail = sections[-1][0][: level - 1] + (heading,)
            sections.append((trail, line.strip(), []))
        else:
            sections[-1][2].append(line)
    return [(trail, heading_line, "\n".join(lines).strip()) for trail, heading_line, lines in sections]


def split_blocks(text: str) -> list[str]:
    """Paragraphs split on blank lines, keeping a fenced code block whole even if it has blank lines."""
    blocks, current, in_code = [], [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_code = not in_code
        if not line.strip() and not in_code:
            if current:
                blocks.append("\n".join(current))
                current = []
            continue
        current.append(line)
    if current:
        blocks.append("\n".join(current))
    return blocks


BLOCK_MAX_TOKENS = int(CHUNK_MAX_TOKENS * (1 - CHUNK_OVERLAP - 0.05))  # a cut piece plus the overlap fits a chunk


def to_blocks(body: str, max_tokens: int = BLOCK_MAX_TOKENS) -> list[Block]:
    """The document as blocks; a section's heading line leads its first block so chunk text stays readable.
    A block longer than `max_tokens` (a huge table or log) is cut at line, then word, boundaries, small enough
    that the next chunk still has room for its overlap."""
    out: list[Block] = []
    headings: list[str] = []   # heading lines of empty sections, kept for the next section with text
    for trail, heading_line, text in parse_sections(body):
        if heading_line:
            headings.append(heading_line)
        parts = split_blocks(text)
        if not parts:
            continue
        if headings:
            parts[0] = "\n".join(headings + [parts[0]])
        for i, part in enumerate(parts):
            for piece in _cut(part, max_tokens):
                out.append(Block(trail, piece, count_tokens(piece), opens_section=bool(headings) and i == 0))
        headings = []
    return out


def _cut(text: str, max_tokens: int) -> list[str]:
    if count_tokens(text) <= max_tokens:
        return [text]
    return _pack(_units(text, max_tokens), max_tokens, "\n")


def _units(text: str, max_tokens: int) -> list[str]:
    """Lines, and a line too long by itself as runs of words."""
    out = []
    for line in text.splitlines():
        out.extend([line] if count_tokens(line) <= max_tokens else _pack(line.split(), max_tokens, " "))
    return out


def _pack(units: list[str], max_tokens: int, sep: str) -> list[str]:
    """Consecutive units joined by `sep` into pieces of at most `max_tokens` (a unit alone may exceed it)."""
    pieces, current = [], []
    for unit in units:
        if current and count_tokens(sep.join(current + [unit])) > max_tokens:
            pieces.append(sep.join(current))
            current = []
        current.append(unit)
    if current:
        pieces.append(sep.join(current))
    return pieces


def chunk_blocks(blocks: list[Block], *, max_tokens: int = CHUNK_MAX_TOKENS, min_tokens: int = CHUNK_MIN_TOKENS,
                 overlap: float = CHUNK_OVERLAP) -> list[Chunk]:
    """Greedy packing: a chunk takes blocks up to `max_tokens`, and once past `min_tokens` it ends where a new
    section starts rather than splitting one. The next chunk starts with the previous chunk's last blocks
    (about `overlap` of its tokens) so a fact near a boundary is found whole from either side."""
    chunks: list[Chunk] = []
    current = Chunk()
    fresh = 0    # blocks in `current` that are not overlap carried from the previous chunk
    for block in blocks:
        full = current.tokens + block.tokens > max_tokens
        at_heading = block.opens_section and current.tokens >= min_tokens
        if fresh and (full or at_heading):
            chunks.append(current)
            current = Chunk(_tail(current.blocks, overlap, max_tokens - block.tokens))
            fresh = 0
        current.blocks.append(block)
        fresh += 1
    if fresh:
        chunks.append(current)
    return chunks


def _tail(blocks: list[Block], overlap: float, room: int) -> list[Block]:
    """The end of a chunk to repeat at the start of the next: whole blocks while they stay within overlap + 5 %
    of its tokens (and `room`); if whole blocks fall short of overlap - 5 % (the last block is big), the end of the
    next block back is cut at line or word boundaries to make up about `overlap`."""
    total = sum(b.tokens for b in blocks)
    high = min(room, int(total * (overlap + 0.05)))
    low, target = int(total * (overlap - 0.05)), min(room, int(total * overlap))
    tail: list[Block] = []
    used = 0
    for block in reversed(blocks):
        if used + block.tokens <= high:
            tail.insert(0, block)
            used += block.tokens
            continue
        if used < low:
            piece = _last_tokens(block.text, target - used)
            if piece:
                tail.insert(0, Block(block.trail, piece, count_tokens(piece)))
        break
    return tail


def _last_tokens(text: str, budget: int) -> str:
    """The longest run of whole lines (or, failing that, words) at the end of `text` within `budget` tokens."""
    lines = text.splitlines()
    for start in range(len(lines)):
        candidate = "\n".join(lines[start:])
        if count_tokens(candidate) <= budget:
            return candidate
    words = text.split()
    for start in range(len(words)):
        candidate = " ".join(words[start:])
        if count_tokens(candidate) <= budget:
            return candidate
    return ""


def embedding_windows(chunk: Chunk, *, max_tokens: int = WINDOW_TOKENS, overlap: float = WINDOW_OVERLAP
                      ) -> list[tuple[tuple[str, ...], str]]:
    """(heading trail, text) windows of at most `max_tokens` covering the chunk: blocks of one section are packed
    together, a new section starts a new window (so each window's heading prefix is true of all its text), and a
    block longer than a window is cut into overlapping word runs."""
    windows: list[tuple[tuple[str, ...], str]] = []
    trail: tuple[str, ...] | None = None
    parts: list[str] = []
    used = 0
    for block in chunk.blocks:
        if parts and (block.trail != trail or used + block.tokens > max_tokens):
            windows.append((trail or (), "\n".join(parts)))
            parts, used = [], 0
        trail = block.trail
        for piece in word_windows(block.text, max_tokens, overlap):
            if parts and used + count_tokens(piece) > max_tokens:
                windows.append((trail, "\n".join(parts)))
                parts, used = [], 0
            parts.append(piece)
            used += count_tokens(piece)
    if parts:
        windows.append((trail or (), "\n".join(parts)))
    return windows


def word_windows(text: str, max_tokens: int, overlap: float) -> list[str]:
    """`text` as overlapping runs of words of at most `max_tokens` each."""
    tokens = count_tokens(text)
    if tokens <= max_tokens:
        return [text]
    size = max(1, int(max_tokens * len(text.split()) / tokens))
    while True:   # the per-word estimate is an average: shrink until every run fits
        pieces = split_words(text, size=size, overlap=int(size * overlap))
        if size == 1 or all(count_tokens(p) <= max_tokens for p in pieces):
            return pieces
        size = max(1, int(size * 0.9))


def split_words(text: str, size: int = 400, overlap: int = 100) -> list[str]:
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


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def humanize(identifier: str) -> str:
    """`KubePodCrashLooping` -> `Kube Pod Crash Looping`, `etcdNoLeader` -> `etcd No Leader`: alert names and
    CamelCase titles become words that both the embedding model and the full-text parser can match."""
    return " ".join(_CAMEL.sub(" ", word) for word in identifier.split())


_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_TAG = re.compile(r"</?[A-Za-z][^>]*>|\{\{<[^>]*>\}\}")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


def gist(blocks: list[Block], max_tokens: int = 48) -> str:
    """The document's opening sentence: the first prose block's first sentence (links reduced to their text,
    markup dropped). Runbooks open with what the page is about ("Half or more of the Alertmanager instances
    ... are crashlooping"), which every window deep in Diagnosis or Mitigation lacks on its own."""
    for block in blocks:
        lines = [line for line in block.text.splitlines() if not _HEADING.match(line)]
        text = " ".join(_TAG.sub(" ", _LINK.sub(r"\1", " ".join(lines))).split())
        if not text or _FENCE.match(lines[0] if lines else "") or text.startswith(("|", "-", "*", "!")):
            continue
        sentence = _SENTENCE_END.split(text, maxsplit=1)[0]
        words = sentence.split()
        while words and count_tokens(" ".join(words)) > max_tokens:
            words = words[:-1]
        return " ".join(words)
    return ""
