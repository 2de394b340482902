"""Workflow runbooks: the dependency graph of a runbook's steps, checked before anything is stored or run.

A runbook becomes a workflow as soon as one step declares `needs:` or `parallel:`. Then every step depends on
something explicit: its `needs`, or else the step (or parallel group) before it. Steps that share a
`parallel: <group>` and sit next to each other form one stage: without `needs` each member depends on what came
before the group, not on its siblings, so they run together; the step after the group waits for all of them.
A runbook with neither keyword is not a workflow and keeps per-step behaviour: each step runs when approved.

Pure functions: no database, no platform."""
from __future__ import annotations

from typing import Iterable, Mapping, Protocol, Sequence


class FlowStep(Protocol):
    id: str
    needs: list[str] | None
    parallel: str | None


def is_workflow(steps: Iterable[FlowStep]) -> bool:
    return any(s.needs is not None or s.parallel is not None for s in steps)


def dependencies(steps: Sequence[FlowStep]) -> dict[str, list[str]] | None:
    """Each step's id -> the ids it waits for; None for a runbook that is not a workflow.
    Assumes `workflow_error(steps)` is None."""
    if not is_workflow(steps):
        return None
    graph: dict[str, list[str]] = {}
    before: list[str] = []          # what the next step without `needs` waits for
    stage: list[str] = []           # the ids of the parallel group being read, if any
    group: str | None = None
    for step in steps:
        if step.parallel is not None and step.parallel == group:
            stage.append(step.id)   # a sibling: waits for what the group's first member waited for
        else:
            before = stage or before
            stage, group = [step.id], step.parallel
        graph[step.id] = list(step.needs) if step.needs is not None else list(before)
        if step.parallel is None:
            before, stage, group = [step.id], [], None
    return graph


def workflow_error(steps: Sequence[FlowStep]) -> str | None:
    """One line naming what is wrong with the graph (unknown or self `needs`, a split parallel group, a cycle),
    or None when it is a valid DAG."""
    ids = [s.id for s in steps]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        return f"step ids must be unique: {', '.join(duplicates)}"
    known = set(ids)
    for step in steps:
        for need in step.needs or []:
            if need == step.id:
                return f"step {step.id!r} needs itself"
            if need not in known:
                return f"step {step.id!r} needs unknown step {need!r}"
    seen_groups: set[str] = set()
    previous: str | None = None
    for step in steps:
        if step.parallel is not None and step.parallel != previous and step.parallel in seen_groups:
            return (f"parallel group {step.parallel!r} is split: its steps must be listed together "
                    f"(step {step.id!r} is apart from the others)")
        if step.parallel is not None:
            seen_groups.add(step.parallel)
        previous = step.parallel
    graph = dependencies(steps)
    cycle = find_cycle(graph) if graph else None
    return f"needs form a cycle: {' -> '.join(cycle)}" if cycle else None


def find_cycle(graph: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle as a closed path in dependency order (`a -> b -> a`: a needs b, b needs a), or None."""
    state: dict[str, str] = {}      # absent: unvisited, "open": on the current path, "done": no cycle through it
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for need in graph.get(node, ()):
            if state.get(need) == "open":
                return path[path.index(need):] + [need]
            if need not in state:
                found = visit(need)
                if found:
                    return found
        path.pop()
        state[node] = "done"
        return None

    for node in graph:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def waiting_on(needs: Sequence[str] | None, statuses: Mapping[str, str]) -> list[str]:
    """The needs of a step that have not succeeded yet (by step key); empty when it is ready."""
    return [n for n in needs or [] if statuses.get(n) != "succeeded"]


def flow_label(needs: Sequence[str] | None, parallel: str | None, index_of: Mapping[str, int]) -> str | None:
    """What a card says about where a step sits in the workflow, e.g. `after 1, 2 · parallel: checks`."""
    if needs is None and parallel is None:
        return None
    parts = [f"after {', '.join(str(index_of.get(n, n)) for n in needs)}"] if needs else []
    if parallel:
        parts.append(f"parallel: {parallel}")
    return " · ".join(parts) or None
