"""Block compression (protocol v3): records through a compressing encoder and a lossy,
reordering link come out identical; a block that would expand past the egress's bound
is dropped and counted malformed; incompressible data goes as it is."""

from __future__ import annotations

import json
import random

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from appliance.config import ConfigError, loads
from appliance.protocol.auth import Opener
from appliance.protocol.blocks import COMPRESSED, NO_BLOCK, pack_block
from appliance.protocol.decoder import DecoderSettings, LinkDecoder
from appliance.protocol.encoder import LinkEncoder, LinkSettings, _Block
from appliance.protocol.events import Delivered, Malformed, PeerMismatch, RecordsLost
from appliance.protocol.records import Record, encode_frame

from .test_codec_properties import (
    COMMON,
    PSK,
    SESSION,
    assert_same_record,
    block_shape,
    by_block,
    delivered_of,
    encode_all,
    local_shuffle,
    per_channel,
    run_decoder,
    workloads,
)


def log_line(rng: random.Random, i: int) -> bytes:
    """A JSON log record like a service writes (deterministic from rng)."""
    return json.dumps({
        "ts": f"2026-12-02T09:{i // 60 % 60:02d}:{i % 60:02d}.{rng.randrange(1000):03d}Z",
        "level": rng.choice(["info", "info", "info", "warning", "error", "debug"]),
        "service": rng.choice(["orders", "billing", "auth", "gateway"]),
        "host": f"node-{rng.randrange(12):02d}.plant-a.example",
        "msg": rng.choice(["request handled", "cache miss", "upstream timeout, retrying",
                           "user logged in", "payment accepted"]),
        "request_id": f"{rng.getrandbits(64):016x}",
        "duration_ms": rng.randrange(1, 900),
        "path": rng.choice(["/api/v1/orders", "/api/v1/users/me", "/healthz"]),
    }).encode()


@st.composite
def compressible_workloads(draw):
    records, flush_after = draw(workloads())
    rng = random.Random(draw(st.integers(0, 2**32)))
    for i, (_, rec) in enumerate(records):
        if draw(st.booleans()):
            rec.value = b"\n".join(log_line(rng, i) for _ in range(draw(st.integers(1, 300))))
    return records, flush_after


link_settings = st.builds(
    LinkSettings, mtu=st.integers(576, 9000), block_symbols=st.integers(1, 120),
    redundancy=st.floats(0.0, 0.5), min_repair=st.integers(0, 4),
    interleave_depth=st.integers(1, 8), encrypt=st.booleans(),
    compression_level=st.integers(1, 6),
    compression_max_block_bytes=st.sampled_from([65536, 1 << 20, 4 << 20]))


@COMMON
@given(link=link_settings, work=compressible_workloads(), seed=st.integers(0, 2**32),
       window=st.integers(1, 8), drop_share=st.floats(0, 1))
def test_roundtrip_with_compression_within_fec_budget(link, work, seed, window, drop_share):
    records, flush_after = work
    want = per_channel([(ch, Record(**{f: getattr(r, f) for f in r.__slots__}))
                        for ch, r in records])
    rng = random.Random(seed)
    data, hb = encode_all(link, records, flush_after)
    keep = []
    for _seq, idxs in sorted(by_block(data).items()):
        k, n = block_shape(data[idxs[0]])
        budget = n - k
        lose = set(rng.sample(idxs, min(budget, round(budget * drop_share + rng.random()))))
        keep += [i for i in idxs if i not in lose]
    keep.sort()
    # The egress bounds decompression at the same compression_max_block_bytes (set alike
    # on both sides), so a block the ingress made too big would be dropped here.
    dec, events = run_decoder(link, local_shuffle([data[i] for i in sorted(keep)], window, rng),
                              hb, DecoderSettings(
                                  compression_max_block_bytes=link.compression_max_block_bytes))
    got = delivered_of(events)
    assert sorted(got) == sorted(want)
    for ch, recs in want.items():
        for g, w in zip(got[ch], recs, strict=True):
            w.seq, w.stream_seq, w.prev_offset = g.seq, g.stream_seq, g.prev_offset
            assert_same_record(g, w)
    assert not [e for e in events if isinstance(e, RecordsLost | Malformed)]


def _encode(settings: LinkSettings, values: list[bytes]) -> tuple[LinkEncoder, list[bytes]]:
    enc = LinkEncoder(settings, PSK, SESSION)
    out = []
    for i, v in enumerate(values):
        enc.add(1, Record(value=v, offset=i + 1))
        out += enc.take_datagrams()
    return enc, out + enc.flush()


def test_json_logs_shrink_and_take_fewer_datagrams():
    rng = random.Random(1)
    values = [log_line(rng, i) for i in range(5000)]
    plain_enc, plain = _encode(LinkSettings(), values)
    zstd_enc, packed = _encode(LinkSettings(compression_level=3), values)
    assert zstd_enc.stream_bytes == plain_enc.stream_bytes
    assert zstd_enc.stream_bytes / zstd_enc.chunk_bytes > 4
    assert len(packed) * 3 < len(plain)
    assert plain_enc.blocks_compressed == 0 < zstd_enc.blocks_compressed
    dec = LinkDecoder(Opener({1: PSK}), DecoderSettings())
    got = [r.value for e in dec.feed_many(packed, 0.0) + dec.tick(10.0)
           if isinstance(e, Delivered) for r in e.records]
    assert got == values


def test_incompressible_blocks_never_grow_and_go_as_they_are():
    rng = random.Random(2)
    values = [rng.randbytes(1000) for _ in range(3000)]
    plain_enc, plain = _encode(LinkSettings(), values)
    enc, data = _encode(LinkSettings(compression_level=3), values)
    assert enc.stream_bytes / enc.chunk_bytes < 1.1  # (only the frame headers shrink)
    assert len(data) <= len(plain)  # nothing grew
    # Values alone (no frame headers to squeeze: one record per block) save no symbol:
    # those blocks go as they are.
    enc2, _ = _encode(LinkSettings(block_symbols=4), [rng.randbytes(4 * 1415) for _ in
                                                      range(50)])
    assert enc2.blocks_compressed == 0 and enc2.chunk_bytes == enc2.stream_bytes
    dec = LinkDecoder(Opener({1: PSK}), DecoderSettings())
    got = [r.value for e in dec.feed_many(data, 0.0) + dec.tick(10.0)
           if isinstance(e, Delivered) for r in e.records]
    assert got == values


def _crafted(chunk: bytes, settings: LinkSettings) -> list[bytes]:
    """One sealed block whose chunk is `chunk`, flagged compressed."""
    enc = LinkEncoder(settings, PSK, SESSION)
    size = settings.symbol_size
    k = -(-(16 + len(chunk)) // size)
    payload = pack_block(chunk, 0, NO_BLOCK, k * size, compressed=True)
    enc._group.append(_Block(0, 1, k, k + 2, payload, []))
    enc._next_block = 1
    enc._emit_group()
    return enc.take_datagrams() + enc.heartbeat(1000, 1000)


@pytest.mark.parametrize("frame", ["bomb", "no_size", "garbage"])
def test_a_block_that_would_expand_past_the_bound_is_dropped_and_counted(frame):
    stream = encode_frame(Record(value=bytes(10 * 1024 * 1024), offset=1))  # 10 MiB of 0
    chunk = {"bomb": zstandard.ZstdCompressor(level=19).compress(stream),
             "no_size": zstandard.ZstdCompressor(write_content_size=False).compress(
                 stream[:1000]),
             "garbage": b"\x28\xb5\x2f\xfd" + bytes(40)}[frame]
    if frame == "bomb":
        assert len(chunk) < 2000  # a 1.5 KB block that says it holds 10 MiB
    settings = LinkSettings()
    dec = LinkDecoder(Opener({1: PSK}), DecoderSettings())  # the default bound: 4 MiB
    events = dec.feed_many(_crafted(chunk, settings), 0.0) + dec.tick(10.0)
    if frame == "bomb":  # named with both sizes (a pair set up differently, or worse)
        assert [(e.what, e.ours, e.theirs) for e in events if isinstance(e, PeerMismatch)] \
            == [("compression", str(4 << 20), str(len(stream)))]
    else:
        assert [e for e in events if isinstance(e, Malformed)]
    assert not [e for e in events if isinstance(e, Delivered)]
    assert dec.stats.dropped["malformed"] == 1


def test_the_bound_is_the_egress_setting():
    stream = encode_frame(Record(value=bytes(200_000), offset=1))
    chunk = zstandard.ZstdCompressor().compress(stream)
    for bound, delivered in ((100_000, 0), (1 << 20, 1)):
        dec = LinkDecoder(Opener({1: PSK}), DecoderSettings(compression_max_block_bytes=bound))
        events = dec.feed_many(_crafted(chunk, LinkSettings()), 0.0) + dec.tick(10.0)
        assert sum(len(e.records) for e in events if isinstance(e, Delivered)) == delivered
        assert dec.stats.dropped["malformed"] == 1 - delivered
    assert COMPRESSED == 0x80000000


def test_blocks_never_expand_past_the_bound_even_when_a_block_holds_more():
    # Jumbo frames and 120 symbols: one block holds about 1 MB, the bound is 64 KiB.
    rng = random.Random(3)
    values = [log_line(rng, i) for i in range(6000)]
    link = LinkSettings(mtu=9000, block_symbols=120, compression_level=3,
                        compression_max_block_bytes=65536)
    enc, data = _encode(link, values)
    assert enc.blocks_compressed > 0
    dec = LinkDecoder(Opener({1: PSK}), DecoderSettings(compression_max_block_bytes=65536))
    events = dec.feed_many(data, 0.0) + dec.tick(10.0)
    assert [r.value for e in events if isinstance(e, Delivered) for r in e.records] == values
    assert dec.stats.dropped["malformed"] == 0


def test_an_egress_with_a_smaller_bound_refuses_clearly_once_per_interval():
    """Ingress and egress set up differently: the egress drops the blocks it may not
    expand (counted malformed), says so in one peer_mismatch event per interval naming
    both sizes (not a line per block), and the records are reported lost, not silent."""
    rng = random.Random(4)
    values = [log_line(rng, i) for i in range(20000)]
    enc, data = _encode(LinkSettings(compression_level=3, compression_max_block_bytes=1 << 20),
                        values)
    dec = LinkDecoder(Opener({1: PSK}), DecoderSettings(compression_max_block_bytes=65536))
    events = []
    for i, d in enumerate(data):  # 1 ms apart: all within one notice interval
        events += dec.feed(d, i * 0.001)
    events += dec.feed_many(enc.heartbeat(0, 0), 5.0) + dec.tick(20.0)
    mismatches = [e for e in events if isinstance(e, PeerMismatch)]
    assert [(e.what, e.ours) for e in mismatches] == [("compression", "65536")]
    assert int(mismatches[0].theirs) > 65536
    assert not [e for e in events if isinstance(e, Malformed)]
    dropped = dec.stats.dropped["malformed"]
    assert dropped > 1
    lost = sum(e.report.count or 0 for e in events if isinstance(e, RecordsLost))
    delivered = [r for e in events if isinstance(e, Delivered) for r in e.records]
    assert lost > 0 and lost + len(delivered) == len(values)


def test_zstd_configured_without_the_package_is_a_one_line_config_error(monkeypatch):
    from appliance.protocol import compress
    monkeypatch.setattr(compress, "_zstd", None)
    ingress = EGRESS.replace('role = "egress"', 'role = "ingress"').replace(
        'bind = "127.0.0.1:9"', 'peer = "127.0.0.1:9"').replace('type = "null"',
                                                                'type = "generator"')
    with pytest.raises(ConfigError, match=r'link.compression: "zstd" needs the zstandard'):
        loads(ingress.format(link='compression = "zstd"'), "x.toml", check_files=False)


EGRESS = """role = "egress"
[link]
bind = "127.0.0.1:9"
key_file = "/k"
{link}
[[channel]]
id = 1
name = "a"
type = "null"
"""


def test_compression_settings_are_checked_by_name():
    with pytest.raises(ConfigError, match=r"link.compression: is only for role = \"ingress\""):
        loads(EGRESS.format(link='compression = "zstd"'), "x.toml", check_files=False)
    with pytest.raises(ConfigError, match=r"link.compression_level: must be a zstd level"):
        loads(EGRESS.format(link="compression_level = 40"), "x.toml", check_files=False)
    cfg = loads(EGRESS.format(link="compression_max_block_bytes = 65536"), "x.toml",
                check_files=False)
    assert cfg.link.compression_max_block_bytes == 65536
    ingress = EGRESS.replace('role = "egress"', 'role = "ingress"').replace(
        'bind = "127.0.0.1:9"', 'peer = "127.0.0.1:9"').replace('type = "null"',
                                                                'type = "generator"')
    cfg = loads(ingress.format(link='compression = "zstd"\ncompression_level = 7'), "x.toml",
                check_files=False)
    assert cfg.link.compression_level == 7
    with pytest.raises(ConfigError, match=r'link.compression: must be "zstd" or "none"'):
        loads(ingress.format(link='compression = "lz4"'), "x.toml", check_files=False)


def test_selfcheck_requires_zstd_where_asked(monkeypatch, capsys):
    from appliance.protocol import compress, selfcheck
    assert selfcheck.main(["--require-zstd"]) == 0
    assert "zstd round-trips" in capsys.readouterr().out
    monkeypatch.setattr(compress, "_zstd", None)
    assert selfcheck.main([]) == 0  # the wheel alone, as build-wheelhouse.sh checks it
    assert selfcheck.main(["--require-zstd"]) == 1
    assert "zstandard is not installed" in capsys.readouterr().err
