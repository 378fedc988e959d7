from agent.contracts import events as ev
from agent.timeline import CallTimeline
from agent.transcript import Word


class Pieces:
    """Token t is the piece PIECES[t]; 0 and 3 are padding, as in PersonaPlex's text stream."""

    PIECES = {0: "", 3: "", 10: " Hel", 11: "lo", 12: " there", 13: " how", 14: " can", 15: " I", 16: " help"}

    def piece_text(self, token: int) -> str:
        return self.PIECES[token]


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def speak(timeline: CallTimeline, first_frame: int, tokens: list[int]) -> None:
    for i, token in enumerate(tokens):
        timeline.agent_text(first_frame + i, token)


def test_words_group_into_turns_split_by_pauses_and_by_anything_between():
    clock = Clock()
    timeline = CallTimeline(Pieces(), frame_seconds=0.08, clock=clock)
    timeline.mark("answered")
    speak(timeline, 0, [10, 11, 3, 12])  # "Hello there" at 0.0 .. 0.32
    speak(timeline, 20, [13, 14])  # 1.6 s: "how can" after a 1.28 s pause: a new turn
    clock.now += 2.0
    timeline.dtmf("5")  # 2.0 s
    speak(timeline, 26, [15, 16])  # 2.08 s: "I help" right after the digit: a new turn anyway
    clock.now += 1.0
    timeline.mark("caller_hung_up", "the caller's media ended")

    items = timeline.items()
    assert [(type(i).__name__, getattr(i, "text", None) or getattr(i, "digit", None) or i.event) for i in items] == [
        ("Mark", "answered"), ("Speech", "Hello there"), ("Speech", "how can"), ("Dtmf", "5"),
        ("Speech", "I help"), ("Mark", "caller_hung_up")]
    hello = items[1]
    assert (hello.speaker, hello.start, hello.end) == ("agent", 0.0, 0.32)
    assert hello.words == [ev.Word(text="Hello", start=0.0, end=0.16), ev.Word(text="there", start=0.24, end=0.32)]
    assert (items[3].at, items[5].at, items[5].detail) == (2.0, 3.0, "the caller's media ended")


def test_caller_words_from_a_recogniser_interleave_as_caller_turns():
    timeline = CallTimeline(Pieces(), frame_seconds=0.08, clock=Clock())
    speak(timeline, 0, [10, 11])  # agent 0.0 .. 0.16
    speak(timeline, 10, [13])  # agent 0.8 .. 0.88
    timeline.caller_words([Word("hi", 0.3, 0.5), Word("there", 0.55, 0.7)])

    assert [(i.speaker, i.text) for i in timeline.items()] == [
        ("agent", "Hello"), ("caller", "hi there"), ("agent", "how")]


def test_settled_items_are_a_stable_prefix_and_the_rest_is_pending_text():
    clock = Clock()
    timeline = CallTimeline(Pieces(), frame_seconds=0.08, turn_gap=1.0, clock=clock)
    timeline.mark("answered")
    speak(timeline, 0, [10, 11])
    clock.now += 0.5
    assert timeline.settled() == ([], "Hello")  # nothing is settled until a gap has passed

    clock.now += 1.0  # 1.5 s: the turn ended more than a gap ago
    settled, pending = timeline.settled()
    assert [getattr(i, "text", None) for i in settled] == [None, "Hello"] and pending == ""
    speak(timeline, 19, [12])  # 1.52 s
    assert timeline.settled()[0] == settled and timeline.settled()[1] == "there"


def test_without_a_tokenizer_only_digits_and_events_are_kept():
    timeline = CallTimeline(None, frame_seconds=0.08, clock=Clock())
    timeline.agent_text(0, 10)
    timeline.dtmf("#")
    assert timeline.items() == [ev.Dtmf(at=0.0, digit="#")]
