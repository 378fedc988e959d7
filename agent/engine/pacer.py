"""How much persona prefill fits in the time between two steps: the cost of one prefill forward.

A forward of T prompt steps on one row costs a fixed part (every weight read once: it is memory
bound) plus a part per step (the arithmetic). Both are measured by `calibrate` before any call
joins, with a sync. While calls run, each `prefill` call's forwards are timed with CUDA events that
are read only once they are complete (after the next step's sync): the cost per step then follows
what the device did, never below the calibrated one, so the budget is not overbooked. Uncalibrated
(on the CPU), every prefill runs in one pass.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable

import torch

MIN_FRAMES = 16  # the least steps of a forward when a prefill call finds no time: joins still progress
OBSERVED = 32  # prefill calls whose measured cost per step is kept


class PrefillPacer:
    def __init__(self, device: torch.device, fixed_seconds: float = 0.0, seconds_per_frame: float = 0.0,
                 min_frames: int = MIN_FRAMES):
        self.device = device
        self.min_frames = min_frames
        self.fixed_seconds = fixed_seconds
        self.calibrated_per_frame = seconds_per_frame
        self._observed: deque[float] = deque(maxlen=OBSERVED)
        self._forwards = self._frames = 0
        self._start: torch.cuda.Event | None = None
        self._timed: tuple[torch.cuda.Event, torch.cuda.Event, int, int] | None = None  # start, end, forwards, frames

    @property
    def seconds_per_frame(self) -> float:
        return max(self.calibrated_per_frame, max(self._observed, default=0.0))

    def cost(self, frames: int) -> float:
        """Expected device seconds of one forward of `frames` steps."""
        return self.fixed_seconds + self.seconds_per_frame * frames

    def frames_within(self, seconds: float) -> int:
        """Steps of the next forward that fit in `seconds` (0: none more in this prefill call)."""
        if self.seconds_per_frame <= 0:
            return sys.maxsize
        frames = int((seconds - self.fixed_seconds) / self.seconds_per_frame)
        if frames >= self.min_frames:
            return frames
        return self.min_frames if self._forwards == 0 else 0

    def begin(self) -> None:
        """A prefill call starts: learn from the last one if the device has finished it."""
        self._learn()
        self._forwards = self._frames = 0
        if self.device.type == "cuda":
            self._start = torch.cuda.Event(enable_timing=True)
            self._start.record()

    def ran(self, frames: int) -> None:
        self._forwards += 1
        self._frames += frames

    def end(self) -> None:
        if self._start is not None and self._forwards:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._timed = (self._start, end, self._forwards, self._frames)
        self._start = None

    def _learn(self) -> None:
        if self._timed is None or not self._timed[1].query():
            return
        start, end, forwards, frames = self._timed
        self._timed = None
        seconds = start.elapsed_time(end) / 1000
        self._observed.append(max(0.0, seconds - forwards * self.fixed_seconds) / frames)

    def calibrate(self, forward: Callable[[int], None], small: int = 32, large: int = 512) -> None:
        """Fit the fixed and per-step costs to two timed forwards of `small` and `large` steps (syncs)."""
        def timed(frames: int) -> float:
            forward(frames)  # the first forward of a shape may pick kernels: not timed
            torch.cuda.synchronize(self.device)
            start = time.perf_counter()
            forward(frames)
            torch.cuda.synchronize(self.device)
            return time.perf_counter() - start

        t_small, t_large = timed(small), timed(large)
        self.calibrated_per_frame = max(t_large - t_small, 1e-9) / (large - small)
        self.fixed_seconds = max(0.0, t_small - small * self.calibrated_per_frame)
