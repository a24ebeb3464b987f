"""Console sign-in: the API key in an encrypted, signed, HttpOnly session cookie; CSRF tokens.

The browser signs in with an API key once. The console keeps it in the session cookie,
encrypted and authenticated with a key derived from `LLMQUEUE_SESSION_SECRET` (Fernet:
AES-CBC with an HMAC-SHA256 over it, and a timestamp for the session's lifetime): the
cookie is useless to read and cannot be forged or altered, and script cannot touch it
(HttpOnly). Pages call the JSON API with the key (`internal.py`), so a revoked key ends its
console session at the next page.

Every state-changing request carries the session's CSRF token (a hidden form field, or the
`X-CSRF-Token` header htmx adds), compared in constant time. The sign-in form, before there
is a session, uses a double-submit token: a random value in a short-lived cookie and the
same value in the form, which another site can neither read nor set. Cookies are
SameSite=Lax, so another site's POST does not carry them at all.

Without `LLMQUEUE_SESSION_SECRET`, each process makes its own secret at start and says so:
sessions then end with the process, and with several API processes a session works only on
the one that made it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
from dataclasses import dataclass
from functools import cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from starlette.requests import Request
from starlette.responses import Response

from core.settings import get_settings

log = logging.getLogger(__name__)

SESSION_COOKIE = "llmqueue_console"
LOGIN_COOKIE = "llmqueue_console_login"
COOKIE_PATH = "/console"
SESSION_MAX_AGE_S = 12 * 3600
LOGIN_MAX_AGE_S = 3600
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"


@cache
def _fernet() -> Fernet:
    secret = get_settings().session_secret
    if secret is None:
        secret = secrets.token_urlsafe(32)
        log.warning(
            "LLMQUEUE_SESSION_SECRET is not set: console sessions are signed with a secret made by "
            "this process, so they end when it restarts and are not shared with other API processes"
        )
    digest = hashlib.sha256(b"llmqueue console session\x00" + secret.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


@dataclass(frozen=True)
class ConsoleSession:
    """What the session cookie holds: the key, and the CSRF token of this session."""

    secret: str
    csrf: str


def read_session(request: Request) -> ConsoleSession | None:
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw:
        return None
    try:
        data: dict[str, Any] = json.loads(_fernet().decrypt(raw.encode(), ttl=SESSION_MAX_AGE_S))
        return ConsoleSession(secret=str(data["key"]), csrf=str(data["csrf"]))
    except (InvalidToken, ValueError, KeyError, TypeError):
        return None  # expired, altered, or made with another secret: sign in again


def start_session(response: Response, request: Request, secret: str) -> None:
    payload = json.dumps({"key": secret, "csrf": secrets.token_urlsafe(32)}).encode()
    response.set_cookie(
        SESSION_COOKIE,
        _fernet().encrypt(payload).decode(),
        max_age=SESSION_MAX_AGE_S,
        path=COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)


def end_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)


def login_token(request: Request) -> str:
    """The sign-in form's token: the browser's own, or a new one."""
    return request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(32)


def set_login_cookie(response: Response, request: Request, token: str) -> None:
    """The token's cookie copy (double submit: the form must carry the same value)."""
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=LOGIN_MAX_AGE_S,
        path=COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


def login_token_ok(request: Request, submitted: str | None) -> bool:
    expected = request.cookies.get(LOGIN_COOKIE)
    return bool(expected and submitted and hmac.compare_digest(expected, submitted))


def csrf_ok(session: ConsoleSession, request: Request, form_value: str | None) -> bool:
    submitted = request.headers.get(CSRF_HEADER) or form_value
    return bool(submitted and hmac.compare_digest(session.csrf, submitted))


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a console path only (never another site)."""
    if target and target.startswith("/console/") and not target.startswith("/console//"):
        return target
    return "/console/models"
