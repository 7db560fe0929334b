"""Systematic erasure code over one block: k data symbols + r repair symbols.

zfec (Reed-Solomon over GF(2^8), Rizzo's fec) is MDS: any k of the n symbols
rebuild the block, so "repairable" is exactly "at least k symbols arrived" and
loss accounting never has to guess. It was chosen over raptorq by measurement
(docs/performance.md) and because Debian packages it (python3-zfec) and its C
source builds on any arm64 box, where raptorq needs a Rust toolchain.
"""

from __future__ import annotations

import math
from functools import lru_cache

import zfec

MAX_SYMBOLS = 255  # k + r; the symbol index is one byte on the wire


def repair_count(k: int, redundancy: float, min_repair: int = 0) -> int:
    """Repair symbols for a block of k data symbols.

    Small blocks (a latency flush of a quiet channel) get at least min_repair: with one
    repair symbol a 3-symbol block dies of any two losses, and on a quiet link the
    extra datagrams cost nothing that was needed for anything else.
    """
    if redundancy <= 0:
        return 0
    return max(min_repair, 1, math.ceil(k * redundancy - 1e-9))


@lru_cache(maxsize=512)
def _encoder(k: int, n: int) -> zfec.Encoder:
    return zfec.Encoder(k, n)


@lru_cache(maxsize=512)
def _decoder(k: int, n: int) -> zfec.Decoder:
    return zfec.Decoder(k, n)


def encode(symbols: list, n: int) -> list[bytes]:
    """Return the n - k repair symbols for the k equal-sized data symbols."""
    k = len(symbols)
    if n == k:
        return []
    return list(_encoder(k, n).encode(symbols, list(range(k, n))))


def decode(received: dict[int, bytes], k: int, n: int) -> list[bytes]:
    """Rebuild the k data symbols from any k received symbols (index -> bytes)."""
    if all(i in received for i in range(k)):
        return [received[i] for i in range(k)]
    if len(received) < k:
        raise ValueError(f"{len(received)} symbols cannot rebuild a block of {k}")
    indexes = sorted(received)[:k]
    return list(_decoder(k, n).decode([received[i] for i in indexes], indexes))
