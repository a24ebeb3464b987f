"""/v1/keys: API key management, for admin keys only (a member gets a 403 naming the fix).

Create (the secret is in that one answer, never again), list, read, revoke, set the budget,
change the name, role, rate limits or alert webhook. Any key may read itself at
`/v1/keys/self` (its role, budget and what it has left) and its webhooks' signing secret at
`/v1/keys/self/webhook-secret`. A revoked key gets 401 from every
API process within seconds (`api/deps.py`); the last active admin cannot be revoked or
demoted (409 `last_admin`).

Key creation takes no Idempotency-Key: its answer holds the secret, and the idempotency
record would store it in the database.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from api.deps import AdminDep, OwnerDep, SessionDep
from api.errors import ApiError
from api.limits import check_webhook_url
from api.schemas.keys import (
    BudgetSet,
    KeyCreate,
    KeyCreated,
    KeyList,
    KeyPublic,
    KeyUpdate,
    WebhookSecret,
)
from core.clock import utcnow
from jobstore import keys
from jobstore.models import ApiKey
from workers import webhooks

router = APIRouter(prefix="/v1/keys", tags=["keys (admin)"])
FORBIDDEN: dict[int | str, dict[str, Any]] = {403: {"description": "The caller is not an admin key"}}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such key"}, **FORBIDDEN}


def _public(session: Session, key: ApiKey) -> KeyPublic:
    [view] = keys.key_views(session, [key.id], now=utcnow())
    return KeyPublic.of(view)


def _find(session: Session, key_id: str) -> ApiKey:
    key = keys.get_key(session, key_id)
    if key is None:
        raise ApiError(404, f"no API key {key_id!r}", param="key_id", code="key_not_found")
    return key


def _last_admin(exc: keys.LastAdmin) -> ApiError:
    return ApiError(409, str(exc), param="key_id", code="last_admin")


@router.post("", status_code=201, response_model=KeyCreated, responses=FORBIDDEN)
def create_key(body: KeyCreate, session: SessionDep, admin: AdminDep) -> KeyCreated:
    """A new key. Its `secret` is in this answer only: store it now."""
    check_webhook_url(body.alert_webhook_url, "alert_webhook_url")
    key, secret = keys.create_api_key(
        session,
        body.name,
        role=body.role,
        budget=body.budget.spec() if body.budget else None,
        rpm=body.rpm,
        tpm=body.tpm,
        alert_webhook_url=body.alert_webhook_url,
        now=utcnow(),
    )
    session.commit()
    public = _public(session, key)
    return KeyCreated(**public.model_dump(), secret=secret)


@router.get("", response_model=KeyList, responses=FORBIDDEN)
def list_keys(
    session: SessionDep,
    admin: AdminDep,
    include_revoked: Annotated[bool, Query(description="Revoked keys too.")] = True,
) -> KeyList:
    """Every key, oldest first, with its budget and spend."""
    views = keys.key_views(session, include_revoked=include_revoked, now=utcnow())
    return KeyList(data=[KeyPublic.of(v) for v in views])


@router.get("/self", response_model=KeyPublic)
def read_own_key(session: SessionDep, owner: OwnerDep) -> KeyPublic:
    """The calling key: its role, limits, budget and spend (any key may read itself)."""
    return _public(session, _find(session, owner.id))


@router.get("/self/webhook-secret", response_model=WebhookSecret)
def read_own_webhook_secret(owner: OwnerDep) -> WebhookSecret:
    """The secret this key's webhooks (batch webhooks, budget alerts) are signed with: verify
    `X-Llmqueue-Signature: t=<unix>,v1=<hex>` as HMAC-SHA256 of `<t>.<raw body>` under it.
    Only the key itself can read it."""
    return WebhookSecret(secret=webhooks.key_secret(owner.id))


@router.get("/{key_id}", response_model=KeyPublic, responses=NOT_FOUND)
def read_key(key_id: str, session: SessionDep, admin: AdminDep) -> KeyPublic:
    return _public(session, _find(session, key_id))


@router.post("/{key_id}/revoke", response_model=KeyPublic, responses=NOT_FOUND)
def revoke_key(key_id: str, session: SessionDep, admin: AdminDep) -> KeyPublic:
    """Revoke the key: every API process answers it 401 within seconds. Its jobs stay."""
    key = _find(session, key_id)
    try:
        keys.revoke_key(session, key, utcnow())
    except keys.LastAdmin as exc:
        raise _last_admin(exc) from None
    session.commit()
    return _public(session, key)


@router.put("/{key_id}/budget", response_model=KeyPublic, responses=NOT_FOUND)
@router.post("/{key_id}/budget", response_model=KeyPublic, responses=NOT_FOUND, include_in_schema=False)
def set_budget(key_id: str, body: BudgetSet, session: SessionDep, admin: AdminDep) -> KeyPublic:
    """Set, change or (limit_usd null) remove the key's budget. Changing the period starts a new
    one now; otherwise what the current period spent is kept."""
    key = _find(session, key_id)
    keys.set_key_budget(session, key.id, body.spec(), now=utcnow())
    session.commit()
    return _public(session, key)


@router.patch("/{key_id}", response_model=KeyPublic, responses=NOT_FOUND)
def update_key(key_id: str, body: KeyUpdate, session: SessionDep, admin: AdminDep) -> KeyPublic:
    """Change the fields sent: name, role, rpm, tpm, alert_webhook_url (null clears the last three)."""
    key = _find(session, key_id)
    sent = body.model_fields_set
    check_webhook_url(body.alert_webhook_url, "alert_webhook_url")
    if "name" in sent:
        if body.name is None:
            raise ApiError(422, "name cannot be null", param="name", code="invalid_value")
        key.name = body.name
    if "role" in sent:
        if body.role is None:
            raise ApiError(422, "role cannot be null: admin or member", param="role", code="invalid_value")
        try:
            keys.set_role(session, key, body.role)
        except keys.LastAdmin as exc:
            raise _last_admin(exc) from None
    for field in ("rpm", "tpm", "alert_webhook_url"):
        if field in sent:
            setattr(key, field, getattr(body, field))
    session.commit()
    return _public(session, key)
