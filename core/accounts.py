"""The closed sets of API key management that cross packages: a key's role and a budget's period.

Stored on `api_keys.role` and `budgets.period` as their string values and shown to clients,
so a value, once released, keeps its spelling. Here rather than beside the tables so the
CLI can offer them as choices without loading the database layer.
"""

from __future__ import annotations

from enum import StrEnum


class KeyRole(StrEnum):
    ADMIN = "admin"  # manages keys, sees every key's spend and provider health, calls the provider test
    MEMBER = "member"  # its own jobs, batches, files and spend


class BudgetPeriod(StrEnum):
    LIFETIME = "lifetime"
    DAY = "day"  # each resets at 00:00 UTC; a week on Monday, a month on its first day
    WEEK = "week"
    MONTH = "month"
