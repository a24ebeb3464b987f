"""Embeddings shared by every wire format: the vectors, each model's dimensions, each provider's
limit on inputs per call, and the encodings the wire formats send vectors in.

A vector is feature hashing of the text's lower-cased words (weight 1) and of each word's
character trigrams (a lighter weight, so "embedding" and "embeddings" stay close), each feature
added with a hash-chosen sign into one of the model's dimensions, then L2-normalised. It is
deterministic across processes (blake2b, not Python's salted `hash`), and texts that share words
have a higher cosine similarity than texts that share none, which is what retrieval needs.
Query and document vectors live in the same space: `input_type` / `task_type` do not change them.

The per-call input limits are the providers' real ones (see `MAX_INPUTS`); the wire-format
modules answer a call past them with that provider's own 400.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
from functools import lru_cache

from emulator.core import count_tokens

DEFAULT_DIMENSIONS = 768  # an embedding model the table does not know

MODEL_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
    "embed-v4.0": 1536,
    "embed-english-v3.0": 1024,
    "embed-multilingual-v3.0": 1024,
    "embed-english-light-v3.0": 384,
    "embed-multilingual-light-v3.0": 384,
    "mistral-embed": 1024,
    "codestral-embed": 1536,
    "gemini-embedding-001": 3072,
    "text-embedding-004": 768,
    "amazon.titan-embed-text-v2:0": 1024,
    "amazon.titan-embed-text-v1": 1536,
    "cohere.embed-english-v3": 1024,
    "cohere.embed-multilingual-v3": 1024,
    "nomic-embed-text": 768,
}

# Inputs one call may carry, per wire format.
MAX_INPUTS = {
    "openai": 2048,  # OpenAI, Azure OpenAI and the compatible servers: "any array must be 2048 ... or less"
    "cohere": 96,  # "Maximum number of texts per call is 96"
    "mistral": 256,  # undocumented; the live API takes 256 and refuses 257 ("Too many inputs in request")
    "gemini": 100,  # batchEmbedContents: "at most 100 requests can be in one batch"
    "bedrock-titan": 1,  # Titan Text Embeddings take one inputText per InvokeModel
    "bedrock-cohere": 96,  # Cohere Embed on Bedrock: texts, at most 96
}
MISTRAL_MAX_TOKENS = 16384  # Mistral also caps the tokens of one call, summed over its inputs

TRIGRAM_WEIGHT = 0.3
_WORD = re.compile(r"\w+")


def base_model(model: str) -> str:
    """The model's name without the `models/` prefix Gemini adds or a Bedrock region prefix."""
    name = model.removeprefix("models/")
    for region in ("us.", "eu.", "apac.", "global."):
        name = name.removeprefix(region)
    return name


def dimensions_for(model: str) -> int:
    """The model's native dimensions; an unknown model (or an Azure deployment not named after
    its model) gets DEFAULT_DIMENSIONS."""
    return MODEL_DIMENSIONS.get(base_model(model), DEFAULT_DIMENSIONS)


@lru_cache(maxsize=65536)
def _feature_hash(feature: str) -> int:
    return int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")


def _features(text: str) -> list[tuple[str, float]]:
    words = _WORD.findall(text.lower())
    features = [("w:" + word, 1.0) for word in words]
    for word in words:
        padded = f"<{word}>"
        features += [("c:" + padded[i : i + 3], TRIGRAM_WEIGHT) for i in range(len(padded) - 2)]
    return features


def raw_vector(text: str, dimensions: int) -> list[float]:
    """The hashed, not yet normalised, vector of `text` (Titan's `normalize: false`)."""
    vector = [0.0] * dimensions
    for feature, weight in _features(text):
        h = _feature_hash(feature)
        # A hash-chosen sign makes colliding features cancel on average rather than pile up,
        # so unrelated texts stay near orthogonal.
        vector[h % dimensions] += weight if h >> 63 else -weight
    if not any(vector):
        # A text without a word (empty, or only punctuation) still gets a unit vector, its own.
        vector[_feature_hash("empty:" + text) % dimensions] = 1.0
    return vector


def embed(text: str, dimensions: int) -> list[float]:
    """The L2-normalised vector of `text` in `dimensions` dimensions, as float32 values (what the
    wire carries, so a vector sent as floats equals the same vector sent as base64)."""
    vector = raw_vector(text, dimensions)
    norm = math.sqrt(sum(v * v for v in vector))
    return as_float32([v / norm for v in vector])


def as_float32(vector: list[float]) -> list[float]:
    return list(struct.unpack(f"<{len(vector)}f", struct.pack(f"<{len(vector)}f", *vector)))


def float32_base64(vector: list[float]) -> str:
    """The vector as base64 of its little-endian float32s, as OpenAI (and Mistral) send
    `encoding_format: base64` and Cohere sends its `base64` embedding type."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def int8(vector: list[float]) -> list[int]:
    """Signed 8-bit values, scaled so the largest magnitude is 127."""
    top = max((abs(v) for v in vector), default=0.0) or 1.0
    return [round(v / top * 127) for v in vector]


def ubinary(vector: list[float]) -> list[int]:
    """One bit a dimension (set when positive), eight to a byte, most significant first."""
    out = []
    for start in range(0, len(vector), 8):
        byte = 0
        for v in vector[start : start + 8]:
            byte = (byte << 1) | (v > 0)
        out.append(byte << (8 - len(vector[start : start + 8])))
    return out


def encode(vector: list[float], kind: str) -> list[float] | list[int] | str:
    """The vector in one of Cohere's embedding types (float, int8, uint8, binary, ubinary, base64)."""
    if kind == "float":
        return vector
    if kind == "base64":
        return float32_base64(vector)
    if kind == "int8":
        return int8(vector)
    if kind == "uint8":
        return [v + 128 for v in int8(vector)]
    if kind == "ubinary":
        return ubinary(vector)
    if kind == "binary":
        return [v - 128 for v in ubinary(vector)]
    raise ValueError(f"unknown embedding type {kind!r}")


ENCODINGS = ("float", "int8", "uint8", "binary", "ubinary", "base64")


def input_tokens(texts: list[str]) -> int:
    """What embedding `texts` weighs: their tokens, as the chat routes count them."""
    return sum(count_tokens(text) for text in texts)
