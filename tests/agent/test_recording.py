import os
import signal
import subprocess
import sys
import wave

import numpy as np

from agent.contracts.recordings import repair
from agent.recording import CallRecorder

FRAME = 1920


def read(path):
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 24_000)
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)


def test_caller_left_agent_right_frame_by_frame(tmp_path):
    recorder = CallRecorder(tmp_path / "call.wav")
    for i in range(5):
        recorder.add(np.full(FRAME, 0.25 * (i % 2), np.float32), np.full(FRAME, -0.5, np.float32))
        if i == 2:
            recorder.flush()
    assert recorder.seconds == 5 * 0.08
    recorder.close()

    samples = read(tmp_path / "call.wav")
    assert samples.shape == (5 * FRAME, 2)
    assert list(samples[::FRAME, 0]) == [0, 8191, 0, 8191, 0]
    assert np.all(samples[:, 1] == -16383)


def test_a_flushed_file_is_playable_while_the_call_goes_on(tmp_path):
    recorder = CallRecorder(tmp_path / "call.wav")
    recorder.add(np.zeros(FRAME, np.float32), np.zeros(FRAME, np.float32))
    recorder.flush()
    recorder.add(np.zeros(FRAME, np.float32), np.zeros(FRAME, np.float32))  # buffered, not yet in the file

    assert read(tmp_path / "call.wav").shape == (FRAME, 2)
    recorder.close()


WRITER = """
import sys, time, numpy as np
from pathlib import Path
from agent.recording import CallRecorder
r = CallRecorder(Path(sys.argv[1]))
for i in range(10_000):
    r.add(np.full(1920, 0.1, np.float32), np.full(1920, 0.2, np.float32))
    if i % 12 == 11:
        r.flush()
        print(i + 1, flush=True)
    time.sleep(0.001)
"""


def test_a_writer_killed_mid_call_leaves_all_flushed_audio_which_repair_makes_playable(tmp_path):
    path = tmp_path / "call.wav"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                              env=os.environ | {"PYTHONPATH": os.getcwd()})
    flushed = [int(writer.stdout.readline()) for _ in range(5)]
    writer.send_signal(signal.SIGKILL)
    writer.wait()

    frames = repair(path) // (FRAME * 4)
    assert frames >= flushed[-1]  # nothing reported as flushed is lost
    assert read(path).shape == (frames * FRAME, 2)
    assert repair(path) == frames * FRAME * 4  # repairing again changes nothing


def test_repair_drops_a_torn_sample_at_the_end(tmp_path):
    recorder = CallRecorder(tmp_path / "call.wav")
    recorder.add(np.zeros(FRAME, np.float32), np.zeros(FRAME, np.float32))
    recorder.close()
    with (tmp_path / "call.wav").open("ab") as f:
        f.write(b"\x01\x02\x03")  # three bytes of a four-byte sample pair
    assert repair(tmp_path / "call.wav") == FRAME * 4
    assert read(tmp_path / "call.wav").shape == (FRAME, 2)
