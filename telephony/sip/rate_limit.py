"""Per-source limits on bad SIP requests: a token bucket for each source address.

Each bad request (unparseable, unknown line, failed authentication) takes a token from its
source's bucket; a source whose bucket is empty is ignored until it refills. Good requests take
nothing, so a trunk with calls in progress is never slowed by someone else's flood.
"""

from __future__ import annotations

import time
from collections import OrderedDict


class SourceLimiter:
    def __init__(self, rate: float = 5.0, burst: float = 30.0, max_sources: int = 10_000):
        self.rate = rate  # tokens per second
        self.burst = burst
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # host -> (tokens, at)

    def _tokens(self, host: str, now: float) -> float:
        tokens, at = self._buckets.get(host, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.rate)

    def allowed(self, host: str, now: float | None = None) -> bool:
        """False while `host` has spent its bad-request allowance."""
        if host not in self._buckets:
            return True
        return self._tokens(host, time.monotonic() if now is None else now) >= 1.0

    def penalise(self, host: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._buckets[host] = (max(0.0, self._tokens(host, now) - 1.0), now)
        self._buckets.move_to_end(host)
        while len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)
