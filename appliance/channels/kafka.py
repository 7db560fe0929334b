"""Kafka channel on confluent-kafka (librdkafka).

Ingress: a consumer-group consumer over topics (a list and/or a regex), all their
partitions. Offsets are stored only once every byte of a record is in datagrams on
the link (enable.auto.offset.store=false; the link thread hands records back), and
committed by librdkafka's auto-commit of stored offsets, so a restarted ingress
resumes where the link left off.

Several ingresses may share one consumer group (cooperative-sticky assignment), each
with its own link to its own egress: N diode pairs splitting the partitions.

Egress: a producer writing key, value, headers and timestamp intact to the same
partition number (or by key like the Java client, or librdkafka's default), with topic
renaming. By default it is transactional: records and the source positions they
advance commit together (the positions in a compacted topic of the destination, see
kafka_positions), so a restarted or replaced egress, or another pair's, knows what the
destination has. With transactions = false it is idempotent only, and the egress's
positions file is its only memory. A record that cannot be delivered (too large, a
partition the destination lacks, librdkafka's retries exhausted) is reported lost by
range and the egress goes on; a fatal producer error replaces the producer. See
docs/delivery.md.
"""

from __future__ import annotations

import functools
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from ..protocol.heartbeat import KIND_COUNTER, KIND_GAUGE, Metric
from ..protocol.loss import LossReport
from ..protocol.records import Record
from ..schema import (
    Configured,
    OptionProblems,
    Problems,
    checked,
    int_between,
    one_of,
    option,
    options_of,
    parse_options,
    string,
)
from .base import (
    CLOSE_LIMIT,
    CLOSE_STALL,
    EXIT_FENCED,
    ChannelContext,
    ChannelFatal,
    Emit,
    Sink,
    Source,
    run_bounded,
)
from .kafka_positions import (
    DEFAULT_TOPIC,
    Pending,
    PositionsError,
    PositionsView,
    ensure_topic,
    position_key,
    position_value,
)

ROLES = ("ingress", "egress")

# Seconds a revoke waits for the consumed records of the revoked partitions to be on
# the link (below librdkafka's rebalance and poll timeouts).
REVOKE_DRAIN = 3.0
# The broker's default transaction.max.timeout.ms: a transaction may not last longer.
MAX_TRANSACTION_MS = 900_000
INT32_MAX = 2_147_483_647  # librdkafka's bound of its integer properties
# How soon librdkafka looks again at a partition whose prefetch queue was full: a
# drained queue waits at most this long to refill (each look is a check, not a fetch).
FETCH_QUEUE_BACKOFF_MS = 10
UNASSIGNED_PARTITION = -1  # RD_KAFKA_PARTITION_UA: produce() lets the partitioner choose
# The sink's producer queue (librdkafka's queue.buffering.max.kbytes), in bytes. The sink
# keeps each record until its transaction commits (or its delivery is reported), so the
# bytes waiting there are held twice, by the sink and by librdkafka: at 64 MiB 8 KB
# records took the egress past 200 MB (docs/performance.md). The egress's own queue
# (tuning.queue_bytes) is the buffer that absorbs a slow broker; this one only has to
# keep the broker busy: 16 MiB is 200 ms at 80 MB/s, two commit intervals. It holds one
# record of max_record_bytes with room to spare, or such a record would never fit and
# its produce() would wait for room forever.
PRODUCER_QUEUE_BYTES = 16 * 1024 * 1024
PRODUCER_QUEUE_ROOM = 1024 * 1024  # beyond the largest record
SECURITY = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI")
PARTITIONING = ("same", "key", "default")
COMPRESSION = ("none", "gzip", "snappy", "lz4", "zstd")


# -- options ------------------------------------------------------------------------
# [channel.kafka] is read into SourceOptions (ingress) or SinkOptions (egress), both a
# ClientOptions (the connection keys): each key's default, type, range and message in
# one place. The problems come in the order the fields are declared; a check against
# other keys is a then= of the field it follows.

def _str_list(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) and x for x in v)


def _servers(value) -> str:
    """bootstrap_servers as librdkafka takes it: "host:port,..." (a list is joined)."""
    if isinstance(value, str) and value:
        return value
    if _str_list(value):
        return ",".join(value)
    raise ValueError(f"must be \"host:port,...\" or a list, got {value!r}")


def _properties(value) -> Mapping[str, str | int | float | bool]:
    if not isinstance(value, dict):
        raise ValueError("must be a table of librdkafka properties")
    bad = [(k, f"must be a string, number or boolean, got {v!r}") for k, v in value.items()
           if not isinstance(v, str | int | float | bool)]
    if bad:
        raise OptionProblems(bad)
    return MappingProxyType(dict(value))


def _no_table() -> Mapping:
    return MappingProxyType({})


def _sasl_together(c: Configured) -> Problems:
    """The SASL keys against each other (after sasl_mechanism's own check)."""
    p = []
    sec = c["security_protocol"]
    if isinstance(sec, str) and sec.startswith("SASL") and c["sasl_mechanism"] is None:
        p.append(("sasl_mechanism", f"is required with security_protocol = {sec!r}"))
    if c["sasl_password"] is not None and c["sasl_password_file"] is not None:
        p.append(("sasl_password_file", "give sasl_password or sasl_password_file, not both"))
    return p


@dataclass(frozen=True, kw_only=True)
class ClientOptions:
    """The connection keys of [channel.kafka], on either side (client_config)."""
    bootstrap_servers: str = option(parse=_servers,
                                    required="is required (\"host:9092,host2:9092\" or a list)")
    security_protocol: str = option("PLAINTEXT", parse=one_of(SECURITY))
    sasl_mechanism: str | None = option(None, parse=one_of(MECHANISMS), then=_sasl_together)
    sasl_username: str | None = option(None, parse=string)
    sasl_password: str | None = option(None, parse=string)
    sasl_password_file: str | None = option(None, parse=string)  # the password, in a file
    ssl_ca_location: str | None = option(None, parse=string)
    ssl_certificate_location: str | None = option(None, parse=string)
    ssl_key_location: str | None = option(None, parse=string)
    # librdkafka properties as they are, last (they override the keys above)
    properties: Mapping[str, str | int | float | bool] = option(factory=_no_table,
                                                                parse=_properties)


def _topic_pattern(value) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {value!r}")
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"is not a valid regular expression: {exc}") from None
    return value


def _some_topics(c: Configured) -> Problems:
    if not c["topics"] and not c["topic_pattern"]:
        return [("topics", "give topics = [...] and/or topic_pattern = \"regex\"")]
    return []


@dataclass(frozen=True, kw_only=True)
class SourceOptions(ClientOptions):
    """[channel.kafka] on the ingress: a consumer group's consumer."""
    group_id: str = option(parse=string)
    topics: tuple[str, ...] = option((), parse=checked(
        _str_list, lambda v: f"must be a list of topic names, got {v!r}", tuple),
        then=_some_topics)
    topic_pattern: str | None = option(None, parse=_topic_pattern)  # a regex ("^" implied)
    batch_size: int = option(1000, parse=int_between(1, 1_000_000))  # records a consume()
    queued_max_kbytes: int = option(16384, parse=int_between(1024, 2_097_151))
    stall_timeout: float = option(60.0, parse=checked(
        lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 5 <= v <= 86400,
        lambda v: f"must be a number of seconds between 5 and 86400, got {v!r}", float))
    auto_offset_reset: str = option("earliest", parse=checked(
        lambda v: v in ("earliest", "latest"),
        lambda v: f"must be \"earliest\" or \"latest\", got {v!r}"))


def _delivery_timeout(c: Configured) -> Callable[[Any], int]:
    # in a transaction, a record may wait no longer than the transaction may last
    return int_between(1000, MAX_TRANSACTION_MS if c["transactions"] is not False
                       else INT32_MAX)


def _positions_topic(value) -> str:
    problems = []
    if not (isinstance(value, str) and value):
        problems.append(("", f"must be a non-empty string, got {value!r}"))
    if isinstance(value, str) and not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", value):
        problems.append(("", f"is not a valid Kafka topic name: {value!r}"))
    if problems:
        raise OptionProblems(problems)
    return value


@dataclass(frozen=True, kw_only=True)
class SinkOptions(ClientOptions):
    """[channel.kafka] on the egress: a producer, transactional by default."""
    topic_prefix: str = option("", parse=string)  # before each (mapped) topic's name
    topic_map: Mapping[str, str] = option(factory=_no_table, parse=checked(
        lambda v: isinstance(v, dict) and all(isinstance(x, str) and x for x in v.values()),
        "must be a table of source topic = \"destination topic\"",
        lambda v: MappingProxyType(dict(v))))
    partitioning: str = option("same", parse=one_of(PARTITIONING))
    compression: str = option("lz4", parse=one_of(COMPRESSION))
    linger_ms: int = option(5, parse=int_between(0, 900_000))
    batch_size: int = option(1_000_000, parse=int_between(1, INT32_MAX))  # bytes
    max_record_bytes: int = option(16 * 1024 * 1024, parse=int_between(1000, 1_000_000_000))
    transactions: bool = option(True, parse=checked(
        lambda v: isinstance(v, bool), lambda v: f"must be true or false, got {v!r}"))
    # None: see delivery_timeout()
    delivery_timeout_ms: int | None = option(None, parse_in=_delivery_timeout)
    transactional_id: str | None = option(None, parse=checked(  # None: ddc-<node>-<channel>
        lambda v: isinstance(v, str) and v != "",
        lambda v: f"must be a non-empty string, got {v!r}"))
    positions_topic: str = option(DEFAULT_TOPIC, parse=_positions_topic)
    commit_interval_ms: int = option(100, parse=int_between(1, 60_000))
    takeover_grace_ms: int = option(3000, parse=int_between(0, 600_000))

    def delivery_timeout(self, transactional: bool) -> int:
        """delivery_timeout_ms, by default 60 s for a transactional sink (it is the
        transaction's timeout too) and librdkafka's 300 s for an idempotent one."""
        if self.delivery_timeout_ms is not None:
            return self.delivery_timeout_ms
        return 60_000 if transactional else 300_000


def validate(options: dict, role: str) -> Problems:
    return parse_options(SourceOptions if role == "ingress" else SinkOptions, options)[1]


class _ErrorThrottle:
    """librdkafka repeats a transport error every reconnect attempt: log each kind once a
    minute, with how many were swallowed, so an outage is one line a minute, not a flood.

    TLS handshake and SASL failures get one line naming the channel and the cause
    (kafka_tls_failed, kafka_auth_failed). librdkafka says only "certificate verify
    failed" for a wrong CA and an expired certificate alike, so the broker's certificate
    is checked again here with Python's ssl module, which names the reason. The last such
    problem is the channel's `problem` in the node's status (`ddc status`) until the
    client makes progress again."""

    def __init__(self, ctx: ChannelContext, opts: ClientOptions, every: float = 60.0):
        self.ctx, self.opts, self.every = ctx, opts, every
        self._last: dict[str, tuple[float, int]] = {}
        self.count = 0
        self.problem: str | None = None

    def __call__(self, err) -> None:
        self.count += 1
        now = time.monotonic()
        name = err.name()
        tls = err.code() == KafkaError._SSL or (err.code() == KafkaError._TRANSPORT
                                                and "SSL routines" in err.str())
        if tls:  # a later reconnect reports the same handshake failure as _TRANSPORT
            name = "_SSL"
        seen, swallowed = self._last.get(name, (-self.every, 0))
        if now - seen < self.every:
            self._last[name] = (seen, swallowed + 1)
            return
        self._last[name] = (now, 0)
        more = f" ({swallowed} more since the last report)" if swallowed else ""
        if tls:
            # the check connects to the broker: off the client's thread
            threading.Thread(target=self._tls_failed, args=(err.str(), more),
                             name=f"tls-check:{self.ctx.name}", daemon=True).start()
        elif err.code() == KafkaError._AUTHENTICATION:
            self._report("kafka_auth_failed", name, _auth_cause(err.str(), self.opts), more)
        else:
            self.ctx.log_event("warning", "kafka_error",
                               f"channel {self.ctx.name}: {err.str()}{more}", code=name)

    def _tls_failed(self, text: str, more: str) -> None:
        self._report("kafka_tls_failed", "_SSL", _tls_cause(text, self.opts), more)

    def _report(self, event: str, code: str, cause: str, more: str) -> None:
        self.problem = cause
        self.ctx.log_event("error", event, f"channel {self.ctx.name}: {cause}{more}",
                           code=code, cause=cause)


_BROKER_IN_ERROR = re.compile(r"^(?:\w+://)?(\[[^\]]+\]|[^:/\s]+):(\d+)/")


def _tls_cause(text: str, opts: ClientOptions) -> str:
    """What is wrong with the TLS handshake librdkafka reported in `text`, checked with
    Python's ssl module against the channel's ssl_ca_location (or the system CAs)."""
    import socket
    import ssl

    m = _BROKER_IN_ERROR.match(text)
    reason = text.split(": ", 1)[-1]
    if m is None:
        return f"TLS handshake failed: {reason}"
    host, port = m.group(1).strip("[]"), int(m.group(2))
    ca = opts.ssl_ca_location
    trust = f"ssl_ca_location {ca}" if ca else "the system's CA certificates"
    where = f"TLS handshake with broker {host}:{port} failed"
    try:
        ctx = ssl.create_default_context(cafile=ca)
        if opts.properties.get("ssl.endpoint.identification.algorithm") == "none":
            ctx.check_hostname = False
        if opts.ssl_certificate_location and opts.ssl_key_location:
            ctx.load_cert_chain(opts.ssl_certificate_location, opts.ssl_key_location)
        with socket.create_connection((host, port), timeout=3) as sock, \
                ctx.wrap_socket(sock, server_hostname=host):
            pass
    except ssl.SSLCertVerificationError as exc:
        why = exc.verify_message or str(exc)
        if exc.verify_code in (2, 19, 20, 21):  # no issuer / self-signed / unknown CA
            return (f"{where}: the broker's certificate is not signed by a CA in {trust} "
                    f"({why})")
        if exc.verify_code == 10:
            return f"{where}: the broker's certificate has expired ({why})"
        return f"{where}: {why} (verified against {trust})"
    except (ssl.SSLError, OSError) as exc:
        return f"{where}: {exc} (librdkafka: {reason})"
    return f"{where}: {reason}"


def _auth_cause(text: str, opts: ClientOptions) -> str:
    user = opts.sasl_username
    who = f" as {user!r}" if user else ""
    return (f"SASL authentication{who} ({opts.sasl_mechanism or '?'}) refused by the "
            f"broker: {text.split(': ', 1)[-1]}")


class _LibrdkafkaLog:
    """librdkafka's own log lines, to the `ddc.kafka` logger. Its FAIL and FATAL lines
    repeat, at every reconnect attempt, what error_cb reports (throttled, with the cause):
    they are dropped here, so a broker outage or a TLS failure is not a flood."""

    _DUPLICATES = frozenset({"FAIL", "FATAL"})

    def __init__(self) -> None:
        import logging

        self.logger = logging.getLogger("ddc.kafka")

    def log(self, level: int, fmt: str, *args) -> None:
        if args and args[0] in self._DUPLICATES:
            return
        self.logger.log(level, fmt, *args)


def client_config(opts: ClientOptions, ctx: ChannelContext) -> dict:
    """librdkafka properties from the first-class keys, then the pass-through table.

    client.id names node and channel (ddc-<node>-<channel>) in broker logs, quotas and
    request metrics. librdkafka's own log lines go through the `ddc.kafka` logger (JSON,
    syslog, journal) instead of raw stderr, without those error_cb reports too."""
    conf: dict[str, Any] = {"bootstrap.servers": opts.bootstrap_servers,
                            "security.protocol": opts.security_protocol,
                            "client.id": f"ddc-{ctx.node_name}-{ctx.name}",
                            "logger": _LibrdkafkaLog()}
    for prop, value in (("sasl.mechanism", opts.sasl_mechanism),
                        ("sasl.username", opts.sasl_username),
                        ("sasl.password", opts.sasl_password),
                        ("ssl.ca.location", opts.ssl_ca_location),
                        ("ssl.certificate.location", opts.ssl_certificate_location),
                        ("ssl.key.location", opts.ssl_key_location)):
        if value is not None:
            conf[prop] = value
    if opts.sasl_password_file is not None:
        with open(opts.sasl_password_file) as f:
            conf["sasl.password"] = f.read().strip()
    conf.update(opts.properties)
    return conf


# -- ingress ----------------------------------------------------------------------
FATAL_BACKOFF = 5.0  # seconds between consumer re-creations after fatal errors
PROBE_EVERY = 5.0  # seconds between reachability checks of a stalled consumer's brokers
SILENT_US = 5_000_000  # µs without a byte from a broker with requests waiting: unhealthy


def _reachable(servers: str, timeout: float = 2.0) -> bool:
    """Does any of these "host:port,..." accept a TCP connection? Asked of the network, not
    of the consumer: a wedged consumer may not even try to connect any more."""
    import socket

    for server in servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
                return True
        except (OSError, ValueError):
            continue
    return False


class KafkaSource(Source):
    """A consumer-group consumer that is recreated when it stops making progress.

    librdkafka retries forever on its own, but a consumer can be left without a group
    while its brokers answer (seen after a broker restart: the GroupCoordinator's requests
    timing out for minutes; seen here too: after a broker restart a consumer that never
    connected again, its group session timed out, and it never rejoined), and a fatal error
    (static membership fenced) ends it for good.
    Progress is records consumed, or a steady group membership with nothing to fetch and
    every connection answering; with none for `stall_timeout` seconds (longer than
    session.timeout.ms, 45 s, so that a rebalance waiting for a dead member is not cut
    short: the default is 60 s) while a bootstrap server accepts connections and no TLS or
    SASL failure explains it, or on a fatal error, the
    consumer is closed (bounded) and a new one joins. Nothing is lost or duplicated: offsets
    are stored only once records are on the link, so the new consumer resumes from the last
    commit and the egress drops what it sees again."""

    def __init__(self, opts: SourceOptions, ctx: ChannelContext):
        self.ctx = ctx
        self.opts = opts
        self.conf: dict[str, Any] = {
            "group.id": opts.group_id,
            "enable.auto.commit": True,
            "enable.auto.offset.store": False,  # stored only once the record is on the link
            "auto.commit.interval.ms": 1000,
            "auto.offset.reset": opts.auto_offset_reset,
            # N diode pairs share a group: a pair joining or leaving moves only the
            # partitions that must move, the others keep flowing.
            "partition.assignment.strategy": "cooperative-sticky",
            "queued.max.messages.kbytes": opts.queued_max_kbytes,
            # A partition whose prefetch is over that bound is fetched again only after
            # this backoff, 1000 ms by default (librdkafka#2879); the link drains the
            # bound in a fraction of that, so the source stood idle most of each second.
            "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,
            "statistics.interval.ms": 1000,
            "stats_cb": self._on_stats,
            "error_cb": self._on_error,
        }
        self.conf.update(client_config(opts, ctx))
        self.bootstrap: str = self.conf["bootstrap.servers"]  # (properties may set it)
        self._errors = _ErrorThrottle(ctx, opts)
        subs = list(opts.topics)
        pat = opts.topic_pattern
        if pat:
            subs.append(pat if pat.startswith("^") else "^" + pat)
        self.subscriptions = subs
        self._to_store: deque[list[TopicPartition]] = deque()
        self._resume_prev: dict[tuple[str, int], int] = {}
        self.lag: dict[tuple[str, int], int] = {}
        self.consumed = 0
        self.errors = 0
        self.recreated = 0
        self._closing = False
        self._emitted: dict[tuple[str, int], int] = {}  # last offset emitted per partition
        self._handed: dict[tuple[str, int], int] = {}  # last offset on the link
        self._lock = threading.Lock()
        self._health = "no statistics yet"  # why the consumer is not progressing, or ""
        self._fatal: str | None = None
        self._running = threading.Event()  # the source thread is inside run()
        self.consumer = Consumer(self.conf)

    # librdkafka callbacks run inside consume(), on the source thread
    def _on_assign(self, consumer, partitions) -> None:
        try:
            committed = consumer.committed(partitions, timeout=10)
        except Exception:  # noqa: BLE001 - without it we only lose the resume hint
            committed = []
        for tp in committed:
            if tp.offset not in (OFFSET_INVALID,) and tp.offset >= 0:
                self._resume_prev[(tp.topic, tp.partition)] = tp.offset - 1
        self.ctx.log_event("info", "partitions_assigned",
                           f"channel {self.ctx.name}: assigned "
                           f"{', '.join(f'{t.topic}[{t.partition}]' for t in partitions)}",
                           partitions=[[t.topic, t.partition] for t in partitions])

    def _on_revoke(self, consumer, partitions) -> None:
        if not self._closing:  # (closing: the link has stopped, nothing more goes out)
            self._drain(partitions)
        self._flush_store(consumer)
        if not self._closing:  # (close() has committed already)
            try:  # the next owner (another pair) resumes right after what is on our link
                consumer.commit(asynchronous=False)
            except Exception:  # noqa: BLE001 - nothing stored, or the broker is gone
                pass
        self.ctx.log_event("info", "partitions_revoked",
                           f"channel {self.ctx.name}: revoked {len(partitions)} partitions")

    def _drain(self, partitions) -> None:
        """Another pair's ingress resumes a revoked partition at the offsets committed
        now: first let the link take what was consumed of it (bounded), so what this
        pair's link carries and what the next one's does do not overlap."""
        keys = [(tp.topic, tp.partition) for tp in partitions]
        deadline = time.monotonic() + REVOKE_DRAIN
        while any(self._handed.get(k, -1) < self._emitted.get(k, -1) for k in keys):
            if time.monotonic() > deadline:
                self.ctx.log_event("warning", "revoke_drain_timeout",
                                   f"channel {self.ctx.name}: records of revoked partitions "
                                   f"were not all on the link after {REVOKE_DRAIN:g} s; the "
                                   "next owner may send them again (its egress drops repeats "
                                   "the destination has)")
                break
            time.sleep(0.005)
        for k in keys:
            self._emitted.pop(k, None)
            self._handed.pop(k, None)

    def _on_stats(self, raw: str) -> None:
        try:
            stats = json.loads(raw)
        except ValueError:
            return
        lag = {}
        lagging = []
        for topic, t in stats.get("topics", {}).items():
            for part, pt in t.get("partitions", {}).items():
                p = int(part)
                if p < 0:
                    continue
                value = pt.get("consumer_lag_stored", pt.get("consumer_lag", -1))
                if value is not None and value >= 0:
                    lag[(topic, p)] = value
                    if value > 0 and pt.get("fetch_state") not in ("none", "stopped"):
                        lagging.append(f"{topic}[{p}]")
        with self._lock:
            self.lag = lag
        brokers = [b for b in stats.get("brokers", {}).values()
                   if b.get("source") != "logical" and b.get("state") == "UP"]
        # a connection that sends but no longer hears back (fetches answer within
        # fetch.wait.max.ms): librdkafka waits socket.timeout.ms (60 s) to notice
        silent = [b.get("nodename", "?") for b in brokers
                  if b.get("waitresp_cnt", 0) > 0 and b.get("rxidle", -1) > SILENT_US]
        cgrp = stats.get("cgrp", {})
        state, join = cgrp.get("state"), cgrp.get("join_state")
        if state != "up" or join != "steady":
            self._health = f"group state {state}/{join}"
        elif silent:
            self._health = f"no response from {', '.join(silent)} with requests waiting"
        elif lagging:
            self._health = f"{len(lagging)} partitions behind ({', '.join(lagging[:3])}...)"
        else:
            self._health = ""

    def _on_error(self, err) -> None:
        self.errors += 1
        # librdkafka's error_cb carries code _FATAL for a fatal error (err.fatal() is not
        # set on that copy); the consumer is then unusable until it is replaced
        if err.fatal() or err.code() == KafkaError._FATAL:
            self._fatal = err.str()
            self.ctx.log_event("error", "kafka_fatal",
                               f"channel {self.ctx.name}: fatal consumer error: {err.str()}",
                               code=err.name())
            return
        self._errors(err)

    # -- the source thread ---------------------------------------------------------
    def run(self, emit: Emit, stop: threading.Event) -> None:
        self._running.set()
        try:
            self._run(emit, stop)
        finally:
            self._running.clear()

    def _run(self, emit: Emit, stop: threading.Event) -> None:
        self._subscribe()
        resume = self._resume_prev
        progress = time.monotonic()
        last_recreate = -FATAL_BACKOFF
        next_probe = 0.0
        emitted = self._emitted
        while not stop.is_set():
            self._flush_store()
            # Any: a consumed message always has its topic, partition and offset (the
            # stubs' Optional getters are for messages made by hand).
            msgs: list[Any] = self.consumer.consume(num_messages=self.opts.batch_size, timeout=0.1)
            batch = []
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        self._on_error(err)
                    continue
                topic, part, off = m.topic(), m.partition(), m.offset()
                ts_type, ts = m.timestamp()
                prev = resume.pop((topic, part), -1)
                emitted[(topic, part)] = off
                # (positional: Record's field order; keywords cost more, per record)
                batch.append(Record(m.value(), m.key(), m.headers() or [], topic, part, off,
                                    prev, max(ts, 0), ts_type, True))
            if batch:
                self.consumed += len(batch)
                emit(batch)  # waits while the link is behind: that is not a stall
            now = time.monotonic()
            if batch or not self._health:
                progress = now
                self._errors.problem = None
            why = None
            if self._fatal is not None and now - last_recreate >= FATAL_BACKOFF:
                why = f"fatal error ({self._fatal})"
            elif (now - progress > self.opts.stall_timeout and not self._errors.problem
                  and now >= next_probe):
                next_probe = now + PROBE_EVERY  # an outage: ask again in a while
                if _reachable(self.bootstrap):
                    why = f"no progress for {now - progress:.0f} s ({self._health})"
            if why is not None:
                self._recreate(why)
                progress = last_recreate = time.monotonic()
        self._flush_store()

    def _subscribe(self) -> None:
        self.consumer.subscribe(self.subscriptions, on_assign=self._on_assign,
                                on_revoke=self._on_revoke)

    def _recreate(self, why: str) -> None:
        self.ctx.log_event("warning", "consumer_recreated",
                           f"channel {self.ctx.name}: {why}: replacing the Kafka consumer",
                           reason=why)
        old = self.consumer
        self._flush_store(old)
        if run_bounded({self.ctx.name: lambda: self._close_consumer(old)}, CLOSE_STALL):
            self.ctx.log_event("warning", "consumer_close_timeout",
                               f"channel {self.ctx.name}: the replaced consumer did not close "
                               f"within {CLOSE_STALL:g} s; left to finish on its own")
        self.recreated += 1
        self._fatal = None
        self._health = "no statistics yet"
        self.consumer = Consumer(self.conf)
        self._subscribe()

    def handed_over(self, records) -> None:
        """Called from the link thread: store the next offset per partition."""
        last: dict[tuple[str, int], int] = {}
        for r in records:
            last[(r.topic, r.partition)] = r.offset
        self._handed.update(last)
        self._to_store.append([TopicPartition(t, p, o + 1) for (t, p), o in last.items()])

    def _flush_store(self, consumer=None) -> None:
        consumer = consumer or self.consumer
        while self._to_store:
            tps = self._to_store.popleft()
            try:
                consumer.store_offsets(offsets=tps)
            except Exception as exc:  # noqa: BLE001 - e.g. partition revoked meanwhile
                self.ctx.log_event("debug", "offset_store_skipped",
                                   f"channel {self.ctx.name}: could not store offsets: {exc}")

    def metrics(self) -> list[Metric]:
        with self._lock:
            lag = dict(self.lag)
        tags = (("channel", self.ctx.name),)
        out = [Metric("kafka.records_consumed", self.consumed, KIND_COUNTER, tags),
               Metric("kafka.client_errors", self.errors, KIND_COUNTER, tags),
               Metric("kafka.consumer_recreations", self.recreated, KIND_COUNTER, tags)]
        for (topic, part), value in sorted(lag.items()):
            out.append(Metric("kafka.consumer_lag", value, KIND_GAUGE,
                              tags + (("topic", topic), ("partition", str(part)))))
        return out

    def problem(self) -> str | None:
        return self._errors.problem

    @staticmethod
    def _close_consumer(consumer) -> None:
        """Final commit of the stored offsets, leave the group. librdkafka waits for the
        group coordinator here (up to session.timeout.ms, longer in known bugs) and
        confluent-kafka offers no timeout: callers bound it with run_bounded."""
        try:
            consumer.commit(asynchronous=False)
        except Exception:  # noqa: BLE001 - nothing stored yet, or broker gone
            pass
        try:
            consumer.close()
        except Exception:  # noqa: BLE001 - closing is all that is left to do
            pass

    def close(self) -> None:
        if self._running.is_set():
            # the source thread is still inside a consumer call: closing the handle under
            # it would crash librdkafka; the process exit ends both
            self.ctx.log_event("warning", "consumer_close_skipped",
                               f"channel {self.ctx.name}: consumer still busy at stop; "
                               "exiting without closing it (the next run resumes from the "
                               "last commit)")
            return
        self._flush_store()
        if run_bounded({self.ctx.name: lambda: self._close_consumer(self.consumer)},
                       CLOSE_STALL):
            self.ctx.log_event("warning", "consumer_close_timeout",
                               f"channel {self.ctx.name}: consumer did not close within "
                               f"{CLOSE_STALL:g} s (brokers unreachable?): offsets stored "
                               "since the last commit are sent again by the next run and "
                               "dropped by the egress as repeats")


# -- egress -----------------------------------------------------------------------
# Delivery errors that belong to the record, not to the connection: retrying it cannot
# help, so it is reported lost. The first ones the broker returns for a whole produce
# request, so every record batched with the culprit carries them too.
_BATCH_ERRORS = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_MSG_SIZE,
                           KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_RECORD,
                           KafkaError.INVALID_MSG, KafkaError.INVALID_TIMESTAMP,
                           KafkaError.POLICY_VIOLATION})
_RECORD_ERRORS = _BATCH_ERRORS | {KafkaError._UNKNOWN_PARTITION, KafkaError._UNKNOWN_TOPIC,
                                  KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._MSG_TIMED_OUT,
                                  KafkaError._INVALID_ARG,
                                  KafkaError.TOPIC_AUTHORIZATION_FAILED}
# Not delivered, and nothing wrong with the record: send it again.
_PURGED = frozenset({KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT, KafkaError._FATAL})
_FENCED = frozenset({KafkaError._FENCED, KafkaError.PRODUCER_FENCED})


def _is_fatal(err) -> bool:
    return err.fatal() or err.code() == KafkaError._FATAL


class _Watermark:
    """Offsets of one source partition in flight; advances over confirmed ones in order."""
    __slots__ = ("pending", "done", "confirmed")

    def __init__(self) -> None:
        self.pending: deque[int] = deque()
        self.done: set[int] = set()
        self.confirmed: int | None = None

    def sent(self, offset: int) -> None:
        self.pending.append(offset)

    def finished(self, offset: int) -> None:
        self.done.add(offset)
        while self.pending and self.pending[0] in self.done:
            self.confirmed = self.pending.popleft()
            self.done.discard(self.confirmed)


class _ProducerFailed(Exception):
    """The producer hit a fatal error: it must be replaced (what it held is re-sent)."""

    def __init__(self, err):
        super().__init__(err.str())
        self.err = err


class ProducerFenced(ChannelFatal):
    exit_code = EXIT_FENCED
    event = "producer_fenced"


class KafkaSink(Sink):
    """The idempotent producer (transactions = false): each record is confirmed by its
    own delivery report; the egress's positions file is the only memory of them."""
    transactional = False

    def __init__(self, opts: SinkOptions, ctx: ChannelContext):
        self.ctx = ctx
        self.opts = opts
        # read per record: plain attributes
        self.topic_map = dict(opts.topic_map)
        self.prefix = opts.topic_prefix
        self.partitioning = opts.partitioning
        self.same_partition = opts.partitioning == "same"
        self._destinations: dict[str, str] = {}  # source topic -> destination topic
        self.conf = self._producer_conf()
        self._errors = _ErrorThrottle(ctx, opts)
        self.marks: dict[tuple[str, int], _Watermark] = {}
        self._lock = threading.Lock()
        self.produced = 0
        self.delivered = 0
        self.failed = 0
        self.errors = 0
        self.restarts = 0
        self._fatal = None  # a fatal error the error callback saw
        self._inflight: dict[tuple[str, int, int], Record] = {}  # produced, no report yet
        self._resend: list[Record] = []  # given back by a producer that failed
        self._failed_run: list | None = None  # coalesces consecutive failures into ranges
        self._restarted_at = 0.0
        self._purging = False  # close(): purged records are lost, not sent again
        self._full_at_stop = False  # close(): the local queue stayed full at the stop
        self.producer = Producer(self.conf)

    def _producer_conf(self) -> dict:
        opts = self.opts
        conf = {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": opts.linger_ms,
            "batch.size": opts.batch_size,
            "compression.type": opts.compression,
            "message.max.bytes": opts.max_record_bytes,
            "delivery.timeout.ms": opts.delivery_timeout(self.transactional),
            "queue.buffering.max.kbytes": max(PRODUCER_QUEUE_BYTES, opts.max_record_bytes
                                              + PRODUCER_QUEUE_ROOM) // 1024,
            "error_cb": self._on_error,
        }
        if self.partitioning == "key":
            # The Java client's default: the same key lands on the same partition as a
            # Java producer would put it (librdkafka's own default hashes with CRC32).
            conf["partitioner"] = "murmur2_random"
        conf.update(client_config(opts, self.ctx))
        return conf

    def _on_error(self, err) -> None:
        self.errors += 1
        try:
            if err.fatal():  # the producer is unusable: replaced on the sink thread
                self._fatal = err
            self._errors(err)
        except Exception:  # noqa: BLE001 - a callback must not raise into librdkafka
            pass

    def destination(self, topic: str) -> str:
        dest = self._destinations.get(topic)
        if dest is None:
            dest = self._destinations[topic] = self.prefix + self.topic_map.get(topic, topic)
        return dest

    def _send(self, record: Record, on_delivery) -> None:
        """produce() with the record's fields; raises what produce() raises but
        BufferError (the local queue is full: wait for deliveries)."""
        # Positional, in produce()'s order (topic, value, key, partition, callback,
        # on_delivery, timestamp, headers): this runs for every record, and keywords
        # cost more. Partition -1 is librdkafka's "unassigned" (its partitioner picks),
        # timestamp 0 its "now".
        partition = record.partition if self.same_partition else UNASSIGNED_PARTITION
        while True:
            try:
                self.producer.produce(self.destination(record.topic), record.value,
                                      record.key, partition, on_delivery, None,
                                      record.timestamp,
                                      # (the stub's list of str | bytes values; ours are
                                      # bytes, but a list's type is invariant)
                                      record.headers or None)  # type: ignore[arg-type]
                return
            except BufferError:
                # Local queue full: wait for deliveries. At the stop only while they
                # come (CLOSE_STALL for the first record that waits, then not at all):
                # with the destination gone close() reports what is left.
                if self.ctx.stopping.is_set():
                    if self._full_at_stop:
                        raise _Stopping() from None
                    self._full_at_stop = True
                    self._poll(CLOSE_STALL)
                    continue
                self._poll(0.05)

    def problem(self) -> str | None:
        return self._errors.problem

    def _poll(self, timeout: float) -> None:
        """producer.poll; a fatal error (raised by poll, or seen by the error callback)
        becomes _ProducerFailed."""
        try:
            self.producer.poll(timeout)
        except KafkaException as exc:
            if _is_fatal(exc.args[0]):
                raise _ProducerFailed(exc.args[0]) from None
            raise
        if self._fatal is not None:
            err, self._fatal = self._fatal, None
            raise _ProducerFailed(err)

    # -- records ------------------------------------------------------------------
    def _mark(self, record: Record) -> _Watermark:
        src = (record.topic, record.partition)
        with self._lock:
            mark = self.marks.get(src)
            if mark is None:
                mark = self.marks[src] = _Watermark()
            mark.sent(record.offset)
        return mark

    def write(self, record: Record) -> None:
        self._mark(record)
        self._guarded(self._produce, record)
        self._guarded(self._poll, 0)

    def skip(self, record: Record) -> None:
        """Filtered: confirmed at once, in order behind the records before it."""
        mark = self._mark(record)
        with self._lock:
            mark.finished(record.offset)

    def _guarded(self, step, *args) -> None:
        """Run a producer step; on a fatal error replace the producer and send again
        what the old one had not delivered."""
        try:
            step(*args)
        except _ProducerFailed as exc:
            self._replace_producer(exc.err)
        # (at the stop with the queue full, what is left is reported by close())
        while self._resend and not self._full_at_stop:
            try:
                self._produce(self._resend.pop(0))
            except _ProducerFailed as exc:
                self._replace_producer(exc.err)

    def _produce(self, record: Record) -> None:
        def on_delivery(err, msg, record=record) -> None:
            self._delivered(err, record)

        try:
            self._send(record, on_delivery)
        except _Stopping:
            self._resend.append(record)  # the stop with the queue full: close() reports it
            return
        except _ProducerFailed:
            self._resend.append(record)
            raise
        except KafkaException as exc:
            err = exc.args[0]
            if _is_fatal(err):
                self._resend.append(record)
                raise _ProducerFailed(err) from None
            self._failed(record, err)  # too large, unknown partition, ...: this record only
            return
        self._inflight[(record.topic, record.partition, record.offset)] = record
        self.produced += 1

    def _delivered(self, err, record: Record) -> None:
        self._inflight.pop((record.topic, record.partition, record.offset), None)
        if err is None:
            self.delivered += 1
            self._errors.problem = None
            self._finished(record)
        elif err.code() in _PURGED and not self._purging:
            self._resend.append(record)  # the producer failed before sending it
        else:
            self._failed(record, err)

    def _finished(self, record: Record) -> None:
        with self._lock:
            self.marks[(record.topic, record.partition)].finished(record.offset)

    def _failed(self, record: Record, err) -> None:
        self.failed += 1
        self._report_lost(record, f"kafka delivery failed: {err.str()}")
        self._finished(record)

    def _report_lost(self, record: Record, reason: str) -> None:
        src, offset = (record.topic, record.partition), record.offset
        run = self._failed_run
        if run and run[0] == src and run[2] < offset and run[4] == reason:
            run[2] = offset
            run[3] += 1
        else:
            self._close_failed_run()
            self._failed_run = [src, offset, offset, 1, reason]

    def _close_failed_run(self) -> None:
        run, self._failed_run = self._failed_run, None
        if run:
            (topic, part), first, last, count, reason = run
            dense = last - first + 1 == count
            self.ctx.report_loss(topic, part, first, last, count if dense else None, reason)

    def _replace_producer(self, err) -> None:
        """A fatal error (e.g. the idempotent producer's sequence broke): librdkafka
        will not send with this instance again. Collect what it still held, start a new
        one and send those again, in source order. A record the broker may have written
        before the error can then be there twice: the idempotent mode cannot rule that
        out (the transactional one can: see TransactionalKafkaSink)."""
        old = self.producer
        try:
            old.purge()
        except KafkaException:
            pass
        # Every delivery report it still has: the delivered are done, the refused are
        # reported, the purged come back to _resend. (poll raises the fatal error
        # again before it serves them.)
        deadline = time.monotonic() + 5
        while len(old) and time.monotonic() < deadline:
            try:
                old.poll(0.1)
            except KafkaException:
                pass
        again = {(r.topic, r.partition, r.offset): r for r in self._resend}
        again.update(self._inflight)
        self._inflight.clear()
        self._resend = [again[k] for k in sorted(again)]
        self.restarts += 1
        self.ctx.log_event("error", "producer_restarted",
                           f"channel {self.ctx.name}: fatal producer error ({err.str()}); "
                           f"started a new producer, re-sending the {len(self._resend)} "
                           "records the old one had not delivered",
                           channel=self.ctx.name, code=err.name(), resent=len(self._resend))
        if self._restarted_at > time.monotonic() - 1:
            time.sleep(1)  # failing again at once (e.g. refused at connect): not a spin
        self._restarted_at = time.monotonic()
        self.producer = Producer(self.conf)

    def poll(self) -> None:
        self._guarded(self._poll, 0)
        self._close_failed_run()

    def delivered_positions(self) -> dict[tuple[str, int], int]:
        with self._lock:
            return {k: m.confirmed for k, m in self.marks.items() if m.confirmed is not None}

    def metrics(self) -> list[Metric]:
        tags = (("channel", self.ctx.name),)
        return [Metric("kafka.records_produced", self.produced, KIND_COUNTER, tags),
                Metric("kafka.records_delivered", self.delivered, KIND_COUNTER, tags),
                Metric("kafka.delivery_failures", self.failed, KIND_COUNTER, tags),
                Metric("kafka.client_errors", self.errors, KIND_COUNTER, tags),
                Metric("kafka.producer_restarts", self.restarts, KIND_COUNTER, tags),
                Metric("kafka.producer_queue", len(self.producer), KIND_GAUGE, tags)]

    def close(self) -> None:
        """Flush while deliveries progress (CLOSE_STALL without one ends it, CLOSE_LIMIT in
        all); what is still unconfirmed then is purged, and reported lost by range (its
        failed delivery reports, or below for what never reached the producer): the
        ingress committed it when it was on the link."""
        producer = self.producer
        start = time.monotonic()
        last_move, left = start, len(producer)
        try:
            while left:
                now = time.monotonic()
                if now - last_move >= CLOSE_STALL or now - start >= CLOSE_LIMIT:
                    break
                producer.flush(0.1)
                if len(producer) < left:
                    last_move, left = time.monotonic(), len(producer)
            if left:
                self.ctx.log_event("error", "undelivered_at_stop",
                                   f"channel {self.ctx.name}: {left} records not confirmed by "
                                   f"the destination {time.monotonic() - start:.1f} s after the "
                                   "stop request (brokers unreachable?): reporting them lost",
                                   count=left)
                self._purging = True  # purged now: lost, not to be sent again
                producer.purge()  # in queue and in flight: each gets a failed delivery report
                producer.flush(0.5)
        except KafkaException:
            pass  # fatal at shutdown: what is left is reported below
        left_over = {(r.topic, r.partition, r.offset): r for r in self._resend}
        left_over.update(self._inflight)
        self._resend, self._inflight = [], {}
        for key in sorted(left_over):
            self._report_lost(left_over[key], "kafka delivery not confirmed at shutdown")
        self._close_failed_run()


class _Txn:
    """The records of the open transaction, kept until it commits: after an abort they
    are produced again (all but those that failed for good), in order."""
    __slots__ = ("records", "errors", "isolate", "lost", "started")

    def __init__(self) -> None:
        self.records: list[Record] = []  # produced (or to produce again) in this one
        self.errors: dict[int, KafkaError] = {}  # index -> delivery error
        self.isolate: set[int] = set()  # record ids to send alone (a suspect of a batch)
        self.lost: dict[tuple[str, int], int] = {}  # reported lost, or filtered: a position
        self.started = time.monotonic()


def _note_delivery_error(txn: _Txn, index: int, err, msg) -> None:
    """A transactional record's delivery callback (bound to its transaction and index by
    functools.partial): an error is kept for the commit, which confirms the rest."""
    if err is not None and err.code() not in _PURGED:
        txn.errors[index] = err


def _one_at_a_time(method):
    """The sink's own thread may still be in a call when close() runs (its join budget
    ran out): the transaction is touched by one of them at a time."""
    @functools.wraps(method)
    def serialised(self, *args):
        with self._use:
            return method(self, *args)
    return serialised


STOP_CALL = 1.0  # s a transactional call may block the sink's thread (then it is retried)
# The set-up (positions topic, producer id, positions read) has three steps, each given
# SETUP_AT_START at start (then the egress starts anyway) and SETUP_WAIT later, on the
# sink's thread, which a stop must find free soon; SETUP_RETRY between attempts.
SETUP_AT_START = 5.0
SETUP_WAIT = 1.0
SETUP_RETRY = 3.0


class TransactionalKafkaSink(KafkaSink):
    """Records and the source positions they advance, in one Kafka transaction.

    The positions go to a compacted topic in the destination cluster (kafka_positions):
    a read_committed reader sees a record exactly when its position is there too. The
    egress reads the positions at start, and again whenever a source partition comes
    to it from somewhere else, and drops what the destination already has; so the
    egress's own positions file is only a cache, and any egress can continue any source
    partition (N diode pairs, one consumer group).

    A second egress with the same transactional.id fences this one: it stops with
    EXIT_FENCED and leaves what it had not committed to the newer one.
    """
    transactional = True

    def __init__(self, opts: SinkOptions, ctx: ChannelContext):
        self.transactional_id = opts.transactional_id or \
            f"ddc-{ctx.node_name or 'egress'}-{ctx.name}"
        self.positions_topic = opts.positions_topic
        self.commit_interval = opts.commit_interval_ms / 1000
        self.grace = opts.takeover_grace_ms / 1000
        self.timeout = opts.delivery_timeout(self.transactional) / 1000  # lowered at close
        self.owner = ctx.node_name or self.transactional_id
        self._use = threading.RLock()  # the sink's thread, or close() after it
        super().__init__(opts, ctx)
        self.commits = 0
        self.aborts = 0
        self.duplicates = 0
        self.fenced = False
        self._closing = False
        self._txn: _Txn | None = None
        self._committed: dict[tuple[str, int], int] = {}
        self._last: dict[tuple[str, int], int] = {}  # last offset written per source
        self._floor: dict[tuple[str, int], int] = {}  # at or below: delivered already
        self._fresh: dict[tuple[str, int], float] = {}  # came from elsewhere: when
        self._synced_at = 0.0
        # Losses the link found, waiting out the grace (monotonic due time, report). A
        # commit moves a partition's position past such a gap, and a kill -9 within the
        # grace must not take the report with it (the restarted egress resumes past the
        # gap): every position record written holds its partition's waiting losses
        # ("pending"), in the transaction, and a restarted egress takes them up.
        self._deferred: deque[tuple[float, LossReport]] = deque()
        self._pending_stale: set[tuple[str, int]] = set()  # reported since last written
        # The destination may be down, or refuse the TLS handshake, when the egress
        # starts: the egress still starts (it must listen to the diode whatever its
        # destination does), says once what is wrong, and the sink gets ready later.
        self._client = client_config(opts, ctx)
        self.view: PositionsView | None = None
        self._setup_at = -SETUP_RETRY
        self._not_ready: str | None = None
        self._ready(SETUP_AT_START)

    def _ready(self, wait: float) -> bool:
        """Positions topic there, transactional producer initialised, positions read: at
        most one attempt every SETUP_RETRY seconds until then, each within `wait`."""
        if self.view is not None:
            return True
        now = time.monotonic()
        if now - self._setup_at < SETUP_RETRY:
            return False
        self._setup_at = now
        view = None
        try:
            partitions = ensure_topic(self._client, self.positions_topic, wait)
            self.producer.init_transactions(wait)  # may be called again after a timeout
            view = PositionsView(self._client, self.positions_topic, self.ctx.channel_id,
                                 partitions, self.owner, self._foreign_record)
            if not view.sync(wait):
                raise PositionsError(f"cannot read the positions topic "
                                     f"{self.positions_topic!r} within {wait:g} s")
        except (PositionsError, KafkaException) as exc:
            if view is not None:
                view.close()
            reason = exc.args[0].str() if isinstance(exc, KafkaException) else str(exc)
            if self._not_ready is None and not self._errors.problem:
                # (a TLS or SASL failure is already said, with its cause)
                self.ctx.log_event(
                    "warning", "kafka_destination_not_ready",
                    f"channel {self.ctx.name}: the transactional producer "
                    f"({self.transactional_id}) is not ready: {reason}; records wait for "
                    f"the destination, tried again every {SETUP_RETRY:g} s", cause=reason)
            self._not_ready = reason
            return False
        self.view = view
        self._synced_at = time.monotonic()
        self._take_up_pending(view)
        if self._not_ready is not None:
            self.ctx.log_event("info", "kafka_destination_ready",
                               f"channel {self.ctx.name}: the transactional producer "
                               f"({self.transactional_id}) is ready")
        self._not_ready = None
        return True

    def _take_up_pending(self, view: PositionsView) -> None:
        """Losses an earlier run of this egress found and had not reported yet."""
        now, wall = time.monotonic(), time.time()
        for (topic, partition), entries in sorted(view.pending.items()):
            for first, last, count, reason, due in entries:
                self._deferred.append((now + max(0.0, due - wall), LossReport(
                    self.ctx.channel_id, topic, partition, first, last, count, reason)))

    def problem(self) -> str | None:
        return super().problem() or self._not_ready

    def _producer_conf(self) -> dict:
        conf = super()._producer_conf()
        del conf["delivery.timeout.ms"]  # librdkafka derives it from the transaction's
        conf["transactional.id"] = self.transactional_id
        conf["transaction.timeout.ms"] = int(self.timeout * 1000)
        # A record's delivery callback only notes its error (the commit confirms the
        # rest): confluent-kafka then calls it for failures alone, instead of building a
        # message (a copy of the value) and calling Python for every record delivered.
        conf["delivery.report.only.error"] = True
        return conf

    def _retrying(self, call, deadline: float = float("inf")) -> None:
        """A transactional call (init, commit, abort), again while librdkafka says the
        error is retriable (a timeout, the coordinator moving) and the node runs."""
        while True:
            try:
                # short calls: librdkafka resumes a timed-out init/commit/abort when it
                # is called again, and a stop must find this thread out of it soon
                call(max(0.1, min(STOP_CALL, deadline - time.monotonic())))
                return
            except KafkaException as exc:
                err = exc.args[0]
                if not err.retriable() or err.txn_requires_abort():
                    self._raise(err)
                if self.ctx.stopping.is_set() and not self._closing:
                    raise _Stopping() from None
                if time.monotonic() >= deadline:
                    raise _TxnAborted(err) from None  # abort, and produce it again

    def _foreign_record(self, partition: int, offset: int) -> None:
        self.ctx.log_event("warning", "positions_foreign_record",
                           f"channel {self.ctx.name}: {self.positions_topic}[{partition}] "
                           f"offset {offset} is not a ddc position; it is ignored "
                           "(give this topic to ddc alone)", topic=self.positions_topic)

    def initial_positions(self) -> dict[tuple[str, int], int]:
        if self.view is None:  # not read yet: write() checks each partition's first record
            return {}
        return {k: off for k, (off, _owner) in self.view.positions.items()}

    # -- records ------------------------------------------------------------------
    def _admit(self, record: Record, what: str) -> bool:
        """Whether a record (to write, or to skip) is new to the destination; waits
        while the destination is not ready."""
        if self.fenced:
            return False
        while not self._ready(SETUP_WAIT):
            if self.ctx.stopping.is_set():
                if what == "write":
                    self._report_lost(record, "kafka destination not ready at shutdown"
                                      f" ({self._not_ready})")
                return False
            self.ctx.stopping.wait(0.2)  # the egress's queue holds (its budget bounds it)
        src = (record.topic, record.partition)
        if self._last.get(src) != record.prev_offset:
            # Not the continuation of what this sink wrote: the partition is new here,
            # or came back from another pair. What did the destination get meanwhile?
            self._fresh[src] = time.monotonic()
            if time.monotonic() - self._synced_at > self.commit_interval:
                self._sync(STOP_CALL if self.ctx.stopping.is_set() else 10)
            self._raise_floor(src)
        self._last[src] = record.offset
        if record.offset <= self._floor.get(src, -1):
            self.duplicates += what == "write"  # the destination has it (a resend)
            return False
        return True

    @_one_at_a_time
    def skip(self, record: Record) -> None:
        """Filtered: no record, but its position goes into the open transaction."""
        if self._admit(record, "skip"):
            self._step(self._skip_txn, record)
            self._commit_if_due()

    def _skip_txn(self, record: Record) -> None:
        src = (record.topic, record.partition)
        txn = self._txn or _Txn()
        # Noted before the transaction begins: if beginning fails, the transaction that is
        # redone keeps .lost (as _add keeps the record that failed to begin one).
        txn.lost[src] = max(txn.lost.get(src, -1), record.offset)
        if self._txn is None:
            self._begin(txn)

    def _commit_if_due(self) -> None:
        if self._txn is not None and not self.ctx.stopping.is_set() and \
                time.monotonic() - self._txn.started >= self.commit_interval:
            self._step(self._commit)  # (at a stop, close() commits once, for everything)
            self._resolve_deferred()  # under load poll() is not called

    @_one_at_a_time
    def write(self, record: Record) -> None:
        if self._write_one(record):
            self._step(self._poll, 0)

    def _write_one(self, record: Record) -> bool:
        """The record into the open transaction if it is new to the destination; whether
        it was produced. The caller polls after producing: a destination that is not
        ready is not polled, else each record would log its connection errors again."""
        if not self._admit(record, "write"):
            return False
        self._step(self._add, record)
        self._commit_if_due()
        return True

    @_one_at_a_time
    def write_batch(self, records: list[Record]) -> None:
        """write() for each record, polling the producer once for the batch (delivery
        errors fail the commit anyway, which then finds the culprit), and only if it
        produced something, as write()."""
        produced, i, n = 0, 0, len(records)
        while i < n:
            i, taken = self._produce_run(records, i)
            produced += taken
            if i < n:  # what the run does not take, the general way
                produced += self._write_one(records[i])
                i += 1
        if produced:
            self._step(self._poll, 0)

    def _produce_run(self, records: list[Record], i: int) -> tuple[int, int]:
        """The common case of write(), inlined for a run of records from records[i]: the
        sink is ready and not fenced, a transaction is open with no suspect to send
        alone, each record continues what this sink wrote of its partition and is above
        what the destination has. It stops at the first record that is not that case, or
        whose produce() raises (not produced: the general way tries it again, with its
        error handling), and returns (that index, records produced). Per record this is
        write() without its calls: the egress spends it on every record."""
        txn = self._txn
        # (view is None: not set up yet, the case _admit waits in)
        if txn is None or txn.isolate or self.fenced or self.view is None:
            return i, 0
        last, floor, kept, send = self._last, self._floor, txn.records, self._send
        monotonic, due = time.monotonic, txn.started + self.commit_interval
        start, n = i, len(records)
        while i < n:
            record = records[i]
            src = (record.topic, record.partition)
            if last.get(src) != record.prev_offset or record.offset <= floor.get(src, -1):
                break  # a new partition here, a gap, or a resend: _admit decides
            try:
                # No delivery callback: in a transaction a record that fails delivery
                # fails the commit, whose retry (_recover) produces every record again
                # with one (_produce_txn), which names the culprit. Per record, the
                # callback (a Message object and a call into Python on poll) cost the
                # sink's thread more than its produce().
                send(record, None)
            except (KafkaException, _Stopping):
                break
            last[src] = record.offset
            kept.append(record)
            i += 1
            if monotonic() >= due:
                self._commit_if_due()
                break  # the next record begins a transaction the general way
        self.produced += i - start
        return i, i - start

    @_one_at_a_time
    def poll(self) -> None:
        if self.fenced:
            return
        if not self._ready(SETUP_WAIT):
            self._poll(0)  # error callbacks (the TLS or SASL cause)
            self._close_failed_run()
            return
        self._step(self._poll, 0)
        if self._txn is not None and time.monotonic() - self._txn.started >= \
                self.commit_interval:
            self._step(self._commit)
        self._close_failed_run()
        self._resolve_deferred()
        if self._pending_stale and self._txn is None and not self.ctx.stopping.is_set():
            # Losses just reported are still pending in their position records: with no
            # records coming, a transaction of positions alone clears them within a
            # commit interval (else every later start would report them once more).
            self._step(self._begin, _Txn())

    def _step(self, fn, *args) -> None:
        """Run fn; if the transaction must be aborted, or the producer replaced, do so
        and produce the transaction's records again, until it is whole again."""
        try:
            fn(*args)
            return
        except _Stopping:
            return  # the node stops: close() commits what is open, or reports it
        except (_ProducerFailed, _TxnAborted) as exc:
            failure = exc
        failures = 0
        while True:
            if self.ctx.stopping.is_set() and not self._closing:
                return  # what the transaction holds is close()'s to commit or report
            err = failure.err
            if err is not None and err.code() in _FENCED:
                self._fence(err)
            failures += 1
            if failures > 3:
                if self.ctx.stopping.is_set():
                    self._give_up("the destination cannot be reached at shutdown")
                    return
                time.sleep(min(2.0, 0.1 * failures))
            kind = "restart" if isinstance(failure, _ProducerFailed) else "abort"
            self._recover_note(kind, err)
            try:
                self._recover(kind)
                return
            except _Stopping:
                return
            except (_ProducerFailed, _TxnAborted) as exc:
                failure = exc

    def _recover_note(self, kind: str, err) -> None:
        why = err.str() if err is not None else "another pair delivered some of its records"
        if kind == "restart":
            self.restarts += 1
            self.ctx.log_event("error", "producer_restarted",
                               f"channel {self.ctx.name}: fatal producer error "
                               f"({why}); starting a new transactional producer, the "
                               "open transaction is produced again", channel=self.ctx.name,
                               code=err.name() if err else None)
        else:
            self.aborts += 1
            self.ctx.log_event("warning", "transaction_aborted",
                               f"channel {self.ctx.name}: transaction aborted "
                               f"({why}); its records are produced again",
                               channel=self.ctx.name, code=err.name() if err else None)

    def _fence(self, err) -> None:
        self.fenced = True
        left = len(self._txn.records) if self._txn else 0
        self._txn = None
        raise ProducerFenced(
            f"channel {self.ctx.name}: fenced: another egress started with transactional.id "
            f"{self.transactional_id!r} and took over ({err.str()}); this one stops. The "
            f"{left} records of its open transaction were aborted: the newer egress "
            "delivers them or reports them lost")

    def _add(self, record: Record) -> None:
        if self._txn is None:
            txn = _Txn()
            try:
                self._begin(txn)  # the open transaction from here on, even if it fails
            except (_ProducerFailed, _TxnAborted):
                txn.records.append(record)  # produced when the transaction is redone
                raise
        self._produce_txn(record)

    def _begin(self, txn: _Txn) -> None:
        self._txn = txn
        txn.started = time.monotonic()
        try:
            self.producer.begin_transaction()
        except KafkaException as exc:
            self._raise(exc.args[0])

    def _raise(self, err) -> None:
        if err.txn_requires_abort():
            raise _TxnAborted(err)
        if err.code() == KafkaError._FATAL:
            # produce() says only "fatal error": poll() raises the cause (e.g. _FENCED)
            try:
                self.producer.poll(0)
            except KafkaException as exc:
                if _is_fatal(exc.args[0]):
                    err = exc.args[0]
        raise _ProducerFailed(err)

    def _produce_txn(self, record: Record) -> None:
        txn = self._txn
        assert txn is not None  # _add begins one first
        on_delivery = functools.partial(_note_delivery_error, txn, len(txn.records))
        txn.records.append(record)
        alone = id(record) in txn.isolate
        try:
            if alone:  # a record whose batch the broker refused: is it the culprit?
                self.producer.flush(self.timeout)
            self._send(record, on_delivery)
            if alone:
                self.producer.flush(self.timeout)
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() in _RECORD_ERRORS and not _is_fatal(err):
                txn.records.pop()
                self._lost(txn, record, err)
                return
            self._raise(err)
        self.produced += 1

    def _lost(self, txn: _Txn, record: Record, err) -> None:
        self.failed += 1
        src = (record.topic, record.partition)
        txn.lost[src] = max(txn.lost.get(src, -1), record.offset)
        self._report_lost(record, f"kafka delivery failed: {err.str()}")

    def _commit(self) -> None:
        txn = self._txn
        assert txn is not None and self.view is not None  # see _ready: open, positions read
        fresh = [src for src in self._sources(txn) if src in self._fresh]
        if fresh:
            # A partition that came from another pair: did it deliver some of these
            # records after we looked? Then they go, before anything commits.
            self._sync(min(10.0, self.timeout))
            for src in fresh:
                self._raise_floor(src)
            if any(self._have(r) for r in txn.records):
                raise _TxnAborted(None)
        positions = {}
        for r in txn.records:
            positions[(r.topic, r.partition)] = r.offset  # records are in offset order
        for src, off in txn.lost.items():
            positions[src] = max(positions.get(src, -1), off)
        # (taken after the transaction's records: a gap before any of them was deferred
        # before that record reached this sink)
        pending = self._pending_by_source()
        for src in self._pending_stale | pending.keys():
            if src not in positions and self.view.get(src) is not None:
                positions[src] = -1  # the same position, its pending list brought up to date
        for src, off in positions.items():
            have = self.view.get(src)
            off = max(off, have[0]) if have else off  # never write a position back
            positions[src] = off
            key = position_key(self.ctx.channel_id, *src)
            try:
                self.producer.produce(self.positions_topic, key=key,
                                      value=position_value(off, self.owner,
                                                           self.transactional_id,
                                                           pending.get(src)),
                                      partition=self.view.partition_for(key))
            except KafkaException as exc:
                self._raise(exc.args[0])
        # Longer than a record may wait (delivery_timeout_ms, librdkafka's message timeout
        # in a transaction): a record that cannot be delivered fails first, and alone.
        self._retrying(self.producer.commit_transaction, time.monotonic() + self.timeout +
                       (0 if self._closing else 5 + self.timeout))
        self.commits += 1
        self.delivered += len(txn.records)
        self._txn = None
        self._pending_stale -= positions.keys()
        now = time.monotonic()
        for src, off in positions.items():
            self._committed[src] = off
            self.view.learn(src, off, self.owner)
            if src in self._fresh and now - self._fresh[src] > self.grace:
                del self._fresh[src]
        self.view.refresh()

    @staticmethod
    def _sources(txn: _Txn) -> set[tuple[str, int]]:
        return {(r.topic, r.partition) for r in txn.records} | set(txn.lost)

    def _raise_floor(self, src: tuple[str, int]) -> None:
        """Records at or below the floor are in the destination already. The floor
        follows the positions topic only while a partition is fresh here (just taken
        over): a partition this sink continues is its own, and a position another pair
        writes meanwhile (its last records in flight) must not make both drop records."""
        assert self.view is not None  # called once ready (_admit, _commit)
        have = self.view.get(src)
        if have is not None and have[0] > self._floor.get(src, -1):
            self._floor[src] = have[0]

    def _have(self, record: Record) -> bool:
        return record.offset <= self._floor.get((record.topic, record.partition), -1)

    def _recover(self, kind: str) -> None:
        """Abort the transaction (or replace the producer) and begin it again with the
        records that can still be delivered."""
        old = self._txn
        if kind == "restart":
            self.producer = Producer(self.conf)
            self._retrying(self.producer.init_transactions)
        else:
            self._retrying(self.producer.abort_transaction)
        self._txn = None
        if old is None:
            return
        again = _Txn()
        again.lost = old.lost
        for i, r in enumerate(old.records):
            err = old.errors.get(i)
            if self._have(r):
                self.duplicates += 1
            elif err is None or err.code() not in _RECORD_ERRORS:
                again.records.append(r)
            elif err.code() in _BATCH_ERRORS and id(r) not in old.isolate:
                again.records.append(r)  # maybe only batched with the culprit
                again.isolate.add(id(r))
            else:
                self._lost(again, r, err)
        records, again.records = again.records, []
        tried = 0
        try:
            self._begin(again)
            for r in records:
                tried += 1
                self._produce_txn(r)  # (a record it raised for is in again.records)
        except (_ProducerFailed, _TxnAborted):
            again.records.extend(records[tried:])  # kept for the next attempt, or the report
            raise

    def _give_up(self, why: str) -> None:
        """Shutdown with the destination gone: what the open transaction held is lost."""
        txn, self._txn = self._txn, None
        if txn is not None:
            for r in txn.records:
                self._report_lost(r, f"kafka transaction not committed: {why}")
        self._close_failed_run()

    # -- losses the link found ------------------------------------------------------
    def defer_loss(self, report: LossReport) -> bool:
        self._deferred.append((time.monotonic() + self.grace, report))
        return True

    def _pending_by_source(self) -> dict[tuple[str, int], list[Pending]]:
        """The waiting losses per source partition, due times as wall-clock seconds
        (they outlive this process)."""
        now, wall = time.monotonic(), time.time()
        out: dict[tuple[str, int], list[Pending]] = {}
        for due, r in list(self._deferred):  # (the egress's thread appends meanwhile)
            out.setdefault((r.topic, r.partition), []).append(
                (r.first_offset, r.last_offset, r.count, r.reason, wall + due - now))
        return out

    def _resolve_deferred(self, now: float | None = None) -> None:
        """A loss the link found is checked against the destination once the grace is
        over: another pair may have delivered those offsets (the partition was moving)."""
        now = time.monotonic() if now is None else now
        if not self._deferred or self._deferred[0][0] > now or self.view is None:
            return
        self._sync(min(5.0, self.timeout))
        while self._deferred and self._deferred[0][0] <= now:
            _, r = self._deferred.popleft()
            self._pending_stale.add((r.topic, r.partition))
            have = self.view.others.get((r.topic, r.partition))
            first, count, extra = r.first_offset, r.count, {}
            if have is not None:
                # Another pair had the partition: up to its position it delivered the
                # records, or reports them itself.
                offset, owner = have
                if offset >= r.last_offset:
                    continue
                if first is None or offset >= first:
                    if count is not None and first is not None:
                        count -= offset + 1 - first
                    first = offset + 1
                    extra["previous_owner"] = owner
            self.ctx.report_loss(r.topic, r.partition, first, r.last_offset, count,
                                 r.reason, **extra)

    def _sync(self, timeout: float) -> None:
        assert self.view is not None  # called once ready (_admit, _commit, a deferred loss)
        if not self.view.sync(timeout):
            self.ctx.log_event("warning", "positions_stale",
                               f"channel {self.ctx.name}: could not read "
                               f"{self.positions_topic} to its end within {timeout:g} s; "
                               "going on with what was read", topic=self.positions_topic)
        self._synced_at = time.monotonic()

    # -- operator surface -------------------------------------------------------------
    def delivered_positions(self) -> dict[tuple[str, int], int]:
        return dict(self._committed)

    def metrics(self) -> list[Metric]:
        tags = (("channel", self.ctx.name),)
        return super().metrics() + [
            Metric("kafka.transactions_committed", self.commits, KIND_COUNTER, tags),
            Metric("kafka.transactions_aborted", self.aborts, KIND_COUNTER, tags),
            Metric("kafka.duplicates_dropped", self.duplicates, KIND_COUNTER, tags),
            Metric("kafka.producer_fenced", 1 if self.fenced else 0, KIND_GAUGE, tags),
            Metric("kafka.partitions_owned", sum(1 for _o, owner in
                                                 list(self._view_positions().values())
                                                 if owner == self.owner), KIND_GAUGE, tags)]

    def _view_positions(self) -> dict:
        return {} if self.view is None else self.view.positions

    def status(self) -> dict:
        return {"transactions": {"transactional_id": self.transactional_id,
                                 "positions_topic": self.positions_topic,
                                 "committed": self.commits, "aborted": self.aborts,
                                 "fenced": self.fenced, "producer_restarts": self.restarts,
                                 "duplicates_dropped": self.duplicates},
                "partitions": [{"topic": t, "partition": p, "position": off, "owner": owner}
                               for (t, p), (off, owner) in
                               sorted(list(self._view_positions().items()))]}

    @_one_at_a_time
    def close(self) -> None:
        """Commit what is open, within a few seconds; else it is reported lost."""
        if self.view is None:  # never ready: nothing was produced, losses the link
            for _, r in self._deferred:  # found are not checked against other pairs
                self.ctx.report_loss(r.topic, r.partition, r.first_offset, r.last_offset,
                                     r.count, r.reason)
            self._deferred.clear()
            self._close_failed_run()
            return
        if self.fenced:
            self.view.close()
            return
        self._closing = True
        self.timeout = min(self.timeout, STOP_CALL)  # SIGTERM must end the daemon in seconds
        # What waits out the grace is reported now, and the last commit clears it from
        # the position records (else the next start would report it again).
        self._resolve_deferred(now=float("inf"))
        if self._txn is None and self._pending_stale:
            try:
                self._begin(_Txn())
            except (_ProducerFailed, _TxnAborted):
                self._txn = None  # (then the next start reports those losses once more)
        if self._txn is not None:
            try:
                try:
                    self._commit()
                except _TxnAborted:  # records another pair has: drop them, then commit
                    self._recover("abort")
                    self._commit()
            except (_ProducerFailed, _TxnAborted) as exc:
                try:
                    self.producer.abort_transaction(0.5)
                except KafkaException:
                    pass
                self._give_up(f"at shutdown ({exc})")
            except ProducerFenced:
                pass
        self._close_failed_run()
        self.view.close()


class _Stopping(Exception):
    """The node stops while the destination does not answer: leave it to close()."""


class _TxnAborted(Exception):
    """The transaction must be aborted (err None: to drop records another pair has)."""

    def __init__(self, err):
        super().__init__(err.str() if err is not None else "records delivered elsewhere")
        self.err = err


def open_source(options: dict, ctx: ChannelContext) -> KafkaSource:
    return KafkaSource(options_of(SourceOptions, options), ctx)


def open_sink(options: dict, ctx: ChannelContext) -> KafkaSink:
    opts = options_of(SinkOptions, options)
    if opts.transactions:
        return TransactionalKafkaSink(opts, ctx)
    return KafkaSink(opts, ctx)
