"""The chaos runner: a real ingress and egress (`ddc run` subprocesses) on loopback,
the project's lossy relay between them, continuous load, and the seeded schedule of
faults (tests/chaos/schedule.py); then a drain, and the checker (tests/chaos/check.py).

    udp    load -> UDP source of the ingress -> relay -> egress -> UDP sink -> collector
    kafka  producer -> high broker -> ingress -> relay -> egress -> low broker ->
           read_committed consumer (the only meaning of "delivered" on Kafka)

Every process it starts is in its own process group and dies with the runner
(PR_SET_PDEATHSIG); run() kills whatever is left in a finally, also on failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from array import array
from datetime import UTC, datetime
from pathlib import Path

from appliance.tools.relay import LossModel, LossyRelay
from tests.integration.daemons import big_receive_buffer, free_udp_port, node_config, write_key
from tests.kafka.broker import _die_with_parent

from . import schedule as S
from .check import STOP_LIMIT, Exit, History, LossReport, Sent, Verdict, check

REPO = Path(__file__).resolve().parents[2]
STOP_GRACE = 15.0  # after SIGTERM, SIGKILL past this (the check fails past STOP_LIMIT)
START_TIMEOUT = 60.0
DRAIN_MAX = 240.0  # seconds the drain may take at most (a few consumer session timeouts)
PARTITIONS = 3
CHANNEL = "test"  # the channel's name in node_config
CLOCK_SHIFT_DIR = Path(__file__).resolve().parent / "clockshift"  # sitecustomize.py


class HarnessAbort(RuntimeError):
    """The run cannot go on (a daemon that will not start at all)."""


def _blob(seed: int, rid: str, size: int) -> bytes:
    """Deterministic bytes for a record: regenerated to check, never stored."""
    block = hashlib.sha256(f"ddc-chaos/{seed}/{rid}".encode()).digest()
    return (block * (size // len(block) + 1))[:size]


def digest(*parts) -> bytes:
    h = hashlib.sha1()
    for p in parts:
        if p is None:
            h.update(b"N")
        else:
            p = p if isinstance(p, bytes) else str(p).encode()
            h.update(b"B%d:" % len(p) + p)
    return h.digest()


class ChaosDaemon:
    """`ddc run` of one role, started again and again; one log file per run."""

    def __init__(self, role: str, config: str, logdir: Path, state_dir: Path):
        self.role, self.config, self.logdir, self.state_dir = role, config, logdir, state_dir
        self.run = 0
        self.proc: subprocess.Popen | None = None
        self.stopped = False  # ended on purpose (a fault, the final stop): not a crash
        self.started_at = 0.0

    @property
    def name(self) -> str:
        return f"{self.role}#{self.run}"

    def log_path(self, run: int | None = None) -> Path:
        return self.logdir / f"{self.role}.{run or self.run}.log"

    def start(self, clock_back_hours: int = 0) -> None:
        self.run += 1
        env = os.environ | {"PYTHONPATH": str(REPO)}
        if clock_back_hours:  # tests/chaos/clockshift/sitecustomize.py says why not libfaketime
            env |= {"PYTHONPATH": f"{CLOCK_SHIFT_DIR}{os.pathsep}{REPO}",
                    "DDC_CHAOS_CLOCK_SHIFT": str(-3600 * clock_back_hours)}
        with open(self.log_path(), "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "appliance.cli", "run", "--config", self.config,
                 "--log-stderr"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=log, env=env, cwd=REPO, start_new_session=True,
                preexec_fn=_die_with_parent)
        self.started_at = time.monotonic()
        self.stopped = False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def events(self, name: str | None = None, run: int | None = None) -> list[dict]:
        runs = [run] if run else range(1, self.run + 1)
        out = []
        for r in runs:
            try:
                lines = self.log_path(r).read_bytes().splitlines()
            except FileNotFoundError:
                continue
            for line in lines:
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if isinstance(ev, dict) and (name is None or ev.get("event") == name):
                    ev["_run"] = r
                    out.append(ev)
        return out

    def wait_started(self, timeout: float = START_TIMEOUT) -> str | None:
        """None once this run logged "started"; else why not (the evidence)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.events("started", self.run):
                return None
            if not self.alive():
                return f"exited {self.proc.returncode} before it started: {self.evidence()}"
            time.sleep(0.05)
        return f"no 'started' within {timeout:.0f} s: {self.evidence()}"

    def evidence(self, run: int | None = None) -> str:
        """The last error line of a run's log (or its last line)."""
        evs = self.events(run=run or self.run)
        bad = [e for e in evs if e.get("level") in ("error", "critical")]
        if bad:
            e = bad[-1]
            return f"{e.get('event')}: {e.get('msg')}"
        try:
            tail = self.log_path(run).read_text(errors="replace").strip().splitlines()
        except FileNotFoundError:
            return "(no log)"
        return tail[-1][-300:] if tail else "(empty log)"

    def signal(self, sig: int) -> None:
        if self.alive():
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> int | None:
        self.stopped = True
        self.signal(signal.SIGKILL)
        return None if self.proc is None else self.proc.wait()

    def terminate(self) -> tuple[int | None, float]:
        """SIGTERM; (exit code, seconds it took). SIGKILL past STOP_GRACE (code None)."""
        t0 = time.monotonic()
        self.stopped = True
        self.signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            self.kill()
            rc = None
        return rc, time.monotonic() - t0


class Link:
    """The relay between ingress and egress, degraded by lossy_link faults."""

    def __init__(self, egress_port: int):
        self.model = LossModel(seed=1)
        self.relay = LossyRelay(("127.0.0.1", 0), ("127.0.0.1", egress_port), self.model).start()
        self.port = self.relay.address[1]
        self.until: float | None = None

    def degrade(self, settings: dict) -> None:
        s = dict(settings)
        duration = s.pop("duration")
        reorder = s.pop("reorder")
        self.model.set(**s)
        self.model.reorder = reorder
        self.until = time.monotonic() + duration

    def tick(self, force: bool = False) -> None:
        if self.until is not None and (force or time.monotonic() >= self.until):
            self.model.set()
            self.model.reorder = 0.0
            self.until = None

    def stop(self) -> None:
        self.relay.stop()


class _Traffic:
    """Load and its observer, as threads; the hooks the runner calls around faults."""

    def __init__(self) -> None:
        self.copies: dict[object, list[bytes]] = {}  # record id -> digests of its copies
        self.foreign: list[str] = []  # what arrived that nobody sent
        self.stopping = threading.Event()

    def _spawn(self, *loops) -> None:
        self.threads = [threading.Thread(target=loop, name="chaos" + loop.__name__,
                                         daemon=True) for loop in loops]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def delivered_count(self) -> int:
        return len(self.copies)

    def before_ingress_stop(self, ingress: ChaosDaemon, killed: bool) -> None:
        pass

    def ingress_started(self, ingress: ChaosDaemon) -> None:
        pass

    def ingress_died(self) -> None:
        pass

    def handed_over(self) -> bool:
        """Has the ingress taken over everything sent (so what is missing now is lost,
        not late)? UDP: yes once the load stopped (the ingress reads as it comes)."""
        return True


class _Gen:
    """One ingress run of the UDP variant: its session and what was sent into it."""

    def __init__(self, session: str):
        self.session = session
        self.times = array("d")  # send time of datagram k at index k-1
        self.t0 = time.monotonic()
        self.killed_at: float | None = None  # seconds into the run of its kill -9


class UdpTraffic(_Traffic):
    """Datagrams to the ingress's UDP source, paced; a collector behind the egress.

    Datagram k of ingress run g carries (g, k) and deterministic bytes. The source
    numbers the datagrams of each session 1, 2, ... in arrival order, so datagram k of
    run g is offset k of that session's stream: the load pauses while no ingress
    listens, and starts each run's numbering only once that ingress has started."""

    SIZES = (16, 200, 1000, 1400, 4000, 9000)

    def __init__(self, seed: int, rate: float, run_t0: float):
        super().__init__()
        self.seed, self.rate, self.t0 = seed, rate, run_t0
        self.source_port = free_udp_port()
        self.sock_in = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        big_receive_buffer(self.sock_in)
        self.sock_in.setsockopt(socket.SOL_SOCKET, 40, 1)  # SO_RXQ_OVFL: our own drops
        self.sock_in.bind(("127.0.0.1", 0))
        self.sock_in.settimeout(0.2)
        self.collector_port = self.sock_in.getsockname()[1]
        self.sock_out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.gens: list[_Gen] = []
        self.current: int | None = None
        self.collector_drops = 0
        self._digests: dict[tuple[int, int], bytes] = {}  # of what was sent (drain re-checks)
        self.lock = threading.Lock()
        self._spawn(self._send_loop, self._collect_loop)

    def sink_options(self) -> str:
        return f'target = "127.0.0.1:{self.collector_port}"'

    def source_options(self) -> str:
        return f'listen = "127.0.0.1:{self.source_port}"'

    def payload(self, g: int, k: int) -> bytes:
        size = self.SIZES[(g * 7919 + k * 104729 + self.seed) % len(self.SIZES)]
        return struct.pack(">II", g, k) + _blob(self.seed, f"{g}/{k}", size)

    def _send_loop(self) -> None:
        while not self.stopping.is_set():
            with self.lock:  # pause() returns only once no more datagram of the run goes
                if self.current is not None:
                    gen = self.gens[self.current]
                    due = int((time.monotonic() - gen.t0) * self.rate) - len(gen.times)
                    for _ in range(min(due, 100)):
                        k = len(gen.times) + 1
                        self.sock_out.sendto(self.payload(self.current, k),
                                             ("127.0.0.1", self.source_port))
                        gen.times.append(time.monotonic() - self.t0)
            time.sleep(0.005)

    def _collect_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                data, anc, _flags, _src = self.sock_in.recvmsg(65536, 64)
            except TimeoutError:
                continue
            except OSError:
                return
            for level, kind, value in anc:
                if level == socket.SOL_SOCKET and kind == 40 and len(value) >= 4:
                    self.collector_drops = struct.unpack_from("=I", value)[0]
            if len(data) < 8:
                self.foreign.append(f"a {len(data)}-byte datagram without a chaos id")
                continue
            g, k = struct.unpack_from(">II", data)
            self.copies.setdefault((g, k), []).append(hashlib.sha1(data).digest())

    # -- the runner's hooks ----------------------------------------------------------
    def before_ingress_stop(self, ingress: ChaosDaemon, killed: bool) -> None:
        with self.lock:
            cur, self.current = self.current, None
        if cur is None:
            return
        gen = self.gens[cur]
        if killed:
            gen.killed_at = time.monotonic() - self.t0
        if not killed:  # SIGTERM: what the ingress has read must cross, so let it read all
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    st = json.loads((ingress.state_dir / "status.json").read_text())
                except (OSError, ValueError):
                    st = {}
                if st.get("session") == gen.session and st.get("records_sent", 0) >= \
                        len(gen.times):
                    break
                time.sleep(0.05)

    def ingress_started(self, ingress: ChaosDaemon) -> None:
        evs = ingress.events("session_started", ingress.run)
        session = evs[-1]["session"] if evs else f"unknown-{ingress.run}"
        with self.lock:
            self.gens.append(_Gen(session))
            self.current = len(self.gens) - 1

    def ingress_died(self) -> None:
        with self.lock:
            if self.current is not None:  # it died a moment ago: when is not known better
                self.gens[self.current].killed_at = time.monotonic() - self.t0
            self.current = None

    def stop_load(self) -> None:
        with self.lock:
            self.current = None

    def stream_of_report(self, ev: dict) -> tuple:
        return (ev.get("channel"), ev.get("session"))

    def fill(self, h: History, seed: int) -> None:
        seen: dict[str, int] = {}
        for g, gen in enumerate(self.gens):
            stream = (CHANNEL, gen.session)
            if gen.session in seen:
                h.harness_problems.append(f"ingress runs {seen[gen.session]} and {g} have "
                                          f"the same session id {gen.session}")
            seen[gen.session] = g
            sent = h.sent.setdefault(stream, {})
            for k, at in enumerate(gen.times, 1):
                d = self._digests.get((g, k))
                if d is None:
                    d = self._digests[(g, k)] = hashlib.sha1(self.payload(g, k)).digest()
                sent[k] = Sent((g, k), d, at)
            if gen.killed_at is not None:
                h.killed_udp_sessions[stream] = gen.killed_at
        for rid, copies in list(self.copies.items()):
            g, k = rid
            if g >= len(self.gens) or k > len(self.gens[g].times):
                h.foreign.append(f"datagram (run {g}, number {k}) was never sent")
            else:
                h.delivered[rid] = copies
        h.foreign += self.foreign
        if self.collector_drops:
            h.harness_problems.append(f"the collector's socket dropped {self.collector_drops} "
                                      "datagrams (SO_RXQ_OVFL)")

    def close(self) -> None:
        self.stopping.set()
        for t in self.threads:
            if t.is_alive():  # (not started when the pair never came up)
                t.join(3)
        self.sock_in.close()
        self.sock_out.close()


class KafkaTraffic(_Traffic):
    """A producer on the high broker (3 partitions) and a read_committed consumer of the
    destination topic on the low one. Record i carries a chaos-id header; its partition,
    key, value, headers and timestamp must arrive unchanged."""

    SIZES = (None, 0, 10, 300, 1500, 8000, 1500, 300, 10, 100_000)

    def __init__(self, pair, seed: int, rate: float, run_t0: float):
        super().__init__()
        self.pair, self.seed, self.rate, self.t0 = pair, seed, rate, run_t0
        self.topic = f"chaos-{seed}-{uuid.uuid4().hex[:8]}"
        self.dest = "low." + self.topic
        self.group = f"chaos-{uuid.uuid4().hex[:8]}"  # the ingress's consumer group
        pair.high.create_topic(self.topic, partitions=PARTITIONS)
        pair.low.create_topic(self.dest, partitions=PARTITIONS)
        self.expected: dict[int, tuple[bytes, float]] = {}
        self.placed: dict[int, tuple[int, int]] = {}
        self.failed: dict[int, str] = {}
        self.producing = threading.Event()
        self.producing.set()
        self.produced_all = threading.Event()
        self.source: dict[tuple[int, int], int] | None = None  # (partition, offset) -> id
        self._spawn(self._produce_loop, self._consume_loop)

    def sink_options(self) -> str:
        return f'bootstrap_servers = "{self.pair.low.bootstrap}"\ntopic_prefix = "low."'

    def source_options(self) -> str:
        return (f'bootstrap_servers = "{self.pair.high.bootstrap}"\n'
                f'group_id = "{self.group}"\ntopics = ["{self.topic}"]\n'
                '[channel.kafka.properties]\n"auto.commit.interval.ms" = 200')

    def record(self, i: int):
        size = self.SIZES[(i * 104729 + self.seed) % len(self.SIZES)]
        value = None if size is None else _blob(self.seed, f"v{i}", size)
        key = None if i % 5 == 0 else f"k{i}".encode()
        headers = [("chaos-id", str(i).encode()), ("nil", None)] if i % 3 else \
            [("chaos-id", str(i).encode())]
        return i % PARTITIONS, key, value, headers

    @staticmethod
    def _digest(partition, key, value, headers, ts) -> bytes:
        flat = [x for name, v in headers for x in (name, v)]
        return digest(partition, key, value, *flat, ts)

    def _produce_loop(self) -> None:
        from confluent_kafka import Producer

        p = Producer(self.pair.high.client_config() | {
            "enable.idempotence": True, "acks": "all", "linger.ms": 5,
            "message.timeout.ms": 900_000, "message.max.bytes": 2 * 1024 * 1024,
            "log_level": 0})

        def report(i):
            def on_delivery(err, msg):
                if err is None:
                    self.placed[i] = (msg.partition(), msg.offset())
                else:
                    self.failed[i] = str(err)
            return on_delivery

        i = 0
        t_start = time.monotonic()
        while self.producing.is_set():
            due = int((time.monotonic() - t_start) * self.rate)
            while i < due and self.producing.is_set():
                part, key, value, headers = self.record(i)
                ts = int(time.time() * 1000)
                try:
                    p.produce(self.topic, value=value, key=key, headers=headers,
                              partition=part, timestamp=ts, on_delivery=report(i))
                except BufferError:
                    p.poll(0.1)
                    continue
                self.expected[i] = (self._digest(part, key, value, headers, ts),
                                    time.monotonic() - self.t0)
                i += 1
            p.poll(0.01)
        left = p.flush(300)
        if left:
            self.foreign.append(f"(harness) {left} records still unconfirmed by the producer")
        self.produced_all.set()

    def _consume_loop(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        c = Consumer(self.pair.low.client_config() | {
            "group.id": f"chaos-check-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
            "isolation.level": "read_committed", "log_level": 0,
            "fetch.message.max.bytes": 4 * 1024 * 1024})
        c.assign([TopicPartition(self.dest, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        try:
            while not self.stopping.is_set():
                for m in c.consume(500, 0.2):
                    if m.error():
                        continue
                    headers = m.headers() or []
                    rid = next((v for n, v in headers if n == "chaos-id"), None)
                    try:
                        i = int(rid)
                    except (TypeError, ValueError):
                        self.foreign.append(f"{self.dest}/{m.partition()}@{m.offset()}: "
                                            "no chaos-id header")
                        continue
                    self.copies.setdefault(i, []).append(self._digest(
                        m.partition(), m.key(), m.value(), headers, m.timestamp()[1]))
        finally:
            c.close()

    # -- the runner's hooks (a Kafka source resumes from its committed offsets) ------
    def stop_load(self) -> None:
        self.producing.clear()
        self.produced_all.wait(320)

    def stream_of_report(self, ev: dict) -> tuple:
        return (ev.get("topic"), ev.get("partition"))

    def handed_over(self) -> bool:
        """The ingress group's committed offsets are at the end of every partition. After
        a kill -9 of the ingress its group waits for the dead member's session timeout
        (45 s by default, restarted when the coordinator reloads after a broker kill)
        before the next ingress gets partitions: records are late then, not lost."""
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        c = Consumer(self.pair.high.client_config() | {"group.id": self.group,
                                                       "log_level": 0})
        try:
            tps = [TopicPartition(self.topic, p) for p in range(PARTITIONS)]
            done = c.committed(tps, timeout=5)
            ends = [c.get_watermark_offsets(tp, timeout=5)[1] for tp in tps]
            return all(tp.offset >= end for tp, end in zip(done, ends, strict=True))
        except KafkaException:
            return False
        finally:
            c.close()

    def read_source(self) -> list[str]:
        """Read the whole source topic back: what the ingress had to carry is what is in
        it, offset by offset, not what the delivery reports said (a producer retry across
        a broker kill can write a record twice). Returns notes for the run's output."""
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        c = Consumer(self.pair.high.client_config() | {
            "group.id": f"chaos-source-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
            "log_level": 0, "fetch.message.max.bytes": 4 * 1024 * 1024})
        try:
            tps = [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)]
            ends = {tp.partition: c.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
            c.assign(tps)
            source: dict[tuple[int, int], int] = {}
            deadline = time.monotonic() + 120
            while len(source) < sum(ends.values()) and time.monotonic() < deadline:
                for m in c.consume(500, 0.5):
                    if not m.error():
                        rid = next((v for n, v in m.headers() or [] if n == "chaos-id"), b"")
                        source[(m.partition(), m.offset())] = int(rid)
        finally:
            c.close()
        self.source = source
        notes = []
        twice = len(source) - len(set(source.values()))
        if twice:
            notes.append(f"the test producer wrote {twice} records twice into the source "
                         "(retries across a broker kill): each copy is a record to carry")
        lost = set(self.placed.values()) - set(source)
        if lost or len(source) < sum(ends.values()):
            notes.append(f"source topic: {len(lost)} acknowledged records missing, "
                         f"{len(source)} of {sum(ends.values())} read")
        return notes

    def fill(self, h: History, seed: int) -> None:
        if self.source is None:  # during the drain: the delivery reports
            places = {i: [pos] for i, pos in self.placed.items()}
        else:
            places = {}
            for pos, i in sorted(self.source.items()):
                places.setdefault(i, []).append(pos)
        for i, where in places.items():
            d, at = self.expected[i]
            copies = self.copies.get(i, [])
            for n, (p, o) in enumerate(where):  # copies beyond the source's go to the last
                h.sent.setdefault((self.topic, p), {})[o] = Sent((p, o), d, at)
                h.delivered[(p, o)] = copies[n:] if n == len(where) - 1 else copies[n:n + 1]
        for i in self.copies.keys() - places.keys():
            h.foreign.append(f"record chaos-id {i} arrived but is not in the source topic")
        h.foreign += self.foreign
        if self.failed:
            n = len(self.failed)
            h.harness_problems.append(f"{n} records were never accepted by the source broker "
                                      f"(first: {next(iter(self.failed.values()))})")

    def close(self) -> None:
        self.producing.clear()
        self.stopping.set()
        for t in self.threads:
            if t.is_alive():  # (not started when the pair never came up)
                t.join(10)


class ChaosRun:
    def __init__(self, variant: str, faults: int, seed: int, workdir: Path,
                 kafka_pair=None, rate: float | None = None, out=print):
        self.variant, self.seed, self.workdir = variant, seed, Path(workdir)
        self.schedule = S.make_schedule(variant, faults, seed)
        if variant == "kafka" and kafka_pair is None:
            raise ValueError("the kafka variant needs a kafka_pair (tests/kafka/fixtures.py)")
        self.pair = kafka_pair
        self.rate = rate or (100.0 if variant == "kafka" else 300.0)
        self.out = out
        self.exits: list[Exit] = []
        self.faults: list[tuple[float, str, str]] = []
        self.problems: list[str] = []
        self.clock_back = 0
        self.t0 = time.monotonic()
        self.traffic = self.link = self.ingress = self.egress = None

    def now(self) -> float:
        return time.monotonic() - self.t0

    def say(self, text: str) -> None:
        self.out(f"[chaos {self.now():6.1f}s] {text}")

    # -- set-up ----------------------------------------------------------------------
    def _setup(self) -> None:
        wd = self.workdir
        (wd / "logs").mkdir(parents=True, exist_ok=True)
        key = write_key(wd / "link.key")
        if self.variant == "udp":
            self.traffic = UdpTraffic(self.seed, self.rate, self.t0)
        else:
            self.traffic = KafkaTraffic(self.pair, self.seed, self.rate, self.t0)
        egress_port = free_udp_port()
        self.link = Link(egress_port)
        ctype = self.variant
        egress_cfg = node_config("egress", wd, key, f'bind = "127.0.0.1:{egress_port}"',
                                 ctype, self.traffic.sink_options())
        ingress_cfg = node_config("ingress", wd, key, f'peer = "127.0.0.1:{self.link.port}"',
                                  ctype, self.traffic.source_options())
        self.egress = ChaosDaemon("egress", egress_cfg, wd / "logs", wd / "egress-state")
        self.ingress = ChaosDaemon("ingress", ingress_cfg, wd / "logs", wd / "ingress-state")
        self._start(self.egress)
        self._start_ingress()
        self.traffic.start()

    # -- daemons ---------------------------------------------------------------------
    def _start(self, d: ChaosDaemon) -> None:
        """Start d and wait for it. A daemon that will not start is an unscheduled exit;
        after three tries its state_dir is moved aside (what an operator would do)."""
        for attempt in range(1, 5):
            d.start(self.clock_back if d is self.ingress else 0)
            why = d.wait_started()
            if why is None:
                if d is self.ingress and self.clock_back:
                    self._check_clock(d)
                return
            d.kill()
            self.exits.append(Exit(d.role, d.run, d.proc.returncode, self.now(), False,
                                   evidence=f"start failed: {why}"))
            self.say(f"{d.name} did not start: {why}")
            if attempt == 3 and d.state_dir.exists():
                aside = d.state_dir.with_name(d.state_dir.name + f".aside-{d.run}")
                d.state_dir.rename(aside)
                self.say(f"moved {d.state_dir} aside to {aside.name}")
            time.sleep(1)
        raise HarnessAbort(f"{d.role} does not start even with its state moved aside: "
                           f"{d.evidence()}")

    def _check_clock(self, d: ChaosDaemon) -> None:
        """The shifted clock must show in the daemon's own log timestamps."""
        ts = d.events("started", d.run)[-1]["ts"]
        seen = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
        behind = time.time() - seen
        if abs(behind - 3600 * self.clock_back) > 300:
            self.problems.append(f"{d.name} was to run {self.clock_back} h behind, its log "
                                 f"says {behind / 3600:.2f} h")

    def _start_ingress(self) -> None:
        self._start(self.ingress)
        self.traffic.ingress_started(self.ingress)

    def _stop(self, d: ChaosDaemon, kill: bool) -> None:
        if d is self.ingress:
            self.traffic.before_ingress_stop(d, killed=kill)
        if not d.alive():  # died meanwhile: recorded and restarted, then stopped as planned
            self._watch()
        if kill:
            rc = d.kill()
            self.exits.append(Exit(d.role, d.run, rc, self.now(), True))
            return
        rc, took = d.terminate()
        bad = rc != 0 or took > STOP_LIMIT
        self.exits.append(Exit(d.role, d.run, rc, self.now(), True, stop_seconds=took,
                               evidence=d.evidence() if bad else ""))
        if bad:
            self.say(f"{d.name} SIGTERM: exit {rc} after {took:.1f} s")

    def _watch(self) -> None:
        """Restart a daemon that died with no fault to end it (and count it)."""
        for d in (self.egress, self.ingress):
            if d is None or d.proc is None or d.stopped or d.alive():
                continue
            self.exits.append(Exit(d.role, d.run, d.proc.returncode, self.now(), False,
                                   evidence=d.evidence()))
            self.say(f"{d.name} exited {d.proc.returncode} unscheduled: {d.evidence()}")
            if d is self.ingress:
                self.traffic.ingress_died()
                self._start_ingress()
            else:
                self._start(d)

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            self.link.tick()
            self._watch()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(0.1, left))

    # -- faults ----------------------------------------------------------------------
    def _state_file(self, d: ChaosDaemon, pick: float) -> Path | None:
        try:
            files = sorted(p for p in d.state_dir.iterdir() if p.is_file() and
                           p.name != "status.json" and not p.name.startswith(".") and
                           not p.name.endswith(".tmp"))
        except FileNotFoundError:
            return None
        return files[int(pick * len(files))] if files else None

    def _inject(self, f: S.Fault) -> None:
        self.sleep(f.gap)
        what = f.describe()
        kind = f.kind
        if kind in (S.TEAR_STATE, S.DELETE_STATE):
            d = self.ingress if f.side == "ingress" else self.egress
            self._stop(d, kill=True)
            path = self._state_file(d, f.pick)
            if path is None:
                what += ": no state file yet (kill -9 only)"
            elif kind == S.DELETE_STATE:
                path.unlink()
                what += f": deleted {path.name}"
            else:
                size = path.stat().st_size
                os.truncate(path, int(size * f.tear_at))
                what += f": {path.name} torn to {int(size * f.tear_at)} of {size} bytes"
        self.faults.append((self.now(), kind, what))
        self.say("fault " + what)
        if kind in (S.KILL_INGRESS, S.TERM_INGRESS, S.CLOCK_BACK):
            self._stop(self.ingress, kill=kind != S.TERM_INGRESS)
            if kind == S.CLOCK_BACK:
                self.clock_back += 1
            self.sleep(f.down)
            self._start_ingress()
        elif kind in (S.KILL_EGRESS, S.TERM_EGRESS, S.WIPE_EGRESS_STATE):
            self._stop(self.egress, kill=kind != S.TERM_EGRESS)
            if kind == S.WIPE_EGRESS_STATE:
                shutil.rmtree(self.egress.state_dir, ignore_errors=True)
            self.sleep(f.down)
            self._start(self.egress)
        elif kind in (S.TEAR_STATE, S.DELETE_STATE):
            self.sleep(f.down)
            if f.side == "ingress":
                self._start_ingress()
            else:
                self._start(self.egress)
        elif kind in (S.KILL_BROKER_HIGH, S.KILL_BROKER_LOW):
            broker = self.pair.high if kind == S.KILL_BROKER_HIGH else self.pair.low
            broker.kill()
            self.sleep(f.down)
            broker.start()
        elif kind == S.LOSSY_LINK:
            self.link.degrade(f.link)
        else:
            raise ValueError(f"unknown fault kind {kind!r}")

    # -- drain and check -------------------------------------------------------------
    def history(self) -> History:
        h = History(exits=list(self.exits), faults=list(self.faults),
                    harness_problems=list(self.problems))
        self.traffic.fill(h, self.seed)
        for ev in self.egress.events("records_lost"):
            h.reports.append(LossReport(self.traffic.stream_of_report(ev), ev.get("first_offset"),
                                        ev.get("last_offset"), ev.get("msg", ""),
                                        f"egress#{ev['_run']}", ev.get("reason", "")))
        for ev in self.ingress.events("source_kernel_drops"):
            h.harness_problems.append(f"ingress#{ev['_run']} source socket: {ev.get('msg')}")
        return h

    def _drain(self) -> None:
        """Load off, link clean, both daemons up: wait until every record is delivered or
        reported, or, once the ingress has taken everything over, nothing moved for
        `quiet` seconds (DRAIN_MAX at most)."""
        self.say("schedule done: draining")
        self.link.tick(force=True)
        self.traffic.stop_load()
        quiet = 10.0
        deadline = time.monotonic() + DRAIN_MAX
        last, still_since = None, time.monotonic()
        while time.monotonic() < deadline:
            self.sleep(2)
            c = check(self.history()).counts
            progress = (c["delivered"], c["reported"], c["duplicates"])
            if c["silent_losses"] == 0:
                return
            if not self.traffic.handed_over():
                last, still_since = None, time.monotonic()
            elif progress != last:
                last, still_since = progress, time.monotonic()
            elif time.monotonic() - still_since > quiet:
                return
        self.problems.append(f"the drain did not settle within {DRAIN_MAX:.0f} s (the "
                             "ingress had not taken over everything, or records kept moving)")

    def run(self) -> Verdict:
        self.say(f"variant {self.variant}, seed {self.seed}, {len(self.schedule)} faults, "
                 f"workdir {self.workdir}")
        try:
            self._setup()
            deadline = time.monotonic() + 90
            while self.traffic.delivered_count() == 0 and time.monotonic() < deadline:
                self.sleep(0.5)
            if self.traffic.delivered_count() == 0:
                self.problems.append("nothing crossed in the 90 s warm-up")
            for f in self.schedule:
                self._inject(f)
            self._drain()
            for d in (self.ingress, self.egress):  # the last stop must be clean too
                self._watch()
                self._stop(d, kill=False)
        except HarnessAbort as exc:
            self.problems.append(f"run aborted at {self.now():.0f} s: {exc}")
        finally:
            for d in (self.ingress, self.egress):
                if d is not None:
                    d.kill()
            if self.traffic is not None:
                self.traffic.close()
            if self.link is not None:
                self.link.stop()
            if self.pair is not None:
                self.pair.ensure_running()
        if isinstance(self.traffic, KafkaTraffic):
            try:
                for note in self.traffic.read_source():
                    self.say(note)
            except Exception as exc:  # noqa: BLE001 - the run is then inconclusive
                self.problems.append(f"could not read the source topic back: {exc!r}")
        verdict = check(self.history())
        text = verdict.report()
        try:  # context for the evidence: what the last egress run dropped, and why
            st = json.loads((self.egress.state_dir / "status.json").read_text())
            text += (f"\nlast egress run ({self.egress.name}): dropped {st.get('dropped')}, "
                     f"duplicates dropped {st.get('duplicates')}")
        except (OSError, ValueError, AttributeError):
            pass
        self.say(f"done in {self.now():.0f} s\n{text}\nreproduce: python -m tests.chaos "
                 f"--variant {self.variant} --faults {len(self.schedule)} --seed {self.seed}")
        (self.workdir / "result.json").write_text(json.dumps({
            "variant": self.variant, "seed": self.seed, "counts": verdict.counts,
            "faults": self.faults, "violations": [str(v) for v in verdict.violations],
            "exits": [e.__dict__ for e in self.exits]}, indent=1, default=str))
        return verdict
