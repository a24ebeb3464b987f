"""The provider-neutral life of an emulated batch: its lines, its timeline and its state.

A `Batch` is a list of lines (one request each, with the caller's `custom_id`) and a
`LineRunner` from its provider's module that answers one line in that provider's shape.
Nothing runs in the background: every read of a batch first `advance`s it to the store's
clock (`emulator/batch_store.py`), answering the lines whose time has come, so a poll
mid-way sees partial progress and the same timeline is reproducible with an injected clock.
Statuses are OpenAI's (the richest set); each provider's module maps them to its own.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from emulator.batch_config import BatchSettings

TERMINAL = frozenset({"failed", "completed", "expired", "cancelled"})
CANCELLABLE = frozenset({"validating", "in_progress", "finalizing"})


@dataclass
class LineResult:
    status: int  # 200 for an answer, else the HTTP status of this line's error
    body: dict[str, Any]  # the provider-shaped answer or error body
    request_id: str
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class BatchLine:
    custom_id: str
    model: str
    request: dict[str, Any]  # the request body the line carries
    result: LineResult | None = None


# Answers one line; the flag says the line must fail with a server error instead.
LineRunner = Callable[[BatchLine, bool], LineResult]


def line_fails(seed: int, custom_id: str, rate: float) -> bool:
    """Whether a line fails at `rate`: by its custom_id and the seed, so reruns agree."""
    if rate <= 0:
        return False
    digest = hashlib.sha256(f"{seed}:{custom_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


@dataclass
class Batch:
    id: str
    provider: str
    settings: BatchSettings
    lines: list[BatchLine]
    run_line: LineRunner
    created: float  # on the store's clock
    created_wall: float
    deadline: float  # on the store's clock; lines not done by then expire
    seed: int
    model: str = ""
    invalid: list[dict[str, Any]] = field(default_factory=list)  # why validation fails, if it does
    meta: dict[str, Any] = field(default_factory=dict)  # provider-specific fields
    status: str = "validating"
    events: dict[str, float] = field(default_factory=dict)  # status -> wall time it was entered
    done: int = 0  # lines[:done] have their result
    cancel_at: float | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def wall(self, t: float) -> float:
        return self.created_wall + (t - self.created)

    def _enter(self, status: str, t: float) -> None:
        self.status = status
        self.events[status] = self.wall(t)

    def due(self, index: int) -> float:
        """When line `index` completes: lines are spread evenly between validation and finalizing."""
        s = self.settings
        start = self.created + min(s.validating_s, s.completion_s)
        span = max(0.0, s.completion_s - s.validating_s - s.finalizing_s)
        return start + span * (index + 1) / len(self.lines)

    def advance(self, now: float) -> None:
        """Bring the batch to time `now`: validate, answer the lines due, end it if its time came."""
        if self.terminal:
            return
        s = self.settings
        stop = min(self.deadline, math.inf if self.cancel_at is None else self.cancel_at)
        validated = self.created + s.validating_s
        if self.status == "validating":
            if min(now, stop) < validated:
                if now >= stop:
                    self._stop_early(now)
                return
            if self.invalid:
                self._enter("failed", validated)
                return
            self._enter("in_progress", validated)
        horizon = min(now, stop)
        while self.done < len(self.lines) and self.due(self.done) <= horizon:
            self._run(self.done)
        if self.done < len(self.lines) or (self.cancel_at is not None and now >= self.cancel_at):
            if now >= stop:
                self._stop_early(now)
            return
        # Every line is done: expiry no longer applies, only finalizing remains.
        finalizing_at = self.due(len(self.lines) - 1) if self.lines else validated
        completed_at = max(finalizing_at, self.created + s.completion_s)
        if now >= finalizing_at and self.status != "finalizing":
            self._enter("finalizing", finalizing_at)
        if now >= completed_at:
            self._enter("completed", completed_at)

    def _stop_early(self, now: float) -> None:
        """Processing stopped before every line was done: a cancel request, or the deadline."""
        if self.cancel_at is not None and self.cancel_at <= self.deadline:
            self._enter("cancelling", self.cancel_at)
            if now >= self.cancel_at + self.settings.cancelling_s:
                self._enter("cancelled", self.cancel_at + self.settings.cancelling_s)
        else:
            self._enter("expired", self.deadline)

    def _run(self, index: int) -> None:
        line = self.lines[index]
        fail = line_fails(self.seed, line.custom_id, self.settings.line_failure_rate)
        line.result = self.run_line(line, fail)
        self.done = index + 1

    def cancel(self, now: float) -> bool:
        """Ask for cancellation at `now`; False when the batch can no longer be cancelled."""
        self.advance(now)
        if self.status not in CANCELLABLE:
            return self.status in ("cancelling", "cancelled")
        self.cancel_at = now
        # Entered here rather than by advance: the answer to a cancel request says "cancelling".
        self._enter("cancelling", now)
        return True

    def finish_now(self, now: float) -> None:
        """The control surface's shortcut: every line answered and the batch ended at `now`."""
        self.advance(now)
        if self.terminal:
            return
        if self.status == "cancelling":
            self._enter("cancelled", now)
            return
        if self.status == "validating":
            if self.invalid:
                self._enter("failed", now)
                return
            self._enter("in_progress", now)
        while self.done < len(self.lines):
            self._run(self.done)
        if self.status != "finalizing":
            self._enter("finalizing", now)
        self._enter("completed", now)

    def expire_now(self, now: float) -> None:
        """The control surface's shortcut: the deadline is `now`."""
        self.advance(now)
        if not self.terminal:
            self.deadline = now
            self.advance(now)

    @property
    def succeeded(self) -> int:
        return sum(1 for line in self.lines[: self.done] if line.result is not None and line.result.ok)

    @property
    def errored(self) -> int:
        return self.done - self.succeeded

    def usage(self) -> tuple[int, int]:
        """Input and output tokens of the lines answered so far."""
        results = [line.result for line in self.lines[: self.done] if line.result is not None]
        return sum(r.input_tokens for r in results), sum(r.output_tokens for r in results)

    def summary(self) -> dict[str, Any]:
        """What the control surface shows of a batch."""
        return {
            "id": self.id,
            "provider": self.provider,
            "status": self.status,
            "model": self.model,
            "total": len(self.lines),
            "done": self.done,
            "succeeded": self.succeeded,
            "errored": self.errored,
            "created_at": self.created_wall,
            "events": dict(self.events),
            "invalid": list(self.invalid),
        }
