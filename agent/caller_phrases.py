"""Phrases of the caller that act on the call: a line may transfer the call, or end it, when the caller says one.

Matched on the caller's words as the recogniser finishes them, case and punctuation aside: a phrase
matches when the caller's last words are its words ("I want to speak to a human." matches
"speak to a human"). Transfer phrases are checked first.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Action = Literal["transfer", "hang_up"]


def words_of(text: str) -> tuple[str, ...]:
    return tuple(re.findall(r"[\w']+", text.lower()))


@dataclass(frozen=True)
class Heard:
    action: Action
    phrase: str  # as the line wrote it


class CallerPhrases:
    def __init__(self, transfer: Sequence[str] = (), hang_up: Sequence[str] = ()):
        self._phrases = [(words_of(p), Heard("transfer", p)) for p in transfer]
        self._phrases += [(words_of(p), Heard("hang_up", p)) for p in hang_up]
        self._phrases = [(words, heard) for words, heard in self._phrases if words]
        self._recent: deque[str] = deque(maxlen=max((len(w) for w, _ in self._phrases), default=0))

    def __bool__(self) -> bool:
        return bool(self._phrases)

    def heard(self, text: str) -> Heard | None:
        """The caller finished saying `text` (a word, maybe with punctuation): the phrase it completes, if any."""
        self._recent.extend(words_of(text))
        recent = tuple(self._recent)
        for words, heard in self._phrases:
            if recent[len(recent) - len(words):] == words:
                return heard
        return None
