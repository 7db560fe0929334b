"""Systematic erasure code over one block: k data symbols + r repair symbols.

Reed-Solomon over GF(2^8) with a Cauchy repair matrix (the matrix is in
docs/protocol.md; the code is in _native.c, SIMD where the CPU has it). It is MDS:
any k of the n symbols rebuild the block, so "repairable" is exactly "at least k
symbols arrived" and loss accounting never has to guess. The sender encodes inside
Sealer.seal_group (one call per interleave group); encode() here is the same code for
tests and tools.
"""

from __future__ import annotations

import math

from . import _native

MAX_SYMBOLS = _native.MAX_SYMBOLS  # k + r; the symbol index is one byte on the wire


def repair_count(k: int, redundancy: float, min_repair: int = 0) -> int:
    """Repair symbols for a block of k data symbols.

    Small blocks (a latency flush of a quiet channel) get at least min_repair: with one
    repair symbol a 3-symbol block dies of any two losses, and on a quiet link the
    extra datagrams cost nothing that was needed for anything else.
    """
    if redundancy <= 0:
        return 0
    return max(min_repair, 1, math.ceil(k * redundancy - 1e-9))


def encode(data: bytes, k: int, n: int) -> bytes:
    """The n - k repair symbols of k equal-sized data symbols laid end to end in data."""
    return _native.rs_encode(data, k, n)


def decode(received: dict[int, bytes], k: int, n: int, size: int) -> bytes:
    """The k data symbols, end to end, from any k received symbols (index -> bytes).

    Raises ValueError if fewer than k arrived."""
    return _native.rs_decode(received, k, n, size)
