"""`ddc bench`: link goodput of the real daemons against raw UDP (iperf3) in the same run.

Two `ddc run` processes on loopback, each pinned to its own core: an ingress with a
generator channel (records of --size bytes, as fast as the link takes them) and an
egress with a verifying null sink. FEC and AES-GCM are on. The figures are read from
the egress's status file over a steady-state window, CPU and peak RSS from /proc via
psutil. The baseline is `iperf3 -u -b 0 -l <datagram size>` between the same
loopback endpoints for the same time: what raw UDP moves with no FEC, no crypto and
no framing. Benchmarks print figures; they do not pass or fail.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import psutil

from ..protocol.wire import max_datagram
from .scratch import free_udp_port, link_key, node_config, write_config


def bench_configs(tmp: str, size: int, redundancy: float, mtu: int, mode: str,
                  rate_mbit: float, values: str = "pattern",
                  compression: str = "none", rate_records: float = 0.0) -> tuple[str, str]:
    """The egress's and the ingress's config files in tmp (and their link key): a
    generator channel into a verifying null sink, each daemon on its own core."""
    key = link_key(tmp)
    port = free_udp_port()
    ncpu = os.cpu_count() or 1
    link = f"""mtu = {mtu}
mode = "{mode}"
fec_redundancy_percent = {redundancy}
rate_mbit = {rate_mbit}
rate_records = {rate_records}
"""
    zstd = f'compression = "{compression}"\n' if compression != "none" else ""
    egress = node_config(
        "egress", key, f'bind = "127.0.0.1:{port}"\n{link}', "null",
        f'verify = true\nsize = {size}\nvalues = "{values}"', name="bench-egress",
        state_dir=f"{tmp}/egress", metrics="interval = 0.5", channel_name="bench",
        extra="[tuning]\n" + ("link_cpu = 1" if ncpu > 1 else ""))
    ingress = node_config(
        "ingress", key, f'peer = "127.0.0.1:{port}"\n{link}{zstd}', "generator",
        f'size = {size}\nvalues = "{values}"', name="bench-ingress",
        state_dir=f"{tmp}/ingress", metrics="interval = 0.5", channel_name="bench",
        extra="[tuning]\nlink_cpu = 0\nqueue_records = 2000")
    return (write_config(os.path.join(tmp, "egress.toml"), egress),
            write_config(os.path.join(tmp, "ingress.toml"), ingress))


def _status(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class _Watched:
    def __init__(self, args: list[str]):
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.ps = psutil.Process(self.proc.pid)
        self.peak_rss = 0

    def sample(self) -> None:
        try:
            self.peak_rss = max(self.peak_rss, self.ps.memory_info().rss)
        except psutil.Error:
            pass

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err.decode(errors="replace")


def measure_ddc(seconds: float, size: int, redundancy: float, mtu: int, mode: str,
                rate_mbit: float = 0.0, values: str = "pattern",
                compression: str = "none", rate_records: float = 0.0) -> dict:
    """Goodput of a generator -> null pair of real daemons on loopback. values: the
    generator's (channels/generator.py VALUES); compression: link.compression;
    rate_mbit, rate_records: the ingress's pacing (0: unpaced)."""
    tmp = tempfile.mkdtemp(prefix="ddc-bench-")
    egress_cfg, ingress_cfg = bench_configs(tmp, size, redundancy, mtu, mode, rate_mbit,
                                            values, compression, rate_records)
    ingress_status = os.path.join(tmp, "ingress", "status.json")
    cmd = [sys.executable, "-m", "appliance.cli", "run", "--config"]
    egress = _Watched(cmd + [egress_cfg])
    status_path = os.path.join(tmp, "egress", "status.json")
    # The egress listens once it has written its first status (a fixed pause raced its
    # start-up on a loaded machine: the ingress's first datagrams met a closed port).
    ready_by = time.monotonic() + 30
    while not os.path.exists(status_path) and egress.proc.poll() is None and \
            time.monotonic() < ready_by:
        time.sleep(0.05)
    ingress = _Watched(cmd + [ingress_cfg])
    warmup = min(2.0, seconds / 4)
    t_end = time.monotonic() + warmup + seconds
    first = None
    last = None
    while time.monotonic() < t_end:
        time.sleep(0.1)
        egress.sample()
        ingress.sample()
        st = _status(status_path)
        if st is None or ingress.proc.poll() is not None or egress.proc.poll() is not None:
            continue
        if first is None and time.monotonic() > t_end - seconds:
            first = (st, egress.cpu(), ingress.cpu())
        last = (st, egress.cpu(), ingress.cpu())
    errors = (ingress.proc.poll(), egress.proc.poll())
    ing_err = ingress.stop()
    time.sleep(0.5)
    eg_err = egress.stop()
    if first is None or last is None or last[0]["updated"] <= first[0]["updated"]:
        raise RuntimeError(f"bench daemons did not report (exit codes {errors}): "
                           f"{(ing_err + eg_err).strip().splitlines()[-1:] or ''}")
    st0, st1 = first[0], last[0]
    dt = st1["updated"] - st0["updated"]
    records = st1["records_delivered"] - st0["records_delivered"]
    packets = st1["packets_received"] - st0["packets_received"]
    sink0, sink1 = (x["channels"]["bench"]["sink"] for x in (st0, st1))
    value_bytes = sink1["null.bytes"] - sink0["null.bytes"]  # (JSON logs vary in size)
    goodput = value_bytes / dt
    cpu_egress, cpu_ingress = last[1] - first[1], last[2] - first[2]
    cpu = cpu_egress + cpu_ingress
    final = _status(status_path) or st1
    ing = _status(ingress_status) or {}
    result = {
        "wire_MBps": packets * max_datagram(mtu) / dt / 1e6,
        "compression_ratio": ing.get("compression_ratio"),
        "goodput_MBps": goodput / 1e6, "records_per_s": records / dt, "packets_per_s": packets / dt,
        "cpu_s_per_GB": cpu / max(value_bytes / 1e9, 1e-9), "window_s": dt,
        # CPU per record delivered in the window, each daemon (user + system time)
        "ingress_cpu_us_per_record": cpu_ingress / max(records, 1) * 1e6,
        "egress_cpu_us_per_record": cpu_egress / max(records, 1) * 1e6,
        "egress_peak_rss_MB": egress.peak_rss / 1e6, "ingress_peak_rss_MB": ingress.peak_rss / 1e6,
        "records_lost": final.get("records_lost", 0), "fec_recovered": final.get("fec_recovered"),
        "kernel_drops": final.get("kernel_drops"), "blocks_lost": final.get("blocks_lost"),
        "mismatches": final["channels"]["bench"]["sink"].get("null.mismatches"),
    }
    shutil.rmtree(tmp, ignore_errors=True)
    return result


class BaselineError(Exception):
    """The raw-UDP baseline could not be measured (the ddc figures stand without it)."""


def measure_iperf3(exe: str, seconds: float, datagram: int) -> dict:
    """iperf3 (the executable at exe) -u -b 0 on loopback: what it received."""
    port = free_udp_port()
    server = subprocess.Popen([exe, "-s", "-1", "-p", str(port), "-B", "127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        out = subprocess.run([exe, "-c", "127.0.0.1", "-p", str(port), "-u", "-b", "0",
                              "-l", str(datagram), "-t", str(max(1, round(seconds))), "-J"],
                             capture_output=True, text=True, timeout=seconds + 30)
        data = json.loads(out.stdout)
    except subprocess.TimeoutExpired:
        raise BaselineError(f"iperf3 gave no result within {seconds + 30:g} s") from None
    except ValueError:  # no JSON: iperf3 failed before it could report
        raise BaselineError(f"iperf3 exited {out.returncode}: "
                            f"{(out.stderr or out.stdout).strip()[:200]}") from None
    finally:
        server.kill()
        server.wait()
    if "error" in data:
        raise BaselineError(f"iperf3: {data['error']}")
    s = data["end"]["sum"]
    received = (s["packets"] - s["lost_packets"]) * datagram
    return {"received_MBps": received / s["seconds"] / 1e6,
            "packets_per_s": (s["packets"] - s["lost_packets"]) / s["seconds"],
            "lost_percent": s["lost_percent"], "datagram": datagram}


def lossless(result: dict) -> bool:
    """Every record of the run arrived: none lost, none dropped by the egress's kernel."""
    return not result["records_lost"] and not result["kernel_drops"] and not result["mismatches"]


# The safe-rate search: the first try is just under what the egress absorbed unpaced,
# each next one this much lower.
SAFE_START, SAFE_STEP, SAFE_TRIES = 0.95, 0.85, 6


def find_safe_rate(seconds: float, size: int, redundancy: float, mtu: int, mode: str,
                   rate_mbit: float, values: str, compression: str,
                   say=print) -> tuple[float | None, dict, list[tuple[float, dict]]]:
    """The highest link.rate_records (of a few tries) at which the egress on this machine
    lost nothing for records of `size` bytes. First an unpaced run: what the egress took
    in while the sender outran it; then paced runs from just under that, stepping down.
    Returns (rate or None if no try was lossless, the unpaced run, the tries)."""
    unpaced = measure_ddc(seconds, size, redundancy, mtu, mode, rate_mbit, values, compression)
    say(f"safe rate: unpaced {unpaced['records_per_s']:.0f} rec/s delivered, "
        f"{unpaced['records_lost']} lost, {unpaced['kernel_drops']} kernel drops")
    tries: list[tuple[float, dict]] = []
    if lossless(unpaced):
        return None, unpaced, tries  # the sender is the limit: any rate_records is safe
    rate = float(int(unpaced["records_per_s"] * SAFE_START))
    for _ in range(SAFE_TRIES):
        r = measure_ddc(seconds, size, redundancy, mtu, mode, rate_mbit, values, compression,
                        rate_records=rate)
        tries.append((rate, r))
        say(f"safe rate: rate_records {rate:.0f}: {r['records_per_s']:.0f} rec/s delivered, "
            f"{r['records_lost']} lost, {r['kernel_drops']} kernel drops")
        if lossless(r):
            return rate, unpaced, tries
        rate = float(int(rate * SAFE_STEP))
    return None, unpaced, tries


def run_bench(seconds: float = 10.0, size: int = 8192, redundancy: float = 5.0,
              mtu: int = 1500, baseline: bool = True, mode: str = "encrypt",
              as_json: bool = False, rate_mbit: float = 0.0, values: str = "pattern",
              compression: str = "none", rate_records: float = 0.0,
              find_safe: bool = False) -> int:
    datagram = max_datagram(mtu)
    paced = []
    if rate_mbit:
        paced.append(f"{rate_mbit:g} Mbit/s")
    if rate_records:
        paced.append(f"{rate_records:g} records/s")
    pacing = f"paced at {', '.join(paced)}" if paced else "unpaced, like iperf3 -b 0"
    if find_safe:
        pacing = "searching the highest lossless rate_records" + \
            (f" at {rate_mbit:g} Mbit/s" if rate_mbit else "")
    say = (lambda *a: None) if as_json else (lambda line: print(line, flush=True))
    # (to stderr with --json, whose stdout is the JSON alone)
    note = (lambda line: print(line, file=sys.stderr, flush=True)) if as_json else say
    say(f"ddc bench: {size}-byte records, MTU {mtu} ({datagram}-byte datagrams), "
        f"{redundancy:g}% FEC, AES-256-GCM {mode}, {pacing}, {seconds:g} s per run, "
        f"{os.cpu_count()} CPUs")
    if values != "pattern" or compression != "none":
        say(f"ddc bench: values {values}, link.compression {compression}")
    iperf3 = shutil.which("iperf3") if baseline else None
    if baseline and iperf3 is None:
        # An appliance host is offline and has no iperf3; it is where the safe rate is
        # found, so the figures go on without the baseline rather than end in an error.
        note("ddc bench: iperf3 is not installed (apt-get install iperf3): no raw-UDP "
             "baseline, ddc's figures alone")
    safe = None
    if find_safe:
        safe, ddc, tries = find_safe_rate(seconds, size, redundancy, mtu, mode, rate_mbit,
                                          values, compression, say)
        if safe is not None:
            ddc = tries[-1][1]  # the lossless run is the one to show
    else:
        ddc = measure_ddc(seconds, size, redundancy, mtu, mode, rate_mbit, values, compression,
                          rate_records=rate_records)
    raw, failed = None, None
    if iperf3 is not None:
        try:
            raw = measure_iperf3(iperf3, seconds, datagram)
        except BaselineError as exc:
            failed = f"ddc: error: the raw-UDP baseline: {exc}"
    ratio = ddc["goodput_MBps"] / raw["received_MBps"] if raw else None
    if as_json:
        out = {"ddc": ddc, "iperf3": raw, "ratio": ratio}
        if find_safe:
            out["safe_rate_records"] = safe
        print(json.dumps(out, indent=2))
    else:
        _print_report(ddc, raw, ratio, datagram, size, find_safe, safe)
    if failed:  # the figures above stand; the comparison asked for is missing
        print(failed, file=sys.stderr)
        return 1
    return 0


def _print_report(ddc: dict, raw: dict | None, ratio: float | None, datagram: int,
                  size: int, find_safe: bool, safe: float | None) -> None:
    print(f"ddc     goodput {ddc['goodput_MBps']:8.1f} MB/s  {ddc['records_per_s']:9.0f} rec/s  "
          f"{ddc['packets_per_s']:9.0f} pkt/s  {ddc['cpu_s_per_GB']:.2f} CPU-s/GB  "
          f"peak RSS ingress {ddc['ingress_peak_rss_MB']:.0f} MB, egress "
          f"{ddc['egress_peak_rss_MB']:.0f} MB")
    print(f"        CPU per record: ingress {ddc['ingress_cpu_us_per_record']:.2f} us, egress "
          f"{ddc['egress_cpu_us_per_record']:.2f} us")
    print(f"        records lost {ddc['records_lost']}, values failing verification "
          f"{ddc['mismatches']}, blocks repaired by FEC {ddc['fec_recovered']}, "
          f"kernel drops {ddc['kernel_drops']}")
    if find_safe:
        if safe is not None:
            print(f"safe    link.rate_records = {safe:.0f} for {size}-byte records on this "
                  f"machine ({ddc['wire_MBps'] * 8:.0f} Mbit/s on the wire, lossless)")
        elif lossless(ddc):
            print("safe    unpaced was lossless: the sender is the limit here, any "
                  "rate_records is safe")
        else:
            print(f"safe    none of the {SAFE_TRIES} rates tried was lossless; lower "
                  "rate_mbit or try a longer --seconds")
    if raw:
        print(f"iperf3  received {raw['received_MBps']:8.1f} MB/s  {raw['packets_per_s']:9.0f} "
              f"pkt/s  ({raw['lost_percent']:.1f}% lost)  -u -b 0 -l {datagram}")
        print(f"ratio   ddc / raw UDP = {ratio:.2f}")
