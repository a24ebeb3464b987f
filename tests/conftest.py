"""Fixtures shared by every test: the provider emulator over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from emulator.server import EmulatorThread


class EmulatorHandle:
    """A running emulator plus helpers to configure faults for one test."""

    def __init__(self, thread: EmulatorThread) -> None:
        self.thread = thread
        self.url = thread.url

    def configure(self, scopes: dict[str, Any], seed: int = 0) -> None:
        r = httpx.post(f"{self.url}/_emulator/config", json={"scopes": scopes, "seed": seed})
        r.raise_for_status()

    def reset(self) -> None:
        httpx.post(f"{self.url}/_emulator/reset").raise_for_status()

    def calls(self, **filters: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.url}/_emulator/calls", params=filters)
        r.raise_for_status()
        rows: list[dict[str, Any]] = r.json()
        return rows


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[EmulatorThread]:
    with EmulatorThread() as thread:
        yield thread


@pytest.fixture
def emulator(emulator_server: EmulatorThread) -> Iterator[EmulatorHandle]:
    handle = EmulatorHandle(emulator_server)
    handle.reset()
    yield handle
    handle.reset()
