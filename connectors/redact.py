"""Secret redaction for anything that leaves a worker: step output, logs, chat, prompts."""
from __future__ import annotations

import re
from typing import Any, Iterable

MASK = "[REDACTED]"

_PATTERNS = [
    re.compile(r"(?i)\b(password|passwd|pwd|secret|token|api[_-]?key)\b(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;&]+)"),
    re.compile(r"(?i)\b(authorization:\s*)(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),                  # Slack tokens
    re.compile(r"\bxapp-[A-Za-z0-9-]{10,}"),
    re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b"),                      # AWS access key ids
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),                   # GitHub tokens
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{40,}\b"),
    re.compile(r"\bsk-ant-[A-Za-z0-9_-]{20,}\b"),                    # Anthropic keys
    re.compile(r"\bhvs\.[A-Za-z0-9_-]{20,}\b"),                      # Vault tokens
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
    re.compile(r"(?<=://)([^/\s:@]+):([^/\s@]+)@"),                  # credentials in URLs
]


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Mask known secret values first (exact), then anything shaped like a credential."""
    for value in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(value, MASK)
    for pattern in _PATTERNS:
        text = pattern.sub(_replacement(pattern), text)
    return text


def _replacement(pattern: re.Pattern):
    def sub(match: re.Match) -> str:
        if pattern is _PATTERNS[0]:
            return f"{match.group(1)}{match.group(2)}{MASK}"
        if pattern is _PATTERNS[1]:
            return f"{match.group(1)}{match.group(2)} {MASK}"
        if pattern is _PATTERNS[2]:
            return f"{match.group(1)}{MASK}"
        if pattern is _PATTERNS[-1]:
            return f"{MASK}@"
        return MASK
    return sub


def redact_obj(value: Any, secrets: Iterable[str] = ()) -> Any:
    secrets = list(secrets)
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {k: redact_obj(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_obj(v, secrets) for v in value]
    return value
