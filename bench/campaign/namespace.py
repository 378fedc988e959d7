"""Groups whose real peers (aiortc) must stay on loopback run inside the loopback-only namespace
(bench.loopback): called outside it, such a group runs `python -m bench.campaign` for itself inside
one and reads its rows back from the JSON."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

from bench.campaign.row import Row
from bench.loopback import INSIDE, namespace_command, namespace_problem

ROOT = Path(__file__).parents[2]


async def rows_inside(group: str, argv: list[str]) -> list[Row]:
    """The rows of `group` run with the options `argv` inside a new loopback-only namespace."""
    problem = await asyncio.to_thread(namespace_problem)
    if problem is not None:
        return [Row(group, "-", f"no loopback-only network namespace: {problem}", False)]
    with tempfile.TemporaryDirectory(prefix="plexline-campaign-") as folder:
        rows = Path(folder) / "rows.json"
        process = await asyncio.create_subprocess_exec(
            *namespace_command(sys.executable, "-m", "bench.campaign", "--groups", group, "--json", str(rows), *argv),
            cwd=ROOT, env=os.environ | {INSIDE: "1"}, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        output, _ = await process.communicate()
        if not rows.exists():
            tail = output.decode(errors="replace")[-3000:]
            return [Row(group, "-", f"the run inside the namespace exited with {process.returncode} and wrote no "
                                    f"rows: {tail}", False)]
        return [Row(**row) for row in json.loads(rows.read_text())["rows"]]
