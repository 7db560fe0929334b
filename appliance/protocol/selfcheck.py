"""Known-answer check of the native hot path: `python3 -m appliance.protocol.selfcheck`.

Run where a wheel is built (arm64 under qemu-user, amd64 natively) so that every
build's SIMD code and OpenSSL binding are proven to produce the bytes the other
architectures do. Needs only the standard library and the native module; with
`--require-zstd` (where the daemon is installed with its dependencies: the image and the
container) also zstandard, whose compression of a block it checks. The filters' JSON
scan (appliance/_scan.c, word-at-a-time string skipping) is checked against
json.loads on the same build.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys

from . import _native

# sha256 of the repair symbols of block() (k=20, n=26, 1415-byte symbols: MTU 1500) and of the
# sealed datagrams of header()/payload(), as computed by an independent implementation
# (tests/unit/test_native.py recomputes both in pure Python and with the `cryptography`
# package); and of the datagrams seal_group() makes of group_blocks(), which that test
# checks symbol by symbol.
GROUP_ANSWER = "f32926ca32b290e5c9a97400c62f85bcdc9e10b92de4ddfb7d1edb2bd533135a"
RS_ANSWER = "0811906f6f279509ee244b6181e5384e0344edb67a5f1a2f39c43342b9528cce"
GCM_ANSWER = "538508e4a4b58e15d6d7d836cdfd0eb06a2be8d9b67142f5bb20770bde94948a"
K, N, SIZE = 20, 26, 1415
KEY = bytes(range(32))
SESSION = bytes(range(200, 200 + _native.SESSION_ID_SIZE))  # the group's session id


def block() -> bytes:
    return random.Random(20261126).randbytes(K * SIZE)


def header(encrypted: bool) -> bytes:
    """A data header of this protocol version; the other fields are filler."""
    type_byte = _native.TYPE_DATA | (_native.FLAG_ENCRYPTED if encrypted else 0)
    head = _native.MAGIC + bytes([_native.VERSION, type_byte])
    return head + bytes(range(100, 100 + _native.HEADER_SIZE - len(head)))


def payload() -> bytes:
    return random.Random(7).randbytes(SIZE)


def group_blocks() -> list[tuple[int, int, int, int, bytes]]:
    data = block()
    return [(1, 40, K, N, data), (2, 41, 3, 5, data[:3 * SIZE])]


def sealed_group() -> list[bytes]:
    return _native.Aead(KEY).seal_group(group_blocks(), _native.TYPE_DATA | _native.FLAG_ENCRYPTED,
                                        9, SESSION, 1000, SIZE)


def sealed() -> bytes:
    aead = _native.Aead(KEY)
    return aead.seal(header(True), payload()) + aead.seal(header(False), payload())


def check() -> list[str]:
    problems = []
    data = block()
    repair = _native.rs_encode(data, K, N)
    if hashlib.sha256(repair).hexdigest() != RS_ANSWER:
        problems.append("Reed-Solomon repair symbols differ from the known answer")
    symbols = {i: data[i * SIZE:(i + 1) * SIZE] for i in range(K)}
    symbols.update({K + i: repair[i * SIZE:(i + 1) * SIZE] for i in range(N - K)})
    rng = random.Random(1)
    for _ in range(50):
        keep = rng.sample(range(N), K)
        if _native.rs_decode({i: symbols[i] for i in keep}, K, N, SIZE) != data:
            problems.append(f"Reed-Solomon decode failed keeping symbols {sorted(keep)}")
            break
    group = sealed_group()
    if hashlib.sha256(b"".join(group)).hexdigest() != GROUP_ANSWER:
        problems.append("seal_group datagrams differ from the known answer")
    opened = _native.Aead(KEY).open_data(group, 9, SESSION,
                                         _native.TYPE_DATA | _native.FLAG_ENCRYPTED)
    for _, seq, k, n, data in group_blocks():
        symbols = {}
        for g in opened:
            if isinstance(g, tuple) and g[1] == seq:
                symbols.update(g[5])
        if len(symbols) != n:
            problems.append(f"open_data returned {len(symbols)} of block {seq}'s {n} symbols")
            continue
        lost = random.Random(seq).sample(range(k), min(n - k, k))  # lose what FEC covers
        kept = {i: v for i, v in symbols.items() if i not in lost}
        if _native.rs_decode(kept, k, n, SIZE) != data:
            problems.append(f"block {seq} did not decode after seal_group and open_data")
    both = sealed()
    if hashlib.sha256(both).hexdigest() != GCM_ANSWER:
        problems.append("AES-256-GCM datagrams differ from the known answer")
    aead = _native.Aead(KEY)
    one = len(both) // 2
    for dg in (both[:one], both[one:]):
        got = aead.open(dg, tuple)
        if not isinstance(got, tuple) or got[1] != payload():
            problems.append("AES-256-GCM open did not return the payload")
        tampered = bytearray(dg)
        tampered[-1] ^= 1
        if aead.open(bytes(tampered), tuple) is not None:
            problems.append("AES-256-GCM open accepted a tampered datagram")
    return problems


def json_documents() -> list[bytes]:
    """JSON texts whose special bytes (quotes, escapes, control and UTF-8 bytes, broken
    or not) fall at every offset of an 8-byte word, valid and not."""
    out = []
    for pad in range(17):
        for special in ('"', "\\n", "\\u00e9", "\u00e9", "\t", "\\", "\udcff"):
            filler = "x" * pad
            text = f'{{"msg": "{filler}{special}{filler}", "level": "info"}}'
            out.append(text.encode("utf-8", "surrogateescape"))
    return out


def check_json_field() -> list[str]:
    from .. import _scan

    problems = []
    for doc in json_documents():
        try:
            want = json.loads(doc).get("level")
        except ValueError:
            want = None
        got = _scan.json_field(doc, (b"level",))
        if got is not True and (None if got is None else json.loads(got)) != want:
            problems.append(f"JSON scan read {doc!r} as {got!r}, json.loads as {want!r}")
    return problems


def check_zstd(required: bool) -> list[str]:
    """Link compression's codec round-trips a block and refuses one past the bound. Where
    the daemon is installed with its dependencies (image, container) it is required;
    the wheel alone (build-wheelhouse.sh) has no zstandard, and then this is skipped."""
    from . import compress
    from .errors import ProtocolError

    if not compress.available():
        return ["zstandard is not installed (link.compression = \"zstd\" needs it)"] \
            if required else []
    chunk = b"".join(b'{"level": "info", "seq": %d}\n' % i for i in range(5000))
    packed = compress.Compressor(3).compress(chunk)
    problems = []
    if len(packed) * 4 > len(chunk) or \
            compress.Decompressor(1 << 20).decompress(packed) != chunk:
        problems.append("zstd did not round-trip a block")
    try:
        compress.Decompressor(65536).decompress(packed)
        problems.append("zstd expanded a block past its bound")
    except ProtocolError:
        pass
    return problems


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    problems = check() + check_json_field() + check_zstd("--require-zstd" in argv)
    for p in problems:
        print(f"selfcheck: {p} (simd {_native.SIMD})", file=sys.stderr)
    if not problems:
        print(f"selfcheck: native hot path ok (simd {_native.SIMD}, Reed-Solomon and "
              "AES-256-GCM match the known answers, the JSON scan reads as json.loads" +
              ("; zstd round-trips" if "--require-zstd" in argv else "") + ")")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
