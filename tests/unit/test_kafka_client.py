"""The Kafka channel's client handling that needs no broker: client.id, and close() bounded
with nothing listening (real librdkafka clients pointed at a closed port)."""

from __future__ import annotations

import socket
import tempfile
import threading
import time

import pytest

from appliance.channels.base import ChannelContext
from appliance.channels.kafka import (
    ClientOptions,
    KafkaSink,
    KafkaSource,
    SinkOptions,
    SourceOptions,
    client_config,
)
from appliance.protocol.records import Record
from appliance.schema import options_of


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


CLOSE_WITHIN_S = 3.0  # base.CLOSE_STALL (1.5 s) and the time to serve the reports


def _ctx(losses: list | None = None, events: list | None = None) -> ChannelContext:
    ctx = ChannelContext(3, "orders", tempfile.mkdtemp(prefix="ddc-client-"), 1 << 20)
    if events is not None:
        ctx.log_event = lambda level, event, msg, **kw: events.append((event, msg))
    if losses is not None:
        ctx.report_loss = lambda *a: losses.append(a)
    return ctx


def test_client_id_names_node_and_channel_and_can_be_overridden():
    ctx = _ctx()
    ctx.node_name = "edge1"
    plain = options_of(ClientOptions, {"bootstrap_servers": "h:9092"})
    assert client_config(plain, ctx)["client.id"] == \
        "ddc-edge1-orders"
    conf = client_config(options_of(ClientOptions, {"bootstrap_servers": "h:9092",
                                                    "properties": {"client.id": "mine"}}),
                         ctx)
    assert conf["client.id"] == "mine"


def test_sink_close_with_no_broker_reports_pending_records_lost_within_bound():
    losses: list = []
    sink = KafkaSink(options_of(SinkOptions, {"bootstrap_servers": _closed_port()}),
                     _ctx(losses, []))
    for off in range(5, 9):
        sink.write(Record(value=b"v", key=None, headers=[], topic="t", partition=1,
                          offset=off, prev_offset=off - 1, timestamp=0, timestamp_type=0,
                          durable=True))
    t0 = time.monotonic()
    sink.close()
    took = time.monotonic() - t0
    assert took < CLOSE_WITHIN_S, took
    assert [(t, p, first, last, n) for t, p, first, last, n, _ in losses] == \
        [("t", 1, 5, 8, 4)]
    assert "Purged" in losses[0][5]


def test_source_close_with_no_broker_returns_within_bound():
    events: list = []
    src = KafkaSource(options_of(SourceOptions, {"bootstrap_servers": _closed_port(),
                                                 "group_id": "g", "topics": ["t"]}),
                      _ctx(None, events))
    stop = threading.Event()
    th = threading.Thread(target=src.run, args=(lambda b: None, stop))
    th.start()
    time.sleep(0.5)
    stop.set()
    th.join(2)
    assert not th.is_alive()
    t0 = time.monotonic()
    src.close()
    assert time.monotonic() - t0 < CLOSE_WITHIN_S


@pytest.mark.parametrize("writes", ["one by one", "as a batch"])
def test_transactional_sink_starts_with_its_destination_down_and_reports_by_range(writes):
    """The egress must listen to the diode whatever its destination does: the
    transactional sink's constructor gives up waiting for the cluster within
    SETUP_AT_START, says so once, and a record it still cannot write at the stop is
    reported lost by range, not dropped. The egress hands records one by one (write)
    or a batch at a time (write_batch): the same either way."""
    from appliance.channels.kafka import SETUP_AT_START, TransactionalKafkaSink

    losses: list = []
    events: list = []
    ctx = _ctx(losses, events)
    t0 = time.monotonic()
    sink = TransactionalKafkaSink(options_of(SinkOptions, {"bootstrap_servers": _closed_port()}),
                                  ctx)
    assert time.monotonic() - t0 < SETUP_AT_START * 3 + 1  # topic, producer id, positions
    assert [e for e, _ in events] == ["kafka_destination_not_ready"]
    assert sink.problem()
    assert sink.initial_positions() == {}
    ctx.stopping.set()
    records = [Record(value=b"v", key=None, headers=[], topic="t", partition=1,
                      offset=off, prev_offset=off - 1, timestamp=0, timestamp_type=0,
                      durable=True) for off in range(5, 9)]
    if writes == "as a batch":
        sink.write_batch(records)
    else:
        for record in records:
            sink.write(record)
    sink.close()
    assert [(t, p, first, last, n) for t, p, first, last, n, _ in losses] == \
        [("t", 1, 5, 8, 4)]
    assert "not ready at shutdown" in losses[0][5]
    assert [e for e, _ in events] == ["kafka_destination_not_ready"], "said once"


class _Err:
    def __init__(self, code, text):
        self._code, self._text = code, text

    def code(self):
        return self._code

    def name(self):
        from confluent_kafka import KafkaError
        return {KafkaError._SSL: "_SSL", KafkaError._TRANSPORT: "_TRANSPORT"}[self._code]

    def str(self):
        return self._text


def test_a_tls_failure_reported_again_as_transport_error_is_the_same_one_line():
    """librdkafka gives the first failed handshake as _SSL and a later reconnect's as
    _TRANSPORT with the same OpenSSL text: one throttled TLS line, not a second one."""
    from confluent_kafka import KafkaError

    from appliance.channels.kafka import _ErrorThrottle

    events: list = []
    throttle = _ErrorThrottle(_ctx(None, events),
                              options_of(ClientOptions, {"bootstrap_servers": "127.0.0.1:1"}))
    text = ("ssl://127.0.0.1:1/bootstrap: SSL handshake failed: error:0A000086:SSL "
            "routines::certificate verify failed")
    throttle(_Err(KafkaError._SSL, text))
    throttle(_Err(KafkaError._TRANSPORT, "ssl://127.0.0.1:1/bootstrap: error:0A000086:SSL "
                  "routines::certificate verify failed (after 3ms in state SSL_HANDSHAKE)"))
    deadline = time.monotonic() + 5
    while not events and time.monotonic() < deadline:
        time.sleep(0.05)  # the TLS check runs on its own thread
    time.sleep(0.3)
    assert [e for e, _ in events] == ["kafka_tls_failed"]


def test_a_record_of_the_largest_size_fits_the_producers_queue():
    """A record below max_record_bytes but above librdkafka's local queue bound
    (queue.buffering.max.kbytes, 64 MiB before) could never be queued: produce() raised
    BufferError for ever and the sink's thread waited for room until the stop. The queue
    now holds the largest record the sink accepts; with nothing listening the record is
    queued at once, and close() reports it lost."""
    losses: list = []
    ctx = _ctx(losses, [])
    sink = KafkaSink(options_of(SinkOptions, {"bootstrap_servers": _closed_port(),
                                              "max_record_bytes": 80_000_000}), ctx)
    record = Record(value=bytes(70_000_000), key=None, headers=[], topic="t", partition=0,
                    offset=7, prev_offset=6, timestamp=0, timestamp_type=0, durable=True)
    writer = threading.Thread(target=sink.write, args=(record,), daemon=True)
    try:
        writer.start()
        writer.join(5)
        queued = not writer.is_alive()
    finally:
        ctx.stopping.set()  # lets a writer that waits for room give up
        writer.join(10)
        sink.close()
    assert queued, "a 70 MB record waited for room in the producer's queue"
    assert [(t, p, first, last, n) for t, p, first, last, n, _ in losses] == \
        [("t", 0, 7, 7, 1)]
