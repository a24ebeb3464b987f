"""attempts.max_tokens (a budget's output cap); indexes for leases and held jobs

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 20:30:00

A key with a budget has a bounded output on every call: when the job sets no max_tokens the
dispatcher picks one from the model and the budget left, and the attempt keeps it. The
sweeper looks for expired leases every few seconds, and the batch feeder for the jobs it
holds, so both get an index.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attempts") as attempts:
        attempts.add_column(sa.Column("max_tokens", sa.Integer(), nullable=True))
    op.create_index("ix_attempts_status_lease", "attempts", ["status", "lease_until"], unique=False)
    op.create_index("ix_jobs_batch_held", "jobs", ["batch_id", "not_before", "line_number"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_jobs_batch_held", table_name="jobs")
    op.drop_index("ix_attempts_status_lease", table_name="attempts")
    with op.batch_alter_table("attempts") as attempts:
        attempts.drop_column("max_tokens")
