"""Hostile input for the egress: LinkDecoder.feed never raises, never delivers a record
from a bad datagram, and counts every drop under the right reason."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.protocol import wire
from appliance.protocol.auth import Opener, Sealer, session_epoch
from appliance.protocol.blocks import NO_BLOCK, NO_FRAME, pack_block
from appliance.protocol.decoder import DROP_REASONS, DecoderSettings, LinkDecoder
from appliance.protocol.encoder import LinkEncoder, LinkSettings
from appliance.protocol.events import (
    BlocksLost,
    Delivered,
    HeartbeatReceived,
    Malformed,
    PeerMismatch,
    RecordsLost,
    SessionRefused,
    SessionStarted,
)
from appliance.protocol.heartbeat import KIND_GAUGE, Metric
from appliance.protocol.records import Record, encode_frame
from appliance.protocol.session import Checkpoint

PSK = bytes.fromhex("5a" * 32)
OTHER_PSK = bytes.fromhex("a5" * 32)
KEY_ID = 7
SESSION_A = 0x1111_2222_3333_4444 << 64 | 0x0A0B_0C0D_0E0F_1011  # epoch | random
SESSION_B = 0x5555_6666_7777_8888 << 64 | 0x1213_1415_1617_1819  # a later epoch
ZERO_DROPS = dict.fromkeys(DROP_REASONS, 0)


def make_records(n: int = 12) -> list[Record]:
    rng = random.Random(n)
    out = []
    for i in range(n):
        size = rng.choice([0, 10, 700, 5000])
        out.append(Record(value=rng.randbytes(size), key=b"k%d" % i,
                          headers=[("h", b"v"), ("n", None)], topic="fuzz", partition=i % 2,
                          offset=100 + i, timestamp=1_700_000_000_000 + i, durable=True))
    return out


def encode_session(session_id: int = SESSION_A, *, psk: bytes = PSK, key_id: int = KEY_ID,
                   encrypt: bool = True, records: list[Record] | None = None,
                   **link) -> tuple[list[bytes], list[bytes], list[Record]]:
    """(data datagrams, heartbeat datagrams, records) of one ingress session."""
    settings = LinkSettings(key_id=key_id, encrypt=encrypt, **link)
    enc = LinkEncoder(settings, psk, session_id)
    records = make_records() if records is None else records
    data: list[bytes] = []
    for rec in records:
        enc.add(1, rec)
        data += enc.take_datagrams()
    data += enc.flush()
    return data, enc.heartbeat(5_000, 1_000), records


def quiet(events: list) -> list:
    """Events without the rate-limited notices (refused sessions, peer mismatches) that
    bad input may earn: those become log lines, nothing else."""
    return [e for e in events if not isinstance(e, SessionRefused | PeerMismatch)]


def new_decoder(keys: dict[int, bytes] | None = None, encrypt: bool = True) -> LinkDecoder:
    return LinkDecoder(Opener(keys or {KEY_ID: PSK}, encrypt=encrypt), DecoderSettings())


def feed_all(dec: LinkDecoder, datagrams, now: float = 0.0) -> list:
    events: list = []
    for d in datagrams:
        events += dec.feed(d, now)
    return events


def delivered(events) -> list[Record]:
    return [r for e in events if isinstance(e, Delivered) for r in e.records]


def assert_all_arrive(dec: LinkDecoder, data, hb, records, now: float = 1.0) -> None:
    """The decoder still works: the genuine session comes through complete."""
    events = feed_all(dec, data + hb, now) + dec.tick(now + 100)
    got = delivered(events)
    assert [(r.partition, r.offset, r.value) for r in got] == \
           [(r.partition, r.offset, r.value) for r in records]


@pytest.fixture(scope="module")
def session_a():
    return encode_session()


# -- garbage from the wire -----------------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes(blob):
    dec = new_decoder()
    assert dec.feed(blob, 0.0) == []
    assert dec.tick(10.0) == []
    assert sum(dec.stats.dropped.values()) == 1
    assert dec.stats.dropped["replay"] == dec.stats.dropped["duplicate"] == 0
    assert dec.session_id is None


@settings(max_examples=300, deadline=None)
@given(key_id=st.sampled_from([KEY_ID, KEY_ID + 1]), rest=st.binary(max_size=1500))
def test_arbitrary_bytes_behind_a_valid_prefix(key_id, rest):
    """Magic and version right (and the key id known or not): the MAC check drops it."""
    type_byte = rest[:1][0] if rest else 0x81
    blob = wire.MAGIC + bytes([wire.VERSION, type_byte]) + key_id.to_bytes(2, "big") + rest[1:]
    dec = new_decoder()
    assert dec.feed(blob, 0.0) == []
    # shape first: a type that is neither data nor heartbeat is malformed before any key
    # is looked at (data or heartbeat in the other mode is refused as not authentic)
    reason = "malformed" if len(blob) < wire.OVERHEAD or \
        type_byte & wire.TYPE_MASK not in (wire.TYPE_DATA, wire.TYPE_HEARTBEAT) else "auth"
    assert dec.stats.dropped == ZERO_DROPS | {reason: 1}


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blobs=st.lists(st.binary(max_size=300), max_size=20))
def test_garbage_mixed_into_a_good_stream(session_a, blobs):
    data, hb, records = session_a
    rng = random.Random(len(blobs))
    stream = list(data)
    for b in blobs:
        stream.insert(rng.randint(0, len(stream)), b)
    dec = new_decoder()
    events = feed_all(dec, stream + hb) + dec.tick(100.0)
    assert [r.offset for r in delivered(events)] == [r.offset for r in records]
    assert sum(dec.stats.dropped.values()) == len(blobs)


# -- damaged genuine datagrams --------------------------------------------------------
def test_truncated_datagrams(session_a):
    data, hb, records = session_a
    dec = new_decoder()
    expected = dict(ZERO_DROPS)
    for d in (data[0], data[1], data[-1], hb[0]):
        for cut in range(len(d)):
            assert dec.feed(d[:cut], 0.0) == []
            expected["malformed" if cut < wire.OVERHEAD else "auth"] += 1
    assert dec.stats.dropped == expected
    assert dec.session_id is None
    assert_all_arrive(dec, data, hb, records)


@pytest.mark.parametrize("encrypt", [True, False])
def test_bit_flips_at_every_position(encrypt):
    data, hb, records = encode_session(encrypt=encrypt, mtu=700)
    # (each flipped session id is a session not seen yet: its key derivation is
    # rate-limited, test_forged_new_sessions_cost_a_bounded_number_of_derivations)
    dec = LinkDecoder(Opener({KEY_ID: PSK}, encrypt=encrypt, derive_burst=10_000),
                      DecoderSettings())
    expected = dict(ZERO_DROPS)
    for d in (data[0], data[len(data) // 2], data[-1], hb[0]):
        for pos in range(len(d)):
            for mask in (0x01, 0x80):
                bad = bytearray(d)
                bad[pos] ^= mask
                assert quiet(dec.feed(bytes(bad), 0.0)) == [], (pos, mask)
                # magic and version are checked first (another version is counted as
                # such: a half-upgraded pair), then the type (a flipped low bit
                # makes an unknown type; the top bit the other mode, refused); a flipped
                # session id is a session not seen yet, whose key derivation is
                # rate-limited (the clock stands still here); everything else fails the MAC
                if pos == wire.VERSION_AT:
                    expected["version"] += 1
                elif pos < 3 or (pos == wire.TYPE_AT and mask == 0x01):
                    expected["malformed"] += 1
                else:
                    expected["auth"] += 1
                assert dec.stats.dropped == expected, (pos, mask)
    assert dec.stats.dropped == expected
    assert dec.stats.records_delivered == 0 and dec.session_id is None
    assert_all_arrive(dec, data, hb, records)


def test_extra_and_missing_tag_bytes(session_a):
    data, hb, records = session_a
    dec = new_decoder()
    for d in (data[0], hb[0]):
        assert dec.feed(d + b"\x00", 0.0) == []
        assert dec.feed(d[:-1] + bytes([d[-1] ^ 1]), 0.0) == []
        assert dec.feed(d[:wire.HEADER_SIZE] + d[-wire.TAG_SIZE:], 0.0) == []
    assert dec.stats.dropped == ZERO_DROPS | {"auth": 6}
    assert_all_arrive(dec, data, hb, records)


# -- wrong keys -----------------------------------------------------------------------
@pytest.mark.parametrize("encrypt", [True, False])
def test_sealed_with_a_wrong_key(encrypt):
    data, hb, _ = encode_session(psk=OTHER_PSK, encrypt=encrypt)
    dec = new_decoder(encrypt=encrypt)
    assert feed_all(dec, data + hb) + dec.tick(100.0) == []
    assert dec.stats.dropped == ZERO_DROPS | {"auth": len(data) + len(hb)}
    assert dec.session_id is None


def test_unknown_key_id():
    data, hb, _ = encode_session(key_id=KEY_ID + 1)
    dec = new_decoder()
    assert feed_all(dec, data + hb) == []
    assert dec.stats.dropped == ZERO_DROPS | {"auth": len(data) + len(hb)}


def test_key_rotation_accepts_both_ids():
    old_data, old_hb, records = encode_session(SESSION_A, key_id=1, psk=OTHER_PSK)
    new_data, new_hb, _ = encode_session(SESSION_B, key_id=2, psk=PSK, records=make_records())
    dec = new_decoder({1: OTHER_PSK, 2: PSK})
    events = feed_all(dec, old_data + old_hb) + dec.tick(50.0)
    events += feed_all(dec, new_data + new_hb, 60.0) + dec.tick(100.0)
    assert dec.stats.dropped == ZERO_DROPS
    # The second session re-sends the same offsets: durable dedup drops them all.
    assert len(delivered(events)) == len(records)
    assert dec.stats.duplicates == len(records)


def test_swapped_key_ids_fail():
    """Key id 1 sealed with key 2's secret (a mix-up in the key files) never verifies."""
    data, hb, _ = encode_session(key_id=1, psk=PSK)
    dec = new_decoder({1: OTHER_PSK, 2: PSK})
    assert feed_all(dec, data + hb) == []
    assert dec.stats.dropped["auth"] == len(data) + len(hb)


# -- replays ----------------------------------------------------------------------------
def test_same_datagram_twice():
    """A copy of a symbol of a block still being collected is a duplicate; a copy that
    arrives after its block was resolved is a late symbol. Neither is delivered twice."""
    data, hb, records = encode_session(block_symbols=4, redundancy=0.5, interleave_depth=1,
                                       mtu=1500)
    dec = new_decoder()
    events = []
    for d in data:
        events += dec.feed(d, 0.0)
        events += dec.feed(d, 0.0)
    events += feed_all(dec, hb) + dec.tick(100.0)
    assert [r.offset for r in delivered(events)] == [r.offset for r in records]
    dups = late = 0
    blocks: dict[int, list[wire.Header]] = {}
    for d in data:
        h = wire.unpack_header(d[:wire.HEADER_SIZE])
        blocks.setdefault(h.block_seq, []).append(h)
    for hs in blocks.values():
        k, n = hs[0].k, hs[0].n
        dups += k - 1  # copies of symbols 0..k-2 find the block still pending
        late += 1 + 2 * (n - k)  # the copy of symbol k-1, and both copies of each repair
    assert dec.stats.dropped == ZERO_DROPS | {"duplicate": dups}
    assert dec.stats.late_symbols == late
    assert dec.stats.records_delivered == len(records)


def test_replay_after_delivery_delivers_nothing(session_a):
    data, hb, records = session_a
    dec = new_decoder()
    events = feed_all(dec, data + hb) + dec.tick(100.0)
    assert len(delivered(events)) == len(records)
    again = feed_all(dec, data, 200.0) + dec.tick(300.0)
    assert not delivered(again)
    assert not [e for e in again if isinstance(e, Malformed | SessionStarted)]
    assert dec.stats.records_delivered == len(records)


def test_replayed_heartbeat_is_dropped(session_a):
    """A captured heartbeat replayed later must not make a dead link look alive."""
    data, hb, _ = session_a
    dec = new_decoder()
    feed_all(dec, data + hb, 0.0)
    assert dec.heartbeat_age(30.0) == 30.0
    events = feed_all(dec, hb, 30.0)
    assert not [e for e in events if isinstance(e, HeartbeatReceived)]
    assert dec.heartbeat_age(30.0) == 30.0
    assert dec.stats.dropped == ZERO_DROPS | {"replay": len(hb)}
    assert dec.stats.heartbeats == len(hb)


def test_paged_heartbeat_pages_in_any_order_then_replayed():
    enc = LinkEncoder(LinkSettings(key_id=KEY_ID, mtu=576), PSK, SESSION_A)
    data = []
    for i in range(60):
        enc.add(1, Record(value=b"x", topic=f"topic-{i:04d}-" + "t" * 40, offset=i,
                          durable=True))
        data += enc.take_datagrams()
    data += enc.flush()
    hb = enc.heartbeat(5_000, 1_000)
    assert len(hb) > 1, "the heartbeat should need several pages"
    dec = new_decoder()
    feed_all(dec, data)
    events = feed_all(dec, list(reversed(hb)))
    assert sum(isinstance(e, HeartbeatReceived) for e in events) == len(hb)
    assert feed_all(dec, hb) == []
    assert dec.stats.dropped == ZERO_DROPS | {"replay": len(hb)}
    # The next heartbeat of the session is accepted; a page of the previous one is stale.
    newer = enc.heartbeat(6_000, 1_000)
    events = feed_all(dec, newer[1:] + newer[:1])
    assert sum(isinstance(e, HeartbeatReceived) for e in events) == len(newer)
    assert feed_all(dec, hb[-1:]) == []
    assert dec.stats.dropped == ZERO_DROPS | {"replay": len(hb) + 1}
    assert dec.stats.heartbeats == len(hb) + len(newer)


def test_old_session_datagrams_after_a_new_session(session_a):
    data_a, hb_a, records = session_a
    later = [Record(value=b"new", topic="fuzz", partition=0, offset=500 + i, durable=True)
             for i in range(3)]
    data_b, hb_b, _ = encode_session(SESSION_B, records=later)
    dec = new_decoder()
    events = feed_all(dec, data_a + hb_a) + dec.tick(10.0)
    assert len(delivered(events)) == len(records)
    first = feed_all(dec, data_b[:1], 20.0)
    assert [e for e in first if isinstance(e, SessionStarted)] == \
           [SessionStarted(SESSION_B, SESSION_A, 0)]
    replayed = feed_all(dec, data_a + hb_a, 21.0)
    assert quiet(replayed) == []
    # one log-worthy notice names the authentic older session, once per interval
    assert [(e.session_id, e.current) for e in replayed] == [(SESSION_A, SESSION_B)]
    assert dec.stats.dropped == ZERO_DROPS | {"replay": len(data_a) + len(hb_a)}
    assert dec.session_id == SESSION_B
    events = first + feed_all(dec, data_b[1:] + hb_b, 22.0) + dec.tick(100.0)
    assert [r.value for r in delivered(events)] == [b"new"] * 3


def test_session_ping_pong_is_refused():
    """Alternating genuine datagrams of two sessions: the older one is retired for good."""
    data_a, _, _ = encode_session(SESSION_A)
    data_b, _, _ = encode_session(SESSION_B)
    dec = new_decoder()
    dec.feed(data_a[0], 0.0)
    dec.feed(data_b[0], 0.0)
    for d in data_a[1:]:
        assert quiet(dec.feed(d, 0.0)) == []
    assert dec.session_id == SESSION_B
    assert dec.stats.dropped["replay"] == len(data_a) - 1


def test_session_switch_inside_one_receive_batch():
    """One batch (one GRO receive) holding the old session's data, the new session's
    first datagram, then more of the old session's: the batch is opened in one native
    call under the old session's key, and the old datagrams after the switch are still
    refused as replays, exactly as when fed one by one."""
    data_a, _, _ = encode_session(SESSION_A)
    data_b, _, _ = encode_session(SESSION_B)
    dec = new_decoder()
    dec.feed(data_a[0], 0.0)  # the old session's key becomes the fast path's
    events = dec.feed_many([data_a[1], data_b[0], *data_a[2:]], 0.0)
    assert [e for e in events if isinstance(e, SessionStarted)] == \
           [SessionStarted(SESSION_B, SESSION_A, 1)]
    assert dec.session_id == SESSION_B
    assert dec.stats.dropped == ZERO_DROPS | {"replay": len(data_a) - 2}
    assert dec.stats.packets_received == len(data_a) + 1


# -- authenticated but nonsensical content ----------------------------------------------
def _sealer(encrypt: bool) -> Sealer:
    return Sealer(PSK, KEY_ID, SESSION_A, encrypt)


def test_authenticated_bad_symbol_geometry():
    sealer = _sealer(True)
    dec = new_decoder()
    pn = 0
    for k, n, idx in ((0, 0, 0), (0, 5, 1), (3, 2, 0), (2, 3, 3), (1, 1, 200)):
        header = wire.pack_header(wire.TYPE_DATA, True, KEY_ID, 1, SESSION_A, pn, 0, idx, k, n)
        events = dec.feed(sealer.seal(header, b"\x00" * 64), 0.0)
        assert not delivered(events)
        pn += 1
    assert dec.stats.dropped == ZERO_DROPS | {"malformed": 5}
    # A symbol whose block geometry contradicts the first symbol of that block
    for k, n, size in ((2, 3, 64), (2, 4, 64), (2, 3, 63)):
        header = wire.pack_header(wire.TYPE_DATA, True, KEY_ID, 1, SESSION_A, pn, 9,
                                  pn % 2, k, n)
        dec.feed(sealer.seal(header, b"\x00" * size), 0.0)
        pn += 1
    assert dec.stats.dropped["malformed"] == 5 + 2


def _frames(rng: random.Random, n: int) -> bytes:
    return b"".join(encode_frame(Record(value=rng.randbytes(rng.randint(0, 50)),
                                        topic="t", offset=i, stream_seq=i + 1, seq=i + 1))
                    for i in range(n))


@st.composite
def sealed_packets(draw):
    """Datagrams with a valid MAC but arbitrary header fields and payloads."""
    ptype = draw(st.sampled_from([wire.TYPE_DATA, wire.TYPE_DATA, wire.TYPE_HEARTBEAT]))
    k = draw(st.integers(0, 6))
    n = draw(st.integers(0, 8))
    idx = draw(st.integers(0, 8))
    seq = draw(st.integers(0, 12) | st.integers(0, wire.MAX_BLOCK_SEQ))
    channel = draw(st.integers(0, 3))
    kind = draw(st.sampled_from(["random", "block", "corrupt-block"]))
    if kind == "random":
        payload = draw(st.binary(max_size=400))
    else:
        rng = random.Random(draw(st.integers(0, 2**32)))
        chunk = _frames(rng, draw(st.integers(0, 4)))
        start = draw(st.integers(0, len(chunk)))
        chunk = chunk[start:]
        first = draw(st.sampled_from([0, NO_FRAME, draw(st.integers(0, 2**32 - 1))]))
        prev = draw(st.sampled_from([NO_BLOCK, seq - 1 if seq else 0, 3]))
        payload = pack_block(chunk, first, prev, len(chunk) + 16 + draw(st.integers(0, 30)))
        if kind == "corrupt-block" and payload:
            b = bytearray(payload)
            for _ in range(draw(st.integers(1, 4))):
                b[draw(st.integers(0, len(b) - 1))] ^= draw(st.integers(1, 255))
            payload = bytes(b)
    return ptype, channel, seq, idx, k, n, payload


@settings(max_examples=200, deadline=None)
@given(packets=st.lists(sealed_packets(), max_size=30), encrypt=st.booleans(),
       times=st.lists(st.floats(0, 5), min_size=1, max_size=5))
def test_authenticated_garbage_never_raises(packets, encrypt, times):
    sealer = _sealer(encrypt)
    dec = LinkDecoder(Opener({KEY_ID: PSK}, encrypt=encrypt),
                      DecoderSettings(reorder_window=4, max_record_bytes=4096))
    now = 0.0
    for pn, (ptype, channel, seq, idx, k, n, payload) in enumerate(packets):
        header = wire.pack_header(ptype, encrypt, KEY_ID, channel, SESSION_A, pn, seq, idx, k, n)
        dec.feed(sealer.seal(header, payload), now)
        now += times[pn % len(times)]
    dec.tick(now + 100.0)
    st_ = dec.stats
    assert st_.packets_received == len(packets)
    assert st_.dropped["auth"] == st_.dropped["replay"] == 0


# -- a whole session with hostile noise, seeded ---------------------------------------
def test_noise_storm_keeps_the_good_session_intact():
    data, hb, records = encode_session(encrypt=False, redundancy=0.25)
    rng = random.Random(1234)
    noise = []
    for _ in range(400):
        d = bytearray(rng.choice(data))
        choice = rng.randrange(4)
        if choice == 0:
            d[rng.randrange(len(d))] ^= 1 << rng.randrange(8)
        elif choice == 1:
            d = d[:rng.randrange(len(d))]
        elif choice == 2:
            # from the seeded generator, so that a failure can be run again
            d = bytearray(rng.randbytes(rng.randrange(1, 1500)))
        else:
            d[wire.SESSION_ID] = rng.randbytes(wire.SESSION_ID_SIZE)  # another session
        noise.append(bytes(d))
    stream = list(data)
    for d in noise:
        stream.insert(rng.randint(0, len(stream)), d)
    dec = new_decoder(encrypt=False)
    events = feed_all(dec, stream + hb) + dec.tick(100.0)
    got = delivered(events)
    assert [(r.offset, r.value) for r in got] == [(r.offset, r.value) for r in records]
    # another session id is an older session (replay) or a newer one that fails its tag
    # (auth) or finds the key-derivation budget spent (rate_limited); random bytes that
    # happen to start with the magic byte name another protocol version (version: about
    # one run in 1,500 drew one when the bytes came from os.urandom)
    d = dec.stats.dropped
    assert d["auth"] + d["malformed"] + d["replay"] + d["rate_limited"] + d["version"] \
        == len(noise)
    assert dec.session_id == SESSION_A


def test_old_session_replay_after_egress_restart_does_not_hijack(session_a):
    data_a, _, _ = session_a
    data_b, hb_b, _ = encode_session(SESSION_B, records=[
        Record(value=b"live", topic="fuzz", offset=900 + i, durable=True) for i in range(40)])
    dec = new_decoder()  # a restarted egress: it never saw session A
    dec.feed(data_b[0], 0.0)
    dec.feed(data_a[0], 0.1)  # captured long ago, replayed by someone on the low side
    events = feed_all(dec, data_b[1:] + hb_b, 0.2) + dec.tick(10.0)
    assert dec.session_id == SESSION_B
    assert dec.stats.dropped["replay"] == 1
    assert len(delivered(events)) >= 39


def test_replay_of_older_session_refused_by_restarted_egress_with_persisted_floor(session_a):
    """The egress persists the session it accepted last (appliance/state.py): restarted,
    it refuses an older session even before the live one shows up."""
    data_a, _, _ = session_a
    dec = LinkDecoder(Opener({KEY_ID: PSK}), DecoderSettings(),
                      floor_epoch=session_epoch(SESSION_B))
    events = feed_all(dec, data_a, 0.0)
    assert dec.session_id is None
    assert dec.stats.dropped["replay"] == len(data_a)
    assert not [e for e in events if isinstance(e, Delivered)]


def test_restarted_egress_takes_up_its_last_session_again(session_a):
    """After an egress restart the live session (the persisted one) is accepted."""
    data_a, _, _ = session_a
    dec = LinkDecoder(Opener({KEY_ID: PSK}), DecoderSettings(),
                      floor_epoch=session_epoch(SESSION_A))
    dec.resume(Checkpoint(SESSION_A, KEY_ID, 0, -1, None, 1, ()), {})
    events = feed_all(dec, data_a, 0.0)
    assert dec.session_id == SESSION_A
    assert dec.stats.dropped["replay"] == 0
    assert [e for e in events if isinstance(e, Delivered)]


def test_sender_metrics_are_gathered_from_every_page():
    """Metrics spill over several heartbeat pages; the egress must see all of them."""
    enc = LinkEncoder(LinkSettings(key_id=KEY_ID, mtu=576), PSK, SESSION_A)
    metrics = [Metric("kafka.consumer_lag", float(i), KIND_GAUGE,
                      (("channel", "events"), ("topic", f"topic-{i:03d}"), ("partition", "0")))
               for i in range(40)]
    hb = enc.heartbeat(5_000, 1_000, metrics)
    assert len(hb) > 1, "the metrics should need several pages"
    dec = new_decoder()
    feed_all(dec, hb)
    assert sorted(dec.sender_metrics.values(), key=lambda m: m.value) == metrics
    # A newer heartbeat replaces them (a revoked partition's lag does not linger).
    feed_all(dec, enc.heartbeat(6_000, 1_000, metrics[:1]))
    assert list(dec.sender_metrics.values()) == metrics[:1]


# -- batches: one receive call's datagrams fed at once ------------------------------------
def _outcome(events) -> list:
    """What the egress acts on: records delivered, records and blocks reported lost,
    sessions started."""
    out = []
    for e in events:
        if isinstance(e, Delivered):
            out += [("delivered", e.channel_id, r.topic, r.partition, r.offset, r.value)
                    for r in e.records]
        elif isinstance(e, RecordsLost | BlocksLost | SessionStarted):
            out.append(e)
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), loss=st.sampled_from([0.0, 0.05, 0.3]),
       cuts=st.lists(st.integers(1, 40), max_size=30), encrypt=st.booleans())
def test_batches_decode_as_datagrams_one_by_one(seed, loss, cuts, encrypt):
    """Any split of the arriving datagrams into receive batches gives the same records and
    loss reports as feeding them one by one: lost, duplicated and reordered datagrams,
    heartbeats, garbage and a new session included."""
    rng = random.Random(seed)
    data_a, hb_a, _ = encode_session(SESSION_A, encrypt=encrypt, redundancy=0.1,
                                     interleave_depth=2)
    data_b, hb_b, _ = encode_session(SESSION_B, encrypt=encrypt,
                                     records=make_records(5))
    stream = []
    for d in data_a + hb_a + data_b + hb_b:
        if rng.random() < loss:
            continue
        stream.append(d)
        if rng.random() < 0.05:
            stream.append(d)  # duplicated on the way
        if rng.random() < 0.03:
            stream.append(rng.randbytes(rng.randint(0, 80)))  # noise
    for _ in range(len(stream) // 10):  # local reordering
        i = rng.randrange(len(stream) - 1)
        stream[i], stream[i + 1] = stream[i + 1], stream[i]
    one = new_decoder(encrypt=encrypt)
    expected = feed_all(one, stream) + one.tick(100.0)
    batched = new_decoder(encrypt=encrypt)
    got, pos = [], 0
    for n in [*cuts, len(stream)]:
        got += batched.feed_many(stream[pos:pos + n], 0.0)
        pos += n
    got += batched.tick(100.0)
    assert _outcome(got) == _outcome(expected)
    # Not fec_recovered: a batch can hold a block's last data symbol behind a repair
    # symbol that completed the block one by one, and then needs no repair.
    a, b = one.stats, batched.stats
    assert (a.packets_received, a.blocks_ok, a.blocks_lost, a.records_delivered,
            a.records_lost, a.dropped["auth"], a.dropped["malformed"]) == \
           (b.packets_received, b.blocks_ok, b.blocks_lost, b.records_delivered,
            b.records_lost, b.dropped["auth"], b.dropped["malformed"])
