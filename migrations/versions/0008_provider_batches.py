"""provider batches: some of a batch's jobs sent through a provider's own batch API

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 10:00:00

`provider_batches` holds each provider batch llmqueue submitted (economy mode): the
provider's id and what is needed to poll it, its state, counts, when it is next polled and
when llmqueue gives up on it. A job and an attempt name the provider batch their line is in
(`provider_batch_id`); only attempts that are lines carry one, hence the partial index.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

MONEY = sa.Numeric(20, 8)
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "provider_batches",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "batch_id",
            sa.String(40),
            sa.ForeignKey("batches.id", name="fk_provider_batches_batch_id"),
            nullable=False,
        ),
        sa.Column(
            "owner_id",
            sa.String(40),
            sa.ForeignKey("api_keys.id", name="fk_provider_batches_owner_id"),
            nullable=False,
        ),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("deployment", sa.String(200), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("provider_state", sa.String(16)),
        sa.Column("provider_status", sa.String(64)),
        sa.Column("ref", sa.JSON()),
        sa.Column("line_count", sa.Integer(), nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("input_bytes", sa.Integer(), nullable=False),
        sa.Column("request_counts", sa.JSON()),
        sa.Column("lines_succeeded", sa.Integer(), nullable=False),
        sa.Column("lines_online", sa.Integer(), nullable=False),
        sa.Column("lines_failed", sa.Integer(), nullable=False),
        sa.Column("lines_cancelled", sa.Integer(), nullable=False),
        sa.Column("cost_usd", MONEY, nullable=False),
        sa.Column("estimated_cost_usd", MONEY, nullable=False),
        sa.Column("estimated_online_cost_usd", MONEY, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("give_up_at", TS, nullable=False),
        sa.Column("deadline_at", TS),
        sa.Column("next_poll_at", TS),
        sa.Column("poll_interval_s", sa.Float(), nullable=False),
        sa.Column("polls", sa.Integer(), nullable=False),
        sa.Column("lease_until", TS),
        sa.Column("lease_token", sa.String(40)),
        sa.Column("cancel_requested_at", TS),
        sa.Column("cancel_reason", sa.String(32)),
        sa.Column("cancel_sent_at", TS),
        sa.Column("error_type", sa.String(64)),
        sa.Column("error_message", sa.Text()),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("submitted_at", TS),
        sa.Column("ended_at", TS),
        sa.Column("settled_at", TS),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_provider_batches_batch", "provider_batches", ["batch_id"])
    op.create_index(
        "ix_provider_batches_due",
        "provider_batches",
        ["next_poll_at"],
        postgresql_where=sa.text("phase != 'settled'"),
        sqlite_where=sa.text("phase != 'settled'"),
    )
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("provider_batch_id", sa.String(40)))
        jobs.create_foreign_key(
            "fk_jobs_provider_batch_id", "provider_batches", ["provider_batch_id"], ["id"]
        )
    with op.batch_alter_table("attempts") as attempts:
        attempts.add_column(sa.Column("provider_batch_id", sa.String(40)))
        attempts.create_foreign_key(
            "fk_attempts_provider_batch_id", "provider_batches", ["provider_batch_id"], ["id"]
        )
    op.create_index(
        "ix_attempts_provider_batch",
        "attempts",
        ["provider_batch_id"],
        postgresql_where=sa.text("provider_batch_id IS NOT NULL"),
        sqlite_where=sa.text("provider_batch_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_attempts_provider_batch", table_name="attempts")
    with op.batch_alter_table("attempts") as attempts:
        attempts.drop_constraint("fk_attempts_provider_batch_id", type_="foreignkey")
        attempts.drop_column("provider_batch_id")
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_constraint("fk_jobs_provider_batch_id", type_="foreignkey")
        jobs.drop_column("provider_batch_id")
    op.drop_index("ix_provider_batches_due", table_name="provider_batches")
    op.drop_index("ix_provider_batches_batch", table_name="provider_batches")
    op.drop_table("provider_batches")
