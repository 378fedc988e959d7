"""Whether a call kept real time, from what its caller received: how much of the caller's sound came
back (an echo line returns all of it, unless the engine fell behind and dropped some), and how late
each packet came after the schedule its media timestamps set.

Lateness is measured from the least late packet: a stream paced in real time has every packet at
its place, give or take scheduling noise; a stream that stalls has a tail of late ones (its p99).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RealTime:
    echoed: float  # seconds of sound that came back per second sent (1: all of it)
    late_p99_ms: float  # the 99th percentile of packet lateness
    late_max_ms: float


def lateness(media_seconds: Sequence[float], arrivals: Sequence[float]) -> np.ndarray:
    """Seconds each packet came after its place on the schedule (media time + the least late offset)."""
    offsets = np.asarray(arrivals, np.float64) - np.asarray(media_seconds, np.float64)
    return offsets - offsets.min() if offsets.size else offsets


def sounding_frames(frames: Sequence[np.ndarray], floor: float) -> int:
    """Frames whose RMS is above `floor` (silence, or a stall's concealment, is below it)."""
    return sum(1 for f in frames if f.size and np.sqrt(np.mean(np.square(f, dtype=np.float64))) > floor)


def real_time(sent_frames: int, heard: Sequence[np.ndarray], floor: float, media_seconds: Sequence[float],
              arrivals: Sequence[float]) -> RealTime:
    """`sent_frames` frames of steady sound were sent; `heard` came back, packet by packet, in frames of
    the same length, each packet at its media time and arrival time."""
    late = lateness(media_seconds, arrivals) * 1000
    return RealTime(round(sounding_frames(heard, floor) / max(sent_frames, 1), 3),
                    round(float(np.percentile(late, 99)), 1) if late.size else float("nan"),
                    round(float(late.max()), 1) if late.size else float("nan"))
