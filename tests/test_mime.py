"""Base64 framing (RFC 2045 §6.8) against the standard library, at and around the block boundaries."""

from __future__ import annotations

import base64
import itertools
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.smime import mime

BLOCK = 57 * 1024  # mime's block: 1,024 lines of 57 input bytes


def reference(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


@pytest.mark.parametrize("size", [0, 1, 2, 3, 56, 57, 58, 114, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 19])
def test_lines_match_the_standard_library(size: int) -> None:
    data = os.urandom(size)
    encoded = mime.b64_lines(data)
    assert encoded == reference(data)
    assert len(encoded) == mime.b64_length(size)
    assert all(len(line) <= 76 for line in encoded.split(b"\r\n"))


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=3 * BLOCK), st.lists(st.integers(min_value=0, max_value=3 * BLOCK), max_size=6))
def test_stream_is_independent_of_chunking(data: bytes, cuts: list[int]) -> None:
    edges = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    chunks = [memoryview(data)[a:b] for a, b in itertools.pairwise(edges)]
    assert b"".join(mime.b64_stream(chunks)) == reference(data)


def test_stream_takes_bytearrays_and_views() -> None:
    data = os.urandom(2 * BLOCK + 5)
    chunks: list[bytes | bytearray | memoryview] = [
        bytearray(data[:100]),
        memoryview(data)[100 : BLOCK + 7],
        data[BLOCK + 7 :],
    ]
    assert b"".join(mime.b64_stream(chunks)) == reference(data)
