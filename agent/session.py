"""A call on a worker: what the control plane said about it, and its seat in the engine.

The seam for transports (WebRTC, RTP from a SIP trunk, a media WebSocket; later issues): a
transport gives the session a `MediaLink`, which moves audio between its track and the session's
`CallSlot` (caller audio in with `slot.push`, agent frames out of `slot.output`) until the
caller's media ends. The session owns the link's task: it cancels it when the call ends for any
other reason, and asks to end when the link returns or fails.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Protocol

import numpy as np

from agent.caller_phrases import CallerPhrases
from agent.contracts.audio import FRAME_SECONDS
from agent.contracts.calls import CallDetails, CallOutcome
from agent.contracts.media import transfer_phrase_reason
from agent.contracts.tasks import cancel_and_wait
from agent.model.stt import PAUSE_CLASS, PAUSE_HEAD
from agent.timeline import CallTimeline
from agent.transcript import Word

if TYPE_CHECKING:
    from agent.caller_speech import CallerSpeech
    from agent.engine.clock import AgentFrame, CallSlot
    from agent.model.stt_words import Word as HeardWord
    from agent.model.stt_words import WordTimer
    from agent.recording import CallRecorder

log = logging.getLogger(__name__)

# A media link's last words when it is cancelled, before it is cancelled again: the WebRTC leg tells
# the caller why the call ended and waits until the caller has it (up to 2 s,
# `agent.media.webrtc.GOODBYE_TIMEOUT`), then closes its connection; cancelled again sooner, the
# caller never heard it.
GOODBYE_SECONDS = 4.0


class MediaLink(Protocol):
    async def run(self, slot: CallSlot) -> None:
        """Bridge the transport's audio and `slot` until the caller's media ends."""


class Session:
    """A call in progress. The engine shows it every step (`on_frame`), which feeds the call's
    timeline (the agent's words), its recording and its caller recogniser, if it has them. An
    engine with a recogniser also gives it the caller's text every step (`on_caller_text`), which
    `caller_words` turns into the caller's words in the timeline as each one is complete."""

    def __init__(self, call: CallDetails, slot: CallSlot, timeline: CallTimeline | None = None,
                 recorder: CallRecorder | None = None, caller_speech: CallerSpeech | None = None,
                 caller_words: WordTimer | None = None):
        self.call = call
        self.slot = slot
        self.started_at = time.time()
        self.answered_at = datetime.fromtimestamp(self.started_at, timezone.utc)
        self.end_requested = asyncio.Event()
        self.end_reason = ""
        self.end_outcome: CallOutcome = "ended"
        self.timeline = timeline or CallTimeline(None, FRAME_SECONDS)
        self.recorder = recorder
        self.caller_speech = caller_speech
        self.caller_words = caller_words
        self.phrases = CallerPhrases(call.transfer_phrases, call.hang_up_phrases)
        self.caller_word_listeners: list[Callable[[Word], None]] = []  # told each word as it joins the timeline
        self.frames = 0  # engine steps seen
        self._media: asyncio.Task[None] | None = None
        self._closed = False
        slot.listener = self.on_frame
        if caller_words is not None:
            slot.caller_listener = self.on_caller_text

    @property
    def id(self) -> str:
        return self.call.call_id

    def attach(self, media: MediaLink) -> None:
        if self._closed:
            raise RuntimeError(f"call {self.id} has ended")
        if self._media is not None:
            raise RuntimeError(f"call {self.id} already has media")
        self._media = asyncio.get_running_loop().create_task(media.run(self.slot), name=f"media-{self.id}")
        self._media.add_done_callback(self._media_done)

    def on_frame(self, caller: np.ndarray, agent: AgentFrame | None) -> None:
        """One engine step of this call (the slot's listener): never raises into the engine."""
        frame, self.frames = self.frames, self.frames + 1
        if agent is not None and agent.text_token >= 0:
            self.timeline.agent_text(frame, agent.text_token)
        if self.recorder is not None:
            try:
                self.recorder.add(caller, agent.pcm if agent is not None else np.zeros_like(caller))
            except Exception as error:
                log.error("recording stopped", extra={"call": self.id, "error": repr(error)})
                self.recorder = None
        if self.caller_speech is not None:
            try:
                self.caller_speech.feed(caller)
            except Exception as error:
                log.error("caller recogniser stopped", extra={"call": self.id, "error": repr(error)})
                self.caller_speech = None

    def on_caller_text(self, token: int, heads: np.ndarray) -> None:
        """The recogniser's text token of this step's caller frame and its semantic VAD's heads
        [heads, classes] (the slot's caller listener): never raises into the engine."""
        if self.caller_words is None:
            return
        try:
            self._caller_word(self.caller_words.push(token))
            if heads.shape[0] > PAUSE_HEAD:
                self.timeline.caller_pause(self.caller_words.now(), float(heads[PAUSE_HEAD, PAUSE_CLASS]))
        except Exception as error:
            log.error("the caller's words stopped", extra={"call": self.id, "error": repr(error)})
            self.caller_words = None

    def finish_caller_words(self) -> None:
        """The call is over: the word the caller was saying, if any, ends now."""
        if self.caller_words is not None:
            self._caller_word(self.caller_words.flush())
            self.caller_words = None

    def _caller_word(self, word: HeardWord | None) -> None:
        if word is None:
            return
        said = Word(text=word.text, start=word.start, end=word.end)
        self.timeline.caller_words([said])
        for listener in self.caller_word_listeners:
            listener(said)
        heard = self.phrases.heard(word.text) if self.phrases else None
        if heard is not None:
            log.info("the caller said a line's phrase", extra={"call": self.id, "action": heard.action})
            if heard.action == "transfer":
                self.request_end(transfer_phrase_reason(heard.phrase))
            else:
                self.request_end(f'the caller said "{heard.phrase}"')

    def pressed(self, digit: str) -> None:
        """The caller pressed a key (RFC 4733 or in-band DTMF, as the transport detects them)."""
        self.timeline.dtmf(digit)

    def request_end(self, reason: str, outcome: CallOutcome = "ended") -> None:
        """Ask the worker to end the call; the first reason given is the one recorded."""
        if not self.end_requested.is_set():
            self.end_reason, self.end_outcome = reason, outcome
            self.end_requested.set()

    async def close(self) -> None:
        """Stop the media link for sure (an RTP leg waits for each packet in asyncio.wait_for, which
        can lose a cancellation: agent.contracts.tasks); called by the worker as the call ends.
        The ended task is let go: a cancelled one keeps its CancelledError, whose traceback's frames
        hold the link and the slot, whose listener is this session; kept, that cycle (and the link's
        native resources: codecs, resamplers and their threads) would wait for a full gc.collect()."""
        self._closed = True
        if self._media is not None:
            await cancel_and_wait(self._media, again_after=GOODBYE_SECONDS)
            self._media = None

    def _media_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            self.request_end("the caller's media ended")
        else:
            self.request_end(f"media failed: {error!r}", "failed")
