"""The schema the migrations build is the schema the models declare (Alembic's own comparison)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from jobstore.db import get_engine
from jobstore.models import Base


def test_migrations_match_the_models(database: str) -> None:
    import jobstore.batch_models  # noqa: F401  (its tables are part of the metadata)

    with get_engine().connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
