"""A user-space lossy relay: stands in for a bad diode link in the demo and the tests.

LossModel is a Gilbert-Elliott channel: in the good state each datagram is dropped with
probability `loss`; with probability `burst_start` the channel enters the bad state,
where every datagram is dropped, and leaves it with probability 1/`burst_length`.
"""

from __future__ import annotations

import random
import socket
import threading
from dataclasses import dataclass

from .scratch import big_receive_buffer


@dataclass
class LossModel:
    loss: float = 0.0
    burst_start: float = 0.0
    burst_length: float = 1.0
    reorder: float = 0.0  # probability a datagram is held back behind the next one
    seed: int | None = None

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._bad = False

    def drop(self) -> bool:
        rng = self._rng
        if self._bad:
            if rng.random() < 1.0 / max(self.burst_length, 1.0):
                self._bad = False
            return True
        if self.burst_start and rng.random() < self.burst_start:
            self._bad = True
            return True
        return rng.random() < self.loss

    def set(self, loss: float = 0.0, burst_start: float = 0.0, burst_length: float = 1.0) -> None:
        """Change the channel mid-run (tests); ends any burst in progress."""
        self.loss, self.burst_start, self.burst_length = loss, burst_start, burst_length
        self._bad = False

    def hold(self) -> bool:
        return bool(self.reorder) and self._rng.random() < self.reorder


class LossyRelay:
    def __init__(self, listen: tuple[str, int], target: tuple[str, int], model: LossModel):
        self.model = model
        self.target = target
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        big_receive_buffer(self.sock)  # the relay must not add kernel drops of its own
        self.sock.bind(listen)
        self.sock.settimeout(0.1)
        self.out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.forwarded = 0
        self.dropped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lossy-relay", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()

    def start(self) -> LossyRelay:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        self.out.close()

    def _run(self) -> None:
        held: bytes | None = None
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                if held is not None:
                    self._send(held)
                    held = None
                continue
            except OSError:
                return
            if self.model.drop():
                self.dropped += 1
                continue
            if held is None and self.model.hold():
                held = data
                continue
            self._send(data)
            if held is not None:
                self._send(held)
                held = None

    def _send(self, data: bytes) -> None:
        try:
            self.out.sendto(data, self.target)
            self.forwarded += 1
        except OSError:
            self.dropped += 1
