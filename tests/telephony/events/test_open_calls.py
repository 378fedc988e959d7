"""Embedded mode: calls in progress when the process dies get their call.ended at the next start."""

import wave
from datetime import datetime, timezone

import pytest

from agent.contracts import events as ev
from agent.contracts.recordings import recording_path, wav_header
from telephony.events.call_history import open_call_history

pytestmark = pytest.mark.anyio


def started(call_id: str) -> ev.CallStarted:
    data = ev.CallStartedData(call_id=call_id, tenant="acme", line="support", **{"from": "+15555550999"},
                              to="+15555550100", persona=ev.Persona(voice="NATF2", role="You answer."),
                              answered_at=datetime.now(timezone.utc))
    return ev.CallStarted(id=ev.event_id("acme", call_id, "call.started"), timestamp=data.answered_at, data=data)


def history(folder):
    return open_call_history(None, "", folder / "recordings", data_dir=folder / "data", lease=0.2)


async def test_a_call_cut_off_by_a_crash_gets_its_record_event_and_recording(tmp_path):
    before = history(tmp_path)
    await before.publish([started("c-crashed"), started("c-finished")])
    finished = ev.CallEnded(id=ev.event_id("acme", "c-finished", "call.ended"), timestamp=datetime.now(timezone.utc),
                            data=ev.CallEndedData(**started("c-finished").data.model_dump(by_alias=True),
                                                  ended_at=datetime.now(timezone.utc), duration_seconds=1.0,
                                                  outcome="caller_hung_up", reason="the caller hung up",
                                                  transcript=ev.Transcript(), recording=None))
    await before.publish([finished])
    recording = recording_path(tmp_path / "recordings", "acme", "c-crashed")
    recording.parent.mkdir(parents=True)
    recording.write_bytes(wav_header(0) + b"\x01\x00" * 2 * 8000)  # a second written, the header never updated
    await before.close()  # the process dies here: no call.ended for c-crashed

    after = history(tmp_path)
    assert await after.recover() == 1
    record = await after.records.get("acme", "c-crashed")
    assert record.outcome == "failed" and "stopped" in record.reason and record.recording is not None
    assert (await after.records.get("acme", "c-finished")).outcome == "caller_hung_up"
    with wave.open(str(after.recordings.find("acme", "c-crashed"))) as wav:
        assert wav.getnframes() == 8000
    assert await after.outbox.pending() == 4  # its call.ended joined the three events made before
    assert await after.recover() == 0  # once
    await after.close()
    again = history(tmp_path)
    assert await again.recover() == 0
    await again.close()
