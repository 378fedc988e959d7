"""A jitter buffer for audio: packets in as they arrive, one packet's payload out per playout tick.

The buffer orders packets by sequence number (16-bit, wrapping) and hands them out in order, one
per tick of the receiver's playout clock. A packet that is missing when its turn comes is reported
as None (the receiver conceals it); a packet that arrives after its turn, or twice, is dropped.
When the sender runs ahead (its clock is faster, or a burst arrived) and more than `max_depth`
packets wait, the oldest are skipped so the delay stays bounded; after a long gap the buffer
resynchronises on the next packet.

How long a packet waits before it plays (the playout depth) adapts to the network: `PlayoutDepth`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

RESYNC_DISTANCE = 1000  # a packet this far from the playout point starts a new sequence
PACKET_SECONDS = 0.020
NEW_STREAM_SECONDS = 1.0  # a jump in a packet's transit this large is another stream (or a wrapped timestamp)


@dataclass
class JitterStats:
    received: int = 0
    played: int = 0
    missing: int = 0  # ticks whose packet never came (concealed)
    late: int = 0  # packets that came after their turn
    duplicate: int = 0
    skipped: int = 0  # packets dropped to keep the delay bounded
    raised: int = 0  # ticks held to make the playout depth a packet deeper
    lowered: int = 0  # quiet frames dropped to make it a packet shallower
    deepest: int = 0  # the deepest playout depth the call had, in packets


class PlayoutDepth:
    """How many packets of arrival jitter the playout absorbs: it follows the network.

    A packet's transit `d` (its arrival time less its media time, from the RTP timestamp) differs
    from the fastest packet's by the network's jitter. Over the last `window` packets, playout at a
    depth of D packets lets a packet be (D - 1) x 20 ms + `margin` later than the fastest one and
    still be in time (`margin`: how long after its due time the first packet plays). The needed
    depth is the smallest that covers the 95th percentile of that lateness, between `start` (a clean
    line keeps the lowest delay) and `maximum`. The depth in use is measured at each playout from
    the offset between the playout clock and the media time of the packet it plays.

    Deeper: the playout holds one tick (20 ms without caller audio) whenever the depth in use is
    less than needed; a packet late enough to be concealed is the price of each jittery packet
    until then, so it grows at once. Shallower, slowly: only when a whole window has passed since
    the last change, when even the latest packet of the window would have been in time one packet
    shallower (hysteresis against the percentile), and only by dropping a frame the caller says is
    quiet, so speech is not cut. NetEQ does the same with time stretching; this is its simple form.
    """

    def __init__(self, start: int = 1, maximum: int = 6, window: int = 250, margin: float = 0.010):
        self.start, self.maximum = start, max(start, maximum)
        self.margin = margin
        self._transits: deque[float] = deque(maxlen=window)
        self._offset: float | None = None  # playout time less media time, at the last packet played
        self._since_change = 0  # packets arrived since the depth last changed

    def arrived(self, arrival: float, media_time: float) -> None:
        transit = arrival - media_time
        if self._transits and abs(transit - self._transits[-1]) > NEW_STREAM_SECONDS:
            self._transits.clear()
            self._offset = None
        self._transits.append(transit)
        self._since_change += 1

    def played(self, now: float, media_time: float) -> None:
        self._offset = now - media_time

    @property
    def depth(self) -> int | None:
        """The depth in use, in packets; None before a packet has arrived and played."""
        if self._offset is None or not self._transits:
            return None
        return 1 + max(0, round((self._offset - min(self._transits) - self.margin) / PACKET_SECONDS))

    def needed(self, quantile: float = 0.95) -> int:
        """The depth that covers the window's lateness up to `quantile` (1.0: all of it)."""
        if not self._transits:
            return self.start
        ordered = sorted(self._transits)
        late = ordered[min(len(ordered) - 1, math.ceil(quantile * len(ordered)) - 1)] - ordered[0]
        packets = 1 + max(0, math.ceil((late - self.margin) / PACKET_SECONDS))
        return min(self.maximum, max(self.start, packets))

    def should_hold(self) -> bool:
        """Whether to hold this tick: the depth in use is less than needed."""
        depth = self.depth
        if depth is None or depth >= self.needed():
            return False
        self._changed(+1)
        return True

    def may_drop(self) -> bool:
        """Whether a quiet frame may be dropped: calm for a window, and deeper than all of it needs."""
        depth = self.depth
        if depth is None or self._since_change < (self._transits.maxlen or 0) or depth <= self.needed(1.0):
            return False
        self._changed(-1)
        return True

    def _changed(self, packets: int) -> None:
        self._since_change = 0
        if self._offset is not None:
            self._offset += packets * PACKET_SECONDS  # until the next packet played measures it


class JitterBuffer:
    def __init__(self, max_depth: int = 8, playout: PlayoutDepth | None = None):
        self.playout = playout or PlayoutDepth()
        self.max_depth = max_depth
        self.stats = JitterStats()
        self._packets: dict[int, tuple[bytes, float | None]] = {}  # extended sequence number -> payload, media time
        self._next: int | None = None  # extended sequence number of the next packet to play
        self._highest: int | None = None

    @property
    def depth(self) -> int:
        """Packets waiting, counted from the playout point to the highest received."""
        if self._next is None or self._highest is None:
            return 0
        return max(0, self._highest - self._next + 1)

    def put(self, sequence: int, payload: bytes, arrival: float | None = None, media_time: float | None = None) -> None:
        """A packet that came at `arrival` (loop time) with `media_time` (its RTP timestamp in
        seconds; None for a telephone event's, whose timestamps mark the event's start)."""
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
        if arrival is not None and media_time is not None:
            self.playout.arrived(arrival, media_time)
        self._packets[extended] = (payload, media_time)
        self._highest = max(self._highest, extended)
        while self.depth > self.max_depth:
            if self._packets.pop(self._next, None) is not None:
                self.stats.skipped += 1
            self._next += 1

    def hold(self) -> bool:
        """Whether this tick plays nothing, to make the playout a packet deeper (counted)."""
        if not self.playout.should_hold():
            return False
        self.stats.raised += 1
        self.stats.deepest = max(self.stats.deepest, self.playout.depth or 0)
        return True

    def drop_quiet(self) -> bool:
        """Called with a quiet frame just popped: whether to drop it, a packet shallower (counted)."""
        if self.depth == 0 or not self.playout.may_drop():
            return False
        self.stats.lowered += 1
        return True

    def pop(self, now: float | None = None) -> bytes | None:
        """The payload due at this tick (played at `now`, the tick's time on the loop's clock);
        None if it is missing (or nothing was ever received)."""
        if self._next is None:
            return None
        payload, media_time = self._packets.pop(self._next, (None, None))
        if now is not None and media_time is not None:
            self.playout.played(now, media_time)
            self.stats.deepest = max(self.stats.deepest, self.playout.depth or 0)
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
