"""The C line cutter (worker/smime/_crlf.c) against a Python reference: every width, length and buffer type."""

from __future__ import annotations

import concurrent.futures
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.smime._crlf import crlf_lines

GIL_FREE_BYTES = 256 * 1024  # _crlf.c: from this size on the copy runs without the GIL


def reference(text: bytes, width: int) -> bytes:
    return b"".join(text[i : i + width] + b"\r\n" for i in range(0, len(text), width))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.integers(min_value=1, max_value=200))
def test_matches_the_reference(text: bytes, width: int) -> None:
    assert crlf_lines(text, width) == reference(text, width)


@pytest.mark.parametrize(
    "size", [1, 75, 76, 77, 151, 152, 153, GIL_FREE_BYTES - 1, GIL_FREE_BYTES, 3 * GIL_FREE_BYTES + 5]
)
def test_line_boundaries_and_the_gil_free_size(size: int) -> None:
    text = os.urandom(size)
    out = crlf_lines(text, 76)
    assert out == reference(text, 76)
    assert len(out) == size + 2 * -(-size // 76)


def test_empty_text_is_empty() -> None:
    assert crlf_lines(b"", 76) == b""


def test_takes_any_contiguous_buffer() -> None:
    text = os.urandom(500)
    expected = reference(text, 76)
    assert crlf_lines(bytearray(text), 76) == expected
    assert crlf_lines(memoryview(text), 76) == expected
    assert crlf_lines(memoryview(b"xx" + text)[2:], 76) == expected


def test_refuses_a_strided_view_a_bad_width_and_wrong_arguments() -> None:
    with pytest.raises(BufferError):
        crlf_lines(memoryview(b"abcdef")[::2], 76)
    with pytest.raises(ValueError, match="at least 1"):
        crlf_lines(b"abc", 0)
    with pytest.raises(TypeError):
        crlf_lines("text", 76)  # type: ignore[arg-type]  # str is not a buffer: the refusal is the test
    with pytest.raises(TypeError):
        crlf_lines(b"abc")  # type: ignore[call-arg]  # one argument short: the refusal is the test
    with pytest.raises(OverflowError):
        crlf_lines(b"abc", 2**70)


def test_threads_cut_large_buffers_side_by_side() -> None:
    # The buffer stays exported during the GIL-free copy: threads cutting large shared buffers side by
    # side each get their own exact result.
    texts = [os.urandom(GIL_FREE_BYTES * 4 + i) for i in range(8)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda t: crlf_lines(bytearray(t), 76), texts))
    assert results == [reference(t, 76) for t in texts]
