"""python -m tests.chaos --variant kafka|udp --faults N --seed S: one chaos run, its
table, exit status 1 on any violation (docs/reliability.md)."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tests.kafka.broker import KafkaSetupError, check_prerequisites, read_versions

from .runner import ChaosRun


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    ap.add_argument("--variant", choices=("udp", "kafka"), required=True)
    ap.add_argument("--faults", type=int, default=20, help="faults in the schedule")
    ap.add_argument("--seed", type=int, default=1, help="seed of the fault schedule")
    ap.add_argument("--kafka-version", default=read_versions()[-1],
                    help="Kafka broker version for both sides (default: the newest tested)")
    ap.add_argument("--rate", type=float, help="records per second of load")
    ap.add_argument("--workdir", type=Path, help="configs, logs, result.json (kept)")
    args = ap.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix=f"ddc-chaos-{args.variant}-"))
    factory = pair = None
    if args.variant == "kafka":
        try:
            check_prerequisites(args.kafka_version)
        except KafkaSetupError as exc:
            print(f"python -m tests.chaos: {exc}", file=sys.stderr)
            return 2
        from tests.kafka.fixtures import KafkaPairFactory

        factory = KafkaPairFactory(workdir / "kafka", sasl_scram=False)
    try:
        if factory is not None:
            pair = factory(args.kafka_version)
        verdict = ChaosRun(args.variant, args.faults, args.seed, workdir, kafka_pair=pair,
                           rate=args.rate, out=lambda s: print(s, flush=True)).run()
    finally:
        if factory is not None:
            factory.close()
    print(f"logs and result.json in {workdir}")
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
