"""Child processes that benchmarks, checks and tests start: their output in a log, and stopped for sure
when they are done with (asked first, killed if they do not go), so that no run leaves one behind."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def stop(process: subprocess.Popen, grace: float) -> None:
    """Terminated (SIGTERM, its chance to shut down cleanly), killed if still running after `grace`
    seconds; waited for either way, so it leaves no zombie."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def child(args: list[str], log: Path, *, grace: float, cwd: Path | None = None,
          env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """`args` running with its stdout and stderr in `log` (overwritten); `stop`ped on exit."""
    with log.open("w") as out:
        process = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        stop(process, grace)
