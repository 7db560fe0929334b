"""The egress under a forged flood, against the same egress without it (issue 12 item 7).

    python -m benchmarks.forged_flood [--rate 20000] [--hostile 1000000] [--per-real 3]

A real `ddc run` egress (null sink verifying every value, link thread pinned to core 1)
receives the same real session twice, each time from a fresh state directory, paced at
--rate real datagrams a second from this process (pinned to core 0):

1. clean: the real datagrams alone;
2. flooded: the same, with --per-real hostile datagrams after each real one until
   --hostile have gone out: replays of earlier datagrams of the session, bit flips and
   truncations of real ones, garbage, and datagrams under made-up session ids (older
   and newer epochs), in equal shares.

Prints for both runs the goodput (record bytes the sink verified, per second of
sending), the egress's CPU time, its drop counters and kernel drops; the ratio of the
goodputs; and how many records the clean run delivered that the flooded run lost (from
the egress's records_lost lines). Then the decoder alone, in this process, on the same
datagrams in receive batches of 64: CPU time per datagram and the real datagrams a
second one core sustains, clean and flooded (on a loaded machine the daemons' figures
show the scheduler as much as the egress; CPU time does not). A benchmark prints
figures; it does not pass or fail.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import psutil

from appliance.channels.generator import pattern
from appliance.config import load
from appliance.node import read_key
from appliance.protocol import wire
from appliance.protocol.auth import new_session_id
from appliance.protocol.encoder import LinkEncoder, LinkSettings
from appliance.protocol.records import Record
from appliance.tools.bench import bench_configs

SIZE = 1024  # bytes per record
HEARTBEAT_EVERY = 0.5  # seconds of schedule between two heartbeats of the real session


def real_session(psk: bytes, rate: int, datagrams: int) -> list[bytes]:
    """A session's datagrams as the ingress would send them, heartbeats included."""
    enc = LinkEncoder(LinkSettings(mtu=1500, redundancy=0.05), psk,
                      new_session_id(int(time.time() * 1000)))
    values = [pattern(i, SIZE) for i in range(1024)]
    out: list[bytes] = []
    seq = 0
    next_hb = 0
    while len(out) < datagrams:
        for _ in range(64):
            seq += 1
            enc.add(1, Record(value=values[(seq - 1) % 1024], key=seq.to_bytes(8, "big"),
                              topic="synthetic", offset=seq))
        out += enc.take_datagrams()
        if len(out) >= next_hb:
            out += enc.heartbeat(int(time.time() * 1000), int(HEARTBEAT_EVERY * 1000))
            next_hb = len(out) + int(rate * HEARTBEAT_EVERY)
    out += enc.flush()
    return out + enc.heartbeat(int(time.time() * 1000) + 1, int(HEARTBEAT_EVERY * 1000))


def hostile_pool(real: list[bytes], n: int, seed: int = 1) -> list[bytes]:
    """n forged datagrams: bit flips, truncations, garbage, made-up sessions; replays are
    picked from the real stream as it is sent."""
    rng = random.Random(seed)
    epoch = int.from_bytes(real[0][wire.SESSION_EPOCH])
    out = []
    for i in range(n):
        d = bytearray(rng.choice(real[:5000]))
        kind = i % 4
        if kind == 0:
            d[rng.randrange(len(d))] ^= 1 << rng.randrange(8)
        elif kind == 1:
            d = d[:rng.randrange(len(d))]
        elif kind == 2:
            d = bytearray(rng.randbytes(rng.randrange(1, 1472)))
        else:
            e = epoch + rng.randrange(-10**9, 10**9)
            d[wire.SESSION_ID] = (e << 64 | rng.getrandbits(64)).to_bytes(16, "big")
        out.append(bytes(d))
    return out


def run_egress(real: list[bytes], rate: int, hostile: int, per_real: int, pool: list[bytes],
               cfg_dir: str) -> dict:
    tmp = tempfile.mkdtemp(prefix="ddc-flood-")
    egress_cfg = os.path.join(tmp, "egress.toml")
    shutil.copyfile(os.path.join(cfg_dir, "egress.toml"), egress_cfg)
    with open(egress_cfg) as f:
        text = f.read().replace(cfg_dir, tmp)
    with open(egress_cfg, "w") as f:
        f.write(text)
    shutil.copyfile(os.path.join(cfg_dir, "link.key"), os.path.join(tmp, "link.key"))
    os.chmod(os.path.join(tmp, "link.key"), 0o600)
    cfg = load(egress_cfg)
    log_path = os.path.join(tmp, "egress.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "appliance.cli", "run", "--config",
                                 egress_cfg, "--log-stderr"], stdout=subprocess.DEVNULL,
                                stderr=log)
    try:
        ps = psutil.Process(proc.pid)
        _wait_for(log_path, '"started"')
        cpu0 = sum(ps.cpu_times()[:2])
        sent_hostile, elapsed = _send(real, rate, hostile, per_real, pool, cfg.link.bind.tuple)
        status = _settle(cfg.status_file)
        cpu = sum(ps.cpu_times()[:2]) - cpu0
    finally:
        proc.terminate()
        proc.wait(15)
    lost = set()
    with open(log_path) as f:
        for line in f:
            ev = json.loads(line) if line.startswith("{") else {}
            if ev.get("event") == "records_lost":
                lost.update(range(ev["first_offset"], ev["last_offset"] + 1))
    sink = status["channels"]["bench"]["sink"]
    result = {"elapsed_s": elapsed, "hostile_sent": sent_hostile, "egress_cpu_s": cpu,
              "records_verified": sink["null.records"] - sink["null.mismatches"],
              "mismatches": sink["null.mismatches"], "lost": lost,
              "dropped": status["dropped"], "kernel_drops": status["kernel_drops"]}
    result["goodput_MBps"] = result["records_verified"] * SIZE / elapsed / 1e6
    if os.environ.get("DDC_FLOOD_KEEP"):
        print(f"(kept {tmp})")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def _wait_for(path: str, needle: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path) as f:
            if needle in f.read():
                return
        time.sleep(0.05)
    with open(path) as f:
        raise RuntimeError(f"the egress did not start: {f.read()[-500:]}")


def _send(real, rate, hostile, per_real, pool, target) -> tuple[int, float]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    send = s.sendto
    every = (1 + per_real) * 32 if hostile else 32  # datagrams per pacing decision
    sent = 0
    start = time.monotonic()
    for sent, d in enumerate(interleave(real, pool, hostile, per_real), 1):
        send(d, target)
        if sent % every == 0:
            ahead = (sent // (1 + per_real if hostile else 1)) / rate - \
                (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    elapsed = time.monotonic() - start
    s.close()
    return (sent - len(real) if hostile else 0), elapsed


def _settle(status_file: str) -> dict:
    """The status once the egress has delivered all it will (two reports alike)."""
    last = None
    for _ in range(60):
        time.sleep(0.6)
        with open(status_file) as f:
            st = json.load(f)
        key = (st["records_delivered"], st["records_lost"])
        if last == key:
            return st
        last = key
    return st


def interleave(real: list[bytes], pool: list[bytes], hostile: int, per_real: int):
    """The datagrams in the order the flooded run sends them."""
    rng = random.Random(2)
    sent = 0
    for i, d in enumerate(real):
        yield d
        if sent < hostile:
            for _ in range(per_real):
                if sent % 5 == 4 and i > 100:  # a replay of an earlier datagram
                    yield real[rng.randrange(i - 100)]
                else:
                    yield pool[sent % len(pool)]
                sent += 1


def decoder_cost(psk: bytes, datagrams: list[bytes], real: int, rate: int) -> dict:
    """CPU seconds the protocol core spends on these datagrams, best of three."""
    from appliance.protocol.auth import Opener
    from appliance.protocol.decoder import DecoderSettings, LinkDecoder

    batches = [datagrams[i:i + 64] for i in range(0, len(datagrams), 64)]
    step = 64 / rate / (len(datagrams) / real)  # seconds of schedule per batch
    best = None
    for _ in range(3):
        dec = LinkDecoder(Opener({1: psk}), DecoderSettings())
        t0, now = time.process_time(), 0.0
        for b in batches:
            dec.feed_many(b, now)
            now += step
        dec.tick(now + 10)
        cpu = time.process_time() - t0
        best = cpu if best is None else min(best, cpu)
    return {"cpu_s": best, "us_per_datagram": best / len(datagrams) * 1e6,
            "real_per_s": real / best, "delivered": dec.stats.records_delivered}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=int, default=20_000, help="real datagrams a second")
    p.add_argument("--hostile", type=int, default=1_000_000, help="hostile datagrams in all")
    p.add_argument("--per-real", type=int, default=3, help="hostile datagrams per real one")
    args = p.parse_args(argv)
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})  # the egress's link thread has core 1 (its config)
    cfg_dir = tempfile.mkdtemp(prefix="ddc-flood-cfg-")
    egress_cfg, _ = bench_configs(cfg_dir, SIZE, 5.0, 1500, "encrypt", 0.0)
    psk = read_key(os.path.join(cfg_dir, "link.key"))
    datagrams = args.hostile // args.per_real + 1
    real = real_session(psk, args.rate, datagrams)
    pool = hostile_pool(real, 40_000)
    print(f"forged_flood: {len(real)} real datagrams ({SIZE}-byte records, 5% FEC, "
          f"AES-256-GCM) at {args.rate}/s; flooded run adds {args.hostile} hostile ones, "
          f"{args.per_real} per real one; {os.cpu_count()} CPUs", flush=True)
    clean = run_egress(real, args.rate, 0, args.per_real, pool, cfg_dir)
    flooded = run_egress(real, args.rate, args.hostile, args.per_real, pool, cfg_dir)
    shutil.rmtree(cfg_dir, ignore_errors=True)
    for name, r in (("clean", clean), ("flooded", flooded)):
        drops = ", ".join(f"{k} {v}" for k, v in r["dropped"].items() if v)
        print(f"{name:8} goodput {r['goodput_MBps']:7.1f} MB/s  {r['records_verified']} records "
              f"verified in {r['elapsed_s']:.1f} s, {len(r['lost'])} reported lost, "
              f"{r['mismatches']} mismatches; egress CPU {r['egress_cpu_s']:.1f} s; "
              f"hostile sent {r['hostile_sent']}; kernel drops {r['kernel_drops']}; "
              f"dropped: {drops or 'none'}")
    ratio = flooded["goodput_MBps"] / clean["goodput_MBps"] if clean["goodput_MBps"] else 0.0
    print(f"ratio   flooded / clean goodput = {ratio:.3f}")
    print(f"records the clean run delivered that the flooded run lost: "
          f"{len(flooded['lost'] - clean['lost'])}")
    alone = decoder_cost(psk, real, len(real), args.rate)
    mixed = decoder_cost(psk, list(interleave(real, pool, args.hostile, args.per_real)),
                         len(real), args.rate)
    for name, r in (("clean", alone), ("flooded", mixed)):
        print(f"decoder {name:8} {r['us_per_datagram']:5.2f} us CPU per datagram, "
              f"{r['cpu_s']:.2f} s in all: one core sustains {r['real_per_s']:8.0f} real "
              f"datagrams/s ({r['delivered']} records)")
    print(f"        the flood costs {(mixed['cpu_s'] - alone['cpu_s']) / args.hostile * 1e6:.2f} "
          f"us CPU per hostile datagram; at {args.rate}/s real and {args.per_real} hostile per "
          f"real one the egress needs {mixed['cpu_s'] / alone['cpu_s'] * 100:.0f}% of its "
          f"clean CPU, {mixed['cpu_s'] * args.rate / len(real) * 100:.0f}% of one core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
