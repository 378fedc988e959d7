import json
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


FULL_DISK = """
import json, shutil, sys, numpy as np
from pathlib import Path
from agent.recording import CallRecorder
disk, out, fill_first = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "fill-first"
if fill_first:  # nothing left for even the header
    with (disk / "filler").open("wb", buffering=0) as filler:
        try:
            while True:
                filler.write(bytes(4096))
        except OSError:
            pass
r = CallRecorder(disk / "acme" / "c1.wav")
frames = 0
while r.stopped is None and frames < 1000:  # a second of frames per flush, until the disk is full
    for _ in range(12):
        r.add(np.full(1920, (frames % 100) / 200, np.float32), np.full(1920, -0.25, np.float32))
        frames += 1
    r.flush()
r.add(np.zeros(1920, np.float32), np.zeros(1920, np.float32))  # the call goes on: nothing is kept of it
r.close()
if r.path.exists():
    shutil.copy(r.path, out)
print(json.dumps({"stopped": r.stopped, "kept": r.kept, "seconds": r.seconds, "exists": r.path.exists()}))
"""


def record_on_a_full_disk(tmp_path, fill_first: bool) -> dict:
    """FULL_DISK on a 256 KiB tmpfs of a mount namespace of its own (`unshare -rm`: no privilege
    needed); the recording, if one is left, copied to tmp_path/kept.wav."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = 'mount -t tmpfs -o size=262144 plexline-test "$1" && shift && exec "$@"'
    done = subprocess.run(["unshare", "-rm", "sh", "-c", mount, "sh", str(disk), sys.executable, "-c", FULL_DISK,
                           str(disk), str(tmp_path / "kept.wav"), "fill-first" if fill_first else "record"],
                          capture_output=True, text=True, env=os.environ | {"PYTHONPATH": os.getcwd()}, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_recording_stopped_by_a_full_disk_keeps_a_valid_wav_of_what_was_recorded(tmp_path):
    result = record_on_a_full_disk(tmp_path, fill_first=False)

    assert result["stopped"] == "a write failed: No space left on device"
    assert result["kept"] and result["exists"]
    kept = tmp_path / "kept.wav"
    samples = read(kept)  # its header's sizes are the data's
    assert kept.stat().st_size == 44 + samples.nbytes
    assert 0 < len(samples) == round(result["seconds"] * 24_000) < 1000 * FRAME
    frame = np.arange(len(samples)) // FRAME
    assert np.all(samples[:, 0] == ((frame % 100) / 200 * 32767).astype("<i2"))  # the caller, as recorded
    assert np.all(samples[:, 1] == -8191)


def test_a_recording_that_never_got_to_the_disk_leaves_no_file(tmp_path):
    result = record_on_a_full_disk(tmp_path, fill_first=True)

    assert result == {"stopped": "a write failed: No space left on device", "kept": False, "seconds": 0.0,
                      "exists": False}
