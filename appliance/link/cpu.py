"""The calling thread's place on the machine: its CPU (Linux: sched_setaffinity takes a
thread id) and its name as `top -H`, `ps -L` and `/proc/<pid>/task/*/comm` show it."""

from __future__ import annotations

import os
import threading

COMM_MAX = 15  # bytes of a thread's name the kernel keeps (TASK_COMM_LEN - 1)


def pin_current_thread(cpu: int | None) -> bool:
    if cpu is None:
        return False
    try:
        os.sched_setaffinity(threading.get_native_id(), {cpu})
    except (OSError, AttributeError):
        return False
    return True


def name_current_thread(name: str) -> bool:
    """Give the calling thread `name` (its first 15 bytes) in the kernel, so an operator
    (or a benchmark) can tell the hot link thread from a sink's or librdkafka's. CPython
    3.11 leaves every thread with the process's name. False where the kernel refuses."""
    comm = name.encode("utf-8", "replace")[:COMM_MAX]
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "wb") as f:
            f.write(comm)
    except OSError:
        return False
    return True
