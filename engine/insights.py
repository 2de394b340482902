"""Candidate automations: recurring incident clusters ranked by what they cost.

Incidents join one cluster when they share an alert fingerprint, or an alert name on the same service, or
their post-incident documents (engine/precedents.py) embed at least `insights.similarity` apart (cosine):
single-link, so a chain of look-alikes is one cluster. A cluster costs the hours spent in its incidents
(detection -> resolve) plus a fixed toil per manual step it repeated (the same step title and connector,
approved by a human and run, in two or more of its incidents). Pure: storage/insights.py reads the facts,
handlers/insights.py posts the digest."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from statistics import median
from typing import Any, Sequence

import numpy as np

from engine.cards import Card, LearnBlock, LinksBlock, TextBlock
from engine.config import WEEKDAYS, DigestConfig
from engine.models import Link

# Each run of a repeated manual step costs someone this much (find the runbook, get approvals, watch it):
# a guess, but one that ranks a cluster with toil above an equally long one without.
STEP_TOIL_HOURS = 0.25
DRAFT_OFFERS = 3   # the top clusters without a runbook get a "Draft runbook" button


@dataclass(frozen=True)
class IncidentRecord:
    """One incident as insights sees it. `alerts`: (fingerprint, name, service) of its alerts; `manual_steps`:
    (title, connector) of each step a human approved that then ran (succeeded or failed)."""

    id: int
    title: str
    service: str | None
    state: str
    detected_at: datetime
    resolved_at: datetime | None = None
    acked_at: datetime | None = None
    alerts: tuple[tuple[str, str, str | None], ...] = ()
    manual_steps: tuple[tuple[str, str], ...] = ()
    link: str | None = None     # the incident thread's permalink, when the adapter recorded one
    succeeded_steps: int = 0    # steps that succeeded: learn drafts a runbook only from those

    def hours(self, now: datetime) -> float:
        """Time in incident: detection to resolve, or to now while it is open."""
        return max(0.0, ((self.resolved_at or now) - self.detected_at).total_seconds() / 3600)


@dataclass(frozen=True)
class RepeatedStep:
    title: str
    connector: str
    incidents: int   # incidents of the cluster that ran it
    runs: int        # times it ran across them


@dataclass(frozen=True)
class Cluster:
    label: str
    alert_name: str | None
    service: str | None
    incident_ids: list[int]
    total_hours: float
    median_hours: float
    median_ack_minutes: float | None
    repeated_steps: list[RepeatedStep]
    runbook: str | None               # id of an active runbook for its alert or service
    latest_resolved: int | None       # the latest resolved incident that ran a step: a draft is written from it
    links: list[tuple[int, str]] = field(default_factory=list)

    @property
    def cost_hours(self) -> float:
        return self.total_hours + STEP_TOIL_HOURS * sum(s.runs for s in self.repeated_steps)

    @property
    def action(self) -> str:
        if self.runbook and self.repeated_steps:
            steps = ", ".join(s.title for s in self.repeated_steps)
            return (f"Runbook `{self.runbook}` covers it, yet {steps} was approved by hand each time: consider "
                    "letting policy run it, or fix the cause.")
        if self.runbook:
            return f"Runbook `{self.runbook}` covers it; look for the cause that keeps it coming back."
        if self.latest_resolved is not None:
            return (f"No runbook: draft one from incident #{self.latest_resolved} "
                    f"(`/warroom insights draft {self.latest_resolved}`), reviewed before it can run.")
        return ("No runbook, and no resolved incident of it ran a step through warroom to learn from: run the fix "
                "from chat next time, then draft one.")


# --- clustering --------------------------------------------------------------------------------------------


def cluster_incidents(records: Sequence[IncidentRecord], vectors: dict[int, np.ndarray], *,
                      similarity: float) -> list[list[IncidentRecord]]:
    """Single-link clusters, each sorted by id, listed by their first id: the same input, the same output."""
    records = sorted(records, key=lambda r: r.id)
    parent = list(range(len(records)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(i: int, j: int) -> None:
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)

    seen: dict[Any, int] = {}
    for i, record in enumerate(records):
        for fingerprint, name, service in record.alerts:
            for key in (("fingerprint", fingerprint), ("alert", name, service)):
                if key in seen:
                    join(i, seen[key])
                else:
                    seen[key] = i
    embedded = [i for i, r in enumerate(records) if r.id in vectors]
    if len(embedded) > 1:
        matrix = np.asarray([vectors[records[i].id] for i in embedded], dtype=np.float32)
        matrix /= np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)
        close = np.argwhere(np.triu(matrix @ matrix.T, k=1) >= similarity)
        for a, b in close:
            join(embedded[a], embedded[b])
    groups: dict[int, list[IncidentRecord]] = {}
    for i, record in enumerate(records):
        groups.setdefault(root(i), []).append(record)
    return [groups[k] for k in sorted(groups)]


def repeated_steps(members: Sequence[IncidentRecord]) -> list[RepeatedStep]:
    """Manual steps (same title and connector) run in at least two of the incidents, most repeated first."""
    runs: Counter = Counter()
    incidents: Counter = Counter()
    for record in members:
        runs.update(record.manual_steps)
        incidents.update(set(record.manual_steps))
    steps = [RepeatedStep(title=t, connector=c, incidents=incidents[(t, c)], runs=runs[(t, c)])
             for (t, c) in incidents if incidents[(t, c)] >= 2]
    return sorted(steps, key=lambda s: (-s.runs, s.title, s.connector))


def covering_runbook(runbooks: Sequence[dict[str, Any]], alert_names: set[str], services: set[str]) -> str | None:
    """An active runbook written for one of the cluster's alerts (first) or services."""
    for wanted, column in ((alert_names, "alerts"), (services, "services")):
        for runbook in sorted(runbooks, key=lambda r: r["runbook_id"]):
            if wanted & set(runbook.get(column) or []):
                return runbook["runbook_id"]
    return None


def summarise(members: Sequence[IncidentRecord], *, runbooks: Sequence[dict[str, Any]],
              now: datetime) -> Cluster:
    names = Counter(name for r in members for name in dict.fromkeys(a[1] for a in r.alerts))
    services = Counter(r.service for r in members if r.service)
    alert_name = min(names, key=lambda n: (-names[n], n)) if names else None
    service = min(services, key=lambda s: (-services[s], s)) if services else None
    label = " · ".join(filter(None, [alert_name or members[-1].title, service]))
    hours = [r.hours(now) for r in members]
    acks = [(r.acked_at - r.detected_at).total_seconds() / 60 for r in members if r.acked_at]
    learnable = [r for r in members if r.resolved_at is not None and r.succeeded_steps]
    return Cluster(
        label=label, alert_name=alert_name, service=service, incident_ids=[r.id for r in members],
        total_hours=sum(hours), median_hours=median(hours), median_ack_minutes=median(acks) if acks else None,
        repeated_steps=repeated_steps(members),
        runbook=covering_runbook(runbooks, set(names), {r.service for r in members if r.service}),
        latest_resolved=max(learnable, key=lambda r: (r.resolved_at, r.id)).id if learnable else None,
        links=[(r.id, r.link) for r in members if r.link])


def rank(records: Sequence[IncidentRecord], vectors: dict[int, np.ndarray], *, runbooks: Sequence[dict[str, Any]],
         similarity: float, min_incidents: int, now: datetime) -> list[Cluster]:
    """Recurring clusters (at least `min_incidents`), costliest first; ties by size, then oldest incident."""
    clusters = [summarise(members, runbooks=runbooks, now=now)
                for members in cluster_incidents(records, vectors, similarity=similarity)
                if len(members) >= min_incidents]
    return sorted(clusters, key=lambda c: (-round(c.cost_hours, 6), -len(c.incident_ids), c.incident_ids[0]))


# --- the digest card ---------------------------------------------------------------------------------------


def _duration(hours: float) -> str:
    return f"{hours * 60:.0f} min" if hours < 1 else f"{hours:.1f} h"


def cluster_text(n: int, cluster: Cluster) -> str:
    lines = [f"*{n}. {cluster.label}* — {len(cluster.incident_ids)} incidents, {_duration(cluster.total_hours)} "
             f"in incident (median {_duration(cluster.median_hours)}"
             + (f", acked after {cluster.median_ack_minutes:.0f} min" if cluster.median_ack_minutes is not None
                else "") + f"); cost ≈ {cluster.cost_hours:.1f} h"]
    if cluster.repeated_steps:
        lines.append("Repeated by hand: " + "; ".join(
            f"{s.title} ({s.connector}) ×{s.runs} in {s.incidents} incidents" for s in cluster.repeated_steps))
    lines.append("Incidents: " + ", ".join(f"#{i}" for i in cluster.incident_ids))
    lines.append(f"Runbook: `{cluster.runbook}` covers it" if cluster.runbook else "Runbook: none covers it")
    lines.append(f"Proposed: {cluster.action}")
    return "\n".join(lines)


def digest_card(clusters: Sequence[Cluster], *, window_days: float, top: int, weekly: bool = False) -> Card:
    title = ("Weekly insights" if weekly else "Insights") + f": recurring incidents, last {window_days:g} days"
    if not clusters:
        return Card(kind="insights", title=title, blocks=[TextBlock(
            text="No incident recurred in the window: nothing to automate yet.", style="muted")])
    shown = list(clusters[:top])
    blocks: list = [TextBlock(text=f"{len(clusters)} recurring clusters; the costliest {len(shown)}, ranked by "
                                   f"time in incident plus {STEP_TOIL_HOURS:g} h per repeated manual step.",
                              style="muted")]
    offers = 0
    for n, cluster in enumerate(shown, start=1):
        blocks.append(TextBlock(text=cluster_text(n, cluster)))
        if cluster.links:
            blocks.append(LinksBlock(items=[Link(title=f"Incident #{i} thread", url=url)
                                            for i, url in cluster.links]))
        if cluster.runbook is None and cluster.latest_resolved is not None and offers < DRAFT_OFFERS:
            offers += 1   # the same "Draft runbook" button as the postmortem card: handlers.learn drafts it
            blocks.append(LearnBlock(incident_id=cluster.latest_resolved, actions=["draft"]))
    if len(clusters) > len(shown):
        blocks.append(TextBlock(text=f"… and {len(clusters) - len(shown)} smaller clusters.", style="muted"))
    return Card(kind="insights", title=title, blocks=blocks)


# --- the weekly schedule -----------------------------------------------------------------------------------


def iso_week(now: datetime) -> str:
    year, week, _ = now.astimezone(timezone.utc).isocalendar()
    return f"{year}-W{week:02d}"


def digest_due(now: datetime, config: DigestConfig, last: str | None) -> bool:
    """Whether this week's digest should go out now: its weekday and hour (UTC) have come, and the last digest
    posted (`last`, an ISO week) is of an earlier week. A replica that was down at the hour posts it late."""
    now = now.astimezone(timezone.utc)
    if last is not None and last >= iso_week(now):
        return False
    monday = (now - timedelta(days=now.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
    return now >= monday + timedelta(days=WEEKDAYS.index(config.weekday), hours=config.hour_utc)
