"""The hook for a speech recogniser of the caller, which a deployment may provide (plexline has none).

The caller's speech is always in the recording; with a recogniser, the caller's words also join
the transcript of `call.ended`, as turns of the speaker "caller". The worker opens one stream
per call, feeds it every 80 ms frame the engine took from the caller, and asks for the words
when the call ends. A recogniser that needs time should work on its own thread or process:
`feed` runs on the worker's event loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

from agent.transcript import Word

if TYPE_CHECKING:
    from agent.contracts.calls import CallDetails


class CallerSpeech(Protocol):
    def feed(self, pcm: np.ndarray) -> None:
        """One frame of the caller: 1920 float32 samples at 24 kHz, frame n starting at n x 80 ms."""

    async def finish(self) -> list[Word]:
        """The caller's words, timed in seconds since the call was answered."""


class CallerRecognizer(Protocol):
    def open(self, call: CallDetails) -> CallerSpeech: ...
