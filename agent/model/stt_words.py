"""Words with times from one stream of the recogniser's text tokens (one token per 80 ms frame).

The text stream is padding (PAD) between words and marks the frame before a word with EPAD;
a word's pieces follow one per frame. A word ends at the next padding, or where the next piece
starts a word of its own (fast speech leaves no padding between words). Its start is the frame
of its first piece and its end the frame after its last one, both moved back by the text's lag
behind the audio (`audio_delay_seconds`, plus any silence fed before the audio), as Kyutai's
timestamping does; Kyutai ends a word at the next EPAD instead, which may come only when the
caller speaks again, so here a word is final as soon as its text is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from agent.model.stt import FRAME_RATE, SttConfig


class PieceDecoder(Protocol):
    def piece_text(self, token: int) -> str: ...


@dataclass(frozen=True)
class Word:
    text: str
    start: float  # seconds into the stream's audio
    end: float


class WordTimer:
    """Feed `push` each frame's text token in order; it returns each word once the word is complete."""

    def __init__(self, tokenizer: PieceDecoder, config: SttConfig, lag_seconds: float | None = None):
        self.tokenizer = tokenizer
        self.padding = (config.text_padding_id, config.end_of_padding_id)
        self.lag_seconds = config.audio_delay_seconds if lag_seconds is None else lag_seconds
        self.frame = 0
        self._pieces: list[str] = []
        self._start = 0

    def push(self, token: int) -> Word | None:
        frame, self.frame = self.frame, self.frame + 1
        if token in self.padding:
            return self._finish(frame)
        piece = self.tokenizer.piece_text(token)
        if not piece:  # a control token: no text, no boundary
            return None
        word = self._finish(frame) if piece.startswith(" ") else None
        if not self._pieces:
            self._start = frame
        self._pieces.append(piece)
        return word

    def now(self) -> float:
        """The time, in the stream's audio, that the last token pushed speaks of (its lag taken off)."""
        return self._seconds(self.frame - 1)

    def flush(self) -> Word | None:
        """The word in progress, ended now (the stream is over)."""
        return self._finish(self.frame)

    def _finish(self, end_frame: int) -> Word | None:
        text = "".join(self._pieces).strip()
        self._pieces = []
        if not text:
            return None
        return Word(text, self._seconds(self._start), self._seconds(end_frame))

    def _seconds(self, frame: int) -> float:
        return round(max(0.0, frame / FRAME_RATE - self.lag_seconds), 3)  # to the millisecond, as the timeline
