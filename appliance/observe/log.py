"""JSON log lines to syslog (RFC 5424 over UDP), journald and optionally stderr.

Every line is one JSON object: ts, level, logger, node, role, event, msg, plus the
event's own fields (channel, topic, partition, first_offset, last_offset, count ...).
Vector's syslog source parses the envelope; vector/ddc_logs.vrl the body.
"""

from __future__ import annotations

import json
import logging
import os
import socket
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


def _journal_handler() -> logging.Handler | None:
    try:
        from systemd.journal import JournalHandler  # type: ignore[import-not-found]
    except ImportError:
        return None
    return JournalHandler(SYSLOG_IDENTIFIER="ddc")


def setup(cfg: LoggingConfig, node: str, role: str) -> logging.Logger:
    root = logging.getLogger("ddc")
    root.handlers.clear()
    root.setLevel(_LEVELS[cfg.level])
    root.propagate = False
    fmt = JsonFormatter(node, role)
    handlers: list[logging.Handler] = []
    if cfg.syslog is not None:
        handlers.append(Rfc5424Handler(cfg.syslog.host, cfg.syslog.port))
    journal = _journal_handler() if cfg.journald else None
    if journal is not None:
        handlers.append(journal)
    # Under systemd without python-systemd, stderr is the journal: use it instead.
    if cfg.stderr or (cfg.journald and journal is None and os.environ.get("JOURNAL_STREAM")):
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
