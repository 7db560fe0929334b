"""Erasure-code throughput: the native Cauchy Reed-Solomon (appliance/protocol/_native.c)
against zfec, the code it replaced, on the same symbols in the same run.

    .venv/bin/python -m benchmarks.fec_bench          # needs `pip install zfec` for the baseline

Prints MB/s of data symbols encoded, and decoded with r data symbols lost (rebuilt from
r repair symbols), for the block shapes docs/protocol.md discusses.
"""

from __future__ import annotations

import os
import time

from appliance.protocol import _native, wire

SIZE = wire.symbol_size(1500)  # symbol bytes at MTU 1500
SHAPES = [(64, 4), (64, 8), (128, 16), (200, 24)]


def _rate(fn, nbytes: int, seconds: float = 0.5) -> float:
    runs, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        fn()
        runs += 1
    return runs * nbytes / elapsed / 1e6


def native(k: int, r: int) -> tuple[float, float]:
    data = os.urandom(k * SIZE)
    repair = _native.rs_encode(data, k, k + r)
    received = {i: data[i * SIZE:(i + 1) * SIZE] for i in range(r, k)}
    received.update({k + i: repair[i * SIZE:(i + 1) * SIZE] for i in range(r)})
    assert _native.rs_decode(received, k, k + r, SIZE) == data
    return (_rate(lambda: _native.rs_encode(data, k, k + r), len(data)),
            _rate(lambda: _native.rs_decode(received, k, k + r, SIZE), len(data)))


def zfec_rates(k: int, r: int) -> tuple[float, float] | None:
    try:
        import zfec
    except ImportError:
        return None
    symbols = [os.urandom(SIZE) for _ in range(k)]
    enc, dec = zfec.Encoder(k, k + r), zfec.Decoder(k, k + r)
    repair = enc.encode(symbols, list(range(k, k + r)))
    indexes = list(range(r, k)) + list(range(k, k + r))
    blocks = symbols[r:] + list(repair)
    assert list(dec.decode(blocks, indexes)) == symbols
    return (_rate(lambda: enc.encode(symbols, list(range(k, k + r))), k * SIZE),
            _rate(lambda: dec.decode(blocks, indexes), k * SIZE))


def main() -> None:
    print(f"{SIZE}-byte symbols; native kernel: {_native.SIMD}")
    print(f"{'k + r':>9} {'native enc':>11} {'native dec':>11} {'zfec enc':>9} {'zfec dec':>9}"
          "  (MB/s of data)")
    for k, r in SHAPES:
        ne, nd = native(k, r)
        z = zfec_rates(k, r)
        ze, zd = (f"{z[0]:9.0f}", f"{z[1]:9.0f}") if z else ("        -", "        -")
        print(f"{k:>4} + {r:<3} {ne:11.0f} {nd:11.0f} {ze} {zd}")


if __name__ == "__main__":
    main()
