"""What the daemon's StatsD client puts on the wire (a real UDP socket stands in for Vector's
statsd source): values exact, integers as integers."""

from __future__ import annotations

import socket

import pytest

from appliance.observe.metrics import TaggedStatsClient


@pytest.fixture
def wire():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    client = TaggedStatsClient("127.0.0.1", sock.getsockname()[1], "ddc", {"node": "n1"})
    yield client, lambda: sock.recv(65536).decode()
    client.close()
    sock.close()


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (12_345_678, "12345678"),  # %g sent 1.23457e+07
        (12_345_678.0, "12345678"),
        (2**53, "9007199254740992"),
        (0, "0"),
        (0.031, "0.031"),
        (1 / 3, "0.3333333333333333"),
        (1e-7, "1e-07"),
        (-5, "0"),  # a negative gauge would read as a decrement
    ],
)
def test_gauge_value_is_exact(wire, value, text):
    client, recv = wire
    client.set_gauge("kafka.consumer_lag", value, {"partition": "3"})
    assert recv() == f"ddc.kafka.consumer_lag:{text}|g|#node:n1,partition:3"
    if value > 0:
        assert float(text) == value


def test_counter_is_an_integer(wire):
    client, recv = wire
    client.count("ingress.bytes_sent", 123_456_789_012)
    assert recv() == "ddc.ingress.bytes_sent:123456789012|c|#node:n1"
