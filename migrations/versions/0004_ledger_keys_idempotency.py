"""budgets (a ledger with reservations), key roles and limits, idempotency records, emulated marks

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 19:30:00

A key's budget moves from api_keys.budget_usd to a `budgets` row (lifetime, its spend so far
carried over), so per-period and per-batch budgets are rows of one table with spent and
reserved amounts. Keys gain a role, their own rate limits and an alert webhook; attempts the
reservation they hold; attempts and jobs a mark for answers from the built-in emulator.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
MONEY = sa.Numeric(20, 8)


def upgrade() -> None:
    op.create_table(
        "budgets",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("owner_id", sa.String(length=40), nullable=False),
        sa.Column("batch_id", sa.String(length=40), nullable=True),
        sa.Column("limit_usd", MONEY, nullable=False),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("soft_limit_usd", MONEY, nullable=True),
        sa.Column("period_start", TS, nullable=False),
        sa.Column("spent_usd", MONEY, nullable=False),
        sa.Column("reserved_usd", MONEY, nullable=False),
        sa.Column("soft_alerted_for", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["api_keys.id"]),
        sa.ForeignKeyConstraint(["batch_id"], ["batches.id"], name="fk_budgets_batch_id"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "uq_budgets_key",
        "budgets",
        ["owner_id"],
        unique=True,
        postgresql_where=sa.text("batch_id IS NULL"),
        sqlite_where=sa.text("batch_id IS NULL"),
    )
    op.create_index("uq_budgets_batch", "budgets", ["batch_id"], unique=True)
    op.create_table(
        "idempotency_keys",
        sa.Column("owner_id", sa.String(length=40), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("route", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["api_keys.id"]),
        sa.PrimaryKeyConstraint("owner_id", "key"),
    )
    with op.batch_alter_table("api_keys") as keys:
        keys.add_column(sa.Column("role", sa.String(length=16), nullable=False, server_default="member"))
        keys.add_column(sa.Column("rpm", sa.Integer(), nullable=True))
        keys.add_column(sa.Column("tpm", sa.Integer(), nullable=True))
        keys.add_column(sa.Column("alert_webhook_url", sa.Text(), nullable=True))
    # A budget set before this revision becomes a lifetime budget, its spend so far carried over.
    op.execute(
        """
        INSERT INTO budgets (id, owner_id, batch_id, limit_usd, period, period_start, spent_usd,
                             reserved_usd, created_at, updated_at)
        SELECT 'bud_' || k.id, k.id, NULL, k.budget_usd, 'lifetime', k.created_at,
               COALESCE((SELECT SUM(j.cost_usd) FROM jobs j WHERE j.owner_id = k.id), 0), 0,
               k.created_at, k.created_at
        FROM api_keys k WHERE k.budget_usd IS NOT NULL
        """
    )
    with op.batch_alter_table("api_keys") as keys:
        keys.drop_column("budget_usd")
    with op.batch_alter_table("attempts") as attempts:
        attempts.add_column(sa.Column("reserved_usd", MONEY, nullable=False, server_default="0"))
        attempts.add_column(sa.Column("emulated", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("emulated", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_column("emulated")
    with op.batch_alter_table("attempts") as attempts:
        attempts.drop_column("emulated")
        attempts.drop_column("reserved_usd")
    with op.batch_alter_table("api_keys") as keys:
        keys.add_column(sa.Column("budget_usd", MONEY, nullable=True))
    op.execute(
        "UPDATE api_keys SET budget_usd = (SELECT b.limit_usd FROM budgets b "
        "WHERE b.owner_id = api_keys.id AND b.batch_id IS NULL)"
    )
    with op.batch_alter_table("api_keys") as keys:
        keys.drop_column("alert_webhook_url")
        keys.drop_column("tpm")
        keys.drop_column("rpm")
        keys.drop_column("role")
    op.drop_table("idempotency_keys")
    op.drop_index("uq_budgets_batch", table_name="budgets")
    op.drop_index("uq_budgets_key", table_name="budgets")
    op.drop_table("budgets")
