"""Kafka -> ddc ingress -> UDP link -> ddc egress -> Kafka, against two baselines.

    python -m benchmarks.kafka_bench [--version 4.4.0] [--sizes 100,1024,8192]
                                     [--records 200000 --max-mb 512]
                                     [--rate-mbit 0 --rate-records 0]

Starts two real Apache Kafka brokers (tests/kafka/broker.py; jars from
scripts/fetch-kafka.sh). For each record size it fills a 3-partition topic on the high
broker with --records records (distinct, incompressible values, a text key, one header,
the producer's timestamps), then moves that backlog to the low broker three ways, timing
each to the last record acknowledged by the low broker:

1. python: a direct consume -> produce copy in one process (MirrorMaker-style), with
   the same client settings the ddc Kafka channels use (consumer batch consume(), an
   idempotent lz4 producer with linger.ms=5), keeping key, headers, partition, timestamp;
2. kcat: `kcat -C ... | kcat -P ...` (C, librdkafka; Debian's kcat), an idempotent lz4
   producer with the same linger and batch size. It carries key and value only (a text
   pipe has no room for headers, and the producer partitions by key);
3. ddc: `ddc run` ingress (Kafka source) and egress (Kafka sink, transactional: the
   default) on loopback with FEC (12%) and AES-256-GCM, each pinned to its own core,
   paced at --rate-mbit / --rate-records (default unpaced: the egress keeps up with what
   the ingress sends here; the run says if it did not, by the records lost).

Prints per size and path records/s, MB/s, CPU microseconds per record (per daemon for
ddc; the copying processes for the baselines), ddc / kcat and ddc / python, and each
daemon's peak RSS; then, from the destination topic's watermarks polled meanwhile, the
steady rate of each path (while 10% to 90% of the records arrived: what it sustains
once running, which a diode that runs for months is judged by) with its own ratios, and
the seconds each took to deliver its first 10% (starting up), and the CPU per record
in that same window: per process (both daemons, both kcats, the Python copy) and, for
ddc, per thread by name (the link thread, the channel's thread, librdkafka's rdk:*
threads), which is where a microsecond per record goes once the processes have started.
A benchmark prints figures; it does not pass or fail.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import psutil
from confluent_kafka import Consumer, Producer, TopicPartition

from appliance.channels.kafka import FETCH_QUEUE_BACKOFF_MS, PRODUCER_QUEUE_BYTES, SourceOptions
from appliance.protocol.auth import KEY_SIZE, format_key
from appliance.schema import options_of
from tests.kafka.broker import KafkaBroker, KafkaBrokerError, KafkaSetupError, read_versions

PARTS = 3
# the ddc Kafka source's prefetch settings, from their definitions (appliance/channels/kafka.py)
_SOURCE_DEFAULTS = options_of(SourceOptions, {"bootstrap_servers": "-", "group_id": "-",
                                              "topics": ["-"]})
SOURCE = {"enable.auto.offset.store": False, "auto.offset.reset": "earliest",
          "queued.max.messages.kbytes": _SOURCE_DEFAULTS.queued_max_kbytes,
          "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS}
SINK = {"enable.idempotence": True, "acks": "all", "linger.ms": 5, "batch.size": 1_000_000,
        "compression.type": "lz4",
        # the ddc sink's own bound (below max_record_bytes + 1 MiB, which no record here is)
        "queue.buffering.max.kbytes": PRODUCER_QUEUE_BYTES // 1024}


def fill(broker: KafkaBroker, topic: str, n: int, size: int, parts: int = PARTS) -> None:
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20,
                  "batch.size": 1_000_000, "compression.type": "lz4"})
    # Distinct, incompressible values: identical ones would let lz4 shrink the backlog
    # (and every fetch) to almost nothing, flattering whichever path decompresses less.
    # No newline in them and a key of digits: the kcat pipe is text, one record a line,
    # the key before a tab.
    pool = os.urandom(1 << 24).replace(b"\n", b"\x0b")
    span = len(pool) - size
    headers = [("trace", b"bench")]
    for i in range(n):
        start = (i * 7919) % span
        value = pool[start:start + size]
        while True:
            try:
                p.produce(topic, value=value, key=b"%012d" % i, partition=i % parts,
                          headers=headers)
                break
            except BufferError:
                p.poll(0.05)
        if i % 10000 == 0:
            p.poll(0)
    p.flush(120)


def count(broker: KafkaBroker, topic: str) -> int:
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "bench-count"})
    total = 0
    for part in range(PARTS):
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, part), timeout=10)
        total += hi - lo
    c.close()
    return total


def thread_cpu(proc: psutil.Process, skip: int | None = None) -> dict[str, float]:
    """CPU seconds of each of proc's threads, summed by name (digits dropped: librdkafka
    names one rdk:brokerN thread per broker connection); {} once it has exited. The
    daemons name their threads (appliance/link/cpu.py); `skip` is a thread id left out."""
    by_name: dict[str, float] = {}
    try:
        for t in proc.threads():
            if t.id == skip:
                continue
            try:
                with open(f"/proc/{proc.pid}/task/{t.id}/comm") as f:
                    name = f.read().strip().rstrip("0123456789-") or "?"
            except OSError:
                name = "?"
            by_name[name] = by_name.get(name, 0.0) + t.user_time + t.system_time
    except psutil.Error:
        return {}
    return by_name


class Arrivals:
    """The destination topic's records over time, for the steady rate: its high
    watermarks, polled every POLL_EVERY s by a thread of the bench process, give the
    moments 10% and 90% of the records had arrived; records/s between the two is what a
    path sustains once it runs. Starting (processes, group join, the first transaction)
    is outside that window: it is the time to 10%, printed apart. The transactional ddc
    sink adds a commit marker per partition and transaction (about 30 a second at its
    100 ms commit interval), so its count runs ahead by under 0.2% at these rates.

    With each sample it reads the CPU time, per thread, of the processes in `watched`
    (name -> psutil.Process, filled by the copy once it has started them; the bench
    process itself for the Python copy, less this thread): the CPU per record between
    the same two moments is the steady cost, without the processes' start (imports, group
    join) that a diode running for months pays once.

    The thread's own CPU time is kept (cpu), so the Python copy, which runs in this
    process, is not charged for it."""
    POLL_EVERY = 0.1

    def __init__(self, broker: KafkaBroker, topic: str, n: int,
                 watched: dict[str, psutil.Process] | None = None):
        self.broker, self.topic, self.n = broker, topic, n
        self.watched = watched if watched is not None else {}
        self.samples: list[tuple[float, int]] = []
        self.cpu_samples: list[dict[str, dict[str, float]]] = []
        self.cpu = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Arrivals:
        self.start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        cpu0 = time.thread_time()
        me = threading.get_native_id()
        c = Consumer({"bootstrap.servers": self.broker.bootstrap, "group.id": "bench-arrivals"})
        tps = [TopicPartition(self.topic, part) for part in range(PARTS)]
        try:
            while not self._stop.is_set():
                total = sum(c.get_watermark_offsets(tp, timeout=5)[1] for tp in tps)
                self.samples.append((time.monotonic(), total))
                self.cpu_samples.append({name: thread_cpu(proc, skip=me)
                                         for name, proc in list(self.watched.items())})
                if total >= self.n:
                    break
                self._stop.wait(self.POLL_EVERY)
        finally:
            c.close()
            self.cpu = time.thread_time() - cpu0

    def _first_at(self, share: float) -> int | None:
        """Index of the first sample at or past share x n records arrived."""
        goal = share * self.n
        return next((i for i, (_, count) in enumerate(self.samples) if count >= goal), None)

    def reached(self, share: float) -> float | None:
        """Seconds from the start until share x n records had arrived (interpolated)."""
        i = self._first_at(share)
        if i is None:
            return None
        t, count = self.samples[i]
        t0, c0 = self.samples[i - 1] if i else (self.start, 0)
        return t0 - self.start + (t - t0) * (share * self.n - c0) / max(1, count - c0)

    def steady(self) -> tuple[float | None, float | None]:
        """(records/s between 10% and 90% arrived, seconds to 10%)."""
        t10, t90 = self.reached(0.1), self.reached(0.9)
        if t10 is None or t90 is None or t90 <= t10:
            return None, t10
        return 0.8 * self.n / (t90 - t10), t10

    def steady_cpu(self) -> dict[str, dict[str, float]]:
        """CPU microseconds per record arrived between the first samples at or past 10%
        and 90% of the records, per watched process and thread name ({} if the window
        is too short: fewer than two samples, or a process that exited within it)."""
        i10, i90 = self._first_at(0.1), self._first_at(0.9)
        if i10 is None or i90 is None or i10 == i90:
            return {}
        arrived = self.samples[i90][1] - self.samples[i10][1]
        result = {}
        for name in self.cpu_samples[i90]:
            before, after = self.cpu_samples[i10].get(name, {}), self.cpu_samples[i90][name]
            if not after or not before:
                return {}
            result[name] = {thread: (after[thread] - before.get(thread, 0.0)) / arrived * 1e6
                            for thread in after}
        return result


def direct_copy(high: KafkaBroker, low: KafkaBroker, src: str, dst: str, n: int) -> float:
    c = Consumer({"bootstrap.servers": high.bootstrap, "group.id": "bench-direct",
                  "enable.auto.commit": True} | SOURCE)
    p = Producer({"bootstrap.servers": low.bootstrap} | SINK)
    c.subscribe([src])
    start = time.monotonic()
    moved = 0
    while moved < n:
        msgs = c.consume(1000, 0.5)
        for m in msgs:
            if m.error():
                continue
            while True:
                try:
                    p.produce(dst, value=m.value(), key=m.key(), headers=m.headers(),
                              partition=m.partition(), timestamp=m.timestamp()[1])
                    break
                except BufferError:
                    p.poll(0.05)
            moved += 1
        if msgs:
            c.store_offsets(message=msgs[-1])
        p.poll(0)
    p.flush(120)
    elapsed = time.monotonic() - start
    c.close()
    return elapsed


def kcat_copy(high: KafkaBroker, low: KafkaBroker, src: str, dst: str, kcat: str,
              watched: dict[str, psutil.Process]) -> tuple[float, float] | None:
    """`kcat -C | kcat -P` from src to dst: (seconds until the producer has flushed and
    exited, CPU seconds of both kcats), or None if either kcat failed. Both are put in
    `watched` once started."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    consume = subprocess.Popen(
        [kcat, "-C", "-b", high.bootstrap, "-t", src, "-o", "beginning", "-e", "-q",
         "-f", "%k\t%s\n",
         # Debian's kcat links librdkafka 2.0, which has no fetch.queue.backoff.ms (2.2):
         # with ddc's 16 MiB bound it would stand idle a second each time its prefetch
         # filled. Unbounded prefetch instead, so the C baseline never stalls either.
         "-X", "queued.max.messages.kbytes=2097151", "-X", "queued.min.messages=10000000"],
        stdout=subprocess.PIPE)
    produce = subprocess.Popen(
        [kcat, "-P", "-b", low.bootstrap, "-t", dst, "-K", "\t", "-z", "lz4",
         "-X", "enable.idempotence=true", "-X", "acks=all", "-X", "linger.ms=5",
         "-X", "batch.size=1000000",
         "-X", f"queue.buffering.max.kbytes={PRODUCER_QUEUE_BYTES // 1024}"],
        stdin=consume.stdout)
    assert consume.stdout is not None
    consume.stdout.close()  # (the producer holds the pipe now)
    watched["kcat -C"] = psutil.Process(consume.pid)
    watched["kcat -P"] = psutil.Process(produce.pid)
    try:
        produce.wait(3600)
        consume.wait(60)
    finally:
        for proc in (consume, produce):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    elapsed = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    failed = [f"{name} exited {proc.returncode}"
              for name, proc in (("kcat -C", consume), ("kcat -P", produce)) if proc.returncode]
    if failed:  # (its own error is on stderr above)
        print(f"kcat failed ({', '.join(failed)}): no C baseline", flush=True)
        return None
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _egress_accounted(tmp: str) -> int:
    try:
        with open(os.path.join(tmp, "egress", "status.json")) as f:
            st = json.load(f)
    except (OSError, ValueError):
        return 0
    return st["records_delivered"] + st["records_lost"]


def _link_counters(tmp: str) -> str:
    try:
        with open(os.path.join(tmp, "egress", "status.json")) as f:
            st = json.load(f)
    except (OSError, ValueError):
        return "egress status unreadable"
    return (f"egress link: {st['packets_received']} packets, kernel drops {st['kernel_drops']}, "
            f"FEC-repaired blocks {st['fec_recovered']}, blocks lost {st['blocks_lost']}, "
            f"records lost {st['records_lost']}")


def _committed(tmp: str) -> int:
    try:
        with open(os.path.join(tmp, "egress", "status.json")) as f:
            return json.load(f)["channels"]["bench"]["sink"]["kafka.records_delivered"]
    except (OSError, ValueError, KeyError):
        return 0


def _lost(tmp: str) -> int:
    try:
        with open(os.path.join(tmp, "egress", "status.json")) as f:
            return json.load(f)["records_lost"]
    except (OSError, ValueError):
        return 0


def ddc_copy(high: KafkaBroker, low: KafkaBroker, src: str, n: int, tmp: str,
             rate_mbit: float, rate_records: float, watched: dict[str, psutil.Process]
             ) -> tuple:
    key = os.path.join(tmp, "link.key")
    fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(format_key(os.urandom(KEY_SIZE)))
    port = 40000 + os.getpid() % 20000
    common = '[metrics]\nstatsd = ""\n[logging]\nsyslog = ""\njournald = false\n'
    egress = f"""role = "egress"
state_dir = "{tmp}/egress"
status_file = "{tmp}/egress/status.json"
[link]
bind = "127.0.0.1:{port}"
key_file = "{key}"
[tuning]
link_cpu = 1
{common}
[[channel]]
id = 1
name = "bench"
type = "kafka"
[channel.kafka]
bootstrap_servers = "{low.bootstrap}"
topic_prefix = "ddc."
"""
    ingress = f"""role = "ingress"
state_dir = "{tmp}/ingress"
status_file = "{tmp}/ingress/status.json"
[link]
peer = "127.0.0.1:{port}"
key_file = "{key}"
rate_mbit = {rate_mbit}
rate_records = {rate_records}
[tuning]
link_cpu = 0
queue_records = 20000
{common}
[[channel]]
id = 1
name = "bench"
type = "kafka"
[channel.kafka]
bootstrap_servers = "{high.bootstrap}"
group_id = "bench-ddc"
topics = ["{src}"]
"""
    paths = {}
    for name, text in (("egress", egress), ("ingress", ingress)):
        paths[name] = os.path.join(tmp, f"{name}.toml")
        with open(paths[name], "w") as f:
            f.write(text)
    cmd = [sys.executable, "-m", "appliance.cli", "run", "--config"]
    eg = subprocess.Popen(cmd + [paths["egress"]], stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    start = time.monotonic()
    ing = subprocess.Popen(cmd + [paths["ingress"]], stderr=subprocess.DEVNULL)
    procs = {"ingress": psutil.Process(ing.pid), "egress": psutil.Process(eg.pid)}
    watched.update(procs)
    peak = {"ingress": 0, "egress": 0}
    done = 0
    while _egress_accounted(tmp) < n and time.monotonic() - start < 3600:
        time.sleep(0.2)
        for name, ps in procs.items():
            peak[name] = max(peak[name], ps.memory_info().rss)
    # delivered to Kafka (committed: the sink is transactional), as the direct copy's
    # flush() waits for. (Not the topic's watermarks: they count commit markers too.)
    while _committed(tmp) < n - _lost(tmp) and time.monotonic() - start < 3600:
        time.sleep(0.1)
    elapsed = time.monotonic() - start
    done = _committed(tmp)
    lost = _lost(tmp)
    print(_link_counters(tmp), flush=True)
    cpu = {}
    for name, p in (("ingress", ing), ("egress", eg)):
        t = psutil.Process(p.pid).cpu_times()
        cpu[name] = t.user + t.system
        p.terminate()
        p.wait(30)
    print(f"ddc CPU seconds: ingress {cpu['ingress']:.1f}, egress {cpu['egress']:.1f} "
          f"over {elapsed:.1f} s", flush=True)
    return elapsed, peak, done, lost, cpu


def _cpu_self() -> float:
    t = psutil.Process().cpu_times()
    return t.user + t.system


def _row(name: str, n: int, size: int, seconds: float, cpu_us: str) -> str:
    return (f"  {name:7} {n / seconds:9.0f} rec/s {n * size / 1e6 / seconds:7.1f} MB/s  "
            f"{seconds:6.1f} s  CPU {cpu_us}")


def bench_size(high: KafkaBroker, low: KafkaBroker, size: int, n: int, args,
               kcat: str | None, tmp: str) -> dict:
    src = f"bench-{size}"
    high.create_topic(src, partitions=PARTS)
    for t in (f"direct.{src}", f"kcat.{src}", f"ddc.{src}"):
        low.create_topic(t, partitions=PARTS)
    t0 = time.monotonic()
    fill(high, src, n, size)
    print(f"backlog: {n} records of {size} B ({n * size / 1e6:.0f} MB) on Kafka "
          f"{args.version}, filled in {time.monotonic() - t0:.0f} s", flush=True)
    cpu0 = _cpu_self()
    with Arrivals(low, f"direct.{src}", n, {"python": psutil.Process()}) as direct_arrivals:
        direct = direct_copy(high, low, src, f"direct.{src}", n)
    direct_cpu = _cpu_self() - cpu0 - direct_arrivals.cpu
    kc = None
    if kcat:
        with Arrivals(low, f"kcat.{src}", n, {}) as kcat_arrivals:
            kc = kcat_copy(high, low, src, f"kcat.{src}", kcat, kcat_arrivals.watched)
    if kc is not None and count(low, f"kcat.{src}") != n:
        print(f"kcat moved {count(low, f'kcat.{src}')} of {n} records: no C baseline",
              flush=True)
        kc = None
    run_dir = os.path.join(tmp, f"ddc-{size}")
    os.makedirs(run_dir)
    with Arrivals(low, f"ddc.{src}", n, {}) as ddc_arrivals:
        moved, peak, done, lost, cpu = ddc_copy(high, low, src, n, run_dir, args.rate_mbit,
                                                args.rate_records, ddc_arrivals.watched)
    steady = {"python": direct_arrivals.steady(), "ddc": ddc_arrivals.steady()}
    if kc:
        steady["kcat"] = kcat_arrivals.steady()
    r = {"size": size, "records": n, "python_s": direct, "python_cpu_us": direct_cpu / n * 1e6,
         "kcat_s": kc[0] if kc else None, "kcat_cpu_us": kc[1] / n * 1e6 if kc else None,
         "ddc_s": moved, "ddc_delivered": done, "ddc_lost": lost,
         "ingress_cpu_us": cpu["ingress"] / n * 1e6, "egress_cpu_us": cpu["egress"] / n * 1e6,
         "ingress_peak_rss_MB": peak["ingress"] / 1e6, "egress_peak_rss_MB": peak["egress"] / 1e6,
         **{f"{path}_steady_rec_s": rate for path, (rate, _) in steady.items()},
         **{f"{path}_to_10pct_s": t10 for path, (_, t10) in steady.items()}}
    print(f"{size}-byte records, {n} of them:")
    print(_row("python", n, size, direct, f"{r['python_cpu_us']:.1f} us/record"))
    if kc:
        print(_row("kcat", n, size, kc[0], f"{r['kcat_cpu_us']:.1f} us/record (both kcats)"))
    print(_row("ddc", done, size, moved,
               f"ingress {r['ingress_cpu_us']:.1f} + egress {r['egress_cpu_us']:.1f} = "
               f"{r['ingress_cpu_us'] + r['egress_cpu_us']:.1f} us/record") +
          f"  {done}/{n} delivered, {lost} lost, peak RSS ingress "
          f"{r['ingress_peak_rss_MB']:.0f} MB, egress {r['egress_peak_rss_MB']:.0f} MB")
    ddc_rate = done / moved
    ratios = [f"ddc / python = {ddc_rate / (n / direct):.2f}"]
    if kc:
        ratios.append(f"ddc / kcat = {ddc_rate / (n / kc[0]):.2f}")
    print("  ratio   " + ", ".join(ratios), flush=True)
    print("  steady (records/s while 10% to 90% of them arrived; then seconds to 10%):")
    for path, (rate, t10) in steady.items():
        print(f"  {path:7} " + (f"{rate:9.0f} rec/s {rate * size / 1e6:7.1f} MB/s"
                                if rate else "      n/a") +
              (f"  {t10:5.1f} s to 10%" if t10 is not None else ""))
    ddc_steady = steady["ddc"][0]
    ratios = [f"ddc / {path} = {ddc_steady / rate:.2f}" for path, (rate, _) in steady.items()
              if path != "ddc" and rate and ddc_steady]
    if ratios:
        print("  ratio   " + ", ".join(ratios) + " (steady)", flush=True)
    arrivals = {"python": direct_arrivals, "ddc": ddc_arrivals}
    if kc:
        arrivals["kcat"] = kcat_arrivals
    print("  steady CPU (us per record while 10% to 90% of them arrived; threads by name):")
    for path, arr in arrivals.items():
        per_process = arr.steady_cpu()
        if not per_process:
            print(f"  {path:7}       n/a (too few samples in the window)")
            continue
        totals = {name: sum(threads.values()) for name, threads in per_process.items()}
        r[f"{path}_steady_cpu_us"] = sum(totals.values())
        r[f"{path}_steady_cpu_threads_us"] = per_process
        parts = " + ".join(f"{name} {us:.1f}" for name, us in totals.items())
        print(f"  {path:7} {parts}" + (f" = {sum(totals.values()):.1f}" if len(totals) > 1 else ""))
        if path == "ddc":
            for name, threads in per_process.items():
                top = sorted(threads.items(), key=lambda kv: -kv[1])
                print(f"    {name}: " + ", ".join(f"{t} {us:.2f}" for t, us in top if us >= 0.05))
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", default=read_versions()[-1])
    ap.add_argument("--sizes", default="100,1024,8192",
                    help="record sizes in bytes, comma-separated (default 100,1024,8192)")
    ap.add_argument("--records", type=int, default=200_000, help="backlog per size")
    ap.add_argument("--max-mb", type=int, default=512,
                    help="fewer records where --records of a size would exceed this backlog")
    ap.add_argument("--rate-mbit", type=float, default=0,
                    help="ingress pacing (link.rate_mbit); above what the egress host absorbs, "
                    "records are lost (and reported)")
    ap.add_argument("--rate-records", type=float, default=0,
                    help="ingress pacing in records/s (link.rate_records)")
    ap.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = ap.parse_args()
    try:
        sizes = [int(x) for x in args.sizes.split(",")]
    except ValueError:
        ap.error(f"--sizes: {args.sizes!r} is not a comma-separated list of byte counts")
    if any(size < 1 for size in sizes) or args.records < 1 or args.max_mb < 1:
        ap.error("--sizes, --records and --max-mb must be positive")
    kcat = shutil.which("kcat")
    if kcat is None:
        print("kcat is not installed (apt-get install kcat): no C baseline", flush=True)
    tmp = tempfile.mkdtemp(prefix="ddc-kafka-bench-")
    props = {"log.retention.bytes": -1, "log.segment.bytes": 512 * 1024 * 1024}
    brokers: list[KafkaBroker] = []
    results = []
    try:
        for name in ("high", "low"):
            broker = KafkaBroker(args.version, os.path.join(tmp, name), name=name, heap="1g",
                                 quick_jit=False, extra_properties=props)
            brokers.append(broker)  # stopped below even if its start fails half-way
            broker.start()
        high, low = brokers
        for size in sizes:
            n = min(args.records, args.max_mb * 1024 * 1024 // size)
            results.append(bench_size(high, low, size, n, args, kcat, tmp))
    except (KafkaSetupError, KafkaBrokerError) as exc:
        print(f"kafka_bench: {exc}", file=sys.stderr)
        return 1
    finally:
        for broker in brokers:
            broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
