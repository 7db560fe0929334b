"""The VRL programs of vector/, compiled and run by Vector's own VRL (through vrl-python).

Sample inputs live in tests/vector/samples/:
  daemon_records.jsonl  raw JSON bodies as the daemon sends them (add lines captured from the
                        real daemon here: every line must parse with no parse_error);
  non_json_lines.txt    lines that are not daemon JSON (tracebacks, other programs): every
                        line must be kept, marked with parse_error;
  log_cases.jsonl       whole events with the fields expected after ddc_logs.vrl.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import pytest

from .render import VRL_DIR
from .support import (
    LEVELS,
    PROMETHEUS_LABEL_RE,
    PROMETHEUS_NAME_RE,
    SAMPLES_DIR,
    VrlProgram,
    get_path,
    has_path,
    load_catalogue,
    make_event,
    prometheus_name,
    read_jsonl,
    statsd_sanitize,
    vrl_timestamp,
)

VRL_FILES = sorted(VRL_DIR.glob("*.vrl"))
LOG_CASES = read_jsonl(SAMPLES_DIR / "log_cases.jsonl")
DAEMON_RECORDS = read_jsonl(SAMPLES_DIR / "daemon_records.jsonl")
NON_JSON_LINES = [
    line
    for line in (SAMPLES_DIR / "non_json_lines.txt").read_text(encoding="utf-8").splitlines()
    if line.strip()
]
CATALOGUE = load_catalogue()

LEVEL_NAMES = {"warn": "warning", "err": "error", "fatal": "critical", "crit": "critical"}


@pytest.fixture(scope="module")
def logs_vrl() -> VrlProgram:
    return VrlProgram.from_file(VRL_DIR / "ddc_logs.vrl")


@pytest.fixture(scope="module")
def metrics_vrl() -> VrlProgram:
    return VrlProgram.from_file(VRL_DIR / "ddc_metrics.vrl")


def _strip_comments(source: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in source.splitlines())


# --------------------------------------------------------------------------- all programs


def test_there_are_vrl_programs():
    names = {p.name for p in VRL_FILES}
    assert {"ddc_logs.vrl", "ddc_metrics.vrl"} <= names


@pytest.mark.parametrize("path", VRL_FILES, ids=lambda p: p.name)
def test_vrl_compiles(path):
    VrlProgram.from_file(path)  # raises with the compiler's diagnostic


@pytest.mark.parametrize("path", VRL_FILES, ids=lambda p: p.name)
def test_vrl_never_drops_events(path):
    # `abort` would drop the event (remap's drop_on_abort) or pass it on half-done; the
    # pipeline's rule is that every line is kept.
    code = _strip_comments(path.read_text(encoding="utf-8"))
    assert not re.search(r"\babort\b", code), f"{path.name} uses abort"


# --------------------------------------------------------------------------- ddc_logs.vrl


@pytest.mark.parametrize("case", LOG_CASES, ids=[c["name"] for c in LOG_CASES])
def test_log_case(logs_vrl, case):
    out = logs_vrl.run(make_event(case.get("base"), case["event"]))
    for path, expected in case.get("expect", {}).items():
        assert has_path(out, path), f"{path} missing in {out}"
        assert get_path(out, path) == expected, f"{path}: {get_path(out, path)!r} != {expected!r}"
    for path in case.get("absent", []):
        assert not has_path(out, path), f"{path} should be absent, got {get_path(out, path)!r}"
    for path, fragment in case.get("contains", {}).items():
        assert fragment in str(get_path(out, path)), f"{path}: {fragment!r} not in {out[path]!r}"
    assert out["level"] in LEVELS


def _expected_level(record: dict[str, Any]) -> str:
    level = str(record["level"]).lower()
    return LEVEL_NAMES.get(level, level)


@pytest.mark.parametrize(
    "record", DAEMON_RECORDS, ids=[f"{i}-{r.get('event')}" for i, r in enumerate(DAEMON_RECORDS)]
)
def test_daemon_record_over_syslog(logs_vrl, record):
    body = json.dumps(record, separators=(",", ":"))
    out = logs_vrl.run(make_event("syslog", {"message": body}))

    assert "parse_error" not in out, out["parse_error"]
    assert out["level"] == _expected_level(record)
    assert out["message"] == record["msg"]
    assert "msg" not in out and "ts" not in out, "ts and msg are consumed"
    assert out["syslog"]["appname"] == "ddc"
    # Every other key of the record is a top-level field with the same value; null means
    # "does not apply" and is left out.
    for key, value in record.items():
        if key in ("msg", "ts", "level"):
            continue
        if value is None:
            assert key not in out, f"{key}: null should be dropped, got {out[key]!r}"
        else:
            assert out.get(key) == value, f"{key}: {out.get(key)!r} != {value!r}"
    if record.get("ts"):
        assert vrl_timestamp(out["timestamp"]) == datetime.fromisoformat(record["ts"])

    if record.get("event") in ("records_lost", "blocks_lost"):
        assert out["loss"] is True
        if record["event"] == "records_lost":
            assert isinstance(out["channel"], str), "a records_lost line always names its channel"
        if "topic" in out:  # a Kafka channel: topic and partition together
            assert isinstance(out["partition"], int)
        for key in ("partition", "first_offset", "last_offset", "count"):
            if key in out:
                assert isinstance(out[key], int), key
        if {"first_offset", "last_offset", "count"} <= set(out):
            assert out["count"] == out["last_offset"] - out["first_offset"] + 1
    else:
        assert "loss" not in out


@pytest.mark.parametrize("transport", ["syslog", "journald"])
@pytest.mark.parametrize("line", NON_JSON_LINES)
def test_non_json_line_is_kept(logs_vrl, transport, line):
    out = logs_vrl.run(make_event(transport, {"message": line}))
    assert out["message"] == line.strip(), "the raw line is kept"
    assert out.get("parse_error"), "and marked"
    assert out["level"] in LEVELS


@pytest.mark.parametrize("message", [42, 3.5, True, ["x"]], ids=["int", "float", "bool", "array"])
def test_message_of_odd_type_is_kept(logs_vrl, message):
    out = logs_vrl.run(make_event("syslog", {"message": message}))
    assert out["level"] in LEVELS
    assert isinstance(out["message"], str) and out["message"] != ""
    assert out.get("parse_error") == "not a JSON object"


def test_message_that_is_already_an_object_is_taken_as_the_record(logs_vrl):
    out = logs_vrl.run(make_event("syslog", {"message": {"level": "warning", "msg": "m", "a": 1}}))
    assert "parse_error" not in out
    assert (out["level"], out["message"], out["a"]) == ("warning", "m", 1)


def test_event_without_any_metadata(logs_vrl):
    out = logs_vrl.run({"message": '{"level":"info","msg":"bare"}'})
    assert out["message"] == "bare" and out["level"] == "info"
    out = logs_vrl.run({})
    assert out["parse_error"] == "empty message" and out["level"] == "info"


def test_syslog_severities_map_to_levels(logs_vrl):
    expected = {
        "emerg": "critical",
        "alert": "critical",
        "crit": "critical",
        "err": "error",
        "warning": "warning",
        "notice": "info",
        "info": "info",
        "debug": "debug",
    }
    for severity, level in expected.items():
        out = logs_vrl.run(make_event("syslog", {"severity": severity, "message": "plain text"}))
        assert out["level"] == level, severity


def test_journald_priorities_map_to_levels(logs_vrl):
    expected = ["critical", "critical", "critical", "error", "warning", "info", "info", "debug"]
    for priority, level in enumerate(expected):
        out = logs_vrl.run(make_event("journald", {"PRIORITY": str(priority), "message": "plain"}))
        assert out["level"] == level, priority
    out = logs_vrl.run(make_event("journald", {"PRIORITY": "bogus", "message": "plain"}))
    assert out["level"] == "info" and out["journald"]["priority"] == "info"


# --------------------------------------------------------------------------- ddc_metrics.vrl


def _metric_event(statsd_name: str, mtype: str, tags: dict[str, str]) -> dict[str, Any]:
    # The statsd source: name = sanitised StatsD key, no namespace, DogStatsD tags as tags;
    # counters are incremental, plain gauges absolute.
    return {
        "name": statsd_sanitize(statsd_name),
        "tags": tags,
        "kind": "incremental" if mtype == "counter" else "absolute",
        "type": mtype,
    }


@pytest.mark.parametrize(
    "entry", CATALOGUE["metrics"], ids=[m["statsd"] for m in CATALOGUE["metrics"]]
)
def test_catalogue_metric_gets_its_prometheus_name(metrics_vrl, entry):
    # The catalogue's StatsD names survive the statsd source's sanitising unchanged.
    assert statsd_sanitize(entry["statsd"]) == entry["statsd"]
    tags = {t: f"v-{t}" for t in [*CATALOGUE["common_tags"], *entry["tags"]]}
    out = metrics_vrl.run(_metric_event(entry["statsd"], entry["type"], tags))

    assert prometheus_name(out) == entry["prometheus"]
    assert PROMETHEUS_NAME_RE.match(prometheus_name(out))
    assert out["tags"] == tags, "tags become labels unchanged"
    assert all(PROMETHEUS_LABEL_RE.match(k) for k in out["tags"])
    assert out["kind"] == _metric_event(entry["statsd"], entry["type"], tags)["kind"]


def test_catalogue_prometheus_names_follow_the_rule():
    for entry in CATALOGUE["metrics"]:
        assert entry["statsd"].startswith("ddc.")
        assert entry["prometheus"] == entry["statsd"].replace(".", "_")
        assert entry["type"] in ("counter", "gauge")
        assert not entry["prometheus"].endswith("_total"), "Vector adds no _total suffix"


def test_design_minimum_metric_names_are_in_the_catalogue():
    # DESIGN.md, "Observability contract".
    minimum = {
        "ddc_ingress_packets_sent",
        "ddc_ingress_bytes_sent",
        "ddc_egress_packets_received",
        "ddc_egress_dropped_packets",
        "ddc_egress_packet_loss",
        "ddc_egress_fec_recovered",
        "ddc_egress_records_lost",
        "ddc_egress_auth_failures",
        "ddc_link_heartbeat_age_seconds",
        "ddc_kafka_consumer_lag",
    }
    assert minimum <= {m["prometheus"] for m in CATALOGUE["metrics"]}


def test_metric_tag_keys_are_sanitised(metrics_vrl):
    out = metrics_vrl.run(
        _metric_event("ddc.egress.dropped_packets", "counter", {"drop-reason": "auth", "node": "e"})
    )
    assert out["tags"] == {"drop_reason": "auth", "node": "e"}


def test_foreign_metric_is_only_sanitised(metrics_vrl):
    out = metrics_vrl.run({"name": "other-app.requests", "kind": "incremental", "type": "counter"})
    assert prometheus_name(out) == "other_app_requests"
    assert out.get("namespace") is None


def test_metric_without_tags(metrics_vrl):
    out = metrics_vrl.run({"name": "ddc.egress.auth_failures", "kind": "incremental"})
    assert prometheus_name(out) == "ddc_egress_auth_failures"


# --------------------------------------------------------------------------- end to end

# Vector's syslog source parses each datagram with the same parser as VRL's parse_syslog
# (syslog_loose) and adds host, source_ip and source_type; this stands in for it.
SYSLOG_SOURCE_VRL = """
raw = string!(.raw)
. = parse_syslog!(raw)
.host = .hostname
.source_ip = "127.0.0.1"
.source_type = "syslog"
"""


def test_real_daemon_datagram_end_to_end(logs_vrl):
    """appliance.observe.log's formatter and RFC 5424 handler -> syslog parse -> ddc_logs.vrl."""
    import logging
    import socket
    import sys

    log = pytest.importorskip("appliance.observe.log", reason="the daemon's dependencies")

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        handler = log.Rfc5424Handler("127.0.0.1", sock.getsockname()[1])
        handler.setFormatter(log.JsonFormatter("egress-1", "egress"))
        fields = {
            "channel": "events", "channel_id": 2, "topic": "orders", "partition": 3,
            "first_offset": 1200, "last_offset": 1211, "count": 12,
            "session": "9f3c2a1b44e0d7aa", "reason": "fec_unrecoverable",
        }  # fmt: skip
        logger = logging.getLogger("ddc.egress")
        record = logger.makeRecord(
            "ddc.egress", logging.ERROR, __file__, 1,
            "channel events: 12 records lost (fec_unrecoverable): "
            "topic=orders partition=3 offsets 1200-1211",
            (), None, extra={"event": "records_lost", "fields": fields},
        )  # fmt: skip
        try:
            raise ValueError("boom")
        except ValueError:
            crash = logger.makeRecord(
                "ddc.egress", logging.CRITICAL, __file__, 1, "sink failed", (), sys.exc_info(),
                extra={"event": "sink_failed", "fields": {"channel": "events"}},
            )  # fmt: skip
        datagrams = []
        for rec in (record, crash):
            handler.emit(rec)
            datagrams.append(sock.recv(65536).decode())
        handler.close()

    to_event = VrlProgram(SYSLOG_SOURCE_VRL, name="syslog source stand-in")
    lost = logs_vrl.run(to_event.run({"raw": datagrams[0]}))
    assert "parse_error" not in lost
    assert lost["syslog"]["appname"] == "ddc" and lost["syslog"]["severity"] == "err"
    assert (lost["level"], lost["event"], lost["loss"]) == ("error", "records_lost", True)
    for key, value in fields.items():
        assert lost[key] == value, key

    crashed = logs_vrl.run(to_event.run({"raw": datagrams[1]}))
    assert "parse_error" not in crashed
    assert crashed["level"] == "critical"
    assert "ValueError: boom" in crashed["exception"]


# --------------------------------------------------------------------------- forwarded_syslog.vrl

# (datagram, message after the program, parse_error expected, level)
FORWARDED_CASES = [
    ("<14>syslog line 1", "<14>syslog line 1", True, "info"),
    ("<13>Nov 26 10:41:07 fw1 sshd[42]: Accepted publickey", "Accepted publickey", False, "info"),
    (
        '<165>1 2026-11-26T10:41:07.123Z plc-3 evntslog - ID47 [exampleSDID@32473 iut="3"] '
        "valve 7 open",
        "valve 7 open",
        False,
        "info",
    ),
    ("<10>disk failing", "<10>disk failing", True, "critical"),
    ("plain text, no priority", "plain text, no priority", True, "info"),
    ("", "", True, "info"),
    ("<999>out of range", "<999>out of range", True, "info"),
]


@pytest.fixture(scope="module")
def forwarded_vrl() -> VrlProgram:
    return VrlProgram.from_file(VRL_DIR / "forwarded_syslog.vrl")


@pytest.mark.parametrize(("datagram", "message", "unparsed", "level"), FORWARDED_CASES)
def test_forwarded_datagram_is_kept(forwarded_vrl, datagram, message, unparsed, level):
    # As Vector's socket source emits one UDP datagram (bytes codec, legacy namespace).
    event = {"message": datagram, "host": "127.0.0.1", "port": 40000, "source_type": "socket",
             "timestamp": "2026-11-26T10:41:07.200Z"}
    out = forwarded_vrl.run(event)
    assert out["message"] == message
    assert ("parse_error" in out) is unparsed, out
    assert out["level"] == level
    assert "host" not in out and "port" not in out, "the egress's own address says nothing"


def test_forwarded_header_fields(forwarded_vrl):
    out = forwarded_vrl.run({"message": FORWARDED_CASES[2][0]})
    assert out["syslog"]["hostname"] == "plc-3"
    assert out["syslog"]["appname"] == "evntslog"
    assert out["syslog"]["msgid"] == "ID47"
    assert out["syslog"]["facility"] == "local4"
    assert out["syslog"]["structured_data"] == {"exampleSDID@32473": {"iut": "3"}}
    bare = forwarded_vrl.run({"message": "<14>syslog line 1"})
    assert bare["syslog"] == {"facility": "user", "severity": "info"}
