"""Words and their times from the recogniser's text stream."""

from pathlib import Path

import pytest
import sentencepiece

from agent.model.stt import SttConfig
from agent.model.stt_words import Word, WordTimer
from agent.model.tokenizer import TextTokenizer

PAD, EPAD = 3, 0
CONFIG = SttConfig.stt_1b_en_fr()  # text 0.5 s behind the audio


@pytest.fixture(scope="module")
def tokenizer(sentencepiece_model: Path) -> TextTokenizer:
    return TextTokenizer(sentencepiece_model)


@pytest.fixture(scope="module")
def sp(sentencepiece_model: Path) -> sentencepiece.SentencePieceProcessor:
    return sentencepiece.SentencePieceProcessor(model_file=str(sentencepiece_model))


def pieces(sp, word: str) -> list[int]:
    return sp.encode(word)


def timed(timer: WordTimer, tokens: list[int]) -> list[tuple[int, Word]]:
    """(frame index at which each word came out, the word)."""
    out = []
    for frame, token in enumerate(tokens):
        word = timer.push(token)
        if word is not None:
            out.append((frame, word))
    return out


def test_a_word_between_padding_has_the_times_of_its_pieces_less_the_delay(tokenizer, sp):
    order = pieces(sp, "order")
    tokens = [PAD] * 10 + [EPAD] + order + [PAD] * 4  # pieces at frames 11..
    words = timed(WordTimer(tokenizer, CONFIG), tokens)
    end = 11 + len(order)
    assert words == [(end, Word("order", round(11 / 12.5 - 0.5, 3), round(end / 12.5 - 0.5, 3)))]


def test_words_without_padding_between_them_are_split_where_a_piece_starts_a_word(tokenizer, sp):
    first, second = pieces(sp, "thank"), pieces(sp, "you")
    tokens = [EPAD] + first + second + [PAD]
    words = [word for _, word in timed(WordTimer(tokenizer, CONFIG, lag_seconds=0), tokens)]
    boundary = 1 + len(first)
    assert [w.text for w in words] == ["thank", "you"]
    assert words[0].end == words[1].start == round(boundary / 12.5, 3)


def test_times_before_the_delay_are_clamped_at_zero(tokenizer, sp):
    tokens = [EPAD] + pieces(sp, "hello") + [PAD]
    (_, word), = timed(WordTimer(tokenizer, CONFIG), tokens)
    assert word.start == 0.0


def test_flush_ends_the_word_in_progress(tokenizer, sp):
    timer = WordTimer(tokenizer, CONFIG, lag_seconds=0)
    assert timed(timer, [PAD, EPAD] + pieces(sp, "please")) == []
    assert timer.flush() == Word("please", 0.16, round((2 + len(pieces(sp, "please"))) / 12.5, 3))
    assert timer.flush() is None


def test_padding_alone_makes_no_words(tokenizer):
    timer = WordTimer(tokenizer, CONFIG)
    assert timed(timer, [PAD, EPAD, PAD, 1, 2, PAD]) == []  # 1, 2: BOS, EOS (control, no text)
    assert timer.flush() is None
