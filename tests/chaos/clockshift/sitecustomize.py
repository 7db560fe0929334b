"""Moves the wall clock of one daemon the chaos runner starts (clock_back faults).

Python imports `sitecustomize` at start-up from sys.path; the runner puts this
directory first on PYTHONPATH of a daemon it starts with DDC_CHAOS_CLOCK_SHIFT set,
and every wall-clock read of the daemon's Python code (time.time, time.time_ns: the
session epoch, heartbeat and log timestamps) is moved by that many seconds. The
monotonic clock is left alone, as on an edge box without RTC whose clock was set back.

Why not libfaketime: Debian 12's libfaketime 0.9.10 hangs confluent-kafka's
Consumer() in its pthread_cond_timedwait interposition (in 6 starts of 6 here,
FAKETIME=-1h FAKETIME_DONT_FAKE_MONOTONIC=1; libfaketime issues #469, #503), and the
machine's own clock is shared by every other process (brokers, other tests). Time
namespaces cannot move CLOCK_REALTIME.
"""

import os
import time

_SHIFT = float(os.environ.get("DDC_CHAOS_CLOCK_SHIFT") or 0)
if _SHIFT:
    _time, _time_ns = time.time, time.time_ns
    time.time = lambda: _time() + _SHIFT
    time.time_ns = lambda: _time_ns() + int(_SHIFT * 1e9)
