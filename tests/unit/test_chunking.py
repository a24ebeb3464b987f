"""Token-aware chunking (routing/chunking.py): no chunk over the size, offsets that map back to
the text, the asked overlap, no gap, and no character split, on prose and on multi-byte text."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest

from routing.chunking import Chunk, chunk_text
from routing.tokens import count_text

PROSE = (Path(__file__).parents[2] / "README.md").read_text()[:8000]
MIXED = (
    "Prix: 12 € — café, naïve façade. 日本語のテキストです。 "
    "Emoji 🧑‍🔬👩🏽‍🚀 and "
    "\uff46\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48. "
) * 40


def check(text: str, chunks: list[Chunk], size: int) -> None:
    """The invariants every chunking must keep."""
    assert chunks[0].start_char == 0 and chunks[-1].end_char == len(text)
    for chunk in chunks:
        assert text[chunk.start_char : chunk.end_char] == chunk.text
        assert chunk.tokens == count_text(chunk.text) <= size
    for before, after in pairwise(chunks):
        assert before.start_char < after.start_char <= before.end_char  # forward, and no gap


@pytest.mark.parametrize("text", [PROSE, MIXED], ids=["prose", "multibyte"])
@pytest.mark.parametrize(("size", "overlap"), [(64, 0), (64, 16), (200, 50), (9, 3)])
def test_chunks_keep_their_invariants(text: str, size: int, overlap: int) -> None:
    chunks = chunk_text(text, size, overlap)
    check(text, chunks, size)
    assert len(chunks) >= count_text(text) / size  # no chunk can hold more
    if overlap == 0:
        assert "".join(c.text for c in chunks) == text
        assert all(a.end_char == b.start_char for a, b in pairwise(chunks))


def test_chunks_overlap_by_the_asked_tokens() -> None:
    chunks = chunk_text(PROSE, 100, 20)
    for before, after in pairwise(chunks):
        shared = PROSE[after.start_char : before.end_char]
        assert 20 <= count_text(shared) <= 30  # at least the overlap, cut where a token starts
    # most chunks are full: the windows are sized by tokens, not characters
    assert sum(c.tokens >= 95 for c in chunks[:-1]) >= 0.8 * (len(chunks) - 1)


def test_short_and_empty_texts() -> None:
    assert chunk_text("", 10) == []
    assert chunk_text("Hello world", 10, 5) == [Chunk("Hello world", 0, 11, count_text("Hello world"))]


def test_no_character_is_split() -> None:
    # each emoji takes several tokens, some of them a fragment of its bytes: cuts fall between
    # characters, so every chunk is whole characters of the text (and none is empty)
    text = "🧑‍🔬" * 30
    chunks = chunk_text(text, 5)
    check(text, chunks, 5)
    assert len(chunks) > 10 and all(c.text and c.end_char > c.start_char for c in chunks)


@pytest.mark.parametrize(
    ("size", "overlap", "words"),
    [
        (0, 0, "chunk_tokens must be at least 1"),
        (10, 10, "less than chunk_tokens (10)"),
        (10, -1, "overlap_tokens"),
    ],
)
def test_bad_sizes_are_refused(size: int, overlap: int, words: str) -> None:
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        chunk_text(PROSE, size, overlap)
