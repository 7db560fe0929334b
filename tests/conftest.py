import sys

import pytest

from tests import leaks

pytest_plugins = ["tests.kafka.fixtures"]

_TOKEN = leaks.mark_this_run()


@pytest.fixture(autouse=True)
def _no_daemon_outlives_its_test():
    """A test that fails (or times out: pytest-timeout raises in the test) before it
    stops its daemons still gets them stopped: SIGTERM, then SIGKILL after a grace."""
    yield
    daemons = sys.modules.get("tests.integration.daemons")  # imported by tests that start any
    if daemons is not None:
        daemons.stop_leftover_daemons()


def pytest_sessionfinish(session, exitstatus):
    """Fail the run if anything it started is still alive (and kill it)."""
    left = leaks.carriers(_TOKEN)
    if not left:
        return
    leaks.kill_all(left)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"  pid {pid}: {cmd[:200]}" for pid, cmd in sorted(left.items())]
    message = ("processes started by this test run were still alive at its end "
               "(now killed):\n" + "\n".join(lines))
    if reporter is not None:
        reporter.write_line(message, red=True)
    else:
        print(message)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
