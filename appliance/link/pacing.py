"""Token-bucket pacing in bits per second, pure: the caller passes the time in.

The sender asks how long to wait before a batch of bytes may go; it sleeps once per
batch (GSO batches carry tens of datagrams), never once per datagram.
"""

from __future__ import annotations


class TokenBucket:
    def __init__(self, rate_bits: float, burst_bytes: int, now: float):
        self.rate = rate_bits / 8.0  # bytes per second; 0 means unpaced
        self.burst = float(burst_bytes)
        self.tokens = float(burst_bytes)
        self.stamp = now

    def delay(self, nbytes: int, now: float) -> float:
        """Seconds to wait before nbytes may be sent; the bytes are then taken."""
        if self.rate <= 0:
            return 0.0
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= nbytes
        if self.tokens >= 0:
            return 0.0
        return -self.tokens / self.rate
