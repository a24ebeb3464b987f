"""Retry and failover policy: what the worker does after a failed call, in one place.

Pure decisions, with the clock and the randomness passed in. Each error kind has an action
(`FOR_KIND`): retry the same deployment after a backoff (or the provider's Retry-After), fail
over to the next candidate, or fail the job; a failover that a second round of routing
cannot cure (a missing or rejected key, a window too small) is *lasting*. On top of that
table, `after_failure` applies the house rules: a retry whose deployment's breaker has just
opened fails over at once (retrying there would only wait to be refused); a deployment gets
`retries_per_deployment` retries before the job fails over; a retry that would land after
the job's deadline fails the job instead. `attempts_exhausted` caps a job's attempts in all.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from core.errors import ErrorKind, JobError
from core.settings import Settings


class Action(StrEnum):
    RETRY = "retry"  # same deployment, after a backoff (or the provider's Retry-After)
    FAILOVER = "failover"  # this deployment cannot serve it now: next candidate
    FAIL = "fail"  # no deployment will do better: the job fails with the reason


@dataclass(frozen=True)
class KindPolicy:
    action: Action
    lasting: bool = False  # a failover that going round the candidates again cannot cure


FOR_KIND: dict[ErrorKind, KindPolicy] = {
    ErrorKind.RATE_LIMITED: KindPolicy(Action.RETRY),
    ErrorKind.TRANSIENT: KindPolicy(Action.RETRY),
    ErrorKind.PROVIDER_ERROR: KindPolicy(Action.RETRY),
    ErrorKind.INVALID_REQUEST: KindPolicy(Action.FAIL),
    ErrorKind.CONTENT_FILTERED: KindPolicy(Action.FAIL),
    ErrorKind.CONTEXT_TOO_LONG: KindPolicy(Action.FAILOVER, lasting=True),  # a larger window elsewhere
    ErrorKind.AUTH: KindPolicy(Action.FAILOVER, lasting=True),
    ErrorKind.MISSING_CREDENTIALS: KindPolicy(Action.FAILOVER, lasting=True),
    ErrorKind.QUOTA_EXHAUSTED: KindPolicy(Action.FAILOVER),
    ErrorKind.UNSTORABLE_RESULT: KindPolicy(Action.FAIL),  # calling again would buy it again
}

LASTING_KINDS = frozenset(kind for kind, policy in FOR_KIND.items() if policy.lasting)


@dataclass(frozen=True)
class RetryPolicy:
    retries_per_deployment: int = 4
    base_s: float = 1.0
    max_s: float = 60.0
    max_attempts_per_job: int = 25

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            retries_per_deployment=settings.retries_per_deployment,
            base_s=settings.retry_base_s,
            max_s=settings.retry_max_s,
        )

    def backoff_seconds(self, retry_number: int, retry_after: float | None, rng: random.Random) -> float:
        """The provider's Retry-After when it sent one (plus up to 10% so a crowd of retries
        does not land at once); else exponential backoff with equal jitter, capped."""
        if retry_after is not None:
            return float(retry_after * (1 + 0.1 * rng.random()))
        ceiling = min(self.max_s, self.base_s * 2.0 ** max(0, retry_number - 1))
        return ceiling / 2 + rng.random() * ceiling / 2


@dataclass(frozen=True)
class Retry:
    countdown: float  # seconds until the new attempt on the same deployment may start


@dataclass(frozen=True)
class Failover:
    pass


@dataclass(frozen=True)
class Fail:
    error: JobError
    message: str


Decision = Retry | Failover | Fail


def after_failure(
    kind: ErrorKind,
    message: str,
    *,
    failures_here: int,
    breaker_open: bool,
    retry_after: float | None,
    deadline: datetime | None,
    now: datetime,
    policy: RetryPolicy,
    rng: random.Random,
    action: Action | None = None,
) -> Decision:
    """What follows a failed call of `kind`: `failures_here` counts this one among the job's
    consecutive failures on this deployment; `action`, when given, overrides the kind's own
    (a breaker that refused the call, an adapter bug)."""
    chosen = action or FOR_KIND[kind].action
    if chosen is Action.RETRY and (breaker_open or failures_here > policy.retries_per_deployment):
        chosen = Action.FAILOVER
    if chosen is Action.FAIL:
        return Fail(JobError.from_code(kind.value, JobError.INVALID_REQUEST), message)
    if chosen is Action.FAILOVER:
        return Failover()
    countdown = policy.backoff_seconds(failures_here, retry_after, rng)
    if deadline is not None and now + timedelta(seconds=countdown) > deadline:
        return Fail(
            JobError.DEADLINE_EXCEEDED,
            f"the deadline passes before the next retry; last error: {kind.value}: {message}",
        )
    return Retry(countdown)
