"""A call's recording file, which the worker writes and the control plane serves: one stereo 16-bit WAV at
24 kHz (the caller left, the agent right) at `<root>/<tenant>/<call id>.wav`."""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

from agent.contracts.audio import SAMPLE_RATE

CHANNELS = 2
SAMPLE_BYTES = 2
HEADER_BYTES = 44
MAX_DATA_BYTES = 0xFFFF_FFFF - 36  # a WAV's sizes are 32-bit: about 12 h at this rate
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # tenant and call ids: never a path


def recording_path(root: Path, tenant: str, call_id: str) -> Path:
    """Where a call's recording lives: `<root>/<tenant>/<call id>.wav`."""
    for name in (tenant, call_id):
        if not _NAME.fullmatch(name):
            raise ValueError(f"{name!r} cannot name a recording")
    return root / tenant / f"{call_id}.wav"


def wav_header(data_bytes: int) -> bytes:
    block = CHANNELS * SAMPLE_BYTES
    return struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + data_bytes, b"WAVE", b"fmt ", 16, 1, CHANNELS,
                       SAMPLE_RATE, SAMPLE_RATE * block, block, 8 * SAMPLE_BYTES, b"data", data_bytes)


def repair(path: Path) -> int:
    """Make the header's sizes match the data in the file; returns the data bytes."""
    with path.open("r+b") as file:
        size = file.seek(0, os.SEEK_END)
        block = CHANNELS * SAMPLE_BYTES
        data = min(max(size - HEADER_BYTES, 0) // block * block, MAX_DATA_BYTES)
        file.seek(0)
        if file.read(HEADER_BYTES) != wav_header(data):
            file.seek(0)
            file.write(wav_header(data))
            file.truncate(HEADER_BYTES + data)
    return data
