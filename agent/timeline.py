"""A call's timeline: the agent's words grouped into turns, the caller's words (when a recogniser
is given), DTMF digits and call events, all in time order, in seconds since the call was answered.

The agent's words are timed by the engine's frame clock (frame n starts at n x 80 ms); digits
and events by the wall clock since the answer. A turn is one speaker's words with no pause of
`turn_gap` or more and nothing else (a digit, an event, the other speaker) between them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.contracts import events as ev
from agent.transcript import PieceText, TranscriptBuilder, Word

TURN_GAP = 1.0  # seconds of silence that end a turn


@dataclass(frozen=True)
class _Spoken:
    speaker: str
    word: Word


class CallTimeline:
    def __init__(self, tokenizer: PieceText | None, frame_seconds: float, turn_gap: float = TURN_GAP,
                 clock: Callable[[], float] = time.monotonic):
        self._agent = TranscriptBuilder(tokenizer, frame_seconds) if tokenizer is not None else None
        self._caller: list[Word] = []
        self._pauses: list[tuple[float, float]] = []  # (time, probability that the caller has finished)
        self._marks: list[ev.Dtmf | ev.Mark] = []
        self.turn_gap = turn_gap
        self._clock = clock
        self._start = clock()

    def now(self) -> float:
        return round(self._clock() - self._start, 3)

    def agent_text(self, frame: int, token: int) -> None:
        """The agent's text token of engine frame `frame` (counted from the answer)."""
        if self._agent is not None:
            self._agent.add(frame, token)

    def dtmf(self, digit: str) -> None:
        self._marks.append(ev.Dtmf(at=self.now(), digit=digit))

    def mark(self, event: ev.Moment, detail: str = "") -> None:
        self._marks.append(ev.Mark(at=self.now(), event=event, detail=detail))

    def caller_words(self, words: list[Word]) -> None:
        """What a recogniser heard the caller say."""
        self._caller.extend(words)

    def caller_pause(self, at: float, probability: float) -> None:
        """The recogniser's semantic VAD at `at` (in order): the probability that the caller has finished."""
        self._pauses.append((at, probability))

    def items(self) -> list[ev.TranscriptItem]:
        atoms: list[tuple[float, int, _Spoken | ev.Dtmf | ev.Mark]] = [(m.at, 0, m) for m in self._marks]
        atoms += [(w.start, 1, _Spoken("agent", w)) for w in (self._agent.words if self._agent else [])]
        atoms += [(w.start, 1, _Spoken("caller", w)) for w in self._caller]
        items: list[ev.TranscriptItem] = []
        turn: list[_Spoken] = []
        for _, _, atom in sorted(atoms, key=lambda a: (a[0], a[1])):
            if isinstance(atom, _Spoken) and turn and atom.speaker == turn[-1].speaker \
                    and atom.word.start - turn[-1].word.end < self.turn_gap:
                turn.append(atom)
                continue
            if turn:
                items.append(self._speech(turn))
                turn = []
            if isinstance(atom, _Spoken):
                turn = [atom]
            else:
                items.append(atom)
        if turn:
            items.append(self._speech(turn))
        return items

    def _speech(self, turn: list[_Spoken]) -> ev.Speech:
        words = [ev.Word(text=s.word.text, start=s.word.start, end=s.word.end) for s in turn]
        end, end_of_turn = words[-1].end, None
        if turn[0].speaker == "caller":
            after = [p for at, p in self._pauses if end <= at < end + self.turn_gap]
            end_of_turn = round(max(after), 3) if after else None
        return ev.Speech(speaker=turn[0].speaker, start=words[0].start, end=end,
                         text=" ".join(w.text for w in words), words=words, end_of_turn=end_of_turn)

    def settled(self) -> tuple[list[ev.TranscriptItem], str]:
        """The items that can no longer change (ended a turn gap ago), and the text of the rest."""
        items, horizon = self.items(), self.now() - self.turn_gap
        done = 0
        while done < len(items) and _end(items[done]) <= horizon:
            done += 1
        rest = " ".join(i.text for i in items[done:] if isinstance(i, ev.Speech) and i.speaker == "agent")
        return items[:done], rest


def _end(item: ev.TranscriptItem) -> float:
    return item.end if isinstance(item, ev.Speech) else item.at
