"""The network group's disk row: `plexline serve --model echo` (`bench.serving`) with its data folder
(webhook journal, call records, recordings) on a small tmpfs, filled while calls that record are in
progress.

The server runs in a mount namespace of its own (`unshare -rm`: a tmpfs needs no privilege there)
and shares the network with the campaign; the campaign reaches the tmpfs through
`/proc/PID/root`, fills it with one file until the kernel says ENOSPC, and frees it again.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path

from agent.contracts.recordings import wav_header
from bench.campaign.echo_call import ECHOED, call
from bench.campaign.row import Row
from bench.campaign.service import write_tenant
from bench.echo_latency import speech_8k
from bench.serving import Server, serving
from bench.webhook_receiver import Receiver
from telephony.events.file_outbox import JOURNAL
from telephony.events.signature import new_secret

MOUNT = 'mount -t tmpfs -o size="$1" plexline-campaign "$2" && shift 2 && exec "$@"'
WAV_HEADER = 44


class Disk:
    """The server's data folder, a tmpfs only its mount namespace sees, reached through /proc/PID/root."""

    def __init__(self, server: Server):
        self.root = Path(f"/proc/{server.process.pid}/root") / (server.log.parent / "data").relative_to("/")

    def fill(self) -> int:
        """Fill it; the bytes that took."""
        written = 0
        with (self.root / "filler").open("wb") as filler:
            try:
                while True:
                    filler.write(b"\0" * 65536)
                    filler.flush()
                    written += 65536
            except OSError:
                return written

    def free(self) -> None:
        (self.root / "filler").unlink()

    def journal(self) -> tuple[int, int]:
        """The outbox journal's lines, and of those the ones that are not whole JSON records."""
        lines = (self.root / "outbox" / JOURNAL).read_bytes().splitlines(keepends=True)
        bad = 0
        for line in lines:
            try:
                bad += not (line.endswith(b"\n") and isinstance(json.loads(line).get("op"), str))
            except ValueError:
                bad += 1
        return len(lines), bad

    def recordings(self) -> dict[str, tuple[int, bool]]:
        """Each recording's size by call id, and whether it is a valid WAV (its header's sizes its data's)."""
        found = {}
        for path in (self.root / "recordings").rglob("*.wav"):
            data = path.read_bytes()
            audio = len(data) - WAV_HEADER
            found[path.stem] = (len(data), audio >= 0 and audio % 4 == 0 and data[:WAV_HEADER] == wav_header(audio))
        return found


def disk_errors(log: str) -> tuple[int, str]:
    """The log's error and warning lines that name the full disk, and the first of them."""
    lines = [line for line in log.splitlines() if re.search(r"level=(error|warning)", line)
             and re.search(r"No space left|ENOSPC|Errno 28|disk", line, re.IGNORECASE)]
    return len(lines), (lines[0][:300] if lines else "")


async def disk_full(folder: Path, size: int, seconds: float) -> Row:
    if shutil.which("unshare") is None:
        return Row("data disk full", "", "`unshare` (util-linux) is needed for the tmpfs", False)
    secret = new_secret()
    pcm = await asyncio.to_thread(speech_8k, seconds)
    (folder / "data").mkdir(parents=True)
    with Receiver(secret) as receiver:
        hook = {"url": receiver.url, "secret": secret, "allow_http": True, "allow_private_network": True}
        personas = write_tenant(folder / "tenants", hook, recording=True)
        env = {"PLEXLINE_WEBHOOK_RETRY_FIRST": "0.5", "PLEXLINE_WEBHOOK_RETRY_CAP": "2", "PLEXLINE_WEBHOOK_TIMEOUT": "2"}
        mount = ("unshare", "-rm", "sh", "-c", MOUNT, "sh", str(size), str(folder / "data"))
        with serving("echo", 4, folder, personas, env=env, prefix=mount) as server:
            disk, sip = Disk(server), ("127.0.0.1", server.sip_port)
            before = await call(sip, pcm, number="+15555550901")
            filled = disk.fill()
            during = [await call(sip, pcm, number=f"+1555555091{n}") for n in range(2)]
            await asyncio.sleep(2.0)  # the calls' last writes fail too
            journal_full = disk.journal()
            disk.free()
            after = await call(sip, pcm, number="+15555550921")
            got = await receiver.until(8, timeout=60)
            await asyncio.sleep(1.0)
            journal, recordings = disk.journal(), disk.recordings()
            running = server.process.poll() is None
    log = server.log.read_text(errors="replace")
    errors, first = disk_errors(log)
    tracebacks = log.count("Traceback")
    calls = [before, *during, after]
    ids = {d.msg_id for d in got}
    ended = [d.event for d in got if d.event["type"] == "call.ended"]
    promised = [e["data"]["call_id"] for e in ended if e["data"]["recording"] is not None]
    kept = [recordings.get(call_id, (0, False))[0] > WAV_HEADER for call_id in promised]
    valid = all(ok for _, ok in recordings.values())
    incomplete = {e["data"]["from"]: e["data"].get("recording_incomplete") for e in ended}
    full = [incomplete.get(f"+1555555091{n}") or "" for n in range(2)]
    told = (all("No space left on device" in why for why in full) and incomplete.get("+15555550921") is None
            and all(e["data"]["recording"] is not None or e["data"].get("recording_incomplete") for e in ended))
    outcome = (f"{filled >> 10} KiB filled it; calls hung up by the caller: {sum(c.completed for c in calls)}/4, "
               f"echo {', '.join(f'{c.echo:.2f}' for c in calls)}; events delivered {len(got)}/8 ({len(ids)} ids); "
               f"journal {journal[0]} lines, {journal[1] + journal_full[1]} damaged; recordings on disk "
               f"{', '.join(f'{s >> 10} KiB' for s, _ in sorted(recordings.values()))}, every one a valid WAV: "
               f"{valid}, {len(promised)} in call.ended, {sum(kept)} of those with audio; recording_incomplete of "
               f"the full disk's calls: {full}; the log: {errors} lines name the full disk, {tracebacks} "
               f"tracebacks; server {'running' if running else 'exited'}; first: {first}")
    passed = (all(c.completed and c.echo > ECHOED for c in calls) and len(got) == len(ids) == 8 and len(ended) == 4
              and journal[1] == journal_full[1] == 0 and errors > 0 and running and all(kept) and valid and told)
    return Row("data disk full (tmpfs)", f"4 recorded calls of {seconds:g} s, 2 while the {size >> 20} MiB "
               "disk was full, then space freed", outcome, passed)
