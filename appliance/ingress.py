"""Ingress: channel sources -> bounded queue -> link thread (frame, FEC, seal, pace, send)."""

from __future__ import annotations

import queue
import time

from .budget import Budget, batch_bytes
from .channels import CHANNEL_TYPES
from .filters import FilterStats, filter_batch
from .link.cpu import pin_current_thread
from .link.pacing import TokenBucket
from .link.sockets import LinkSender
from .node import Node, read_key
from .observe import counters
from .observe.counters import Counter
from .protocol.auth import new_session_id
from .protocol.decoder import REFUSED_HEARTBEAT_GAP
from .protocol.encoder import HandedOver, LinkEncoder, LinkSettings
from .protocol.heartbeat import KIND_COUNTER, KIND_GAUGE, Metric
from .protocol.wire import IP_UDP_OVERHEAD
from .state import next_session_epoch

PACE_CHUNK = 64  # datagrams per pacing decision (one GSO batch at most)
RECORD_BURST = 256  # records the records/s bucket lets through at once (one link round)
# The last heartbeat names the tail of the session (what was sent after the one
# before): for a session the egress refuses (it reads only its heartbeats) it is the
# only word of those records, and one copy through a lossy link is lost too often
# (the 200-fault UDP chaos run: 63 records lost silently). So it goes several times,
# further apart than the egress reads one refused session's heartbeats.
FINAL_HEARTBEATS = 5
FINAL_HEARTBEAT_SPACING = 2 * REFUSED_HEARTBEAT_GAP


class IngressNode(Node):
    role = "ingress"
    # StatsD, status file and docs/metrics.md (appliance/observe/counters.py; the doc's
    # tables written by appliance/tools/metrics_doc.py). The channels'
    # own metrics (ddc.udp.*, ddc.kafka.*) come from the sources, not from here.
    COUNTERS = (
        Counter("ingress.packets_sent", KIND_COUNTER, lambda n: n.encoder.packets_sent,
                "packets_sent", "Datagrams the ingress sent onto the diode (FEC repair symbols "
                "and heartbeats included).", via=True),
        Counter("ingress.bytes_sent", KIND_COUNTER, lambda n: n.encoder.bytes_sent,
                "bytes_sent", "UDP payload bytes the ingress sent onto the diode.", via=True),
        Counter("ingress.records_sent", KIND_COUNTER, lambda n: n.encoder.records_sent,
                "records_sent", "Records whose every byte is in datagrams on the link (Kafka "
                "offsets are stored only then).", via=True),
        Counter("ingress.blocks_sent", KIND_COUNTER, lambda n: n.encoder.blocks_sent,
                "blocks_sent", "FEC blocks sent."),
        Counter("ingress.send_errors", KIND_COUNTER, lambda n: n.sender.send_errors,
                "send_errors", "sendmsg() failures (ENOBUFS, or ECONNREFUSED on a test link "
                "that answers).",
                alert="rate > 0: the host cannot push what the link is paced at"),
        Counter("ingress.queue_depth", KIND_GAUGE, lambda n: n.budget.records, "queue_depth",
                "Records waiting between the sources and the link thread.",
                alert="near tuning.queue_records for minutes: the link (rate_mbit) is the "
                "bottleneck"),
        # Only channels with rules have the key (and the series).
        Counter("ingress.records_filtered", KIND_COUNTER,
                lambda n: {stats.channel: dict(stats.counts) for _, stats in n.filters.values()},
                "records_filtered", "Records a channel's ingress filter kept back, by rule "
                "(`rule=\"default\"`: no rule matched and `filter_default` is deny); each run "
                "crosses as a marker, so the egress does not report it lost (docs/filters.md). "
                "Only channels with rules.", labels=("channel", "rule")),
        # Compression (docs/protocol.md): stream bytes cut into blocks, the bytes their
        # chunks took, and the ratio (1 without compression).
        Counter("ingress.bytes_before_compression", KIND_COUNTER, lambda n: n.encoder.stream_bytes,
                "bytes_before_compression", "Bytes of the channels' record streams cut into "
                "blocks (what compression got)."),
        Counter("ingress.bytes_after_compression", KIND_COUNTER, lambda n: n.encoder.chunk_bytes,
                "bytes_after_compression", "Bytes those blocks' chunks took (compressed or, "
                "where that saved nothing, as they were); equal to bytes_before_compression "
                "without `link.compression`."),
        Counter("ingress.compression_ratio", KIND_GAUGE, lambda n: n.encoder.compression_ratio,
                "compression_ratio", "bytes_before_compression / bytes_after_compression since "
                "start (1 without compression).", shown=lambda v: round(v, 3)),
    )

    def __init__(self, cfg):
        super().__init__(cfg)
        link = cfg.link
        self.settings = LinkSettings(
            mtu=link.mtu, block_symbols=link.block_symbols, redundancy=link.fec_redundancy,
            min_repair=link.min_repair_symbols, interleave_depth=link.interleave_depth,
            encrypt=link.mode == "encrypt", key_id=link.key_id, ipv6=link.peer.ipv6,
            link_id=link.link_id, compression_level=link.compression_level,
            compression_max_block_bytes=link.compression_max_block_bytes)
        try:
            epoch = next_session_epoch(cfg.state_dir, self.log)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot keep the session epoch in {cfg.state_dir}: "
                          f"{exc.strerror}") from None
        self.session_id = new_session_id(epoch)
        self.encoder = LinkEncoder(self.settings, read_key(link.key_file), self.session_id,
                                   int(time.time() * 1000))
        # Sources hand over batches; the budget bounds them in records and bytes.
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.budget = Budget(cfg.tuning.queue_records, cfg.tuning.queue_bytes)
        self.sources = {}
        # Per channel with rules: (filter, its counters); a channel without none at all.
        self.filters = {ch.id: (ch.filter, FilterStats(ch.filter, ch.name, "ingress", self.log))
                        for ch in cfg.channels if ch.filter is not None}
        for ch in cfg.channels:
            self.sources[ch.id] = CHANNEL_TYPES[ch.type].open_source(ch.options,
                                                                     self.channel_context(ch))
        self.sender = LinkSender(link.bind, link.peer, cfg.tuning.socket_buffer_bytes,
                                 cfg.tuning.gso, self.log)
        rate_bits = link.rate_mbit * 1e6
        # The bucket refills while this thread encodes; a burst of 20 ms at the paced
        # rate keeps that time (instead of capping it at one chunk, which halved the
        # goodput of a busy link), and stays far below the egress's socket buffer.
        burst = max(PACE_CHUNK * (link.mtu + 64), int(rate_bits / 8 * 0.02))
        self.bucket = TokenBucket(rate_bits, burst, time.monotonic())
        # Records/s as well: an egress spends per record whatever its size, so bytes/s
        # alone let small records overrun it (docs/performance.md, "Records per second").
        self.record_bucket = TokenBucket.counting(
            link.rate_records, max(RECORD_BURST, int(link.rate_records * 0.02)),
            time.monotonic())
        self.channel_names = {ch.id: ch.name for ch in cfg.channels}

    def start(self) -> IngressNode:
        for ch in self.cfg.channels:
            src = self.sources[ch.id]
            self.spawn(f"source:{ch.name}", self._source_loop(ch.id, src))
        self.spawn("hot:link", self._link_loop)
        self.log("info", "session_started",
                 f"ingress session {self.session_id:032x} to {self.cfg.link.peer} "
                 f"(mtu {self.cfg.link.mtu}, {self.settings.symbol_size}-byte symbols, "
                 f"k={self.settings.block_symbols}, "
                 f"{self.cfg.link.fec_redundancy * 100:g}% repair, "
                 f"interleave {self.settings.interleave_depth}, gso {self.sender.gso})",
                 session=f"{self.session_id:032x}")
        return self

    def _source_loop(self, channel_id: int, source):
        put = self.queue.put
        acquire = self.budget.acquire
        stop = self.stop_event
        filt = self.filters.get(channel_id)

        def emit(records) -> None:
            if filt is not None:
                # Runs of filtered records become markers: they cross (so the egress does
                # not take the gap for a loss) and are handed over (Kafka offsets advance).
                records = filter_batch(filt[0], filt[1], records)
            nbytes = batch_bytes(records)
            acquire(len(records), nbytes, stop)  # waits while the link is behind
            put((channel_id, records, nbytes))

        def loop() -> None:
            pin_current_thread(self.cfg.tuning.channel_cpu)
            source.run(emit, self.stop_event)
        return loop

    def _link_loop(self) -> None:
        pin_current_thread(self.cfg.tuning.link_cpu)
        link = self.cfg.link
        enc = self.encoder
        q = self.queue
        hb_interval = link.heartbeat_interval
        flush_interval = link.flush_interval
        next_hb = time.monotonic()
        next_flush: float | None = None
        stop = self.stop_event
        while True:
            now = time.monotonic()
            deadline = next_hb if next_flush is None else min(next_hb, next_flush)
            try:
                item = q.get(timeout=max(0.0, deadline - now))
            except queue.Empty:
                item = None
            if item is not None:
                cut_before = enc.blocks_cut
                add_batch = enc.add_batch
                release = self.budget.release
                pace = self.record_bucket.delay
                taken = 0
                while True:  # up to 256 records, then send what they made
                    channel_id, records, nbytes = item
                    delay = pace(len(records), time.monotonic())
                    if delay > 0:
                        stop.wait(delay)  # (a stop still sends these records)
                    add_batch(channel_id, records)
                    release(len(records), nbytes)
                    taken += len(records)
                    if taken >= 256:
                        break
                    try:
                        item = q.get_nowait()
                    except queue.Empty:
                        break
                # The flush timer bounds how long a partial block waits to fill; a
                # block cut because it filled restarts it, so a busy link sends full
                # blocks (a full interleave group waits at most about depth x interval)
                # instead of a short, heavily repaired one every interval.
                if next_flush is None or enc.blocks_cut != cut_before:
                    next_flush = time.monotonic() + flush_interval
            datagrams = enc.take_datagrams()
            now = time.monotonic()
            stopping = stop.is_set()
            if next_flush is not None and (now >= next_flush or stopping):
                datagrams += enc.flush()
                next_flush = None
            if now >= next_hb or stopping:
                datagrams += self._heartbeat(hb_interval)
                next_hb = now + hb_interval
            if datagrams:
                self._send(datagrams)
            handed = enc.take_handed_over()
            if handed:
                self._hand_over(handed)
            if stopping and q.empty():
                for _ in range(FINAL_HEARTBEATS - 1):
                    time.sleep(FINAL_HEARTBEAT_SPACING)
                    self._send(self._heartbeat(hb_interval))
                return

    def _heartbeat(self, hb_interval: float) -> list[bytes]:
        return self.encoder.heartbeat(int(time.time() * 1000), int(hb_interval * 1000),
                                      self.source_metrics())

    def _send(self, datagrams: list[bytes]) -> None:
        for i in range(0, len(datagrams), PACE_CHUNK):
            chunk = datagrams[i:i + PACE_CHUNK]
            wire_bytes = sum(len(d) for d in chunk) + IP_UDP_OVERHEAD * len(chunk)
            delay = self.bucket.delay(wire_bytes, time.monotonic())
            if delay > 0:
                time.sleep(delay)
            self.sender.send(chunk)

    def _hand_over(self, handed: list[HandedOver]) -> None:
        by_channel: dict[int, list] = {}
        for h in handed:
            by_channel.setdefault(h.channel_id, []).append(h.record)
        for cid, recs in by_channel.items():
            self.sources[cid].handed_over(recs)

    def source_metrics(self) -> list[Metric]:
        out = []
        for src in self.sources.values():
            out += src.metrics()
        return out

    def metrics(self) -> list[Metric]:
        return counters.metrics(self.COUNTERS, self) + self.source_metrics()

    def status(self) -> dict:
        st = super().status()
        channels = self._channel_status()
        st.update({
            "session": f"{self.session_id:032x}", "peer": str(self.cfg.link.peer),
            **counters.status(self.COUNTERS, self, channels),
            "gso": self.sender.gso,
            "channels": channels,
            # What the sources lost before ddc read it (a UDP listen socket's kernel drops).
            "source_drops": {dict(m.tags)["channel"]: m.value for m in self.source_metrics()
                             if m.name.endswith(".kernel_drops")},
        })
        return st

    def _channel_status(self) -> dict:
        out: dict[str, dict] = {name: {} for name in self.channel_names.values()}
        for m in self.encoder.stream_marks():  # one-step copy: the link thread adds marks
            out[self.channel_names[m.channel_id]]["last_offset"] = m.last_offset
        for cid, src in self.sources.items():
            problem = src.problem()
            if problem:
                out[self.channel_names[cid]]["problem"] = problem
        return out

    def status_line(self) -> str:
        e = self.encoder
        return f"sent {e.records_sent} records, {e.bytes_sent} bytes"

    def close(self) -> None:
        self.close_channels({self.channel_names[cid]: src.close
                             for cid, src in self.sources.items()})
        self.sender.close()
