"""The ledger on the embedded store (SQLite, what runs without DATABASE_URL): a budget's
reservations hold and refuse as on Postgres. SQLite takes no UPDATE inside a CTE, so the
reservation there is two statements (`jobstore.ledger._reserve_one_writer`)."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

SCRIPT = """
from datetime import UTC, datetime
from decimal import Decimal
from jobstore.db import transaction
from jobstore.migrate import upgrade
from jobstore import keys, ledger

upgrade()
now = datetime.now(UTC)
with transaction() as s:
    key, _ = keys.create_api_key(s, "embedded", Decimal("1.00"))
    key_id = key.id
held = []
for amount in ("0.6", "0.3", "0.2", "0.1"):
    with transaction() as s:
        held.append(ledger.reserve(s, key_id, None, Decimal(amount), now))
with transaction() as s:
    left = ledger.remaining(s, key_id, None, now)
print(held, left.usd if left else None)
"""


def test_reservations_hold_and_refuse_on_the_embedded_store(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMQUEUE_") and k != "DATABASE_URL"}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'llmqueue.db'}"
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # 0.6 and 0.3 fit a $1 budget, 0.2 would pass it and is refused, 0.1 fits exactly.
    held, left = done.stdout.rsplit(" ", 1)
    assert held == "[True, True, False, True]" and Decimal(left) == 0, done.stdout
