"""Calls in progress, kept on disk in embedded mode, so that a crash does not lose them.

`plexline serve` keeps its registry in memory: when the process dies, nothing remembers the calls
it carried, and their `call.ended` (the record, the webhook, the recording's link) would never be
made. Each `call.started` writes `<folder>/<tenant>/<call id>.json` (its data); the call's
`call.ended` removes it. At the next start every file left describes a call the crash cut off
(`left_open`), which the call history ends as failed (`CallHistory.recover`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from agent.contracts import events as ev
from agent.contracts.recordings import recording_path

log = logging.getLogger(__name__)


class OpenCalls:
    def __init__(self, folder: Path):
        self.folder = folder

    def _path(self, tenant: str, call_id: str) -> Path:
        return recording_path(self.folder, tenant, call_id).with_suffix(".json")  # ids checked as names

    def opened(self, data: ev.CallStartedData) -> None:
        """Remember the call (blocking: a small file written whole, then renamed into place)."""
        path = self._path(data.tenant, data.call_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(data.model_dump_json(by_alias=True))
        os.replace(temporary, path)

    def closed(self, tenant: str, call_id: str) -> None:
        self._path(tenant, call_id).unlink(missing_ok=True)

    def left_open(self) -> list[tuple[ev.CallStartedData, float]]:
        """Each call still open, with when its file was written (seconds since the epoch)."""
        calls = []
        for path in sorted(self.folder.glob("*/*.json")):
            try:
                calls.append((ev.CallStartedData.model_validate_json(path.read_bytes()), path.stat().st_mtime))
            except (OSError, ValueError) as error:
                log.error("an open call's file cannot be read: removed", extra={"path": str(path),
                                                                                 "error": str(error)[:200]})
                path.unlink(missing_ok=True)
        return calls
