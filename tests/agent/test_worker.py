import asyncio
import time

import numpy as np
import torch
import pytest

from agent.contracts.audio import FRAME_SIZE
from agent.contracts.calls import (
    CallDetails,
    CallSetupFailed,
    SessionExists,
    WorkerDraining,
    WorkerFull,
)
from agent.engine.backend import CallSetup
from agent.engine.clock import CallSlot
from agent.worker import Worker, WorkerModel, call_seed, echo_model, load_worker_model
from personas.schema import Persona
from telephony.control.memory_registry import MemoryRegistry
from telephony.control.registry import NewCall

pytestmark = pytest.mark.anyio

PERSONA = Persona(role="You work for Acme and your name is Maya.", voice="NATF2")


def details(call_id: str, seconds: float = 60.0, persona: Persona = PERSONA) -> CallDetails:
    return CallDetails(call_id=call_id, tenant="acme", line="support", caller="+15555550999",
                       callee="+15555550100", persona=persona, max_call_seconds=seconds)


def make_worker(slots: int = 2, registry=None, model: WorkerModel | None = None, ttl: float = 3.0) -> Worker:
    return Worker(model or echo_model(slots), worker_id="w1", address="http://127.0.0.1:9", version="test",
                  registry=registry, heartbeat_ttl=ttl)


async def reserve(registry: MemoryRegistry, call_id: str) -> None:
    await registry.reserve(NewCall(call_id, "acme", "support", "+15555550999", "+15555550100", 100))


async def test_a_session_holds_a_slot_until_it_ends():
    worker = make_worker(slots=2)
    await worker.start()
    try:
        session = await worker.create_session(details("c1"))
        assert (session.id, worker.free_slots, [s.id for s in worker.sessions]) == ("c1", 1, ["c1"])

        await worker.end_session("c1", "caller hung up")

        assert (worker.free_slots, worker.sessions) == (2, [])
        assert session.end_reason == "caller hung up" and session.slot.closed
    finally:
        await worker.stop()


async def test_refusals_full_draining_and_duplicate():
    worker = make_worker(slots=1)
    await worker.start()
    try:
        await worker.create_session(details("c1"))
        with pytest.raises(SessionExists):
            await worker.create_session(details("c1"))
        with pytest.raises(WorkerFull):
            await worker.create_session(details("c2"))
        await worker.end_session("c1", "done")
        await worker.set_draining(True)
        with pytest.raises(WorkerDraining):
            await worker.create_session(details("c3"))
    finally:
        await worker.stop()


async def test_each_call_is_set_up_from_its_details():
    calls = []
    model = WorkerModel("recording", echo_model(1).backend, lambda call, make_voice: calls.append(call) or CallSetup())
    worker = make_worker(model=model)
    await worker.start()
    try:
        await worker.create_session(details("c1"))
    finally:
        await worker.stop()

    assert calls == [details("c1")]


async def test_a_call_whose_setup_fails_is_refused_and_holds_no_slot():
    def no_voice(call, make_voice):
        raise FileNotFoundError("voices/acme/maya.wav")

    worker = make_worker(slots=1, model=WorkerModel("broken", echo_model(1).backend, no_voice))
    await worker.start()
    try:
        with pytest.raises(CallSetupFailed, match="cannot set up call 'c1': voices/acme/maya.wav"):
            await worker.create_session(details("c1"))
        assert (worker.free_slots, worker.sessions) == (1, [])
    finally:
        await worker.stop()


def test_a_call_seed_is_the_personas_or_a_fresh_one():
    seeded = PERSONA.model_copy(update={"sampling": PERSONA.sampling.model_copy(update={"seed": 7})})

    assert call_seed(seeded) == 7
    assert call_seed(PERSONA) != call_seed(PERSONA)


async def test_a_call_ends_at_its_maximum_duration_and_is_released():
    registry = MemoryRegistry()
    worker = make_worker(registry=registry)
    await worker.start()
    try:
        await reserve(registry, "c1")
        session = await worker.create_session(details("c1", seconds=0.2))
        await asyncio.wait_for(session.end_requested.wait(), 2)
        for _ in range(50):
            if not worker.sessions:
                break
            await asyncio.sleep(0.01)

        record = await registry.call("c1")
        assert worker.sessions == []
        assert (record.state, record.reason) == ("ended", "the call reached its maximum duration")
    finally:
        await worker.stop()


class EchoProbe:
    """A media link that sends a tone, collects what comes back, then hangs up."""

    def __init__(self, frames: int, fail: bool = False):
        self.frames, self.fail = frames, fail
        self.sent = np.sin(np.arange(frames * FRAME_SIZE) / 7.0).astype(np.float32) * 0.5
        self.received: list[np.ndarray] = []

    async def run(self, slot: CallSlot) -> None:
        slot.push(self.sent)
        while len(self.received) < self.frames - 1:
            self.received.append((await slot.output.get()).pcm)
        if self.fail:
            raise ConnectionResetError("peer vanished")


async def test_media_attached_to_a_session_flows_through_the_engine_and_ends_the_call():
    registry = MemoryRegistry()
    worker = make_worker(registry=registry)
    await worker.start()
    try:
        await reserve(registry, "c1")
        session = await worker.create_session(details("c1"))
        probe = EchoProbe(frames=3)
        session.attach(probe)
        await asyncio.wait_for(session.end_requested.wait(), 5)
        while worker.sessions:
            await asyncio.sleep(0.01)
    finally:
        await worker.stop()

    # The echo backend answers each frame one step later.
    assert np.array_equal(np.concatenate(probe.received), probe.sent[:2 * FRAME_SIZE])
    record = await registry.call("c1")
    assert (record.state, record.reason) == ("ended", "the caller's media ended")


async def test_a_failing_media_link_fails_the_call_and_ending_cancels_the_link():
    registry = MemoryRegistry()
    worker = make_worker(registry=registry)
    await worker.start()
    try:
        await reserve(registry, "c1")
        (await worker.create_session(details("c1"))).attach(EchoProbe(frames=2, fail=True))
        await reserve(registry, "c2")
        hanging = await worker.create_session(details("c2"))
        hanging.attach(EchoProbe(frames=10_000))
        while "c1" in [s.id for s in worker.sessions]:
            await asyncio.sleep(0.01)

        await worker.end_session("c2", "ended by an admin")
    finally:
        await worker.stop()

    failed, ended = await registry.call("c1"), await registry.call("c2")
    assert (failed.state, failed.reason) == ("failed", "media failed: ConnectionResetError('peer vanished')")
    assert (ended.state, ended.reason) == ("ended", "ended by an admin")


class LosesACancellation:
    """A media link whose first cancellation is lost, as Python 3.11's asyncio.wait_for loses one when
    what it waits on is done by then (an RTP leg waits for each packet so: agent.contracts.tasks)."""

    def __init__(self):
        self.lost, self.released = 0, asyncio.Event()  # released: the test ends it, should the call not

    async def run(self, slot: CallSlot) -> None:
        while not self.released.is_set():
            try:
                await self.released.wait()
            except asyncio.CancelledError:
                if self.lost:
                    raise
                self.lost += 1


async def test_a_call_ends_though_its_media_link_lost_a_cancellation():
    registry = MemoryRegistry()
    worker = make_worker(registry=registry)
    await worker.start()
    try:
        await reserve(registry, "c1")
        link = LosesACancellation()
        (await worker.create_session(details("c1"))).attach(link)
        await asyncio.wait_for(worker.end_session("c1", "ended by an admin"), 10)
    finally:
        link.released.set()
        await worker.stop()
    assert link.lost == 1 and (await registry.call("c1")).state == "ended"


async def test_the_heartbeat_registers_and_ends_calls_the_registry_gave_up():
    registry = MemoryRegistry()
    worker = make_worker(registry=registry, ttl=0.3)
    await worker.start()
    try:
        [status] = await registry.workers()
        assert (status.info, status.alive) == (worker.info, True)
        await reserve(registry, "c1")
        session = await worker.create_session(details("c1"))
        await registry.release("c1", "ended", "ended by the control plane")

        await asyncio.wait_for(session.end_requested.wait(), 2)  # at the next heartbeat

        assert session.end_reason == "the registry no longer holds the call"
        await registry.set_draining("w1", True)
        await asyncio.sleep(0.25)
        assert worker.draining
    finally:
        await worker.stop()


async def test_stop_drains_ends_the_calls_left_and_deregisters():
    registry = MemoryRegistry()
    worker = make_worker(registry=registry)
    await worker.start()
    await reserve(registry, "c1")
    await worker.create_session(details("c1"))

    await worker.stop(grace=0.1)

    record = await registry.call("c1")
    assert (record.state, record.reason) == ("failed", "the worker shut down")
    assert await registry.workers() == []


class Listener:
    """Sends silence and keeps the first frames the agent says."""

    def __init__(self, frames: int):
        self.frames = frames
        self.received = []

    async def run(self, slot: CallSlot) -> None:
        slot.push(np.zeros(FRAME_SIZE * (self.frames + 4), dtype=np.float32))
        while len(self.received) < self.frames:
            self.received.append(await slot.output.get())


async def test_a_worker_runs_calls_on_the_tiny_dummy_model(tmp_path):
    model = load_worker_model("dummy:tiny", 2, "cpu", tmp_path / "voices", tmp_path / "cache")
    worker = make_worker(model=model)
    await worker.start()
    try:
        sessions = [await worker.create_session(details(f"c{i}")) for i in range(2)]
        listeners = [Listener(frames=3) for _ in sessions]
        for session, listener in zip(sessions, listeners):
            session.attach(listener)
        await asyncio.wait_for(asyncio.gather(*(s.end_requested.wait() for s in sessions)), 30)
    finally:
        await worker.stop()

    assert model.name == "dummy:tiny (RANDOM WEIGHTS)"
    assert [s.end_reason for s in sessions] == ["the caller's media ended"] * 2
    for listener in listeners:
        assert [f.pcm.shape for f in listener.received] == [(FRAME_SIZE,)] * 3
        assert all(np.isfinite(f.pcm).all() for f in listener.received)


def test_the_8bit_settings_reach_the_engine(tmp_path):
    model = load_worker_model("dummy:tiny", 2, "cpu", tmp_path / "voices", tmp_path / "cache", weights="fp8",
                              kv_dtype="fp8")
    assert model.backend.lm.transformer.layers[0].self_attn.in_proj_weight.dtype == torch.float8_e4m3fn
    assert model.backend.lm_state.transformer.caches[0].k.dtype == torch.float8_e4m3fn


class UnreachableRegistry(MemoryRegistry):
    async def set_draining(self, worker_id, draining):
        raise ConnectionError("registry down")

    async def deregister(self, worker_id, reason):
        raise ConnectionError("registry down")


async def test_a_worker_stops_even_when_the_registry_is_down():
    worker = make_worker(registry=UnreachableRegistry())
    await worker.start()
    await worker.create_session(details("c1"))

    await worker.stop()

    assert worker.sessions == []


async def test_as_many_calls_as_slots_can_start_at_once():
    """A call joining the engine (its slot reserved there) is not also counted as starting."""
    from agent.engine.echo import EchoBackend

    class SlowJoin(EchoBackend):
        def begin_join(self, slot, call):
            time.sleep(0.05)  # on the engine thread, as a model's prefix copy is
            return super().begin_join(slot, call)

    worker = make_worker(model=WorkerModel("slow", SlowJoin(4), lambda call, make_voice: CallSetup()))
    await worker.start()
    try:
        async def call(i: int):
            await asyncio.sleep(0.01 * i)  # each comes while the ones before are joining
            return await worker.create_session(details(f"c{i}"))

        sessions = await asyncio.gather(*(call(i) for i in range(4)))
    finally:
        await worker.stop()
    assert sorted(s.slot.index for s in sessions) == [0, 1, 2, 3]


async def test_a_call_whose_caller_never_sends_audio_is_ended_and_its_slot_freed():
    worker = Worker(echo_model(2), worker_id="w1", address="http://127.0.0.1:9", version="test",
                    first_media_timeout=0.4)
    await worker.start()
    try:
        silent = await worker.create_session(details("silent"))
        speaking = await worker.create_session(details("speaking"))
        for _ in range(10):
            speaking.slot.push(np.zeros(FRAME_SIZE // 4, np.float32))  # the caller's audio arrives
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)

        assert worker.free_slots == 1 and [s.id for s in worker.sessions] == ["speaking"]
        assert silent.end_outcome == "failed" and "no audio from the caller" in silent.end_reason
    finally:
        await worker.stop()
