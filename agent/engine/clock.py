"""The engine's clock: every 80 ms, one step of every active slot, on a fixed schedule.

Calls push caller audio (24 kHz mono float32, any chunk size) into their `CallSlot` and read
agent frames back. The clock owns the backend: joins, leaves and steps all run, in order, on one
worker thread, so the event loop keeps serving sockets while the GPU works. A call whose persona
is not cached waits for its prefill, which runs in chunks behind each tick's step, in the device
time the step leaves before the next tick (`Backend.step`'s `prefill_seconds`): running calls are
never delayed by a join. A WAV voice is encoded the same way (`make_voice`, from a call's setup
on another thread), before any call needs it or while one waits for it. A slot whose caller
frame is missing at a tick gets silence (zero PCM through the codec, so its streams stay aligned)
and the gap is counted; a step that overruns its 80 ms budget is counted and logged, and the
schedule skips ahead rather than bunching steps.

A slot's caller audio is a jitter buffer of its own: what is left after a step waits for the next
one. How much is left depends on when the call's packets happen to arrive between ticks (up to a
frame, 80 ms); a steady excess over `SLACK_SAMPLES` (one 20 ms packet, the lateness it absorbs)
for `TRIM_AFTER_STEPS` steps in a row is cut once (counted), so no call keeps that wait for good.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from agent.contracts.audio import FRAME_SECONDS, FRAME_SIZE
from agent.engine.backend import Backend, CallSetup

if TYPE_CHECKING:
    from agent.engine.voice import VoiceEncoding
    from voices.prompt import VoicePrompt

log = logging.getLogger(__name__)

MAX_BUFFERED_FRAMES = 3  # caller audio beyond this (a sender running fast) is dropped, oldest first
MAX_OUTPUT_FRAMES = 25  # agent audio no one reads (no media attached yet) is kept for 2 s at most
SLACK_SAMPLES = FRAME_SIZE // 4  # caller audio kept waiting after a step, to absorb a late packet
TRIM_AFTER_STEPS = 12  # steps (about a second) with more than that waiting before the excess is cut
PREFILL_MARGIN = 0.008  # seconds of a tick left to the event loop's lateness and the next step's launch


class NoFreeSlot(RuntimeError):
    pass


@dataclass
class AgentFrame:
    pcm: np.ndarray  # [FRAME_SIZE] float32, 24 kHz
    text_token: int  # -1: no text this frame


@dataclass
class SlotStats:
    frames: int = 0
    concealed: int = 0  # ticks with no caller frame: silence was fed
    dropped: int = 0  # caller frames dropped because too many were buffered
    unread: int = 0  # agent frames dropped because no one read them
    trimmed: int = 0  # caller samples cut because more than SLACK_SAMPLES kept waiting


# Sees every step of a slot: the caller frame the engine took (silence if none came) and the
# agent frame it made (None while the model's delay fills). The call's recording and transcript.
FrameListener = Callable[[np.ndarray, "AgentFrame | None"], None]
# Sees the recogniser's output for a slot each step, when the engine has one: the text token of the
# caller's frame and the probabilities of its semantic-VAD heads [heads, classes].
CallerTextListener = Callable[[int, np.ndarray], None]


@dataclass
class CallSlot:
    """One call's seat in the engine: caller audio in, agent frames out."""

    index: int
    listener: FrameListener | None = None
    caller_listener: CallerTextListener | None = None
    stats: SlotStats = field(default_factory=SlotStats)
    output: asyncio.Queue[AgentFrame] = field(default_factory=asyncio.Queue)
    _pending: deque[np.ndarray] = field(default_factory=deque)
    _pending_samples: int = 0
    _excess_steps: int = 0
    closed: bool = False
    heard: asyncio.Event = field(default_factory=asyncio.Event)  # set by the caller's first audio

    def push(self, pcm: np.ndarray) -> None:
        """Add caller audio: 24 kHz mono float32 samples, any length."""
        if self.closed:
            return
        self._pending.append(np.asarray(pcm, dtype=np.float32).reshape(-1))
        if self._pending[-1].size:
            self.heard.set()
        self._pending_samples += self._pending[-1].size
        while self._pending_samples > MAX_BUFFERED_FRAMES * FRAME_SIZE:
            self._drop(FRAME_SIZE)
            self.stats.dropped += 1

    def take_frame(self) -> np.ndarray | None:
        """The next whole frame of caller audio, or None when less than a frame is buffered."""
        if self._pending_samples < FRAME_SIZE:
            self._excess_steps = 0
            return None
        frame = self._drop(FRAME_SIZE)
        self._excess_steps = self._excess_steps + 1 if self._pending_samples > SLACK_SAMPLES else 0
        if self._excess_steps >= TRIM_AFTER_STEPS:
            excess = self._pending_samples - SLACK_SAMPLES
            self._drop(excess)
            self.stats.trimmed += excess
            self._excess_steps = 0
        return frame

    def _drop(self, n: int) -> np.ndarray:
        data = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending.clear()
        rest = data[n:]
        if rest.size:
            self._pending.append(rest)
        self._pending_samples = rest.size
        return data[:n]


@dataclass
class ClockStats:
    steps: int = 0
    overruns: int = 0
    voices: int = 0  # voices made (`make_voice`)
    last_step_seconds: float = 0.0
    step_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=1000))


class EngineClock:
    def __init__(self, backend: Backend, period: float = FRAME_SECONDS):
        self.backend = backend
        self.period = period
        self.stats = ClockStats()
        self._slots: dict[int, CallSlot] = {}
        self._joining: dict[int, asyncio.Future[None]] = {}  # slots whose persona is being prefilled
        self._voices: set[VoiceEncoding] = set()  # queued on the engine, not made yet
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self._task: asyncio.Task | None = None

    @property
    def free_slots(self) -> int:
        return self.backend.num_slots - len(self._slots)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="engine-clock")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._executor.shutdown(wait=True)
        for voice in self._voices:  # their threads wait for them: they must not wait for good
            if not voice.result.done():
                voice.result.set_exception(RuntimeError("the engine stopped before the voice was made"))
        self._voices.clear()

    def make_voice(self, voice: VoiceEncoding) -> VoicePrompt:
        """`voice` encoded by the engine, in chunks between the steps of the next ticks (never delaying
        them): for a thread other than the event loop's (a call's setup), which this blocks until it is
        made; raises its error."""
        if self._loop is None:
            raise RuntimeError("the engine clock was never started")
        self._loop.call_soon_threadsafe(self._queue_voice, voice)
        return voice.result.result()

    def _queue_voice(self, voice: VoiceEncoding) -> None:
        if not self.running:
            voice.result.set_exception(RuntimeError("the engine is stopped"))
            return
        self._voices.add(voice)
        self._executor.submit(self.backend.queue_voice, voice)

    async def join(self, call: CallSetup) -> CallSlot:
        """A slot for `call`, once it is ready: at once when its persona is cached, else once its
        prefill has run, in chunks after the steps of the next ticks (never delaying them)."""
        free = [i for i in range(self.backend.num_slots) if i not in self._slots]
        if not free:
            raise NoFreeSlot(f"all {self.backend.num_slots} slots are busy")
        slot = CallSlot(index=free[0])
        self._slots[slot.index] = slot  # reserved before the await: no one else takes it
        joined = self._joining[slot.index] = asyncio.get_running_loop().create_future()  # not stepped yet
        try:
            if await self._on_engine_thread(self.backend.begin_join, slot.index, call):
                del self._joining[slot.index]
            else:
                await joined  # set by the tick whose prefill finishes it
        except BaseException:
            del self._slots[slot.index]
            if self._joining.pop(slot.index, None) is not None:
                self._executor.submit(self.backend.leave, slot.index)  # after any work queued before it
            raise
        return slot

    async def leave(self, slot: CallSlot) -> None:
        if self._slots.get(slot.index) is not slot:
            return
        slot.closed = True
        slot.listener = slot.caller_listener = None  # a closed slot is never shown again; its listeners hold the call
        del self._slots[slot.index]
        await self._on_engine_thread(self.backend.leave, slot.index)

    async def _on_engine_thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self.period
        while True:
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
            if self._slots or self._voices:
                await self._tick()
            next_tick += self.period
            late = loop.time() - next_tick
            if late > 0:
                self.stats.overruns += 1
                log.warning("engine step overran its budget", extra={"late_ms": round(late * 1000, 1),
                                                                     "active": len(self._slots)})
                next_tick = loop.time()

    async def _tick(self) -> None:
        slots = {index: slot for index, slot in self._slots.items() if index not in self._joining}
        pcm = torch.zeros(self.backend.num_slots, FRAME_SIZE)
        active = torch.zeros(self.backend.num_slots, dtype=torch.bool)
        for index, slot in slots.items():
            active[index] = True
            slot.stats.frames += 1
            frame = slot.take_frame()
            if frame is None:
                slot.stats.concealed += 1
            else:
                pcm[index] = torch.from_numpy(frame)
        # The prefill of joins runs on the device after the step, in what the last step left of the period.
        queued = self._joining or self._voices
        prefill_seconds = self.period - self.stats.last_step_seconds - PREFILL_MARGIN if queued else 0.0
        start = time.monotonic()
        out = await self._on_engine_thread(self.backend.step, pcm, active, prefill_seconds)
        step_seconds = time.monotonic() - start
        made = {voice for voice in self._voices if voice.result.done()}
        self.stats.voices += sum(voice.result.exception() is None for voice in made)
        self._voices -= made
        for index, error in out.joined.items():
            joined = self._joining.pop(index, None)
            if joined is None or joined.done():
                continue
            if error is None:
                joined.set_result(None)
            else:
                joined.set_exception(error)
        self.stats.last_step_seconds = step_seconds
        self.stats.step_seconds.append(step_seconds)
        self.stats.steps += 1
        for index, slot in slots.items():
            if slot.closed:
                continue
            agent = AgentFrame(out.pcm[index].numpy().copy(), int(out.text[index])) if out.ready[index] else None
            if agent is not None:
                if slot.output.qsize() >= MAX_OUTPUT_FRAMES:
                    slot.output.get_nowait()
                    slot.stats.unread += 1
                slot.output.put_nowait(agent)
            if slot.listener is not None:
                slot.listener(pcm[index].numpy().copy(), agent)
            if out.caller_text is not None and slot.caller_listener is not None:
                slot.caller_listener(int(out.caller_text[index]), out.caller_heads[index].numpy())
