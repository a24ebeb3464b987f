"""A worker that truly cannot go on exits non-zero, so a restart-on-failure supervisor (compose's
`restart: unless-stopped`, systemd's `Restart=on-failure`) starts it again. Celery's
`worker_main` drops its worker's exit code; `llmqueue worker` passes it on.

The broker here is a port nobody listens on and LLMQUEUE_BROKER_MAX_RETRIES=1: the consumer
tries twice, Celery logs "Unrecoverable error", and the process must end with 1, not 0.
"""

from __future__ import annotations

import os
import subprocess
import sys

from emulator.server import free_port


def test_a_worker_that_loses_its_broker_for_good_exits_non_zero(database: str) -> None:
    env = {
        **os.environ,
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        "LLMQUEUE_BROKER_MAX_RETRIES": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "llmqueue.cli", "worker", "-Q", "dispatch", "-c", "2", "--loglevel", "INFO"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert "Unrecoverable error" in output, output[-2000:]
    assert done.returncode == 1, (done.returncode, output[-2000:])
