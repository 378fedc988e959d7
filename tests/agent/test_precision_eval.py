"""`plexline eval precision` as a user runs it, with the tiny dummy model on the CPU."""

import json
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parents[2] / "personas" / "examples"


def plexline(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plexline", *args], capture_output=True, text=True, timeout=300)


def test_every_precision_is_compared_with_bf16(tmp_path):
    report = tmp_path / "precision.json"
    done = plexline("eval", "precision", "--model", "dummy", "--persona", str(EXAMPLES / "acme-support.yaml"),
                    "--input", str(EXAMPLES / "acme-caller.wav"), "--seconds", "3", "--json", str(report))
    assert done.returncode == 0, done.stderr
    assert "DUMMY" in done.stdout and "log-spectral" in done.stdout
    result = json.loads(report.read_text())
    assert result["seconds"] == 3.0 and "RANDOM WEIGHTS" in result["model"]
    rows = {(r["weights"], r["kv_dtype"]): r for r in result["results"]}
    assert set(rows) == {("bf16", "bf16"), ("bf16", "fp8"), ("fp8", "bf16"), ("fp8", "fp8")}
    assert rows["bf16", "bf16"] == {"weights": "bf16", "kv_dtype": "bf16", "text_agreement": 1.0,
                                    "first_difference_s": None, "audio_relative_difference": 0.0,
                                    "log_spectral_distance_db": 0.0}
    eight_bit = [rows[key] for key in rows if key != ("bf16", "bf16")]
    assert all(0 <= r["text_agreement"] <= 1 for r in eight_bit)
    assert max(r["audio_relative_difference"] for r in eight_bit) > 0  # the 8-bit runs are not bf16 again


def test_a_missing_input_is_one_line(tmp_path):
    done = plexline("eval", "precision", "--model", "dummy", "--persona", str(EXAMPLES / "acme-support.yaml"),
                    "--input", str(tmp_path / "none.wav"))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"plexline: error: {tmp_path / 'none.wav'}: no such input file"]
