"""Engines and sessions for the job store, one engine per database URL per process.

SQLite (the embedded default) gets WAL and a busy timeout so the API and worker processes
can share one file; Postgres gets a pool sized for a threaded worker, and connect, statement
and socket timeouts (`postgres_timeouts`) so nothing waits on a database that is away.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

from psycopg.types.string import StrDumperUnknown
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from core.settings import get_settings

log = logging.getLogger(__name__)


@cache
def engine_for(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    # Threads hold a connection only around short transactions, never across a provider
    # call, so a small pool serves hundreds of calls in flight; several processes share
    # Postgres's max_connections (100 by default).
    settings = get_settings()
    return create_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_s,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args=postgres_timeouts(),
    )


def postgres_timeouts() -> dict[str, Any]:
    """libpq options so that no connection waits on Postgres for ever: a connect timeout, a
    statement timeout, and TCP keepalives plus tcp_user_timeout so a peer gone silent (a
    stopped host, a cut network) drops the socket instead of holding a thread."""
    settings = get_settings()
    socket_s = settings.db_socket_timeout_s
    options = f"-c statement_timeout={int(settings.db_statement_timeout_s * 1000)}"
    return {
        "connect_timeout": settings.db_connect_timeout_s,
        "options": options,
        "keepalives": 1,
        "keepalives_idle": max(1, socket_s // 3),
        "keepalives_interval": max(1, socket_s // 6),
        "keepalives_count": 3,
        "tcp_user_timeout": socket_s * 1000,
    }


class _StorableText(StrDumperUnknown):
    """Text as Postgres can store it: NUL characters dropped (a text value cannot hold one) and
    unpaired surrogates replaced (they are not UTF-8), instead of an error from the driver."""

    def dump(self, obj: str) -> bytes:
        if "\x00" in obj:
            obj = obj.replace("\x00", "")
        try:
            return obj.encode(self._encoding)
        except UnicodeEncodeError:
            return obj.encode(self._encoding, "replace")


def store_any_text(engine: Engine) -> None:
    """Make every connection of `engine` store any Python text (`_StorableText`). The API does
    this: what it stores as text comes from anyone; the workers keep the driver's faster dumper."""
    if engine.dialect.name == "postgresql" and not event.contains(engine, "connect", _register_text):
        event.listen(engine, "connect", _register_text)


def _register_text(dbapi_conn: Any, _: Any) -> None:
    dbapi_conn.adapters.register_dumper(str, _StorableText)


def get_engine() -> Engine:
    return engine_for(get_settings().sqlalchemy_url)


@cache
def _probe_engine_for(url: str) -> Engine:
    if url.startswith("sqlite"):
        return engine_for(url)
    return create_engine(
        url,
        pool_size=1,
        max_overflow=0,
        pool_timeout=get_settings().db_connect_timeout_s,
        pool_pre_ping=True,
        connect_args=postgres_timeouts(),
    )


def probe_engine() -> Engine:
    """An engine of one connection for health checks alone: a check that shared the
    process's pool would wait behind a burst of requests (a thousand streams opening) and
    make a busy, healthy process look dead. It still proves the database answers."""
    return _probe_engine_for(get_settings().sqlalchemy_url)


def warm_pool() -> None:
    """Open the pool's connections now, at process start: a burst of first jobs would
    otherwise each pay a connection setup (a Postgres backend start) while holding up the
    rest. A database not up yet is not fatal here; the first transaction will say so."""
    engine = get_engine()
    if engine.dialect.name == "sqlite":
        return
    connections = []
    try:
        for _ in range(get_settings().db_pool_size):
            connections.append(engine.connect())
    except Exception as exc:
        log.warning("could not open database connections at start: %s", exc)
    finally:
        for connection in connections:
            connection.close()


@cache
def _sessionmaker(url: str) -> sessionmaker[Session]:
    return sessionmaker(bind=engine_for(url), expire_on_commit=False)


def session_factory() -> sessionmaker[Session]:
    return _sessionmaker(get_settings().sqlalchemy_url)


@contextmanager
def transaction() -> Iterator[Session]:
    """A session whose work commits on success and rolls back on any error."""
    session = session_factory()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
