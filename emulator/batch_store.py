"""Where the emulator keeps its batches and uploaded files: in memory, one store per emulator.

`store_for(emu)` finds (or makes) the store of an `Emulator`; its `clock` (monotonic, for
timelines) and `wall` (for timestamps) can be replaced in tests. `record` adds a batch
operation to the emulator's call log with `scope` "batch" and a `kind` (`batch_create`,
`batch_poll`, `batch_list`, `batch_cancel`, `batch_results`, `file_upload`,
`file_download`, ...), so tests can count polls and creations.
"""

from __future__ import annotations

import math
import secrets
import string
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from emulator.batch_engine import Batch, BatchLine, LineRunner
from emulator.core import Emulator


@dataclass
class StoredFile:
    id: str
    provider: str
    filename: str
    purpose: str
    data: bytes
    created_at: int


class BatchStore:
    """Every batch and file of one emulator process; `clock` and `wall` may be replaced in tests."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time
    ) -> None:
        self.clock = clock
        self.wall = wall
        self.batches: dict[str, Batch] = {}
        self.files: dict[str, StoredFile] = {}

    def create(
        self,
        emu: Emulator,
        provider: str,
        batch_id: str,
        lines: list[BatchLine],
        run_line: LineRunner,
        window_s: float | None,
        **extra: Any,
    ) -> Batch:
        """A new batch under the settings in force; `window_s` is the provider's own expiry window."""
        settings = emu.config.batch.for_provider(provider)
        expire_s = settings.expire_after_s if settings.expire_after_s is not None else window_s
        now = self.clock()
        batch = Batch(
            id=batch_id,
            provider=provider,
            settings=settings,
            lines=lines,
            run_line=run_line,
            created=now,
            created_wall=self.wall(),
            deadline=math.inf if expire_s is None else now + expire_s,
            seed=emu.config.seed,
            **extra,
        )
        self.batches[batch_id] = batch
        return batch

    def get(self, batch_id: str, provider: str | None = None) -> Batch | None:
        batch = self.batches.get(batch_id)
        if batch is None or (provider is not None and batch.provider != provider):
            return None
        batch.advance(self.clock())
        return batch

    def listed(self, provider: str | None = None) -> list[Batch]:
        """Batches (of `provider`, if given), newest first, each brought up to date."""
        now = self.clock()
        found = [b for b in self.batches.values() if provider is None or b.provider == provider]
        for batch in found:
            batch.advance(now)
        return sorted(found, key=lambda b: b.created, reverse=True)

    def add_file(
        self, provider: str, filename: str, purpose: str, data: bytes, file_id: str | None = None
    ) -> StoredFile:
        """A new file; its id is OpenAI's style ("file-...") unless `file_id` is given."""
        stored = StoredFile(file_id or new_id("file-"), provider, filename, purpose, data, int(self.wall()))
        self.files[stored.id] = stored
        return stored

    def file(self, file_id: str, provider: str) -> StoredFile | None:
        stored = self.files.get(file_id)
        return stored if stored is not None and stored.provider == provider else None


_STORES: weakref.WeakKeyDictionary[Emulator, BatchStore] = weakref.WeakKeyDictionary()


def store_for(emu: Emulator) -> BatchStore:
    """The batch store of `emu`'s process, made on first use."""
    if emu not in _STORES:
        _STORES[emu] = BatchStore()
    return _STORES[emu]


def rfc3339(t: float | None) -> str | None:
    """A wall time as the RFC 3339 UTC string Anthropic's and Google's APIs send."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def new_id(prefix: str, length: int = 24) -> str:
    alphabet = string.ascii_letters + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(length))


def record(
    emu: Emulator, provider: str, kind: str, model: str = "", batch_id: str | None = None, status: int = 200
) -> None:
    """A batch operation in the call log, apart from online calls by its `scope` "batch"."""
    emu.calls.append(
        {
            "t": time.time(),
            "provider": provider,
            "model": model,
            "scope": "batch",
            "status": status,
            "kind": kind,
            "batch_id": batch_id,
        }
    )
