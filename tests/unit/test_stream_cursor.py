"""How the SSE endpoint turns a job's Redis stream entries into events: deltas in order, and a
`reset` when a later provider call restarts text a client already has."""

from __future__ import annotations

from api.streaming import _Cursor


def rows(*entries: tuple[str, str]) -> list[tuple[str, dict[str, str]]]:
    return [(f"{i}-0", {"event": kind, "data": data}) for i, (kind, data) in enumerate(entries, 1)]


def test_deltas_become_delta_events_in_order() -> None:
    cursor = _Cursor()
    events = list(
        cursor.events(rows(("call", "a"), ("delta", "Hel"), ("delta", "lo"), ("done", "succeeded")))
    )
    assert events == [b'event: delta\ndata: {"text": "Hel"}\n\n', b'event: delta\ndata: {"text": "lo"}\n\n']
    assert cursor.saw_done and cursor.last_id == "4-0"


def test_a_new_call_after_streamed_text_resets_the_client() -> None:
    cursor = _Cursor()
    events = list(cursor.events(rows(("call", "a"), ("delta", "half"), ("call", "b"), ("delta", "whole"))))
    assert [e.split(b"\n")[0] for e in events] == [b"event: delta", b"event: reset", b"event: delta"]
    assert cursor.sent_text


def test_a_new_call_before_any_text_needs_no_reset() -> None:
    cursor = _Cursor()
    events = list(cursor.events(rows(("call", "a"), ("call", "b"), ("delta", "text"))))
    assert [e.split(b"\n")[0] for e in events] == [b"event: delta"]
