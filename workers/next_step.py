"""What a task asks to be sent after its transaction commits.

The plain functions in `dispatch.py` and `calls.py` commit their state change and return
one of these; the thin tasks in `tasks.py` send it. Enqueueing only after the commit means
a message never names a row that does not exist yet.

Each step carries the priority its message is sent at (see `workers.queues.Priority`):
work for a job that was tried already (a retry, a failover, a wake-up after a cooldown) is
sent AHEAD, so a failed-over job does not queue again behind every job submitted since.
"""

from __future__ import annotations

from dataclasses import dataclass

from workers.queues import Priority


@dataclass(frozen=True)
class SendAttempt:
    attempt_id: str
    provider: str
    countdown: float = 0.0
    priority: Priority = Priority.NORMAL
    deployment: str = ""  # lets the worker ask the breaker before it claims the attempt


@dataclass(frozen=True)
class SendDispatch:
    job_id: str
    countdown: float = 0.0
    priority: Priority = Priority.NORMAL


@dataclass(frozen=True)
class Nothing:
    reason: str
    ended_batch: str | None = None  # the batch of a job this step ended: its progress moved
    ended: bool = False  # the step ended its job (succeeded or failed)
    job_id: str | None = None  # the job it ended, for those waiting on it


def ended_jobs(steps: list[NextStep]) -> list[str]:
    """The ids of the jobs these steps ended."""
    return [s.job_id for s in steps if isinstance(s, Nothing) and s.ended and s.job_id is not None]


NextStep = SendAttempt | SendDispatch | Nothing
