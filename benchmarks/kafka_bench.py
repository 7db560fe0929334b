"""Kafka -> ddc ingress -> UDP link -> ddc egress -> Kafka, against a direct copy.

    python -m benchmarks.kafka_bench [--version 4.4.0] [--backlog-mb 2048] [--size 1024]

Starts two real Apache Kafka brokers (tests/kafka/broker.py; jars from
scripts/fetch-kafka.sh), fills a 3-partition topic on the high broker with a backlog of
--size-byte records, then moves the backlog to the low broker twice, timing each:

1. baseline: a direct consume -> produce copy in one process (MirrorMaker-style), with
   the same client settings the ddc Kafka channels use (consumer batch consume(), an
   idempotent lz4 producer with linger.ms=5);
2. ddc: `ddc run` ingress (Kafka source) and egress (Kafka sink, transactional:
   the default) on loopback with FEC
   (12%) and AES-256-GCM, each pinned to its own core, paced at --rate-mbit (600: what
   the link would be set to here - below what the egress absorbs on this machine, with
   no kernel drops, and above what 1 KB records at the direct copy's rate need).

Prints records/s and MB/s for both, the ratio, and the egress's peak RSS. A benchmark
prints figures; it does not pass or fail.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import psutil
from confluent_kafka import Consumer, Producer, TopicPartition

from appliance.protocol.auth import KEY_SIZE, format_key
from tests.kafka.broker import KafkaBroker, read_versions

PARTS = 3
SOURCE = {"enable.auto.offset.store": False, "auto.offset.reset": "earliest",
          "queued.max.messages.kbytes": 16384}
SINK = {"enable.idempotence": True, "acks": "all", "linger.ms": 5, "batch.size": 1_000_000,
        "compression.type": "lz4", "queue.buffering.max.kbytes": 65536}


def fill(broker: KafkaBroker, topic: str, n: int, size: int, parts: int = PARTS) -> None:
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20,
                  "batch.size": 1_000_000, "compression.type": "lz4"})
    # Distinct, incompressible values: identical ones would let lz4 shrink the backlog
    # (and every fetch) to almost nothing, flattering whichever path decompresses less.
    pool = os.urandom(1 << 24)
    span = len(pool) - size
    for i in range(n):
        start = (i * 7919) % span
        value = pool[start:start + size]
        while True:
            try:
                p.produce(topic, value=value, key=i.to_bytes(8, "big"), partition=i % parts)
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


def _egress_accounted(tmp: str) -> int:
    import json

    try:
        with open(os.path.join(tmp, "egress", "status.json")) as f:
            st = json.load(f)
    except (OSError, ValueError):
        return 0
    return st["records_delivered"] + st["records_lost"]


def _link_counters(tmp: str) -> str:
    import json

    try:
        with open(os.path.join(tmp, "egress", "status.json")) as f:
            st = json.load(f)
    except (OSError, ValueError):
        return "egress status unreadable"
    return (f"egress link: {st['packets_received']} packets, kernel drops {st['kernel_drops']}, "
            f"FEC-repaired blocks {st['fec_recovered']}, blocks lost {st['blocks_lost']}, "
            f"records lost {st['records_lost']}")


def _committed(tmp: str) -> int:
    import json

    try:
        with open(os.path.join(tmp, "egress", "status.json")) as f:
            return json.load(f)["channels"]["bench"]["sink"]["kafka.records_delivered"]
    except (OSError, ValueError, KeyError):
        return 0


def _lost(tmp: str) -> int:
    import json

    try:
        with open(os.path.join(tmp, "egress", "status.json")) as f:
            return json.load(f)["records_lost"]
    except (OSError, ValueError):
        return 0


def ddc_copy(high: KafkaBroker, low: KafkaBroker, src: str, n: int, tmp: str,
             rate_mbit: float) -> tuple:
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
    return elapsed, peak, done, lost


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", default=read_versions()[-1])
    ap.add_argument("--backlog-mb", type=int, default=2048)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--rate-mbit", type=float, default=600,
                    help="ingress pacing; above what the egress host absorbs, records are "
                    "lost (and reported)")
    args = ap.parse_args()
    n = args.backlog_mb * 1024 * 1024 // args.size
    tmp = tempfile.mkdtemp(prefix="ddc-kafka-bench-")
    props = {"log.retention.bytes": -1, "log.segment.bytes": 512 * 1024 * 1024}
    high = KafkaBroker(args.version, os.path.join(tmp, "high"), name="high", heap="1g",
                       quick_jit=False, extra_properties=props).start()
    low = KafkaBroker(args.version, os.path.join(tmp, "low"), name="low", heap="1g",
                      quick_jit=False, extra_properties=props).start()
    try:
        for b, topics in ((high, ["bench"]), (low, ["direct.bench", "ddc.bench"])):
            for t in topics:
                b.create_topic(t, partitions=PARTS)
        t0 = time.monotonic()
        fill(high, "bench", n, args.size)
        print(f"backlog: {n} records of {args.size} B ({n * args.size / 1e6:.0f} MB) on Kafka "
              f"{args.version}, filled in {time.monotonic() - t0:.0f} s", flush=True)
        direct = direct_copy(high, low, "bench", "direct.bench", n)
        moved, peak, done, lost = ddc_copy(high, low, "bench", n, tmp, args.rate_mbit)
    finally:
        high.stop()
        low.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    mb = n * args.size / 1e6
    print(f"direct copy  {n / direct:9.0f} rec/s  {mb / direct:7.1f} MB/s  ({direct:.1f} s)")
    print(f"ddc diode    {done / moved:9.0f} rec/s  {done * args.size / 1e6 / moved:7.1f} MB/s"
          f"  ({moved:.1f} s, {done}/{n} records, {lost} lost)  "
          f"peak RSS ingress {peak['ingress'] / 1e6:.0f} MB, egress {peak['egress'] / 1e6:.0f} MB")
    print(f"ratio        ddc / direct = {direct / moved * done / n:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
