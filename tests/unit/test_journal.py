"""The daemon's journald client (journald's native protocol, no python-systemd), against a
real AF_UNIX datagram socket standing in for /run/systemd/journal/socket."""

from __future__ import annotations

import logging
import os
import socket
import struct

import pytest

from appliance.observe.log import JournalHandler, JsonFormatter, journal_fields


def test_fields_simple_and_binary_forms():
    data = journal_fields({"MESSAGE": "a\nb", "PRIORITY": "3"})
    assert data == b"MESSAGE\n" + struct.pack("<Q", 3) + b"a\nb\n" + b"PRIORITY=3\n"


@pytest.fixture
def journal(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "socket"))
    sock.settimeout(5)
    handler = JournalHandler(str(tmp_path / "socket"))
    handler.setFormatter(JsonFormatter("n1", "egress"))
    yield sock, handler
    handler.close()
    sock.close()


def _record(msg: str, level: int = logging.ERROR) -> logging.LogRecord:
    record = logging.LogRecord("ddc.egress", level, __file__, 1, msg, None, None)
    record.event = "records_lost"
    return record


def test_entry_carries_identifier_priority_and_json(journal):
    sock, handler = journal
    assert JournalHandler.reachable(handler.path)
    handler.emit(_record("lost 3 records"))
    entry = dict(line.split("=", 1) for line in sock.recv(65536).decode().splitlines())
    assert entry["SYSLOG_IDENTIFIER"] == "ddc"
    assert entry["PRIORITY"] == "3"
    assert entry["DDC_EVENT"] == "records_lost"
    assert entry["SYSLOG_PID"] == str(os.getpid())
    assert '"msg":"lost 3 records"' in entry["MESSAGE"]


def test_entry_larger_than_a_datagram_goes_as_a_sealed_memfd(journal):
    sock, handler = journal
    handler.emit(_record("x" * 400_000))  # above the default AF_UNIX datagram limit
    payload, fds, _flags, _addr = socket.recv_fds(sock, 16, 1)
    assert payload == b"" and len(fds) == 1
    with os.fdopen(fds[0], "rb") as f:
        data = f.read()
    assert data.startswith(b"MESSAGE=") and b"x" * 400_000 in data


def test_no_journal_no_error(tmp_path):
    assert not JournalHandler.reachable(str(tmp_path / "absent"))
    handler = JournalHandler(str(tmp_path / "absent"))
    handler.emit(_record("dropped quietly"))  # must not raise
    handler.close()
