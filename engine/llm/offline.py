"""The deterministic provider: hypotheses built only from evidence in the context. No network, no model.

It is the default with no API key and the fallback whenever a model fails. It proposes; `engine.hypotheses` scores.
Candidates come from changes (on the alerting service, or on a service the alert itself names), from runbooks and
documents the context matched, and from resolved incidents that read like this alert. Each carries the evidence that
ties it to *this* alert — a change's timing, a runbook that lists this kind of change as a usual cause, related
alerts that agree with it — so the scoring has something specific to weigh rather than one bonus shared by all."""
from __future__ import annotations

import re
from datetime import timedelta
from pathlib import PurePath

from engine.alerts import parse_time
from engine.context import Context
from engine.llm import Candidate
from engine.models import Change, Evidence

MAX_CHANGE_CANDIDATES = 4
MAX_RUNBOOK_CANDIDATES = 3
MAX_CANDIDATES = 8
PRECEDENT_SIMILARITY = 0.5      # below this a past incident is not "like this one" enough to propose its cause
CORROBORATION_WINDOW = timedelta(hours=2)   # a runbook's "a bad deploy" means a recent one

# What a runbook says when it lists a kind of change among the usual causes.
_KIND_WORDS = {
    "deploy": r"deploy|release|roll-?out|new version|new image|image tag",
    "config": r"config|configuration|setting",
    "feature_flag": r"feature flag|flag",
    "infra": r"infrastructure|upgrade|failover|maintenance|migration",
    "dependency": r"dependency|upstream|library|sdk",
}


class OfflineProvider:
    name = "offline"

    def hypotheses(self, context: Context) -> list[Candidate]:
        symptom = _symptom_evidence(context)
        out = [_change_candidate(change, match, context, symptom)
               for change, match in _relevant_changes(context)[:MAX_CHANGE_CANDIDATES]]
        for row in context.runbooks[:MAX_RUNBOOK_CANDIDATES]:
            out.append(_runbook_candidate(row, context, symptom))
        for citation in context.citations:
            if len(out) >= MAX_CANDIDATES:
                break
            if any(c.title == citation.title for c in out) or _is_runbook_yaml(citation.source) \
                    or citation.source.startswith(("incident:", "conversation:")):
                continue
            out.append(_document_candidate(citation, context, symptom))
        out.extend(_precedent_candidates(context, symptom))
        return out


# --- changes -----------------------------------------------------------------------------------------------------

def _relevant_changes(context: Context) -> list[tuple[Change, str]]:
    """Changes that touch the alerting service (match `service`) or a service the alert names in its labels or
    text (match `text`), newest first. A change elsewhere is coincidence, not evidence."""
    named = _alert_text(context).lower()
    out = []
    for change in sorted([*context.changes, *context.nearby_changes], key=lambda c: c.at, reverse=True):
        if context.service and change.service == context.service:
            out.append((change, "service"))
        elif _mentions(named, change.service):
            out.append((change, "text"))
    return out


def _change_candidate(change: Change, match: str, context: Context, symptom: list[Evidence]) -> Candidate:
    minutes = int((context.anchor_time - change.at).total_seconds() // 60)
    when = f"{minutes} min before the alert" if minutes >= 0 else f"{-minutes} min after the alert started"
    label = f" {change.version}" if change.version else ""
    where = "" if match == "service" else " (a service the alert names)"
    evidence = [Evidence(kind="change", text=f"{change.kind} {change.service}{label}: {change.summary}{where}",
                         source=getattr(change, "source", None)
                         or f"change by {change.author or 'unknown'} at {change.at.isoformat()}",
                         at=change.at, match=match), *symptom]
    evidence += _runbooks_naming(change, context)
    evidence += _related_after(change, context)
    return Candidate(title=f"Recent {change.kind.replace('_', ' ')} of {change.service}{label}",
                     cause=f"{change.summary} ({when}{', by ' + change.author if change.author else ''}).",
                     evidence=evidence)


def _runbooks_naming(change: Change, context: Context) -> list[Evidence]:
    """A runbook for this alert or service that lists this change among the usual causes: by its kind (a deploy, a
    config change) when the change is recent, or by what it touched (`logrotate`, `pgbouncer`) at any age."""
    recent = timedelta(0) <= context.anchor_time - change.at <= CORROBORATION_WINDOW
    kind_words = re.compile(rf"\b(?:{_KIND_WORDS[change.kind]})", re.I)
    touched = {t for t in _terms(change.summary) if len(t) >= 6} - _terms(_own_words(context)) - _CHANGE_WORDS
    for title, source, match, text in _runbooks_for_alert(context):
        if recent and kind_words.search(_causes_text(text)):
            return [Evidence(kind="runbook", text=f"{title} lists a {change.kind.replace('_', ' ')} among the usual "
                             "causes", source=source, match=match)]
        named = touched & _terms(_causes_text(text, whole=False))
        if named:
            return [Evidence(kind="runbook", text=f"{title} names what this change touched ({', '.join(sorted(named))})"
                             " among the usual causes", source=source, match=match)]
    return []


def _runbooks_for_alert(context: Context) -> list[tuple[str, str, str, str]]:
    """(title, source, match, text) of the runbooks and documents written for this alert or its service."""
    out = [(row["spec"]["metadata"]["title"], _runbook_source(row, context), row["match"],
            row["spec"].get("description", "")) for row in context.runbooks
           if row.get("match") in ("alert_name", "service")]
    for citation in context.citations:
        match = _document_match(citation, context)
        if match != "text" and not _is_runbook_yaml(citation.source):
            out.append((citation.title, citation.source, match, citation.text))
    return out


def _related_after(change: Change, context: Context) -> list[Evidence]:
    """Other alerts on the service that started after this change: symptoms that followed it."""
    after = [r for r in context.related_alerts if (_started(r) or change.at) > change.at]
    if not after:
        return []
    names = sorted({r["name"] for r in after})
    return [Evidence(kind="related_alert", text=f"{len(after)} other alert(s) started after this change: "
                     f"{', '.join(names[:5])}", source="alerts", match="service")]


# --- runbooks, documents, past incidents -------------------------------------------------------------------------

def _runbook_candidate(row: dict, context: Context, symptom: list[Evidence]) -> Candidate:
    spec = row["spec"]
    match = row.get("match", "text")
    why = {"alert_name": f"runbook is written for alert {context.alert.name if context.alert else ''}",
           "service": f"runbook covers service {context.service}",
           "text": "runbook text matches the symptoms"}[match]
    text = " ".join([spec["metadata"]["title"], spec.get("description", "")])
    source = _runbook_source(row, context)
    return Candidate(title=spec["metadata"]["title"],
                     cause=_best_cause(spec.get("description", ""), context) or spec["metadata"]["title"],
                     evidence=[Evidence(kind="runbook", text=why, source=source, match=match,
                                        score=context.similarity.get(source)),
                               *symptom, *_related_agreeing(text, spec["metadata"].get("alerts", []), context)])


def _document_candidate(citation, context: Context, symptom: list[Evidence]) -> Candidate:
    match = _document_match(citation, context)
    why = {"alert_name": f"document is about alert {context.alert.name if context.alert else ''}",
           "service": f"document covers service {context.service}",
           "text": f"documentation matches: {citation.title}"}[match]
    return Candidate(title=citation.title,
                     cause=_best_cause(citation.text, context) or citation.title,
                     evidence=[Evidence(kind="runbook", text=why, source=citation.source, match=match,
                                        score=context.similarity.get(citation.source)),
                               *symptom, *_related_agreeing(f"{citation.title} {citation.text}", [], context)])


def _document_match(citation, context: Context) -> str:
    """`alert_name` when the document is named after the alert (prometheus-operator runbooks are: file and first
    heading), `service` when its front matter lists the alerting service, else `text`."""
    if context.alert and _same_name(context.alert.name, citation.title, PurePath(citation.source).stem):
        return "alert_name"
    if context.service and context.service in context.doc_services.get(citation.source, []):
        return "service"
    return "text"


def _precedent_candidates(context: Context, symptom: list[Evidence]) -> list[Candidate]:
    """The recorded cause of each resolved incident that reads like this alert."""
    out = []
    for precedent in context.precedents:
        similarity = context.similarity.get(precedent.source, 0.0)
        if similarity < PRECEDENT_SIMILARITY:
            continue
        cause = precedent.resolution.split(";")[0].strip()
        out.append(Candidate(
            title=f"As in {precedent.title.split(':')[0]}: {cause[:90]}",
            cause=precedent.resolution,
            evidence=[Evidence(kind="precedent", text=f"{precedent.title}: {precedent.resolution}",
                               source=precedent.link or precedent.source, score=similarity), *symptom]))
    return out


def _related_agreeing(text: str, alert_names: list[str], context: Context) -> list[Evidence]:
    """Related alerts the runbook names, or whose wording shares at least two distinctive terms with it."""
    terms = _terms(text) - _terms(_own_words(context))
    agreeing = [r for r in context.related_alerts
                if r["name"] in alert_names or len(terms & _terms(_related_text(r))) >= 2]
    if not agreeing:
        return []
    names = sorted({r["name"] for r in agreeing})
    return [Evidence(kind="related_alert", text=f"related alert(s) that fit this cause: {', '.join(names[:5])}",
                     source="alerts", match="text")]


def _symptom_evidence(context: Context) -> list[Evidence]:
    """The alert (or question) itself, and what live queries read of it now, each with its link: shown on every
    candidate, telling none of them apart (the scoring gives `alert` and `live_query` evidence no weight)."""
    if context.alert:
        alert = context.alert
        return [Evidence(kind="alert", text=f"{alert.name} ({alert.severity}): {alert.summary}",
                         source=alert.links[0].url if alert.links else f"{alert.source} alert",
                         at=alert.starts_at, match="alert_name"), *context.live]
    if context.question:
        return [Evidence(kind="thread", text=context.question, source="question"), *context.live]
    return list(context.live)


# --- text helpers ------------------------------------------------------------------------------------------------

_CAUSE_HINT = re.compile(r"(?:usual(?:ly)?|common|likely|typical)\s+causes?\b[^:.]*[:.]?\s*(.+)", re.I)
_STOP = frozenset("""about above after again alert alerts also because been before being below between both cause
causes could does doing down during each error errors fails firing from further have having high into just last
less like minutes more most much only other over percent rate requests same seconds should since some such than
that their them then there these they this those through under until usual usually very what when where which while
with within would your""".split())
# Words naming a kind of change: the kind rule above covers them, so they do not count as what a change touched.
_CHANGE_WORDS = frozenset(w[:6] for w in """deploy deployed release rollout version image config configuration
setting settings feature flag infrastructure upgrade failover maintenance migration dependency upstream library
enable disable raise lower change""".split())


def _causes_text(description: str, *, whole: bool = True) -> str:
    """The sentence of a runbook that lists usual causes; without one, the whole text (or nothing: `whole=False`)."""
    flat = " ".join(description.split())
    match = _CAUSE_HINT.search(flat)
    if match:
        return re.split(r"(?<=[.!?])\s", match.group(1), maxsplit=1)[0]
    return flat if whole else ""


def _best_cause(text: str, context: Context) -> str:
    """Of the usual causes a runbook lists, the one the alert's own words support best (ties: the runbook's order,
    which is usually by frequency); the first sentence of the text when it lists none."""
    flat = " ".join(text.split())
    if not flat:
        return ""
    match = _CAUSE_HINT.search(flat)
    if not match:
        return re.split(r"(?<=[.!?])\s", flat, maxsplit=1)[0][:300]
    sentence = re.split(r"(?<=[.!?])\s", match.group(1), maxsplit=1)[0]
    items = [i.strip(" ;,.") for i in re.split(r";\s*(?:or\s+)?|\(\d\)\s*", sentence) if len(i.strip(" ;,.")) > 8]
    if len(items) < 2:
        return sentence[:300]
    said = _terms(_alert_text(context) + " " + " ".join(_related_text(r) for r in context.related_alerts))
    said -= _terms(_own_words(context))
    best = max(items, key=lambda item: len(_terms(item) & said))  # max() keeps the first of equals
    return (best[0].upper() + best[1:])[:300]


def _terms(text: str) -> set[str]:
    """Distinctive words, cut to a six-letter stem so `connection`/`connections` and `timeout`/`timeouts` meet."""
    words = re.findall(r"[a-z][a-z0-9_]{3,}", text.lower())
    return {w[:6] for w in words if w not in _STOP}


def _alert_text(context: Context) -> str:
    if not context.alert:
        return context.question or ""
    alert = context.alert
    return " ".join([alert.summary, alert.description, *alert.labels.values(), context.question or ""])


def _own_words(context: Context) -> str:
    """The alert's name and service: every candidate shares them, so they tell candidates apart not at all."""
    alert = context.alert
    return " ".join(filter(None, [context.service, alert.name if alert else None,
                                  _split_camel(alert.name) if alert else None]))


def _related_text(row: dict) -> str:
    payload = row.get("payload") if isinstance(row.get("payload"), dict) else {}
    return " ".join([_split_camel(row.get("name") or ""), str(payload.get("summary") or ""),
                     str(payload.get("description") or "")])


def _started(row: dict):
    payload = row.get("payload") if isinstance(row.get("payload"), dict) else {}
    try:
        return parse_time(payload.get("starts_at")) or row.get("received_at")
    except ValueError:
        return row.get("received_at")


def _split_camel(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)


def _mentions(text: str, service: str) -> bool:
    """`service` appears in `text` as a name, not inside a longer word (`web-02` in `web-02:9100`, a deployment
    name at the start of a pod name)."""
    return bool(service) and re.search(rf"(?<![a-z0-9-]){re.escape(service.lower())}(?![a-z0-9])", text) is not None


def _same_name(alert_name: str, *names: str) -> bool:
    def flat(s: str) -> str:
        return re.sub(r"\W", "", s).lower()

    return any(flat(alert_name) == flat(n) for n in names if n)


def _is_runbook_yaml(source: str) -> bool:
    return source.endswith((".yml", ".yaml"))


def _runbook_source(row: dict, context: Context) -> str:
    for citation in context.citations:
        if citation.document_id == row.get("document_id"):
            return citation.source
    return f"runbook:{row['runbook_id']} v{row['version']}"
