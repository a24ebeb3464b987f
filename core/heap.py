"""The process heap after start-up, out of the garbage collector's way.

What a process loads to serve (modules, the catalog, the tokenizer's tables, SDK clients,
the database pool) lives as long as the process, yet every full collection walks all of it:
with the tokenizer loaded, each one took 100 to 250 ms here, pausing the API's event loop
(`/healthz` answers took that long while a thousand streams opened) and a worker's calls.
Freezing the heap once the process is warm leaves collections only the objects made since.

Then a collection still walks what is alive at the time: a thousand open streams, a thousand
calls in flight. Most objects die young (a request, a call's parsing), freed by their
reference counts; a larger first generation lets them die before a collection sees them, so
fewer reach the older generations and the full collections that walk everything are rare.
"""

from __future__ import annotations

import gc

# Allocations between young collections (Python's default 700), and how many collections of
# each generation before the next one is collected (defaults 10 and 10).
THRESHOLDS = (20_000, 20, 50)


def freeze_startup_heap() -> None:
    """Collect once, then move every object alive now out of the collector's generations
    (`gc.freeze`): later collections walk only what was made after; and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
