"""idempotency on every creating route: the records expire by age; jobs lose their own mechanism

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 10:00:00

Idempotency-Key replays are answered from `idempotency_keys` (kept 24 hours) on every creating
route, so the jobs' own unique (owner_id, idempotency_key) goes: after 24 hours a key may be
used again, which that constraint would refuse. `jobs.idempotency_key` stays, as a record of
the key the request that made the job carried. The periodic cleanup deletes records by age,
hence the index on created_at.
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_constraint("uq_jobs_owner_idempotency", type_="unique")
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
    with op.batch_alter_table("jobs") as jobs:
        jobs.create_unique_constraint("uq_jobs_owner_idempotency", ["owner_id", "idempotency_key"])
