"""API key schemas: what an admin sends to create or change a key and its budget, and what
it gets back. The secret appears once, in `KeyCreated`; no other answer carries it."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from jobstore.keys import BudgetSpec, BudgetState, KeyView
from jobstore.models import BudgetPeriod, KeyRole

MAX_RATE = 2**31 - 1  # api_keys.rpm and tpm are Postgres integers
MAX_USD = Decimal(10**9)  # money columns hold 12 digits before the point; a billion is plenty


def _webhook(value: str | None) -> str | None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError("must be an http(s) URL")
    return value


class BudgetSet(BaseModel):
    """A key's budget: `limit_usd` per `period` (UTC: a day from 00:00, a week from Monday, a
    month from its first day; `lifetime` never resets). `limit_usd` null removes the budget."""

    model_config = ConfigDict(extra="forbid")
    limit_usd: Decimal | None = Field(
        ge=0, le=MAX_USD, description="USD per period; null removes the budget."
    )
    period: BudgetPeriod = BudgetPeriod.LIFETIME
    soft_limit_usd: Decimal | None = Field(
        default=None,
        ge=0,
        le=MAX_USD,
        description="Crossing it sends one alert a period (log and signed webhook).",
    )

    @model_validator(mode="after")
    def _soft_below_limit(self) -> BudgetSet:
        if self.soft_limit_usd is not None:
            if self.limit_usd is None:
                raise ValueError("soft_limit_usd needs a limit_usd")
            if self.soft_limit_usd > self.limit_usd:
                raise ValueError("soft_limit_usd must not exceed limit_usd")
        return self

    def spec(self) -> BudgetSpec | None:
        if self.limit_usd is None:
            return None
        return BudgetSpec(self.limit_usd, self.period, self.soft_limit_usd)


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200, description="A label: who or what uses the key.")
    role: KeyRole = Field(default=KeyRole.MEMBER, description="admin manages keys; member uses the API.")
    budget: BudgetSet | None = None
    rpm: int | None = Field(default=None, ge=1, le=MAX_RATE, description="The key's own requests per minute.")
    tpm: int | None = Field(default=None, ge=1, le=MAX_RATE, description="The key's own tokens per minute.")
    alert_webhook_url: str | None = Field(default=None, description="Where budget alerts are POSTed.")

    _check_webhook = field_validator("alert_webhook_url")(_webhook)


class KeyUpdate(BaseModel):
    """PATCH: only the fields sent change; null clears rpm, tpm or the webhook."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    role: KeyRole | None = None
    rpm: int | None = Field(default=None, ge=1, le=MAX_RATE)
    tpm: int | None = Field(default=None, ge=1, le=MAX_RATE)
    alert_webhook_url: str | None = None

    _check_webhook = field_validator("alert_webhook_url")(_webhook)


class BudgetPublic(BaseModel):
    limit_usd: str
    period: BudgetPeriod
    soft_limit_usd: str | None
    spent_usd: str = Field(description="Settled spend in the current period.")
    reserved_usd: str = Field(description="Held by calls in flight (their most they may cost).")
    remaining_usd: str
    period_start: datetime
    resets_at: datetime | None = Field(description="When the next period starts; null for lifetime.")

    @classmethod
    def of(cls, state: BudgetState) -> BudgetPublic:
        b = state.budget
        return cls(
            limit_usd=f"{b.limit_usd:f}",
            period=BudgetPeriod(b.period),
            soft_limit_usd=None if b.soft_limit_usd is None else f"{b.soft_limit_usd:f}",
            spent_usd=f"{state.spent_usd:f}",
            reserved_usd=f"{b.reserved_usd:f}",
            remaining_usd=f"{state.remaining_usd:f}",
            period_start=state.period_start,
            resets_at=state.resets_at,
        )


class KeyPublic(BaseModel):
    id: str
    object: Literal["api_key"] = "api_key"
    name: str
    prefix: str = Field(description="The secret's first characters, to recognise it; not enough to use it.")
    role: KeyRole
    active: bool
    rpm: int | None
    tpm: int | None
    alert_webhook_url: str | None
    budget: BudgetPublic | None
    spent_usd: str = Field(description="Everything the key's calls ever cost.")
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, view: KeyView) -> KeyPublic:
        key, budget, spent = view.key, view.budget, view.spent_usd
        return cls(
            id=key.id,
            name=key.name,
            prefix=key.key_prefix,
            role=KeyRole(key.role),
            active=key.revoked_at is None,
            rpm=key.rpm,
            tpm=key.tpm,
            alert_webhook_url=key.alert_webhook_url,
            budget=None if budget is None else BudgetPublic.of(budget),
            spent_usd=f"{spent:f}",
            created_at=key.created_at,
            revoked_at=key.revoked_at,
        )


class KeyCreated(KeyPublic):
    secret: str = Field(description="The key itself: shown this once, only its hash is stored.")


class KeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[KeyPublic]


class WebhookSecret(BaseModel):
    object: Literal["webhook_secret"] = "webhook_secret"
    secret: str = Field(description="HMAC-SHA256 key of X-Llmqueue-Signature on this key's webhooks.")
    header: str = "X-Llmqueue-Signature"
    scheme: str = Field(
        default="t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.<raw body>'>",
        description="Refuse a t more than 5 minutes old.",
    )
