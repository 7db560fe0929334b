"""What the Kafka clients alone cost per record: the floor under the CPU of any Kafka ->
diode -> Kafka path built on librdkafka, ddc's included.

    python -m benchmarks.client_floor [--version 4.4.0] [--records 300000] [--size 1024]
                                      [--rounds 2]

Starts one real Apache Kafka broker (tests/kafka/broker.py) and fills a 3-partition topic
with --records records (kafka_bench's fill: distinct, incompressible values, a key, one
header). Then, alternated over --rounds rounds, each alone in its own process:

- python consume: confluent-kafka's consumer with the ddc Kafka source's settings,
  consume(1000) until every record was read (nothing else done with them);
- python produce: confluent-kafka's idempotent producer with kafka_bench's sink settings
  (acks=all, lz4, linger.ms=5, batch.size 1 MB), produce() of each record (a value, a key,
  a partition) and a final flush(): every record acknowledged;
- kcat -C and kcat -P (if kcat is installed), the two halves of kafka_bench's C
  baseline: -C to a file, -P of that file to a topic of its own.

Prints CPU microseconds per record of each process (user + system: librdkafka's threads
included; the Python processes' start and imports excluded, their clock starts once
their client is connected) and the sums consume + produce, the least a consume ->
produce pair can spend per record on this machine. A benchmark prints figures; it does
not pass or fail.
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

from benchmarks.kafka_bench import PARTS, SINK, SOURCE, fill
from tests.kafka.broker import KafkaBroker, KafkaBrokerError, KafkaSetupError, read_versions

# Run in a child process (python -c), so each client's CPU is its process's alone. It
# prints the CPU seconds from the moment its client is connected to the last record.
CONSUME = """
import json, resource, sys
from confluent_kafka import Consumer
bootstrap, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
source = json.loads(sys.argv[4])
c = Consumer({"bootstrap.servers": bootstrap, "group.id": "floor-" + topic + sys.argv[5],
              **source})
c.subscribe([topic])
got = len(c.consume(1, 30))  # connected and assigned before the clock starts
r0 = resource.getrusage(resource.RUSAGE_SELF)
while got < n:
    got += len(c.consume(1000, 1.0))
r1 = resource.getrusage(resource.RUSAGE_SELF)
print((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), n - 1)
c.close()
"""

PRODUCE = """
import json, os, resource, sys
from confluent_kafka import Producer
bootstrap, topic, n, size, sink = (sys.argv[1], sys.argv[2], int(sys.argv[3]),
                                   int(sys.argv[4]), json.loads(sys.argv[5]))
p = Producer({"bootstrap.servers": bootstrap, **sink})
pool = os.urandom(1 << 22)
values = [pool[i * 4099 % (len(pool) - size):][:size] for i in range(1024)]
p.produce(topic, b"warm-up")
p.flush(30)  # connected, producer id assigned
r0 = resource.getrusage(resource.RUSAGE_SELF)
for i in range(n):
    while True:
        try:
            p.produce(topic, values[i % 1024], b"%012d" % i, i % PARTS)
            break
        except BufferError:
            p.poll(0.01)
p.flush(120)
r1 = resource.getrusage(resource.RUSAGE_SELF)
print((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), n)
""".replace("PARTS", str(PARTS))


def python_child(script: str, *args: object) -> float:
    """CPU microseconds per record the child printed."""
    out = subprocess.run([sys.executable, "-c", script, *map(str, args)], check=True,
                         capture_output=True, text=True, timeout=600).stdout.split()
    return float(out[0]) / int(out[1]) * 1e6


def kcat_child(args: list[str], n: int, stdin=None, stdout=None) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(args, stdin=stdin, stdout=stdout, check=True, timeout=600)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)) / n * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", default=read_versions()[-1])
    ap.add_argument("--records", type=int, default=300_000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    if args.records < 1 or args.size < 1 or args.rounds < 1:
        ap.error("--records, --size and --rounds must be positive")
    kcat = shutil.which("kcat")
    if kcat is None:
        print("kcat is not installed (apt-get install kcat): no C halves", flush=True)
    tmp = tempfile.mkdtemp(prefix="ddc-client-floor-")
    n = args.records
    broker = KafkaBroker(args.version, os.path.join(tmp, "kafka"), heap="1g", quick_jit=False,
                         extra_properties={"log.retention.bytes": -1,
                                           "log.segment.bytes": 512 * 1024 * 1024})
    try:
        broker.start()
        broker.create_topic("src", partitions=PARTS)
        fill(broker, "src", n, args.size)
        print(f"{n} records of {args.size} B on Kafka {args.version}, one broker", flush=True)
        lines = os.path.join(tmp, "lines")
        for rnd in range(1, args.rounds + 1):
            figures = {"python consume": python_child(CONSUME, broker.bootstrap, "src", n,
                                                      json.dumps(SOURCE), rnd)}
            broker.create_topic(f"py-{rnd}", partitions=PARTS)
            figures["python produce"] = python_child(PRODUCE, broker.bootstrap, f"py-{rnd}", n,
                                                     args.size, json.dumps(SINK))
            if kcat:
                with open(lines, "wb") as out:
                    figures["kcat -C"] = kcat_child(
                        [kcat, "-C", "-b", broker.bootstrap, "-t", "src", "-o", "beginning",
                         "-e", "-q", "-f", "%k\t%s\n"], n, stdout=out)
                broker.create_topic(f"kcat-{rnd}", partitions=PARTS)
                with open(lines, "rb") as inp:
                    figures["kcat -P"] = kcat_child(
                        [kcat, "-P", "-b", broker.bootstrap, "-t", f"kcat-{rnd}", "-K", "\t",
                         "-z", "lz4", "-X", "enable.idempotence=true", "-X", "acks=all",
                         "-X", "linger.ms=5", "-X", "batch.size=1000000"], n, stdin=inp)
            print(f"round {rnd}: " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()) +
                  " us/record")
            line = (f"  consume + produce: python "
                    f"{figures['python consume'] + figures['python produce']:.2f} us/record")
            if kcat:
                line += f", kcat {figures['kcat -C'] + figures['kcat -P']:.2f} us/record"
            print(line, flush=True)
    except (KafkaSetupError, KafkaBrokerError, subprocess.SubprocessError) as exc:
        print(f"client_floor: {exc}", file=sys.stderr)
        return 1
    finally:
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
