"""Channel types: where records come from on the ingress and where they go on the egress.

Each channel type is one module exposing:

    ROLES: tuple of the roles it can serve ("ingress" -> a source, "egress" -> a sink)
    validate(options: dict, role: str) -> list[(key, message)]
    open_source(options: dict, ctx: ChannelContext) -> Source    (ingress types)
    open_sink(options: dict, ctx: ChannelContext) -> Sink        (egress types)

options is the channel's [channel.<type>] table as config.py validated it with
validate(); each type reads it into a frozen dataclass of its options (schema.option():
each key's default, type, range and message in one place).

A Source's run(emit, stop) calls emit(records) with each batch until stop is set;
its handed_over(records) hears which records are now on the link (Kafka commits on
it). A Sink's write(record) delivers one record; close() flushes.
"""

from __future__ import annotations

from . import generator, null, udp

CHANNEL_TYPES = {
    "udp": udp,
    "generator": generator,
    "null": null,
}

try:  # Kafka needs librdkafka; a node without Kafka channels does not.
    from . import kafka

    CHANNEL_TYPES["kafka"] = kafka
except ImportError:  # pragma: no cover - confluent-kafka is a hard dependency
    pass
