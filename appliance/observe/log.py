"""JSON log lines to syslog (RFC 5424 over UDP), journald and optionally stderr.

Every line is one JSON object: ts, level, logger, node, role, event, msg, plus the
event's own fields (channel, topic, partition, first_offset, last_offset, count ...).
Vector's syslog source parses the envelope; the vector role's ddc_logs.vrl the body.

Each record reaches Vector once: through syslog. The journal gets it over journald's
native protocol (_TRANSPORT=journal), which Vector's journald source leaves out; that
source takes only what the process prints on stdout/stderr (a crash traceback). So the
daemon never copies its records to stderr while it has the journal or syslog.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import stat
import struct
import sys
import time
from datetime import UTC, datetime

from ..config import LoggingConfig

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR, "critical": logging.CRITICAL}
_SEVERITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}
FACILITY_DAEMON = 3


class JsonFormatter(logging.Formatter):
    def __init__(self, node: str, role: str):
        super().__init__()
        self.node, self.role = node, role

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC)
        body = {
            "ts": ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "node": self.node,
            "role": self.role,
            "event": getattr(record, "event", "log"),
            "msg": record.getMessage(),
        }
        body.update(getattr(record, "fields", {}))
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, separators=(",", ":"), default=str)


class Rfc5424Handler(logging.Handler):
    """One RFC 5424 datagram per record: <PRI>1 TIMESTAMP HOST ddc PID - - MSG."""

    def __init__(self, host: str, port: int):
        super().__init__()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.addr = (host, port)
        self.hostname = socket.gethostname() or "-"
        self.pid = str(os.getpid())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            pri = FACILITY_DAEMON * 8 + _SEVERITY.get(record.levelno, 6)
            ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            ts = ts.replace("+00:00", "Z")
            line = f"<{pri}>1 {ts} {self.hostname} ddc {self.pid} - - {self.format(record)}"
            self.sock.sendto(line.encode()[:65000], self.addr)
        except OSError:
            pass  # Vector not running: journald and the status file still have it

    def close(self) -> None:
        self.sock.close()
        super().close()


JOURNAL_SOCKET = "/run/systemd/journal/socket"
_MEMFD_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL


def journal_fields(fields: dict[str, str]) -> bytes:
    """One journal entry in journald's native format (systemd.io/JOURNAL_NATIVE_PROTOCOL):
    KEY=value lines; a value with a newline as KEY, newline, 64-bit little-endian length,
    the value, newline."""
    out = bytearray()
    for key, value in fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


class JournalHandler(logging.Handler):
    """One journal entry per record, spoken to journald directly (no libsystemd, no
    python-systemd): MESSAGE is the JSON line; PRIORITY, SYSLOG_IDENTIFIER=ddc,
    SYSLOG_FACILITY, SYSLOG_PID and DDC_EVENT let `journalctl -p` / `-t ddc` select."""

    def __init__(self, path: str = JOURNAL_SOCKET):
        super().__init__()
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        # A journald that cannot keep up must not stall the data path for long.
        self.sock.settimeout(1.0)
        self.pid = str(os.getpid())

    @staticmethod
    def reachable(path: str = JOURNAL_SOCKET) -> bool:
        try:
            return stat.S_ISSOCK(os.stat(path).st_mode)
        except OSError:
            return False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = journal_fields({
                "MESSAGE": self.format(record),
                "PRIORITY": str(_SEVERITY.get(record.levelno, 6)),
                "SYSLOG_IDENTIFIER": "ddc",
                "SYSLOG_FACILITY": str(FACILITY_DAEMON),
                "SYSLOG_PID": self.pid,
                "DDC_EVENT": str(getattr(record, "event", "log")),
            })
            try:
                self.sock.sendto(data, self.path)
            except OSError as exc:
                if exc.errno != errno.EMSGSIZE:
                    raise
                self._send_large(data)
        except OSError:
            pass  # journald gone or stalled: syslog and the status file still have it

    def _send_large(self, data: bytes) -> None:
        # Larger than a datagram may be: the protocol's other form, a sealed memfd.
        fd = os.memfd_create("ddc-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.write(fd, data)
            os.lseek(fd, 0, os.SEEK_SET)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _MEMFD_SEALS)
            # sendmsg, not socket.send_fds: the latter drops its address before Python 3.12.
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))]
            self.sock.sendmsg([b""], rights, 0, self.path)
        finally:
            os.close(fd)

    def close(self) -> None:
        self.sock.close()
        super().close()


def setup(cfg: LoggingConfig, node: str, role: str) -> logging.Logger:
    root = logging.getLogger("ddc")
    root.handlers.clear()
    root.setLevel(_LEVELS[cfg.level])
    root.propagate = False
    fmt = JsonFormatter(node, role)
    handlers: list[logging.Handler] = []
    if cfg.syslog is not None:
        handlers.append(Rfc5424Handler(cfg.syslog.host, cfg.syslog.port))
    journal = cfg.journald and JournalHandler.reachable(JOURNAL_SOCKET)
    if journal:
        handlers.append(JournalHandler(JOURNAL_SOCKET))
    # Under systemd with no journal socket to speak to and no syslog, stderr is the only
    # way into the journal. With syslog on, a stderr copy would reach Vector twice.
    if cfg.stderr or (cfg.journald and not journal and cfg.syslog is None
                      and os.environ.get("JOURNAL_STREAM")):
        handlers.append(logging.StreamHandler(sys.stderr))
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)
    return root


class EventLogger:
    """log(level, event, msg, **fields): a structured line any handler can ship."""

    def __init__(self, name: str):
        self.logger = logging.getLogger(name)

    def __call__(self, level: str, event: str, msg: str, **fields) -> None:
        self.logger.log(_LEVELS[level], msg, extra={"event": event, "fields": fields})


def monotonic() -> float:
    return time.monotonic()
