"""The egress's Kafka sink alone: ddc's transactional sink writing records to a real broker
one by one (write(): the egress's way for a batch a filter decides record by record) and a
batch at a time (write_batch(): its way for a batch without filtered records), alternated.

    python -m benchmarks.sink_bench [--version 4.4.0] [--records 200000] [--size 1024]
                                    [--batch 1000] [--rounds 2]

Starts one real Apache Kafka broker (tests/kafka/broker.py). Each round and way writes
--records records (distinct, incompressible values, a key, one header, 3 partitions,
consecutive offsets as the egress hands them) to a topic of its own through a new sink,
and stops the clock when close() has committed the last transaction: the records are
then in Kafka. Prints records/s, CPU microseconds per record of the writing thread
(time.thread_time: the sink's Python and the produce() calls) and of the whole process
(librdkafka's threads too), and batch / one by one from the same round. Without the link
and the consumer, this isolates what the sink costs per record (docs/performance.md).
A benchmark prints figures; it does not pass or fail.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import shutil
import sys
import tempfile
import time

from appliance.channels.base import ChannelContext
from appliance.channels.kafka import SinkOptions, TransactionalKafkaSink
from appliance.protocol.records import Record
from appliance.schema import options_of
from tests.kafka.broker import KafkaBroker, KafkaBrokerError, KafkaSetupError, read_versions

PARTS = 3
WAYS = ("one by one", "as a batch")


def make_records(n: int, size: int, topic: str) -> list[Record]:
    pool = os.urandom(1 << 22)
    span = len(pool) - size
    now_ms = int(time.time() * 1000)
    headers: list[tuple[str, bytes | None]] = [("trace", b"bench")]
    return [Record(pool[(i * 7919) % span:(i * 7919) % span + size], b"%012d" % i, headers,
                   topic, i % PARTS, i // PARTS, i // PARTS - 1, now_ms, 0, True)
            for i in range(n)]


def process_cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def run_way(broker: KafkaBroker, state_dir: str, channel_id: int, name: str,
            records: list[Record], way: str, batch: int) -> dict:
    broker.create_topic(f"{name}.{records[0].topic}", partitions=PARTS)
    # A channel id of its own: the broker's positions topic is shared, and a sink that
    # found the same channel's positions there would take the records for resends.
    ctx = ChannelContext(channel_id, name, os.path.join(state_dir, name), 1 << 20)
    opts = options_of(SinkOptions, {"bootstrap_servers": broker.bootstrap,
                                    "topic_prefix": f"{name}."})
    sink = TransactionalKafkaSink(opts, ctx)  # its setup (topic, producer id) is not timed
    try:
        cpu0, thread0, t0 = process_cpu(), time.thread_time(), time.monotonic()
        if way == "as a batch":
            for i in range(0, len(records), batch):
                sink.write_batch(records[i:i + batch])
        else:
            for record in records:
                sink.write(record)
        ctx.stopping.set()  # close() commits what is open, once
    finally:
        sink.close()
    elapsed = time.monotonic() - t0
    thread, cpu = time.thread_time() - thread0, process_cpu() - cpu0
    n = len(records)
    return {"rec_s": n / elapsed, "thread_us": thread / n * 1e6, "process_us": cpu / n * 1e6,
            "delivered": sink.delivered, "not_delivered": n - sink.delivered}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version", default=read_versions()[-1])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=1024, help="value size in bytes")
    ap.add_argument("--batch", type=int, default=1000, help="records per write_batch()")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    if min(args.records, args.size, args.batch, args.rounds) < 1:
        ap.error("--records, --size, --batch and --rounds must be positive")
    tmp = tempfile.mkdtemp(prefix="ddc-sink-bench-")
    broker = None
    try:
        broker = KafkaBroker(args.version, os.path.join(tmp, "broker"), name="sink-bench",
                             heap="1g", quick_jit=False)
        broker.start()
        records = make_records(args.records, args.size, "src")
        # Out of the collector's sight: the egress never holds a whole run's records (they
        # come from the link a batch at a time), and each collection here would walk them
        # all, a cost that belongs to this benchmark, not to the sink.
        gc.freeze()
        print(f"{args.records} records of {args.size} B, batches of {args.batch}, "
              f"Kafka {args.version}", flush=True)
        for r in range(1, args.rounds + 1):
            got = {}
            for way in WAYS:
                name = f"r{r}-{way.replace(' ', '-')}"
                channel_id = len(WAYS) * (r - 1) + len(got) + 1
                got[way] = res = run_way(broker, tmp, channel_id, name, records, way,
                                         args.batch)
                print(f"  round {r} {way:10}  {res['rec_s']:9,.0f} rec/s  "
                      f"thread {res['thread_us']:5.2f} us/record  "
                      f"process {res['process_us']:5.2f} us/record  "
                      f"{res['delivered']} delivered, {res['not_delivered']} not", flush=True)
            one, bat = got["one by one"], got["as a batch"]
            print(f"  round {r} batch / one by one: rec/s {bat['rec_s'] / one['rec_s']:.2f}, "
                  f"thread CPU {bat['thread_us'] / one['thread_us']:.2f}, "
                  f"process CPU {bat['process_us'] / one['process_us']:.2f}", flush=True)
    except (KafkaSetupError, KafkaBrokerError) as exc:
        print(f"sink_bench: {exc}", file=sys.stderr)
        return 1
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
