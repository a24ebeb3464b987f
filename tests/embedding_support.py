"""Helpers the embedding tests share: comparing vectors with the emulator's, decoding base64."""

from __future__ import annotations

import base64
import math
import struct


def close(a: list[float], b: list[float]) -> bool:
    """Equal as float32 values are (the store keeps float32; the emulator's are float32 too)."""
    if len(a) != len(b):
        return False
    return all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-7) for x, y in zip(a, b, strict=True))


def floats(blob: str) -> list[float]:
    """A base64 vector (little-endian float32s, OpenAI's encoding) as floats."""
    raw = base64.b64decode(blob)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))
