"""`llmqueue keys create | list | revoke | set-budget`: API keys, straight in the job store.

These commands talk to the database (DATABASE_URL), not to the API: they are the operator's,
and they work on an empty database, where no admin key exists yet to call the API with
(`llmqueue keys create --admin` makes the first). The API offers the same to admin keys
under /v1/keys. `create` prints the secret alone on stdout, so `KEY=$(llmqueue keys create)`
captures exactly the key; everything else goes to stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from core.accounts import BudgetPeriod, KeyRole

if TYPE_CHECKING:  # the database layer is imported when a command runs, not at every CLI start
    from sqlalchemy.orm import Session

    from api.schemas.keys import KeyPublic
    from jobstore.keys import BudgetSpec

keys_app = typer.Typer(help="Manage API keys (in the job store at DATABASE_URL).", no_args_is_help=True)
console = Console()
err = Console(stderr=True)

PeriodOpt = Annotated[
    BudgetPeriod, typer.Option(help="lifetime, or day/week/month (reset at 00:00 UTC, Monday, the 1st).")
]


def _fail(message: str) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


def _usd(value: str | None, option: str) -> Decimal | None:
    if value is None:
        return None
    try:
        amount = Decimal(value)
    except InvalidOperation:
        amount = Decimal(-1)
    if not amount.is_finite() or amount < 0:
        _fail(f"{option} must be a non-negative amount of USD like 25.00, not {value!r}")
    return amount


def _money(text: str) -> str:
    """A stored amount without its trailing zeros: 10.00000000 -> 10, 0.00012000 -> 0.00012."""
    return f"{Decimal(text).normalize():f}"


def _budget(limit: str | None, period: BudgetPeriod, soft_limit: str | None) -> BudgetSpec | None:
    from jobstore.keys import BudgetSpec

    limit_usd, soft_usd = _usd(limit, "--budget/--limit"), _usd(soft_limit, "--soft-limit")
    if limit_usd is None:
        if soft_usd is not None or period != BudgetPeriod.LIFETIME:
            _fail("--period and --soft-limit need a budget: give --budget (create) or --limit (set-budget)")
        return None
    if soft_usd is not None and soft_usd > limit_usd:
        _fail(f"--soft-limit {soft_usd} is above the budget {limit_usd}: it must be at most the limit")
    return BudgetSpec(limit_usd, period, soft_usd)


@contextmanager
def _store() -> Iterator[Session]:
    """A transaction on the job store; a database without the schema says how to make it."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from jobstore.db import transaction

    try:
        with transaction() as session:
            yield session
    except (OperationalError, ProgrammingError) as exc:
        first = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        if "no such table" in first or "does not exist" in first:
            _fail(
                f"the job store has no schema yet ({first}); "
                "run 'llmqueue migrate' with the same DATABASE_URL"
            )
        _fail(f"cannot use the job store at DATABASE_URL: {first}")


def _public(
    session: Session, key_ids: list[str] | None = None, *, active_only: bool = False
) -> list[KeyPublic]:
    """The keys as the API shows them (all when `key_ids` is None)."""
    from api.schemas.keys import KeyPublic
    from core.clock import utcnow
    from jobstore import keys

    views = keys.key_views(session, key_ids, include_revoked=not active_only, now=utcnow())
    return [KeyPublic.of(v) for v in views]


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Option(help="A label: who or what uses the key.")] = "default",
    admin: Annotated[
        bool, typer.Option("--admin", help="An admin key: manages keys, sees all spend.")
    ] = False,
    budget: Annotated[str | None, typer.Option(help="Spend limit in USD per --period, e.g. 25.00.")] = None,
    period: PeriodOpt = BudgetPeriod.LIFETIME,
    soft_limit: Annotated[str | None, typer.Option(help="Alert once a period past this USD.")] = None,
    alert_webhook: Annotated[
        str | None, typer.Option(help="http(s) URL budget alerts are POSTed to.")
    ] = None,
    rpm: Annotated[int | None, typer.Option(min=1, help="The key's own requests per minute.")] = None,
    tpm: Annotated[int | None, typer.Option(min=1, help="The key's own tokens per minute.")] = None,
) -> None:
    """Create an API key. The secret is printed once, alone on stdout; only its hash is stored."""
    spec = _budget(budget, period, soft_limit)
    if alert_webhook is not None and not alert_webhook.startswith(("http://", "https://")):
        _fail(f"--alert-webhook must be an http(s) URL, not {alert_webhook!r}")
    if alert_webhook is not None:
        from workers import outbound

        try:
            outbound.check_url(alert_webhook, outbound.Policy.of(webhook=True))
        except outbound.Refused as exc:
            _fail(
                f"--alert-webhook refused: {exc} (an operator may allow it: "
                "LLMQUEUE_OUTBOUND_ALLOWED_NETWORKS or LLMQUEUE_WEBHOOK_ALLOW_PRIVATE=true)"
            )
    from jobstore import keys

    role = KeyRole.ADMIN if admin else KeyRole.MEMBER
    with _store() as session:
        key, secret = keys.create_api_key(
            session, name, role=role, budget=spec, rpm=rpm, tpm=tpm, alert_webhook_url=alert_webhook
        )
        key_id = key.id
    limit = f", budget ${spec.limit_usd} {spec.period.value}" if spec else ""
    err.print(
        f"created {role.value} key {key_id} ({name}{limit}); store the secret now, it is not shown again:",
        soft_wrap=True,  # one line: a wrapped message would read as two around the secret
    )
    print(secret, flush=True)


@keys_app.command("list")
def list_keys(
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON (the API's key objects), not a table.")
    ] = False,
    active: Annotated[bool, typer.Option("--active", help="Only keys not revoked.")] = False,
) -> None:
    """Every key with its role, budget, spend and limits (never a secret)."""
    with _store() as session:
        rows = _public(session, active_only=active)
    if as_json:
        print(json.dumps([r.model_dump(mode="json") for r in rows], indent=2))
        return
    table = Table(title=f"{len(rows)} API keys")
    for column in ("id", "name", "prefix", "role", "status", "budget", "left", "spent (all time)", "rpm/tpm"):
        table.add_column(column, overflow="fold" if column == "id" else "ellipsis")
    for r in rows:
        b = r.budget
        table.add_row(
            r.id,
            r.name,
            r.prefix + "...",
            r.role.value,
            "active" if r.active else f"revoked {r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "revoked",
            f"${_money(b.spent_usd)} of ${_money(b.limit_usd)} {b.period.value}" if b else "-",
            f"${_money(b.remaining_usd)}" if b else "-",
            f"${_money(r.spent_usd)}",
            f"{r.rpm or '-'}/{r.tpm or '-'}",
        )
    Console(width=None if sys.stdout.isatty() else 200).print(table)


@keys_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="The key's id (key_..., see 'keys list').")]) -> None:
    """Revoke a key: every API process answers it 401 within seconds. Its jobs and spend stay."""
    from core.clock import utcnow
    from jobstore import keys

    with _store() as session:
        key = keys.get_key(session, key_id)
        if key is None:
            _fail(f"no API key {key_id!r}; 'llmqueue keys list' shows them")
            return
        try:
            keys.revoke_key(session, key, utcnow())
        except keys.LastAdmin as exc:
            _fail(str(exc))
        revoked_at = key.revoked_at
    err.print(
        f"revoked {key_id} at {revoked_at:%Y-%m-%d %H:%M:%S} UTC" if revoked_at else f"revoked {key_id}"
    )


@keys_app.command("set-budget")
def set_budget(
    key_id: Annotated[str, typer.Argument(help="The key's id (key_..., see 'keys list').")],
    limit: Annotated[str | None, typer.Option(help="Spend limit in USD per --period.")] = None,
    period: PeriodOpt = BudgetPeriod.LIFETIME,
    soft_limit: Annotated[str | None, typer.Option(help="Alert once a period past this USD.")] = None,
    none: Annotated[bool, typer.Option("--none", help="Remove the key's budget.")] = False,
) -> None:
    """Set, change or (--none) remove a key's budget. A new period starts now; else spend is kept."""
    if none == (limit is not None):
        _fail("give either --limit USD (with --period, --soft-limit) or --none")
    from core.clock import utcnow
    from jobstore import keys

    spec = None if none else _budget(limit, period, soft_limit)
    with _store() as session:
        if keys.get_key(session, key_id) is None:
            _fail(f"no API key {key_id!r}; 'llmqueue keys list' shows them")
        keys.set_key_budget(session, key_id, spec, now=utcnow())
        [public] = _public(session, [key_id])
    b = public.budget
    err.print(
        f"{key_id}: budget ${_money(b.limit_usd)} {b.period.value}, ${_money(b.spent_usd)} spent, "
        f"${_money(b.remaining_usd)} left"
        if b
        else f"{key_id}: no budget"
    )
