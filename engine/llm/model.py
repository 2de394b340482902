"""A model-backed provider: prompts in, validated output out, the offline answer whenever the model fails.

The model only proposes titles and causes and points at evidence ids; the evidence itself (with its
provenance) comes from the context, so nothing the model writes can invent a fact or change a score's
inputs beyond choosing which facts it cites."""
from __future__ import annotations

import logging
import time
from typing import Callable, TypeVar

from pydantic import BaseModel, ValidationError

from engine.context import Context
from engine.llm import Candidate, Provider
from engine.llm.base import LLM, CircuitOpen, LLMRecorder, ModelError, ModelOutputError, NullRecorder, Request
from engine.llm.guard import Guard, GuardPolicy
from engine.llm.outputs import HypothesesOutput, IntentOutput
from engine.llm.prompting import HypothesesPrompt, hypotheses_prompt, intent_request, plan_request
from engine.models import Classification, Evidence, Hypothesis, first_error
from engine.plan_schema import ProposedPlan
from engine.redact import redact

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)


class ModelProvider:
    """Provider protocol over any LLM backend, guarded by a time budget, retries and a circuit breaker."""

    def __init__(self, llm: LLM, *, fallback: Provider, policy: GuardPolicy | None = None,
                 recorder: LLMRecorder | None = None) -> None:
        self.llm = llm
        self.name = llm.name
        self.fallback = fallback
        self.recorder = recorder or NullRecorder()
        self.guard = Guard(llm.name, policy, recorder=self.recorder)

    def hypotheses(self, context: Context) -> list[Candidate]:
        """The model's candidates; the fallback's when the model fails, is unavailable or proposes nothing."""
        try:
            prompt = hypotheses_prompt(context)
            output = self._ask(prompt.request, HypothesesOutput)
            candidates = to_candidates(output, prompt)
            if not candidates:
                raise ModelOutputError("the model proposed no cause")
            return candidates
        except Exception as exc:  # whatever went wrong, the thread still gets an answer
            self._fell_back("hypotheses", exc)
            return self.fallback.hypotheses(context)

    def classify(self, text: str) -> Classification | None:
        """The model's intent for a message the embedding classifier was unsure of; None when it fails."""
        try:
            output = self._ask(intent_request(text), IntentOutput)
        except Exception as exc:
            self._fell_back("classify", exc)
            return None
        return Classification(intent=output.intent, confidence=round(output.confidence, 3), layer="llm", text=text)

    def propose_plan(self, context: Context, *, hypotheses: list[Hypothesis], targets: dict[str, str]
                     ) -> ProposedPlan | None:
        """The model's plan when no runbook matches (the planner validates every step); None when it fails."""
        try:
            return self._ask(plan_request(context, hypotheses=hypotheses, targets=targets), ProposedPlan)
        except Exception as exc:
            self._fell_back("plan", exc)
            return None

    @property
    def breaker_state(self) -> str:
        return self.guard.breaker.state

    def close(self) -> None:
        close = getattr(self.llm, "close", None)
        if close:
            close()

    def _ask(self, request: Request, model: type[M]) -> M:
        return self.guard.run(self._attempt(request, model))

    def _attempt(self, request: Request, model: type[M]) -> Callable[[float], M]:
        def attempt(timeout: float) -> M:
            started = time.perf_counter()
            try:
                completion = self.llm.complete(request, timeout=timeout)
            except (ModelError, ModelOutputError) as exc:
                self.recorder.llm_call(self.name, exc.outcome, time.perf_counter() - started,
                                       getattr(exc, "usage", None))
                raise
            elapsed = time.perf_counter() - started
            try:
                parsed = model.model_validate(completion.data)
            except ValidationError as exc:
                self.recorder.llm_call(self.name, "invalid_output", elapsed, completion.usage)
                raise ModelOutputError(f"{request.tool.name} output fails its schema: {first_error(exc)}") from None
            self.recorder.llm_call(self.name, "ok", elapsed, completion.usage)
            return parsed
        return attempt

    def _fell_back(self, task: str, exc: Exception) -> None:
        reason = getattr(exc, "outcome", None) or "error"
        self.recorder.llm_fallback(self.name, reason)
        instead = {"hypotheses": "the offline answer", "plan": "the offline plan"}.get(
            task, "the embedding classifier's answer")
        if isinstance(exc, CircuitOpen):
            log.info("%s %s: circuit open; using %s", self.name, task, instead)
        elif isinstance(exc, (ModelError, ModelOutputError)):
            log.warning("%s %s: %s; using %s", self.name, task, exc, instead)
        else:
            log.exception("%s %s failed unexpectedly; using %s", self.name, task, instead)


def to_candidates(output: HypothesesOutput, prompt: HypothesesPrompt) -> list[Candidate]:
    """Model proposals with their cited evidence resolved from the context; unknown ids are dropped."""
    out = []
    for proposed in output.hypotheses:
        cited: list[Evidence] = []
        for ref in proposed.evidence:
            item = prompt.evidence.get(ref.strip())
            if item is not None and item not in cited and item not in prompt.symptoms:
                cited.append(item)
        # Model text goes to chat: mask anything credential-shaped it may have made up.
        out.append(Candidate(title=redact(proposed.title.strip()), cause=redact(proposed.cause.strip()),
                             evidence=[*cited, *prompt.symptoms]))
    return out
