"""jobs.kind (chat | embedding) and job_vectors (an embedding job's vectors, one row per input)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 10:00:00

An embedding job is one provider call carrying many inputs; its request holds the inputs with
their ids, and its vectors are written with its result, as float32 bytes, one row per input
in input order. Every existing job is a chat job.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("kind", sa.String(length=16), server_default="chat", nullable=False))
    op.create_table(
        "job_vectors",
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("input_id", sa.Text(), nullable=False),
        sa.Column("dims", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "position"),
    )


def downgrade() -> None:
    op.drop_table("job_vectors")
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_column("kind")
