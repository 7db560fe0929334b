"""What exactly-once and scale-out cost: Kafka -> ddc -> Kafka with transactions off and on,
then with two diode pairs against one, all in the same run on the same brokers.

    python -m benchmarks.kafka_pairs_bench [--version 4.4.0] [--backlog-mb 512] [--size 1024]

Two real Apache Kafka brokers (tests/kafka/broker.py), a backlog of --size-byte records
with distinct, incompressible values on a 6-partition topic of the high one. The backlog
is moved to the low broker four times, each into its own topic with its own consumer
group, by `ddc run` ingress/egress pairs on loopback (FEC 12%, AES-256-GCM, paced at
--rate-mbit per link):

1. one pair, transactions = false (idempotent producer: the baseline);
2. one pair, transactions = true (records and positions in one transaction);
3. two pairs in one consumer group (each its own link and egress), transactions = true;
4. the same as 2 again, so the spread of one configuration shows next to the ratios.

Each time runs from the ingresses' start to the last record committed (transactions) or
acknowledged (idempotent) at the low broker. Prints records/s, the ratios, and each
run's losses and duplicates dropped. On a 2-core machine two pairs share the cores of one:
the second pair shows how the protocol and the consumer group split the work, not more
CPU. A benchmark prints figures; it does not pass or fail.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from appliance.protocol.auth import KEY_SIZE, format_key
from benchmarks.kafka_bench import fill
from tests.kafka.broker import KafkaBroker, read_versions

PARTS = 6


def _status(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def audit(low: KafkaBroker, topic: str, n: int) -> tuple[int, int]:
    """(duplicates, missing) in the destination topic, read_committed, by record key."""
    c = Consumer({"bootstrap.servers": low.bootstrap, "group.id": f"audit-{topic}",
                  "enable.partition.eof": True, "isolation.level": "read_committed"})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTS)])
    seen: set[int] = set()
    records = 0
    at_end: set[int] = set()
    deadline = time.monotonic() + 600
    while len(at_end) < PARTS and time.monotonic() < deadline:
        for m in c.consume(10_000, 0.5):
            if m.error():
                at_end.add(m.partition())
                continue
            records += 1
            seen.add(int.from_bytes(m.key(), "big"))
    c.close()
    return records - len(seen), n - len(seen)


def run_pairs(high: KafkaBroker, low: KafkaBroker, src: str, run: str, n: int, tmp: str,
              rate_mbit: float, pairs: int, transactions: bool) -> dict:
    """Move the backlog with `pairs` ingress/egress pairs; return the figures."""
    key = os.path.join(tmp, "link.key")
    if not os.path.exists(key):
        fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(format_key(os.urandom(KEY_SIZE)))
    common = '[metrics]\nstatsd = ""\n[logging]\nsyslog = ""\njournald = false\n'
    cmd = [sys.executable, "-m", "appliance.cli", "run", "--config"]
    egresses, ingresses, status = [], [], []
    for i in range(pairs):
        d = os.path.join(tmp, run, f"pair{i}")
        os.makedirs(d)
        port = 40000 + (os.getpid() * 7 + i * 13 + len(run)) % 20000
        egress = f"""role = "egress"
node_name = "{run}-pair{i}"
state_dir = "{d}/egress"
status_file = "{d}/egress/status.json"
[link]
bind = "127.0.0.1:{port}"
key_file = "{key}"
{common}
[[channel]]
id = 1
name = "bench"
type = "kafka"
[channel.kafka]
bootstrap_servers = "{low.bootstrap}"
topic_prefix = "{run}."
transactions = {"true" if transactions else "false"}
positions_topic = "{run}.positions"
"""
        ingress = f"""role = "ingress"
node_name = "{run}-pair{i}-in"
state_dir = "{d}/ingress"
status_file = "{d}/ingress/status.json"
[link]
peer = "127.0.0.1:{port}"
key_file = "{key}"
rate_mbit = {rate_mbit}
[tuning]
queue_records = 20000
{common}
[[channel]]
id = 1
name = "bench"
type = "kafka"
[channel.kafka]
bootstrap_servers = "{high.bootstrap}"
group_id = "bench-{run}"
topics = ["{src}"]
"""
        for name, text in (("egress", egress), ("ingress", ingress)):
            with open(os.path.join(d, f"{name}.toml"), "w") as f:
                f.write(text)
        egresses.append(subprocess.Popen(cmd + [os.path.join(d, "egress.toml")],
                                         stderr=subprocess.DEVNULL))
        status.append(os.path.join(d, "egress", "status.json"))
    try:
        deadline = time.monotonic() + 60
        while not all(_status(s) for s in status) and time.monotonic() < deadline:
            time.sleep(0.1)  # egresses up (transactions initialised, positions read)
        start = time.monotonic()
        for i in range(pairs):
            d = os.path.join(tmp, run, f"pair{i}")
            ingresses.append(subprocess.Popen(cmd + [os.path.join(d, "ingress.toml")],
                                              stderr=subprocess.DEVNULL))

        def totals() -> tuple[int, int, int, int, int]:
            done = lost = dups = commits = aborts = 0
            for s in status:
                st = _status(s)
                ch = st.get("channels", {}).get("bench", {})
                done += ch.get("sink", {}).get("kafka.records_delivered", 0)
                lost += st.get("records_lost", 0)
                dups += st.get("duplicates", 0)
                tx = ch.get("transactions", {})
                dups += tx.get("duplicates_dropped", 0)
                commits += tx.get("committed", 0)
                aborts += tx.get("aborted", 0)
            return done, lost, dups, commits, aborts

        while sum(totals()[:2]) < n and time.monotonic() - start < 3600:
            time.sleep(0.1)
        elapsed = time.monotonic() - start
        done, lost, dups, commits, aborts = totals()
    finally:
        for p in ingresses + egresses:
            p.terminate()
        for p in ingresses + egresses:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
    return {"run": run, "pairs": pairs, "transactions": transactions, "seconds": elapsed,
            "records": done, "lost": lost, "duplicates_dropped": dups, "commits": commits,
            "aborts": aborts, "rate": done / elapsed}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", default=read_versions()[-1])
    ap.add_argument("--backlog-mb", type=int, default=512)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--rate-mbit", type=float, default=600, help="pacing of each link")
    args = ap.parse_args()
    n = args.backlog_mb * 1024 * 1024 // args.size
    tmp = tempfile.mkdtemp(prefix="ddc-pairs-bench-")
    props = {"log.retention.bytes": -1, "log.segment.bytes": 512 * 1024 * 1024}
    high = KafkaBroker(args.version, os.path.join(tmp, "high"), name="high", heap="1g",
                       quick_jit=False, extra_properties=props).start()
    low = KafkaBroker(args.version, os.path.join(tmp, "low"), name="low", heap="1g",
                      quick_jit=False, extra_properties=props).start()
    runs = [("idem1", 1, False), ("txn1", 1, True), ("txn2", 2, True), ("txn1b", 1, True)]
    results = []
    try:
        high.create_topic("bench", partitions=PARTS)
        for run, _pairs, _txn in runs:
            low.create_topic(f"{run}.bench", partitions=PARTS)
        t0 = time.monotonic()
        fill(high, "bench", n, args.size, PARTS)
        print(f"backlog: {n} records of {args.size} B ({n * args.size / 1e6:.0f} MB) on Kafka "
              f"{args.version}, {PARTS} partitions, filled in {time.monotonic() - t0:.0f} s",
              flush=True)
        for run, pairs, txn in runs:
            r = run_pairs(high, low, "bench", run, n, tmp, args.rate_mbit, pairs, txn)
            r["dest_duplicates"], r["dest_missing"] = audit(low, f"{run}.bench", n)
            results.append(r)
            print(f"{run:6} {pairs} pair{'s' if pairs > 1 else ' '} transactions "
                  f"{'on ' if txn else 'off'}  {r['rate']:9.0f} rec/s  "
                  f"{r['rate'] * args.size / 1e6:6.1f} MB/s  ({r['seconds']:.1f} s, "
                  f"{r['records']}/{n} records, {r['lost']} lost, {r['duplicates_dropped']} "
                  f"duplicates dropped, {r['commits']} commits, {r['aborts']} aborts; in the "
                  f"destination: {r['dest_duplicates']} duplicates, {r['dest_missing']} "
                  "missing)",
                  flush=True)
    finally:
        high.stop()
        low.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    rate = {r["run"]: r["rate"] for r in results}
    print(f"ratio  transactions on / off (one pair)       = {rate['txn1'] / rate['idem1']:.2f}"
          f"  (again: {rate['txn1b'] / rate['idem1']:.2f})")
    print(f"ratio  two pairs / one pair (transactions on) = {rate['txn2'] / rate['txn1']:.2f}"
          f"  (against the repeat: {rate['txn2'] / rate['txn1b']:.2f})")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
