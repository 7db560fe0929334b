"""The egress's write-ahead frontier (appliance/frontier.py): no batch is written to a
sink before the frontier covering it is on disk, and a busy link's writes are grouped."""

from __future__ import annotations

import threading
import time

from appliance import frontier as frontier_mod
from appliance.frontier import FrontierWriter


def test_a_sink_waits_for_its_generation_and_writes_are_grouped(tmp_path, monkeypatch):
    writes: list[int] = []  # the block frontier of each write, in order
    events: list[str] = []
    monkeypatch.setattr(frontier_mod, "save_egress_session",
                        lambda d, floor, cp, delivered: (time.sleep(0.005), writes.append(cp),
                                                         events.append(f"write {cp}")))
    w = FrontierWriter(str(tmp_path), lambda *a, **k: None, {}, interval=0.05)
    done = threading.Event()
    writer = threading.Thread(target=w.run, args=(done,))
    writer.start()
    try:
        gen = w.hand()
        sink = threading.Thread(target=lambda: (w.wait_covered(gen), events.append("sink")))
        sink.start()
        time.sleep(0.02)
        assert events == []  # handed, not posted: the sink must not have written
        w.post(0, 1, time.monotonic())
        sink.join(2)
        assert events == ["write 1", "sink"]
        start = time.monotonic()
        for i in range(2, 42):  # a busy link: a snapshot every 5 ms for 0.2 s
            w.hand()
            if w.wants_post(time.monotonic()):
                w.post(0, i, time.monotonic())
            time.sleep(0.005)
        w.post(0, 41, time.monotonic())
        last = w.handed_gen
        w.wait_covered(last)
        elapsed = time.monotonic() - start
    finally:
        done.set()
        writer.join(2)
    assert writes[-1] == 41 and writes == sorted(writes)
    assert len(writes) - 1 <= elapsed / 0.05 + 2  # at most one write per interval
