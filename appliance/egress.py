"""Egress: link thread (receive, authenticate, FEC-decode, account) -> per-channel sinks."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque

from .budget import Budget, batch_bytes
from .channels import CHANNEL_TYPES
from .channels.base import ChannelContext
from .filters import FilterStats
from .frontier import FrontierWriter
from .ingress import IngressNode
from .link.cpu import pin_current_thread
from .link.sockets import LinkReceiver
from .node import Node, read_key
from .observe import counters
from .observe.counters import Counter
from .protocol import events
from .protocol.auth import Opener, session_epoch
from .protocol.decoder import DecoderSettings, LinkDecoder
from .protocol.heartbeat import KIND_COUNTER, KIND_GAUGE, Metric
from .protocol.loss import LossReport
from .protocol.records import Record
from .state import (
    ACCEPT_FILE,
    POSITIONS_FILE,
    clear_accepted_session,
    load_accepted_session,
    load_egress_session,
    load_positions,
    save_positions,
)

SINK_THREAD_GRACE = 2.0  # s close() waits for a sink's thread to leave its last call
PERSIST_EVERY = 0.1  # seconds between writes of confirmed positions (when they moved)
RECEIVES_PER_DISPATCH = 2  # receive calls (recvmmsg: up to 32 GRO runs) per hand-over
UNROUTED_REPORT_EVERY = 1.0  # seconds an unrouted range grows before it is reported


def _epoch_time(epoch_ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_ms / 1000))


class EgressNode(Node):
    role = "egress"
    # StatsD, status file and docs/metrics.md (appliance/observe/counters.py; the doc's
    # tables written by appliance/tools/metrics_doc.py). The sinks'
    # own metrics (ddc.kafka.*, ddc.null.*) come from the sinks, and the ingress's, re-emitted
    # with via="diode", from its heartbeats (IngressNode.COUNTERS).
    COUNTERS = (
        Counter("egress.packets_received", KIND_COUNTER,
                lambda n: n.decoder.stats.packets_received, "packets_received",
                "Datagrams received from the diode (before authentication)."),
        Counter("egress.bytes_received", KIND_COUNTER, lambda n: n.decoder.stats.bytes_received,
                "bytes_received", "Bytes received from the diode."),
        Counter("egress.records_delivered", KIND_COUNTER,
                lambda n: n.decoder.stats.records_delivered, "records_delivered",
                "Records handed to the sinks."),
        Counter("egress.dropped_packets", KIND_COUNTER, lambda n: dict(n.decoder.stats.dropped),
                "dropped", "Datagrams dropped: reason auth (MAC failed, unknown key id or other "
                "link mode), malformed, replay (older session or heartbeat), duplicate (symbol "
                "seen twice), version (other protocol version), rate_limited (unseen session "
                "while the key-derivation budget is spent).", labels=("reason",),
                alert="reason=auth or replay increase > 0: someone is injecting"),
        Counter("egress.auth_failures", KIND_COUNTER, lambda n: n.decoder.stats.dropped["auth"],
                None, "Datagrams whose MAC did not verify (same as dropped_packets{reason=auth}).",
                alert="increase > 0"),
        Counter("egress.packet_loss", KIND_GAUGE, lambda n: n.packet_loss, "packet_loss",
                "Share of the ingress's datagrams that did not arrive over the last heartbeat "
                "interval (0..1).", alert="above the FEC redundancy for minutes"),
        Counter("egress.fec_recovered", KIND_COUNTER, lambda n: n.decoder.stats.fec_recovered,
                "fec_recovered", "Blocks that missed data symbols and were rebuilt by FEC."),
        Counter("egress.blocks_lost", KIND_COUNTER, lambda n: n.decoder.stats.blocks_lost,
                "blocks_lost", "Blocks beyond repair (fewer than k of n symbols arrived).",
                alert="increase > 0"),
        Counter("egress.records_lost", KIND_COUNTER,
                lambda n: {name: n.records_lost.get(name, 0) for name in n.names.values()},
                "records_lost", "Records lost, by channel: each loss also has a records_lost "
                "log line with topic, partition and offset range.", labels=("channel",),
                alert="increase > 0"),
        Counter("egress.kernel_drops", KIND_COUNTER, lambda n: n.receiver.kernel_drops,
                "kernel_drops", "Datagrams the kernel dropped at the egress socket "
                "(SO_RXQ_OVFL): raise rmem, lower rate_mbit or rate_records (`ddc bench "
                "--find-safe-rate` on the egress host finds the safe rate).",
                alert="increase > 0"),
        Counter("egress.duplicates_dropped", KIND_COUNTER, lambda n: n.decoder.stats.duplicates,
                "duplicates", "Records dropped as repeats of already delivered offsets (after "
                "an ingress restart)."),
        # Every channel has the key ({} without rules); only channels with rules send series.
        Counter("egress.records_filtered", KIND_COUNTER,
                lambda n: {name: dict(n.filters[cid][1].counts) if cid in n.filters else {}
                           for cid, name in n.names.items()},
                "records_filtered", "Records a channel's egress filter did not write, by rule "
                "(`rule=\"default\"` as on the ingress); a Kafka sink still moves its position "
                "over them. Only channels with rules.", labels=("channel", "rule")),
        Counter("egress.records_filtered_by_ingress", KIND_COUNTER,
                lambda n: {name: n.filtered_by_ingress.get(cid, 0)
                           for cid, name in n.names.items()},
                "records_filtered_by_ingress", "Records the ingress's filter kept back, as its "
                "run markers announced them: filtered, not lost.", labels=("channel",)),
        Counter("egress.queue_depth", KIND_GAUGE,
                lambda n: {name: n.budgets[cid].records for cid, name in n.names.items()},
                "queue_depth", "Records waiting for a sink.", labels=("channel",),
                alert="near tuning.queue_records: the sink (Kafka) is too slow"),
        # The status file has heartbeat_age instead: None until the first heartbeat.
        Counter("link.heartbeat_age_seconds", KIND_GAUGE, lambda n: n._heartbeat_age_metric(),
                None, "Seconds since the last heartbeat from the ingress (since start if none "
                "yet).", alert="> 3 x heartbeat_interval: link or ingress down"),
    )

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
        self.sink_threads: dict[int, threading.Thread] = {}  # by channel id, once started
        self.queues: dict[int, queue.SimpleQueue] = {}
        self.budgets: dict[int, Budget] = {}
        self.names = {}
        self.filters = {ch.id: (ch.filter, FilterStats(ch.filter, ch.name, "egress", self.log))
                        for ch in cfg.channels if ch.filter is not None}
        self.filtered_by_ingress: dict[int, int] = dict.fromkeys(self.filters, 0)
        for ch in cfg.channels:
            self.sinks[ch.id] = CHANNEL_TYPES[ch.type].open_sink(ch.options,
                                                                 self.channel_context(ch))
            # Batches of records (a block's worth each), bounded in records and bytes.
            self.queues[ch.id] = queue.SimpleQueue()
            self.budgets[ch.id] = Budget(cfg.tuning.queue_records, cfg.tuning.queue_bytes)
            self.names[ch.id] = ch.name
        # Merged, never replaced: a stream the sinks did not touch since the start keeps
        # its position (an ingress re-sending from its committed offsets finds it).
        self._positions = self._start_positions()
        saved = load_egress_session(cfg.state_dir, self.log)
        self.decoder = LinkDecoder(
            Opener(keys, encrypt=link.mode == "encrypt", link_id=link.link_id),
            DecoderSettings(reorder_window=link.reorder_window, loss_timeout=link.loss_timeout,
                            max_record_bytes=link.max_record_bytes,
                            compression_max_block_bytes=link.compression_max_block_bytes),
            durable_positions=dict(self._positions),
            floor_epoch=0 if saved is None else saved.floor_epoch,
            history_unknown=saved is None)
        self.frontier = FrontierWriter(cfg.state_dir, self.log,
                                       {} if saved is None else saved.delivered, self._confirmed,
                                       cfg.tuning.frontier_interval)
        self._startup_events: list = []
        if saved is not None and saved.checkpoint is not None:
            cp = saved.checkpoint
            delivered = {key: (seq if sid == cp.session_id else None, offset)
                         for key, (sid, seq, offset) in saved.delivered.items()}
            for key, offset in self._positions.items():  # durable sinks' own, often newer
                if key not in delivered or delivered[key][1] < offset:
                    delivered[key] = (None, offset)
            self._startup_events = self.decoder.resume(cp, delivered)
            # What was handed over before the restart is accounted for now (delivered or
            # reported in doubt): a second restart must not report it again.
            for p in cp.streams:
                if p.stream_seq and p.last_seen_offset is not None:
                    self.frontier.delivered[(p.channel_id, p.topic, p.partition)] = (
                        cp.session_id, p.stream_seq, p.last_seen_offset)
        self._accepted: int | None = None  # the session `ddc accept-session` names
        self.records_lost: dict[str, int] = {}
        self._loss_lock = threading.Lock()  # sinks report from their own threads
        self.unrouted: dict[int, int] = {}
        # Records of a channel this egress does not configure, per stream, as a growing
        # range: [first offset, last offset, count, since]; reported once a second.
        self._unrouted_ranges: dict[tuple[int, str, int], list] = {}
        self.recent_losses: deque[dict] = deque(maxlen=20)
        self.packet_loss = 0.0
        self._saved_positions: dict = {}
        self._persist_lock = threading.Lock()
        self._loss_base: tuple[int, int] | None = None  # (sender packets, our packets)
        self._loss_first: tuple[int, int] | None = None
        self.packet_loss_since_start = 0.0
        self._link_done = threading.Event()
        # Per event type: (state update, log line), either may be None. A line function
        # only formats (level, event, text, fields) and changes nothing; an update changes
        # state (and writes the lines of what it changed: a loss report, an accepted
        # session). The line goes first; an unknown type is a KeyError.
        self._handlers = {
            events.RecordsLost: (self._on_records_lost, None),
            events.HeartbeatReceived: (self._on_heartbeat, None),
            events.BlocksLost: (None, self._blocks_lost_line),
            events.SessionStarted: (self._on_session_started, self._session_started_line),
            events.SessionResumed: (None, self._session_resumed_line),
            events.SessionRefused: (None, self._session_refused_line),
            events.PeerMismatch: (None, self._peer_mismatch_line),
            events.Malformed: (None, self._malformed_line)}

    def _start_positions(self) -> dict:
        """Where each durable stream resumes: the positions file (a cache), raised to
        what sinks that keep positions in the destination read there (the truth: it
        outlives this box's disk, and other diode pairs write it too)."""
        positions = load_positions(self.cfg.state_dir, self.log)
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
        # The restart's own accounting first (resumed session, records in doubt), then
        # one write so that a second crash does not report the same range again.
        self._dispatch(self._startup_events)
        self._startup_events = []
        self.frontier.write(self.decoder.floor_epoch, self.decoder.checkpoint())
        self._check_accepted()
        for cid, sink in self.sinks.items():
            self.sink_threads[cid] = self.spawn(f"sink:{self.names[cid]}",
                                                self._sink_loop(cid, sink))
        self.spawn("frontier", lambda: self.frontier.run(self._link_done))
        if any(s.delivered_positions() is not None for s in self.sinks.values()):
            self.spawn("state", self._persist_loop)
        self.spawn("hot:link", self._link_loop)
        return self

    def _sink_loop(self, channel_id: int, sink):
        q = self.queues[channel_id]
        release = self.budgets[channel_id].release
        frontier = self.frontier
        # A sink without positions of its own (UDP) holds a record once write() returns;
        # a durable one (Kafka) says itself what it holds (delivered_positions).
        note = sink.delivered_positions() is None

        def loop() -> None:
            pin_current_thread(self.cfg.tuning.channel_cpu)
            while True:
                try:
                    batch = q.get(timeout=0.05)
                except queue.Empty:
                    sink.poll()
                    if self.stop_event.is_set():
                        return
                    continue
                self._write_batch(channel_id, sink, batch, frontier, note)
                release(len(batch[0]), batch[1])
                if self.stop_event.is_set():
                    return  # the rest of the queue is close()'s, on this sink alone
        return loop

    def _write_batch(self, channel_id: int, sink, batch: tuple, frontier: FrontierWriter,
                     note: bool) -> None:
        """Write one handed-over batch once the frontier covering it is on disk, then
        note per stream what the sink now holds (for the in-doubt range after a crash).

        What a filter kept back (the ingress's, as run markers, or this channel's own
        rules) is not written: the sink skips it (a durable one moves its position)."""
        records, _, gen, session_id = batch
        frontier.wait_covered(gen)
        filt = self.filters.get(channel_id)
        if filt is None and not any(rec.filtered for rec in records):
            sink.write_batch(records)
        elif filt is None:
            for rec in records:
                if rec.filtered:
                    self._filtered_upstream(channel_id, rec)
                    sink.skip(rec)
                else:
                    sink.write(rec)
        else:
            decide, stats = filt[0].decide, filt[1]
            for rec in records:
                if rec.filtered:
                    self._filtered_upstream(channel_id, rec)
                    sink.skip(rec)
                elif (rule := decide(rec)) is not None:
                    stats.count(rule, rec)
                    sink.skip(rec)
                else:
                    sink.write(rec)
        if not note:
            return
        last: dict[tuple[str, int], Record] = {}
        for rec in records:
            last[(rec.topic, rec.partition)] = rec
        delivered = frontier.delivered
        for (topic, part), rec in last.items():
            delivered[(channel_id, topic, part)] = (session_id, rec.stream_seq, rec.offset)

    def _filtered_upstream(self, channel_id: int, marker: Record) -> None:
        """A run of records the ingress's filter kept back: counted, never a loss."""
        self.filtered_by_ingress[channel_id] = \
            self.filtered_by_ingress.get(channel_id, 0) + marker.filtered

    def _persist_loop(self) -> None:
        # fsync off the sink threads: they only move the watermarks, this writes them.
        while not self.stop_event.wait(PERSIST_EVERY):
            self.persist_positions()

    def _link_loop(self) -> None:
        try:
            self._link_loop_body()
        finally:
            self._post_frontier(force=True)  # everything handed over is covered on disk
            self._link_done.set()

    def _post_frontier(self, force: bool = False) -> None:
        now = time.monotonic()
        f = self.frontier
        if f.wants_post(now) or (force and f.handed_gen > f.posted_gen):
            f.post(self.decoder.floor_epoch, self.decoder.checkpoint(), now)

    def _link_loop_body(self) -> None:
        pin_current_thread(self.cfg.tuning.link_cpu)
        dec = self.decoder
        recv = self.receiver.receive
        while not self.stop_event.is_set():
            datagrams = recv(wait=False)
            happened: list = []
            if not datagrams:
                # Caught up with the socket: only now is "not arrived yet" a fact, so
                # only now may the loss timeout run. Then wait a little for more.
                happened += dec.tick(time.monotonic())
                if happened:
                    self._dispatch(happened)
                    happened = []
                self._post_frontier()
                datagrams = recv(wait=True)
                if not datagrams:
                    self._post_frontier()
            now = time.monotonic()
            happened += dec.feed_many(datagrams, now)
            # Drain another receive call before handing records to the sinks: each
            # hand-over wakes a sink thread, and one per small batch costs more than the
            # batch. Bounded, so records still leave within a fraction of a millisecond.
            for _ in range(RECEIVES_PER_DISPATCH - 1):
                datagrams = recv(wait=False)
                if not datagrams:
                    break
                happened += dec.feed_many(datagrams, now)
            if happened:
                self._dispatch(happened)
                self._post_frontier()

    def _dispatch(self, happened: list[events.Event]) -> None:
        """Hand records to the sinks (under a new frontier generation) and turn the other
        events into log lines and counters."""
        if not happened:
            return
        gen = self.frontier.hand()
        session_id = self.decoder.session_id
        delivered = events.Delivered
        batches: dict[int, list] = {}
        for ev in happened:
            if type(ev) is delivered:
                batch = batches.get(ev.channel_id)
                if batch is None:
                    batch = batches[ev.channel_id] = []
                batch.extend(ev.records)
                if self.listeners:
                    self.emit_event(ev)
                continue
            update, line = self._handlers[type(ev)]
            if line is not None:
                level, name, text, fields = line(ev)
                self.log(level, name, text, **fields)
            if update is not None:
                update(ev)
            self.emit_event(ev)
        for cid, records in batches.items():
            q = self.queues.get(cid)
            if q is None:
                self._unrouted(cid, records)
            else:
                # Waits while the sink is behind by the whole budget: the kernel's
                # socket buffer then holds the link's datagrams meanwhile.
                nbytes = batch_bytes(records)
                self.budgets[cid].acquire(len(records), nbytes, self.stop_event)
                q.put((records, nbytes, gen, session_id))  # one queue operation per batch
        if self._unrouted_ranges:
            self._report_unrouted(time.monotonic())

    # -- events -> counters and state ---------------------------------------------------------
    def _on_records_lost(self, ev: events.RecordsLost) -> None:
        sink = self.sinks.get(ev.report.channel_id)
        if sink is None or not sink.defer_loss(ev.report):
            self._record_loss(ev.session_id, ev.report)

    def _on_heartbeat(self, ev: events.HeartbeatReceived) -> None:
        hb = ev.heartbeat
        ours = self.decoder.stats.packets_received
        if self._loss_base is not None and hb.page == 0:
            sent = hb.packets_sent - self._loss_base[0]
            got = ours - self._loss_base[1]
            self.packet_loss = max(0.0, 1 - got / sent) if sent > 0 else 0.0
        if hb.page == 0:
            self._loss_base = (hb.packets_sent, ours)
            # The same pair at this session's first heartbeat: loss since then, beside the
            # last interval's (which reads 0 once a lossy transfer is over).
            if self._loss_first is None:
                self._loss_first = self._loss_base
            sent = hb.packets_sent - self._loss_first[0]
            got = ours - self._loss_first[1]
            self.packet_loss_since_start = max(0.0, 1 - got / sent) if sent > 0 else 0.0

    def _on_session_started(self, ev: events.SessionStarted) -> None:
        self._loss_base = self._loss_first = None
        self.packet_loss_since_start = 0.0
        if ev.session_id == self._accepted:
            self._accepted = None
            clear_accepted_session(self.cfg.state_dir)
            self.log("warning", "session_accepted",
                     f"took up session {ev.session_id:032x}, older than the one before, as "
                     "`ddc accept-session` asked; later sessions of that ingress follow",
                     session=f"{ev.session_id:032x}")

    # -- events -> log lines: (level, event, text, fields) ----------------------------------
    def _blocks_lost_line(self, ev: events.BlocksLost) -> tuple[str, str, str, dict]:
        name = self.names.get(ev.channel_id, ev.channel_id)
        where = "" if ev.channel_id is None else f" of channel {name}"
        span = f"block {ev.first_seq}" if ev.first_seq == ev.last_seq else \
            f"blocks {ev.first_seq}-{ev.last_seq}"
        got = f" ({ev.received} of {ev.needed} symbols arrived)" if ev.needed else ""
        return ("warning", "blocks_lost", f"{span}{where} beyond repair{got}",
                {"first_block": ev.first_seq, "last_block": ev.last_seq,
                 "channel_id": ev.channel_id, "session": f"{ev.session_id:032x}"})

    @staticmethod
    def _session_started_line(ev: events.SessionStarted) -> tuple[str, str, str, dict]:
        prev = "" if ev.previous is None else f" (replaces {ev.previous:032x})"
        return ("info", "session_started", f"new ingress session {ev.session_id:032x}{prev}",
                {"session": f"{ev.session_id:032x}",
                 "previous": None if ev.previous is None else f"{ev.previous:032x}",
                 "discarded_blocks": ev.discarded_blocks})

    @staticmethod
    def _session_resumed_line(ev: events.SessionResumed) -> tuple[str, str, str, dict]:
        return ("info", "session_resumed",
                f"resumed ingress session {ev.session_id:032x} at block {ev.block_frontier} "
                "(the frontier persisted before the restart)",
                {"session": f"{ev.session_id:032x}", "block_frontier": ev.block_frontier})

    def _session_refused_line(self, ev: events.SessionRefused) -> tuple[str, str, str, dict]:
        sid = f"{ev.session_id:032x}"
        current = "" if ev.current is None else f" (current session {ev.current:032x})"
        return ("warning", "session_refused",
                f"refused authentic ingress session {sid} (key id {ev.key_id}, started "
                f"{_epoch_time(session_epoch(ev.session_id))}): not later than "
                f"{_epoch_time(ev.floor_epoch)}{current}; {ev.datagrams} datagrams refused. "
                "A replay, or an ingress that lost its state with its clock behind: if it "
                f"is yours, run `ddc accept-session --config {self.cfg.path} {sid}` here",
                {"session": sid, "key_id": ev.key_id, "floor_epoch": ev.floor_epoch,
                 "current": None if ev.current is None else f"{ev.current:032x}",
                 "datagrams": ev.datagrams})

    @staticmethod
    def _peer_mismatch_line(ev: events.PeerMismatch) -> tuple[str, str, str, dict]:
        fields = {"what": ev.what, "ours": ev.ours, "theirs": ev.theirs,
                  "datagrams": ev.datagrams}
        if ev.what == "compression":
            return ("error", "peer_mismatch",
                    f"{ev.datagrams} compressed blocks dropped as malformed: one expands to "
                    f"{ev.theirs} bytes, above this egress's link.compression_max_block_bytes"
                    f" {ev.ours}; set it alike on both sides", fields)
        what = "protocol version" if ev.what == "version" else "link mode"
        return ("error", "peer_mismatch",
                f"{ev.datagrams} datagrams of {what} {ev.theirs} dropped: this egress speaks "
                f"{ev.ours}; set both sides alike (a half-upgraded pair?)", fields)

    @staticmethod
    def _malformed_line(ev: events.Malformed) -> tuple[str, str, str, dict]:
        return ("warning", "malformed", f"malformed data in block {ev.block_seq}: {ev.reason}",
                {"channel_id": ev.channel_id, "block": ev.block_seq})

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
                      "session": f"{session_id:032x}", "reason": r.reason,
                      "pair": self.cfg.node_name} | extra
            self.recent_losses.append(fields | {"at": time.time()})
        after = f" (after {extra['previous_owner']})" if "previous_owner" in extra else ""
        self.log("error", "records_lost", f"channel {name}: {r.describe()}{after}", **fields)

    def _unrouted(self, channel_id: int, records: list[Record]) -> None:
        """Records of a channel this egress does not know: lost like any undeliverable
        record, so reported by range (a range grows while the records follow on)."""
        n = self.unrouted.get(channel_id, 0)
        self.unrouted[channel_id] = n + len(records)
        if n == 0:
            self.log("error", "unrouted_channel",
                     f"records arrive for channel id {channel_id}, which this egress does not "
                     "configure; they are reported lost (reason unrouted)",
                     channel_id=channel_id)
        ranges = self._unrouted_ranges
        now = time.monotonic()
        for rec in records:
            key = (channel_id, rec.topic, rec.partition)
            r = ranges.get(key)
            if r is not None and rec.prev_offset != r[1]:
                self._flush_unrouted(key)  # not a continuation: report what came before
                r = None
            if r is None:
                ranges[key] = [rec.offset, rec.offset, 1, now]
            else:
                r[1] = rec.offset
                r[2] += 1

    def _report_unrouted(self, now: float, everything: bool = False) -> None:
        for key in [k for k, r in self._unrouted_ranges.items()
                    if everything or now - r[3] >= UNROUTED_REPORT_EVERY]:
            self._flush_unrouted(key)

    def _flush_unrouted(self, key: tuple[int, str, int]) -> None:
        first, last, count, _ = self._unrouted_ranges.pop(key)
        self._record_loss(self.decoder.session_id or 0,
                          LossReport(key[0], key[1], key[2], first, last, count, "unrouted"))

    def _check_accepted(self) -> None:
        """An older session the operator vouches for (`ddc accept-session`)."""
        if not os.path.exists(os.path.join(self.cfg.state_dir, ACCEPT_FILE)):
            return
        sid = load_accepted_session(self.cfg.state_dir, self.log)
        if sid is None or sid == self._accepted:
            return
        self._accepted = sid
        self.decoder.allowed_session = sid
        self.log("warning", "session_accept_pending",
                 f"will take up ingress session {sid:032x} when it authenticates, although "
                 "it is older than the current one (`ddc accept-session`)",
                 session=f"{sid:032x}")

    def heartbeat_age(self) -> float | None:
        return self.decoder.heartbeat_age(time.monotonic())

    def link_up(self) -> bool:
        age = self.heartbeat_age()
        hb = self.decoder.last_heartbeat
        interval = (hb.interval_ms / 1000) if hb else self.cfg.link.heartbeat_interval
        return age is not None and age <= 3 * interval

    def metrics(self) -> list[Metric]:
        out = counters.metrics(self.COUNTERS, self)
        for cid in self.names:
            out += self.sinks[cid].metrics()
        hb = self.decoder.last_heartbeat
        if hb is not None:
            # The ingress's health, carried across the diode in its heartbeats.
            via = (("via", "diode"),)
            out += [Metric(c.name, getattr(hb, field), c.kind, via)
                    for c, field in counters.relayed(IngressNode.COUNTERS)]
            out += [Metric(m.name, m.value, m.kind, m.tags + via)
                    for m in list(self.decoder.sender_metrics.values())]
        return out

    def _heartbeat_age_metric(self) -> float:
        age = self.heartbeat_age()
        if age is None:  # never heard from the ingress: the link has been down since start
            age = time.time() - self.started_at
        return age

    def _confirmed(self, written: dict) -> dict:
        """What the sinks hold for sure, per stream, for the frontier file: what sinks
        without positions wrote, and what durable sinks confirmed themselves."""
        out = dict(written)
        for key, offset in self.delivered_positions().items():
            known = out.get(key)
            if known is None or known[2] < offset:
                out[key] = (None, None, offset)
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
        self._check_accepted()

    def persist_positions(self) -> None:
        """Write what durable sinks confirmed, merged into what was known (a stream the
        sinks did not touch since the start keeps its position), if it changed. Called
        by the "state" thread every PERSIST_EVERY, by each metrics report (report()) and
        by close() once the sinks have drained; never by the sink threads (their fsync
        would stall delivery), hence the lock between the three."""
        with self._persist_lock:
            merged = dict(self._positions)
            for key, offset in self.delivered_positions().items():
                merged[key] = max(offset, merged.get(key, offset))
            if merged == self._saved_positions:
                return
            self._positions = self._saved_positions = merged
            try:
                save_positions(self.cfg.state_dir, merged)
            except OSError as exc:
                self.log("error", "state_write_failed",
                         f"cannot write {self.cfg.state_dir}/{POSITIONS_FILE}: {exc.strerror}")

    def status(self) -> dict:
        s = self.decoder.stats
        st = super().status()
        hb = self.decoder.last_heartbeat
        channels: dict[str, dict] = {name: {} for name in self.names.values()}
        st.update({
            "session": None if self.decoder.session_id is None else
            f"{self.decoder.session_id:032x}",
            "link_up": self.link_up(), "heartbeat_age": self.heartbeat_age(),
            **counters.status(self.COUNTERS, self, channels),
            # Besides the counters: the sum of channels.*.records_lost, what was lost
            # without a count (see docs/delivery.md), and the loss since the session began.
            "records_lost": sum(self.records_lost.values()),
            "records_lost_unknown_count": s.records_lost_unknown,
            "packet_loss_since_start": self.packet_loss_since_start,
            "recent_losses": list(self.recent_losses),
            "ingress": None if hb is None else {
                **{f: getattr(hb, f) for _, f in counters.relayed(IngressNode.COUNTERS)},
                "metrics": [{"name": m.name, "value": m.value, "tags": dict(m.tags)}
                            for m in list(self.decoder.sender_metrics.values())]},
            "channels": channels,
        })
        for cid, name in self.names.items():
            sink = self.sinks[cid]
            # the sink's own counters (per-topic ones are in StatsD)
            channels[name]["sink"] = {m.name: m.value for m in sink.metrics()
                                      if len(m.tags) == 1}
            channels[name].update(sink.status())
            if p := sink.problem():
                channels[name]["problem"] = p
        return st

    def status_line(self) -> str:
        s = self.decoder.stats
        return (f"link {'up' if self.link_up() else 'down'}, {s.records_delivered} records "
                f"delivered, {sum(self.records_lost.values())} lost")

    def close(self) -> None:
        """After the threads stopped: deliver what is still queued (covered on disk
        first), close the sinks, then write the frontier once more with every delivery
        confirmed: after a SIGTERM nothing is in doubt."""
        frontier = self.frontier
        dec = self.decoder
        if frontier.persisted_gen < frontier.handed_gen:
            frontier.write(dec.floor_epoch, dec.checkpoint())
            frontier.persisted_gen = frontier.handed_gen
        frontier.close()
        self._report_unrouted(time.monotonic(), everything=True)

        def closer(cid, sink):
            def close() -> None:
                q = self.queues[cid]
                note = sink.delivered_positions() is None
                # A sink is not thread-safe: its own thread may still be in a client call
                # (bounded, a second or so) when the stop's join budget ran out.
                thread = self.sink_threads.get(cid)
                if thread is not None:
                    thread.join(SINK_THREAD_GRACE)
                while not q.empty():
                    self._write_batch(cid, sink, q.get_nowait(), frontier, note)
                sink.close()
            return close
        self.close_channels({self.names[cid]: closer(cid, sink)
                             for cid, sink in self.sinks.items()})
        self.persist_positions()
        frontier.write(dec.floor_epoch, dec.checkpoint())
        self.receiver.close()
