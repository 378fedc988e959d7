"""The adaptive playout depth, against synthetic arrivals played on a 20 ms clock as the caller's track plays them."""

import random

from agent.media.jitter import PACKET_SECONDS, JitterBuffer, PlayoutDepth

MARGIN = 0.010


class Playout:
    """A sender of one packet each 20 ms (payload b"s" speech, b"q" a pause) through `delays`, and a
    receiver that plays the buffer as agent.media.rtp_session.CallerTrack does."""

    def __init__(self, start: int = 1, maximum: int = 6):
        self.buffer = JitterBuffer(playout=PlayoutDepth(start, maximum, margin=MARGIN))
        self.sent = 0
        self.due: float | None = None
        self.dropped: list[bytes] = []

    def run(self, seconds: float, delay, pattern=lambda n: b"s") -> None:
        packets = round(seconds / PACKET_SECONDS)
        arrivals = sorted((n * PACKET_SECONDS + delay(), n) for n in range(self.sent, self.sent + packets))
        end = (self.sent + packets) * PACKET_SECONDS
        self.sent += packets
        for arrival, n in arrivals:
            self._tick_until(arrival)
            self.buffer.put(n & 0xFFFF, pattern(n), arrival, n * PACKET_SECONDS)
            if self.due is None and self.buffer.depth >= self.buffer.playout.start:
                self.due = arrival + MARGIN
        self._tick_until(end)

    def _tick_until(self, time: float) -> None:
        while self.due is not None and self.due < time:
            if self.buffer.depth and not self.buffer.hold():
                payload = self.buffer.pop(self.due)
                if payload == b"q" and self.buffer.drop_quiet():
                    self.dropped.append(payload)
                    self.buffer.pop(self.due)
            self.due += PACKET_SECONDS


def speech_with_pauses(n: int) -> bytes:
    return b"q" if n % 100 >= 75 else b"s"  # 1.5 s of speech, 0.5 s of pause


def jitter(rng: random.Random, seconds: float):
    return lambda: rng.uniform(0, 2 * seconds)  # netem's `delay J J`, as bench.campaign.network's relay


def test_a_clean_line_keeps_the_starting_depth():
    rng = random.Random(1)
    playout = Playout()
    playout.run(20.0, lambda: 0.005 + rng.uniform(0, 0.004))
    stats = playout.buffer.stats
    assert (playout.buffer.playout.depth, stats.raised, stats.lowered, stats.late, stats.missing) == (1, 0, 0, 0, 0)
    assert stats.played == 1000


def test_a_deeper_start_is_kept_on_a_clean_line():
    playout = Playout(start=3)
    playout.run(10.0, lambda: 0.005)
    assert playout.buffer.playout.depth == 3 and playout.buffer.stats.raised == 0


def test_the_needed_depth_covers_the_95th_percentile_of_the_lateness():
    rng = random.Random(3)
    clean, jittery = PlayoutDepth(margin=MARGIN), PlayoutDepth(margin=MARGIN)
    for n in range(250):
        clean.arrived(n * PACKET_SECONDS + rng.uniform(0, 0.004), n * PACKET_SECONDS)
        jittery.arrived(n * PACKET_SECONDS + rng.uniform(0, 0.060), n * PACKET_SECONDS)
    assert clean.needed() == 1
    assert jittery.needed() == 4  # 57 ms of lateness: 3 x 20 ms + the 10 ms margin covers it, 2 x 20 ms does not


def test_30_ms_of_jitter_grows_the_depth_until_no_packet_is_late():
    rng = random.Random(19)
    playout = Playout()
    playout.run(5.0, jitter(rng, 0.030))
    grown, late = playout.buffer.stats.raised, playout.buffer.stats.late
    assert playout.buffer.playout.depth >= 3, playout.buffer.stats  # held ticks, or waits for a packet not come
    playout.run(20.0, jitter(rng, 0.030))
    stats = playout.buffer.stats
    assert stats.late - late <= 2, stats  # the 95th percentile: the odd one of the window's slowest
    assert stats.raised - grown <= 2 and stats.deepest <= 5 and stats.lowered == 0, stats


def test_the_rule_holds_no_tick_past_its_maximum():
    depth = PlayoutDepth(start=1, maximum=2, margin=MARGIN)
    for n in range(100):
        depth.arrived(n * PACKET_SECONDS + (0.2 if n % 2 else 0.0), n * PACKET_SECONDS)
    depth.played(99 * PACKET_SECONDS + MARGIN, 99 * PACKET_SECONDS)
    assert (depth.depth, depth.needed()) == (1, 2)
    assert depth.should_hold() and depth.depth == 2
    assert not depth.should_hold()


def test_calm_again_it_shrinks_back_in_pauses_only():
    rng = random.Random(19)
    playout = Playout()
    playout.run(10.0, jitter(rng, 0.030))
    assert playout.buffer.playout.depth >= 3
    playout.run(30.0, lambda: 0.005 + rng.uniform(0, 0.004), speech_with_pauses)
    stats = playout.buffer.stats
    assert playout.buffer.playout.depth == 1 and stats.lowered >= 2, stats
    assert set(playout.dropped) == {b"q"} and len(playout.dropped) == stats.lowered
    assert stats.missing == stats.late  # calm: nothing lost but what the jitter made late


def test_without_pauses_it_stays_deeper_rather_than_cut_speech():
    rng = random.Random(19)
    playout = Playout()
    playout.run(10.0, jitter(rng, 0.030))
    depth = playout.buffer.playout.depth
    playout.run(20.0, lambda: 0.005)
    assert playout.buffer.playout.depth == depth and playout.buffer.stats.lowered == 0
