"""The closed sets of error names that cross packages: what a provider call failed with
(`ErrorKind`, the adapters' taxonomy by name) and why a job ended failed (`JobError`).

They are stored on attempts and jobs as their string values and shown to clients (the
`error.type` of a job, the `code` of a batch's error line), so a value, once released, keeps
its spelling. An attempt that ended in a failover stores `failover:<kind>` (`failover_type`).
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    """What a failed provider call was; `workers/providers/errors.py` maps every SDK error here."""

    PROVIDER_ERROR = "provider_error"
    RATE_LIMITED = "rate_limited"
    TRANSIENT = "transient"
    INVALID_REQUEST = "invalid_request"
    CONTEXT_TOO_LONG = "context_too_long"
    AUTH = "auth"
    MISSING_CREDENTIALS = "missing_credentials"
    CONTENT_FILTERED = "content_filtered"
    QUOTA_EXHAUSTED = "quota_exhausted"
    # Not the provider's: its answer came, but the job store refused to hold it.
    UNSTORABLE_RESULT = "unstorable_result"


class BatchLineError(StrEnum):
    """Why a provider batch's line came back unanswered with no error of the provider's own for
    it (a line the provider answered with an error keeps that error's ErrorKind). Stored as
    the error type of the line's attempt."""

    EXPIRED = "batch_expired"  # the provider's window closed before the line ran
    CANCELLED = "batch_cancelled"  # the batch was stopped first (llmqueue gave up on it, or a cancel)
    BATCH_FAILED = "batch_failed"  # the provider refused the whole batch
    NOT_REPORTED = "batch_line_missing"  # the batch ended without a word about this line
    SUBMIT_LOST = "batch_submit_lost"  # the worker submitting the batch died before it was recorded


FAILOVER_PREFIX = "failover:"


def failover_type(kind: ErrorKind) -> str:
    """The stored error type of an attempt whose failure moved the job to another deployment."""
    return FAILOVER_PREFIX + kind.value


def kind_of(error_type: str | None) -> ErrorKind | None:
    """The ErrorKind an attempt's stored error type names (`failover:` or not), if any."""
    if not error_type:
        return None
    try:
        return ErrorKind(error_type.removeprefix(FAILOVER_PREFIX))
    except ValueError:
        return None


class JobError(StrEnum):
    """Why a job ended failed: one of these is its `error_type`."""

    # The provider refused the request itself: no other deployment would do better.
    INVALID_REQUEST = "invalid_request"
    CONTENT_FILTERED = "content_filtered"
    CONTEXT_TOO_LONG = "context_too_long"
    # Routing and scheduling gave up.
    NO_ROUTE = "no_route"
    ROUTING_ERROR = "routing_error"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"
    ALL_DEPLOYMENTS_DOWN = "all_deployments_down"
    # A batch's line that could not become a job, or a split document whose part failed.
    INVALID_LINE = "invalid_line"
    TOO_LONG = "too_long"
    PART_FAILED = "part_failed"
    # A batch line refused at intake for the reason a single submission would get (the same code).
    MODEL_NOT_FOUND = "model_not_found"
    UNKNOWN_STRATEGY = "unknown_strategy"
    INVALID_ROUTING = "invalid_routing"
    INVALID_VALUE = "invalid_value"
    UNSUPPORTED_TOOLS = "unsupported_tools"
    UNSUPPORTED_VISION = "unsupported_vision"
    UNSUPPORTED_JSON_MODE = "unsupported_json_mode"
    UNSUPPORTED_JSON_SCHEMA = "unsupported_json_schema"
    UNSUPPORTED_STREAMING = "unsupported_streaming"
    UNSUPPORTED_CAPABILITY = "unsupported_capability"
    MAX_TOKENS_TOO_LARGE = "max_tokens_too_large"
    CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
    QUALITY_BELOW_FLOOR = "quality_below_floor"
    COST_CEILING_EXCEEDED = "cost_ceiling_exceeded"
    BUDGET_EXCEEDED = "budget_exceeded"
    # The provider answered, but the answer could not be stored (see the message).
    UNSTORABLE_RESULT = "unstorable_result"

    @property
    def client_fault(self) -> bool:
        """The request itself was wrong (OpenAI answers those 400; the rest are 5xx)."""
        return self not in _SERVER_SIDE

    @classmethod
    def from_code(cls, code: str | None, default: JobError) -> JobError:
        """The JobError an API error code names, else `default`."""
        try:
            return cls(code) if code else default
        except ValueError:
            return default


_SERVER_SIDE = frozenset(
    {
        JobError.DEADLINE_EXCEEDED,
        JobError.ATTEMPTS_EXHAUSTED,
        JobError.ALL_DEPLOYMENTS_DOWN,
        JobError.PART_FAILED,
        JobError.UNSTORABLE_RESULT,
    }
)
