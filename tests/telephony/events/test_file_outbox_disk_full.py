"""The journal on a full disk: a write that fails leaves no part of a record, and a restart reads it.

The disk is made full with RLIMIT_FSIZE in a child process (writes past the limit fail with
EFBIG, as they would with ENOSPC on a full filesystem), so the test sees what the kernel does.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from telephony.events.file_outbox import JOURNAL, FileOutbox

CHILD = textwrap.dedent("""
    import asyncio, json, resource, signal, sys
    from pathlib import Path
    from telephony.events.file_outbox import FileOutbox
    from telephony.events.outbox import OutboxEvent

    folder, limit = Path(sys.argv[1]), int(sys.argv[2])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG

    def event(n):
        return OutboxEvent(f"msg_{n}", "acme", f"call-{n % 3}", "call.ended", json.dumps({"n": n, "pad": "x" * 150}).encode())

    async def main():
        outbox = FileOutbox(folder, lease=0.3)
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        failures, n, delivered = 0, 0, set()
        while failures < 3:  # the reporter tries the same batch again after a failure
            batch = [event(n), event(n + 1)]
            try:
                await outbox.append(batch)
                n += 2
            except OSError:
                failures += 1
        for claim in await outbox.claim(100, wait=0):  # "done" lines fail too: they are tried again later
            try:
                await outbox.delivered(claim)
                delivered.add(claim.event.id)
            except OSError:
                pass
        whole = Path(folder / "outbox.journal").read_bytes()
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # space freed
        assert await outbox.append(batch) == 2
        total = n + 2
        while len(delivered) < total:
            claims = await outbox.claim(100, wait=2)
            assert claims, f"stuck with {sorted(delivered)} of {total}"
            for claim in claims:
                delivered.add(claim.event.id)
                await outbox.delivered(claim)
        await outbox.close()
        print(json.dumps({"total": total, "full": whole.decode(errors="replace")}))

    asyncio.run(main())
""")


def run_child(folder: Path, limit: int) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(folder), str(limit)], capture_output=True, check=False,
                          text=True, timeout=60, cwd=Path(__file__).parents[3])
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def records(data: str) -> list[dict]:
    assert data.endswith("\n"), "the journal ends inside a record"
    return [json.loads(line) for line in data.splitlines()]


def test_a_full_disk_leaves_only_whole_records_and_each_event_once(tmp_path):
    result = run_child(tmp_path, limit=3000)

    records(result["full"])  # while the disk was full: only whole lines
    journal = records((tmp_path / JOURNAL).read_text())
    adds = [r["id"] for r in journal if r["op"] == "add"]
    assert len(adds) == len(set(adds)) == result["total"]
    assert {r["id"] for r in journal if r["op"] == "done"} == set(adds)


@pytest.mark.anyio
async def test_a_restart_after_a_full_disk_finds_nothing_pending(tmp_path):
    run_child(tmp_path, limit=3000)
    reopened = FileOutbox(tmp_path)
    assert await reopened.pending() == 0
    await reopened.close()


@pytest.mark.anyio
async def test_a_journal_damaged_by_an_older_version_still_opens(tmp_path):
    """Lines a full disk left behind before this was mended: a record cut mid-line with the next
    one run onto it, and an event added twice. The start skips the damage instead of dying."""
    add = {"op": "add", "tenant": "acme", "key": "call-1", "type": "call.ended", "body": "{}", "at": 1.0}
    lines = [json.dumps(add | {"id": "msg_1"}), json.dumps(add | {"id": "msg_1"}),
             json.dumps(add | {"id": "msg_2"})[:30] + json.dumps({"op": "done", "id": "msg_9"}),
             json.dumps({"op": "done", "id": "msg_1"}), json.dumps(add | {"id": "msg_3"})]
    (tmp_path / JOURNAL).write_text("\n".join(lines) + "\n")

    outbox = FileOutbox(tmp_path)
    assert await outbox.pending() == 1
    claims = await outbox.claim(10, wait=0)
    assert [c.event.id for c in claims] == ["msg_3"]
    await outbox.delivered(claims[0])
    await outbox.close()
