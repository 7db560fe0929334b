"""Source positions in the destination cluster: how far each source partition is delivered.

A compacted topic (default `ddc-positions`) holds one record per (channel id, source
topic, source partition): key `[channel_id, "topic", partition]` (JSON), value
`{"offset": N, "owner": "<egress node>", "transactional_id": "..."}` (JSON), N the
highest source offset that is delivered or reported lost. The Kafka sink writes these
records in the same transaction as the records that advance them, so a read_committed
reader never sees a position ahead of the records or records without their position.
A position may move past a gap the link lost before that gap is reported (the sink
waits out takeover_grace_ms first): such a record also holds `"pending": [[first |
null, last, count | null, reason, due], ...]`, the owner's unreported losses of that
partition (due: wall-clock seconds), so a restarted owner reports them even with its
state directory gone.

Every egress of a site may write here (one per diode pair): a source partition that
moves from pair A to pair B (the ingress consumer group rebalanced) is continued by B's
egress from A's position. A position never goes back: readers keep the highest offset
per key, and writers never write one lower than what they have read.
"""

from __future__ import annotations

import json
import time
import zlib

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

DEFAULT_TOPIC = "ddc-positions"
# Compaction keeps one record per key; small segments let it run soon, so reading the
# topic at start stays cheap however long the egress has been running.
TOPIC_CONFIG = {"cleanup.policy": "compact", "segment.ms": "3600000",
                "min.cleanable.dirty.ratio": "0.1"}

Position = tuple[int, str]  # (offset, owner)


class PositionsError(Exception):
    """The positions topic cannot be created or read."""


def position_key(channel_id: int, topic: str, partition: int) -> bytes:
    return json.dumps([channel_id, topic, partition], separators=(",", ":")).encode()


Pending = tuple[int | None, int, int | None, str, float]  # first, last, count, reason, due


def position_value(offset: int, owner: str, transactional_id: str,
                   pending: list[Pending] | None = None) -> bytes:
    body: dict = {"offset": offset, "owner": owner, "transactional_id": transactional_id}
    if pending:
        body["pending"] = [list(p) for p in pending]
    return json.dumps(body, separators=(",", ":")).encode()


def _pending(entries) -> list[Pending]:
    out = []
    for first, last, count, reason, due in entries:
        out.append((None if first is None else int(first), int(last),
                    None if count is None else int(count), str(reason), float(due)))
    return out


def parse_position(key: bytes | None, value: bytes | None
                   ) -> tuple[int, str, int, int | None, str, list[Pending]] | None:
    """(channel id, topic, partition, offset or None for a tombstone, owner, pending
    losses), or None for a record that is not a position (someone else wrote to the
    topic)."""
    try:
        channel_id, topic, partition = json.loads(key or b"")
        if value is None:
            return int(channel_id), str(topic), int(partition), None, "", []
        body = json.loads(value)
        return (int(channel_id), str(topic), int(partition), int(body["offset"]),
                str(body.get("owner", "")), _pending(body.get("pending", [])))
    except (ValueError, TypeError, KeyError):
        return None


def ensure_topic(conf: dict, topic: str, timeout: float = 30.0) -> int:
    """Create the compacted topic if it is missing; return its partition count."""
    admin = AdminClient({k: v for k, v in conf.items() if k != "logger"})

    def partitions() -> int | None:
        md = admin.list_topics(topic, timeout=timeout)
        t = md.topics.get(topic)
        if t is None or t.error is not None or not t.partitions:
            return None
        return len(t.partitions)

    try:
        n = partitions()
        if n:
            return n
        futures = admin.create_topics([NewTopic(topic, 1, -1, config=TOPIC_CONFIG)],
                                      request_timeout=timeout)
        try:
            futures[topic].result(timeout)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":  # another egress won the race
                raise
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            n = partitions()
            if n:
                return n
            time.sleep(0.2)
    except KafkaException as exc:
        raise PositionsError(f"cannot create the positions topic {topic!r}: "
                             f"{exc.args[0].str()}") from None
    raise PositionsError(f"the positions topic {topic!r} has no partitions after {timeout} s")


class PositionsView:
    """What the positions topic says for one channel, read with read_committed."""

    def __init__(self, conf: dict, topic: str, channel_id: int, partitions: int, owner: str,
                 on_foreign=None):
        self.topic, self.channel_id, self.owner = topic, channel_id, owner
        self.partitions = partitions
        self.positions: dict[tuple[str, int], Position] = {}
        # The highest position other egresses (pairs) wrote: up to there they delivered,
        # or reported lost themselves, what they got from their ingress.
        self.others: dict[tuple[str, int], Position] = {}
        # This owner's unreported losses, as its newest position record of each source
        # partition says (what a restarted owner still has to report).
        self.pending: dict[tuple[str, int], list[Pending]] = {}
        self.foreign = 0  # records that are not positions
        self._on_foreign = on_foreign
        self.consumer = Consumer(conf | {
            "group.id": f"ddc-positions-reader-{channel_id}",  # never joined: assign()
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            "fetch.wait.max.ms": 20,
        })
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING)
                              for p in range(partitions)])

    def partition_for(self, key: bytes) -> int:
        """Every egress puts a key on the same partition, whatever its partitioner."""
        return zlib.crc32(key) % self.partitions

    def get(self, source: tuple[str, int]) -> Position | None:
        return self.positions.get(source)

    def learn(self, source: tuple[str, int], offset: int, owner: str) -> None:
        have = self.positions.get(source)
        if have is None or offset >= have[0]:
            self.positions[source] = (offset, owner)
        if owner != self.owner:
            have = self.others.get(source)
            if have is None or offset >= have[0]:
                self.others[source] = (offset, owner)

    def refresh(self) -> None:
        """Take in what is already fetched, without waiting."""
        self._take(self.consumer.consume(10_000, 0))

    def sync(self, timeout: float = 10.0) -> bool:
        """Read up to the last stable offset as of now (a read_committed consumer's
        watermark): every position committed before this call is then known. False if
        that took longer than timeout (the view is then only as fresh as it got)."""
        deadline = time.monotonic() + timeout
        try:
            targets = {tp.partition: self.consumer.get_watermark_offsets(
                tp, timeout=timeout, cached=False)[1] for tp in self.tps}
        except KafkaException:
            return False
        while True:
            done = True
            for tp in self.consumer.position(self.tps):
                target = targets[tp.partition]
                if target > 0 and tp.offset < target:
                    done = False
            if done:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._take(self.consumer.consume(10_000, min(0.05, left)))

    def _take(self, msgs) -> None:
        for m in msgs:
            if m.error() is not None:
                continue
            parsed = parse_position(m.key(), m.value())
            if parsed is None:
                self.foreign += 1
                if self.foreign == 1 and self._on_foreign:
                    self._on_foreign(m.partition(), m.offset())
                continue
            channel_id, topic, partition, offset, owner, pending = parsed
            if channel_id != self.channel_id:
                continue
            if offset is None:
                self.positions.pop((topic, partition), None)
                self.others.pop((topic, partition), None)
                self.pending.pop((topic, partition), None)
            else:
                self.learn((topic, partition), offset, owner)
                if owner == self.owner:
                    self.pending[(topic, partition)] = pending

    def close(self) -> None:
        try:
            self.consumer.close()
        except (KafkaException, RuntimeError):
            pass
