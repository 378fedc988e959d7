"""`plexline offline --stt`: both sides of a WAV in the transcript, the input as the caller."""

import json
import subprocess
import sys
import wave
from pathlib import Path

EXAMPLES = Path(__file__).parents[2] / "personas" / "examples"


def seconds_of(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def test_the_transcript_has_the_callers_words_and_the_agents(tmp_path):
    out, transcript = tmp_path / "agent.wav", tmp_path / "both.json"
    done = subprocess.run([sys.executable, "-m", "plexline", "offline", "--model", "dummy", "--stt", "dummy",
                           "--quiet", "--persona", str(EXAMPLES / "acme-support.yaml"),
                           "--input", str(EXAMPLES / "acme-caller.wav"), "--output", str(out),
                           "--transcript", str(transcript)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "the caller's" in done.stdout
    seconds = seconds_of(EXAMPLES / "acme-caller.wav")
    assert abs(seconds_of(out) - seconds) < 1e-3  # the recogniser's flush adds nothing to the agent's audio
    result = json.loads(transcript.read_text())
    caller = result["caller"]
    assert "RANDOM WEIGHTS" in caller["model"] and caller["words"], "random weights still write words"
    starts = [w["start"] for w in caller["words"]]
    assert starts == sorted(starts) and all(0 <= w["start"] <= w["end"] <= result["seconds"] for w in caller["words"])
    assert caller["text"] == " ".join(w["text"] for w in caller["words"])
    assert "words" in result and "text" in result  # the agent's side as before
