"""jobs.request_tokens: the request's token count, counted once at submission

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 20:50:00

Routing calibrates this count per provider; with it stored, the dispatcher and the provider
workers (which route failovers) need not tokenize again, nor hold the tokenizer's tables.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("request_tokens", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_column("request_tokens")
