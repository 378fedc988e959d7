from pathlib import Path

import pytest
import sentencepiece

from agent.model.tokenizer import (
    TEXT_EPAD,
    TEXT_PAD,
    TextTokenizer,
    TokenizerError,
    wrap_role,
)


@pytest.fixture(scope="module")
def tokenizer(sentencepiece_model: Path) -> TextTokenizer:
    return TextTokenizer(sentencepiece_model)


@pytest.fixture(scope="module")
def sp(sentencepiece_model: Path) -> sentencepiece.SentencePieceProcessor:
    return sentencepiece.SentencePieceProcessor(model_file=str(sentencepiece_model))


def test_wrap_role_adds_system_tags_around_stripped_text():
    assert wrap_role("  You work for Acme.\n") == "<system> You work for Acme. <system>"


def test_wrap_role_keeps_text_already_tagged():
    assert wrap_role(" <system> You work for Acme. <system> ") == "<system> You work for Acme. <system>"


def test_encode_role_is_the_sentencepiece_encoding_of_the_tagged_role(tokenizer, sp):
    tokens = tokenizer.encode_role("You work for Acme Home Goods and your name is Maya.")

    expected = sp.encode("<system> You work for Acme Home Goods and your name is Maya. <system>")
    assert tokens == expected
    assert sp.decode(tokens) == "<system> You work for Acme Home Goods and your name is Maya. <system>"


def test_encode_role_of_no_text_is_no_tokens(tokenizer):
    assert tokenizer.encode_role("") == []


def test_vocab_size_matches_the_model(tokenizer):
    assert tokenizer.vocab_size == 96


def test_piece_text_marks_word_starts_with_a_space(tokenizer, sp):
    words = sp.encode("thanks for calling", out_type=str)
    ids = sp.encode("thanks for calling")

    texts = [tokenizer.piece_text(token) for token in ids]

    assert texts == [piece.replace("\u2581", " ") for piece in words]
    assert texts[0].startswith(" ")


def test_piece_text_of_padding_and_control_tokens_is_empty(tokenizer):
    assert [tokenizer.piece_text(token) for token in (TEXT_EPAD, 1, 2, TEXT_PAD)] == ["", "", "", ""]


def test_decode_a_text_stream_with_padding_between_words(tokenizer, sp):
    stream = []
    for word in ("Hello,", "thanks", "for", "calling."):
        stream += [TEXT_PAD, TEXT_PAD, TEXT_EPAD] + sp.encode(word)
    stream += [TEXT_PAD] * 3

    assert tokenizer.decode(stream) == "Hello, thanks for calling."


def test_missing_or_bad_model_file_is_a_tokenizer_error(tmp_path):
    with pytest.raises(TokenizerError, match="nope.model"):
        TextTokenizer(tmp_path / "nope.model")
    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(b"not a model")
    with pytest.raises(TokenizerError, match="garbage.model: not a sentencepiece model"):
        TextTokenizer(garbage)
