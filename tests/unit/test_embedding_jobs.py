"""The pure parts of embedding jobs: the streaming packer plans what planning everything at once
plans, shares of a call add up to the call exactly, vectors round-trip as float32 bytes, and
the .npy header is one NumPy reads."""

from __future__ import annotations

import ast
import random
import struct
from decimal import Decimal

import pytest

from api.embedding_intake import Call, CallPacker, item
from jobstore.embedding_jobs import CallVectors, pack, unpack
from jobstore.embedding_results import QUANTUM, apportion, input_shares, npy_header
from jobstore.models import Job
from routing.catalog import ModelSpec
from routing.embeddings import embedding_inputs, plan_calls

SMALL = ModelSpec.model_validate(
    {
        "id": "tiny-embed",
        "provider": "openai",
        "kind": "embedding",
        "dimensions": 8,
        "max_input_tokens": 60,
        "max_inputs_per_call": 7,
        "max_tokens_per_call": 150,
        "input_price": "0.13",
        "quality": 50,
    }
)


def test_the_streaming_packer_makes_the_calls_planning_all_at_once_makes() -> None:
    rng = random.Random(3)
    texts = [" ".join("word" for _ in range(rng.randint(1, 50))) for _ in range(500)]
    pairs = [(f"t{i}", text) for i, text in enumerate(texts)]
    whole = plan_calls(embedding_inputs(pairs), SMALL)
    streamed: list[Call] = []
    packer = CallPacker(SMALL, streamed.append)
    for start in range(0, len(pairs), 13):  # fed in uneven slices, as documents arrive
        packer.add(item(i, text) for i, text in pairs[start : start + 13])
    packer.close()
    assert [c.planned.ids for c in streamed] == [c.ids for c in whole]
    assert [[i.input.id for i in c.items] for c in streamed] == [c.ids for c in whole]
    assert packer.calls == len(whole) and packer.inputs == 500
    assert all(len(c.ids) <= 7 and c.tokens <= 150 for c in whole)


def test_shares_add_up_to_the_whole_in_proportion() -> None:
    assert apportion(10, [1, 1, 1]) == [4, 3, 3]
    assert apportion(100, [50, 30, 20]) == [50, 30, 20]
    assert apportion(7, [0, 0]) == [4, 3]  # no weights: equal shares
    assert apportion(0, [5, 6]) == [0, 0]
    rng = random.Random(5)
    for _ in range(200):
        weights = [rng.randint(0, 400) for _ in range(rng.randint(1, 40))]
        total = rng.randint(0, 100_000)
        shares = apportion(total, weights)
        assert sum(shares) == total
        if sum(weights):
            assert all(abs(s - total * w / sum(weights)) < 1 for s, w in zip(shares, weights, strict=True))


def test_a_calls_cost_is_shared_to_the_last_digit() -> None:
    job = Job(
        request={"inputs": [{"id": "a", "tokens": 3}, {"id": "b", "tokens": 5}, {"id": "c", "tokens": 11}]},
        input_tokens=23,
        cost_usd=Decimal("0.00000299"),  # 23 tokens at 0.13 per million
    )
    shares = input_shares(job)
    assert sum(t for t, _ in shares) == 23
    assert sum((c for _, c in shares), Decimal(0)) == Decimal("0.00000299")
    assert all(c % QUANTUM == 0 for _, c in shares)


def test_vectors_round_trip_as_little_endian_float32() -> None:
    vector = [0.1, -2.5, 3.25, 1e-8]
    blob = pack(vector)
    assert blob == struct.pack("<4f", *vector)
    assert unpack(blob) == list(struct.unpack("<4f", blob))
    packed = CallVectors.of(["x", "y"], [vector, vector])
    assert packed.dims == 4 and packed.blobs == (blob, blob)
    with pytest.raises(ValueError, match="2 vectors for 3 inputs"):
        CallVectors.of(["x", "y", "z"], [vector, vector])
    with pytest.raises(ValueError, match="lengths differ"):
        CallVectors.of(["x", "y"], [vector, vector[:2]])


def test_the_npy_header_is_what_numpy_writes() -> None:
    header = npy_header(10_000, 256)
    assert header[:8] == b"\x93NUMPY\x01\x00"
    length = struct.unpack("<H", header[8:10])[0]
    assert len(header) == 10 + length and len(header) % 64 == 0 and header.endswith(b"\n")
    described = ast.literal_eval(header[10:].decode("latin1").strip())
    assert described == {"descr": "<f4", "fortran_order": False, "shape": (10_000, 256)}


def test_cut_points_are_the_tokenizers_offsets_at_character_starts() -> None:
    from routing.tokens import _encoding, cut_points, encode

    rng = random.Random(11)
    alphabet = "abc de fgh ij. é ü ß 日本語 🙂 — «» \n"
    for _ in range(50):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 300)))
        tokens = encode(text)
        _, offsets = _encoding().decode_with_offsets(tokens)
        pieces = _encoding().decode_tokens_bytes(tokens)
        expected = [(i, offsets[i]) for i, piece in enumerate(pieces) if piece and piece[0] & 0xC0 != 0x80]
        assert cut_points(tokens) == expected
