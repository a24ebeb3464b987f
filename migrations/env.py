"""Alembic environment: the job store's metadata, and the URL from llmqueue's settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

import jobstore.batch_models  # noqa: F401  (the batch tables, which jobs reference)
from core.settings import get_settings
from jobstore.db import engine_for
from jobstore.models import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":  # an index on a big table may take longer
        connection.exec_driver_sql("SET statement_timeout = 0")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url") or get_settings().sqlalchemy_url
    connectable = engine_for(url)
    with connectable.connect() as connection:
        _run(connection)
        connection.commit()


if context.is_offline_mode():
    context.configure(url=get_settings().sqlalchemy_url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
