"""Hostile and mismatched input (issue 12 items 7 and 8): the cheapest rejection first, a
bounded number of key derivations under a flood, the configured mode enforced, and a
half-upgraded pair named in one event."""

from __future__ import annotations

import random

from appliance.protocol import auth, wire
from appliance.protocol.auth import Opener, new_session_id
from appliance.protocol.decoder import DecoderSettings, LinkDecoder
from appliance.protocol.encoder import LinkEncoder, LinkSettings
from appliance.protocol.events import Delivered, PeerMismatch
from appliance.protocol.records import Record

PSK = bytes(range(32))
EPOCH = 1_700_000_000_000


def _real(session_id: int, n: int = 200, encrypt: bool = True) -> list[bytes]:
    enc = LinkEncoder(LinkSettings(mtu=1500, key_id=1, encrypt=encrypt), PSK, session_id)
    out = []
    for i in range(n):
        enc.add(1, Record(value=bytes([i % 256]) * 3000, offset=i + 1))
        out += enc.take_datagrams()
    return out + enc.flush() + enc.heartbeat(1_000, 1_000)


def _forged(rng: random.Random, real: list[bytes], epochs: range) -> bytes:
    """A made-up session id of the given epochs behind a valid-looking header."""
    d = bytearray(rng.choice(real))
    d[wire.SESSION_ID] = (rng.choice(epochs) << 64 | rng.getrandbits(64)).to_bytes(16, "big")
    return bytes(d)


def test_forged_new_sessions_cost_a_bounded_number_of_derivations(monkeypatch):
    """Every datagram with an unseen session id used to buy an HKDF derivation before
    anything looked at its epoch: a flood of them cost real data. Now older epochs cost
    none, newer ones a rate-limited few, and the real session comes through whole."""
    derived = []
    real_derive = auth.derive_session_key
    monkeypatch.setattr(auth, "derive_session_key",
                        lambda *a, **k: (derived.append(a), real_derive(*a, **k))[1])
    rng = random.Random(3)
    real = _real(new_session_id(EPOCH))
    dec = LinkDecoder(Opener({1: PSK}), DecoderSettings())
    events, now = [], 0.0
    older = range(1, EPOCH)
    newer = range(EPOCH + 1, EPOCH + 10**9)
    for i, d in enumerate(real):
        batch = [d] + [_forged(rng, real, older if i else newer) for _ in range(3)]
        if i == 0:  # before the real session is known, every epoch is a candidate
            batch = [_forged(rng, real, newer) for _ in range(3000)] + batch
        events += dec.feed_many(batch, now)
        now += 0.0005  # 2000 real datagrams a second, 3 forged ones with each
    events += dec.tick(now + 10)
    got = [r.offset for e in events if isinstance(e, Delivered) for r in e.records]
    assert got == list(range(1, 201))
    # 3000 forged newer-epoch datagrams in one burst: the budget's burst, not 3000
    assert len(derived) <= auth.DERIVE_BURST + 1  # (+1: the real session's own key)
    assert dec.stats.dropped["rate_limited"] >= 3000 - auth.DERIVE_BURST
    # the older-epoch forgeries once the session is known: no derivation at all
    assert dec.stats.dropped["replay"] == 3 * (len(real) - 1)


def test_the_configured_mode_is_enforced():
    """An egress set to encrypt takes no cleartext (authenticate-mode) datagrams, however
    authentic: it would deliver what the operator meant to be encrypted on the wire."""
    clear = _real(new_session_id(EPOCH), n=20, encrypt=False)
    dec = LinkDecoder(Opener({1: PSK}, encrypt=True), DecoderSettings())
    events = dec.feed_many(clear, 0.0) + dec.tick(10.0)
    assert not [e for e in events if isinstance(e, Delivered)]
    assert dec.stats.dropped["auth"] == len(clear)
    assert [(e.what, e.ours, e.theirs) for e in events if isinstance(e, PeerMismatch)] == \
        [("mode", "encrypt", "authenticate")]


def test_another_protocol_version_is_named_once_per_interval():
    v1 = bytes([0xDD, 0xC1, 1, 0x81]) + bytes(80)  # what a v1 ingress sends
    dec = LinkDecoder(Opener({1: PSK}), DecoderSettings())
    events = []
    for i in range(100):
        events += dec.feed(v1, i * 0.01)
    events += dec.feed(v1, 30.0)
    assert [(e.what, e.ours, e.theirs, e.datagrams) for e in events] == \
        [("version", "3", "1", 1), ("version", "3", "1", 100)]
    assert dec.stats.dropped["version"] == 101
