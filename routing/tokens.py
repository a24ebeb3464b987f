"""Token counting before dispatch, offline.

OpenAI-family models are counted exactly with o200k_base (bpe-openai bundles its tables,
so nothing is downloaded: tiktoken's first-use download fails on air-gapped machines).
Other providers' tokenizers are not public; their counts are the o200k count scaled by a
per-provider factor calibrated on English prose, rounded up so that a context check errs
on the side of "does not fit".
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

from core.providers import provider_spec
from core.types import ChatRequest

PER_MESSAGE_OVERHEAD = 4
PER_IMAGE_TOKENS = 765  # a high-detail 512x512 tile and the base cost, OpenAI's accounting


@cache
def _encoding() -> Any:
    import bpe_openai

    return bpe_openai.get_encoding("o200k_base")


# bpe-openai refuses texts past a limit (~200k tokens): longer texts are encoded in pieces of
# this many characters, cut at whitespace (where o200k's pre-tokenizer cuts anyway), which
# changes a count by at most a token or two per cut.
PIECE_CHARS = 200_000


def encode(text: str) -> list[int]:
    """The o200k tokens of a text of any length."""
    tokens: list[int] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + PIECE_CHARS)
        if end < len(text):
            space = text.rfind(" ", start + PIECE_CHARS // 2, end)
            end = space if space > start else end
        tokens += _encoding().encode(text[start:end])
        start = end
    return tokens


def decode(tokens: list[int]) -> str:
    return str(_encoding().decode(tokens))


def cut_points(tokens: list[int]) -> list[tuple[int, int]]:
    """(token index, character offset) of every place the decoded text may be cut between two
    tokens without splitting a character (a token whose first byte continues a multi-byte
    character is no such place), from (0, 0); the end of the text is not included."""
    # One pass over the tokens' bytes, counting the characters each starts (bytes that are not
    # UTF-8 continuations); an ASCII token starts one a byte, counted in C. (The tokenizer's own
    # `decode_with_offsets` counts every byte in Python: most of the time of chunking a text.)
    points: list[tuple[int, int]] = []
    chars = 0
    for index, piece in enumerate(_encoding().decode_tokens_bytes(tokens)):
        if piece.isascii():
            if piece:
                points.append((index, chars))
            chars += len(piece)
            continue
        if piece[0] & 0xC0 != 0x80:
            points.append((index, chars))
        chars += sum(1 for byte in piece if byte & 0xC0 != 0x80)
    return points


def count_text(text: str) -> int:
    if len(text) <= PIECE_CHARS:  # the common case, without the list `encode` builds
        return len(_encoding().encode(text)) if text else 0
    return len(encode(text))


def count_request_tokens(request: ChatRequest, provider: str = "openai") -> int:
    """Input tokens this request will be billed for by `provider`, exact or a safe estimate."""
    return calibrate(raw_request_tokens(request), provider)


def calibrate(raw: int, provider: str) -> int:
    """A `raw_request_tokens` count as `provider` bills it (rounded up: never undercount)."""
    return math.ceil(raw * provider_spec(provider).token_calibration)


def raw_request_tokens(request: ChatRequest) -> int:
    """The request's o200k count with message, image and priming overheads, before calibration:
    counted once at submission and stored with the job."""
    total = 3  # every reply is primed with a few tokens
    for message in request.messages:
        total += PER_MESSAGE_OVERHEAD + count_text(message.text())
        if isinstance(message.content, list):
            total += PER_IMAGE_TOKENS * sum(1 for p in message.content if p.type == "image_url")
        for call in message.tool_calls or []:
            total += count_text(call.function.name) + count_text(call.function.arguments)
    for tool in request.tools or []:
        total += count_text(tool.model_dump_json())
    return total
