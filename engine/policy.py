"""Deterministic policy: what may never run, and how risky a step is whatever its author says. Who may approve
it, when and how many people it takes is engine.approvals."""
from __future__ import annotations

import json
import re
from typing import Any

from engine.config import PolicyConfig


def blocked_pattern(params: dict[str, Any], policy: PolicyConfig) -> str | None:
    """The blocked pattern a step's parameters contain, if any (case-insensitive, whitespace-folded)."""
    haystack = " ".join(json.dumps(params, default=str).lower().split())
    for pattern in policy.blocked_commands:
        if " ".join(pattern.lower().split()) in haystack:
            return pattern
    return None


def needs_approval(risk: str, policy: PolicyConfig) -> bool:
    return not (risk == "read_only" and policy.auto_run_read_only)


# --- how risky a step is, whatever its author says -------------------------------------------------------

RISK_ORDER = {"read_only": 0, "state_change": 1, "high": 2}
READ_ONLY_HTTP_METHODS = {"GET", "HEAD", "OPTIONS"}
# Commands (first word, or first two for tools with sub-commands) that only read. Anything else over ssh may
# change state. Tools that can also write (sed w, awk system(), find -delete, curl -o, date -s) are left out.
READ_ONLY_SSH = {
    "cat", "ls", "df", "du", "free", "uptime", "ps", "top", "pgrep", "tail", "head", "grep", "egrep", "zgrep",
    "wc", "stat", "journalctl", "dmesg", "ss", "netstat", "lsof", "iostat", "vmstat", "mpstat", "uname", "whoami",
    "id", "ping", "dig", "nslookup", "host", "sort", "cut", "tr",
    "systemctl status", "systemctl is-active", "systemctl is-failed", "systemctl list-units", "systemctl show",
    "docker ps", "docker logs", "docker inspect", "docker stats", "docker top",
    "kubectl get", "kubectl describe", "kubectl logs", "kubectl top",
}
# Flags that make one of those tools write after all.
WRITING_FLAGS = {
    "dmesg": ("-c", "-C", "--clear", "--read-clear", "-n", "--console-level", "-D", "--console-off", "-E",
              "--console-on"),
    "journalctl": ("--vacuum", "--rotate", "--flush", "--sync", "--relinquish-var", "--smart-relinquish-var",
                   "--setup-keys", "--update-catalog"),
    "sort": ("-o", "--output"),
}
# Redirects, chains, substitutions and background jobs: any of them can make a reading command write.
_SHELL_WRITERS = re.compile(r"[;&><`\n]|\$\(|\|\|")
READ_ONLY_K8S_VERBS = {"get", "list", "describe", "logs", "top", "explain", "watch", "events"}
_SQL_WRITES = re.compile(
    r"\b(insert|update|delete|merge|drop|alter|truncate|create|grant|revoke|copy|call|do|vacuum|reindex|cluster|"
    r"lock|refresh|comment|security|set|reset|discard|notify|listen|prepare|execute|import|load|into)\b"
    r"|\b(pg_terminate_backend|pg_cancel_backend|pg_reload_conf|set_config|setval|nextval|pg_advisory_\w*lock\w*|"
    r"pg_switch_wal|pg_promote|pg_rotate_logfile|lo_\w+|dblink\w*)\s*\(", re.I)
_SQL_READS = re.compile(r"^\s*(select|with|explain|show|table|values)\b", re.I)


def riskier(a: str, b: str) -> str:
    return a if RISK_ORDER[a] >= RISK_ORDER[b] else b


def minimum_risk(connector: str, params: dict[str, Any]) -> str:
    """The least risk a step can honestly claim from what it runs: only what is recognisably read-only is
    `read_only`; anything unrecognised counts as `state_change`."""
    if connector == "prometheus":
        return "read_only"  # PromQL only reads
    if connector == "http":
        return "read_only" if str(params.get("method", "GET")).upper() in READ_ONLY_HTTP_METHODS else "state_change"
    if connector == "ssh":
        return "read_only" if is_read_only_command(str(params.get("command", ""))) else "state_change"
    if connector == "sql":
        return "read_only" if is_read_only_sql(str(params.get("query") or params.get("sql") or "")) else "state_change"
    if connector == "kubernetes":
        verb = str(params.get("verb") or params.get("action") or "").lower()
        if not verb and params.get("command"):
            words = str(params["command"]).split()
            verb = (words[1] if words[:1] == ["kubectl"] and len(words) > 1 else (words or [""])[0]).lower()
        return "read_only" if verb in READ_ONLY_K8S_VERBS else "state_change"
    return "state_change"


def is_read_only_command(command: str) -> bool:
    """A shell command whose every pipeline stage is on the read-only allow-list, with no redirects or chains."""
    if not command.strip() or _SHELL_WRITERS.search(command):
        return False
    return all(_read_only_stage(stage.split()) for stage in command.split("|"))


def _read_only_stage(words: list[str]) -> bool:
    if words[:1] == ["sudo"]:
        words = words[1:]
    if not words:
        return False
    name = words[0] if words[0] in READ_ONLY_SSH else " ".join(words[:2])
    if name not in READ_ONLY_SSH:
        return False
    writing = WRITING_FLAGS.get(name, ())
    return not any(_has_flag(word, flag) for word in words[1:] for flag in writing)


def _has_flag(word: str, flag: str) -> bool:
    """`--vacuum-size=1G` has `--vacuum`; `-Tc` has `-c` (short flags combine)."""
    if flag.startswith("--"):
        return word.startswith(flag)
    return word.startswith("-") and not word.startswith("--") and flag[1] in word[1:]


def is_read_only_sql(query: str) -> bool:
    """One statement that reads (SELECT/WITH/EXPLAIN/SHOW...) and names no writing keyword or function."""
    body = query.strip().rstrip(";")
    if not body or ";" in body or not _SQL_READS.match(body):
        return False
    if re.match(r"^\s*explain\b.*\banalyze\b", body, re.I | re.S):
        return False  # EXPLAIN ANALYZE executes the statement
    return not _SQL_WRITES.search(body)
