"""What the model's tests share: whether this CPU can check Mimi's encoder against the reference codes.

The tiny reference Mimi's random weights give latents of about 6e6 before its quantizer, where one
float32 step is 0.5 and the centroids' distances differ by less: every one of the reference's 112
codes is a float32 tie (within 1.05 ULP of the nearest centroid in float64), and the codes of
silent, shifted or reversed audio are ties as well. So the reference codes are the rounding of the
CPU that made them, and only a CPU that rounds the same way can check the encoder against them.
CPUs with AMX (Sapphire Rapids and later, whose MKL and oneDNN kernels round differently) were
measured to break the ties otherwise on 2026-12-04 (45-55% of codes equal, whatever MKL_CBWR or
ONEDNN_MAX_CPU_ISA); the others this project ran on reproduce every code.
"""

from pathlib import Path

import pytest


def rounds_like_the_reference() -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    return not (cpuinfo.exists() and "amx_tile" in cpuinfo.read_text().split())


@pytest.fixture
def reference_rounding() -> None:
    """Skip a test whose expected outputs follow from the reference's Mimi codes on a CPU that rounds otherwise."""
    if not rounds_like_the_reference():
        pytest.skip("this CPU (AMX) breaks the tiny Mimi's float32 ties otherwise than the reference's: "
                    "see tests/agent/model/conftest.py")
