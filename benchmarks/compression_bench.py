"""Link compression: records/s through a link paced at 100 Mbit/s, zstd on against off,
in the same run, with real `ddc run` daemons on loopback.

    .venv/bin/python -m benchmarks.compression_bench [--seconds 8] [--rate-mbit 100]
                                                     [--level 3]

Four runs of `appliance.tools.bench.measure_ddc` (a generator channel -> ingress -> paced UDP
link, FEC and AES-256-GCM -> egress -> null sink that verifies every value):

1. JSON log records (channels/generator.py json_log: 670-735 bytes, structured logs
   with Kubernetes metadata, deterministic, 8192 distinct), link.compression off;
2. the same with link.compression = "zstd";
3. incompressible values (random, --random-size bytes), off;
4. the same with zstd: the cost of trying (blocks that do not shrink go as they are).

Prints records/s, goodput (value bytes), the wire's MB/s, the ingress's compression
ratio, losses and verification failures, and the ratio zstd / off per corpus. The bar
(issue 17): JSON logs through a 100 Mbit/s link, at least 3x the records/s with zstd.
A benchmark prints figures; it does not pass or fail.
"""

from __future__ import annotations

import argparse
import os

from appliance.tools.bench import measure_ddc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rate-mbit", type=float, default=100.0)
    ap.add_argument("--random-size", type=int, default=1024)
    ap.add_argument("--redundancy", type=float, default=5.0)
    args = ap.parse_args()
    print(f"compression_bench: link paced at {args.rate_mbit:g} Mbit/s, MTU 1500, "
          f"{args.redundancy:g}% FEC, AES-256-GCM, {args.seconds:g} s per run, "
          f"{os.cpu_count()} CPUs", flush=True)
    results = {}
    for values, size in (("json-logs", 0), ("random", args.random_size)):
        for compression in ("none", "zstd"):
            r = measure_ddc(args.seconds, size, args.redundancy, 1500, "encrypt",
                            args.rate_mbit, values, compression)
            results[(values, compression)] = r
            ratio = r["compression_ratio"]
            print(f"{values:9s} {compression:4s}  {r['records_per_s']:9.0f} rec/s  goodput "
                  f"{r['goodput_MBps']:6.1f} MB/s  wire {r['wire_MBps']:5.1f} MB/s  "
                  f"compression {ratio if ratio is not None else float('nan'):5.2f}x  "
                  f"lost {r['records_lost']}  mismatches {r['mismatches']}  "
                  f"kernel drops {r['kernel_drops']}  "
                  f"{r['cpu_s_per_GB']:.1f} CPU-s/GB", flush=True)
    for values in ("json-logs", "random"):
        off, on = results[(values, "none")], results[(values, "zstd")]
        print(f"ratio {values}: zstd / off = "
              f"{on['records_per_s'] / max(off['records_per_s'], 1e-9):.2f}x records/s")


if __name__ == "__main__":
    main()
