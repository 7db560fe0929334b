"""Token-bucket pacing, pure: the caller passes the time in.

The sender asks how long to wait before a batch of bytes may go; it sleeps once per
batch (GSO batches carry tens of datagrams), never once per datagram. The same bucket
counts records (link.rate_records): an egress's limit is records per second as well as
bytes, since each record costs it a parse and a hand-off whatever its size.
"""

from __future__ import annotations


class TokenBucket:
    def __init__(self, rate_bits: float, burst_bytes: int, now: float):
        self.rate = rate_bits / 8.0  # bytes per second; 0 means unpaced
        self.burst = float(burst_bytes)
        self.tokens = float(burst_bytes)
        self.stamp = now

    @classmethod
    def counting(cls, rate_per_s: float, burst: int, now: float) -> TokenBucket:
        """A bucket of units (records) per second rather than bits."""
        return cls(rate_per_s * 8.0, burst, now)

    def delay(self, nbytes: int, now: float) -> float:
        """Seconds to wait before nbytes (or units) may be sent; they are then taken."""
        if self.rate <= 0:
            return 0.0
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= nbytes
        if self.tokens >= 0:
            return 0.0
        return -self.tokens / self.rate
