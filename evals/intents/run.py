"""Intent and entity evaluation for `engine.intent.IntentClassifier`: the offline path, and with `--configured`
also the layered path with the model WARROOM_LLM configures as the low-confidence fallback.

Prints, per set: intent accuracy, per-intent recall and a confusion matrix, and service / environment
exact-match accuracy. `dev` (heldout.yaml) is for tuning; `heldout` (heldout_v2.yaml) is scored, never fitted.

    .venv/bin/python evals/intents/run.py                     # both sets
    .venv/bin/python evals/intents/run.py --set dev --errors  # list every miss on the dev set
    .venv/bin/python evals/intents/run.py --configured        # also with the model (WARROOM_LLM and its keys)
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).resolve().parent
SETS = {"dev": HERE / "heldout.yaml", "heldout": HERE / "heldout_v2.yaml"}


@dataclass(frozen=True)
class Case:
    text: str
    intent: str
    service: str | None
    environment: str | None


@dataclass(frozen=True)
class Outcome:
    case: Case
    intent: str
    confidence: float
    service: str | None
    environment: str | None

    @property
    def intent_ok(self) -> bool:
        return self.intent == self.case.intent

    @property
    def service_ok(self) -> bool:
        return _same(self.service, self.case.service)

    @property
    def environment_ok(self) -> bool:
        return _same(self.environment, self.case.environment)


def _same(got: str | None, want: str | None) -> bool:
    return (got or "").lower() == (want or "").lower()


def load_cases(name: str) -> list[Case]:
    raw = yaml.safe_load(SETS[name].read_text())["cases"]
    return [Case(str(c["text"]), c["intent"], c.get("service"), c.get("environment")) for c in raw]


def evaluate(classifier, cases: list[Case]) -> list[Outcome]:
    out = []
    for case in cases:
        result = classifier.classify(case.text)
        out.append(Outcome(case, result.intent.value, result.confidence, result.entities.get("service"),
                           result.entities.get("environment")))
    return out


def summary(outcomes: list[Outcome]) -> dict[str, float]:
    n = len(outcomes)
    return {
        "n": n,
        "intent": sum(o.intent_ok for o in outcomes) / n,
        "service": sum(o.service_ok for o in outcomes) / n,
        "environment": sum(o.environment_ok for o in outcomes) / n,
    }


def confusion_table(outcomes: list[Outcome]) -> str:
    """Rows are the expected intent, columns what the classifier said (first 6 letters of each)."""
    from engine.models import Intent

    names = [i.value for i in Intent]
    counts = Counter((o.case.intent, o.intent) for o in outcomes)
    lines = [f"{'expected':<16}" + "".join(f"{n[:6]:>7}" for n in names) + "  recall"]
    for want in names:
        row = [counts[(want, got)] for got in names]
        total = sum(row)
        if not total:
            continue
        cells = "".join(f"{c or '.':>7}" for c in row)
        lines.append(f"{want:<16}{cells}  {counts[(want, want)] / total:.2f}")
    return "\n".join(lines)


def _print_errors(outcomes: list[Outcome]) -> None:
    for o in outcomes:
        marks = []
        if not o.intent_ok:
            marks.append(f"intent {o.intent} ({o.confidence:.2f}) want {o.case.intent}")
        if not o.service_ok:
            marks.append(f"service {o.service!r} want {o.case.service!r}")
        if not o.environment_ok:
            marks.append(f"env {o.environment!r} want {o.case.environment!r}")
        if marks:
            print(f"  {o.case.text!r}: " + "; ".join(marks))


def _configured(embedder) -> list[tuple[str, object]]:
    """The layered classifier with the configured model as its fallback, as `warroom serve` builds it."""
    from bot.settings import Settings
    from engine.intent import IntentClassifier
    from engine.llm import make_provider

    settings = Settings()
    if settings.llm_provider == "offline":
        print("WARROOM_LLM names no model provider (offline is already scored)", file=sys.stderr)
        return []
    provider = make_provider(settings)
    return [(settings.llm_provider, IntentClassifier(embedder, llm_fallback=provider.classify))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=(*SETS, "all"), default="all")
    parser.add_argument("--errors", action="store_true", help="list every case with a wrong intent or entity")
    parser.add_argument("--configured", action="store_true",
                        help="also score with the provider WARROOM_LLM configures consulted below LOW_CONFIDENCE")
    args = parser.parse_args(argv)

    from engine.embedder import SentenceTransformerEmbedder
    from engine.intent import IntentClassifier

    embedder = SentenceTransformerEmbedder()
    classifiers = [("offline", IntentClassifier(embedder))]
    if args.configured:
        classifiers += _configured(embedder)
    for label, classifier in classifiers:
        for name in SETS if args.set == "all" else [args.set]:
            outcomes = evaluate(classifier, load_cases(name))
            s = summary(outcomes)
            print(f"== {label} on {name} ({SETS[name].name}, {s['n']} cases): intent {s['intent']:.3f}  "
                  f"service {s['service']:.3f}  environment {s['environment']:.3f}")
            print(confusion_table(outcomes))
            if args.errors:
                _print_errors(outcomes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
