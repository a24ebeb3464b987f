"""Webhook delivery, in one place: batch webhooks and budget alerts are POSTed from here,
never to an internal address (`workers/outbound.py`), with timeouts, and signed.

The signature is Stripe's scheme: the header

    X-Llmqueue-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">

keyed with the secret of the API key the event belongs to. That secret is derived, never
stored: HMAC-SHA256(server secret, key id). The server secret is `LLMQUEUE_WEBHOOK_SECRET`;
unset, one is generated at first use and kept in `$LLMQUEUE_HOME/webhook_secret` (every
process on the machine reads the same file; a warning says to set it when processes do not
share that directory). A key reads its own secret at `GET /v1/keys/self/webhook-secret`. A
receiver recomputes the HMAC over the raw body and refuses an old `t` (`verify`).

Retries are the tasks' (`workers/tasks.py`): a failed delivery is tried again with
exponential backoff. A refused URL (an internal address) is not retried: it cannot succeed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from core.settings import get_settings
from jobstore.db import transaction
from jobstore.models import ApiKey
from workers import outbound

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-Llmqueue-Signature"
EVENT_HEADER = "X-Llmqueue-Event"
SECRET_FILE = "webhook_secret"
SECRET_PREFIX = "whsec_"
TOLERANCE_S = 300

_secret_lock = threading.Lock()
_server_secret: bytes | None = None


def server_secret() -> bytes:
    """LLMQUEUE_WEBHOOK_SECRET, or the one kept under LLMQUEUE_HOME (made at first use)."""
    global _server_secret
    with _secret_lock:
        if _server_secret is None:
            configured = get_settings().webhook_secret
            _server_secret = configured.encode() if configured else _secret_from_home()
        return _server_secret


def _secret_from_home() -> bytes:
    home = get_settings().home
    path = home / SECRET_FILE
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        draft = home / f".{SECRET_FILE}.{os.getpid()}"
        draft.write_text(secrets.token_hex(32))
        draft.chmod(0o600)
        try:
            os.link(draft, path)  # atomic: of processes racing here, one file wins
        except FileExistsError:
            pass
        finally:
            draft.unlink(missing_ok=True)
    log.warning(
        "LLMQUEUE_WEBHOOK_SECRET is not set: webhooks are signed with the secret in %s; set it "
        "when the API and the workers do not share that directory",
        Path(path).resolve(),
    )
    return path.read_text().strip().encode()


def key_secret(key_id: str) -> str:
    """The signing secret of an API key's webhooks."""
    return SECRET_PREFIX + hmac.new(server_secret(), key_id.encode(), hashlib.sha256).hexdigest()


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, *, now: float | None = None) -> bool:
    """What a receiver does: the header's v1 matches the body and its t is recent."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > TOLERANCE_S:
        return False
    expected = signature(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


@dataclass(frozen=True)
class Delivery:
    delivered: bool
    retry: bool  # worth trying again (the receiver failed, the network did)
    detail: str


def deliver(
    url: str, event: str, payload: dict[str, Any], *, key_id: str, headers: dict[str, str]
) -> Delivery:
    """POST `payload` to `url`, signed with the key's secret; delivered on a 2xx answer."""
    body = json.dumps(payload, separators=(",", ":"), default=str).encode()
    settings = get_settings()
    sent_headers = {
        "Content-Type": "application/json",
        "User-Agent": "llmqueue-webhook",
        EVENT_HEADER: event,
        SIGNATURE_HEADER: signature(key_secret(key_id), int(time.time()), body),
        **headers,
    }
    try:
        answer = outbound.fetch(
            "POST",
            url,
            policy=outbound.Policy.of(settings, webhook=True),
            timeout=settings.webhook_timeout_s,
            content=body,
            headers=sent_headers,
        )
    except outbound.Refused as exc:
        log.warning("webhook %s not sent: %s", event, exc)
        return Delivery(False, retry=False, detail=str(exc))
    except httpx.HTTPError as exc:
        log.warning("webhook %s failed: %s", event, type(exc).__name__)
        return Delivery(False, retry=True, detail=type(exc).__name__)
    if 200 <= answer.status_code < 300:
        return Delivery(True, retry=False, detail=str(answer.status_code))
    log.warning("webhook %s answered HTTP %d", event, answer.status_code)
    return Delivery(False, retry=True, detail=f"HTTP {answer.status_code}")


# ---------------------------------------------------------------- budget alerts


ALERT_EVENT = "budget.soft_limit_crossed"


def deliver_budget_alert(alert: dict[str, Any]) -> Delivery:
    """Tell the key's alert webhook (read now: it may have changed) that a budget passed its
    soft limit. No webhook set: nothing to do."""
    with transaction() as session:
        key = session.get(ApiKey, alert["owner_id"])
        url = key.alert_webhook_url if key is not None else None
    if not url:
        return Delivery(True, retry=False, detail="no alert webhook")
    payload = {
        "type": ALERT_EVENT,
        "created": int(datetime.now(UTC).timestamp()),
        "data": {
            "key_id": alert["owner_id"],
            "budget_id": alert["budget_id"],
            "batch_id": alert.get("batch_id"),
            "spent_usd": alert["spent_usd"],
            "soft_limit_usd": alert["soft_limit_usd"],
            "limit_usd": alert["limit_usd"],
        },
    }
    return deliver(url, ALERT_EVENT, payload, key_id=alert["owner_id"], headers={})
