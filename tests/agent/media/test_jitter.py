from agent.media.jitter import JitterBuffer


def played(buffer: JitterBuffer, ticks: int) -> list[bytes | None]:
    return [buffer.pop() for _ in range(ticks)]


def test_packets_come_out_in_sequence_order():
    buffer = JitterBuffer()
    for seq in (10, 12, 11, 13):
        buffer.put(seq, bytes([seq]))
    assert played(buffer, 4) == [b"\x0a", b"\x0b", b"\x0c", b"\x0d"]


def test_a_lost_packet_is_a_gap_and_a_late_one_is_dropped():
    buffer = JitterBuffer()
    for seq in (1, 3):
        buffer.put(seq, bytes([seq]))
    assert played(buffer, 3) == [b"\x01", None, b"\x03"]
    buffer.put(2, b"late")
    assert (buffer.stats.missing, buffer.stats.late) == (1, 1)


def test_sequence_numbers_wrap():
    buffer = JitterBuffer()
    for seq in (65534, 65535, 0, 1):
        buffer.put(seq, str(seq).encode())
    assert played(buffer, 4) == [b"65534", b"65535", b"0", b"1"]


def test_duplicates_are_dropped_and_a_silent_sender_is_waited_for():
    buffer = JitterBuffer()
    buffer.put(5, b"a")
    buffer.put(5, b"a")
    assert played(buffer, 3) == [b"a", None, None]
    buffer.put(6, b"b")  # the sender resumes: nothing was skipped while it was silent
    assert played(buffer, 1) == [b"b"]
    assert buffer.stats.duplicate == 1


def test_delay_stays_bounded_when_the_sender_runs_ahead():
    buffer = JitterBuffer(max_depth=4)
    for seq in range(10):
        buffer.put(seq, bytes([seq]))
    assert buffer.depth == 4 and buffer.stats.skipped == 6
    assert played(buffer, 1) == [b"\x06"]


def test_a_jump_far_ahead_resynchronises():
    buffer = JitterBuffer()
    buffer.put(100, b"a")
    buffer.pop()
    buffer.put(40000, b"b")
    assert played(buffer, 1) == [b"b"]
