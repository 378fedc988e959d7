from agent.transcript import TranscriptBuilder


class Pieces:
    """Token t is the piece PIECES[t]; 0 and 3 are padding, as in PersonaPlex's text stream."""

    PIECES = {0: "", 3: "", 10: " Hel", 11: "lo", 12: " there", 13: ",", 14: " you"}

    def piece_text(self, token: int) -> str:
        return self.PIECES[token]


def test_pieces_join_into_words_with_frame_times():
    builder = TranscriptBuilder(Pieces(), frame_seconds=0.08)
    for frame, token in enumerate([3, 10, 11, 3, 0, 12, 13, 3, 3, 14]):
        builder.add(frame, token)
    assert builder.text == "Hello there, you"
    assert builder.as_json() == [
        {"text": "Hello", "start": 0.08, "end": 0.24},
        {"text": "there,", "start": 0.4, "end": 0.56},
        {"text": "you", "start": 0.72, "end": 0.8},
    ]


def test_a_piece_after_padding_starts_a_new_word():
    builder = TranscriptBuilder(Pieces(), frame_seconds=0.08)
    for frame, token in enumerate([10, 3, 11]):
        builder.add(frame, token)
    assert [w.text for w in builder.words] == ["Hel", "lo"]
