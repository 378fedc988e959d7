"""The agent's words with times, from its text stream (one token per 80 ms frame).

A piece that starts with a space starts a word; padding ends the word in progress. A word starts
at the frame of its first piece and ends at the end of the frame of its last.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol


class PieceText(Protocol):
    def piece_text(self, token: int) -> str: ...


@dataclass
class Word:
    text: str
    start: float  # seconds from the start of the conversation
    end: float


class TranscriptBuilder:
    def __init__(self, tokenizer: PieceText, frame_seconds: float):
        self.tokenizer = tokenizer
        self.frame_seconds = frame_seconds
        self.words: list[Word] = []
        self._open = False  # the last word can still grow

    def add(self, frame: int, token: int) -> Word | None:
        """Add the text token of `frame`; returns the word it started, if any."""
        piece = self.tokenizer.piece_text(token)
        if not piece:
            self._open = False
            return None
        start, end = frame * self.frame_seconds, (frame + 1) * self.frame_seconds
        if piece.startswith(" ") or not self._open:
            self.words.append(Word(piece.strip(), round(start, 3), round(end, 3)))
            self._open = True
            return self.words[-1]
        self.words[-1].text += piece
        self.words[-1].end = round(end, 3)
        return None

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)

    def as_json(self) -> list[dict]:
        return [asdict(w) for w in self.words]
