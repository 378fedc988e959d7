"""`plexline eval long-call` on a dummy tiny model whose short ring wraps within seconds (a CI smoke test)."""

import json

import pytest

from agent.long_call import generated_caller
from plexline.cli import main

PERSONA = "role: You are Maya and you help callers.\nvoice: NATF2\n"


def test_the_generated_caller_talks_and_pauses():
    pcm = generated_caller(20.0, seed=1)
    loud = abs(pcm) > 0.01
    assert pcm.shape == (20 * 24000,) and 0.2 < loud.mean() < 0.9 and abs(pcm).max() <= 1.0


def test_a_long_call_is_reported_per_period_for_both_settings(tmp_path, capsys):
    persona = tmp_path / "maya.yaml"
    persona.write_text(PERSONA)
    report = tmp_path / "long-call.json"
    # 48 frames of context (3.8 s), periods of 1.28 s, fresh sessions from 0.64 s before each: 6 periods,
    # of which the last ones are past the wrap of the long call's ring.
    assert main(["eval", "long-call", "--model", "dummy:tiny", "--device", "cpu", "--persona", str(persona),
                 "--minutes", str(7.68 / 60), "--period", "1.28", "--recent", "0.64", "--context", "48",
                 "--cache-dir", str(tmp_path / "cache"), "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert result["model"].startswith("dummy:tiny") and result["context_seconds"] == pytest.approx(3.84)
    assert set(result["settings"]) == {"pinned", "window"}
    for rows in result["settings"].values():
        assert [row["period"] for row in rows] == list(range(6))
        assert all(-1 <= row["speaker_similarity"] <= 1 and row["step_ms"] > 0 for row in rows)
        # the first period's fresh session is the long call itself, from the same first frame
        assert rows[0]["text_agreement"] in (1.0, None)
    assert "pinned" in capsys.readouterr().out
