"""Session ids and pairing (issue 12 item 5): enough randomness that two sessions never share
a key, the link id in the key derivation, and no ingress locked out by its clock."""

from __future__ import annotations

from appliance.protocol.auth import Opener, new_session_id, session_epoch
from appliance.protocol.decoder import DecoderSettings, LinkDecoder
from appliance.protocol.encoder import LinkEncoder, LinkSettings
from appliance.protocol.events import Delivered, SessionRefused, SessionStarted
from appliance.protocol.records import Record

PSK = bytes(range(32))


def test_sessions_of_one_epoch_differ_in_at_least_64_random_bits():
    """Two ingress runs in the same millisecond (a Pi without RTC starts at the same
    clock every boot) must not share a session id: that would reuse AES-GCM nonces."""
    ids = [new_session_id(1_700_000_000_000) for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    varying = 0
    for i in ids:
        varying |= i ^ ids[0]
    assert bin(varying).count("1") >= 64
    assert {session_epoch(i) for i in ids} == {1_700_000_000_000}


def _session(link_id: str, session_id: int, n: int = 20, encrypt: bool = True) -> list[bytes]:
    enc = LinkEncoder(LinkSettings(mtu=1500, key_id=1, link_id=link_id, encrypt=encrypt), PSK,
                      session_id)
    for i in range(n):
        enc.add(1, Record(value=b"v%d" % i, offset=i + 1))
    return enc.flush() + enc.heartbeat(1_000, 1_000)


def _run(dec: LinkDecoder, datagrams: list[bytes], now: float = 0.0) -> list:
    events = []
    for d in datagrams:
        events += dec.feed(d, now)
    return events + dec.tick(now + 10)


def test_the_link_id_is_part_of_the_key():
    """Two links sharing a pre-shared key cannot take each other over."""
    sid = new_session_id(1_000)
    other = LinkDecoder(Opener({1: PSK}, link_id="plant-b"), DecoderSettings())
    assert not [e for e in _run(other, _session("plant-a", sid)) if isinstance(e, Delivered)]
    assert other.session_id is None and other.stats.dropped["auth"] > 0
    same = LinkDecoder(Opener({1: PSK}, link_id="plant-a"), DecoderSettings())
    assert sum(len(e.records) for e in _run(same, _session("plant-a", sid))
               if isinstance(e, Delivered)) == 20


def test_an_older_authentic_session_is_named_then_accepted_on_request():
    """An ingress that lost its state with its clock an hour behind: the egress refuses
    the older-looking session (a replay looks the same) but says so, rate-limited, naming
    it; the operator's accept-session lets exactly that session in."""
    hour = 3_600_000
    dec = LinkDecoder(Opener({1: PSK}), DecoderSettings())
    current = new_session_id(10 * hour)
    _run(dec, _session("", current))
    behind = new_session_id(9 * hour)
    datagrams = _session("", behind)
    events = _run(dec, datagrams, now=1.0)
    refused = [e for e in events if isinstance(e, SessionRefused)]
    assert [(e.session_id, e.current, e.floor_epoch) for e in refused] == \
        [(behind, current, 10 * hour)]  # once, not once per datagram
    assert dec.session_id == current and dec.stats.dropped["replay"] == len(datagrams)
    events = _run(dec, datagrams, now=20.0)  # ten seconds on: one more line, with a count
    assert [e.datagrams for e in events if isinstance(e, SessionRefused)] == [len(datagrams)]
    dec.allowed_session = behind  # `ddc accept-session` on the egress
    events = _run(dec, datagrams, now=40.0)
    assert [e for e in events if isinstance(e, SessionStarted)] == \
        [SessionStarted(behind, current, 0)]
    assert sum(len(e.records) for e in events if isinstance(e, Delivered)) == 20
    # the ingress's next run continues from its (now saved) epoch: accepted as usual
    events = _run(dec, _session("", new_session_id(9 * hour + 1)), now=60.0)
    assert sum(len(e.records) for e in events if isinstance(e, Delivered)) == 20


def test_a_refused_session_s_records_are_reported_by_range_from_its_heartbeats():
    """The refused session's records never reach a sink: the egress reads the session's
    authentic heartbeats (bounded) and reports what each stream's mark adds, once, as
    lost by range (reason session_refused); a replayed heartbeat reports nothing again;
    a Kafka partition's range starts after what the egress delivered already."""
    from appliance.protocol.decoder import REFUSED
    from appliance.protocol.events import RecordsLost

    hour = 3_600_000
    dec = LinkDecoder(Opener({1: PSK}), DecoderSettings())
    current = LinkEncoder(LinkSettings(mtu=1500, key_id=1), PSK, new_session_id(10 * hour))
    for i in range(5):
        current.add(2, Record(value=b"k", topic="t", partition=0, offset=100 + i,
                              prev_offset=99 + i, durable=True))
    _run(dec, current.flush() + current.heartbeat(1_000, 1_000))
    behind = LinkEncoder(LinkSettings(mtu=1500, key_id=1), PSK, new_session_id(9 * hour))
    for i in range(10):
        behind.add(1, Record(value=b"v%d" % i, offset=i + 1))
    for i in range(5):  # a Kafka ingress re-sending from an older committed offset
        behind.add(2, Record(value=b"k", topic="t", partition=0, offset=102 + i,
                             prev_offset=101 + i, durable=True))
    first = behind.flush() + behind.heartbeat(1_000, 1_000)
    for i in range(10, 25):
        behind.add(1, Record(value=b"v%d" % i, offset=i + 1))
    second = behind.flush() + behind.heartbeat(2_000, 1_000)

    def reports(events):
        return [(e.report.channel_id, e.report.first_offset, e.report.last_offset,
                 e.report.count, e.report.reason) for e in events
                if isinstance(e, RecordsLost) and e.session_id == behind.session_id]

    assert sorted(reports(_run(dec, first, now=1.0))) == \
        [(1, 1, 10, 10, REFUSED), (2, 105, 106, None, REFUSED)]
    assert reports(_run(dec, first, now=2.0)) == []  # replayed: nothing again
    assert reports(_run(dec, second, now=3.0)) == [(1, 11, 25, 15, REFUSED)]
    assert dec.session_id == current.session_id  # still refused
