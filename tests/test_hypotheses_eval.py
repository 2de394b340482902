"""Evidence-scored hypotheses on the recorded scenarios of evals/hypotheses: the real annotation pipeline (context
assembly, offline provider, precedent support, five-factor ranking) over this test's database, one workspace per
scenario. The issue's bar: the true cause in the top 3 in at least 80 % of the scenarios that have one, the "not
enough evidence" scenarios answered with an abstention, and never a wrong cause at 0.85 or above."""
import dataclasses
import time

from evals.hypotheses.run import CachingEmbedder, describe, load_scenarios, run_all, summarise

TOP3_FLOOR = 0.80     # the bar
TOP1_FLOOR = 0.80     # not the bar (measured 0.93): catches a change that keeps the cause listed but sinks it


def test_offline_provider_names_the_cause_or_abstains_on_every_scenario(services, embedder):
    scenarios = load_scenarios()
    assert len(scenarios) >= 40 and sum(s.abstain for s in scenarios) >= 8
    scoped = dataclasses.replace(services, embedder=CachingEmbedder(embedder))  # shared runbooks embedded once
    started = time.perf_counter()
    outcomes = run_all(scoped, scenarios)
    metrics = summarise(outcomes)
    summary = (f"top-1 {metrics['top1']:.2f} top-3 {metrics['top3']:.2f} over {metrics['n_cause']} cause scenarios; "
               f"abstained correctly {metrics['abstention']:.2f} of {metrics['n_abstain']}; "
               f"{metrics['wrong_confident']} wrong at >= 0.85; {time.perf_counter() - started:.0f}s\n"
               + "\n".join(describe(o) for o in metrics["misses"]))

    assert metrics["top3"] >= TOP3_FLOOR, summary
    assert metrics["top1"] >= TOP1_FLOOR, summary
    assert metrics["wrong_confident"] == 0, summary
    assert metrics["abstention"] == 1.0, summary
    for outcome in outcomes:   # what the card shows always carries its breakdown
        for hypothesis in outcome.hypotheses:
            assert set(hypothesis.factors) == {"signal_strength", "temporal_correlation", "precedent_frequency",
                                               "evidence_quality", "validation_history"}
            assert hypothesis.evidence
