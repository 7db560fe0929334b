"""The native hot path against independent implementations: a pure-Python GF(2^8)
Reed-Solomon written from the matrix in docs/protocol.md, and `cryptography`'s AES-GCM."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.protocol import _native, fec, selfcheck, wire

# -- a reference GF(2^8), polynomial x^8 + x^4 + x^3 + x^2 + 1 ------------------------
EXP = [0] * 512
LOG = [0] * 256
_x = 1
for _i in range(255):
    EXP[_i], LOG[_x] = _x, _i
    _x <<= 1
    if _x & 0x100:
        _x ^= 0x11D
for _i in range(255, 512):
    EXP[_i] = EXP[_i - 255]


def mul(a: int, b: int) -> int:
    return 0 if a == 0 or b == 0 else EXP[LOG[a] + LOG[b]]


def inv(a: int) -> int:
    return EXP[255 - LOG[a]]


def repair_matrix(k: int, r: int) -> list[list[int]]:
    """C[i][j] = (k ^ j) / ((k + i) ^ j), as docs/protocol.md gives it."""
    return [[mul(k ^ j, inv((k + i) ^ j)) for j in range(k)] for i in range(r)]


def reference_encode(data: bytes, k: int, n: int) -> bytes:
    s = len(data) // k
    out = bytearray((n - k) * s)
    for i, row in enumerate(repair_matrix(k, n - k)):
        for j, c in enumerate(row):
            table = [mul(c, x) for x in range(256)]
            for t in range(s):
                out[i * s + t] ^= table[data[j * s + t]]
    return bytes(out)


def test_gf_mul_matches_the_reference():
    for a in range(256):
        for b in range(256):
            assert _native.gf_mul(a, b) == mul(a, b)


def test_first_repair_symbol_is_the_xor_of_the_data():
    assert all(c == 1 for c in repair_matrix(40, 1)[0])
    data = os.urandom(40 * 17)
    parity = bytearray(17)
    for j in range(40):
        for t in range(17):
            parity[t] ^= data[j * 17 + t]
    assert fec.encode(data, 40, 41) == bytes(parity)


@pytest.mark.parametrize("k,n,size", [(1, 2, 1), (3, 5, 33), (10, 14, 100), (64, 68, 70),
                                      (200, 255, 9)])
def test_encode_matches_the_reference(k, n, size):
    data = os.urandom(k * size)
    assert fec.encode(data, k, n) == reference_encode(data, k, n)


@settings(max_examples=150, deadline=None)
@given(k=st.integers(1, 40), r=st.integers(0, 12), size=st.integers(0, 80),
       seed=st.integers(0, 2**32))
def test_any_k_symbols_rebuild_the_block(k, r, size, seed):
    rng = random.Random(seed)
    n = k + r
    data = rng.randbytes(k * size)
    repair = fec.encode(data, k, n)
    symbols = [data[i * size:(i + 1) * size] for i in range(k)]
    symbols += [repair[i * size:(i + 1) * size] for i in range(r)]
    keep = rng.sample(range(n), rng.randint(k, n))
    assert fec.decode({i: symbols[i] for i in keep}, k, n, size) == data
    if k > 1:
        with pytest.raises(ValueError, match="cannot rebuild"):
            fec.decode({i: symbols[i] for i in keep[:k - 1]}, k, n, size)


def test_decode_rejects_bad_input_with_a_message():
    with pytest.raises(ValueError, match="symbol index 9"):
        fec.decode({9: b"ab"}, 1, 3, 2)
    with pytest.raises(ValueError, match="symbol 0 is 3 bytes, not 2"):
        fec.decode({0: b"abc"}, 1, 3, 2)
    with pytest.raises(ValueError, match="geometry"):
        fec.decode({}, 0, 3, 2)


# -- the header layout, from the table in docs/protocol.md ------------------------------
PACKET_NUMBER = slice(24, 32)  # the GCM nonce's last 8 bytes


def reference_header(type_byte: int, key_id: int, channel: int, session: int, pn: int,
                     seq: int, idx: int, k: int, n: int) -> bytes:
    return (b"\xdd\xc1\x03" + bytes([type_byte]) + key_id.to_bytes(2, "big")
            + channel.to_bytes(2, "big") + session.to_bytes(16, "big") + pn.to_bytes(8, "big")
            + seq.to_bytes(6, "big") + bytes([idx, k, n]))


def test_header_layout_matches_the_documented_table():
    args = (3, 7, 0x1234_5678_9ABC << 64 | 0xFEED, 99, 0x0102_0304_0506, 1, 4, 5)
    for encrypted in (True, False):
        type_byte = wire.TYPE_DATA | (wire.FLAG_ENCRYPTED if encrypted else 0)
        assert wire.pack_header(wire.TYPE_DATA, encrypted, *args) == \
            reference_header(type_byte, *args)
    assert (wire.HEADER_SIZE, wire.OVERHEAD, wire.VERSION) == (41, 57, 3)


# The layout is defined once, in _native.c; wire.py's struct must agree with it field by
# field, and the C pack_header (seal_group) must write what wire.pack_header does.
LAYOUT = {"KEY_ID": (2, 0x0304), "CHANNEL_ID": (2, 0x0506),
          "SESSION_ID": (16, 0x0708_090A_0B0C_0D0E << 64 | 0x0F10_1112_1314_1516),
          "PACKET_NUMBER": (8, 0x1718_191A_1B1C_1D1E), "BLOCK_SEQ": (6, 0x1F20_2122_2324),
          "SYMBOL_INDEX": (1, 2), "K": (1, 3), "N": (1, 5)}


def test_wire_py_and_native_c_agree_on_the_header_layout():
    v = {name: value for name, (_, value) in LAYOUT.items()}
    h = wire.pack_header(wire.TYPE_DATA, True, v["KEY_ID"], v["CHANNEL_ID"], v["SESSION_ID"],
                         v["PACKET_NUMBER"], v["BLOCK_SEQ"], v["SYMBOL_INDEX"], v["K"], v["N"])
    assert len(h) == wire._HEADER.size == _native.HEADER_SIZE
    assert h[_native.OFFSET_MAGIC:_native.OFFSET_MAGIC + 2] == _native.MAGIC
    assert h[_native.OFFSET_VERSION] == _native.VERSION
    assert h[_native.OFFSET_TYPE] == _native.TYPE_DATA | _native.FLAG_ENCRYPTED
    for name, (size, value) in LAYOUT.items():
        at = getattr(_native, f"OFFSET_{name}")
        assert int.from_bytes(h[at:at + size], "big") == value, name
    assert LAYOUT["SESSION_ID"][0] == _native.SESSION_ID_SIZE
    assert LAYOUT["BLOCK_SEQ"][0] == _native.BLOCK_SEQ_SIZE
    size = 8
    sealed = _native.Aead(bytes(32)).seal_group(
        [(v["CHANNEL_ID"], v["BLOCK_SEQ"], v["K"], v["N"], bytes(v["K"] * size))],
        _native.TYPE_DATA | _native.FLAG_ENCRYPTED, v["KEY_ID"],
        wire.session_bytes(v["SESSION_ID"]), v["PACKET_NUMBER"] - v["SYMBOL_INDEX"], size)
    assert sealed[v["SYMBOL_INDEX"]][:_native.HEADER_SIZE] == h


def test_wire_py_refuses_to_import_against_other_c_offsets(monkeypatch):
    monkeypatch.setattr(_native, "OFFSET_K", _native.OFFSET_N)
    with pytest.raises(ImportError, match="offset of K"):
        wire._check_layout()


@pytest.mark.parametrize("k,n", [(0, 3), (1, 1), (3, 2), (4, 5), (1, 255), (255, 255)])
def test_one_geometry_rule_for_every_native_entry_point(k, n):
    """Header check, seal_group, rs_encode and rs_decode take and refuse the same (k, n)."""
    ok = 1 <= k <= n <= _native.MAX_SYMBOLS
    aead, size = _native.Aead(bytes(32)), 4
    dg = aead.seal(wire.pack_header(wire.TYPE_DATA, True, 1, 2, 3, 4, 5, 0, k, n), bytes(size))
    opened = aead.open(dg, wire.Header)
    assert (opened != "malformed") == ok
    entry_points = [
        lambda: aead.seal_group([(2, 5, k, n, bytes(k * size))], DATA_ENCRYPTED, 1,
                                wire.session_bytes(3), 4, size),
        lambda: _native.rs_encode(bytes(k * size), k, n),
        lambda: _native.rs_decode({}, k, n, size),
    ]
    for call in entry_points:
        try:
            call()
            accepted = True
        except ValueError as exc:  # rs_decode of no symbols: refused for too few, if sound
            accepted = "geometry" not in str(exc) and "k=" not in str(exc)
        assert accepted == ok


# -- AES-256-GCM against cryptography ----------------------------------------------------
def _header(encrypted: bool, pn: int) -> bytes:
    return wire.pack_header(wire.TYPE_DATA, encrypted, 3, 7, 0x1234_5678_9ABC, pn, 42, 1, 4, 5)


@pytest.mark.parametrize("encrypted", [True, False])
def test_seal_matches_cryptography_and_opens(encrypted):
    key = os.urandom(32)
    aead, ref = _native.Aead(key), AESGCM(key)
    for size in (0, 1, 15, 16, 17, 1423, 8000):
        header, payload = _header(encrypted, size), os.urandom(size)
        nonce = b"\x00" * 4 + size.to_bytes(8, "big")
        expected = header + (ref.encrypt(nonce, payload, header) if encrypted
                             else payload + ref.encrypt(nonce, b"", header + payload))
        sealed = aead.seal(header, payload)
        assert sealed == expected
        h, opened = aead.open(sealed, wire.Header)
        assert opened == payload and h == wire.unpack_header(sealed)
        for i in (0, 3, 20, len(sealed) - 1):  # header, body and tag are all covered
            bad = bytearray(sealed)
            bad[i] ^= 0x40
            assert aead.open(bytes(bad), wire.Header) is None


def test_seal_group_interleaves_and_fec_encodes():
    key, s = os.urandom(32), 50
    aead = _native.Aead(key)
    blocks = [(1, 10, 3, 5, os.urandom(3 * s)), (2, 11, 2, 2, os.urandom(2 * s)),
              (1, 12, 1, 4, os.urandom(s))]
    out = aead.seal_group(blocks, wire.TYPE_DATA | wire.FLAG_ENCRYPTED, 9, wire.session_bytes(77),
                          1000, s)
    order = [(i, b) for i in range(5) for b in range(3) if i < blocks[b][3]]
    assert len(out) == len(order) == 11
    for pn, (dg, (i, b)) in enumerate(zip(out, order, strict=True), start=1000):
        channel, seq, k, n, data = blocks[b]
        h, payload = aead.open(dg, wire.Header)
        assert (h.packet_number, h.channel_id, h.block_seq, h.symbol_index, h.k, h.n,
                h.key_id, h.session_id) == (pn, channel, seq, i, k, n, 9, 77)
        symbol = data[i * s:(i + 1) * s] if i < k else \
            reference_encode(data, k, n)[(i - k) * s:(i - k + 1) * s]
        assert payload == symbol


SESSION = 0x1234_5678_9ABC << 64 | 0xF00D
DATA_ENCRYPTED = wire.TYPE_DATA | wire.FLAG_ENCRYPTED


def _data(aead, pn: int, seq: int, idx: int, k: int = 4, n: int = 5, channel: int = 7,
          session: int = SESSION, body: bytes = b"x" * 20, encrypted: bool = True) -> bytes:
    return aead.seal(wire.pack_header(wire.TYPE_DATA, encrypted, 3, channel, session, pn, seq,
                                      idx, k, n), body + bytes([idx]))


def test_open_data_gathers_verified_data_of_the_session_by_block():
    aead = _native.Aead(os.urandom(32))
    a0, b0, a1, b1 = (_data(aead, 1, 42, 0), _data(aead, 2, 43, 0), _data(aead, 3, 42, 1),
                      _data(aead, 4, 43, 4))
    other_session = _data(aead, 5, 42, 2, session=99)
    heartbeat = aead.seal(wire.pack_header(wire.TYPE_HEARTBEAT, True, 3, 0, SESSION, 6, 0, 0,
                                           0, 0), b"z")
    forged = a0[:-1] + bytes([a0[-1] ^ 1])
    contradicts = _data(aead, 7, 42, 3, k=3)  # block 42 has k = 4
    bad_geometry = _data(aead, 8, 44, 5, k=4, n=5)  # index 5 of n = 5
    other_mode = _data(aead, 10, 42, 2, encrypted=False)
    other_version = bytearray(a1)
    other_version[wire.VERSION_AT] = 1
    a2 = _data(aead, 9, 42, 2)
    items = [a0, b0, a1, b1, other_session, heartbeat, b"short", forged, a2, contradicts,
             bad_geometry, other_mode, bytes(other_version), a2]
    out = aead.open_data(items, 3, wire.session_bytes(SESSION), DATA_ENCRYPTED)
    body = b"x" * 20
    assert out == [
        (7, 42, 4, 5, 21, [(0, body + b"\0"), (1, body + b"\1")]),
        (7, 43, 4, 5, 21, [(0, body + b"\0"), (4, body + b"\4")]),
        other_session, heartbeat,  # for the general path, as they are
        "malformed", "auth",  # the cheapest rejections, by name; no new run for them
        (7, 42, 4, 5, 21, [(2, body + b"\2")]),  # a new run after the general path's
        "malformed", "malformed",  # authentic, but contradicting its block / impossible
        other_mode, bytes(other_version),  # the general path logs those
        (7, 42, 4, 5, 21, [(2, body + b"\2")]),  # a duplicate: the decoder counts it
    ]
    # what is left for the general path is the very same object
    assert out[2] is other_session and out[9] is other_mode


def test_selfcheck_known_answers_are_independent():
    """The selfcheck's constants, recomputed with the reference code and cryptography."""
    data = selfcheck.block()
    assert hashlib.sha256(reference_encode(data, selfcheck.K, selfcheck.N)).hexdigest() \
        == selfcheck.RS_ANSWER
    ref = AESGCM(selfcheck.KEY)
    enc, plain = selfcheck.header(True), selfcheck.header(False)
    nonce = b"\x00" * 4 + enc[PACKET_NUMBER]
    p = selfcheck.payload()
    both = enc + ref.encrypt(nonce, p, enc) + plain + p + ref.encrypt(nonce, b"", plain + p)
    assert hashlib.sha256(both).hexdigest() == selfcheck.GCM_ANSWER
    # the group: interleaved, numbered from 1000, each symbol sealed by cryptography
    blocks = selfcheck.group_blocks()
    datagrams, pn = [], 1000
    for i in range(max(b[3] for b in blocks)):
        for channel, seq, k, n, data in blocks:
            if i >= n:
                continue
            s = selfcheck.SIZE
            symbol = data[i * s:(i + 1) * s] if i < k else \
                reference_encode(data, k, n)[(i - k) * s:(i - k + 1) * s]
            header = reference_header(DATA_ENCRYPTED, 9, channel,
                                      int.from_bytes(selfcheck.SESSION, "big"), pn, seq, i, k, n)
            datagrams.append(header + ref.encrypt(b"\x00" * 4 + pn.to_bytes(8, "big"),
                                                  symbol, header))
            pn += 1
    assert hashlib.sha256(b"".join(datagrams)).hexdigest() == selfcheck.GROUP_ANSWER
    assert selfcheck.check() == []


@pytest.mark.parametrize("kernel", ["table", "ssse3", "avx2"])
def test_every_simd_kernel_gives_the_known_answers(kernel):
    """Each region-multiply kernel this CPU has, forced in turn (the selfcheck also runs
    on arm64 under qemu-user where the wheel is built, for NEON)."""
    if kernel != "table" and not _cpu_has(kernel):
        pytest.skip(f"this CPU has no {kernel}")
    proc = subprocess.run([sys.executable, "-m", "appliance.protocol.selfcheck"],
                          env={**os.environ, "DDC_NATIVE_SIMD": kernel},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"simd {kernel}" in proc.stdout


def _cpu_has(flag: str) -> bool:
    with open("/proc/cpuinfo") as f:
        return any(line.startswith("flags") and flag in line.split() for line in f)
