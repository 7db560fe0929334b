"""The `ddc` command line: run, check-config, keygen, accept-session, demo, bench, status."""

from __future__ import annotations

import argparse
import gc
import os
import sys
from importlib import metadata

from .config import MTU_RANGE, ConfigError, load

# sysexits.h EX_CONFIG: the configuration is wrong. ddc@.service lists it in
# RestartPreventExitStatus=, so systemd does not restart a daemon into the same bad file.
EX_CONFIG = 78


def package_version() -> str:
    """The installed distribution's version (the wheel's metadata, from pyproject.toml)."""
    try:
        return metadata.version("ddc-appliance")
    except metadata.PackageNotFoundError:  # a bare source tree on sys.path
        return "unknown (not installed)"


def _die(message: str, code: int = 2) -> int:
    print(f"ddc: error: {message}", file=sys.stderr)
    return code


def cmd_check_config(args) -> int:
    bad = 0
    for path in args.files:
        try:
            cfg = load(path, check_files=not args.no_files)
        except ConfigError as exc:
            for line in exc.problems:
                print(line, file=sys.stderr)
            bad += 1
            continue
        if not args.quiet:
            print(f"{path}: ok ({cfg.role}, {len(cfg.channels)} channel"
                  f"{'s' if len(cfg.channels) != 1 else ''})")
    return EX_CONFIG if bad else 0


def cmd_run(args) -> int:
    try:
        cfg = load(args.config)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return EX_CONFIG
    from .observe import log as obs_log

    obs_log.setup(cfg.logging, cfg.node_name, cfg.role)
    if args.log_stderr:
        import logging

        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(obs_log.JsonFormatter(cfg.node_name, cfg.role))
        logging.getLogger("ddc").addHandler(handler)
    # Imported here: a node pulls in its role's channels and the native modules.
    from .node import Node

    node_class: type[Node]
    if cfg.role == "ingress":
        from .ingress import IngressNode as node_class
    else:
        from .egress import EgressNode as node_class
    try:
        node = node_class(cfg)
    except OSError as exc:
        return _die(f"cannot start {cfg.role}: {exc.strerror or exc}"
                    + (f" ({exc.filename})" if getattr(exc, "filename", None) else ""), 1)
    except ValueError as exc:
        return _die(f"cannot start {cfg.role}: {exc}", 1)
    tune_collector()
    return node.run_forever()


# Objects the cyclic collector may let pile up before a young collection (CPython's
# default is 700). A daemon allocates several objects per record (the record, its bytes,
# its delivery callback), and a record lives from the link to the commit, longer than
# 700 allocations: with the default nearly every record was walked by a collection and
# promoted, and older collections walked everything the process holds. Records do not
# form cycles, so waiting longer costs little memory.
COLLECT_YOUNG_AFTER = 50_000


def tune_collector() -> None:
    """Once the node is built: what exists now (modules, config, clients) lives as long as
    the process, so no collection walks it again (gc.freeze), and young collections run
    every COLLECT_YOUNG_AFTER allocations (the older generations' thresholds unchanged)."""
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(COLLECT_YOUNG_AFTER, middle, old)


def cmd_keygen(args) -> int:
    from .node import write_key_file

    path = args.output
    if os.path.exists(path) and not args.force:
        return _die(f"{path} exists; use --force to replace it")
    try:
        write_key_file(path)
    except OSError as exc:
        return _die(f"cannot write {path}: {exc.strerror}")
    print(f"wrote a new 256-bit link key to {path} (mode 0600); copy it to the other side")
    return 0


def cmd_accept_session(args) -> int:
    """Re-pair after an ingress lost its state with its clock behind: the egress refuses
    its (older-looking) session and names it in a `session_refused` line; this tells the
    egress to take up exactly that session (docs/protocol.md, "Re-pairing")."""
    from .state import ACCEPT_FILE, save_accepted_session

    try:
        cfg = load(args.config, check_files=False)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 1
    if cfg.role != "egress":
        return _die(f"{args.config} is an {cfg.role} config; accept-session runs on the egress")
    text = args.session.strip().lower()
    if len(text) != 32 or any(ch not in "0123456789abcdef" for ch in text):
        return _die(f"session {args.session!r} is not a session id (32 hexadecimal digits, "
                    "as the egress's session_refused line names it)")
    path = os.path.join(cfg.state_dir, ACCEPT_FILE)
    try:
        save_accepted_session(cfg.state_dir, int(text, 16))
        owner = os.stat(cfg.state_dir)
        if os.geteuid() == 0:  # the daemon's user must read it (and remove it when done)
            os.chown(path, owner.st_uid, owner.st_gid)
    except OSError as exc:
        return _die(f"cannot write {path}: {exc.strerror}", 1)
    print(f"wrote {path}: the egress takes up session {text} when it next authenticates "
          "(a running egress looks within one metrics interval)")
    return 0


def cmd_demo(args) -> int:
    if args.udp:
        from .tools.demo import run_demo
    else:
        from .tools.demo_kafka import run_kafka_demo as run_demo

    return run_demo(records=args.records, loss=args.loss, burst=args.burst,
                    outage=not args.no_outage, seed=args.seed, quiet=args.quiet)


def cmd_bench(args) -> int:
    from .tools.bench import run_bench

    return run_bench(seconds=args.seconds, size=args.size, redundancy=args.redundancy,
                     mtu=args.mtu, baseline=not args.no_baseline, mode=args.mode,
                     as_json=args.json, rate_mbit=args.rate_mbit, values=args.values,
                     compression=args.compression, rate_records=args.rate_records,
                     find_safe=args.find_safe_rate)


def cmd_status(args) -> int:
    from .tools.status_view import run

    path = args.file
    if args.config:
        try:
            path = load(args.config, check_files=False).status_file
        except ConfigError as exc:
            for line in exc.problems:
                print(line, file=sys.stderr)
            return EX_CONFIG
    try:
        if args.check:
            from .tools.status_view import check

            return check(path)
        return run(path, once=args.once, as_json=args.json)
    except FileNotFoundError:
        return _die(f"no status file at {path}: is the daemon running?", 1)
    except (OSError, ValueError) as exc:
        return _die(f"cannot read {path}: {exc}", 1)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ddc", description="Data Diode Connector: moves Kafka "
                                "topics and UDP streams one way across a data diode.")
    p.add_argument("--version", action="version", version=f"ddc {package_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    r = sub.add_parser("run", help="run the ingress or egress daemon (role from the file)")
    r.add_argument("--config", "-c", required=True, help="node config file (TOML)")
    r.add_argument("--log-stderr", action="store_true", help="also write JSON logs to stderr")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("check-config", help="validate config files; one line per problem")
    c.add_argument("files", nargs="+", metavar="FILE")
    c.add_argument("--no-files", action="store_true",
                   help="do not open the key files the config names")
    c.add_argument("--quiet", "-q", action="store_true", help="print only problems")
    c.set_defaults(func=cmd_check_config)

    k = sub.add_parser("keygen", help="write a new link key file (mode 0600)")
    k.add_argument("output", help="key file to write, e.g. /etc/ddc/link.key")
    k.add_argument("--force", action="store_true", help="replace an existing file")
    k.set_defaults(func=cmd_keygen)

    a = sub.add_parser("accept-session", help="egress: take up an ingress session it refused "
                       "as older (an ingress whose state was lost and clock is behind)")
    a.add_argument("--config", "-c", required=True, help="the egress's config file")
    a.add_argument("session", help="the session id of the session_refused log line")
    a.set_defaults(func=cmd_accept_session)

    d = sub.add_parser("demo", help="Kafka -> ingress -> lossy link -> egress -> Kafka, with a "
                       "summary (librdkafka mock clusters: no services needed)")
    d.add_argument("--udp", action="store_true",
                   help="carry UDP datagrams instead of Kafka records")
    d.add_argument("--records", type=int, default=2000, help="records to send (default 2000)")
    d.add_argument("--loss", type=float, default=0.03,
                   help="random datagram loss on the link, 0-1 (default 0.03)")
    d.add_argument("--burst", type=float, default=0.002,
                   help="chance per datagram that a burst of losses starts (default 0.002)")
    d.add_argument("--no-outage", action="store_true",
                   help="skip the 30 ms link outage that shows loss reporting")
    d.add_argument("--seed", type=int, default=1, help="seed of the lossy link")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_demo)

    b = sub.add_parser("bench", help="measure link goodput against raw UDP (iperf3)")
    b.add_argument("--seconds", type=_in_range(float, 0.5, 3600), default=10.0,
                   help="length of each run")
    b.add_argument("--size", type=_in_range(int, 1, 64 << 20), default=8192,
                   help="record size in bytes")
    b.add_argument("--redundancy", type=_in_range(float, 0, 100), default=5.0,
                   help="FEC redundancy percent")
    # The config's range: a bench MTU the config would refuse measures no real link.
    b.add_argument("--mtu", type=_in_range(int, *MTU_RANGE), default=1500, help="link MTU")
    b.add_argument("--mode", choices=("encrypt", "authenticate"), default="encrypt")
    b.add_argument("--rate-mbit", type=_in_range(float, 0, 400_000), default=0.0,
                   help="pace the ingress like link.rate_mbit (default 0: unpaced, as iperf3 "
                        "-b 0; the sender then outruns the receiver and the kernel drops)")
    b.add_argument("--rate-records", type=_in_range(float, 0, 100_000_000), default=0.0,
                   help="pace the ingress like link.rate_records (default 0: unpaced)")
    b.add_argument("--find-safe-rate", action="store_true",
                   help="search the highest link.rate_records at which the egress on this "
                        "machine loses nothing for --size records, and print it (its sink "
                        "is a null one: a Kafka sink writes fewer, docs/performance.md)")
    b.add_argument("--values", choices=("pattern", "json-logs", "random"), default="pattern",
                   help="what the records hold (json-logs: structured logs, ~700 bytes each, "
                        "--size not used)")
    b.add_argument("--compression", choices=("none", "zstd"), default="none",
                   help="link.compression of the ingress (benchmarks/compression_bench.py "
                        "compares both)")
    b.add_argument("--no-baseline", action="store_true", help="skip the iperf3 baseline")
    b.add_argument("--json", action="store_true", help="print the figures as JSON")
    b.set_defaults(func=cmd_bench)

    s = sub.add_parser("status", help="live view of a node (link, heartbeat, throughput, loss, "
                       "lag), read from its status file")
    s.add_argument("--config", "-c", help="node config (its status_file is read)")
    s.add_argument("--file", default="/run/ddc/status.json", help="status file of the node")
    s.add_argument("--once", action="store_true", help="print once and exit")
    s.add_argument("--json", action="store_true", help="print the status as JSON and exit")
    s.add_argument("--check", action="store_true",
                   help="health check: exit 0 if the daemon rewrites its status file, 1 if the "
                        "file is missing or stale (three metrics intervals, at least 5 s)")
    s.set_defaults(func=cmd_status)
    return p


def _in_range(kind: type, low: float, high: float):
    """An argparse type: a number of this kind between low and high, or a one-line error."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is outside {low:g}..{high:g}")
        return value
    return parse


def _positive_int_check(parser: argparse.ArgumentParser, args) -> None:
    if getattr(args, "records", 1) is not None and getattr(args, "records", 1) < 1:
        parser.error("--records must be at least 1")
    loss = getattr(args, "loss", 0.0)
    if not 0 <= loss < 1:
        parser.error(f"--loss must be between 0 and 1, got {loss}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _positive_int_check(parser, args)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the last line of defence: one line, never a traceback
        if os.environ.get("DDC_DEBUG"):
            raise
        return _die(f"{type(exc).__name__}: {exc}", 1)


if __name__ == "__main__":
    sys.exit(main())
