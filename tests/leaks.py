"""No process outlives the pytest run that started it.

Every pytest run puts a token of its own into its environment (DDC_TEST_RUN); every
process a test starts, and every process those start, inherits it: `ddc run`
daemons, Kafka brokers, qemu, iperf3. At the end of the run (tests/conftest.py),
any process still alive that carries the token is a leak: it is killed, named, and
the run fails. Reading /proc/PID/environ, not the process tree, because a leaked
daemon has usually been re-parented to PID 1 by then.
"""

from __future__ import annotations

import os
import signal
import time
import uuid

ENV = "DDC_TEST_RUN"


def mark_this_run() -> str:
    """The token of this pytest process (made once; children inherit it)."""
    token = os.environ.get(ENV)
    if not token or os.environ.get(ENV + "_PID") != str(os.getpid()):
        # A pytest started by a test of ours gets a token of its own.
        token = uuid.uuid4().hex
        os.environ[ENV] = token
        os.environ[ENV + "_PID"] = str(os.getpid())
    return token


def carriers(token: str) -> dict[int, str]:
    """{pid: command line} of the live processes, other than this one, whose
    environment carries the token."""
    needle = f"{ENV}={token}".encode()
    me = os.getpid()
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle not in f.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # gone meanwhile, or a kernel thread
            continue
        if cmd:  # zombies have an empty command line: already dead
            found[int(entry)] = cmd
    return found


def kill_all(pids, grace: float = 5.0) -> None:
    """SIGTERM, up to `grace` seconds, then SIGKILL what is left."""
    pids = list(pids)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if _alive(p)]
        time.sleep(0.1)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
