"""Token buckets for the flood guards: frames per connection, handshakes per address.

Both are local to one process on purpose: they protect that process's event loop, and no other
process needs them. Across N processes an address may open up to N times the handshake rate.
"""

from __future__ import annotations

import time


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    @property
    def idle(self) -> bool:
        """Full again: nothing to remember about this client."""
        return self.tokens + (time.monotonic() - self.stamp) * self.rate >= self.burst


class AddressLimiter:
    """One bucket per client address; full buckets are forgotten by :meth:`prune`."""

    def __init__(self) -> None:
        self.buckets: dict[str, TokenBucket] = {}

    def allow(self, address: str, rate: float) -> bool:
        bucket = self.buckets.get(address)
        if bucket is None:
            bucket = self.buckets[address] = TokenBucket(rate, max(1.0, rate))
        return bucket.take()

    def prune(self) -> None:
        for address in [a for a, b in self.buckets.items() if b.idle]:
            del self.buckets[address]
