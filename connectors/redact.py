"""Secret redaction for anything that leaves a worker. The patterns and the registry of known secret
values live in engine.redact, so prompts and worker output are masked by one list."""
from engine.redact import MASK, PATTERNS, redact, redact_obj, register_secret

__all__ = ["MASK", "PATTERNS", "redact", "redact_obj", "register_secret"]
