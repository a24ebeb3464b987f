"""The ledger on the embedded store (SQLite, what runs without DATABASE_URL): a budget's
reservations hold and refuse as on Postgres, and a cancel gives its job's reservation back.
SQLite takes no UPDATE inside a CTE, so the reservation there is two statements
(`jobstore.ledger._reserve_one_writer`)."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

# A fresh embedded store with a key whose budget is $1 (`key_id`), and `now`.
PRELUDE = """
from datetime import UTC, datetime
from decimal import Decimal
from sqlalchemy import select
from jobstore.db import transaction
from jobstore.migrate import upgrade
from jobstore import keys, ledger, transitions
from jobstore.models import Attempt, Budget, Job

upgrade()
now = datetime.now(UTC)
with transaction() as s:
    key, _ = keys.create_api_key(s, "embedded", Decimal("1.00"))
    key_id = key.id
"""

RESERVE = """
held = []
for amount in ("0.6", "0.3", "0.2", "0.1"):
    with transaction() as s:
        held.append(ledger.reserve(s, key_id, None, Decimal(amount), now))
with transaction() as s:
    left = ledger.remaining(s, key_id, None, now)
print(held, left.usd if left else None)
"""

CANCEL = """
with transaction() as s:
    job = Job(owner_id=key_id, request={"messages": []}, status="queued", request_hash="x",
              kind="chat", model_requested="gpt-4o-mini", strategy="cost")
    s.add(job)
    s.flush()
    job_id = job.id
with transaction() as s:
    assert ledger.reserve(s, key_id, None, Decimal("0.25"), now)
    transitions.begin_dispatch(s, job_id, provider="openai", model="gpt-4o-mini",
                               deployment="openai/gpt-4o-mini", explanation={}, reserved_usd=Decimal("0.25"))
with transaction() as s:
    before = s.scalar(select(Budget.reserved_usd).where(Budget.owner_id == key_id))
    cancelled = transitions.cancel_job(s, job_id, now)
with transaction() as s:
    after = s.scalar(select(Budget.reserved_usd).where(Budget.owner_id == key_id))
    attempts = [a.status for a in s.scalars(select(Attempt).where(Attempt.job_id == job_id))]
print(before, cancelled, after, attempts)
"""


def on_embedded_store(tmp_path: Path, script: str) -> str:
    """What `script` prints, run after PRELUDE in a process whose store is a new SQLite file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMQUEUE_") and k != "DATABASE_URL"}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'llmqueue.db'}"
    done = subprocess.run(
        [sys.executable, "-c", PRELUDE + script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def test_reservations_hold_and_refuse_on_the_embedded_store(tmp_path: Path) -> None:
    out = on_embedded_store(tmp_path, RESERVE)
    # 0.6 and 0.3 fit a $1 budget, 0.2 would pass it and is refused, 0.1 fits exactly.
    held, left = out.rsplit(" ", 1)
    assert held == "[True, True, False, True]" and Decimal(left) == 0, out


def test_a_cancel_gives_back_the_reservation_on_the_embedded_store(tmp_path: Path) -> None:
    """cancel_job's release (an UPDATE ... RETURNING there) holds on SQLite too."""
    out = on_embedded_store(tmp_path, CANCEL)
    before, cancelled, after, attempts = out.split(" ", 3)
    assert (Decimal(before), cancelled, Decimal(after), attempts) == (
        Decimal("0.25"),
        "True",
        Decimal(0),
        "['cancelled']",
    ), out
