import pytest

from agent.media.dtmf import DtmfDetector, DtmfEvent


def test_an_event_round_trips():
    event = DtmfEvent(event=11, end=True, volume=10, duration=800)
    assert DtmfEvent.parse(event.serialise()) == event and event.digit == "#"
    assert DtmfEvent.parse(bytes.fromhex("00 0a 00 a0")) == DtmfEvent(0, False, 10, 160)


def test_short_payloads_are_refused():
    with pytest.raises(ValueError, match="telephone-event payload of 3 bytes"):
        DtmfEvent.parse(b"\x00\x00\x00")


def test_each_digit_once_however_many_packets_carry_it():
    detector = DtmfDetector()
    packets = [(1000, DtmfEvent(1, False, 10, d)) for d in (160, 320, 480)] + [(1000, DtmfEvent(1, True, 10, 640))] * 3
    packets += [(2000, DtmfEvent(10, False, 10, 160)), (2000, DtmfEvent(10, True, 10, 320))]
    assert [d for ts, e in packets if (d := detector.feed(ts, e))] == ["1", "*"]
