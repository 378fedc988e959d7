"""A call's recording: one stereo 16-bit WAV at 24 kHz, the caller on the left, the agent on the right.

Both channels come from the engine's frame clock (each 80 ms step's caller input and agent
output), so they stay aligned however the network jitters. The file is written as the call
goes: frames are buffered on the event loop and appended by `flush` on a thread about once a
second, which also rewrites the header's sizes and syncs the file to disk. A crash loses at
most the frames since the last flush; `repair` gives a file whose writer died between an
append and its header update the sizes its data really has (the file's format is
`agent.contracts.recordings`, which the control plane reads too).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from agent.contracts.audio import SAMPLE_RATE
from agent.contracts.recordings import (
    CHANNELS,
    MAX_DATA_BYTES,
    SAMPLE_BYTES,
    wav_header,
)


def _int16(pcm: np.ndarray) -> np.ndarray:
    return (np.clip(pcm, -1.0, 1.0) * 32767.0).astype("<i2")


class CallRecorder:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("xb")  # a call id is never recorded twice
        self._file.write(wav_header(0))
        self._written = 0  # data bytes in the file
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._lock = threading.Lock()  # the buffer, shared by the event loop and the flushing thread
        self._io = threading.RLock()  # the file: one flush or close at a time
        self.truncated = False  # the recording reached the WAV size limit

    @property
    def seconds(self) -> float:
        return (self._written + self._buffered) / (SAMPLE_RATE * CHANNELS * SAMPLE_BYTES)

    def add(self, caller: np.ndarray, agent: np.ndarray) -> None:
        """One frame of both sides (equal lengths, float32 in [-1, 1]); cheap, for the event loop."""
        frame = np.empty((caller.size, CHANNELS), dtype="<i2")
        frame[:, 0], frame[:, 1] = _int16(caller), _int16(agent)
        with self._lock:
            if self._written + self._buffered + frame.nbytes > MAX_DATA_BYTES:
                self.truncated = True
                return
            self._chunks.append(frame.tobytes())
            self._buffered += frame.nbytes

    def flush(self) -> None:
        """Append what is buffered, update the header and sync (blocking: run it on a thread)."""
        with self._io:
            with self._lock:
                chunks, self._chunks, self._buffered = self._chunks, [], 0
            if self._file.closed:
                return
            self._file.seek(0, os.SEEK_END)
            self._file.write(b"".join(chunks))
            self._written += sum(len(c) for c in chunks)
            self._file.seek(0)
            self._file.write(wav_header(self._written))
            self._file.flush()
            os.fdatasync(self._file.fileno())

    def close(self) -> None:
        """Flush and close (blocking)."""
        with self._io:
            self.flush()
            self._file.close()
