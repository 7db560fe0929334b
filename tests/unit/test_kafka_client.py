"""The Kafka channel's client handling that needs no broker: client.id, and close() bounded
with nothing listening (real librdkafka clients pointed at a closed port)."""

from __future__ import annotations

import socket
import threading
import time

from appliance.channels.base import ChannelContext
from appliance.channels.kafka import KafkaSink, KafkaSource, client_config
from appliance.protocol.records import Record


def _closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


CLOSE_WITHIN_S = 3.0  # base.CLOSE_STALL (1.5 s) and the time to serve the reports


def _ctx(losses: list | None = None, events: list | None = None) -> ChannelContext:
    ctx = ChannelContext(3, "orders", "/nonexistent", 1 << 20)
    if events is not None:
        ctx.log_event = lambda level, event, msg, **kw: events.append((event, msg))
    if losses is not None:
        ctx.report_loss = lambda *a: losses.append(a)
    return ctx


def test_client_id_names_node_and_channel_and_can_be_overridden():
    ctx = _ctx()
    ctx.node_name = "edge1"
    assert client_config({"bootstrap_servers": "h:9092"}, ctx)["client.id"] == \
        "ddc-edge1-orders"
    conf = client_config({"bootstrap_servers": "h:9092",
                          "properties": {"client.id": "mine"}}, ctx)
    assert conf["client.id"] == "mine"


def test_sink_close_with_no_broker_reports_pending_records_lost_within_bound():
    losses: list = []
    sink = KafkaSink({"bootstrap_servers": _closed_port()}, _ctx(losses, []))
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
    src = KafkaSource({"bootstrap_servers": _closed_port(), "group_id": "g", "topics": ["t"]},
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
