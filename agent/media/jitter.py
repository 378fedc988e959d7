"""A jitter buffer for audio: packets in as they arrive, one packet's payload out per playout tick.

The buffer orders packets by sequence number (16-bit, wrapping) and hands them out in order, one
per tick of the receiver's playout clock. A packet that is missing when its turn comes is reported
as None (the receiver conceals it); a packet that arrives after its turn, or twice, is dropped.
When the sender runs ahead (its clock is faster, or a burst arrived) and more than `max_depth`
packets wait, the oldest are skipped so the delay stays bounded; after a long gap the buffer
resynchronises on the next packet.
"""

from __future__ import annotations

from dataclasses import dataclass

RESYNC_DISTANCE = 1000  # a packet this far from the playout point starts a new sequence


@dataclass
class JitterStats:
    received: int = 0
    played: int = 0
    missing: int = 0  # ticks whose packet never came (concealed)
    late: int = 0  # packets that came after their turn
    duplicate: int = 0
    skipped: int = 0  # packets dropped to keep the delay bounded


class JitterBuffer:
    def __init__(self, max_depth: int = 8):
        self.max_depth = max_depth
        self.stats = JitterStats()
        self._packets: dict[int, bytes] = {}  # extended sequence number -> payload
        self._next: int | None = None  # extended sequence number of the next packet to play
        self._highest: int | None = None

    @property
    def depth(self) -> int:
        """Packets waiting, counted from the playout point to the highest received."""
        if self._next is None or self._highest is None:
            return 0
        return max(0, self._highest - self._next + 1)

    def put(self, sequence: int, payload: bytes) -> None:
        extended = self._extend(sequence)
        self.stats.received += 1
        if self._next is None or abs(extended - self._next) > RESYNC_DISTANCE:
            self._packets.clear()
            self._next = self._highest = extended
        if extended < self._next:
            self.stats.late += 1
            return
        if extended in self._packets:
            self.stats.duplicate += 1
            return
        self._packets[extended] = payload
        self._highest = max(self._highest, extended)
        while self.depth > self.max_depth:
            if self._packets.pop(self._next, None) is not None:
                self.stats.skipped += 1
            self._next += 1

    def pop(self) -> bytes | None:
        """The payload due at this tick; None if it is missing (or nothing was ever received)."""
        if self._next is None:
            return None
        payload = self._packets.pop(self._next, None)
        if payload is None and self.depth == 0:
            return None  # the sender is silent: wait for it rather than running ahead of it
        self._next += 1
        if payload is None:
            self.stats.missing += 1
        else:
            self.stats.played += 1
        return payload

    def _extend(self, sequence: int) -> int:
        """The 16-bit sequence number unwrapped next to the last one seen."""
        if self._highest is None:
            return sequence
        base = self._highest - (self._highest & 0xFFFF)
        candidates = (base - 0x10000 + sequence, base + sequence, base + 0x10000 + sequence)
        return min(candidates, key=lambda c: abs(c - self._highest))
