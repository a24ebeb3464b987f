"""The batch timeline on a fake clock: the exact moments each status and line is reached.

These pin down what the HTTP tests can only sample by polling: when lines complete, when
a batch finalizes, expires or is cancelled, and what the shortcuts of the control surface do.
"""

from __future__ import annotations

from typing import Any

import pytest

from emulator.batch_config import BatchConfig, BatchSettings
from emulator.batch_engine import Batch, BatchLine, LineResult, line_fails
from emulator.batch_store import BatchStore, record, store_for
from emulator.core import Emulator, EmulatorConfig

WALL_START = 1_000_000.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def answered(line: BatchLine, fail: bool) -> LineResult:
    return LineResult(500 if fail else 200, {"custom_id": line.custom_id}, f"req-{line.custom_id}", 3, 5)


def make_batch(
    lines: int = 4, window_s: float | None = None, invalid: list[Any] | None = None, **settings: Any
) -> tuple[Batch, FakeClock]:
    clock = FakeClock()
    store = BatchStore(clock=clock, wall=lambda: WALL_START + clock.now)
    emu = Emulator(EmulatorConfig(batch=BatchConfig(**settings)))
    batch = store.create(
        emu,
        "openai",
        "batch_test",
        [BatchLine(f"c{i}", "m", {}) for i in range(lines)],
        answered,
        window_s,
        invalid=invalid or [],
    )
    return batch, clock


def at(batch: Batch, clock: FakeClock, t: float) -> Batch:
    clock.now = t
    batch.advance(t)
    return batch


def test_lines_complete_evenly_between_validating_and_finalizing() -> None:
    batch, clock = make_batch(completion_s=10, validating_s=1, finalizing_s=1)
    # 4 lines over the 8 s between validation (1 s) and finalizing (9 s): due at 3, 5, 7, 9 s.
    assert [batch.due(i) for i in range(4)] == [3, 5, 7, 9]
    assert at(batch, clock, 0.5).status == "validating"
    assert at(batch, clock, 1).status == "in_progress"
    assert at(batch, clock, 2.9).done == 0
    assert at(batch, clock, 3).done == 1
    assert at(batch, clock, 8).done == 3 and batch.status == "in_progress"
    assert at(batch, clock, 9.5).status == "finalizing" and batch.done == 4
    assert at(batch, clock, 10).status == "completed"
    assert batch.events == {
        "in_progress": WALL_START + 1,
        "finalizing": WALL_START + 9,
        "completed": WALL_START + 10,
    }
    assert batch.usage() == (12, 20)


def test_a_late_poll_sees_every_step_with_its_own_time() -> None:
    batch, clock = make_batch(completion_s=4, validating_s=1, finalizing_s=1)
    assert at(batch, clock, 100).status == "completed"
    assert batch.events["finalizing"] == WALL_START + 3
    assert batch.events["completed"] == WALL_START + 4


def test_an_invalid_batch_fails_when_validation_ends_without_running_a_line() -> None:
    batch, clock = make_batch(completion_s=2, validating_s=0.5, invalid=[{"code": "empty_file"}])
    assert at(batch, clock, 0.4).status == "validating"
    assert at(batch, clock, 0.5).status == "failed"
    assert batch.done == 0 and batch.events == {"failed": WALL_START + 0.5}


def test_the_deadline_expires_the_lines_not_done() -> None:
    batch, clock = make_batch(completion_s=4, expire_after_s=2.5)
    # Lines due at 1, 2, 3, 4 s: two are done when the batch expires at 2.5 s.
    assert at(batch, clock, 2.4).status == "in_progress"
    assert at(batch, clock, 60).status == "expired"
    assert batch.done == 2 and batch.events["expired"] == WALL_START + 2.5


def test_a_batch_done_before_its_deadline_completes() -> None:
    batch, clock = make_batch(completion_s=4, finalizing_s=2, expire_after_s=3)
    # Every line is done at 2 s; the deadline (3 s) falls while finalizing and does not apply.
    assert at(batch, clock, 5).status == "completed"


def test_the_provider_window_applies_unless_configured() -> None:
    batch, _ = make_batch(completion_s=1, window_s=86400)
    assert batch.deadline == 86400
    batch, _ = make_batch(completion_s=1, window_s=86400, expire_after_s=5)
    assert batch.deadline == 5
    batch, _ = make_batch(completion_s=1, window_s=None)
    assert batch.deadline == float("inf")


def test_cancel_stops_processing_and_keeps_the_lines_done() -> None:
    batch, clock = make_batch(completion_s=4, cancelling_s=1)
    at(batch, clock, 2.2)
    assert batch.cancel(2.2)
    assert batch.status == "cancelling" and batch.done == 2
    assert at(batch, clock, 3.1).status == "cancelling" and batch.done == 2
    assert at(batch, clock, 3.2).status == "cancelled" and batch.done == 2
    assert batch.events["cancelling"] == WALL_START + 2.2
    assert batch.events["cancelled"] == pytest.approx(WALL_START + 3.2)


def test_cancel_during_validation_runs_no_line() -> None:
    batch, clock = make_batch(completion_s=4, validating_s=1)
    assert batch.cancel(0.5)
    assert at(batch, clock, 10).status == "cancelled" and batch.done == 0


def test_an_ended_batch_cannot_be_cancelled() -> None:
    batch, clock = make_batch(completion_s=1)
    at(batch, clock, 2)
    assert not batch.cancel(2)
    assert batch.status == "completed"


def test_finish_now_answers_every_line_at_once() -> None:
    batch, clock = make_batch(completion_s=3600, validating_s=10)
    clock.now = 1
    batch.finish_now(1)
    assert batch.status == "completed" and batch.done == 4
    assert batch.events["in_progress"] == batch.events["completed"] == WALL_START + 1


def test_expire_now_ends_with_the_lines_done_so_far() -> None:
    batch, clock = make_batch(completion_s=4)
    clock.now = 2
    batch.expire_now(2)
    assert batch.status == "expired" and batch.done == 2


def test_line_failures_follow_the_seed_and_the_rate() -> None:
    ids = [f"line-{i}" for i in range(2000)]
    failed = [i for i in ids if line_fails(3, i, 0.25)]
    assert failed == [i for i in ids if line_fails(3, i, 0.25)]
    assert 400 < len(failed) < 600
    assert failed != [i for i in ids if line_fails(4, i, 0.25)]
    assert not any(line_fails(3, i, 0) for i in ids)
    assert all(line_fails(3, i, 1) for i in ids)


def test_failed_lines_are_answered_with_the_failure_flag() -> None:
    batch, clock = make_batch(lines=50, completion_s=1, line_failure_rate=0.5)
    at(batch, clock, 1)
    failing = {line.custom_id for line in batch.lines if line_fails(0, line.custom_id, 0.5)}
    errored = {line.custom_id for line in batch.lines if line.result and not line.result.ok}
    assert errored == failing and 0 < batch.errored < 50


def test_provider_overrides_replace_only_the_fields_they_set() -> None:
    config = BatchConfig.model_validate(
        {"completion_s": 7, "line_failure_rate": 0.1, "providers": {"azure": {"completion_s": 1}}}
    )
    assert config.for_provider("azure") == BatchSettings(completion_s=1, line_failure_rate=0.1)
    assert config.for_provider("openai") == BatchSettings(completion_s=7, line_failure_rate=0.1)


def test_one_store_per_emulator_and_operations_in_the_call_log() -> None:
    emu, other = Emulator(), Emulator()
    assert store_for(emu) is store_for(emu)
    assert store_for(emu) is not store_for(other)
    record(emu, "openai", "batch_poll", "m", "batch_x")
    assert emu.calls[-1] | {"t": 0} == {
        "t": 0,
        "provider": "openai",
        "model": "m",
        "scope": "batch",
        "status": 200,
        "kind": "batch_poll",
        "batch_id": "batch_x",
    }
