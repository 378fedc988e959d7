"""How much persona prefill fits in the device's time between two steps: the cost of one forward.

A prefill forward of T prompt steps on one row costs the device a fixed part (every weight read
once: it is memory bound) plus a part per step (the arithmetic). Both are measured by `calibrate`
before any call joins, as device time alone: the forward is queued behind a spin of the device, so
the host's launches (which the engine hides behind the step) are not counted. Uncalibrated (on the
CPU), every prefill runs in one pass.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import torch

MIN_FRAMES = 16  # the least steps of a forward when a prefill call finds no time: joins still progress
SPIN_CYCLES = 400_000_000  # about 0.2 s of device spin: a forward's launches all queue behind it


class PrefillPacer:
    def __init__(self, device: torch.device, fixed_seconds: float = 0.0, seconds_per_frame: float = 0.0,
                 min_frames: int = MIN_FRAMES):
        self.device = device
        self.fixed_seconds = fixed_seconds
        self.seconds_per_frame = seconds_per_frame
        self.min_frames = min_frames
        self._forwards = 0

    def cost(self, frames: int) -> float:
        """Expected device seconds of one forward of `frames` steps."""
        return self.fixed_seconds + self.seconds_per_frame * frames

    def begin(self) -> None:
        """A prefill call starts."""
        self._forwards = 0

    def frames_within(self, seconds: float) -> int:
        """Steps of the next forward that fit in `seconds` (0: none more in this prefill call)."""
        if self.seconds_per_frame <= 0:
            return sys.maxsize
        frames = int((seconds - self.fixed_seconds) / self.seconds_per_frame)
        if frames >= self.min_frames:
            return frames
        return self.min_frames if self._forwards == 0 else 0

    def ran(self, frames: int) -> None:
        self._forwards += 1

    def calibrate(self, forward: Callable[[int], None], lengths: list[int]) -> None:
        """Fit the fixed and per-step device costs to timed forwards of `lengths` steps (`fit_costs`)."""
        def device_seconds(frames: int) -> float:
            forward(frames)  # the first forward of a shape may pick kernels: not timed
            torch.cuda.synchronize(self.device)
            torch.cuda._sleep(SPIN_CYCLES)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            forward(frames)
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000

        self.fixed_seconds, self.seconds_per_frame = fit_costs({frames: device_seconds(frames) for frames in lengths})


def fit_costs(seconds: dict[int, float]) -> tuple[float, float]:
    """(fixed, per step) seconds of a forward from timed forwards {steps: seconds}, two lengths at least.

    The cost per step is the slope from the shortest to the longest; the fixed part is the highest
    any timed length needs beside it, so no timed length costs more than the pacer expects (a short
    chunk's kernels do not scale down with its steps: on an H200 FP8 ones took some ms more than a
    line through 64 and 1024 steps gave them, and ticks overran by as much).
    """
    short, long = min(seconds), max(seconds)
    per_frame = max(seconds[long] - seconds[short], 1e-9) / (long - short)
    return max(0.0, max(t - frames * per_frame for frames, t in seconds.items())), per_frame


class MeasuredPacer:
    """Pacing of chunked work whose cost per frame is learned as it runs: the host's time from
    `frames_within` to `ran` (on the CPU the work itself; on a GPU its launches, which for one
    row of Mimi's small kernels outlast their device time). Until a chunk is measured, one frame.

    The same calls as `PrefillPacer`, so `ModelBackend` runs either kind of work the same way.
    """

    def __init__(self, min_frames: int = 1):
        self.min_frames = min_frames
        self.seconds_per_frame = 0.0  # unknown until a chunk ran
        self._chunks = 0
        self._asked = 0.0

    def cost(self, frames: int) -> float:
        return self.seconds_per_frame * frames

    def begin(self) -> None:
        self._chunks = 0

    def frames_within(self, seconds: float) -> int:
        self._asked = time.perf_counter()
        frames = int(seconds / self.seconds_per_frame) if self.seconds_per_frame > 0 else 0
        if frames >= self.min_frames:
            return frames
        return self.min_frames if self._chunks == 0 else 0

    def ran(self, frames: int) -> None:
        self._chunks += 1
        if frames > 0:
            self.seconds_per_frame = (time.perf_counter() - self._asked) / frames
