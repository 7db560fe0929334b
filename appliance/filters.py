"""Per-channel content filters: an ordered list of rules, each a match and an action.

    [[channel]]
    ...
    filter_default = "allow"          # what a record no rule matches gets
    [[channel.filter]]
    name = "no-debug"                 # names the rule in metrics and logs (default rule<i>)
    action = "deny"
    [channel.filter.match]
    topic_regex = "^app\\."
    value_json_field = "level"
    value_json_equals = "debug"

A rule matches when every condition of its match holds; the first rule that matches
decides, and a record no rule matches gets the channel's default. Rules are compiled
(regexes included) when the config is read: a bad one is a one-line error naming the
key (`channel[2].filter[3].match.value_regex: ...`). docs/filters.md has the reference.

A channel without rules has no filter at all (`compile_filter` returns None): the
daemons then do no per-record work.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from ._scan import contains
from ._scan import json_field as json_text_at
from .protocol.records import Record

ACTIONS = ("allow", "deny")
RULE_KEYS = {"name", "action", "match"}
MATCH_KEYS = {"topic", "topic_regex", "partition", "key", "key_regex", "header",
              "header_regex", "value_contains", "value_regex", "value_json_field",
              "value_json_equals", "min_size", "max_size"}
JSON_PATH_MAX = 16  # names in a value_json_field path (the native scan's bound)
LOG_EVERY = 10.0  # seconds: at most one `records_filtered` line per channel and interval

Test = Callable[[Record], bool]
Search = Callable[[bytes], re.Match[bytes] | None]  # a compiled bytes pattern's search


class FilterError(ValueError):
    """A rule that does not compile; key is relative to the rule (match.value_regex)."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


class FilterErrors(FilterError):
    """Every rule of a channel that does not compile (one FilterError each, in order)."""

    def __init__(self, problems: list[FilterError]):
        super().__init__(problems[0].key, str(problems[0]))
        self.problems = problems


@dataclass(frozen=True)
class Rule:
    name: str
    allow: bool
    test: Test


class Filter:
    """The compiled rules of one channel. `decide(record)` gives the name of the rule that
    denies the record, or None if it may pass: an attribute, not a method, so that one
    rule (the common case) is decided without the loop."""

    def __init__(self, rules: list[Rule], default_allow: bool):
        self.rules = rules
        self.default_allow = default_allow
        self.default_name = "default"
        self._plan = [(r.test, None if r.allow else r.name) for r in rules]
        self._default = None if default_allow else self.default_name
        self.decide: Callable[[Record], str | None] = self._first_match
        if len(self._plan) == 1:  # the common case, without the loop (runs per record)
            (test, verdict), default = self._plan[0], self._default
            self.decide = lambda r: verdict if test(r) else default

    def _first_match(self, record: Record) -> str | None:
        for test, verdict in self._plan:
            if test(record):
                return verdict
        return self._default

    def rule_names(self) -> list[str]:
        names = [r.name for r in self.rules if not r.allow]
        return names + ([] if self.default_allow else [self.default_name])


def _bytes_regex(key: str, pattern) -> re.Pattern:
    if not isinstance(pattern, str):
        raise FilterError(key, f"must be a regular expression (a string), got {pattern!r}")
    try:
        return re.compile(pattern.encode())
    except re.error as exc:
        raise FilterError(key, f"bad regular expression {pattern!r}: {exc}") from None


def literal_prefix(pattern: re.Pattern) -> bytes:
    """The bytes every match of a bytes pattern begins with (after anchors, which match
    no bytes), or b"" when there is no such run or it cannot be read safely: a
    case-insensitive pattern, a parser this Python does not have. A necessary condition
    only: the regex still decides."""
    if pattern.flags & re.IGNORECASE:
        return b""
    try:
        # (private modules, which typeshed does not describe)
        from re import _constants as c  # type: ignore[attr-defined]
        from re import _parser  # type: ignore[attr-defined]
        ops = _parser.parse(pattern.pattern, pattern.flags).data
    except (ImportError, AttributeError, re.error):
        return b""
    out = bytearray()
    for op, arg in ops:
        if op is c.AT and not out:
            continue
        if op is not c.LITERAL:
            break
        out.append(arg)
    return bytes(out)


def _needs(m: dict, key: str, other: str, why: str = "") -> None:
    """A match key that means nothing without another one."""
    if key in m and other not in m:
        raise FilterError(f"match.{key}", f"needs match.{other}{why}")


def _string(key: str, value) -> str:
    if not isinstance(value, str):
        raise FilterError(key, f"must be a string, got {value!r}")
    return value


def _size(key: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise FilterError(key, f"must be a number of bytes (an integer >= 0), got {value!r}")
    return value


# JSON rules. The native scan (appliance/_scan.c) finds a field's JSON text in one pass
# without building the document (json.loads cost 3-4 us per 1 KB record) and answers as
# json.loads would: None (not JSON, or no such field), the text, or True where only
# json.loads can tell (an escaped key on the path, deep nesting): then _parsed_field.
MISSING = object()  # no such field
_CONTAINER = object()  # a field whose value is an object or a list: equal to no scalar


def _parsed_field(value: bytes, path: tuple[str, ...]):
    """The field at path by json.loads, or MISSING; a value that is not JSON has no field,
    nor has one nested too deep to parse (RecursionError)."""
    try:
        node = json.loads(value)
    except (ValueError, RecursionError):
        return MISSING
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def _scalar(text: bytes):
    """A field's value from its JSON text (which the scan found valid)."""
    if text[:1] == b'"' and b"\\" not in text:  # a plain string: no parse
        return text[1:-1].decode("utf-8", "surrogatepass")
    if text[:1] in (b"{", b"["):
        return _CONTAINER
    return json.loads(text)


def _tests(match: dict) -> list[Test]:
    """One test per condition of a match table, cheapest first."""
    tests: list[tuple[int, Test]] = []
    for key in match:
        if key not in MATCH_KEYS:
            raise FilterError(f"match.{key}",
                              f"unknown match field (known: {', '.join(sorted(MATCH_KEYS))})")
    m = {k: v for k, v in match.items()}
    if "topic" in m:
        topic = _string("match.topic", m["topic"])
        def topic_is(r: Record, t: str = topic) -> bool:
            return r.topic == t
        tests.append((0, topic_is))
    if "partition" in m:
        raw = m["partition"]
        parts = raw if isinstance(raw, list) else [raw]
        if not parts or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 0
                                for p in parts):
            raise FilterError("match.partition", "must be a partition number or a list of "
                              f"them, got {raw!r}")
        pset = frozenset(parts)
        def partition_in(r: Record, s: frozenset[int] = pset) -> bool:
            return r.partition in s
        tests.append((0, partition_in))
    if "min_size" in m:
        lo = _size("match.min_size", m["min_size"])
        def at_least(r: Record, n: int = lo) -> bool:
            return len(r.value or b"") >= n
        tests.append((0, at_least))
    if "max_size" in m:
        hi = _size("match.max_size", m["max_size"])
        def at_most(r: Record, n: int = hi) -> bool:
            return len(r.value or b"") <= n
        tests.append((0, at_most))
    if "topic_regex" in m:
        raw = _string("match.topic_regex", m["topic_regex"])
        try:
            rx = re.compile(raw)
        except re.error as exc:
            raise FilterError("match.topic_regex", f"bad regular expression {raw!r}: {exc}"
                              ) from None
        def topic_matches(r: Record, f: Callable[[str], re.Match[str] | None] = rx.fullmatch
                          ) -> bool:
            return f(r.topic) is not None
        tests.append((1, topic_matches))
    if "key" in m:
        want = _string("match.key", m["key"]).encode()
        def key_is(r: Record, w: bytes = want) -> bool:
            return r.key == w
        tests.append((1, key_is))
    if "key_regex" in m:
        search = _bytes_regex("match.key_regex", m["key_regex"]).search
        def key_matches(r: Record, s: Search = search) -> bool:
            return r.key is not None and s(r.key) is not None
        tests.append((2, key_matches))
    _needs(m, "header_regex", "header", " (the header's name)")
    if "header" in m:
        name = _string("match.header", m["header"])
        if "header_regex" in m:
            search = _bytes_regex("match.header_regex", m["header_regex"]).search

            def header_value(r: Record, n: str = name, s: Search = search) -> bool:
                return any(h == n and v is not None and s(v) is not None for h, v in r.headers)
            tests.append((2, header_value))
        else:
            def header_present(r: Record, n: str = name) -> bool:
                # (a loop: any() over a generator costs twice as much, per record)
                for h, _ in r.headers:  # noqa: SIM110
                    if h == n:
                        return True
                return False
            tests.append((1, header_present))
    if "value_contains" in m:
        needle = _string("match.value_contains", m["value_contains"]).encode()
        def value_contains(r: Record, w: bytes = needle) -> bool:
            return r.value is not None and contains(r.value, w)
        tests.append((2, value_contains))
    if "value_regex" in m:
        pattern = _bytes_regex("match.value_regex", m["value_regex"])
        search, prefix = pattern.search, literal_prefix(pattern)
        if prefix:  # every match begins with it: memmem first, the regex where it is
            def value_matches_after(r: Record, s: Search = search, w: bytes = prefix) -> bool:
                return r.value is not None and contains(r.value, w) and s(r.value) is not None
            tests.append((3, value_matches_after))
        else:
            def value_matches(r: Record, s: Search = search) -> bool:
                return r.value is not None and s(r.value) is not None
            tests.append((3, value_matches))
    _needs(m, "value_json_equals", "value_json_field")
    if "value_json_field" in m:
        raw = _string("match.value_json_field", m["value_json_field"])
        path = tuple(raw.split("."))
        if not all(path) or len(path) > JSON_PATH_MAX:
            raise FilterError("match.value_json_field", f"must be a field name or a dotted "
                              f"path (a.b.c) of at most {JSON_PATH_MAX} names, got {raw!r}")
        names = tuple(part.encode("utf-8", "surrogatepass") for part in path)
        if "value_json_equals" in m:
            want = m["value_json_equals"]
            if isinstance(want, (dict, list)):
                raise FilterError("match.value_json_equals",
                                  f"must be a string, number or boolean, got {want!r}")

            if isinstance(want, str):  # compared as JSON text: no decoding per record
                want_text = json.dumps(want, ensure_ascii=False).encode("utf-8",
                                                                         "surrogatepass")

                def json_equals_text(r: Record, p: tuple[str, ...] = path, w: str = want,
                                     b: tuple[bytes, ...] = names,
                                     wt: bytes = want_text) -> bool:
                    v = r.value
                    if not v:
                        return False
                    text = json_text_at(v, b)
                    if text is None:
                        return False
                    if text is True:
                        return _parsed_field(v, p) == w
                    # The same string written otherwise has an escape in it.
                    return text == wt or (b"\\" in text and _scalar(text) == w)
                tests.append((4, json_equals_text))
            else:
                def json_equals(r: Record, p: tuple[str, ...] = path, w: object = want,
                                b: tuple[bytes, ...] = names) -> bool:
                    v = r.value
                    if not v or (text := json_text_at(v, b)) is None:
                        return False
                    got = _parsed_field(v, p) if text is True else _scalar(text)
                    return got == w and isinstance(got, bool) == isinstance(w, bool)
                tests.append((4, json_equals))
        else:
            def json_has(r: Record, p: tuple[str, ...] = path,
                         b: tuple[bytes, ...] = names) -> bool:
                v = r.value
                if not v:
                    return False
                text = json_text_at(v, b)
                return text is not None and (text is not True
                                             or _parsed_field(v, p) is not MISSING)
            tests.append((4, json_has))
    if not tests:
        raise FilterError("match", "needs at least one condition (known: "
                          f"{', '.join(sorted(MATCH_KEYS))}); a rule for every record is "
                          "filter_default")
    tests.sort(key=lambda t: t[0])
    return [t for _, t in tests]


def _all(tests: list[Test]) -> Test:
    if len(tests) == 1:
        return tests[0]
    return lambda r: all(t(r) for t in tests)


def compile_rule(raw, index: int) -> Rule:
    """One [[channel.filter]] table; raises FilterError naming the key inside the rule."""
    if not isinstance(raw, dict):
        raise FilterError("", f"must be a table ([[channel.filter]]), got {raw!r}")
    for key in raw:
        if key not in RULE_KEYS:
            raise FilterError(key, f"unknown key (known: {', '.join(sorted(RULE_KEYS))})")
    name = raw.get("name", f"rule{index}")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", name) \
            or name == "default":
        raise FilterError("name", f"must be 1-64 letters, digits, '.', '_' or '-' (not "
                          f"\"default\"), got {name!r}")
    if "action" not in raw:
        raise FilterError("action", "is required (\"allow\" or \"deny\")")
    action = raw["action"]
    if action not in ACTIONS:
        raise FilterError("action", f"must be \"allow\" or \"deny\", got {action!r}")
    match = raw.get("match")
    if not isinstance(match, dict):
        raise FilterError("match", "is required: a table ([channel.filter.match]) of "
                          "conditions")
    return Rule(name, action == "allow", _all(_tests(match)))


def compile_filter(rules_raw, default) -> Filter | None:
    """The channel's filter, or None when it has no rules and allows by default. Raises
    FilterError with key relative to the channel (filter[3].match.value_regex)."""
    if default not in ACTIONS:
        raise FilterError("filter_default", f"must be \"allow\" or \"deny\", got {default!r}")
    if not isinstance(rules_raw, list):
        raise FilterError("filter", "must be an array of tables ([[channel.filter]])")
    rules, names, problems = [], set(), []
    for i, raw in enumerate(rules_raw):
        try:
            rule = compile_rule(raw, i)
        except FilterError as exc:  # the next rules are still checked: a line for each
            problems.append(FilterError(f"filter[{i}]" + (f".{exc.key}" if exc.key else ""),
                                        str(exc)))
            continue
        if rule.name in names:
            problems.append(FilterError(f"filter[{i}].name",
                                        f"rule name {rule.name!r} is used twice"))
        names.add(rule.name)
        rules.append(rule)
    if problems:
        raise FilterErrors(problems)
    if not rules and default == "allow":
        return None
    return Filter(rules, default == "allow")


class FilterStats:
    """Counts per rule, and the rate-limited log line (topic, partition, offset; never the
    value). Used by the thread that applies the filter; metrics read the counts."""

    def __init__(self, filt: Filter, channel: str, side: str, log_event):
        self.counts = {name: 0 for name in filt.rule_names()}
        self.channel = channel
        self.side = side
        self.log_event = log_event
        self._next_log = 0.0
        self._since = 0

    def count(self, rule: str, record: Record, n: int = 1) -> None:
        self.counts[rule] += n
        self._since += n
        now = time.monotonic()
        if now >= self._next_log:
            self._next_log = now + LOG_EVERY
            self.log_event("info", "records_filtered",
                           f"channel {self.channel}: {self._since} records filtered on the "
                           f"{self.side} (last: rule {rule}, {record.topic or '-'}"
                           f"[{record.partition}] offset {record.offset})",
                           channel=self.channel, side=self.side, rule=rule,
                           topic=record.topic, partition=record.partition,
                           offset=record.offset, count=self._since)
            self._since = 0


def filter_batch(filt: Filter, stats: FilterStats, records: list[Record]) -> list[Record]:
    """The ingress's pass over a batch: records that may cross, and in place of each run
    of filtered records of one stream a marker (Record.filtered = how many), so that the
    egress knows the gap is a filter decision and the Kafka offsets still advance."""
    verdicts = list(map(filt.decide, records))
    if not any(verdicts):
        return records  # nothing filtered (the common case): the batch as it came
    out: list[Record] = []
    runs: dict[tuple[str, int], Record] = {}  # stream -> its open marker
    for rec, rule in zip(records, verdicts, strict=True):
        if rule is None:
            if runs:
                runs.pop((rec.topic, rec.partition), None)
            out.append(rec)
            continue
        stream = (rec.topic, rec.partition)
        stats.count(rule, rec)
        marker = runs.get(stream)
        if marker is None:
            marker = runs[stream] = Record(value=None, topic=rec.topic,
                                           partition=rec.partition, durable=rec.durable,
                                           timestamp=rec.timestamp, filtered=0)
            out.append(marker)
        marker.offset = rec.offset
        marker.filtered += 1
        if marker.filtered == 1:
            marker.prev_offset = rec.prev_offset
    return out
