"""How likely an alert is to be noise, from its own record: does it flap, does it go away before anyone acts,
and what did people say about it. Pure: storage gathers the facts, this weighs them, handlers decide what to
post. The score only ever replaces the investigation in the thread — the alert itself is still shown, and an
incident still opens for a severe one, because a wrong "noise" must never hide a real outage."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from engine.config import NoiseConfig


@dataclass(frozen=True)
class NoiseFacts:
    firings: int                      # firing episodes in the lookback, the current one included
    past_episodes: int                # the earlier ones whose outcome is known (they resolved)
    quick_untouched: int              # of those, resolved within quick_resolve_minutes with nobody acting
    durations_s: list[float] = field(default_factory=list)   # how long each earlier episode lasted
    mark: str | None = None           # the latest human verdict: "noise" or "signal"
    marked_by: str | None = None
    marked_at: datetime | None = None


@dataclass(frozen=True)
class NoiseScore:
    score: float
    noisy: bool
    reasons: list[str]
    tuning: str | None                # a concrete suggestion for the alert rule, when the record supports one


def score(facts: NoiseFacts, config: NoiseConfig) -> NoiseScore:
    """Behaviour half flapping, half self-resolving, so an alert that flaps but gets handled each time
    stays below the threshold; a human "noise" verdict lifts the score to 1, a "signal" verdict caps it
    under the threshold (the team said it matters)."""
    flapping = min(1.0, max(0, facts.firings - 1) / config.flap_firings)
    self_resolving = facts.quick_untouched / facts.past_episodes if facts.past_episodes else 0.0
    value = round(0.5 * flapping + 0.5 * self_resolving, 3)
    reasons = []
    if facts.firings > 1:
        reasons.append(f"fired {facts.firings} times in the last {_hours(config.lookback_hours)}")
    if facts.past_episodes:
        reasons.append(f"{facts.quick_untouched} of {facts.past_episodes} earlier firing(s) resolved on their own "
                       f"within {config.quick_resolve_minutes:g} min, with nobody acting")
    if facts.mark == "noise":
        value = 1.0
        reasons.append(f"marked as noise by {facts.marked_by}" + _on(facts.marked_at))
    elif facts.mark == "signal":
        value = min(value, round(config.threshold - 0.01, 3))
        reasons.append(f"marked as worth investigating by {facts.marked_by}" + _on(facts.marked_at))
    noisy = value >= config.threshold
    return NoiseScore(score=value, noisy=noisy, reasons=reasons, tuning=tuning(facts) if noisy else None)


def tuning(facts: NoiseFacts) -> str | None:
    """A rule change the record supports: wait longer than its short episodes last before firing."""
    if not facts.durations_s:
        return None
    longest = max(facts.durations_s)
    wait_min = max(1, int(longest // 60) + 1)
    return (f"its earlier firings lasted at most {_duration(longest)}: a `for: {wait_min}m` on the alert rule "
            f"(or a higher threshold) would keep episodes like those quiet")


def _hours(hours: float) -> str:
    return f"{hours / 24:g} days" if hours >= 48 and hours % 24 == 0 else f"{hours:g} h"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _on(at: datetime | None) -> str:
    return f" on {at:%Y-%m-%d %H:%M} UTC" if at else ""
