"""Resilience around a model backend: a time budget, bounded retries with jittered backoff, a circuit breaker.

A thread must never wait long on a model: alerts want an answer within seconds, and the offline
provider always has one. So every call has one budget (retries included), a retry is only made when
it fits in what is left, and after a run of failures the breaker stops asking at all for a while."""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

from engine.llm.base import CircuitOpen, LLMRecorder, ModelError, ModelOutputError, NullRecorder

T = TypeVar("T")


@dataclass(frozen=True)
class GuardPolicy:
    budget_s: float = 10.0          # the whole call, every attempt and wait included
    max_attempts: int = 3
    backoff_s: float = 0.25         # first wait; doubles per attempt, full jitter
    max_backoff_s: float = 2.0
    failure_threshold: int = 3      # consecutive failed attempts that open the breaker
    cooldown_s: float = 30.0        # open -> half-open


class CircuitBreaker:
    """closed -> (N consecutive failures) -> open -> (cool-down) -> half-open: one probe decides."""

    def __init__(self, threshold: int, cooldown_s: float, *, on_change: Callable[[str], None] = lambda s: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self._on_change = on_change
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False
        self._state = "closed"

    @property
    def state(self) -> str:
        with self._lock:
            return self._current()

    def _current(self) -> str:
        if self._state == "open" and self._clock() - (self._opened_at or 0) >= self.cooldown_s:
            self._set("half_open")
        return self._state

    def _set(self, state: str) -> None:
        if state != self._state:
            self._state = state
            self._on_change(state)

    def acquire(self) -> None:
        """Raise CircuitOpen unless a call may go through now (in half-open, only one probe at a time)."""
        with self._lock:
            state = self._current()
            if state == "open" or (state == "half_open" and self._probing):
                raise CircuitOpen("circuit breaker open: the model is not asked until the cool-down ends")
            if state == "half_open":
                self._probing = True

    def success(self) -> None:
        with self._lock:
            self._failures = 0
            self._probing = False
            self._set("closed")

    def failure(self) -> None:
        with self._lock:
            self._failures += 1
            was_probe, self._probing = self._probing, False
            if was_probe or self._failures >= self.threshold:
                self._opened_at = self._clock()
                self._set("open")

    def release(self) -> None:
        """The call ended without telling us about the backend's health (a bug on our side, no time left)."""
        with self._lock:
            self._probing = False


class Guard:
    """Runs one backend call under the policy; the callable gets the seconds it may take."""

    def __init__(self, provider: str, policy: GuardPolicy | None = None, *, recorder: LLMRecorder | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.provider = provider
        self.policy = policy or GuardPolicy()
        self.recorder = recorder or NullRecorder()
        self.breaker = CircuitBreaker(self.policy.failure_threshold, self.policy.cooldown_s,
                                      on_change=lambda state: self.recorder.llm_breaker(provider, state))
        self.recorder.llm_breaker(provider, "closed")
        self._sleep = sleep

    def run(self, attempt: Callable[[float], T]) -> T:
        """Raises CircuitOpen, ModelError (retries spent or no time left) or ModelOutputError."""
        policy = self.policy
        deadline = time.monotonic() + policy.budget_s
        for number in range(1, policy.max_attempts + 1):
            self.breaker.acquire()
            left = deadline - time.monotonic()
            if left <= 0.05:
                self.breaker.release()
                raise ModelError("model call budget spent", outcome="timeout", retryable=False)
            try:
                result = attempt(left)
            except ModelError as exc:
                self.breaker.failure()
                wait = self._wait(number, exc)
                # A retry-after longer than the budget left means: answer offline now, not later.
                if not exc.retryable or number == policy.max_attempts or time.monotonic() + wait >= deadline - 0.05:
                    raise
                self._sleep(wait)
                continue
            except ModelOutputError:
                self.breaker.success()  # a wrong answer is still an answer: the service is up
                raise
            except BaseException:
                self.breaker.release()
                raise
            self.breaker.success()
            return result
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _wait(self, number: int, exc: ModelError) -> float:
        """Jittered exponential backoff, never shorter than the server's retry-after."""
        backoff = random.uniform(0, min(self.policy.max_backoff_s, self.policy.backoff_s * 2 ** (number - 1)))
        if exc.retry_after is not None:
            return max(exc.retry_after, backoff)
        return backoff
