"""The incident state machine, in one place and pure: which state may follow which, and why not.

DETECTED -> ACKNOWLEDGED -> INVESTIGATING -> MITIGATED -> RESOLVED -> LEARNED, with shortcuts (a page can be
resolved straight from DETECTED when it was noise) and INCONCLUSIVE for an investigation that found no cause.

Decisions worth knowing:
- MITIGATED -> INVESTIGATING: the symptom came back after the fix; the same incident goes on.
- RESOLVED never reopens. A recurrence after resolve is a new incident: the resolved one already has its MTTR,
  its postmortem draft and its precedent entry, and rewriting them would make all three lie.
- INCONCLUSIVE is still open (nobody said it is over): it may go back to INVESTIGATING or be RESOLVED.
- LEARNED is the end: the postmortem is done.
Storage keeps its own copy of the open states for its queries (storage imports nothing above it); a test
checks that the two agree.
"""
from __future__ import annotations

DETECTED, ACKNOWLEDGED, INVESTIGATING, MITIGATED = "DETECTED", "ACKNOWLEDGED", "INVESTIGATING", "MITIGATED"
RESOLVED, LEARNED, INCONCLUSIVE = "RESOLVED", "LEARNED", "INCONCLUSIVE"

STATES = (DETECTED, ACKNOWLEDGED, INVESTIGATING, MITIGATED, RESOLVED, LEARNED, INCONCLUSIVE)

TRANSITIONS: dict[str, tuple[str, ...]] = {
    DETECTED: (ACKNOWLEDGED, INVESTIGATING, MITIGATED, RESOLVED, INCONCLUSIVE),
    ACKNOWLEDGED: (INVESTIGATING, MITIGATED, RESOLVED, INCONCLUSIVE),
    INVESTIGATING: (MITIGATED, RESOLVED, INCONCLUSIVE),
    MITIGATED: (RESOLVED, INVESTIGATING),
    RESOLVED: (LEARNED,),
    INCONCLUSIVE: (INVESTIGATING, RESOLVED),
    LEARNED: (),
}

OPEN = (DETECTED, ACKNOWLEDGED, INVESTIGATING, MITIGATED, INCONCLUSIVE)
CLOSED = (RESOLVED, LEARNED)

# Why a refused move is refused, beyond the list of what is allowed, where a reason is not obvious.
_WHY_NOT = {
    (RESOLVED, INVESTIGATING): "a recurrence after resolve opens a new incident",
    (RESOLVED, MITIGATED): "a recurrence after resolve opens a new incident",
    (RESOLVED, ACKNOWLEDGED): "a recurrence after resolve opens a new incident",
    (INCONCLUSIVE, MITIGATED): "say what is being investigated first (`investigating`)",
    (INVESTIGATING, ACKNOWLEDGED): "someone is already on it",
    (MITIGATED, ACKNOWLEDGED): "someone is already on it",
}


def allowed(current: str, to: str) -> bool:
    return to in TRANSITIONS.get(current, ())


def sources(to: str) -> list[str]:
    """Every state an incident may move to `to` from (what a guarded UPDATE accepts)."""
    return [state for state, targets in TRANSITIONS.items() if to in targets]


def refusal(incident_id: int, current: str, to: str) -> str | None:
    """None when current -> to is allowed, else one sentence saying why not and what is possible instead:
    "incident #4 is RESOLVED; it can only move to LEARNED"."""
    if to not in STATES:
        return f"{to} is not an incident state (states: {', '.join(STATES)})"
    if allowed(current, to):
        return None
    targets = TRANSITIONS.get(current, ())
    head = f"incident #{incident_id} is already {current}" if current == to else f"incident #{incident_id} is {current}"
    if not targets:
        text = f"{head}: its lifecycle is over"
    elif len(targets) == 1:
        text = f"{head}; it can only move to {targets[0]}"
    else:
        text = f"{head}; it can move to {', '.join(targets[:-1])} or {targets[-1]}"
    why = _WHY_NOT.get((current, to))
    return f"{text} ({why})" if why else text
