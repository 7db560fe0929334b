"""Pin the calling thread to one CPU (Linux: sched_setaffinity takes a thread id)."""

from __future__ import annotations

import os
import threading


def pin_current_thread(cpu: int | None) -> bool:
    if cpu is None:
        return False
    try:
        os.sched_setaffinity(threading.get_native_id(), {cpu})
    except (OSError, AttributeError):
        return False
    return True
