"""scripts/scale_out.py as the GPU host runs it, here with two CPU workers on the tiny dummy model."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def test_two_workers_fill_up_and_a_drained_one_takes_no_new_calls(tmp_path):
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        pytest.fail("redis-server is not installed: scripts/test.sh installs it (Debian package redis-server)")
    out = tmp_path / "scale-out.json"
    args = ["--gpus", "0", "--cpu-workers", "2", "--cpu-slots", "3", "--hold", "2", "--end-per-worker", "2",
            "--redis-server", redis_server, "--json", str(out), "--logs", str(tmp_path / "logs")]

    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "scale_out.py"), *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=300,
                         env=os.environ | {"PYTHONPATH": str(ROOT)})

    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(out.read_text())
    workers = {w["id"]: w for w in report["workers"]}
    assert {w: (r["slots"], r["calls"]) for w, r in workers.items()} == {"cpu0": (3, 3), "cpu1": (3, 3)}
    assert (report["total_calls"], report["all_slots_filled"]) == (6, True)
    for worker in workers.values():  # 2 s of steps at 80 ms, each timed
        assert worker["step"]["steps"] >= 15 and 0 < worker["step"]["p50_ms"] <= worker["step"]["p99_ms"]
    drain = report["drain"]
    assert drain["ended_per_worker"] == {"cpu0": 2, "cpu1": 2}
    assert (drain["placed"], drain["placed_on"], drain["refused_after"]) == (2, {"cpu1": 2}, True)
    assert drain["worker_saw_draining"] and report["passed"]
    assert "every slot filled: yes" in run.stdout and "drain: cpu0 drained" in run.stdout
