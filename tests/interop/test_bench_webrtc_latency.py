"""The echo latency benchmark: its measurement on a known delay, then a real call to the echo engine."""

import asyncio

import numpy as np

from bench.webrtc_caller import PACKET, RATE, Received
from bench.webrtc_latency import ENGINE_SECONDS, click_train, measure, measure_call
from bench.serving import OPERATOR, serving


def test_the_measure_finds_a_known_delay_through_noisy_stamps():
    signal, starts = click_train(4.0)
    rng = np.random.default_rng(3)
    frames = len(signal) // PACKET
    sent_at = [100.0 + n * 0.02 + rng.uniform(0, 0.002) for n in range(frames)]
    delayed = np.concatenate([np.zeros(int(0.25 * RATE), np.float32), signal])  # 250 ms later
    received = Received()
    for n in range(frames):
        received.frames.append(delayed[n * PACKET:(n + 1) * PACKET])
        received.pts.append(n * PACKET)
        received.arrived_at.append(100.0 + n * 0.02 + rng.uniform(0, 0.003))

    result = measure(signal, starts, sent_at, received)

    assert abs(result.round_trip_ms - 250.0) < 0.1 and result.added_ms == round(250.0 - ENGINE_SECONDS * 1000, 1)
    assert result.peak > 0.99 and result.aligned and result.clicks_found == result.clicks


def test_a_click_train_comes_back_from_the_echo_engine_found_and_aligned(tmp_path):
    with serving("echo", 1, tmp_path) as server:
        result = asyncio.run(measure_call(server.url, OPERATOR, "acme", "support", seconds=4.0))
        free = server.free_slots()

    print(f"round trip {result.round_trip_ms} ms, added {result.added_ms} ms")  # the benchmark's figure
    assert result.aligned and result.peak > 0.8, result
    assert ENGINE_SECONDS * 1000 <= result.round_trip_ms < 600  # never sooner than the engine's two frames
    assert free == 1
