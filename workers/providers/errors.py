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

A call that never got an HTTP answer is classified once, here, by `transport_error`, for
every adapter: connection refused, DNS failure, TLS failure, timeout, reset, each with its
own message. The SDKs' own names for these mislead (the openai SDK's aiohttp transport
calls a refused connection a `ConnectTimeout`), so the classification reads the chain of
causes down to the socket-level error.

A provider's error text reaches users (the attempt, the job, a batch's error file), so it is
scrubbed (`scrub`): anything that looks like a key (`sk-...`, `lq_...`, Google's `AIza...`,
AWS's `AKIA...`, a bearer token) as soon as an error is made, and, where the call is known
(`scrub_for`), that call's own key and its endpoint's host when that host is internal.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import ssl
from collections.abc import Iterable
from enum import StrEnum
from functools import lru_cache
from urllib.parse import urlsplit

from core.errors import ErrorKind
from core.text import storable
from workers.outbound import forbidden_range

REDACTED = "[redacted]"
INTERNAL_HOST = "[internal host]"
# Key-shaped text: OpenAI/Anthropic/DeepSeek sk-..., ours lq_..., Google AIza..., AWS access
# key ids, and a bearer token; masked fragments (sk-abc****xyz) count too.
SECRET_LIKE = re.compile(
    r"\b(?:sk-[A-Za-z0-9_\-*.]{3,}|lq_[A-Za-z0-9_\-*.]{3,}|AIza[0-9A-Za-z_\-]{10,}|(?:AKIA|ASIA)[0-9A-Z]{12,})"
    r"|(?i:bearer)\s+[A-Za-z0-9_\-.=~+/]{20,}"
)
INTERNAL_SUFFIXES = (
    ".local",
    ".internal",
    ".lan",
    ".localdomain",
    ".svc",
    ".corp",
    ".home.arpa",
    ".intranet",
)


def scrub(text: str, *, secrets: Iterable[str] = (), hosts: Iterable[str] = ()) -> str:
    """`text` without these secrets, anything key-shaped, or these host names (with a port);
    and without NUL characters or unpaired surrogates, which Postgres text cannot hold."""
    text = storable(text)
    for secret in secrets:
        if secret and len(secret) >= 6:
            text = text.replace(secret, REDACTED)
    text = SECRET_LIKE.sub(REDACTED, text)
    for host in hosts:
        if host:
            text = re.sub(re.escape(host) + r"(?::\d+)?", INTERNAL_HOST, text, flags=re.IGNORECASE)
    return text


@lru_cache(maxsize=256)
def internal_host(host: str) -> bool:
    """Whether a base URL's host is inside the deployment (its name would tell an outsider
    about the network): a non-public IP, a one-label or site-local name, or a name that
    resolves only to non-public addresses (or not at all)."""
    name = host.strip("[]").lower().rstrip(".")
    try:
        return forbidden_range(ipaddress.ip_address(name)) is not None
    except ValueError:
        pass
    if "." not in name or name == "localhost" or name.endswith(INTERNAL_SUFFIXES):
        return True
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except OSError:
        return True
    return all(forbidden_range(ipaddress.ip_address(str(i[4][0]).split("%")[0])) for i in infos)


def scrub_for(
    error: ProviderError, api_key_env: str | None, base_urls: Iterable[str | None]
) -> ProviderError:
    """The error with the call's own key and (when internal) its endpoints' hosts scrubbed.
    May resolve a host name (once per host): call it off the event loop."""
    hosts = {urlsplit(url).hostname or "" for url in base_urls if url}
    error.message = scrub(
        error.message,
        secrets=[os.environ.get(api_key_env, "")] if api_key_env else [],
        hosts=[h for h in hosts if h and internal_host(h)],
    )
    return error


class TransportFailure(StrEnum):
    """Why a call got no HTTP answer at all."""

    CONNECTION_REFUSED = "connection_refused"
    DNS = "dns"
    TLS = "tls"
    TIMEOUT = "timeout"
    CONNECTION_RESET = "connection_reset"
    CONNECTION_FAILED = "connection_failed"


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
        message = scrub(message)  # key-shaped text never reaches a user
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

    transport: TransportFailure | None = None  # set when no HTTP answer came back at all


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


# The transports' own class names (httpx, httpx2, aiohttp, urllib3, botocore, the SDKs).
TIMEOUT_NAMES: tuple[str, ...] = (
    "ConnectTimeout",
    "ReadTimeout",
    "WriteTimeout",
    "PoolTimeout",
    "TimeoutException",
)
TIMEOUT_NAMES += ("APITimeoutError", "ConnectionTimeout")
RESET_NAMES = ("ServerDisconnected", "RemoteProtocolError", "ConnectionClosed", "IncompleteRead")


def causes(exc: BaseException) -> list[BaseException]:
    """The exception and what caused it, outermost first (explicit causes, then context)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _named(exc: BaseException, *words: str) -> bool:
    """True when the class or one of its bases has one of these words in its name (the SDKs'
    transports each define their own ConnectTimeout, ClientConnectorDNSError, ...)."""
    return any(word in cls.__name__ for cls in type(exc).__mro__ for word in words)


def _endpoint(url: str | None) -> str:
    if not url:
        return "the provider"
    parts = urlsplit(url)
    if parts.hostname is None:
        return url
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


def _detail(exc: BaseException) -> str:
    text = str(exc).strip()
    return text if text else type(exc).__name__


def classify_transport(exc: BaseException) -> tuple[TransportFailure, BaseException] | None:
    """What kind of transport failure `exc` is and the cause that says so; None when `exc`
    is not one (an HTTP error answer, a bug, a bad argument).

    The most specific cause wins, wherever it sits in the chain: a DNS error, then TLS, then
    a refused connection, then a timeout, then a reset; only then a generic connection error.
    """
    chain = causes(exc)
    checks: tuple[tuple[TransportFailure, tuple[type[BaseException], ...], tuple[str, ...]], ...] = (
        (TransportFailure.DNS, (socket.gaierror,), ("DNSError", "NameResolutionError")),
        (TransportFailure.TLS, (ssl.SSLError, ssl.CertificateError), ("SSLError", "CertificateError")),
        (TransportFailure.CONNECTION_REFUSED, (ConnectionRefusedError,), ()),
        (TransportFailure.TIMEOUT, (TimeoutError,), TIMEOUT_NAMES),
        (TransportFailure.CONNECTION_RESET, (ConnectionResetError, BrokenPipeError), RESET_NAMES),
    )
    if getattr(exc, "status_code", None) is not None or isinstance(getattr(exc, "response", None), dict):
        return None  # an HTTP answer came back (botocore's ModelTimeoutException is one)
    for failure, types, words in checks:
        # The deepest match: the socket-level error carries the precise message.
        for cause in reversed(chain):
            if isinstance(cause, types) or (words and _named(cause, *words)):
                return failure, cause
    for cause in chain:
        if isinstance(cause, ConnectionError) or _named(cause, "ConnectError", "ConnectionError"):
            return TransportFailure.CONNECTION_FAILED, chain[-1]
    return None


def transport_error(
    exc: BaseException, *, url: str | None = None, timeout_s: float | None = None
) -> Transient | None:
    """A `Transient` saying precisely why a call to `url` got no answer, or None when `exc`
    is not a transport failure. Every adapter calls this before its own mapping."""
    found = classify_transport(exc)
    if found is None:
        return None
    failure, cause = found
    where = _endpoint(url)
    if failure is TransportFailure.DNS:
        host = urlsplit(url).hostname if url else None
        message = f"DNS lookup failed for {host or where}: {_detail(cause)}"
    elif failure is TransportFailure.TLS:
        hint = " (is it plain HTTP?)" if "WRONG_VERSION_NUMBER" in str(cause) else ""
        message = f"TLS handshake with {where} failed{hint}: {_detail(cause)}"
    elif failure is TransportFailure.CONNECTION_REFUSED:
        message = f"connection refused by {where} (nothing listening there)"
    elif failure is TransportFailure.TIMEOUT:
        limit = f" after {timeout_s:g} s" if timeout_s is not None else ""
        if any(_named(c, "ConnectTimeout", "ConnectionTimeout") for c in causes(exc)):
            message = f"timed out{limit} connecting to {where}"
        else:
            message = f"timed out{limit} waiting for {where} to answer"
    elif failure is TransportFailure.CONNECTION_RESET:
        message = f"connection to {where} was closed before the answer was complete: {_detail(cause)}"
    else:
        message = f"could not connect to {where}: {type(cause).__name__}: {_detail(cause)}"
    error = Transient(message)
    error.transport = failure
    return error
