"""Phrases of the caller that transfer or end the call, matched on the recogniser's words."""

import numpy as np
import pytest
from pydantic import ValidationError

from agent.call_reporter import outcome_of
from agent.caller_phrases import CallerPhrases, Heard
from agent.contracts.audio import FRAME_SECONDS
from agent.contracts.calls import CallDetails
from agent.engine.clock import CallSlot
from agent.model.loading import DummyTokenizer
from agent.model.stt import SttConfig
from agent.model.stt_words import WordTimer
from agent.session import Session
from agent.timeline import CallTimeline
from personas.schema import Persona
from personas.tenant import Line, Transfer

PAD, EPAD = 3, 0
HEADS = np.zeros((4, 6), dtype=np.float32)


def hear(phrases: CallerPhrases, text: str) -> list[Heard]:
    return [heard for word in text.split() if (heard := phrases.heard(word)) is not None]


def test_a_phrase_matches_the_callers_last_words_case_and_punctuation_aside():
    phrases = CallerPhrases(transfer=["speak to a human"], hang_up=["Goodbye"])
    assert hear(phrases, "Can I speak to a manager?") == []
    assert hear(phrases, "Can I speak to a Human, please?") == [Heard("transfer", "speak to a human")]
    assert hear(phrases, "OK, goodbye!") == [Heard("hang_up", "Goodbye")]


def test_words_between_the_phrases_words_break_the_match():
    assert hear(CallerPhrases(transfer=["a human"]), "a real human") == []


def test_no_phrases_hear_nothing():
    phrases = CallerPhrases()
    assert not phrases and hear(phrases, "speak to a human") == []


def session_with(transfer=(), hang_up=()) -> tuple[Session, CallSlot]:
    call = CallDetails(call_id="c1", tenant="acme", line="support", persona=Persona(role="r", voice="NATF2"),
                       max_call_seconds=60, transfer_phrases=tuple(transfer), hang_up_phrases=tuple(hang_up))
    slot = CallSlot(index=0)
    session = Session(call, slot, CallTimeline(None, FRAME_SECONDS),
                      caller_words=WordTimer(DummyTokenizer(96), SttConfig.tiny()))
    return session, slot


def test_saying_a_transfer_phrase_ends_the_call_as_transferred():
    session, slot = session_with(transfer=["w40 w41"])  # the tiny dummy tokenizer's words
    for token in [PAD, EPAD, 40, 41]:
        slot.caller_listener(token, HEADS)
    assert not session.end_requested.is_set()  # "w41" is not finished until the next padding
    slot.caller_listener(PAD, HEADS)
    assert session.end_requested.is_set()
    assert session.end_reason == 'transfer requested: the caller said "w40 w41"'
    assert outcome_of(session.end_reason, session.end_outcome) == "transferred"


def test_saying_a_hang_up_phrase_ends_the_call_from_our_side():
    session, slot = session_with(hang_up=["w50"])
    for token in [EPAD, 50, PAD]:
        slot.caller_listener(token, HEADS)
    assert session.end_reason == 'the caller said "w50"'
    assert outcome_of(session.end_reason, session.end_outcome) == "agent_hung_up"


def test_a_line_lists_its_phrases_and_a_transfer_needs_a_digit_or_phrases():
    line = Line.model_validate({"answers": ["+15555550100"], "persona": {"role": "r", "voice": "NATF2"},
                                "transfer": {"to": "+15555550111", "phrases": ["speak to a human"]},
                                "hang_up_phrases": ["goodbye"]})
    assert (line.transfer.digit, line.transfer.phrases, line.hang_up_phrases) == \
        (None, ["speak to a human"], ["goodbye"])
    with pytest.raises(ValidationError, match="a transfer needs a digit, phrases, or both"):
        Transfer(to="+15555550111")
    with pytest.raises(ValidationError):
        Transfer(to="+15555550111", phrases=["?!"])  # no word to match
