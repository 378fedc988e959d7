"""`plexline offline` as a user runs it: a subprocess, real files, one-line errors."""

import json
import subprocess
import sys
import wave
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parents[2] / "personas" / "examples"


def plexline(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plexline", *args], capture_output=True, text=True, timeout=300)


def wav_info(path: Path) -> tuple[int, float]:
    with wave.open(str(path)) as w:
        return w.getframerate(), w.getnframes() / w.getframerate()


def test_the_bundled_example_with_the_dummy_model(tmp_path):
    out, transcript = tmp_path / "agent.wav", tmp_path / "agent.json"
    done = plexline("offline", "--model", "dummy", "--quiet", "--persona", str(EXAMPLES / "acme-support.yaml"),
                    "--input", str(EXAMPLES / "acme-caller.wav"), "--output", str(out), "--transcript", str(transcript))
    assert done.returncode == 0, done.stderr
    assert "DUMMY" in done.stdout and "DUMMY" in done.stderr
    rate, seconds = wav_info(out)
    assert rate == 24_000 and abs(seconds - wav_info(EXAMPLES / "acme-caller.wav")[1]) < 1e-3
    result = json.loads(transcript.read_text())
    assert "RANDOM WEIGHTS" in result["model"]
    starts = [w["start"] for w in result["words"]]
    assert starts == sorted(starts) and all(w["end"] > w["start"] for w in result["words"])


def test_the_released_layout_with_a_stored_voice(tmp_path, release_folder):
    config = json.loads((release_folder / "config.json").read_text())
    config["lm"]["context"] = 200  # the tiny weights with room for a real prompt (voice, silences, role)
    (release_folder / "config.json").write_text(json.dumps(config))
    persona = tmp_path / "line.yaml"
    persona.write_text("role: You answer calls for Acme.\nvoice: NATF2\nsampling:\n  seed: 5\n")
    caller = tmp_path / "caller.wav"
    subprocess.run(["espeak-ng", "-w", str(caller), "Hello, where is my order?"], check=True)
    outputs = []
    for run in range(2):
        out = tmp_path / f"agent{run}.wav"
        done = plexline("offline", "--model", f"local:{release_folder}", "--quiet", "--persona", str(persona),
                        "--input", str(caller), "--output", str(out), "--cache-dir", str(tmp_path / "cache"))
        assert done.returncode == 0, done.stderr
        assert "DUMMY" not in done.stdout
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]  # the persona's seed makes the call reproducible


@pytest.mark.parametrize("case, message", [
    ("bad-wav", "not a readable audio file"),
    ("no-persona", "no such persona file"),
    ("bad-persona", "role"),
    ("unknown-model", "unknown model"),
])
def test_bad_input_is_one_line_and_a_nonzero_exit(tmp_path, case, message):
    persona, caller, model = EXAMPLES / "acme-support.yaml", EXAMPLES / "acme-caller.wav", "dummy"
    if case == "bad-wav":
        caller = tmp_path / "bad.wav"
        caller.write_bytes(b"RIFF....WAVEfmt garbage")
    elif case == "no-persona":
        persona = tmp_path / "missing.yaml"
    elif case == "bad-persona":
        persona = tmp_path / "bad.yaml"
        persona.write_text("role: ''\nvoice: NATF2\n")
    else:
        model = "gpt2"
    done = plexline("offline", "--model", model, "--quiet", "--persona", str(persona), "--input", str(caller),
                    "--output", str(tmp_path / "out.wav"))
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("plexline: error:")]
    assert len(errors) == 1 and message in errors[0], done.stderr
    assert "Traceback" not in done.stderr
