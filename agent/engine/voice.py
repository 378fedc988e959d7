"""A voice recording made into its stored voice (upstream's `.pt`) as engine work, between steps.

Mimi encodes the recording frame by frame on a stream of its own (one row), in chunks that
`ModelBackend.prefill` runs in the time the steps leave, exactly as `Mimi.encode` does in one go;
the LM part is then the model's inputs and token ring after the voice's frames, which need no
transformer (`agent.model.persona_prompt.voice_prompt_from_codes`): no KV ring is allocated.
Nothing here waits for the device: the prompt's tensors stay on it until their owner copies them.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future

import torch

from agent.model.lm import AGENT_CODEBOOKS
from agent.model.mimi import Mimi, MimiEncoderState
from agent.model.persona_prompt import voice_prompt_from_codes
from agent.model.stream import StreamingLM
from voices.prompt import VoicePrompt


class VoiceEncoding:
    """One recording's voice prompt, advanced a chunk of Mimi frames at a time; `result` is set when
    it is made (by the engine, which fails it with the error if a chunk raises)."""

    def __init__(self, mimi: Mimi, stream: StreamingLM, pcm: torch.Tensor, source: str):
        """`pcm` [1, 1, F * frame_size]: the recording as `agent.prompts.voice_pcm` prepares it."""
        frame_size = mimi.config.frame_size
        if pcm.shape[-1] % frame_size:
            raise ValueError(f"{pcm.shape[-1]} samples are not a whole number of {frame_size}-sample frames")
        self.mimi, self.stream, self.source = mimi, stream, source
        self.frames = pcm.shape[-1] // frame_size
        self.result: Future[VoicePrompt] = Future()
        self._pcm = pcm
        self._codes: list[torch.Tensor] = []
        self._state: MimiEncoderState | None = None
        self._prompt: VoicePrompt | None = None

    @property
    def done(self) -> bool:
        return self._prompt is not None

    @torch.no_grad()
    def advance(self, max_frames: int) -> int:
        """Encode up to `max_frames` more frames (after the last one, make the prompt); the frames encoded."""
        if self._state is None:  # the first chunk: the stream's state and the audio on the device
            self._state = self.mimi.init_encoder_state(1)
            self._pcm = self._pcm.to(self._state.downsample.device)
        frame_size = self.mimi.config.frame_size
        start = len(self._codes)
        stop = min(self.frames, start + max_frames)
        for i in range(start, stop):
            self._codes.append(self.mimi.encode_step(self._pcm[..., i * frame_size:(i + 1) * frame_size], self._state))
        if stop == self.frames:
            codes = torch.cat(self._codes, dim=-1)[0, :AGENT_CODEBOOKS]  # [8, F]: what the LM reads
            self._prompt = voice_prompt_from_codes(self.stream, codes, self.source)
        return stop - start

    @property
    def prompt(self) -> VoicePrompt:
        if self._prompt is None:
            raise RuntimeError("the voice is not encoded yet")
        return self._prompt

    def run(self) -> VoicePrompt:
        """Every frame at once, here (no engine: offline tools and tests)."""
        while not self.done:
            self.advance(self.frames)
        return self.prompt


# A voice's encoding run to its end somewhere (the engine, or here at once), from a thread that may wait.
MakeVoice = Callable[[VoiceEncoding], VoicePrompt]
