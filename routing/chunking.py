"""Token-aware chunking of documents for embedding: pieces of at most so many tokens, overlapping.

`chunk_text` encodes a text once (o200k, `routing.tokens`), cuts it between tokens at most
`chunk_tokens` apart, and starts each chunk `overlap_tokens` before the previous one ended, so a
sentence cut in two is whole in one of the chunks. Cuts fall only where no character is split,
so each chunk is exactly `text[start_char:end_char]`, and consecutive chunks leave no gap. A
chunk's `tokens` is its own text counted again (a piece can tokenize a little differently from
the same tokens inside the whole), and a chunk whose count comes out over `chunk_tokens` is cut
shorter, so none is longer than asked, unless the text offers no cut at all within
`chunk_tokens` tokens (a run of characters whose tokens straddle them: only for sizes of a few
tokens), where the shortest piece possible is taken.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from routing.tokens import count_text, cut_points, encode


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a text: `text == source[start_char:end_char]`, `tokens` its o200k count."""

    text: str
    start_char: int
    end_char: int
    tokens: int


def chunk_text(text: str, chunk_tokens: int, overlap_tokens: int = 0) -> list[Chunk]:
    """`text` in chunks of at most `chunk_tokens` tokens, each overlapping the previous one by
    about `overlap_tokens`; [] for an empty text, the text whole when it fits."""
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be at least 1, not {chunk_tokens}")
    if not 0 <= overlap_tokens < chunk_tokens:
        raise ValueError(
            f"overlap_tokens must be at least 0 and less than chunk_tokens ({chunk_tokens}), "
            f"not {overlap_tokens}"
        )
    if not text:
        return []
    tokens = encode(text)
    if len(tokens) <= chunk_tokens:
        return [Chunk(text, 0, len(text), len(tokens))]
    points = [*cut_points(tokens), (len(tokens), len(text))]
    token_at = [index for index, _ in points]
    char_at = [offset for _, offset in points]
    chunks: list[Chunk] = []
    start = 0  # into points
    while True:
        end = max(bisect_right(token_at, token_at[start] + chunk_tokens) - 1, start + 1)
        while True:
            piece = text[char_at[start] : char_at[end]]
            count = count_text(piece)
            if count <= chunk_tokens or end == start + 1:
                break
            end -= 1
        chunks.append(Chunk(piece, char_at[start], char_at[end], count))
        if end == len(points) - 1:
            return chunks
        # The next chunk starts at the last cut at least `overlap_tokens` before this one's end,
        # and always after this one's start.
        start = max(bisect_right(token_at, token_at[end] - overlap_tokens) - 1, start + 1)
