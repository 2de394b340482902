"""Secret redaction, one list for the whole process: worker step output, logs, chat, and every prompt.

Two layers: exact values we know are secret (registered at start-up from settings, and by the Vault
resolver as it resolves them), then anything shaped like a credential."""
from __future__ import annotations

import base64
import logging
import re
import threading
from typing import Any, Iterable
from urllib.parse import quote, quote_plus

MASK = "[REDACTED]"
MIN_SECRET_LENGTH = 4  # shorter values would mask ordinary words
# Registered values are masked in everything the process sends, for its whole life: a short one
# ("test", "admin") would garble ordinary text, and is no real secret anyway.
MIN_REGISTERED_LENGTH = 6

# `token` as a secret's name, not as a count or kind: `max_tokens: 1024`, `tokens_used=812`, `token_type: bearer`
# and `tokenizer=...` are ordinary output (LLM and API usage lines) and stay readable.
_TOKEN = r"token(?!s\b|s_|_?(?:count|limit|usage|used|type|budget)\b|izer)"
_KEY_WORDS = (rf"password|passwd|passphrase|pwd|secret|{_TOKEN}|api[_-]?key|access[_-]?key|private[_-]?key"
              r"|credentials?")

# (pattern, replacement): replacements keep the label so a reader still sees what was there.
PATTERNS: list[tuple[re.Pattern, str]] = [
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S), MASK),
    # A PEM block cut short (an alert annotation truncated by its sender) still must not leak.
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[A-Za-z0-9+/=\s\\n]*"), MASK),
    # `password=x`, `db_password: "x y"`, JSON `"api_key": "x"`; a compound key name counts too.
    (re.compile(rf"(?i)\b([\w.-]{{0,40}}(?:{_KEY_WORDS})[\w.-]{{0,40}})(\\?[\"']?\s*[=:]\s*)"
                r"(?!\[REDACTED\])(\\?\"(?:[^\"\\]|\\.)*?\\?\"|'[^']*'|[^\s,;&\"'}\]]+)"), rf"\1\2{MASK}"),
    (re.compile(r"(?i)\b(authorization\\?[\"']?\s*[:=]\s*\\?[\"']?)(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]+"),
     rf"\1\2 {MASK}"),
    (re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}"), rf"\1{MASK}"),
    (re.compile(r"\bxox[abposre]-[A-Za-z0-9-]{10,}"), MASK),                 # Slack tokens
    (re.compile(r"\bxapp-[A-Za-z0-9-]{10,}"), MASK),
    (re.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9/]+"), MASK),  # Slack incoming webhooks
    (re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b"), MASK),                      # AWS access key ids
    (re.compile(r"(?i)\baws_secret_access_key\b\s*[=:]\s*\S+"), f"aws_secret_access_key={MASK}"),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"), MASK),                   # GitHub tokens
    (re.compile(r"\bgithub_pat_[A-Za-z0-9_]{40,}\b"), MASK),
    (re.compile(r"\bsk-ant-[A-Za-z0-9_-]{20,}\b"), MASK),                    # Anthropic keys
    (re.compile(r"\bsk-[A-Za-z0-9_-]{32,}\b"), MASK),                        # OpenAI-style keys
    (re.compile(r"\bhvs\.[A-Za-z0-9_-]{20,}\b"), MASK),                      # Vault tokens
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), MASK),  # JWTs
    (re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+@"), f"{MASK}@"),              # credentials in URLs
]


class SecretRegistry:
    """Exact secret values known to this process. Thread-safe; values are never logged or returned."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()
        self._sorted: tuple[str, ...] = ()

    def add(self, value: str | None) -> None:
        if not value or len(value) < MIN_REGISTERED_LENGTH:
            return
        with self._lock:
            if value in self._values:
                return
            self._values.add(value)
            # Longest first, so a secret containing another is masked whole.
            self._sorted = tuple(sorted(self._values, key=len, reverse=True))

    def values(self) -> tuple[str, ...]:
        return self._sorted

    def __len__(self) -> int:
        return len(self._values)


SECRETS = SecretRegistry()


def register_secret(value: str | None) -> None:
    """Remember a value that must never leave this process unmasked (a token, a Vault value), in the spellings
    it travels in: as is, JSON-escaped, URL-encoded (a query string) and base64 (a Basic auth header)."""
    if not value or len(value) < MIN_REGISTERED_LENGTH:
        return
    SECRETS.add(value)
    for spelling in encodings(value):
        SECRETS.add(spelling)


# Shorter secrets have base64 cores too short to mask without masking ordinary text.
MIN_ENCODED_LENGTH = 8


def encodings(value: str) -> set[str]:
    """Other spellings of a secret that would otherwise pass the exact match."""
    out: set[str] = set()
    if "\n" in value:  # multi-line secrets (private keys) also travel JSON-escaped
        out.add(value.replace("\n", "\\n"))
    for quoted in (quote(value, safe=""), quote_plus(value, safe="")):
        if quoted != value:
            out.update({quoted, re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), quoted)})
    if len(value) >= MIN_ENCODED_LENGTH:
        out.update(_base64_cores(value.encode()))
    out.discard(value)
    return {s for s in out if len(s) >= MIN_REGISTERED_LENGTH}


def _base64_cores(raw: bytes) -> set[str]:
    """The part of base64(... + secret + ...) that depends on the secret alone, for each of the three byte
    alignments: `Basic base64(user:secret)` contains one of these whatever the user name. The few characters
    at either edge that mix with neighbouring bytes stay visible; they hold at most two bytes of the secret."""
    cores: set[str] = set()
    for skip in range(3):
        body = raw[skip:]
        body = body[:len(body) - len(body) % 3]
        if len(body) < 6:
            continue
        core = base64.b64encode(body).decode()
        cores.update({core, core.replace("+", "-").replace("/", "_")})
    return cores


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask known secret values first (exact), then anything shaped like a credential."""
    extra = [s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH]
    values = sorted(extra, key=len, reverse=True) + list(SECRETS.values()) if extra else SECRETS.values()
    for value in values:
        if value in text:
            text = text.replace(value, MASK)
    for pattern, replacement in PATTERNS:
        text = pattern.sub(replacement, text)
    return text


_SECRET_KEY = re.compile(rf"(?i)({_KEY_WORDS}|authorization)")


def redact_obj(value: Any, secrets: Iterable[str] = ()) -> Any:
    """`redact` through dicts and lists; a value under a secret-sounding key is masked whole."""
    secrets = list(secrets)
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {k: MASK if isinstance(k, str) and _SECRET_KEY.search(k) and isinstance(v, (str, int, float))
                and v not in ("", None) else redact_obj(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_obj(v, secrets) for v in value]
    return value


# --- logs ------------------------------------------------------------------------------------------------------


class RedactingFilter(logging.Filter):
    """Masks registered secrets and credential shapes in a record's final message, exception and stack text.

    The record is rewritten in place (message formatted now, args dropped), so every handler after this one,
    and any formatter, sees only the masked text."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


_FORMATTER = logging.Formatter()


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    if getattr(record, "_warroom_redacted", False):
        return record
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: let the handler report it as logging always does
        return record
    record.msg, record.args = redact(message), None
    if record.exc_info and not record.exc_text:
        record.exc_text = _FORMATTER.formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    record._warroom_redacted = True
    return record


_installed = threading.Lock()
_factory_wrapped = False


def install_log_redaction() -> None:
    """Mask secrets in every log line this process writes: a filter on the root logger's handlers, and the
    same masking at record creation, which covers handlers added later (RQ's worker adds its own)."""
    global _factory_wrapped
    root_filter = RedactingFilter()
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(root_filter)
    with _installed:
        if _factory_wrapped:
            return
        make = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            return redact_record(make(*args, **kwargs))
        logging.setLogRecordFactory(factory)
        _factory_wrapped = True
