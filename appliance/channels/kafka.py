"""Kafka channel on confluent-kafka (librdkafka).

Ingress: a consumer-group consumer over topics (a list and/or a regex), all their
partitions. Offsets are stored only once every byte of a record is in datagrams on
the link (enable.auto.offset.store=false; the link thread hands records back), and
committed by librdkafka's auto-commit of stored offsets, so a restarted ingress
resumes where the link left off.

Egress: an idempotent producer writing key, value, headers and timestamp intact to the
same partition number (or by key, or librdkafka's default), with topic renaming.
Delivery reports are checked: a record that cannot be delivered after librdkafka's
retries is reported lost by range. Per source partition the sink keeps the offset up
to which every record is confirmed delivered; the egress persists it so a restart
neither duplicates nor silently drops.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, Producer, TopicPartition

from ..protocol.heartbeat import KIND_COUNTER, KIND_GAUGE, Metric
from ..protocol.records import Record
from .base import (
    CLOSE_LIMIT,
    CLOSE_STALL,
    ChannelContext,
    Emit,
    Sink,
    Source,
    run_bounded,
    unknown_keys,
)

ROLES = ("ingress", "egress")

_COMMON = {"bootstrap_servers", "security_protocol", "sasl_mechanism", "sasl_username",
           "sasl_password", "sasl_password_file", "ssl_ca_location",
           "ssl_certificate_location", "ssl_key_location", "properties"}
_SOURCE = _COMMON | {"group_id", "topics", "topic_pattern", "batch_size", "queued_max_kbytes",
                     "auto_offset_reset", "stall_timeout"}
_SINK = _COMMON | {"topic_map", "topic_prefix", "partitioning", "linger_ms", "batch_size",
                   "compression", "max_record_bytes", "delivery_timeout_ms"}
SECURITY = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI")
PARTITIONING = ("same", "key", "default")
COMPRESSION = ("none", "gzip", "snappy", "lz4", "zstd")


def _str_list(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) and x for x in v)


def validate(options: dict, role: str) -> list[tuple[str, str]]:
    p: list[tuple[str, str]] = []
    unknown_keys(options, _SOURCE if role == "ingress" else _SINK, p)
    bs = options.get("bootstrap_servers")
    if bs is None:
        p.append(("bootstrap_servers", "is required (\"host:9092,host2:9092\" or a list)"))
    elif not (isinstance(bs, str) and bs) and not _str_list(bs):
        p.append(("bootstrap_servers", f"must be \"host:port,...\" or a list, got {bs!r}"))
    sec = options.get("security_protocol", "PLAINTEXT")
    if sec not in SECURITY:
        p.append(("security_protocol", f"must be one of {', '.join(SECURITY)}, got {sec!r}"))
    mech = options.get("sasl_mechanism")
    if mech is not None and mech not in MECHANISMS:
        p.append(("sasl_mechanism", f"must be one of {', '.join(MECHANISMS)}, got {mech!r}"))
    if isinstance(sec, str) and sec.startswith("SASL") and mech is None:
        p.append(("sasl_mechanism", f"is required with security_protocol = {sec!r}"))
    if "sasl_password" in options and "sasl_password_file" in options:
        p.append(("sasl_password_file", "give sasl_password or sasl_password_file, not both"))
    for key in ("sasl_username", "sasl_password", "sasl_password_file", "ssl_ca_location",
                "ssl_certificate_location", "ssl_key_location", "group_id", "topic_pattern",
                "topic_prefix"):
        if key in options and not isinstance(options[key], str):
            p.append((key, f"must be a string, got {options[key]!r}"))
    props = options.get("properties", {})
    if not isinstance(props, dict):
        p.append(("properties", "must be a table of librdkafka properties"))
    else:
        for k, v in props.items():
            if not isinstance(v, str | int | float | bool):
                p.append((f"properties.{k}", f"must be a string, number or boolean, got {v!r}"))
    if role == "ingress":
        if "group_id" not in options:
            p.append(("group_id", "is required"))
        topics = options.get("topics", [])
        if not _str_list(topics):
            p.append(("topics", f"must be a list of topic names, got {topics!r}"))
        pattern = options.get("topic_pattern")
        if not topics and not pattern:
            p.append(("topics", "give topics = [...] and/or topic_pattern = \"regex\""))
        if isinstance(pattern, str):
            import re

            try:
                re.compile(pattern)
            except re.error as exc:
                p.append(("topic_pattern", f"is not a valid regular expression: {exc}"))
        _int(options, "batch_size", 1, 1_000_000, p)
        _int(options, "queued_max_kbytes", 1024, 2_097_151, p)
        stall = options.get("stall_timeout", 60)
        if not isinstance(stall, int | float) or isinstance(stall, bool) or not 5 <= stall <= 86400:
            p.append(("stall_timeout", f"must be a number of seconds between 5 and 86400, "
                      f"got {stall!r}"))
        reset = options.get("auto_offset_reset", "earliest")
        if reset not in ("earliest", "latest"):
            p.append(("auto_offset_reset", f"must be \"earliest\" or \"latest\", got {reset!r}"))
    else:
        tmap = options.get("topic_map", {})
        if not isinstance(tmap, dict) or not all(isinstance(v, str) and v for v in tmap.values()):
            p.append(("topic_map", "must be a table of source topic = \"destination topic\""))
        part = options.get("partitioning", "same")
        if part not in PARTITIONING:
            p.append(("partitioning", f"must be one of {', '.join(PARTITIONING)}, got {part!r}"))
        comp = options.get("compression", "lz4")
        if comp not in COMPRESSION:
            p.append(("compression", f"must be one of {', '.join(COMPRESSION)}, got {comp!r}"))
        _int(options, "linger_ms", 0, 900_000, p)
        _int(options, "batch_size", 1, 2_147_483_647, p)
        _int(options, "max_record_bytes", 1000, 1_000_000_000, p)
        _int(options, "delivery_timeout_ms", 1000, 2_147_483_647, p)
    return p


def _int(options: dict, key: str, lo: int, hi: int, p: list) -> None:
    if key in options:
        v = options[key]
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            p.append((key, f"must be an integer between {lo} and {hi}, got {v!r}"))


class _ErrorThrottle:
    """librdkafka repeats a transport error every reconnect attempt: log each kind once a
    minute, with how many were swallowed, so an outage is one line a minute, not a flood.

    TLS handshake and SASL failures get one line naming the channel and the cause
    (kafka_tls_failed, kafka_auth_failed). librdkafka says only "certificate verify
    failed" for a wrong CA and an expired certificate alike, so the broker's certificate
    is checked again here with Python's ssl module, which names the reason. The last such
    problem is the channel's `problem` in the node's status (`ddc status`) until the
    client makes progress again."""

    def __init__(self, ctx: ChannelContext, options: dict, every: float = 60.0):
        self.ctx, self.options, self.every = ctx, options, every
        self._last: dict[str, tuple[float, int]] = {}
        self.count = 0
        self.problem: str | None = None

    def __call__(self, err) -> None:
        self.count += 1
        now = time.monotonic()
        name = err.name()
        seen, swallowed = self._last.get(name, (-self.every, 0))
        if now - seen < self.every:
            self._last[name] = (seen, swallowed + 1)
            return
        self._last[name] = (now, 0)
        more = f" ({swallowed} more since the last report)" if swallowed else ""
        if err.code() == KafkaError._SSL:
            # the check connects to the broker: off the client's thread
            threading.Thread(target=self._tls_failed, args=(err.str(), more),
                             name=f"tls-check:{self.ctx.name}", daemon=True).start()
        elif err.code() == KafkaError._AUTHENTICATION:
            self._report("kafka_auth_failed", name, _auth_cause(err.str(), self.options), more)
        else:
            self.ctx.log_event("warning", "kafka_error",
                               f"channel {self.ctx.name}: {err.str()}{more}", code=name)

    def _tls_failed(self, text: str, more: str) -> None:
        self._report("kafka_tls_failed", "_SSL", _tls_cause(text, self.options), more)

    def _report(self, event: str, code: str, cause: str, more: str) -> None:
        self.problem = cause
        self.ctx.log_event("error", event, f"channel {self.ctx.name}: {cause}{more}",
                           code=code, cause=cause)


_BROKER_IN_ERROR = re.compile(r"^(?:\w+://)?(\[[^\]]+\]|[^:/\s]+):(\d+)/")


def _tls_cause(text: str, options: dict) -> str:
    """What is wrong with the TLS handshake librdkafka reported in `text`, checked with
    Python's ssl module against the channel's ssl_ca_location (or the system CAs)."""
    import socket
    import ssl

    m = _BROKER_IN_ERROR.match(text)
    reason = text.split(": ", 1)[-1]
    if m is None:
        return f"TLS handshake failed: {reason}"
    host, port = m.group(1).strip("[]"), int(m.group(2))
    ca = options.get("ssl_ca_location")
    trust = f"ssl_ca_location {ca}" if ca else "the system's CA certificates"
    where = f"TLS handshake with broker {host}:{port} failed"
    try:
        ctx = ssl.create_default_context(cafile=ca)
        props = options.get("properties", {})
        if props.get("ssl.endpoint.identification.algorithm") == "none":
            ctx.check_hostname = False
        if options.get("ssl_certificate_location") and options.get("ssl_key_location"):
            ctx.load_cert_chain(options["ssl_certificate_location"], options["ssl_key_location"])
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


def _auth_cause(text: str, options: dict) -> str:
    user = options.get("sasl_username")
    who = f" as {user!r}" if user else ""
    return (f"SASL authentication{who} ({options.get('sasl_mechanism', '?')}) refused by the "
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


def client_config(options: dict, ctx: ChannelContext) -> dict:
    """librdkafka properties from the first-class keys, then the pass-through table.

    client.id names node and channel (ddc-<node>-<channel>) in broker logs, quotas and
    request metrics. librdkafka's own log lines go through the `ddc.kafka` logger (JSON,
    syslog, journal) instead of raw stderr, without those error_cb reports too."""
    bs = options["bootstrap_servers"]
    conf = {"bootstrap.servers": bs if isinstance(bs, str) else ",".join(bs),
            "security.protocol": options.get("security_protocol", "PLAINTEXT"),
            "client.id": f"ddc-{ctx.node_name}-{ctx.name}",
            "logger": _LibrdkafkaLog()}
    mapping = {"sasl_mechanism": "sasl.mechanism", "sasl_username": "sasl.username",
               "sasl_password": "sasl.password", "ssl_ca_location": "ssl.ca.location",
               "ssl_certificate_location": "ssl.certificate.location",
               "ssl_key_location": "ssl.key.location"}
    for key, prop in mapping.items():
        if key in options:
            conf[prop] = options[key]
    if "sasl_password_file" in options:
        with open(options["sasl_password_file"]) as f:
            conf["sasl.password"] = f.read().strip()
    for k, v in options.get("properties", {}).items():
        conf[k] = v
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

    def __init__(self, options: dict, ctx: ChannelContext):
        self.ctx = ctx
        self.batch = options.get("batch_size", 1000)
        self.stall_timeout = float(options.get("stall_timeout", 60))
        self.conf = {
            "group.id": options["group_id"],
            "enable.auto.commit": True,
            "enable.auto.offset.store": False,  # stored only once the record is on the link
            "auto.commit.interval.ms": 1000,
            "auto.offset.reset": options.get("auto_offset_reset", "earliest"),
            "queued.max.messages.kbytes": options.get("queued_max_kbytes", 16384),
            "statistics.interval.ms": 1000,
            "stats_cb": self._on_stats,
            "error_cb": self._on_error,
        }
        self.conf.update(client_config(options, ctx))
        self.bootstrap = self.conf["bootstrap.servers"]
        self._errors = _ErrorThrottle(ctx, options)
        subs = list(options.get("topics", []))
        if options.get("topic_pattern"):
            pat = options["topic_pattern"]
            subs.append(pat if pat.startswith("^") else "^" + pat)
        self.subscriptions = subs
        self._to_store: deque[list[TopicPartition]] = deque()
        self._resume_prev: dict[tuple[str, int], int] = {}
        self.lag: dict[tuple[str, int], int] = {}
        self.consumed = 0
        self.errors = 0
        self.recreated = 0
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
        self._flush_store(consumer)
        self.ctx.log_event("info", "partitions_revoked",
                           f"channel {self.ctx.name}: revoked {len(partitions)} partitions")

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
        while not stop.is_set():
            self._flush_store()
            msgs = self.consumer.consume(num_messages=self.batch, timeout=0.1)
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
                batch.append(Record(value=m.value(), key=m.key(), headers=m.headers() or [],
                                    topic=topic, partition=part, offset=off, prev_offset=prev,
                                    timestamp=max(ts, 0), timestamp_type=ts_type, durable=True))
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
            elif (now - progress > self.stall_timeout and not self._errors.problem
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


class KafkaSink(Sink):
    def __init__(self, options: dict, ctx: ChannelContext):
        self.ctx = ctx
        self.topic_map = dict(options.get("topic_map", {}))
        self.prefix = options.get("topic_prefix", "")
        self.partitioning = options.get("partitioning", "same")
        conf = {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": options.get("linger_ms", 5),
            "batch.size": options.get("batch_size", 1_000_000),
            "compression.type": options.get("compression", "lz4"),
            "message.max.bytes": options.get("max_record_bytes", 16 * 1024 * 1024),
            "delivery.timeout.ms": options.get("delivery_timeout_ms", 300_000),
            "queue.buffering.max.kbytes": 65536,
            "error_cb": self._on_error,
        }
        conf.update(client_config(options, ctx))
        self._errors = _ErrorThrottle(ctx, options)
        self.producer = Producer(conf)
        self.marks: dict[tuple[str, int], _Watermark] = {}
        self._lock = threading.Lock()
        self.produced = 0
        self.delivered = 0
        self.failed = 0
        self.errors = 0
        self._failed_run: list | None = None  # coalesces consecutive failures into ranges

    def _on_error(self, err) -> None:
        self.errors += 1
        self._errors(err)

    def destination(self, topic: str) -> str:
        return self.prefix + self.topic_map.get(topic, topic)

    def write(self, record: Record) -> None:
        src = (record.topic, record.partition)
        with self._lock:
            mark = self.marks.get(src)
            if mark is None:
                mark = self.marks[src] = _Watermark()
            mark.sent(record.offset)
        kwargs = {}
        if self.partitioning == "same":
            kwargs["partition"] = record.partition
        if record.timestamp:
            kwargs["timestamp"] = record.timestamp
        if record.headers:
            kwargs["headers"] = record.headers
        offset = record.offset

        def on_delivery(err, msg, src=src, offset=offset) -> None:
            self._delivered(err, src, offset)

        while True:
            try:
                self.producer.produce(self.destination(record.topic), value=record.value,
                                      key=record.key, on_delivery=on_delivery, **kwargs)
                break
            except BufferError:
                self.producer.poll(0.05)  # local queue full: wait for deliveries
        self.produced += 1
        self.producer.poll(0)

    def problem(self) -> str | None:
        return self._errors.problem

    def _delivered(self, err, src: tuple[str, int], offset: int) -> None:
        if err is None:
            self.delivered += 1
            self._errors.problem = None
        else:
            self.failed += 1
            run = self._failed_run
            if run and run[0] == src and run[2] == offset - 1 and run[4] == err.str():
                run[2] = offset
                run[3] += 1
            else:
                self._close_failed_run()
                self._failed_run = [src, offset, offset, 1, err.str()]
        with self._lock:
            self.marks[src].finished(offset)

    def _close_failed_run(self) -> None:
        run, self._failed_run = self._failed_run, None
        if run:
            (topic, part), first, last, count, reason = run
            self.ctx.report_loss(topic, part, first, last, count,
                                 f"kafka delivery failed: {reason}")

    def poll(self) -> None:
        self.producer.poll(0)
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
                Metric("kafka.producer_queue", len(self.producer), KIND_GAUGE, tags)]

    def close(self) -> None:
        """Flush while deliveries progress (CLOSE_STALL without one ends it, CLOSE_LIMIT in
        all); what is still unconfirmed then is purged, and its failed delivery reports
        report it lost by range: the ingress committed it when it was on the link."""
        producer = self.producer
        start = time.monotonic()
        last_move, left = start, len(producer)
        while left:
            now = time.monotonic()
            if now - last_move >= CLOSE_STALL or now - start >= CLOSE_LIMIT:
                break
            producer.flush(0.1)
            if len(producer) < left:
                last_move, left = time.monotonic(), len(producer)
        if left:
            self.ctx.log_event("error", "undelivered_at_stop",
                               f"channel {self.ctx.name}: {left} records not confirmed by the "
                               f"destination {time.monotonic() - start:.1f} s after the stop "
                               "request (brokers unreachable?): reporting them lost",
                               count=left)
            producer.purge()  # in queue and in flight: each gets a failed delivery report
            producer.flush(0.5)
        self._close_failed_run()


def open_source(options: dict, ctx: ChannelContext) -> KafkaSource:
    return KafkaSource(options, ctx)


def open_sink(options: dict, ctx: ChannelContext) -> KafkaSink:
    return KafkaSink(options, ctx)
