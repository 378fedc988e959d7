"""The webhook outbox: events that must reach a tenant, kept durably until they do.

An event is appended once (its id makes a second append a no-op while the first is still known)
and then claimed, attempted, and marked delivered, retried later, or dead-lettered. Events that
share a key (a call) are delivered in the order they were appended: the next one is claimed only
when the one before it is delivered or dead-lettered. A claim is a lease: if its holder dies
before it says how the attempt went, the event is claimed again when the lease runs out, so an
event may be attempted more than once (at-least-once; receivers deduplicate on the id).

Two implementations behave the same (the same tests run against both):
`telephony.events.redis_outbox.RedisOutbox` (distributed mode: a Redis stream and consumer group,
shared by every control plane) and `telephony.events.file_outbox.FileOutbox` (embedded mode: an
append-only journal file of one process).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

SENT_MEMORY_SECONDS = 3600.0  # an id delivered this recently is not appended again
DELIVERED_LISTED = 100  # a tenant's deliveries kept for its admins (for SENT_MEMORY_SECONDS at most)


@dataclass(frozen=True)
class OutboxEvent:
    id: str  # the webhook-id: stable, never containing '.'
    tenant: str
    key: str  # events of one key (a call) are delivered in order
    type: str
    body: bytes  # the JSON payload, exactly as it is signed and sent


@dataclass(frozen=True)
class Claim:
    event: OutboxEvent
    created_at: float  # when the event was appended (or replayed), seconds since the epoch
    attempts: int  # failed attempts before this one


@dataclass(frozen=True)
class Undelivered:
    """An event still being tried."""

    event: OutboxEvent
    created_at: float
    attempts: int  # failed attempts so far
    error: str  # how the last one failed ("" before the first)
    retry_at: float | None  # when a failed event is tried again (None: it has not failed yet)


@dataclass(frozen=True)
class DeadLetter:
    event: OutboxEvent
    created_at: float
    attempts: int  # all of them, the last included
    error: str  # how the last attempt failed
    died_at: float


@dataclass(frozen=True)
class Delivered:
    """An event its receiver took, as its admins see it (the body is not kept)."""

    event_id: str
    type: str
    key: str
    attempts: int  # all of them, the one taken included
    status: int  # the receiver's answer, a 2xx
    delivered_at: float


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: about first, 2 x first, 4 x first ... up to `cap`, each
    drawn between half and all of that, until `max_age` after the event was made."""

    first: float = 5.0
    cap: float = 3600.0
    max_age: float = 86_400.0

    def delay(self, attempts: int, retry_after: float | None = None) -> float:
        """Seconds to wait after the `attempts`-th failed attempt (a receiver's Retry-After counts)."""
        ceiling = min(self.cap, self.first * 2.0 ** (attempts - 1))
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.cap))
        return delay


class Outbox(Protocol):
    async def append(self, events: Sequence[OutboxEvent]) -> int:
        """Store events durably (returns once they are); returns how many were new."""

    async def claim(self, limit: int, wait: float) -> list[Claim]:
        """Up to `limit` events due now, each the oldest undelivered of its key, leased to the
        caller; waits up to `wait` seconds for one when none is due."""

    async def delivered(self, claim: Claim, status: int | None = None) -> None:
        """The receiver took it, answering `status`; None: there was no receiver (it is not listed)."""

    async def recently_delivered(self, tenant: str) -> list[Delivered]:
        """The tenant's last DELIVERED_LISTED deliveries of the past SENT_MEMORY_SECONDS, newest first."""

    async def retry_later(self, claim: Claim, due: float, error: str) -> None:
        """The attempt failed: claim the event again at `due` (seconds since the epoch)."""

    async def dead_letter(self, claim: Claim, error: str) -> None:
        """The attempt failed and is the last: the next event of its key may go."""

    async def dead_letters(self, tenant: str) -> list[DeadLetter]:
        """The tenant's dead letters, oldest death first."""

    async def undelivered(self, tenant: str, limit: int) -> list[Undelivered]:
        """Up to `limit` of the tenant's events neither delivered nor dead, oldest first."""

    async def replay(self, tenant: str, event_id: str) -> bool:
        """Queue a dead letter of the tenant again, as if just made; False if there is none by that id."""

    async def pending(self) -> int:
        """Events not yet delivered nor dead."""

    async def close(self) -> None: ...
