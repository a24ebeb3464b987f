"""Timestamps: the one definition of "now" in UTC and of a stored timestamp made UTC-aware."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime) -> datetime:
    """A timestamp as UTC-aware: SQLite hands stored ones back naive, and a client may send one
    without a zone; both mean UTC here."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
