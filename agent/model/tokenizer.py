"""The text tokenizer: the persona's role prompt in, the agent's words out.

The LM's text stream holds one token per frame: a sentencepiece piece, or padding while the
agent is silent or between words (PAD, id 3) and at the end of a run of padding, just before
the next word starts (EPAD, id 0). Pieces that start a word begin with '▁'.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import sentencepiece

TEXT_EPAD = 0
TEXT_PAD = 3
SYSTEM_TAG = "<system>"
WORD_START = "\u2581"  # '▁', sentencepiece's mark for the space before a word


class TokenizerError(Exception):
    """The tokenizer file cannot be loaded."""


def wrap_role(text: str) -> str:
    """The role text between system tags, as PersonaPlex was trained; kept as is if already tagged."""
    cleaned = text.strip()
    if cleaned.startswith(SYSTEM_TAG) and cleaned.endswith(SYSTEM_TAG):
        return cleaned
    return f"{SYSTEM_TAG} {cleaned} {SYSTEM_TAG}"


class TextTokenizer:
    def __init__(self, model_file: Path):
        self._sp = sentencepiece.SentencePieceProcessor()
        try:
            self._sp.Load(str(model_file))
        except (OSError, RuntimeError) as error:
            raise TokenizerError(f"{model_file}: not a sentencepiece model ({error})") from error

    @property
    def vocab_size(self) -> int:
        return self._sp.vocab_size()

    def encode_role(self, text: str) -> list[int]:
        """Tokens of the role prompt, fed one per step after the voice prompt; none for no role."""
        if not text:
            return []
        return self._sp.encode(wrap_role(text))

    def piece_text(self, token: int) -> str:
        """The text of one token of the agent's text stream: '' for padding, ' ' where a word starts."""
        if token in (TEXT_EPAD, TEXT_PAD) or self._sp.is_control(token) or self._sp.is_unknown(token):
            return ""
        return self._sp.id_to_piece(token).replace(WORD_START, " ")

    def decode(self, tokens: Iterable[int]) -> str:
        """The agent's text stream (padding included) as plain text."""
        return "".join(self.piece_text(token) for token in tokens).strip()
