"""The closed error taxonomy every provider adapter maps its SDK's exceptions onto.

    ProviderError                    any failure of a provider call
    ├── RateLimited                  429 / throttling; carries retry_after seconds if sent
    ├── Transient                    5xx, 529 overloaded, timeouts, connection errors
    ├── InvalidRequest               400/404/422: the request itself is wrong
    │   └── ContextTooLong           the prompt does not fit the model's window
    ├── AuthError                    401/403: bad key or no permission
    ├── ContentFiltered              the provider refused on content policy
    └── QuotaExhausted               billing or quota used up (not a short rate limit)

Each class's `kind` is its name in `core.errors.ErrorKind`. Adapters only classify: what to
do with each kind (retry the same deployment, fail over to the next candidate, or fail the
job) is decided once, in `workers/policy.py`.
"""

from __future__ import annotations

from core.errors import ErrorKind


class ProviderError(Exception):
    """Base of the taxonomy. `kind` is stored on the attempt; `message` is safe to show."""

    kind: ErrorKind = ErrorKind.PROVIDER_ERROR

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        provider_request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.provider_request_id = provider_request_id
        self.retry_after = retry_after

    def __str__(self) -> str:
        code = f" (HTTP {self.status_code})" if self.status_code else ""
        return f"{self.kind}{code}: {self.message}"


class RateLimited(ProviderError):
    kind: ErrorKind = ErrorKind.RATE_LIMITED


class Transient(ProviderError):
    kind: ErrorKind = ErrorKind.TRANSIENT


class InvalidRequest(ProviderError):
    kind: ErrorKind = ErrorKind.INVALID_REQUEST


class ContextTooLong(InvalidRequest):
    kind: ErrorKind = ErrorKind.CONTEXT_TOO_LONG


class AuthError(ProviderError):
    kind: ErrorKind = ErrorKind.AUTH


class ContentFiltered(ProviderError):
    kind: ErrorKind = ErrorKind.CONTENT_FILTERED


class QuotaExhausted(ProviderError):
    kind: ErrorKind = ErrorKind.QUOTA_EXHAUSTED


class UnstorableResult(ProviderError):
    """The provider answered but the job store refused the answer (never raised by adapters)."""

    kind: ErrorKind = ErrorKind.UNSTORABLE_RESULT


class MissingCredentials(AuthError):
    """No key in the environment variable the deployment names. Raised before any call."""

    kind: ErrorKind = ErrorKind.MISSING_CREDENTIALS


def status_error(
    status: int, message: str, *, retry_after: float | None = None, request_id: str | None = None
) -> ProviderError:
    """Classify an HTTP status the way most providers use it; adapters refine from the body."""
    lowered = message.lower()
    cls: type[ProviderError]
    if status == 429:
        cls = QuotaExhausted if ("quota" in lowered or "billing" in lowered) else RateLimited
    elif status in (401, 403):
        cls = AuthError
    elif status == 402:
        cls = QuotaExhausted
    elif status in (400, 404, 409, 413, 422):
        if any(s in lowered for s in ("context length", "context_length", "too long", "too many tokens")):
            cls = ContextTooLong
        elif "content" in lowered and ("filter" in lowered or "policy" in lowered or "safety" in lowered):
            cls = ContentFiltered
        else:
            cls = InvalidRequest
    elif status == 408 or status >= 500:
        cls = Transient
    else:
        cls = InvalidRequest
    return cls(message, status_code=status, retry_after=retry_after, provider_request_id=request_id)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After (or retry-after-ms style) header value; None if unusable."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
