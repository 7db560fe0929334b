"""One daemon log record is stored once: of everything the daemon writes for it (a syslog
datagram, a journal entry, a line on stderr), exactly one event reaches the file sink's
input, counting the syslog and journald sources together as the vector role configures them.

The daemon's logging runs for real in a child process started like systemd starts the unit
(JOURNAL_STREAM set, stderr captured as journald would capture it), with a UDP socket standing
in for Vector's syslog source and an AF_UNIX datagram socket for journald's native socket.
What journald would do with each input is modelled by its _TRANSPORT: `journal` for the native
socket, `stdout` for the stream, with SYSLOG_IDENTIFIER=ddc (the unit's executable).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

import pytest

from .support import REPO, installed_config

CHILD = textwrap.dedent(
    """
    import sys
    import appliance.observe.log as log
    from appliance.config import Address, LoggingConfig

    log.JOURNAL_SOCKET = sys.argv[1]
    cfg = LoggingConfig(syslog=Address("127.0.0.1", int(sys.argv[2])), level="info",
                        journald=True, stderr=False)
    log.setup(cfg, "egress-1", "egress")
    log.EventLogger("ddc.egress")("info", "session_started", "marker-7f3c", session="abc")
    """
)


def _journal_entry(datagram: bytes) -> dict[str, str]:
    """Parse the native protocol's simple form (KEY=value lines) and the binary one."""
    fields, rest = {}, datagram
    while rest:
        line, sep, tail = rest.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields[key.decode()] = value.decode()
            rest = tail
        else:
            size = int.from_bytes(tail[:8], "little")
            fields[line.decode()] = tail[8 : 8 + size].decode()
            rest = tail[8 + size + 1 :]
        assert sep or not rest
    return fields


def _journald_source_passes(source: dict, entry: dict[str, str]) -> bool:
    """Vector's journald include_matches / exclude_matches: a field must have one of the
    listed values to be included, and none of the excluded ones."""
    for field, values in (source.get("include_matches") or {}).items():
        if entry.get(field) not in values:
            return False
    for field, values in (source.get("exclude_matches") or {}).items():
        if entry.get(field) in values:
            return False
    units = source.get("include_units")
    return not units or entry.get("_SYSTEMD_UNIT") in units


def _sources_upstream_of(config: dict, component: str) -> set[str]:
    found, todo = set(), list(config["sinks"][component]["inputs"])
    while todo:
        cid = todo.pop()
        if cid in config["sources"]:
            found.add(cid)
        else:
            todo.extend(config["transforms"][cid]["inputs"])
    return found


@pytest.fixture
def daemon_outputs(tmp_path):
    """Run the child; return (syslog datagrams, journal entries, stderr lines)."""
    syslog = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        syslog.bind(("127.0.0.1", 0))
        journal.bind(str(tmp_path / "journal.socket"))
        for s in (syslog, journal):
            s.settimeout(0.5)
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(tmp_path / "journal.socket"),
             str(syslog.getsockname()[1])],
            cwd=REPO, env={"JOURNAL_STREAM": "8:12345", "PATH": "/usr/bin:/bin"},
            capture_output=True, text=True, timeout=60,
        )
        assert proc.returncode == 0, proc.stderr

        def drain(sock):
            out = []
            while True:
                try:
                    out.append(sock.recv(1 << 20))
                except TimeoutError:
                    return out

        return drain(syslog), [_journal_entry(d) for d in drain(journal)], proc.stderr
    finally:
        syslog.close()
        journal.close()


def test_one_daemon_record_reaches_the_file_sink_once(daemon_outputs):
    syslog_datagrams, journal_entries, stderr = daemon_outputs
    config = installed_config()
    sources = _sources_upstream_of(config, "ddc_file")
    (syslog_id,) = [c for c in sources if config["sources"][c]["type"] == "syslog"]
    (journald_id,) = [c for c in sources if config["sources"][c]["type"] == "journald"]
    assert sources == {syslog_id, journald_id}

    # What journald records for the unit: native entries, and each stderr line.
    journald = [{**e, "_TRANSPORT": "journal"} for e in journal_entries]
    journald += [
        {"MESSAGE": line, "_TRANSPORT": "stdout", "SYSLOG_IDENTIFIER": "ddc",
         "_SYSTEMD_UNIT": "ddc@egress.service"}
        for line in stderr.splitlines()
    ]
    events = [d.decode() for d in syslog_datagrams]
    events += [e["MESSAGE"] for e in journald
               if _journald_source_passes(config["sources"][journald_id], e)]
    stored = [e for e in events if "marker-7f3c" in e]
    assert len(stored) == 1, f"the record reaches the file sink {len(stored)} times: {stored}"
    # ... and the journal still has it (journalctl -t ddc), as a native entry.
    assert [e["SYSLOG_IDENTIFIER"] for e in journal_entries if "marker-7f3c" in e["MESSAGE"]] == [
        "ddc"
    ]
