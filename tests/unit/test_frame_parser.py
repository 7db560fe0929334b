"""The native frame parser (_native.parse_frames, the egress's hot path) against the
Python reference decoder (records.decode_frame_body): the same records from good frames,
the same first error, at the same place, from bad ones."""

from __future__ import annotations

import dataclasses
import random
import struct
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.protocol import _native
from appliance.protocol.errors import ProtocolError
from appliance.protocol.records import (
    _FIXED,
    FRAME_LEN_SIZE,
    Record,
    append_frame_reference,
    decode_frame_body,
    encode_frame,
)

MAX = 1 << 20


def reference(chunk: bytes, pos: int, max_frame: int):
    """What the Reassembler's loop did in Python: whole frames from pos, the first error."""
    out = []
    while pos + FRAME_LEN_SIZE <= len(chunk):
        flen = struct.unpack_from("!I", chunk, pos)[0]
        if flen > max_frame:
            return out, pos, f"frame of {flen} bytes exceeds max_record_bytes {max_frame}"
        stop = pos + FRAME_LEN_SIZE + flen
        if stop > len(chunk):
            break
        try:
            out.append(decode_frame_body(memoryview(chunk)[pos + FRAME_LEN_SIZE:stop]))
        except ProtocolError as exc:
            return out, pos, str(exc)
        pos = stop
    return out, pos, None


def native(chunk: bytes, pos: int, max_frame: int):
    records, end, error = _native.parse_frames(chunk, pos, max_frame)
    # (on an error the native pos is where the bad frame starts, as the reference's)
    assert all(type(r) is Record for r in records)
    return records, end, error


def random_record(rng: random.Random) -> Record:
    def maybe(n):
        return None if rng.random() < 0.2 else rng.randbytes(rng.randrange(n))
    filtered = rng.randrange(1, 2**40) if rng.random() < 0.1 else 0
    return Record(value=None if filtered else maybe(300), key=None if filtered else maybe(20),
                  headers=[] if filtered else
                  [(rng.choice(["h", "trace-id", "é", ""]), maybe(10))
                   for _ in range(rng.randrange(4))],
                  topic=rng.choice(["", "t", "logs.ünïcode", "x" * 300]),
                  partition=rng.randrange(-2**31, 2**31), offset=rng.randrange(-2**63, 2**63),
                  prev_offset=rng.randrange(-2**63, 2**63), timestamp=rng.randrange(-2**63, 2**63),
                  timestamp_type=rng.randrange(256), durable=rng.random() < 0.5,
                  seq=rng.randrange(2**64), stream_seq=rng.randrange(2**64), filtered=filtered)


def test_the_layout_is_the_native_modules():
    assert _FIXED.size == _native.FRAME_FIXED_SIZE
    assert FRAME_LEN_SIZE == _native.FRAME_LEN_SIZE


@pytest.mark.parametrize("seed", range(40))
def test_good_frames_decode_the_same(seed):
    rng = random.Random(seed)
    records = [random_record(rng) for _ in range(rng.randrange(1, 30))]
    chunk = b"".join(encode_frame(r) for r in records)
    cut = rng.randrange(len(chunk) + 1)  # a partial frame at the end waits for the next block
    got = native(chunk[:cut], 0, MAX)
    assert got == reference(chunk[:cut], 0, MAX)
    assert native(chunk, 0, MAX) == reference(chunk, 0, MAX) == (records, len(chunk), None)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 2**32 - 1), st.data())
def test_damaged_frames_fail_the_same(seed, data):
    rng = random.Random(seed)
    chunk = bytearray(b"".join(encode_frame(random_record(rng)) for _ in range(3)))
    for _ in range(data.draw(st.integers(1, 4))):  # flip, cut or grow bytes anywhere
        i = data.draw(st.integers(0, len(chunk) - 1))
        kind = data.draw(st.sampled_from(["flip", "cut", "grow"]))
        if kind == "flip":
            chunk[i] ^= data.draw(st.integers(1, 255))
        elif kind == "cut":
            del chunk[i]
        else:
            chunk[i:i] = bytes([data.draw(st.integers(0, 255))])
    max_frame = data.draw(st.sampled_from([MAX, 64]))
    pos = data.draw(st.integers(0, 8))
    assert native(bytes(chunk), pos, max_frame) == reference(bytes(chunk), pos, max_frame)


@given(st.binary(max_size=300), st.integers(0, 6))
def test_arbitrary_bytes_fail_the_same(blob, pos):
    assert native(blob, pos, MAX) == reference(blob, pos, MAX)


@pytest.mark.parametrize("seed", range(60))
def test_native_framing_writes_the_reference_bytes(seed):
    rng = random.Random(1000 + seed)
    native_buf, reference_buf = bytearray(b"head"), bytearray(b"head")
    for _ in range(rng.randrange(1, 20)):
        record = random_record(rng)
        _native.append_frame(native_buf, record)
        append_frame_reference(reference_buf, record)
    assert native_buf == reference_buf


def test_native_framing_refuses_what_the_layout_cannot_hold():
    buf = bytearray()
    for bad in (Record(value=b"", partition=2**31), Record(value=b"", topic="x" * 70000),
                Record(value="not bytes"), Record(value=b"", headers=[("h",)])):  # type: ignore[arg-type, list-item]
        with pytest.raises((OverflowError, ValueError, TypeError)):
            _native.append_frame(buf, bad)
    assert buf == bytearray()  # nothing half-written


def test_only_a_record_class_with_every_slot_binds():
    """parse_frames fills Record's slots in place: a class without them is refused at
    bind_record (at import), naming what is missing, and Record stays bound."""
    @dataclasses.dataclass(slots=True)
    class Short:  # no `filtered`
        value: bytes | None
        key: bytes | None = None

    @dataclasses.dataclass(slots=True)
    class Longer(Record):  # a slot parse_frames would leave empty
        extra: int = 0

    class Plain:
        pass

    for cls, says in ((Short, "Short.headers is not a slot"),
                      (Longer, "Longer has other fields than parse_frames fills"),
                      (Plain, "Plain.value is not a slot")):
        with pytest.raises(TypeError, match=says):
            _native.bind_record(cls)
    with pytest.raises(TypeError):
        _native.bind_record(Record(value=b""))  # an instance, not the class
    chunk = encode_frame(Record(value=b"v", offset=7))
    assert _native.parse_frames(chunk, 0, MAX)[0] == [Record(value=b"v", offset=7)]


def test_framing_reads_any_object_with_the_fields_and_refuses_an_empty_slot():
    """append_frame reads a Record's slots in place, anything else by attribute: the
    same bytes; a slot deleted from a Record is an AttributeError, not a crash."""
    rng = random.Random(7)
    for _ in range(20):
        record = random_record(rng)
        fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(Record)}
        by_slot, by_name = bytearray(), bytearray()
        _native.append_frame(by_slot, record)
        _native.append_frame(by_name, types.SimpleNamespace(**fields))
        assert by_slot == by_name
    emptied = Record(value=b"v")
    del emptied.key
    with pytest.raises(AttributeError):
        _native.append_frame(bytearray(), emptied)
