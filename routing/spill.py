"""Capacity-aware choice among ranked candidates: when the best is saturated, the next.

A routing decision ranks the deployments that may serve a job; which of them takes it now
also depends on capacity. A deployment is saturated when a call sent to it now would wait
more than `spill_s` for a free slot under its rate limits. A job whose strategy may use
several deployments spills from a saturated first choice to the next candidate that is not
saturated (or, when all are, to the one that frees up first), and says so; a job pinned to a
model (`manual`) waits for that model's capacity instead. Pure: the waits are passed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from routing.types import Candidate

PINNED_STRATEGIES = frozenset({"manual"})


@dataclass(frozen=True)
class Choice:
    index: int  # into the ranked candidates
    note: str | None  # why not the first, for the routing explanation


def choose(
    candidates: Sequence[Candidate], waits: Mapping[str, float], *, strategy: str, spill_s: float
) -> Choice:
    """Which candidate takes the job now, given each deployment's expected wait in seconds."""
    if not candidates:
        raise ValueError("no candidates to choose from")
    first = candidates[0].deployment.name
    first_wait = waits.get(first, 0.0)
    if first_wait <= spill_s or strategy in PINNED_STRATEGIES or len(candidates) == 1:
        return Choice(0, None)
    for index, candidate in enumerate(candidates[1:], 1):
        wait = waits.get(candidate.deployment.name, 0.0)
        if wait <= spill_s:
            return Choice(index, _note(first, first_wait, candidate.deployment.name, wait, spill_s))
    index = min(range(len(candidates)), key=lambda i: waits.get(candidates[i].deployment.name, 0.0))
    chosen = candidates[index].deployment.name
    if index == 0:
        note = f"capacity: every candidate is saturated; {first} frees up first ({first_wait:.1f} s)"
        return Choice(0, note)
    note = _note(first, first_wait, chosen, waits.get(chosen, 0.0), spill_s)
    return Choice(index, note + " (all saturated)")


def _note(first: str, first_wait: float, chosen: str, wait: float, spill_s: float) -> str:
    return (
        f"capacity: first choice {first} is saturated (about {first_wait:.1f} s to a free slot, "
        f"more than {spill_s:g} s); {chosen} takes it (about {wait:.1f} s)"
    )
