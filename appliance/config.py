"""The node configuration: one TOML file, read with tomlkit, validated before anything starts.

Every problem is reported as one line naming the file, the line, the key and what is
wrong; `ddc check-config` prints them all and the daemon refuses to start on any.
See examples/ingress.toml and examples/egress.toml for documented examples.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.exceptions import ParseError, TOMLKitError

from .protocol import fec, wire
from .protocol.auth import LINK_ID_MAX

# Address and parse_address are the config's too (its tables hold Addresses): re-exported.
from .schema import Address as Address
from .schema import Checker, between, locate, show
from .schema import parse_address as parse_address

DEFAULT_STATSD = "127.0.0.1:8125"
DEFAULT_SYSLOG = "127.0.0.1:514"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
ROLES = ("ingress", "egress")
MODES = ("encrypt", "authenticate")
# link.mtu: from IPv4's minimum datagram every host takes (576) to jumbo frames (9216, as
# NICs and switches take them); the wire format's limit (wire.MAX_MTU) is UDP's, far above.
MTU_RANGE = (wire.MIN_MTU, 9216)


class ConfigError(Exception):
    """One or more problems in a config file; str() gives one line per problem."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass
class LinkConfig:
    bind: Address
    peer: Address | None
    mtu: int
    rate_mbit: float
    fec_redundancy: float  # fraction, from the percent in the file
    block_symbols: int
    min_repair_symbols: int
    interleave_depth: int
    key_file: str
    key_id: int
    mode: str
    accept_keys: dict[int, str]
    link_id: str
    heartbeat_interval: float
    flush_interval: float
    reorder_window: int
    loss_timeout: float
    max_record_bytes: int
    compression_level: int = 0  # zstd level; 0: blocks go uncompressed
    compression_max_block_bytes: int = 4 * 1024 * 1024
    rate_records: float = 0.0  # records/s the ingress sends at most; 0: unpaced


@dataclass
class TuningConfig:
    link_cpu: int | None
    channel_cpu: int | None
    socket_buffer_bytes: int
    queue_records: int
    queue_bytes: int
    gso: bool
    gro: bool
    frontier_interval: float  # seconds, at least, between two writes of the egress frontier


@dataclass
class ChannelConfig:
    id: int
    name: str
    type: str
    options: dict[str, Any]
    filter: Any = None  # filters.Filter, or None: no rules (nothing to do per record)


@dataclass
class MetricsConfig:
    statsd: Address | None
    prefix: str
    interval: float


@dataclass
class LoggingConfig:
    syslog: Address | None
    level: str
    journald: bool
    stderr: bool


@dataclass
class Config:
    path: str
    role: str
    node_name: str
    state_dir: str
    status_file: str
    link: LinkConfig
    tuning: TuningConfig
    channels: list[ChannelConfig]
    metrics: MetricsConfig
    logging: LoggingConfig
    raw: dict = field(repr=False, default_factory=dict)


# -- the schema ------------------------------------------------------------------
def load(path: str | os.PathLike, check_files: bool = True) -> Config:
    """Read and validate a config file; raise ConfigError listing every problem."""
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    return loads(text, path, check_files)


def loads(text: str, path: str = "<config>", check_files: bool = True) -> Config:
    try:
        doc = tomlkit.parse(text).unwrap()
    except TOMLKitError as exc:
        # A key or table defined twice: tomlkit < 0.15.3 raises KeyAlreadyPresent, which
        # has no line; 0.15.3 a ParseError at the line after the repeat. Either way the
        # line named is the repeat's own (the first one at or before tomlkit's).
        line = exc.line if isinstance(exc, ParseError) else None
        repeats: list[int] = []
        locate(text, repeats)
        repeats = [no for no in repeats if line is None or no <= line]
        raise ConfigError([f"{path}:{repeats[0] if repeats else line or 1}: "
                           f"TOML syntax error: {exc}"]) from None
    c = Checker(path, text)
    c.unknown(doc, "", {"role", "node_name", "state_dir", "status_file", "link", "tuning",
                        "channel", "metrics", "logging"})
    role = c.get(doc, "", "role", str, None, required=True,
                 check=lambda v: v in ROLES, expect="\"ingress\" or \"egress\"")
    node_name = c.get(doc, "", "node_name", str, os.uname().nodename)
    state_dir = c.get(doc, "", "state_dir", str, "/var/lib/ddc")
    status_file = c.get(doc, "", "status_file", str,
                        os.path.join(os.environ.get("RUNTIME_DIRECTORY", "/run/ddc"),
                                     "status.json"))

    def table(name: str) -> dict:
        t = doc.get(name, {})
        if not isinstance(t, dict):
            c.fail(name, f"must be a table ([{name}]), got {show(t)}")
            return {}
        return t

    link = _link(c, table("link"), role, check_files)
    tuning = _tuning(c, table("tuning"), role)
    metrics = _metrics(c, table("metrics"))
    logging_ = _logging(c, table("logging"))
    channels = _channels(c, doc.get("channel", []), role)
    if link is not None:
        _sink_record_limits(c, doc.get("channel", []), link.max_record_bytes)
    if c.problems:
        raise ConfigError(c.problems)
    # A part is None only where it recorded a problem: here none is.
    assert link is not None and tuning is not None and metrics is not None and \
        logging_ is not None
    return Config(path, role, node_name, state_dir, status_file, link, tuning, channels,
                  metrics, logging_, raw=doc)


def _link(c: Checker, t: dict, role: str | None, check_files: bool) -> LinkConfig | None:
    p = "link"
    c.unknown(t, p, {"bind", "peer", "mtu", "rate_mbit", "rate_records",
                     "fec_redundancy_percent",
                     "block_symbols", "min_repair_symbols", "interleave_depth", "key_file",
                     "key_id", "mode", "accept_keys", "heartbeat_interval", "flush_interval_ms",
                     "reorder_window_blocks", "loss_timeout_ms", "max_record_bytes",
                     "link_id", "compression", "compression_level",
                     "compression_max_block_bytes"})
    if role == "ingress":
        bind = c.address(t, p, "bind", default="0.0.0.0:0", allow_zero_port=True)
        peer = c.address(t, p, "peer", required=True)
    else:
        bind = c.address(t, p, "bind", required=role == "egress", allow_zero_port=True)
        peer = None
        if "peer" in t and role == "egress":  # (with no valid role, only the role is wrong)
            c.fail("link.peer", "is only for role = \"ingress\" (the egress never sends)")
    mtu = c.number(t, p, "mtu", int, 1500, *MTU_RANGE, "an integer MTU")
    rate = c.get(t, p, "rate_mbit", float, 0.0, check=between(0, 400_000),
                 expect="Mbit/s between 0 (unpaced) and 400000")
    rate_records = c.get(t, p, "rate_records", float, 0.0, check=between(0, 100_000_000),
                         expect="records/s between 0 (unpaced) and 100000000")
    redundancy = c.number(t, p, "fec_redundancy_percent", float, 12.0, 0, 300, "a percentage")
    k = c.number(t, p, "block_symbols", int, 64, 1, 250, "an integer")
    min_repair = c.number(t, p, "min_repair_symbols", int, 2, 0, 64, "an integer")
    if k is not None and redundancy is not None and \
            k + fec.repair_count(k, redundancy / 100) > fec.MAX_SYMBOLS:
        c.fail("link.block_symbols", f"block_symbols {k} with {redundancy}% redundancy needs "
               f"{k + fec.repair_count(k, redundancy / 100)} symbols; the limit is "
               f"{fec.MAX_SYMBOLS}")
    depth = c.number(t, p, "interleave_depth", int, 4, 1, 64, "an integer")
    key_file = c.get(t, p, "key_file", str, None, required=True)
    key_id = c.number(t, p, "key_id", int, 1, 0, 65535, "an integer")
    mode = c.get(t, p, "mode", str, "encrypt", check=lambda v: v in MODES,
                 expect="\"encrypt\" or \"authenticate\"")
    accept: dict[int, str] = {}
    raw_accept = c.get(t, p, "accept_keys", list, [], expect="a list of {id, file} tables")
    for i, item in enumerate(raw_accept or []):
        ip = f"link.accept_keys[{i}]"
        if not isinstance(item, dict):
            c.fail(ip, f"must be a table {{ id = N, file = \"path\" }}, got {show(item)}")
            continue
        kid = c.number(item, ip, "id", int, None, 0, 65535, "an integer", required=True)
        kf = c.get(item, ip, "file", str, None, required=True)
        if kid is not None and kid == key_id:
            c.fail("link.accept_keys", f"id {kid} is link.key_id, the primary key; an accepted "
                   "key needs an id of its own (a rotation gives the new key a new id)")
        elif kid is not None and kid in accept:
            c.fail("link.accept_keys", f"id {kid} is listed twice")
        elif kid is not None and kf is not None:
            accept[kid] = kf
    if check_files and key_file is not None:
        _check_key_file(c, "link.key_file", key_file)
        for kf in accept.values():
            _check_key_file(c, "link.accept_keys", kf)
    hb = c.number(t, p, "heartbeat_interval", float, 1.0, 0.05, 60, "seconds")
    flush = c.number(t, p, "flush_interval_ms", float, 5.0, 0.1, 10_000, "milliseconds")
    window = c.number(t, p, "reorder_window_blocks", int, 64, 2, 100_000, "an integer")
    if window is not None and depth is not None and window < 2 * depth:
        c.fail("link.reorder_window_blocks", f"must be at least twice interleave_depth "
               f"({2 * depth}), got {window}")
    loss_timeout = c.number(t, p, "loss_timeout_ms", float, 250.0, 1, 60_000, "milliseconds")
    link_id = c.get(t, p, "link_id", str, "", check=_valid_link_id,
                    expect=f"up to {LINK_ID_MAX} letters, digits, '.', '_' or '-' (the same "
                    "on both sides of the link)")
    max_record = c.get(t, p, "max_record_bytes", int, 512 * 1024 * 1024,
                       check=between(1024, 4 * 1024**3 - 1),
                       expect="bytes between 1024 and 4 GiB")
    level, max_block = _compression(c, t, role)
    # bind, level and max_block by name: mypy narrows those (the getters' are untyped).
    if bind is None or level is None or max_block is None or \
            None in (mtu, rate, rate_records, redundancy, k, depth, key_file, key_id, mode, hb,
                     flush, window, loss_timeout, max_record, min_repair, link_id):
        return None
    return LinkConfig(bind, peer, mtu, rate, redundancy / 100, k, min_repair, depth, key_file,
                      key_id, mode, accept, link_id, hb, flush / 1000, window,
                      loss_timeout / 1000, max_record, level, max_block, rate_records)


def _compression(c: Checker, t: dict, role: str | None) -> tuple[int | None, int | None]:
    """link.compression ("zstd" or "none", the ingress's choice: an egress decompresses
    whatever arrives), its level, and the bound on what one block may expand to."""
    p = "link"
    kind = c.get(t, p, "compression", str, "none", check=lambda v: v in ("none", "zstd"),
                 expect="\"zstd\" or \"none\"")
    if role == "egress" and "compression" in t:
        c.fail("link.compression", "is only for role = \"ingress\" (the egress decompresses "
               "what arrives; link.compression_max_block_bytes bounds it)")
    level = c.number(t, p, "compression_level", int, 3, 1, 22, "a zstd level")
    max_block = c.get(t, p, "compression_max_block_bytes", int, 4 * 1024 * 1024,
                      check=between(65536, 256 * 1024 * 1024),
                      expect="bytes between 65536 and 268435456 (256 MiB), the same on "
                      "both sides")
    if kind == "zstd":
        from .protocol import compress

        if not compress.available():
            c.fail("link.compression", "\"zstd\" needs the zstandard package")
    if kind is None or level is None:
        return None, max_block
    return (level if kind == "zstd" else 0), max_block


def _valid_link_id(value: str) -> bool:
    return len(value) <= LINK_ID_MAX and all(ch.isascii() and (ch.isalnum() or ch in "._-")
                                             for ch in value)


def _check_key_file(c: Checker, key: str, path: str) -> None:
    from .protocol.auth import parse_key

    try:
        st = os.stat(path)
        text = Path(path).read_text()
    except OSError as exc:
        c.fail(key, f"cannot read key file {path}: {exc.strerror}")
        return
    if st.st_mode & 0o077:
        c.fail(key, f"key file {path} is readable by others (mode {st.st_mode & 0o777:o}); "
               "run chmod 600")
    try:
        parse_key(text)
    except ValueError as exc:
        c.fail(key, f"{path}: {exc}")


# tuning.queue_bytes by role. The egress's queue is the buffer that absorbs a slow sink
# while the diode keeps sending: smaller, it loses records sooner. The ingress's only
# stands in front of the link thread (its Kafka consumer waits when it is full; Kafka
# keeps the rest): 32 MiB costs it nothing and keeps it under 200 MB with 8 KB records
# (64 MiB: 183-208 MB, docs/performance.md).
QUEUE_BYTES = {"ingress": 32 * 1024 * 1024, "egress": 64 * 1024 * 1024}


def _tuning(c: Checker, t: dict, role: str | None) -> TuningConfig | None:
    p = "tuning"
    c.unknown(t, p, {"link_cpu", "channel_cpu", "socket_buffer_bytes", "queue_records",
                     "queue_bytes", "gso", "gro", "frontier_interval_ms"})
    ncpu = os.cpu_count() or 1
    cpu_expect = f"a CPU number between 0 and {ncpu - 1} (this machine has {ncpu})"
    link_cpu = c.get(t, p, "link_cpu", int, None, check=between(0, ncpu - 1), expect=cpu_expect)
    channel_cpu = c.get(t, p, "channel_cpu", int, None, check=between(0, ncpu - 1),
                        expect=cpu_expect)
    buf = c.number(t, p, "socket_buffer_bytes", int, 32 * 1024 * 1024, 65536, 2**31 - 1,
                   "bytes")
    queue = c.number(t, p, "queue_records", int, 100_000, 1, 10_000_000, "an integer")
    queue_bytes = c.get(t, p, "queue_bytes", int,
                        QUEUE_BYTES["ingress" if role == "ingress" else "egress"],
                        check=between(1 << 20, 1 << 34),
                        expect="bytes between 1048576 (1 MiB) and 17179869184 (16 GiB)")
    gso = c.get(t, p, "gso", bool, True)
    gro = c.get(t, p, "gro", bool, True)
    # The egress writes its session frontier ahead of deliveries (docs/reliability.md):
    # records wait up to this long for the write that covers them, and a busy link
    # writes at most 1000 / this many times a second (an SD card wears with every one).
    frontier = c.number(t, p, "frontier_interval_ms", float, 20.0, 1, 1000, "milliseconds")
    if None in (buf, queue, queue_bytes, gso, gro, frontier):
        return None
    return TuningConfig(link_cpu, channel_cpu, buf, queue, queue_bytes, gso, gro,
                        frontier / 1000)


def _metrics(c: Checker, t: dict) -> MetricsConfig | None:
    p = "metrics"
    c.unknown(t, p, {"statsd", "prefix", "interval"})
    statsd = None
    if t.get("statsd", DEFAULT_STATSD) != "":
        statsd = c.address(t, p, "statsd", default=DEFAULT_STATSD)
    prefix = c.get(t, p, "prefix", str, "ddc", check=lambda v: re.fullmatch(r"[A-Za-z0-9_.]*", v),
                   expect="letters, digits, _ and .")
    interval = c.number(t, p, "interval", float, 1.0, 0.1, 600, "seconds")
    if prefix is None or interval is None:
        return None
    return MetricsConfig(statsd, prefix, interval)


def _logging(c: Checker, t: dict) -> LoggingConfig | None:
    p = "logging"
    c.unknown(t, p, {"syslog", "level", "journald", "stderr"})
    syslog = None
    if t.get("syslog", DEFAULT_SYSLOG) != "":
        syslog = c.address(t, p, "syslog", default=DEFAULT_SYSLOG)
    level = c.get(t, p, "level", str, "info", check=lambda v: v in LOG_LEVELS,
                  expect=" or ".join(LOG_LEVELS))
    journald = c.get(t, p, "journald", bool, True)
    stderr = c.get(t, p, "stderr", bool, False)
    if None in (level, journald, stderr):
        return None
    return LoggingConfig(syslog, level, journald, stderr)


def _sink_record_limits(c: Checker, raw, link_max: int) -> None:
    """A sink cannot take records larger than the link carries: its max_record_bytes
    above link.max_record_bytes is a mistake (the link drops those records first)."""
    for i, t in enumerate(raw if isinstance(raw, list) else []):
        opts = t.get(t.get("type"), {}) if isinstance(t, dict) else {}
        limit = opts.get("max_record_bytes") if isinstance(opts, dict) else None
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > link_max:
            c.fail(f"channel[{i}].{t['type']}.max_record_bytes",
                   f"{limit} is above link.max_record_bytes ({link_max}): the link refuses "
                   "records that large before the sink sees them; lower it or raise "
                   "link.max_record_bytes")


def _channels(c: Checker, raw, role: str | None) -> list[ChannelConfig]:
    from .channels import CHANNEL_TYPES
    from .filters import FilterError, compile_filter

    if not isinstance(raw, list):
        c.fail("channel", "must be an array of tables ([[channel]])")
        return []
    if not raw:
        c.fail("channel", "at least one [[channel]] is required")
    out: list[ChannelConfig] = []
    seen_ids: dict[int, int] = {}
    seen_names: dict[str, int] = {}
    for i, t in enumerate(raw):
        p = f"channel[{i}]"
        if not isinstance(t, dict):
            c.fail(p, "must be a table")
            continue
        kinds = ", ".join(sorted(CHANNEL_TYPES))
        ctype = c.get(t, p, "type", str, None, required=True,
                      check=lambda v: v in CHANNEL_TYPES, expect=f"one of {kinds}")
        c.unknown(t, p, {"id", "name", "type", "filter", "filter_default"}
                  | ({ctype} if ctype else set()))
        try:
            filt = compile_filter(t.get("filter", []), t.get("filter_default", "allow"))
        except FilterError as exc:
            for problem in getattr(exc, "problems", [exc]):
                c.fail(f"{p}.{problem.key}", str(problem))
            filt = None
        cid = c.number(t, p, "id", int, None, 1, 65535, "an integer", required=True)
        name = c.get(t, p, "name", str, None, required=True,
                     check=lambda v: re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", v),
                     expect="1-64 letters, digits, '.', '_' or '-'")
        if cid is not None:
            if cid in seen_ids:
                c.fail(f"{p}.id", f"channel id {cid} is already used by channel[{seen_ids[cid]}]")
            seen_ids[cid] = i
        if name is not None:
            if name in seen_names:
                c.fail(f"{p}.name", f"channel name {name!r} is already used by "
                       f"channel[{seen_names[name]}]")
            seen_names[name] = i
        if ctype is None or role is None:
            continue
        kind = CHANNEL_TYPES[ctype]
        if role not in kind.ROLES:
            c.fail(f"{p}.type", f"channel type {ctype!r} cannot be used on an {role} "
                   f"(only on {' or '.join(kind.ROLES)})")
            continue
        opts = t.get(ctype, {})
        if not isinstance(opts, dict):
            c.fail(f"{p}.{ctype}", f"must be a table ([channel.{ctype}])")
            continue
        for key, message in kind.validate(opts, role):
            c.fail(f"{p}.{ctype}.{key}", message)
        if cid is not None and name is not None:
            out.append(ChannelConfig(cid, name, ctype, opts, filt))
    return out
