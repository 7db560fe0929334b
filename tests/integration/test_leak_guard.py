"""The test suite's own guarantee: nothing a test run starts outlives it.

Each case runs a small pytest session in a subprocess with the project's conftest and
checks what it left behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _inner_run(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    test = tmp_path / "test_inner.py"
    test.write_text(textwrap.dedent(body))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
         "--rootdir", str(tmp_path), str(test)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env=os.environ | {"PYTHONPATH": str(REPO)})


def test_a_process_left_running_fails_the_run_and_is_killed(tmp_path):
    pidfile = tmp_path / "pid"
    run = _inner_run(tmp_path, f"""
        import subprocess

        def test_leaks_a_process():
            proc = subprocess.Popen(["sleep", "300"])
            open({str(pidfile)!r}, "w").write(str(proc.pid))
        """)
    pid = int(pidfile.read_text())
    assert run.returncode == 1, run.stdout + run.stderr
    assert "still alive at its end" in run.stdout and f"pid {pid}: sleep 300" in run.stdout
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)


def test_a_daemon_of_a_failing_test_is_stopped_after_it(tmp_path):
    pidfile = tmp_path / "pid"
    run = _inner_run(tmp_path, f"""
        from tests.integration.daemons import Daemon, free_udp_port, node_config, write_key

        def test_fails_with_a_daemon_running(tmp_path):
            key = write_key(tmp_path / "link.key")
            cfg = node_config("egress", tmp_path, key,
                              f'bind = "127.0.0.1:{{free_udp_port()}}"', "udp",
                              f'target = "127.0.0.1:{{free_udp_port()}}"')
            daemon = Daemon(cfg)
            open({str(pidfile)!r}, "w").write(str(daemon.proc.pid))
            daemon.wait_event("started")
            assert False, "the test fails before it stops its daemon"
        """)
    pid = int(pidfile.read_text())
    assert run.returncode == 1, run.stdout + run.stderr
    assert "the test fails before it stops its daemon" in run.stdout
    # Stopped by the per-test fixture, so the end-of-run check found nothing.
    assert "still alive at its end" not in run.stdout, run.stdout
    assert not _alive(pid)
