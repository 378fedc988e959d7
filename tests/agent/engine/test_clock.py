import asyncio

import numpy as np
import pytest

from agent.contracts.audio import FRAME_SIZE
from agent.engine.backend import CallSetup
from agent.engine.clock import PREFILL_MARGIN, EngineClock, NoFreeSlot
from agent.engine.echo import EchoBackend

PERIOD = 0.01  # a fast clock: the schedule, not the 80 ms, is under test


def frame(value: float) -> np.ndarray:
    return np.full(FRAME_SIZE, value, dtype=np.float32)


async def run_clock(num_slots: int, body, backend=None):
    clock = EngineClock(backend or EchoBackend(num_slots), period=PERIOD)
    clock.start()
    try:
        return await body(clock)
    finally:
        await clock.stop()


def test_echo_returns_each_callers_audio_one_frame_later_in_odd_sized_chunks():
    async def body(clock):
        a, b = await clock.join(CallSetup()), await clock.join(CallSetup())
        for i in (1, 2, 3):
            for part in np.array_split(frame(i), 7):  # packets do not line up with frames
                a.push(part)
            b.push(frame(-i))
        got_a = [await asyncio.wait_for(a.output.get(), 1) for _ in range(4)]
        got_b = [await asyncio.wait_for(b.output.get(), 1) for _ in range(3)]
        return got_a, got_b

    got_a, got_b = asyncio.run(run_clock(2, body))
    assert [f.pcm[0] for f in got_a] == [1, 2, 3, 0]  # then silence: nothing more was sent
    assert [f.pcm[0] for f in got_b] == [-1, -2, -3]
    assert all(np.all(f.pcm == f.pcm[0]) for f in got_a + got_b)
    assert all(f.text_token == -1 for f in got_a)


def test_missing_caller_audio_is_concealed_and_counted():
    async def body(clock):
        slot = await clock.join(CallSetup())
        await asyncio.sleep(PERIOD * 6)
        return slot

    slot = asyncio.run(run_clock(1, body))
    assert slot.stats.frames >= 3
    assert slot.stats.concealed == slot.stats.frames


def test_a_sender_running_fast_is_bounded_and_counted():
    async def body(clock):
        slot = await clock.join(CallSetup())
        for _ in range(10):
            slot.push(frame(1))
        return slot

    slot = asyncio.run(run_clock(1, body))
    assert slot.stats.dropped == 7


def test_slots_are_freed_on_leave_and_refused_when_full():
    async def body(clock):
        a = await clock.join(CallSetup())
        await clock.join(CallSetup())
        with pytest.raises(NoFreeSlot):
            await clock.join(CallSetup())
        await clock.leave(a)
        assert clock.free_slots == 1
        c = await clock.join(CallSetup())
        return a, c

    a, c = asyncio.run(run_clock(2, body))
    assert c.index == a.index and a.closed


def test_agent_audio_no_one_reads_is_bounded_and_counted():
    from agent.engine.clock import MAX_OUTPUT_FRAMES

    async def body(clock):
        slot = await clock.join(CallSetup())
        for _ in range(MAX_OUTPUT_FRAMES + 6):
            slot.push(frame(1))
            await asyncio.sleep(PERIOD)
        return slot

    slot = asyncio.run(run_clock(1, body))
    assert slot.output.qsize() == MAX_OUTPUT_FRAMES
    assert slot.stats.unread >= 3


def test_a_listener_sees_each_step_caller_input_and_agent_output_side_by_side():
    seen: list[tuple[float, float | None]] = []

    async def body(clock):
        slot = await clock.join(CallSetup())
        slot.listener = lambda caller, agent: seen.append((caller[0], None if agent is None else agent.pcm[0]))
        for i in (1, 2, 3):
            slot.push(frame(i))
        await asyncio.sleep(PERIOD * 8)
        return slot

    slot = asyncio.run(run_clock(1, body))
    # The echo answers one frame late: nothing at first, then each step gives the previous input.
    assert seen[:4] == [(1, None), (2, 1), (3, 2), (0, 3)]
    assert slot.stats.frames - 1 <= len(seen) <= slot.stats.frames  # the clock may stop mid-step


def test_a_steady_wait_of_caller_audio_beyond_one_packet_is_trimmed_once():
    from agent.engine.clock import SLACK_SAMPLES, TRIM_AFTER_STEPS, CallSlot

    samples = np.arange(40 * FRAME_SIZE, dtype=np.float32)  # each sample says where it is in the call
    slot, sent = CallSlot(index=0), FRAME_SIZE + 1500
    slot.push(samples[:sent])  # the call's packets arrive 1500 samples ahead of the ticks
    starts = []
    for _ in range(TRIM_AFTER_STEPS + 3):
        starts.append(int(slot.take_frame()[0]))
        slot.push(samples[sent:sent + FRAME_SIZE])  # a frame's worth arrives between ticks
        sent += FRAME_SIZE

    skips = np.diff(starts) - FRAME_SIZE
    cut = 1500 - SLACK_SAMPLES
    assert skips.tolist() == [0] * (TRIM_AFTER_STEPS - 1) + [cut] + [0] * 2  # one cut, then steady
    assert slot.stats.trimmed == cut
    assert sent - (starts[-1] + FRAME_SIZE) == FRAME_SIZE + SLACK_SAMPLES  # the next step finds a frame and the slack


def test_a_wait_that_comes_and_goes_with_jitter_is_kept():
    from agent.engine.clock import TRIM_AFTER_STEPS, CallSlot

    slot = CallSlot(index=0)
    slot.push(np.zeros(FRAME_SIZE, np.float32))
    for step in range(3 * TRIM_AFTER_STEPS):
        slot.take_frame()
        slot.push(np.zeros(FRAME_SIZE + (960 if step % 2 == 0 else -960), np.float32))  # bunched, then sparse

    assert slot.stats.trimmed == 0


class ColdPersonas(EchoBackend):
    """The echo, where a call with a prompt is ready after `PREFILL_STEPS` steps (as the model's backend,
    each step runs some prefill while one is queued, whatever the time it is given)."""

    PREFILL_STEPS = 3

    def __init__(self, num_slots: int):
        super().__init__(num_slots)
        self.waiting: dict[int, int] = {}  # slot: prefilling steps left
        self.actives: list[list[bool]] = []
        self.budgets: list[float] = []

    def begin_join(self, slot, call):
        super().begin_join(slot, call)
        if call.prompt is None:
            return True
        self.waiting[slot] = self.PREFILL_STEPS
        return False

    def leave(self, slot):
        super().leave(slot)
        self.waiting.pop(slot, None)

    def step(self, pcm, active, prefill_seconds=0.0):
        self.actives.append(active.tolist())
        out = super().step(pcm, active)
        if self.waiting:
            self.budgets.append(prefill_seconds)
            for slot in self.waiting:
                self.waiting[slot] -= 1
            out.joined = {slot: None for slot, left in self.waiting.items() if left == 0}
            for slot in out.joined:
                del self.waiting[slot]
        return out


def test_a_cold_join_waits_for_its_prefill_while_the_running_call_is_stepped_each_tick():
    backend = ColdPersonas(2)

    async def body(clock):
        await clock.join(CallSetup())  # the running call
        await asyncio.sleep(PERIOD * 2)
        steps_before = clock.stats.steps
        cold = await clock.join(CallSetup(prompt="a persona"))
        return cold, clock.stats.steps - steps_before

    cold, steps_while_joining = asyncio.run(run_clock(2, body, backend))
    waits = ColdPersonas.PREFILL_STEPS
    assert cold.index == 1 and len(backend.budgets) == waits
    assert steps_while_joining >= waits  # the running call was stepped at every tick meanwhile
    assert [active[1] for active in backend.actives[-steps_while_joining:][:waits]] == [False] * waits
    assert all(budget < PERIOD - PREFILL_MARGIN for budget in backend.budgets)  # what the last step left


def test_a_join_given_up_while_its_persona_is_prefilled_frees_its_slot():
    backend = ColdPersonas(1)

    async def body(clock):
        join = asyncio.ensure_future(clock.join(CallSetup(prompt="a persona")))
        await asyncio.sleep(PERIOD * 1.5)
        join.cancel()
        with pytest.raises(asyncio.CancelledError):
            await join
        await asyncio.sleep(PERIOD)
        return clock.free_slots

    assert asyncio.run(run_clock(1, body, backend)) == 1 and backend.waiting == {}
