"""A worker: one engine on one device, the calls it holds, and its heartbeat in the registry.

Calls are created and ended by the control plane (through `agent.worker_api`), or end on their
own: at the line's maximum duration, when their media ends, or when the registry no longer holds
them (the control plane gave them up, or reaped this worker while it could not heartbeat). Every
call's end goes through its watcher task, so it is released in the registry exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from agent.call_reporter import CallReporter, outcome_of
from agent.caller_speech import CallerRecognizer
from agent.contracts.audio import FRAME_SECONDS
from agent.contracts.calls import (
    CallDetails,
    CallOutcome,
    CallSetupFailed,
    SessionExists,
    UnknownSession,
    WorkerDraining,
    WorkerFull,
)
from agent.contracts.errors import describe
from agent.contracts.recordings import recording_path
from agent.contracts.settings import IceServer
from agent.contracts.tasks import cancel_and_wait
from agent.contracts.workers import Registration, WorkerInfo
from agent.engine.backend import Backend, CallSetup
from agent.engine.clock import CallSlot, EngineClock, NoFreeSlot
from agent.engine.echo import EchoBackend
from agent.recording import CallRecorder
from agent.session import Session
from agent.timeline import CallTimeline
from agent.transcript import PieceText
from personas.schema import Persona

if TYPE_CHECKING:
    from agent.engine.voice import MakeVoice
    from agent.model.stt_words import WordTimer

log = logging.getLogger(__name__)

HEARTBEATS_PER_TTL = 3
RECORDING_FLUSH_SECONDS = 1.0  # a crash loses at most about this much of a recording
CALLER_SPEECH_TIMEOUT = 10.0  # seconds a caller recogniser may take to finish a call's words
FIRST_MEDIA_TIMEOUT = 10.0  # seconds from admission to the caller's first audio before the call is ended


@dataclass(frozen=True)
class WorkerModel:
    """What a worker runs: a backend, and how a call becomes that backend's setup (its prompt)."""

    name: str  # e.g. "echo", "dummy:tiny (RANDOM WEIGHTS)", "hf:nvidia/personaplex-7b-v1"
    backend: Backend
    # Runs on a thread: it may load a voice, and have a WAV voice encoded by `MakeVoice` (the engine's).
    setup_for: Callable[[CallDetails, MakeVoice], CallSetup]
    tokenizer: PieceText | None = None  # the agent's text tokens as text (None: the backend has no text)
    caller_words: Callable[[], WordTimer] | None = None  # a call's words from the recogniser, if the engine has one
    # Runs on a thread: a tenant's voice made ready before a call needs it (None: the model has no voices).
    prepare_voice: Callable[[str, str, MakeVoice], None] | None = None


def echo_model(num_slots: int) -> WorkerModel:
    """No model: each call hears itself one frame later (for tests and transport measurements)."""
    return WorkerModel("echo", EchoBackend(num_slots), lambda call, make_voice: CallSetup())


CPU_SLOTS = 4


def load_worker_model(spec: str, num_slots: int | None, device: str | None, voices_root: Path,
                      cache_dir: Path, stt: str | None = None, capacity_file: Path | None = None,
                      weights: str = "bf16", kv_dtype: str = "bf16", pin_personas: bool = False) -> WorkerModel:
    """`echo`, or a model spec of `agent.model.loading` on a batched model backend.

    `num_slots` None is `--slots auto`: `default_slots`, capped by `capacity_file`'s rating if given.

    A persona's voice file is looked up in `voices_root/<tenant>/voices/` (beside the tenant's line
    files when `voices_root` is the persona folder), so no tenant can name another's voices; the
    released voices (NATF2, ...) need no file. `stt`, a spec of `agent.model.stt_loading`, runs the
    caller's recogniser beside the agent, on the codes of the agent's Mimi. `weights` and
    `kv_dtype` (bf16 or fp8) are the LM's linear layers and KV ring; `pin_personas` lets lines keep
    their persona past the context (`agent.engine.engine`).
    """
    if spec == "echo":
        return echo_model(num_slots or CPU_SLOTS)
    from agent.engine.engine import ModelBackend
    from agent.engine.stt import RecognisingBackend, SttBackend
    from agent.model.lm import AGENT_CODEBOOKS
    from agent.model.loading import load_models
    from agent.model.stt import STT_CODEBOOKS
    from agent.model.stt_loading import load_stt
    from agent.model.stt_words import WordTimer
    from agent.prompts import PromptBuilder

    models = load_models(spec, device, mimi_codebooks=STT_CODEBOOKS if stt else AGENT_CODEBOOKS, weights=weights)
    recogniser = load_stt(stt, device) if stt else None
    num_slots = num_slots or default_slots(models, recogniser, capacity_file, kv_dtype)
    builders: dict[str, PromptBuilder] = {}

    def builder(tenant: str, make_voice: MakeVoice) -> PromptBuilder:
        """The tenant's builder; `make_voice` is its worker's engine, the same for every call."""
        if tenant not in builders:
            builders[tenant] = PromptBuilder(models, voices_root / tenant / "voices", cache_dir, make_voice)
        return builders[tenant]

    def setup_for(call: CallDetails, make_voice: MakeVoice) -> CallSetup:
        return builder(call.tenant, make_voice).call(call.persona, seed=call_seed(call.persona))

    def prepare_voice(tenant: str, voice: str, make_voice: MakeVoice) -> None:
        builder(tenant, make_voice).prepare(voice)

    backend = ModelBackend(models.mimi, models.lm, num_slots, kv_dtype=kv_dtype, pin_personas=pin_personas)
    caller_words = None
    if recogniser is not None:
        backend = RecognisingBackend(backend, SttBackend(recogniser.lm, num_slots))
        caller_words = partial(WordTimer, recogniser.tokenizer, recogniser.config)
    backend.warm_up()  # CUDA graphs captured before any call joins
    log.info("engine ready", extra={"model": models.name, "slots": num_slots,
                                    "recogniser": recogniser.name if recogniser else None})
    return WorkerModel(models.name, backend, setup_for, models.tokenizer, caller_words, prepare_voice)


def default_slots(models, recogniser=None, capacity_file: Path | None = None, kv_dtype: str = "bf16") -> int:
    """As many calls as GPU memory holds at full context (the recogniser's ring too), beside the engine's
    reserved room, and no more than a churn benchmark's `capacity_file` rates this GPU for; a few on the CPU."""
    import torch

    from agent.engine.capacity import rated_calls, slots_that_fit

    if models.device.type != "cuda":
        return CPU_SLOTS
    free, _ = torch.cuda.mem_get_info(models.device)
    extra = recogniser.config.kv_bytes(recogniser.lm.text_linear.weight.dtype) if recogniser else 0
    slots = slots_that_fit(models.lm.config, models.lm.text_linear.weight.dtype, free, extra_bytes_per_slot=extra,
                           kv_dtype=kv_dtype)
    if slots < 1:
        raise RuntimeError(f"no call fits in the {free / 1e9:.1f} GB of GPU memory left after the weights")
    if capacity_file is None:
        return slots
    device = torch.cuda.get_device_name(models.device)
    rated = rated_calls(capacity_file, device, models.weights, kv_dtype, recogniser.name if recogniser else None)
    if rated is None:
        log.warning("the capacity file rates another GPU, precision or recogniser: slots from memory alone",
                    extra={"file": str(capacity_file), "device": device, "slots": slots})
        return slots
    log.info("slots as rated under churn", extra={"file": str(capacity_file), "rated": rated, "memory_bound": slots})
    return min(slots, rated)


def call_seed(persona: Persona) -> int:
    """The persona's seed if it fixes one, else a fresh one: two calls should not sound the same."""
    return persona.sampling.seed if persona.sampling.seed is not None else secrets.randbits(62)


class Worker:
    def __init__(self, model: WorkerModel, *, worker_id: str, address: str, version: str,
                 registry: Registration | None = None, heartbeat_ttl: float = 3.0,
                 reporter: CallReporter | None = None, recordings: Path | None = None,
                 recognizer: CallerRecognizer | None = None, ice_servers: Sequence[IceServer] = (),
                 first_media_timeout: float = FIRST_MEDIA_TIMEOUT):
        """`reporter` sends the calls' events; `recordings` is where lines that record write their
        calls; `recognizer` (optional, the deployment's) puts the caller's words in transcripts;
        `ice_servers` are the STUN and TURN servers of its WebRTC peers. A call whose caller sends
        no audio within `first_media_timeout` seconds of its admission is ended as failed: a
        caller that never connects (ICE that never completes, RTP that never comes, a call placed
        by the API and never joined) must not hold a slot for the line's maximum duration."""
        self.first_media_timeout = first_media_timeout
        self.model = model
        self.reporter = reporter
        self.recordings = recordings
        self.recognizer = recognizer
        self.ice_servers = tuple(ice_servers)
        self.clock = EngineClock(model.backend)
        self.info = WorkerInfo(worker_id, address, model.backend.num_slots, model.name, version)
        self.registry = registry
        self.heartbeat_ttl = heartbeat_ttl
        self.draining = False
        self._sessions: dict[str, Session] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._starting: set[str] = set()
        self._preparing: set[asyncio.Task[None]] = set()  # voices made ready in the background
        self._heartbeat: asyncio.Task[None] | None = None

    @property
    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    @property
    def free_slots(self) -> int:
        return self.clock.free_slots - len(self._starting)

    def session(self, call_id: str) -> Session:
        if call_id not in self._sessions:
            raise UnknownSession(f"no call {call_id!r} on this worker")
        return self._sessions[call_id]

    # -- life -----------------------------------------------------------------------------------

    async def start(self) -> None:
        self.clock.start()
        if self.reporter is not None:
            self.reporter.start()
        if self.registry is not None:
            await self.beat()
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat_forever(), name="heartbeat")

    async def stop(self, grace: float = 0.0) -> None:
        """Drain, let the calls finish for up to `grace` seconds, end the rest, deregister.

        The registry may be unreachable meanwhile: the worker then stops all the same, and the
        registry reaps it when its heartbeat expires.
        """
        await self._tell_registry(self.set_draining(True))
        if self._sessions and grace > 0:
            log.warning("draining: waiting for calls to finish", extra={"calls": len(self._sessions), "grace_s": grace})
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self._sessions and loop.time() < deadline:
            await asyncio.sleep(min(0.1, deadline - loop.time()))
        for session in self._sessions.values():
            session.request_end("the worker shut down", "failed")
        if self._watchers:
            await asyncio.wait(list(self._watchers.values()))
        if self._heartbeat is not None:
            await cancel_and_wait(self._heartbeat)
            self._heartbeat = None
        if self.registry is not None:
            await self._tell_registry(self.registry.deregister(self.info.id, "the worker shut down"))
        if self.reporter is not None:
            await self.reporter.stop()
        await self.clock.stop()  # a voice still being made fails: its thread is free
        if self._preparing:
            await asyncio.wait(list(self._preparing))

    async def _tell_registry(self, request: Awaitable[object]) -> None:
        try:
            await request
        except Exception as error:
            log.warning("registry unreachable while stopping", extra={"worker": self.info.id, "error": describe(error)})

    async def set_draining(self, draining: bool) -> None:
        self.draining = draining
        if self.registry is not None:
            await self.registry.set_draining(self.info.id, draining)

    async def beat(self) -> None:
        """One heartbeat: refresh the registration, learn of draining, end orphaned sessions."""
        reply = await self.registry.heartbeat(self.info, self.heartbeat_ttl, [*self._sessions, *self._starting])
        self.draining = reply.draining
        for call_id in reply.orphans:
            if call_id in self._sessions:
                log.warning("ending a call the registry no longer holds", extra={"call": call_id})
                self._sessions[call_id].request_end("the registry no longer holds the call", "failed")

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_ttl / HEARTBEATS_PER_TTL)
            try:
                await self.beat()
            except Exception as error:  # the registry is unreachable: keep the calls, keep trying
                log.warning("heartbeat failed", extra={"worker": self.info.id, "error": describe(error)})

    # -- voices ---------------------------------------------------------------------------------

    def prepare_voice(self, tenant: str, voice: str) -> bool:
        """Make a tenant's voice ready in the background, so the first call with it does not wait: a WAV's
        stored voice is made by the engine between steps, as a call's would be. False when this worker's
        model has no voices. A failure is only logged: a call with the voice then makes it, or fails."""
        if self.model.prepare_voice is None:
            return False
        task = asyncio.get_running_loop().create_task(self._prepare_voice(tenant, voice), name=f"voice-{voice}")
        self._preparing.add(task)
        task.add_done_callback(self._preparing.discard)
        return True

    async def _prepare_voice(self, tenant: str, voice: str) -> None:
        try:
            await asyncio.to_thread(self.model.prepare_voice, tenant, voice, self.clock.make_voice)
        except Exception as error:
            log.warning("voice not prepared", extra={"tenant": tenant, "voice": voice, "error": describe(error)})
            return
        log.info("voice ready", extra={"tenant": tenant, "voice": voice})

    # -- calls ----------------------------------------------------------------------------------

    async def create_session(self, call: CallDetails) -> Session:
        if self.draining:
            raise WorkerDraining(f"worker {self.info.id} is draining")
        if call.call_id in self._sessions or call.call_id in self._starting:
            raise SessionExists(f"call {call.call_id!r} exists")
        if self.free_slots <= 0:
            raise WorkerFull(f"all {self.info.slots} slots are busy")
        self._starting.add(call.call_id)
        try:
            try:
                setup = await asyncio.to_thread(self.model.setup_for, call, self.clock.make_voice)
            except Exception as error:
                log.warning("call setup failed", extra={"call": call.call_id, "error": repr(error)})
                raise CallSetupFailed(f"cannot set up call {call.call_id!r}: {error}") from error
            self._starting.discard(call.call_id)  # the clock counts its slot from here: not twice
            slot = await self.clock.join(setup)
        except NoFreeSlot as error:
            raise WorkerFull(str(error)) from error
        finally:
            self._starting.discard(call.call_id)
        session = self._sessions[call.call_id] = self._new_session(call, slot)
        self._watchers[call.call_id] = asyncio.get_running_loop().create_task(
            self._watch(session), name=f"call-{call.call_id}")
        log.info("call started", extra={"call": call.call_id, "tenant": call.tenant, "line": call.line,
                                        "slot": slot.index})
        return session

    async def answer_webrtc(self, call_id: str, offer: str) -> str:
        """Answer the caller's WebRTC offer for a call and bridge its media; returns the SDP answer.

        Raises UnknownSession, agent.media.webrtc.OfferError, or RuntimeError if the call has media.
        """
        from agent.media.webrtc import WebRtcCall

        session = self.session(call_id)
        leg = WebRtcCall(session, self.model.tokenizer, self.ice_servers)
        answer = await leg.answer(offer)
        if session.end_requested.is_set():  # it ended while the answer was made: nothing would stop the leg
            await leg.close()
            raise UnknownSession(f"call {call_id!r} ended while its offer was answered")
        try:
            session.attach(leg)
        except RuntimeError:
            await leg.close()
            raise
        return answer

    def _new_session(self, call: CallDetails, slot: CallSlot) -> Session:
        recorder = None
        if call.recording and self.recordings is None:
            log.warning("the line records its calls but this worker has no recordings folder",
                        extra={"call": call.call_id})
        elif call.recording:
            try:
                recorder = CallRecorder(recording_path(self.recordings, call.tenant, call.call_id))
            except ValueError as error:
                log.error("cannot record a call", extra={"call": call.call_id, "error": repr(error)})
        speech = self.recognizer.open(call) if self.recognizer is not None else None
        words = self.model.caller_words() if self.model.caller_words is not None and call.caller_transcript else None
        session = Session(call, slot, CallTimeline(self.model.tokenizer, FRAME_SECONDS), recorder, speech, words)
        session.timeline.mark("answered")
        if self.reporter is not None:
            self.reporter.started(session)
        return session

    async def end_session(self, call_id: str, reason: str, outcome: CallOutcome = "ended") -> Session:
        session = self.session(call_id)
        session.request_end(reason, outcome)
        await asyncio.shield(self._watchers[call_id])
        return session

    async def _watch(self, session: Session) -> None:
        flusher = asyncio.get_running_loop().create_task(self._flush_recording(session), name=f"rec-{session.id}")
        first_audio = min(self.first_media_timeout, session.call.max_call_seconds)
        try:
            await asyncio.wait_for(_caller_heard(session), first_audio)
        except TimeoutError:
            if first_audio < session.call.max_call_seconds:
                session.request_end(f"no audio from the caller within {first_audio:g} s of answering", "failed")
        try:
            left = session.call.max_call_seconds - (time.time() - session.started_at)
            await asyncio.wait_for(session.end_requested.wait(), max(0.0, left))
        except TimeoutError:
            session.request_end("the call reached its maximum duration")
        try:
            await session.close()
            await self.clock.leave(session.slot)
        finally:
            del self._sessions[session.id]
            del self._watchers[session.id]
            flusher.cancel()
        ended_at = datetime.now(timezone.utc)
        log.info("call ended", extra={"call": session.id, "reason": session.end_reason})
        if self.registry is not None:
            try:
                await self.registry.release(session.id, session.end_outcome, session.end_reason)
            except Exception as error:  # the heartbeat's reconciliation frees the slot later
                log.warning("could not release a call", extra={"call": session.id, "error": describe(error)})
        await asyncio.wait([flusher])
        await self._complete_record(session)
        if self.reporter is not None:
            self.reporter.ended(session, ended_at)

    async def _flush_recording(self, session: Session) -> None:
        """Until the call ends or its recording stops (a failed write stops it, and says why)."""
        while session.recorder is not None and session.recorder.stopped is None:
            await asyncio.sleep(RECORDING_FLUSH_SECONDS)
            if session.recorder is not None:
                await asyncio.to_thread(session.recorder.flush)

    async def _complete_record(self, session: Session) -> None:
        """The end of the call's timeline, the caller's words, the rest of its recording."""
        session.timeline.mark(outcome_of(session.end_reason, session.end_outcome), session.end_reason)
        session.finish_caller_words()
        if session.caller_speech is not None:
            try:
                words = await asyncio.wait_for(session.caller_speech.finish(), CALLER_SPEECH_TIMEOUT)
                session.timeline.caller_words(words)
            except Exception as error:
                log.warning("the caller recogniser failed", extra={"call": session.id, "error": repr(error)})
        if session.recorder is not None:
            await asyncio.to_thread(session.recorder.close)


async def _caller_heard(session: Session) -> None:
    """Returns once the caller's first audio reached the call's slot, or the call is ending."""
    waits = [asyncio.ensure_future(session.end_requested.wait()), asyncio.ensure_future(session.slot.heard.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
