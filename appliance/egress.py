"""Egress: link thread (receive, authenticate, FEC-decode, account) -> per-channel sinks."""

from __future__ import annotations

import queue
import threading
import time
from collections import deque

from .budget import Budget, batch_bytes
from .channels import CHANNEL_TYPES
from .channels.base import ChannelContext
from .link.cpu import pin_current_thread
from .link.sockets import LinkReceiver
from .node import Node, read_key
from .protocol.auth import Opener
from .protocol.decoder import (
    BlocksLost,
    DecoderSettings,
    Delivered,
    HeartbeatReceived,
    LinkDecoder,
    Malformed,
    RecordsLost,
    SessionStarted,
)
from .protocol.heartbeat import KIND_COUNTER, KIND_GAUGE, Metric
from .protocol.loss import LossReport
from .state import (
    POSITIONS_FILE,
    load_last_session,
    load_positions,
    save_last_session,
    save_positions,
)

PERSIST_EVERY = 0.1  # seconds between writes of confirmed positions (when they moved)
RECEIVES_PER_DISPATCH = 8  # receive calls (GRO batches) decoded per hand-over to the sinks
class EgressNode(Node):
    role = "egress"

    def __init__(self, cfg):
        super().__init__(cfg)
        link = cfg.link
        keys = {link.key_id: read_key(link.key_file)}
        for kid, path in link.accept_keys.items():
            keys[kid] = read_key(path)
        # Listening first: what arrives while the sinks start waits in the socket buffer.
        self.receiver = LinkReceiver(link.bind, cfg.tuning.socket_buffer_bytes, cfg.tuning.gro,
                                     self.log)
        self.sinks = {}
        self.queues: dict[int, queue.SimpleQueue] = {}
        self.budgets: dict[int, Budget] = {}
        self.names = {}
        for ch in cfg.channels:
            self.sinks[ch.id] = CHANNEL_TYPES[ch.type].open_sink(ch.options,
                                                                 self.channel_context(ch))
            # Batches of records (a block's worth each), bounded in records and bytes.
            self.queues[ch.id] = queue.SimpleQueue()
            self.budgets[ch.id] = Budget(cfg.tuning.queue_records, cfg.tuning.queue_bytes)
            self.names[ch.id] = ch.name
        self.decoder = LinkDecoder(
            Opener(keys),
            DecoderSettings(reorder_window=link.reorder_window, loss_timeout=link.loss_timeout,
                            max_record_bytes=link.max_record_bytes),
            durable_positions=self._start_positions(),
            last_session=load_last_session(cfg.state_dir))
        self.records_lost: dict[str, int] = {}
        self._loss_lock = threading.Lock()  # sinks report from their own threads
        self.unrouted: dict[int, int] = {}
        self.recent_losses: deque[dict] = deque(maxlen=20)
        self.packet_loss = 0.0
        self._saved_positions: dict = {}
        self._persist_lock = threading.Lock()
        self._loss_base: tuple[int, int] | None = None  # (sender packets, our packets)
        # The same pair at this session's first heartbeat: loss since then, beside the
        # last interval's (which reads 0 once a lossy transfer is over).
        self._loss_first: tuple[int, int] | None = None
        self.packet_loss_since_start = 0.0

    def _start_positions(self) -> dict:
        """Where each durable stream resumes: the positions file (a cache), raised to
        what sinks that keep positions in the destination read there (the truth: it
        outlives this box's disk, and other diode pairs write it too)."""
        positions = load_positions(self.cfg.state_dir)
        for cid, sink in self.sinks.items():
            for (topic, part), offset in sink.initial_positions().items():
                key = (cid, topic, part)
                positions[key] = max(offset, positions.get(key, offset))
        return positions

    def channel_context(self, ch) -> ChannelContext:
        ctx = super().channel_context(ch)

        def report_loss(topic: str, partition: int, first: int, last: int, count: int,
                        reason: str, **fields) -> None:
            self._record_loss(self.decoder.session_id or 0,
                              LossReport(ch.id, topic, partition, first, last, count, reason),
                              **fields)
        ctx.report_loss = report_loss
        return ctx

    @property
    def address(self) -> tuple:
        return self.receiver.address

    def start(self) -> EgressNode:
        for cid, sink in self.sinks.items():
            self.spawn(f"sink:{self.names[cid]}", self._sink_loop(cid, sink))
        if any(s.delivered_positions() is not None for s in self.sinks.values()):
            self.spawn("state", self._persist_loop)
        self.spawn("hot:link", self._link_loop)
        return self

    def _sink_loop(self, channel_id: int, sink):
        q = self.queues[channel_id]
        release = self.budgets[channel_id].release

        def loop() -> None:
            pin_current_thread(self.cfg.tuning.channel_cpu)
            while True:
                try:
                    records, nbytes = q.get(timeout=0.05)
                except queue.Empty:
                    sink.poll()
                    if self.stop_event.is_set():
                        return
                    continue
                for rec in records:
                    sink.write(rec)
                release(len(records), nbytes)
        return loop

    def _persist_loop(self) -> None:
        # fsync off the sink threads: they only move the watermarks, this writes them.
        while not self.stop_event.wait(PERSIST_EVERY):
            self.persist_positions()

    def _link_loop(self) -> None:
        pin_current_thread(self.cfg.tuning.link_cpu)
        dec = self.decoder
        recv = self.receiver.receive
        while not self.stop_event.is_set():
            datagrams = recv(wait=False)
            events: list = []
            if not datagrams:
                # Caught up with the socket: only now is "not arrived yet" a fact, so
                # only now may the loss timeout run. Then wait a little for more.
                events += dec.tick(time.monotonic())
                datagrams = recv(wait=True)
            now = time.monotonic()
            events += dec.feed_many(datagrams, now)
            # Drain a few more receive calls before handing records to the sinks: each
            # hand-over wakes a sink thread, and one per GRO batch costs more than the
            # batch. Bounded, so records still leave within a fraction of a millisecond.
            for _ in range(RECEIVES_PER_DISPATCH - 1):
                datagrams = recv(wait=False)
                if not datagrams:
                    break
                events += dec.feed_many(datagrams, now)
            if events:
                self._dispatch(events)

    def _dispatch(self, events: list) -> None:
        batches: dict[int, list] = {}
        for ev in events:
            if type(ev) is Delivered:
                batch = batches.get(ev.channel_id)
                if batch is None:
                    batch = batches[ev.channel_id] = []
                batch.append(ev.record)
                if self.listeners:
                    self.emit_event(ev)
                continue
            self._on_event(ev)
            self.emit_event(ev)
        for cid, records in batches.items():
            q = self.queues.get(cid)
            if q is None:
                self._unrouted(cid, len(records))
            else:
                # Waits while the sink is behind by the whole budget: the kernel's
                # socket buffer then holds the link's datagrams meanwhile.
                nbytes = batch_bytes(records)
                self.budgets[cid].acquire(len(records), nbytes, self.stop_event)
                q.put((records, nbytes))  # one queue operation per batch, not per record

    def _on_event(self, ev) -> None:
        if isinstance(ev, RecordsLost):
            sink = self.sinks.get(ev.report.channel_id)
            if sink is None or not sink.defer_loss(ev.report):
                self._record_loss(ev.session_id, ev.report)
        elif isinstance(ev, HeartbeatReceived):
            hb = ev.heartbeat
            ours = self.decoder.stats.packets_received
            if self._loss_base is not None and hb.page == 0:
                sent = hb.packets_sent - self._loss_base[0]
                got = ours - self._loss_base[1]
                self.packet_loss = max(0.0, 1 - got / sent) if sent > 0 else 0.0
            if hb.page == 0:
                self._loss_base = (hb.packets_sent, ours)
                if self._loss_first is None:
                    self._loss_first = self._loss_base
                sent = hb.packets_sent - self._loss_first[0]
                got = ours - self._loss_first[1]
                self.packet_loss_since_start = max(0.0, 1 - got / sent) if sent > 0 else 0.0
        elif isinstance(ev, BlocksLost):
            name = self.names.get(ev.channel_id, ev.channel_id)
            where = "" if ev.channel_id is None else f" of channel {name}"
            span = f"block {ev.first_seq}" if ev.first_seq == ev.last_seq else \
                f"blocks {ev.first_seq}-{ev.last_seq}"
            got = f" ({ev.received} of {ev.needed} symbols arrived)" if ev.needed else ""
            self.log("warning", "blocks_lost", f"{span}{where} beyond repair{got}",
                     first_block=ev.first_seq, last_block=ev.last_seq,
                     channel_id=ev.channel_id, session=f"{ev.session_id:016x}")
        elif isinstance(ev, SessionStarted):
            try:
                save_last_session(self.cfg.state_dir, ev.session_id)
            except OSError as exc:
                self.log("error", "state_write_failed", f"cannot record the session in "
                         f"{self.cfg.state_dir}: {exc.strerror}")
            prev = "" if ev.previous is None else f" (replaces {ev.previous:016x})"
            self.log("info", "session_started", f"new ingress session {ev.session_id:016x}{prev}",
                     session=f"{ev.session_id:016x}",
                     previous=None if ev.previous is None else f"{ev.previous:016x}",
                     discarded_blocks=ev.discarded_blocks)
            self._loss_base = self._loss_first = None
            self.packet_loss_since_start = 0.0
        elif isinstance(ev, Malformed):
            self.log("warning", "malformed", f"malformed data in block {ev.block_seq}: "
                     f"{ev.reason}", channel_id=ev.channel_id, block=ev.block_seq)

    def _record_loss(self, session_id: int, r: LossReport, **extra) -> None:
        """One log line and a counter per loss: from the link (decoder) or from a sink.
        `pair` names this egress (one diode pair of several); a sink adds e.g. the
        pair that had the partition before (previous_owner)."""
        name = self.names.get(r.channel_id, str(r.channel_id))
        with self._loss_lock:
            self.records_lost[name] = self.records_lost.get(name, 0) + (r.count or 0)
            fields = {"channel": name, "channel_id": r.channel_id, "topic": r.topic,
                      "partition": r.partition, "first_offset": r.first_offset,
                      "last_offset": r.last_offset, "count": r.count,
                      "session": f"{session_id:016x}", "reason": r.reason,
                      "pair": self.cfg.node_name} | extra
            self.recent_losses.append(fields | {"at": time.time()})
        after = f" (after {extra['previous_owner']})" if "previous_owner" in extra else ""
        self.log("error", "records_lost", f"channel {name}: {r.describe()}{after}", **fields)

    def _unrouted(self, channel_id: int, count: int) -> None:
        n = self.unrouted.get(channel_id, 0)
        self.unrouted[channel_id] = n + count
        if n == 0:
            self.log("error", "unrouted_channel",
                     f"records arrive for channel id {channel_id}, which this egress does not "
                     "configure; they are counted as unrouted and dropped",
                     channel_id=channel_id)

    def heartbeat_age(self) -> float | None:
        return self.decoder.heartbeat_age(time.monotonic())

    def link_up(self) -> bool:
        age = self.heartbeat_age()
        hb = self.decoder.last_heartbeat
        interval = (hb.interval_ms / 1000) if hb else self.cfg.link.heartbeat_interval
        return age is not None and age <= 3 * interval

    def metrics(self) -> list[Metric]:
        s = self.decoder.stats
        out = [
            Metric("egress.packets_received", s.packets_received, KIND_COUNTER),
            Metric("egress.bytes_received", s.bytes_received, KIND_COUNTER),
            Metric("egress.records_delivered", s.records_delivered, KIND_COUNTER),
            Metric("egress.fec_recovered", s.fec_recovered, KIND_COUNTER),
            Metric("egress.blocks_lost", s.blocks_lost, KIND_COUNTER),
            Metric("egress.auth_failures", s.dropped["auth"], KIND_COUNTER),
            Metric("egress.kernel_drops", self.receiver.kernel_drops, KIND_COUNTER),
            Metric("egress.duplicates_dropped", s.duplicates, KIND_COUNTER),
            Metric("egress.packet_loss", self.packet_loss, KIND_GAUGE),
        ]
        for reason, n in s.dropped.items():
            out.append(Metric("egress.dropped_packets", n, KIND_COUNTER, (("reason", reason),)))
        for cid, name in self.names.items():
            tags = (("channel", name),)
            out.append(Metric("egress.records_lost", self.records_lost.get(name, 0),
                              KIND_COUNTER, tags))
            out.append(Metric("egress.queue_depth", self.budgets[cid].records, KIND_GAUGE, tags))
            out += self.sinks[cid].metrics()
        hb = self.decoder.last_heartbeat
        if hb is not None:
            # The ingress's health, carried across the diode in its heartbeats.
            via = (("via", "diode"),)
            out += [Metric("ingress.packets_sent", hb.packets_sent, KIND_COUNTER, via),
                    Metric("ingress.bytes_sent", hb.bytes_sent, KIND_COUNTER, via),
                    Metric("ingress.records_sent", hb.records_sent, KIND_COUNTER, via)]
            out += [Metric(m.name, m.value, m.kind, m.tags + via)
                    for m in list(self.decoder.sender_metrics.values())]
        age = self.heartbeat_age()
        if age is None:  # never heard from the ingress: the link has been down since start
            age = time.time() - self.started_at
        out.append(Metric("link.heartbeat_age_seconds", age, KIND_GAUGE))
        return out

    def delivered_positions(self) -> dict:
        """What durable sinks confirm delivered, per (channel id, topic, partition)."""
        out = {}
        for cid, sink in self.sinks.items():
            for (topic, part), offset in (sink.delivered_positions() or {}).items():
                out[(cid, topic, part)] = offset
        return out

    def report(self) -> None:
        super().report()
        self.persist_positions()

    def persist_positions(self) -> None:
        """Write what durable sinks confirmed, if it changed. Called by the sink threads
        as deliveries are confirmed (at most every PERSIST_EVERY) and by the metrics loop:
        after a crash the egress reports as lost at most what was confirmed in that window."""
        with self._persist_lock:
            positions = self.delivered_positions()
            if not positions or positions == self._saved_positions:
                return
            self._saved_positions = positions
            try:
                save_positions(self.cfg.state_dir, positions)
            except OSError as exc:
                self.log("error", "state_write_failed",
                         f"cannot write {self.cfg.state_dir}/{POSITIONS_FILE}: {exc.strerror}")

    def status(self) -> dict:
        s = self.decoder.stats
        st = super().status()
        hb = self.decoder.last_heartbeat
        st.update({
            "session": None if self.decoder.session_id is None else
            f"{self.decoder.session_id:016x}",
            "link_up": self.link_up(), "heartbeat_age": self.heartbeat_age(),
            "packets_received": s.packets_received, "bytes_received": s.bytes_received,
            "records_delivered": s.records_delivered, "fec_recovered": s.fec_recovered,
            "blocks_lost": s.blocks_lost, "records_lost": sum(self.records_lost.values()),
            "records_lost_unknown_count": s.records_lost_unknown,
            "dropped": dict(s.dropped), "kernel_drops": self.receiver.kernel_drops,
            "packet_loss": self.packet_loss,
            "packet_loss_since_start": self.packet_loss_since_start, "duplicates": s.duplicates,
            "recent_losses": list(self.recent_losses),
            "ingress": None if hb is None else {
                "packets_sent": hb.packets_sent, "bytes_sent": hb.bytes_sent,
                "records_sent": hb.records_sent, "metrics": [
                    {"name": m.name, "value": m.value, "tags": dict(m.tags)}
                    for m in list(self.decoder.sender_metrics.values())]},
            "channels": {name: {"queue_depth": self.budgets[cid].records,
                                "records_lost": self.records_lost.get(name, 0),
                                # the sink's own counters (per-topic ones are in StatsD)
                                "sink": {m.name: m.value for m in self.sinks[cid].metrics()
                                         if len(m.tags) == 1}}
                         | self.sinks[cid].status()
                         | ({"problem": p} if (p := self.sinks[cid].problem()) else {})
                         for cid, name in self.names.items()},
        })
        return st

    def status_line(self) -> str:
        s = self.decoder.stats
        return (f"link {'up' if self.link_up() else 'down'}, {s.records_delivered} records "
                f"delivered, {sum(self.records_lost.values())} lost")

    def close(self) -> None:
        def closer(cid, sink):
            def close() -> None:
                q = self.queues[cid]
                while not q.empty():
                    records, _ = q.get_nowait()
                    for rec in records:
                        sink.write(rec)
                sink.close()
            return close
        self.close_channels({self.names[cid]: closer(cid, sink)
                             for cid, sink in self.sinks.items()})
        self.receiver.close()
