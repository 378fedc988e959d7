"""The prefill pacer's cost model, fitted to timed forwards."""

import pytest

from agent.engine.pacer import PrefillPacer, fit_costs


def test_forwards_on_a_line_give_the_line():
    fixed, per_frame = fit_costs({16: 0.0076 + 16 * 25.6e-6, 1024: 0.0076 + 1024 * 25.6e-6})
    assert fixed == pytest.approx(0.0076) and per_frame == pytest.approx(25.6e-6)


def test_no_timed_length_costs_more_than_the_pacer_expects():
    timed = {1: 0.0110, 16: 0.0112, 64: 0.0100, 256: 0.0145, 1024: 0.0303}  # short FP8 chunks, above the line
    pacer = PrefillPacer("cpu", *fit_costs(timed))
    assert all(pacer.cost(frames) >= seconds - 1e-12 for frames, seconds in timed.items())
    assert pacer.cost(1) == pytest.approx(timed[1])  # the shortest chunk lies highest above the line here
    through_64_and_1024 = PrefillPacer("cpu", *fit_costs({64: timed[64], 1024: timed[1024]}))
    assert through_64_and_1024.cost(16) < timed[16] - 0.002  # what the two-length fit expected: 2 ms short
