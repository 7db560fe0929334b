"""appliance/_scan.c, the filters' value scans: contains() as `in` does, and the JSON
scanner behind the JSON rules as json.loads would (the value at a path, or none), on any
bytes; where it cannot tell cheaply it says so (True) and the filter parses."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance._scan import contains
from appliance._scan import json_field as field

MISSING = object()


def by_parsing(doc: bytes, path: tuple[str, ...]):
    try:
        node = json.loads(doc)
    except (ValueError, RecursionError):
        return MISSING
    for name in path:
        if not isinstance(node, dict) or name not in node:
            return MISSING
        node = node[name]
    return node


def canonical(x) -> str:
    return json.dumps(x, sort_keys=True)  # NaN, -0.0 and nested duplicates compare by text


def may_be_unsure(doc: bytes) -> bool:
    """The cases the module's comment lists, roughly (a superset)."""
    return (b"\\" in doc or b"\x00" in doc[:4] or doc[:1] in (b"\xef", b"\xfe", b"\xff")
            or doc.count(b"[") + doc.count(b"{") > 200
            or re.search(rb"[-+.eE0-9]{600,}", doc) is not None)


def check(doc: bytes, path: tuple[str, ...]) -> None:
    got = field(doc, tuple(p.encode() for p in path))
    want = by_parsing(doc, path)
    if got is True:
        assert may_be_unsure(doc), doc
    elif got is None:
        assert want is MISSING, (doc, want)
    else:
        assert want is not MISSING, (doc, got)
        assert canonical(json.loads(got)) == canonical(want), (doc, got, want)


NAMES = st.sampled_from(["level", "a", "b", "user", "id", "lev", "levels", "é", "a b", ""])
SCALARS = (st.none() | st.booleans() | st.integers(-10**20, 10**20)
           | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(alphabet=st.characters(codec="utf-8"), max_size=8) | NAMES)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(NAMES, inner, max_size=4), max_leaves=20)
PATHS = st.lists(NAMES, min_size=1, max_size=3).map(tuple)


def dumps(value, ensure_ascii: bool, compact: bool, indent) -> bytes:
    seps = (",", ":") if compact else (", ", ": ")
    return json.dumps(value, ensure_ascii=ensure_ascii, separators=seps,
                      indent=indent).encode("utf-8", "surrogatepass")


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(NAMES, VALUES, max_size=5), PATHS, st.booleans(), st.booleans(),
       st.sampled_from([None, 0, 2]))
def test_a_document_answers_as_json_loads(doc, path, ensure_ascii, compact, indent):
    check(dumps(doc, ensure_ascii, compact, indent), path)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(NAMES, VALUES, min_size=1, max_size=4), PATHS,
       st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(["del", "ins", "set"]),
                          st.binary(min_size=1, max_size=2)), min_size=1, max_size=3))
def test_a_broken_document_answers_as_json_loads(doc, path, edits):
    """Bytes deleted, inserted or replaced: mostly invalid JSON, sometimes still valid
    with another meaning; either way the same answer as parsing."""
    blob = bytearray(dumps(doc, False, True, None))
    for at, kind, data in edits:
        at %= len(blob) + 1
        if kind == "del":
            del blob[at:at + len(data)]
        elif kind == "ins":
            blob[at:at] = data
        else:
            blob[at:at + len(data)] = data
    check(bytes(blob), path)


@settings(max_examples=600, deadline=None)
@given(st.binary(max_size=64), PATHS)
def test_any_bytes_answer_as_json_loads(blob, path):
    check(blob, path)


@pytest.mark.parametrize("doc, path, want", [
    (b'{"a": 1, "a": 2}', ("a",), b"2"),                    # the last duplicate, as a dict
    (b'{"a": {"b": 1}, "a": {"c": 2}}', ("a", "b"), None),  # ... with or without the rest
    (b'{"a": {"b": 1}, "a": 3}', ("a", "b"), None),
    (b'{"a": [1, {"b": 2}]}', ("a", "b"), None),             # a list is not an object
    (b' \t\r\n{"a" : NaN }\n', ("a",), b"NaN"),
    (b'{"a": -Infinity}', ("a",), b"-Infinity"),
    (b'{"a": 1,}', ("a",), None),                            # a trailing comma
    (b'{"a": 01}', ("a",), None),
    (b'{"a": 1.}', ("a",), None),
    (b'{"a": "x\ty"}', ("a",), None),                        # a raw control character
    (b'{"a": "\xed\xa0\x80"}', ("a",), b'"\xed\xa0\x80"'),   # surrogatepass
    (b'{"a": "\xc0\xaf"}', ("a",), None),                    # an overlong sequence
    (b'{"a": "\xf4\x90\x80\x80"}', ("a",), None),            # past U+10FFFF
    (b'[{"a": 1}]', ("a",), None),
    (b'{"a": 1} x', ("a",), None),
    (b'{"\\u0061": 1}', ("a",), True),                      # an escaped key: parse it
    (b'{"b": 1, "a": ' + b"[" * 300 + b"]" * 300 + b"}", ("a",), True),  # deep: parse it
    (b'{"a": ' + b"1" * 5000 + b"}", ("a",), True),          # Python's int digit limit
    (b'{\x00"\x00a\x00"\x00:\x001\x00}\x00', ("a",), True),  # UTF-16: parse it
    (b'\xef\xbb\xbf{"a": 1}', ("a",), True),                 # a BOM: parse it
])
def test_documented_cases(doc, path, want):
    assert field(doc, tuple(p.encode() for p in path)) == want
    if want is not True:
        check(doc, path)


def test_bad_arguments_are_refused_with_a_message():
    with pytest.raises(TypeError, match="tuple of bytes"):
        field(b"{}", ("a",))
    with pytest.raises(ValueError, match="1 to 16 names"):
        field(b"{}", ())
    assert field(memoryview(b'{"a": 1}'), (b"a",)) == b"1"


def test_a_deep_document_costs_no_recursion_in_c():
    """Nesting beyond MAX_DEPTH is handed to the parser, not descended into."""
    deep = b'{"a": ' + b"[" * 1_000_000 + b"]" * 1_000_000 + b"}"
    assert field(deep, (b"a",)) is True


def test_the_selfcheck_finds_the_scan_agrees_with_json_loads():
    """What the wheel build and the images run on their own architecture (arm64 under
    qemu-user): special bytes at every offset of the word-at-a-time skip."""
    from appliance.protocol import selfcheck

    assert selfcheck.check_json_field() == []


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=12), st.integers(0, 300))
def test_contains_answers_as_in(hay, needle, at):
    assert contains(hay, needle) == (needle in hay)
    planted = hay[:at] + needle + hay[at:]
    assert contains(planted, needle)
    assert contains(memoryview(planted), needle)
