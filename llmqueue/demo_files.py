"""Where the demo's inputs come from and where its files go.

The sample documents ship inside the package (`llmqueue/examples/`, package data), so
`llmqueue demo` works from any folder once installed. The demo's own files (the embedded
SQLite job store and broker) go in a folder made for the run: under the user's
LLMQUEUE_HOME when that is set (kept, so the run can be looked at afterwards), else in the
system's temporary directory, removed when the demo ends, however it ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path
from types import FrameType


def sample_documents() -> Path:
    """The folder of sample documents shipped with the package."""
    return Path(str(files("llmqueue") / "examples"))


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    sys.exit(128 + signum)  # unwinds through `finally`, so the temporary folder goes too


@contextmanager
def demo_home() -> Iterator[Path]:
    """A fresh LLMQUEUE_HOME for this run, set in the environment (the worker it starts
    inherits it); restored afterwards, and removed unless it lives under the user's own."""
    previous = os.environ.get("LLMQUEUE_HOME")
    if previous:
        parent = Path(previous).expanduser()
        parent.mkdir(parents=True, exist_ok=True)
        home, keep = Path(tempfile.mkdtemp(prefix="demo-", dir=parent)), True
    else:
        home, keep = Path(tempfile.mkdtemp(prefix="llmqueue-demo-")), False
    os.environ["LLMQUEUE_HOME"] = str(home)
    handler = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield home
    finally:
        signal.signal(signal.SIGTERM, handler)
        if previous is None:
            os.environ.pop("LLMQUEUE_HOME", None)
        else:
            os.environ["LLMQUEUE_HOME"] = previous
        if not keep:
            shutil.rmtree(home, ignore_errors=True)


def demo_catalog() -> Path:
    """The demo's catalog, shipped with the package (`demo_catalog.toml`)."""
    return Path(str(files("llmqueue") / "demo_catalog.toml"))
