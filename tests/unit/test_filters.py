"""Content filters (appliance/filters.py): every rule type, allow / deny, the default, the
run markers that make a filtered gap cross the link, and bad rules refused by name."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import tomlkit
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.config import ConfigError, loads
from appliance.filters import (
    Filter,
    FilterError,
    FilterStats,
    compile_filter,
    filter_batch,
    literal_prefix,
)
from appliance.protocol.auth import Opener
from appliance.protocol.decoder import DecoderSettings, LinkDecoder
from appliance.protocol.encoder import LinkEncoder, LinkSettings
from appliance.protocol.events import Delivered, RecordsLost
from appliance.protocol.records import Record, decode_frame_body, encode_frame

PSK = bytes(range(32))
SESSION = 0x0123456789ABCDEF << 64 | 0x42


def rec(value=b"v", key=None, headers=(), topic="t", partition=0, offset=0):
    return Record(value=value, key=key, headers=list(headers), topic=topic,
                  partition=partition, offset=offset)


def one(match: dict, action: str = "deny", default: str = "allow") -> Filter:
    return compile_filter([{"action": action, "match": match}], default)


# (match, a record it matches, a record it does not)
CASES = {
    "topic": ({"topic": "a"}, rec(topic="a"), rec(topic="ab")),
    "topic_regex": ({"topic_regex": "a.*"}, rec(topic="abc"), rec(topic="xabc")),
    "partition": ({"partition": 3}, rec(partition=3), rec(partition=4)),
    "partition_list": ({"partition": [1, 3]}, rec(partition=1), rec(partition=2)),
    "key": ({"key": "k1"}, rec(key=b"k1"), rec(key=b"k12")),
    "key_regex": ({"key_regex": "^user-[0-9]+$"}, rec(key=b"user-12"), rec(key=None)),
    "header": ({"header": "trace"}, rec(headers=[("trace", None)]), rec(headers=[("x", b"")])),
    "header_regex": ({"header": "env", "header_regex": "^prod"},
                     rec(headers=[("env", b"prod-1")]), rec(headers=[("env", b"test")])),
    "value_contains": ({"value_contains": "secret"}, rec(value=b"a secret b"),
                       rec(value=b"a secre b")),
    "value_regex": ({"value_regex": "pw=[a-z]+"}, rec(value=b"x pw=abc"), rec(value=None)),
    "value_json_field": ({"value_json_field": "user.id"}, rec(value=b'{"user": {"id": 1}}'),
                         rec(value=b'{"user": 1}')),
    "value_json_equals": ({"value_json_field": "level", "value_json_equals": "debug"},
                          rec(value=b'{"level": "debug"}'), rec(value=b'{"level": "info"}')),
    "value_json_number": ({"value_json_field": "n", "value_json_equals": 1},
                          rec(value=b'{"n": 1}'), rec(value=b'{"n": true}')),
    "value_json_not_json": ({"value_json_field": "a"}, rec(value=b'{"a": 0}'),
                            rec(value=b"not json")),
    # The byte scan that spares a parse must not miss a field written with escapes.
    "value_json_escaped_name": ({"value_json_field": "level"},
                                rec(value=b'{"\\u006cevel": 1}'), rec(value=b'{"lev": 1}')),
    "value_json_escaped_value": ({"value_json_field": "level", "value_json_equals": "debug"},
                                 rec(value=b'{"level": "d\\u0065bug"}'),
                                 rec(value=b'{"level": "d\\u0065bugs"}')),
    "value_json_unicode": ({"value_json_field": "niveau\u00e9", "value_json_equals": "\u00e9"},
                           rec(value='{"niveau\u00e9": "\u00e9"}'.encode()),
                           rec(value='{"niveau\u00e9": "e"}'.encode())),
    "min_size": ({"min_size": 4}, rec(value=b"1234"), rec(value=b"123")),
    "max_size": ({"max_size": 3}, rec(value=b"123"), rec(value=b"1234")),
    "all_conditions": ({"topic": "a", "partition": 1}, rec(topic="a", partition=1),
                       rec(topic="a", partition=2)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_rule_type_denies_what_it_matches_only(case):
    match, hit, miss = CASES[case]
    f = one(match)
    assert f.decide(hit) == "rule0"
    assert f.decide(miss) is None


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_rule_type_allows_under_a_deny_default(case):
    match, hit, miss = CASES[case]
    f = one(match, action="allow", default="deny")
    assert f.decide(hit) is None
    assert f.decide(miss) == "default"


@pytest.mark.parametrize("key", ["a", "\\u0061"])
def test_a_value_nested_too_deep_to_parse_has_no_field_and_kills_nothing(key):
    """A hostile record: an array nested a million deep. json.loads raises RecursionError
    (not a ValueError), which escaped the rule and ended the ingress's source thread."""
    deep = f'{{"{key}": 1, "b": '.encode() + b"[" * 1_000_000 + b"]" * 1_000_000 + b"}"
    f = one({"value_json_field": "a"})
    assert f.decide(rec(value=deep)) is None
    assert one({"value_json_field": "b"}).decide(rec(value=deep)) is None


def test_json_rules_read_values_as_json_loads_does():
    """Through the rule: the native scan's answers (tests/unit/test_scan.py) and the
    parse it hands over to agree on documents that take either way."""
    cases = [(b'{"level": "debug"}', True), (b'{"level": "debug",}', False),
             (b'{"level": "info", "level": "debug"}', True),
             (b'{"level": "debug", "level": "info"}', False),
             (b'{"lev\\u0065l": "debug"}', True), (b'{"level": "\\u0064ebug"}', True),
             (b'{"level": ["debug"]}', False), (b'{"level": {"x": "debug"}}', False),
             (b'\xef\xbb\xbf{"level": "debug"}', True),  # json.loads takes a BOM
             ('{"level": "debug"}'.encode("utf-16"), True)]
    f = one({"value_json_field": "level", "value_json_equals": "debug"})
    for value, denied in cases:
        assert (f.decide(rec(value=value)) is not None) == denied, value


STRINGS = st.sampled_from(["debug", "d\u00e9bug", 'a"b', "a\\b", "tab\there", "\u2028", ""]) \
    | st.text(max_size=6)


@settings(max_examples=500, deadline=None)
@given(STRINGS, st.one_of(STRINGS, st.integers(), st.booleans(), st.none(),
                          st.lists(STRINGS, max_size=2)), st.booleans())
def test_value_json_equals_a_string_decides_as_json_loads(want, field, ensure_ascii):
    """A string is compared as JSON text; the same string written with escapes (or an
    escaped want) still matches, and nothing else does."""
    value = json.dumps({"x": 1, "f": field}, ensure_ascii=ensure_ascii).encode()
    f = one({"value_json_field": "f", "value_json_equals": want})
    assert (f.decide(rec(value=value)) is not None) == (field == want)


PIECES = ["a", "b", "ab", "x", "\\.", ".", "b*", "c?", "(?:a|ab)", "[ab]", "\\b", "^", "$",
          "(?=a)", "a{0}", "\\x00", "(?i:b)", "\\d+", "|"]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=5), st.booleans(),
       st.lists(st.binary(max_size=40) | st.sampled_from([b"ab", b"a", b"abab", b"A.b"]),
                max_size=6))
def test_value_regex_decides_as_the_regex_alone(pieces, ignorecase, values):
    """The memmem run before the regex (its literal prefix) never changes a decision."""
    pattern = ("(?i)" if ignorecase else "") + "".join(pieces)
    try:
        search = re.compile(pattern.encode()).search
    except re.error:
        return
    f = one({"value_regex": pattern})
    for value in values:
        assert (f.decide(rec(value=value)) is not None) == (search(value) is not None)


@pytest.mark.parametrize("pattern, prefix", [
    (r"password=\S+", b"password="), (r"^secret\.", b"secret."), (r"(?i)abc", b""),
    (r"ab*c", b"a"), (r"a|b", b""), (r"(?x) a b", b"ab"), (r"\bfoo", b"foo"),
    (r"(?i:a)b", b""), (r"abc?", b"ab"), (r"", b""),
])
def test_literal_prefix_is_what_every_match_begins_with(pattern, prefix):
    assert literal_prefix(re.compile(pattern.encode())) == prefix


def test_first_matching_rule_decides_in_order():
    f = compile_filter([
        {"name": "keep-audit", "action": "allow", "match": {"topic": "audit"}},
        {"name": "no-big", "action": "deny", "match": {"min_size": 10}},
    ], "allow")
    assert f.decide(rec(topic="audit", value=b"x" * 20)) is None
    assert f.decide(rec(topic="other", value=b"x" * 20)) == "no-big"
    assert f.decide(rec(topic="other", value=b"x")) is None
    assert f.rule_names() == ["no-big"]


def test_no_rules_and_allow_is_no_filter_at_all():
    assert compile_filter([], "allow") is None
    deny_all = compile_filter([], "deny")
    assert deny_all.decide(rec()) == "default"


@pytest.mark.parametrize(("rules", "key"), [
    ([{"action": "deny", "match": {"value_regex": "("}}], "filter[0].match.value_regex"),
    ([{"action": "deny", "match": {"topic_regex": "[a"}}], "filter[0].match.topic_regex"),
    ([{"action": "deny", "match": {"vlaue": "x"}}], "filter[0].match.vlaue"),
    ([{"action": "drop", "match": {"topic": "x"}}], "filter[0].action"),
    ([{"match": {"topic": "x"}}], "filter[0].action"),
    ([{"action": "deny"}], "filter[0].match"),
    ([{"action": "deny", "match": {}}], "filter[0].match"),
    ([{"action": "deny", "match": {"partition": "1"}}], "filter[0].match.partition"),
    ([{"action": "deny", "match": {"min_size": -1}}], "filter[0].match.min_size"),
    ([{"action": "deny", "match": {"header_regex": "x"}}], "filter[0].match.header_regex"),
    ([{"action": "deny", "match": {"value_json_equals": 1}}],
     "filter[0].match.value_json_equals"),
    ([{"action": "deny", "match": {"value_json_field": ".".join("a" * 17)}}],
     "filter[0].match.value_json_field"),
    ([{"action": "deny", "match": {"topic": "x"}, "when": 1}], "filter[0].when"),
    ([{"name": "a", "action": "deny", "match": {"topic": "x"}},
      {"name": "a", "action": "deny", "match": {"topic": "y"}}], "filter[1].name"),
])
def test_bad_rules_name_their_key(rules, key):
    with pytest.raises(FilterError) as err:
        compile_filter(rules, "allow")
    assert err.value.key == key


CONFIG = """role = "ingress"
[link]
peer = "127.0.0.1:9"
key_file = "/k"
[[channel]]
id = 1
name = "a"
type = "udp"
[channel.udp]
listen = "127.0.0.1:9"
[[channel]]
id = 2
name = "b"
type = "udp"
filter_default = "allow"
[channel.udp]
listen = "127.0.0.1:10"
[[channel.filter]]
action = "allow"
[channel.filter.match]
topic = "x"
[[channel.filter]]
action = "deny"
[channel.filter.match]
value_regex = "(unclosed"
"""


def test_bad_rule_is_one_line_naming_channel_rule_and_field():
    with pytest.raises(ConfigError) as err:
        loads(CONFIG, "x.toml", check_files=False)
    assert err.value.problems == [
        "x.toml:25: channel[1].filter[1].match.value_regex: bad regular expression "
        "'(unclosed': missing ), unterminated subpattern at position 0"]


def test_every_bad_rule_of_a_channel_gets_its_own_line():
    text = CONFIG + """[[channel.filter]]
action = "deny"
[channel.filter.match]
colour = "red"
"""
    with pytest.raises(ConfigError) as err:
        loads(text, "x.toml", check_files=False)
    assert [p.split(": ")[1] for p in err.value.problems] == [
        "channel[1].filter[1].match.value_regex", "channel[1].filter[2].match.colour"]
    assert err.value.problems[1].startswith("x.toml:29: ")


def test_check_config_refuses_a_bad_rule_without_a_traceback(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(CONFIG.replace('key_file = "/k"', 'key_file = "/dev/null"'))
    out = subprocess.run([sys.executable, "-m", "appliance.cli", "check-config", str(path)],
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "channel[1].filter[1].match.value_regex: bad regular expression" in out.stdout + \
        out.stderr
    assert "Traceback" not in out.stderr


def test_a_good_filter_is_compiled_into_the_channel():
    cfg = loads(CONFIG.replace("(unclosed", "pw="), "x.toml", check_files=False)
    assert cfg.channels[0].filter is None
    assert cfg.channels[1].filter.decide(rec(topic="y", value=b"pw=1")) == "rule1"
    doc = tomlkit.parse(CONFIG)
    doc["channel"][1]["filter_default"] = "maybe"
    with pytest.raises(ConfigError, match=r"channel\[1\].filter_default: must be"):
        loads(tomlkit.dumps(doc), "x.toml", check_files=False)


# -- the ingress's pass: runs of filtered records become one marker each -------------
def _stats(f):
    lines = []
    return FilterStats(f, "c", "ingress", lambda *a, **k: lines.append((a, k))), lines


def test_filter_batch_puts_one_marker_per_run_and_stream():
    f = one({"value_contains": "drop"})
    stats, lines = _stats(f)
    batch = [rec(b"a", offset=1), rec(b"drop", offset=2), rec(b"drop", offset=3),
             rec(b"drop", partition=1, offset=7), rec(b"b", offset=4), rec(b"drop", offset=5)]
    out = filter_batch(f, stats, batch)
    assert [(r.partition, r.offset, r.filtered) for r in out] == \
        [(0, 1, 0), (0, 3, 2), (1, 7, 1), (0, 4, 0), (0, 5, 1)]
    assert stats.counts == {"rule0": 4}
    (args, fields), = lines  # rate-limited: one line for the burst
    assert fields["offset"] == 2 and fields["topic"] == "t" and "drop" not in str(args)


def test_marker_frame_round_trips():
    m = Record(value=None, topic="t", partition=2, offset=99, prev_offset=90, filtered=9,
               durable=True)
    m.seq, m.stream_seq = 5, 4
    back = decode_frame_body(memoryview(encode_frame(m))[4:])
    assert (back.filtered, back.offset, back.prev_offset, back.value, back.durable) == \
        (9, 99, 90, None, True)
    plain = decode_frame_body(memoryview(encode_frame(rec(value=None)))[4:])
    assert plain.filtered == 0 and plain.value is None


@pytest.mark.parametrize("durable", [True, False])
def test_filtered_gaps_and_tails_are_never_reported_lost(durable):
    """Through the real encoder and decoder: the markers fill the gaps (mid-stream and at
    the tail that only the heartbeat announces), so nothing is reported lost."""
    f = one({"value_contains": "drop"})
    stats, _ = _stats(f)
    enc = LinkEncoder(LinkSettings(), PSK, SESSION)
    records = [Record(value=b"drop" if i % 3 or i > 40 else b"keep", topic="t", offset=i + 1,
                      durable=durable) for i in range(50)]
    for r in filter_batch(f, stats, records):
        enc.add(1, r)
    data = enc.flush() + enc.heartbeat(1000, 1000)
    dec = LinkDecoder(Opener({1: PSK}), DecoderSettings())
    events = dec.feed_many(data, 0.0) + dec.tick(100.0)
    assert not [e for e in events if isinstance(e, RecordsLost)]
    got = [r for e in events if isinstance(e, Delivered) for r in e.records]
    assert [r.value for r in got if not r.filtered] == [b"keep"] * 14
    assert sum(r.filtered for r in got) == 36 == dec.stats.records_filtered
    assert dec.stats.records_delivered == 14
    # a real loss beside filtered runs is still reported
    enc2 = LinkEncoder(LinkSettings(), PSK, SESSION + 1)
    out = filter_batch(f, stats, [Record(value=v, topic="t", offset=i + 1, durable=durable)
                                  for i, v in enumerate([b"a", b"drop", b"b", b"c"])])
    enc2.add(1, out[0])
    enc2.add(1, out[1])
    enc2.flush()  # this block is "lost"
    enc2.add(1, out[2])
    enc2.add(1, out[3])
    dec2 = LinkDecoder(Opener({1: PSK}), DecoderSettings())
    lost = [e.report for e in dec2.feed_many(enc2.flush(), 0.0) + dec2.tick(100.0)
            if isinstance(e, RecordsLost)]
    # (the marker of offset 2 was in the lost block: the egress cannot know it for one)
    assert [(r.first_offset, r.last_offset) for r in lost] in ([(1, 2)], [(None, 2)])
