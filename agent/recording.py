"""A call's recording: one stereo 16-bit WAV at 24 kHz, the caller on the left, the agent on the right.

Both channels come from the engine's frame clock (each 80 ms step's caller input and agent
output), so they stay aligned however the network jitters. The file is written as the call
goes: frames are buffered on the event loop and appended by `flush` on a thread about once a
second, which also rewrites the header's sizes and syncs the file to disk. A crash loses at
most the frames since the last flush; `repair` gives a file whose writer died between an
append and its header update the sizes its data really has (the file's format is
`agent.contracts.recordings`, which the control plane reads too).

A write that fails (the data disk full, an I/O error) stops the recording, not the call: what
reached the file stays a valid WAV of the audio recorded until then (its header rewritten in
place, which takes no new space), a file that holds no audio is removed, and `stopped` says
why, for the call's `call.ended`.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np

from agent.contracts.audio import SAMPLE_RATE
from agent.contracts.recordings import (
    CHANNELS,
    HEADER_BYTES,
    MAX_DATA_BYTES,
    SAMPLE_BYTES,
    repair,
    wav_header,
)

log = logging.getLogger(__name__)

SIZE_LIMIT = "the WAV size limit (about 12 h) was reached"


def _int16(pcm: np.ndarray) -> np.ndarray:
    return (np.clip(pcm, -1.0, 1.0) * 32767.0).astype("<i2")


def _write_at(fd: int, data: bytes, offset: int) -> None:
    """All of `data` at `offset`, or OSError (a short write, as a nearly full disk gives, is continued)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        offset += written
        view = view[written:]


class CallRecorder:
    def __init__(self, path: Path):
        self.path = path
        self.stopped: str | None = None  # why the recording stopped before the call's end
        self.kept = True  # False once the file is removed (or was never made): it holds no audio
        self._written = 0  # data bytes in the file
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._lock = threading.Lock()  # the buffer, shared by the event loop and the flushing thread
        self._io = threading.RLock()  # the file: one flush or close at a time
        self._fd: int | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)  # a call is never recorded twice
            _write_at(self._fd, wav_header(0), 0)
        except OSError as error:
            self._stop(error)

    @property
    def seconds(self) -> float:
        return (self._written + self._buffered) / (SAMPLE_RATE * CHANNELS * SAMPLE_BYTES)

    def add(self, caller: np.ndarray, agent: np.ndarray) -> None:
        """One frame of both sides (equal lengths, float32 in [-1, 1]); cheap, for the event loop."""
        if self.stopped is not None:
            return
        frame = np.empty((caller.size, CHANNELS), dtype="<i2")
        frame[:, 0], frame[:, 1] = _int16(caller), _int16(agent)
        with self._lock:
            if self._written + self._buffered + frame.nbytes > MAX_DATA_BYTES:
                self.stopped = SIZE_LIMIT
                return
            self._chunks.append(frame.tobytes())
            self._buffered += frame.nbytes

    def flush(self) -> None:
        """Append what is buffered, update the header and sync (blocking: run it on a thread)."""
        with self._io:
            with self._lock:
                chunks, self._chunks, self._buffered = self._chunks, [], 0
            if self._fd is None:
                return
            data = b"".join(chunks)
            try:
                _write_at(self._fd, data, HEADER_BYTES + self._written)
                self._written += len(data)
                _write_at(self._fd, wav_header(self._written), 0)
                os.fdatasync(self._fd)
            except OSError as error:
                self._stop(error)

    def close(self) -> None:
        """Flush and close (blocking)."""
        with self._io:
            self.flush()
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _stop(self, error: OSError) -> None:
        """After a failed write: no more audio; the file made a valid WAV of the audio it holds, or
        removed when it holds none (or cannot be made valid)."""
        self.stopped = f"a write failed: {error.strerror or error}"
        log.error("recording stopped", extra={"call": self.path.stem, "error": repr(error)})
        with self._lock:
            self._chunks, self._buffered = [], 0
        if self._fd is None:  # never made (or another call's file): nothing of ours to keep
            self.kept = False
            return
        os.close(self._fd)
        self._fd = None
        try:
            self._written = repair(self.path) if self.path.stat().st_size > HEADER_BYTES else 0
        except OSError as error:
            log.error("recording not repaired", extra={"call": self.path.stem, "error": repr(error)})
            self._written = 0
        if not self._written:
            self.path.unlink(missing_ok=True)
            self.kept = False
