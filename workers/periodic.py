"""Background loops of a worker process: "every N seconds, if no other process just did".

The sweeper, the check of open batches and the active probe each run in every dispatcher
process, on a daemon thread; with Redis, a lock taken for most of the interval lets only one
process run each round. A round that raises is logged and the loop goes on: a background
loop never kills its worker.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from core.redis import shared_redis
from core.settings import get_settings

log = logging.getLogger(__name__)


def take_round(name: str, interval_s: float) -> bool:
    """True when this process should run this round of `name` (no Redis: always)."""
    client = shared_redis()
    if client is None:
        return True
    key = f"{get_settings().redis_prefix}round:{name}"
    return bool(client.set(key, "1", nx=True, px=max(1, int(interval_s * 800))))


def run_round(name: str, interval_s: float, work: Callable[[], object]) -> None:
    """One round of a loop: skipped when another process holds it; errors are logged."""
    try:
        if take_round(name, interval_s):
            work()
    except Exception:  # the next round tries again; never kill the worker
        log.exception("%s round failed", name)


def every(name: str, interval_s: float, work: Callable[[], object]) -> threading.Thread:
    """Run `work` every `interval_s` seconds on a daemon thread, one process a round."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            run_round(name, interval_s, work)

    thread = threading.Thread(target=loop, name=f"llmqueue-{name}", daemon=True)
    thread.start()
    return thread
